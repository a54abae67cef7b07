//! dma-buf ioctls (`linux/dma-buf.h`): CPU-access bracketing, naming, and the implicit-fence
//! bridge (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE` / `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`, Linux 6.0).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Setter, Updater};

/// `struct dma_buf_sync`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DmaBufSync {
    /// `DMA_BUF_SYNC_*` flags.
    pub flags: u64,
}

/// `DMA_BUF_SYNC_READ`.
pub const SYNC_READ: u64 = 1;
/// `DMA_BUF_SYNC_WRITE`.
pub const SYNC_WRITE: u64 = 2;
/// `DMA_BUF_SYNC_START`.
pub const SYNC_START: u64 = 0;
/// `DMA_BUF_SYNC_END`.
pub const SYNC_END: u64 = 4;

const DMA_BUF_BASE: u8 = b'b';
const DMA_BUF_IOCTL_SYNC: rustix::ioctl::Opcode = opcode::write::<DmaBufSync>(DMA_BUF_BASE, 0);
// The kernel declares SET_NAME with a `const char *` argument type, so its size field is 8.
const DMA_BUF_SET_NAME_B: rustix::ioctl::Opcode = opcode::write::<u64>(DMA_BUF_BASE, 1);

/// `struct dma_buf_export_sync_file` and `struct dma_buf_import_sync_file` (same layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DmaBufSyncFile {
    flags: u32,
    fd: i32,
}

const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: rustix::ioctl::Opcode =
    opcode::read_write::<DmaBufSyncFile>(DMA_BUF_BASE, 2);
const DMA_BUF_IOCTL_IMPORT_SYNC_FILE: rustix::ioctl::Opcode =
    opcode::write::<DmaBufSyncFile>(DMA_BUF_BASE, 3);

/// `DMA_BUF_IOCTL_SYNC`: begin or end CPU access. Retries on `EINTR`/`EAGAIN` as the uAPI asks.
pub fn sync(fd: BorrowedFd<'_>, flags: u64) -> Result<(), Errno> {
    loop {
        // SAFETY: DMA_BUF_IOCTL_SYNC reads one struct dma_buf_sync, which Setter passes by pointer.
        match unsafe {
            ioctl(
                fd,
                Setter::<DMA_BUF_IOCTL_SYNC, DmaBufSync>::new(DmaBufSync { flags }),
            )
        } {
            Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
            r => return r,
        }
    }
}

/// `DMA_BUF_SET_NAME`: names the buffer in `/proc/*/fdinfo` and debugfs (at most 32 bytes).
pub fn set_name(fd: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let mut buf = [0u8; 32];
    let n = name.len().min(31);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: the kernel reads a NUL-terminated string of at most DMA_BUF_NAME_LEN (32) bytes
    // from the pointer; buf is 32 bytes with a NUL at index n <= 31, alive across the call.
    unsafe {
        ioctl(
            fd,
            rustix::ioctl::IntegerSetter::<DMA_BUF_SET_NAME_B>::new_pointer(
                buf.as_mut_ptr().cast(),
            ),
        )
    }
}

/// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`: a sync_file holding the dma-buf's current implicit fences.
/// `flags` is `SYNC_READ` (the fences a reader must wait for: the writers'), `SYNC_WRITE` (those
/// a writer must wait for: all), or both.
pub fn export_sync_file(dmabuf: BorrowedFd<'_>, flags: u64) -> Result<OwnedFd, Errno> {
    let mut arg = DmaBufSyncFile {
        flags: flags as u32,
        fd: -1,
    };
    // SAFETY: the ioctl reads and writes one struct dma_buf_export_sync_file, alive across the
    // call.
    unsafe {
        ioctl(
            dmabuf,
            Updater::<DMA_BUF_IOCTL_EXPORT_SYNC_FILE, DmaBufSyncFile>::new(&mut arg),
        )?
    };
    if arg.fd < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: on success the kernel installed a new sync_file fd in arg.fd that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(arg.fd) })
}

/// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`: adds the fence in `sync_file` to the dma-buf's implicit
/// fences, as a write fence (`SYNC_WRITE`: readers and writers wait for it) or a read fence
/// (`SYNC_READ`: only writers wait for it). The sync_file fd stays ours.
pub fn import_sync_file(
    dmabuf: BorrowedFd<'_>,
    sync_file: BorrowedFd<'_>,
    flags: u64,
) -> Result<(), Errno> {
    let arg = DmaBufSyncFile {
        flags: flags as u32,
        fd: sync_file.as_raw_fd(),
    };
    // SAFETY: the ioctl reads one struct dma_buf_import_sync_file (passed by pointer by Setter);
    // the fd in it is borrowed, valid for the call, and the kernel takes its own reference.
    unsafe {
        ioctl(
            dmabuf,
            Setter::<DMA_BUF_IOCTL_IMPORT_SYNC_FILE, DmaBufSyncFile>::new(arg),
        )
    }
}
