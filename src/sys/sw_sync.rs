//! The sw_sync debugfs interface (`drivers/dma-buf/sw_sync.c`, `CONFIG_SW_SYNC`): each open of
//! `sync/sw_sync` under debugfs is a timeline; `SW_SYNC_IOC_CREATE_FENCE` makes a sync_file that
//! signals when the timeline reaches a value, `SW_SYNC_IOC_INC` advances it. Test-only by design.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Setter, Updater};

use super::sync_file::{name_field, NAME_LEN};

/// Where the sw_sync file lives under a debugfs mounted at `/sys/kernel/debug`.
pub const SW_SYNC_PATH: &str = "/sys/kernel/debug/sync/sw_sync";

/// `struct sw_sync_create_fence_data`.
#[repr(C)]
#[derive(Debug)]
struct CreateFenceData {
    value: u32,
    name: [u8; NAME_LEN],
    fence: i32,
}

const SW_SYNC_IOC_MAGIC: u8 = b'W';
const SW_SYNC_IOC_CREATE_FENCE: rustix::ioctl::Opcode =
    opcode::read_write::<CreateFenceData>(SW_SYNC_IOC_MAGIC, 0);
const SW_SYNC_IOC_INC: rustix::ioctl::Opcode = opcode::write::<u32>(SW_SYNC_IOC_MAGIC, 1);

/// `SW_SYNC_IOC_CREATE_FENCE`: a sync_file on `timeline` that signals at `value`.
pub fn create_fence(timeline: BorrowedFd<'_>, value: u32, name: &str) -> Result<OwnedFd, Errno> {
    let mut data = CreateFenceData {
        value,
        name: name_field(name),
        fence: -1,
    };
    // SAFETY: SW_SYNC_IOC_CREATE_FENCE reads and writes one struct sw_sync_create_fence_data,
    // alive across the call.
    unsafe {
        ioctl(
            timeline,
            Updater::<SW_SYNC_IOC_CREATE_FENCE, CreateFenceData>::new(&mut data),
        )?
    };
    if data.fence < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: on success the kernel installed a new sync_file fd in data.fence that nothing
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(data.fence) })
}

/// `SW_SYNC_IOC_INC`: advances `timeline` by `n`, signalling every fence it passes.
pub fn inc(timeline: BorrowedFd<'_>, n: u32) -> Result<(), Errno> {
    // SAFETY: SW_SYNC_IOC_INC reads one __u32 through the pointer Setter passes.
    unsafe { ioctl(timeline, Setter::<SW_SYNC_IOC_INC, u32>::new(n)) }
}
