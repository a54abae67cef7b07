//! System V shared memory: `shmget`, `shmat`, `shmdt`, `shmctl` (no fd; segments named by id).
#![allow(unsafe_code)]

use std::ptr::NonNull;

use rustix::io::Errno;

fn errno() -> Errno {
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// Creates a private segment of `size` bytes, mode 0600. Returns its id.
pub fn create_private(size: usize) -> Result<i32, Errno> {
    // SAFETY: shmget has no memory-safety preconditions.
    let id = unsafe {
        libc::shmget(
            libc::IPC_PRIVATE,
            size,
            libc::IPC_CREAT | libc::IPC_EXCL | 0o600,
        )
    };
    if id < 0 {
        Err(errno())
    } else {
        Ok(id)
    }
}

/// Attaches segment `id` at an address the kernel picks.
pub fn attach(id: i32, writable: bool) -> Result<NonNull<u8>, Errno> {
    let flags = if writable { 0 } else { libc::SHM_RDONLY };
    // SAFETY: a null address lets the kernel choose a free range, aliasing nothing.
    let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
    if p as isize == -1 {
        return Err(errno());
    }
    NonNull::new(p.cast()).ok_or(Errno::NOMEM)
}

/// Detaches an attachment made by [`attach`].
pub fn detach(ptr: NonNull<u8>) -> Result<(), Errno> {
    // SAFETY: ptr came from shmat and its MappedRegion owner is being dropped.
    if unsafe { libc::shmdt(ptr.as_ptr().cast()) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Marks segment `id` for removal: it is destroyed once the last process detaches. Linux still
/// lets processes that know the id attach until then, which is what lets the producer remove
/// it before handing the id over, so that no crash can leave it behind.
pub fn remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// What `IPC_STAT` says of a segment.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo {
    /// Size in bytes.
    pub size: u64,
    /// Owner's uid.
    pub uid: u32,
    /// Creator's uid.
    pub cuid: u32,
    /// Owner's gid.
    pub gid: u32,
    /// Creator's gid.
    pub cgid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// `shmctl(IPC_STAT)`.
pub fn stat(id: i32) -> Result<SegmentInfo, Errno> {
    let mut ds = std::mem::MaybeUninit::<libc::shmid_ds>::zeroed();
    // SAFETY: ds is a writable shmid_ds of the right size.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()) } < 0 {
        return Err(errno());
    }
    // SAFETY: IPC_STAT succeeded and filled ds.
    let ds = unsafe { ds.assume_init() };
    Ok(SegmentInfo {
        size: ds.shm_segsz as u64,
        uid: ds.shm_perm.uid,
        cuid: ds.shm_perm.cuid,
        gid: ds.shm_perm.gid,
        cgid: ds.shm_perm.cgid,
        mode: ds.shm_perm.mode as u32 & 0o777,
    })
}
