//! The C API of frameshare (`libframeshare.so`, `libframeshare.a`, `frameshare.h`): publishers
//! and subscribers of named frame streams behind opaque handles; frames with their planes (fd,
//! offset, stride), format and metadata; CPU mappings bracketed like the Rust guards; sync_file
//! fences as fds; the fds to `poll()`; errors as [`fs_status`] codes with a thread-local
//! message ([`fs_last_error`]). This file holds the types and constants every part shares and
//! the global functions; [`handle`] the registry of live handles and the panic boundary;
//! [`publisher`], [`subscriber`] and [`meta`] the functions on each handle.
//!
//! `include/frameshare.h` is generated from this crate by cbindgen (`cbindgen.toml`); the test
//! `tests::header` regenerates it and fails if the committed one is stale
//! (`FRAMESHARE_BLESS=1 cargo test -p frameshare-c header` rewrites it).
//!
//! # Unsafe code
//! This crate is an unsafe island by nature: every entry point is an `unsafe extern "C"`
//! function with `#[no_mangle]` that takes raw pointers from C, so it allows `unsafe_code` at
//! its root, and every unsafe block still carries a `// SAFETY:` line. A handle is never
//! dereferenced before the registry ([`handle`]) confirmed that it is a live handle of the
//! right type that no other thread is using, and every entry point runs inside
//! `catch_unwind`: a panic becomes `FS_ERR_PANIC` and a message, never an unwind into C.
#![allow(unsafe_code)]
// The C names (fs_status, FS_OK, fs_publisher, …) are the API; cbindgen copies them as written.
#![allow(non_camel_case_types, clippy::enum_variant_names)]

mod handle;
pub mod meta;
pub mod publisher;
pub mod subscriber;
#[cfg(test)]
mod tests;

use std::ffi::{c_char, CStr};

/// What a call returned: `FS_OK` (0), or a negative error code; on an error,
/// `fs_last_error()` says what happened.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fs_status {
    /// Success.
    FS_OK = 0,
    /// An argument is invalid: a NULL pointer, a string that is not UTF-8, a value out of
    /// range, a buffer id that is not on loan (the message says which).
    FS_ERR_INVALID_ARGUMENT = -1,
    /// Not a live handle of the expected type: never made, freed already, or another kind.
    FS_ERR_BAD_HANDLE = -2,
    /// The handle is busy: another thread is using it now, or a loan is out that must be
    /// published or cancelled first.
    FS_ERR_BUSY = -3,
    /// Nothing happened within the timeout (or a fence did not signal in time).
    FS_ERR_TIMEOUT = -4,
    /// The stream has ended: no more events.
    FS_ERR_ENDED = -5,
    /// No producer appeared under that name within the connect timeout.
    FS_ERR_NOT_FOUND = -6,
    /// The stream name, its socket or the runtime directory (`FRAMESHARE_RUNTIME_DIR`,
    /// `XDG_RUNTIME_DIR`).
    FS_ERR_NAME = -7,
    /// The socket or the event loop failed.
    FS_ERR_IO = -8,
    /// The peer broke the protocol, refused us, ended the session with an error, or is not
    /// trusted.
    FS_ERR_PEER = -9,
    /// A buffer could not be allocated, checked or mapped.
    FS_ERR_BUFFER = -10,
    /// A pixel format, size or layout this library does not support.
    FS_ERR_FORMAT = -11,
    /// A fence fd is not a sync_file, or it signalled an error.
    FS_ERR_FENCE = -12,
    /// Metadata out of its bounds (key length or characters, value length, count).
    FS_ERR_META = -13,
    /// A frame's pixels differ from what the generator draws for it.
    FS_ERR_MISMATCH = -14,
    /// The stream lacks what the call needs (a generator pattern).
    FS_ERR_UNSUPPORTED = -15,
    /// No consumer can come any more.
    FS_ERR_NO_CONSUMER = -16,
    /// A panic inside the library, caught at the boundary: a bug (please report the message).
    FS_ERR_PANIC = -99,
}

/// Most planes a frame has.
pub const FS_MAX_PLANES: usize = 4;
/// Longest time `fs_frame_map` and `fs_frame_verify_generated` wait for a frame's acquire
/// fence, milliseconds.
pub const FS_ACQUIRE_TIMEOUT_MS: i32 = 5000;

/// The library's major version (it follows the Rust crate's).
pub const FS_VERSION_MAJOR: u32 = 0;
/// The library's minor version.
pub const FS_VERSION_MINOR: u32 = 2;
/// The library's patch version.
pub const FS_VERSION_PATCH: u32 = 0;

// The constants below are literals (cbindgen copies literals, not expressions); a test checks
// each against the Rust library's value.

/// A DRM fourcc code (`drm_fourcc.h`); `FS_FOURCC('X', 'R', '2', '4')` makes one.
pub type fs_fourcc = u32;
/// `DRM_FORMAT_XRGB8888`: 32-bit, bytes in memory B, G, R, X.
pub const FS_FORMAT_XR24: fs_fourcc = 0x34325258;
/// `DRM_FORMAT_ARGB8888`: 32-bit, bytes in memory B, G, R, A.
pub const FS_FORMAT_AR24: fs_fourcc = 0x34325241;
/// `DRM_FORMAT_XBGR8888`: 32-bit, bytes in memory R, G, B, X.
pub const FS_FORMAT_XB24: fs_fourcc = 0x34324258;
/// `DRM_FORMAT_ABGR8888`: 32-bit, bytes in memory R, G, B, A.
pub const FS_FORMAT_AB24: fs_fourcc = 0x34324241;
/// `DRM_FORMAT_RGB888`: 24-bit, bytes in memory B, G, R.
pub const FS_FORMAT_RG24: fs_fourcc = 0x34324752;
/// `DRM_FORMAT_NV12`: 2 planes, Y then interleaved U/V subsampled 2x2.
pub const FS_FORMAT_NV12: fs_fourcc = 0x3231564e;
/// `DRM_FORMAT_YUYV`: packed 4:2:2, bytes Y0 U Y1 V.
pub const FS_FORMAT_YUYV: fs_fourcc = 0x56595559;
/// `DRM_FORMAT_UYVY`: packed 4:2:2, bytes U Y0 V Y1.
pub const FS_FORMAT_UYVY: fs_fourcc = 0x59565955;
/// `DRM_FORMAT_NV21`: 2 planes, Y then interleaved V/U subsampled 2x2.
pub const FS_FORMAT_NV21: fs_fourcc = 0x3132564e;
/// `DRM_FORMAT_YUV420` (I420, V4L2 `YU12`): 3 planes, Y, U, V, chroma subsampled 2x2.
pub const FS_FORMAT_YU12: fs_fourcc = 0x32315559;
/// `DRM_FORMAT_NV16`: 2 planes, Y then interleaved U/V subsampled 2x1.
pub const FS_FORMAT_NV16: fs_fourcc = 0x3631564e;
/// `DRM_FORMAT_P010`: NV12 with 16-bit little-endian samples, 10 bits in the high bits.
pub const FS_FORMAT_P010: fs_fourcc = 0x30313050;

/// The kind of memory behind a buffer (`FS_BUFFER_*`).
pub type fs_buffer_kind = u32;
/// An allocation from a dma-heap (`/dev/dma_heap/system`, …): a dma-buf.
pub const FS_BUFFER_DMA_HEAP: fs_buffer_kind = 1;
/// A sealed memfd turned into a dma-buf by `/dev/udmabuf`.
pub const FS_BUFFER_UDMABUF: fs_buffer_kind = 2;
/// A GBM buffer object exported as dma-buf(s).
pub const FS_BUFFER_GBM: fs_buffer_kind = 3;
/// A V4L2 capture buffer exported with `VIDIOC_EXPBUF` (dma-buf).
pub const FS_BUFFER_V4L2_EXPORT: fs_buffer_kind = 4;
/// A DRM dumb buffer exported with PRIME (dma-buf).
pub const FS_BUFFER_DRM_DUMB: fs_buffer_kind = 5;
/// A sealed `memfd_create` file.
pub const FS_BUFFER_MEMFD: fs_buffer_kind = 6;
/// A POSIX `shm_open` object (unlinked at once).
pub const FS_BUFFER_POSIX_SHM: fs_buffer_kind = 7;
/// A SysV `shmget` segment: no fd (`fs_buffer_info.sysv_id` names it).
pub const FS_BUFFER_SYSV_SHM: fs_buffer_kind = 8;

/// Where one plane lives: in memory object `fd`, `offset` bytes in, rows `stride` bytes apart.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct fs_plane {
    /// The memory object's fd (a dma-buf or a shared-memory file), borrowed: valid while the
    /// frame or loan it came from is (`dup()` it to keep it); -1 for SysV memory.
    pub fd: i32,
    /// Byte offset of the plane's first row in that memory.
    pub offset: u64,
    /// Bytes from one row to the next.
    pub stride: u32,
}

/// A buffer: its memory, pixel format, size and planes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct fs_buffer_info {
    /// The buffer's id in the stream's pool (0–63).
    pub id: u32,
    /// The kind of memory (`FS_BUFFER_*`).
    pub kind: fs_buffer_kind,
    /// Pixel format (DRM fourcc, `FS_FORMAT_*`).
    pub fourcc: fs_fourcc,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// DRM format modifier (0: LINEAR).
    pub modifier: u64,
    /// Planes in use in `planes`.
    pub plane_count: u32,
    /// The planes.
    pub planes: [fs_plane; FS_MAX_PLANES],
    /// The SysV segment id for `FS_BUFFER_SYSV_SHM`, else -1.
    pub sysv_id: i32,
}

/// One plane of a CPU mapping.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fs_mapped_plane {
    /// The plane's first row. Writable only for a loan's mapping (a frame's is mapped
    /// read-only: writing faults).
    pub data: *mut u8,
    /// Bytes from one row to the next.
    pub stride: u32,
    /// Bytes of pixels in a row (the rest of the stride is padding).
    pub row_bytes: u32,
    /// Rows in the plane.
    pub rows: u32,
}

impl Default for fs_mapped_plane {
    fn default() -> Self {
        fs_mapped_plane {
            data: std::ptr::null_mut(),
            stride: 0,
            row_bytes: 0,
            rows: 0,
        }
    }
}

/// A CPU mapping of a frame or a loan: valid until `fs_frame_unmap` / `fs_loan_unmap`, or
/// until the frame is released or the loan published or cancelled.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct fs_mapping {
    /// Planes in use in `planes`.
    pub plane_count: u32,
    /// The planes.
    pub planes: [fs_mapped_plane; FS_MAX_PLANES],
}

/// The message of the last call that failed on this thread (never NULL; "" if none did).
/// Valid until the next failing call on this thread; successful calls leave it as it is.
#[no_mangle]
pub extern "C" fn fs_last_error() -> *const c_char {
    handle::no_panic(c"".as_ptr(), handle::last_error)
}

/// The name of a status code (`"FS_ERR_TIMEOUT"`), a static string.
#[no_mangle]
pub extern "C" fn fs_status_name(status: fs_status) -> *const c_char {
    handle::no_panic(c"".as_ptr(), || status_name(status).as_ptr())
}

fn status_name(status: fs_status) -> &'static CStr {
    use fs_status::*;
    match status {
        FS_OK => c"FS_OK",
        FS_ERR_INVALID_ARGUMENT => c"FS_ERR_INVALID_ARGUMENT",
        FS_ERR_BAD_HANDLE => c"FS_ERR_BAD_HANDLE",
        FS_ERR_BUSY => c"FS_ERR_BUSY",
        FS_ERR_TIMEOUT => c"FS_ERR_TIMEOUT",
        FS_ERR_ENDED => c"FS_ERR_ENDED",
        FS_ERR_NOT_FOUND => c"FS_ERR_NOT_FOUND",
        FS_ERR_NAME => c"FS_ERR_NAME",
        FS_ERR_IO => c"FS_ERR_IO",
        FS_ERR_PEER => c"FS_ERR_PEER",
        FS_ERR_BUFFER => c"FS_ERR_BUFFER",
        FS_ERR_FORMAT => c"FS_ERR_FORMAT",
        FS_ERR_FENCE => c"FS_ERR_FENCE",
        FS_ERR_META => c"FS_ERR_META",
        FS_ERR_MISMATCH => c"FS_ERR_MISMATCH",
        FS_ERR_UNSUPPORTED => c"FS_ERR_UNSUPPORTED",
        FS_ERR_NO_CONSUMER => c"FS_ERR_NO_CONSUMER",
        FS_ERR_PANIC => c"FS_ERR_PANIC",
    }
}

/// The library's version, `"MAJOR.MINOR.PATCH"`, a static string.
#[no_mangle]
pub extern "C" fn fs_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the package version has no NUL"),
        };
    VERSION.as_ptr()
}

/// The fields of a `fs_buffer_info` for `buffer`, filed as buffer `id`.
pub(crate) fn buffer_info(id: u32, buffer: &frameshare::Buffer) -> fs_buffer_info {
    use std::os::fd::AsRawFd;
    let layout = buffer.layout();
    let fds = buffer.fds();
    let mut info = fs_buffer_info {
        id,
        kind: buffer.kind().to_wire() as u32,
        fourcc: layout.fourcc().0,
        width: layout.width(),
        height: layout.height(),
        modifier: layout.modifier().0,
        plane_count: layout.planes().len() as u32,
        planes: [fs_plane::default(); FS_MAX_PLANES],
        sysv_id: buffer.sysv_id().unwrap_or(-1),
    };
    for (out, p) in info.planes.iter_mut().zip(layout.planes()) {
        *out = fs_plane {
            fd: fds.get(p.fd_index as usize).map_or(-1, |fd| fd.as_raw_fd()),
            offset: p.offset,
            stride: p.stride,
        };
    }
    info
}

/// A `fs_mapping` of `layout`, whose memory object `i` is mapped at `regions(i)` (its start
/// and length); planes that would not fit their region (a layout the checks let through by
/// mistake) are left NULL rather than pointing past it.
pub(crate) fn mapping_of(
    layout: &frameshare::FrameLayout,
    regions: impl Fn(usize) -> (*mut u8, usize),
) -> fs_mapping {
    let mut m = fs_mapping {
        plane_count: layout.planes().len() as u32,
        ..Default::default()
    };
    for (i, (out, p)) in m.planes.iter_mut().zip(layout.planes()).enumerate() {
        let (base, len) = regions(p.fd_index as usize);
        let end = p.offset + layout.plane_span(i);
        *out = fs_mapped_plane {
            data: if end <= len as u64 {
                base.wrapping_add(p.offset as usize)
            } else {
                std::ptr::null_mut()
            },
            stride: p.stride,
            row_bytes: layout.plane_row_bytes(i) as u32,
            rows: layout.plane_rows(i),
        };
    }
    m
}
