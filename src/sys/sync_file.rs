//! `linux/sync_file.h`: `SYNC_IOC_MERGE` and `SYNC_IOC_FILE_INFO` on sync_file fds.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Updater};

/// Bytes of a name field in the sync_file uAPI (`char name[32]`).
pub const NAME_LEN: usize = 32;

/// `struct sync_merge_data`.
#[repr(C)]
#[derive(Debug)]
struct SyncMergeData {
    name: [u8; NAME_LEN],
    fd2: i32,
    fence: i32,
    flags: u32,
    pad: u32,
}

/// `struct sync_fence_info`: one fence inside a sync_file.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SyncFenceInfo {
    /// The timeline's name (NUL-padded).
    pub obj_name: [u8; NAME_LEN],
    /// The driver's name (NUL-padded).
    pub driver_name: [u8; NAME_LEN],
    /// 1 signalled, 0 active, < 0 error (a negative errno).
    pub status: i32,
    /// `SYNC_FENCE_*` flags (none defined upstream but the deadline hint).
    pub flags: u32,
    /// CLOCK_MONOTONIC ns when it signalled (0 while active).
    pub timestamp_ns: u64,
}

impl Default for SyncFenceInfo {
    fn default() -> Self {
        SyncFenceInfo {
            obj_name: [0; NAME_LEN],
            driver_name: [0; NAME_LEN],
            status: 0,
            flags: 0,
            timestamp_ns: 0,
        }
    }
}

/// `struct sync_file_info`.
#[repr(C)]
#[derive(Debug)]
struct SyncFileInfoRaw {
    name: [u8; NAME_LEN],
    status: i32,
    flags: u32,
    num_fences: u32,
    pad: u32,
    sync_fence_info: u64,
}

const SYNC_IOC_MAGIC: u8 = b'>';
const SYNC_IOC_MERGE: rustix::ioctl::Opcode =
    opcode::read_write::<SyncMergeData>(SYNC_IOC_MAGIC, 3);
const SYNC_IOC_FILE_INFO: rustix::ioctl::Opcode =
    opcode::read_write::<SyncFileInfoRaw>(SYNC_IOC_MAGIC, 4);

/// Copies `s` into a NUL-terminated name field (truncated to 31 bytes).
pub fn name_field(s: &str) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    let n = s.len().min(NAME_LEN - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// Reads a NUL-padded name field.
pub fn name_str(field: &[u8; NAME_LEN]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// `SYNC_IOC_MERGE`: a new sync_file that signals when both `a` and `b` have.
pub fn merge(a: BorrowedFd<'_>, b: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, Errno> {
    let mut data = SyncMergeData {
        name: name_field(name),
        fd2: b.as_raw_fd(),
        fence: -1,
        flags: 0,
        pad: 0,
    };
    // SAFETY: SYNC_IOC_MERGE reads and writes one struct sync_merge_data, which lives across the
    // call; fd2 is a valid fd borrowed for the call.
    unsafe { ioctl(a, Updater::<SYNC_IOC_MERGE, SyncMergeData>::new(&mut data))? };
    if data.fence < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: on success the kernel installed a new fd in data.fence that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(data.fence) })
}

/// What `SYNC_IOC_FILE_INFO` says of a sync_file.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// The sync_file's name.
    pub name: String,
    /// 1 signalled, 0 active, < 0 error (a negative errno).
    pub status: i32,
    /// The fences inside (empty if only the status was asked for).
    pub fences: Vec<SyncFenceInfo>,
    /// How many fences it holds.
    pub num_fences: u32,
}

fn file_info_raw(fd: BorrowedFd<'_>, fences: &mut [SyncFenceInfo]) -> Result<FileInfo, Errno> {
    let mut info = SyncFileInfoRaw {
        name: [0; NAME_LEN],
        status: 0,
        flags: 0,
        num_fences: fences.len() as u32,
        pad: 0,
        sync_fence_info: if fences.is_empty() {
            0
        } else {
            fences.as_mut_ptr() as usize as u64
        },
    };
    // SAFETY: SYNC_IOC_FILE_INFO reads and writes one struct sync_file_info that lives across the
    // call; when num_fences > 0 the kernel writes at most num_fences sync_fence_info records to
    // the sync_fence_info pointer, which points at `fences`, exactly that long and exclusively
    // borrowed for the call.
    unsafe {
        ioctl(
            fd,
            Updater::<SYNC_IOC_FILE_INFO, SyncFileInfoRaw>::new(&mut info),
        )?
    };
    Ok(FileInfo {
        name: name_str(&info.name),
        status: info.status,
        fences: Vec::new(),
        num_fences: info.num_fences,
    })
}

/// `SYNC_IOC_FILE_INFO` without the per-fence records: name, status and fence count. Fails
/// with `ENOTTY` on an fd that is not a sync_file.
pub fn status(fd: BorrowedFd<'_>) -> Result<FileInfo, Errno> {
    file_info_raw(fd, &mut [])
}

/// `SYNC_IOC_FILE_INFO` with every fence's record.
pub fn file_info(fd: BorrowedFd<'_>) -> Result<FileInfo, Errno> {
    // Fences can only be added to a sync_file by merging into a new one, so the count is fixed.
    let head = status(fd)?;
    let mut fences = vec![SyncFenceInfo::default(); head.num_fences as usize];
    if fences.is_empty() {
        return Ok(head);
    }
    let mut full = file_info_raw(fd, &mut fences)?;
    fences.truncate(full.num_fences as usize);
    full.fences = fences;
    Ok(full)
}
