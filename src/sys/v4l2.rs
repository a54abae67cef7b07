//! The V4L2 ioctls the `v4l` crate does not wrap (feature `v4l2`), over its bindgen structs:
//! multi-planar formats (`VIDIOC_G_FMT`/`S_FMT` with `pix_mp`), buffer queues with any memory type
//! (`REQBUFS`, `QUERYBUF`, `QBUF`/`DQBUF` for `MMAP` and `DMABUF`, single- and multi-planar),
//! `VIDIOC_EXPBUF`, `STREAMON`/`STREAMOFF`, frame rates (`G_PARM`/`S_PARM`) for both buffer types,
//! and the enumerations for either type. Each ioctl is declared once as a rustix opcode; the
//! unions are read here only, behind plain Rust types.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Opcode, Setter, Updater};
use v4l::v4l_sys as raw;

/// `V4L2_BUF_TYPE_VIDEO_CAPTURE`.
pub const BUF_TYPE_CAPTURE: u32 = 1;
/// `V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE`.
pub const BUF_TYPE_CAPTURE_MPLANE: u32 = 9;
/// `V4L2_MEMORY_MMAP`.
pub const MEMORY_MMAP: u32 = 1;
/// `V4L2_MEMORY_DMABUF`.
pub const MEMORY_DMABUF: u32 = 4;
/// `V4L2_CAP_VIDEO_CAPTURE`.
pub const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
/// `V4L2_CAP_VIDEO_CAPTURE_MPLANE`.
pub const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
/// `V4L2_CAP_STREAMING`.
pub const CAP_STREAMING: u32 = 0x0400_0000;
/// `V4L2_CAP_DEVICE_CAPS`: `device_caps` is valid.
pub const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
/// `V4L2_BUF_FLAG_ERROR`: the frame is corrupt.
pub const BUF_FLAG_ERROR: u32 = 0x0040;
/// `V4L2_FIELD_NONE`.
pub const FIELD_NONE: u32 = 1;
/// Most planes a V4L2 format has (`VIDEO_MAX_PLANES`).
pub const MAX_PLANES: usize = 8;

const VIDIOC_QUERYCAP: Opcode = opcode::read::<raw::v4l2_capability>(b'V', 0);
const VIDIOC_ENUM_FMT: Opcode = opcode::read_write::<raw::v4l2_fmtdesc>(b'V', 2);
const VIDIOC_G_FMT: Opcode = opcode::read_write::<raw::v4l2_format>(b'V', 4);
const VIDIOC_S_FMT: Opcode = opcode::read_write::<raw::v4l2_format>(b'V', 5);
const VIDIOC_REQBUFS: Opcode = opcode::read_write::<raw::v4l2_requestbuffers>(b'V', 8);
const VIDIOC_QUERYBUF: Opcode = opcode::read_write::<raw::v4l2_buffer>(b'V', 9);
const VIDIOC_QBUF: Opcode = opcode::read_write::<raw::v4l2_buffer>(b'V', 15);
const VIDIOC_EXPBUF: Opcode = opcode::read_write::<raw::v4l2_exportbuffer>(b'V', 16);
const VIDIOC_DQBUF: Opcode = opcode::read_write::<raw::v4l2_buffer>(b'V', 17);
const VIDIOC_STREAMON: Opcode = opcode::write::<i32>(b'V', 18);
const VIDIOC_STREAMOFF: Opcode = opcode::write::<i32>(b'V', 19);
const VIDIOC_G_PARM: Opcode = opcode::read_write::<raw::v4l2_streamparm>(b'V', 21);
const VIDIOC_S_PARM: Opcode = opcode::read_write::<raw::v4l2_streamparm>(b'V', 22);
const VIDIOC_ENUM_FRAMESIZES: Opcode = opcode::read_write::<raw::v4l2_frmsizeenum>(b'V', 74);

/// An all-zero value of a bindgen struct.
///
/// # Safety
/// `T` must be a C struct (or union) for which all-zero bytes are a valid value: integers,
/// arrays of them, raw pointers and unions of those — true of every V4L2 uAPI struct used here.
unsafe fn zeroed<T>() -> T {
    // SAFETY: per this function's contract.
    unsafe { std::mem::zeroed() }
}

/// The fd of a `v4l::Device`, borrowed for as long as the device lives.
pub fn device_fd(dev: &v4l::Device) -> BorrowedFd<'_> {
    // SAFETY: the Device owns this fd and closes it only when dropped; the borrow is tied to
    // the Device's lifetime.
    unsafe { BorrowedFd::borrow_raw(dev.handle().fd()) }
}

/// What `VIDIOC_QUERYCAP` says.
#[derive(Debug, Clone)]
pub struct Caps {
    /// Driver name (`vivid`).
    pub driver: String,
    /// Card name.
    pub card: String,
    /// Capabilities of this node (`device_caps`, or `capabilities` on old drivers).
    pub device_caps: u32,
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// `VIDIOC_QUERYCAP`.
pub fn querycap(fd: BorrowedFd<'_>) -> Result<Caps, Errno> {
    // SAFETY: v4l2_capability is plain integers and byte arrays.
    let mut c: raw::v4l2_capability = unsafe { zeroed() };
    // SAFETY: VIDIOC_QUERYCAP writes one v4l2_capability, alive across the call.
    unsafe { ioctl(fd, Updater::<VIDIOC_QUERYCAP, _>::new(&mut c))? };
    Ok(Caps {
        driver: c_str(&c.driver),
        card: c_str(&c.card),
        device_caps: if c.capabilities & CAP_DEVICE_CAPS != 0 {
            c.device_caps
        } else {
            c.capabilities
        },
    })
}

/// `VIDIOC_ENUM_FMT` entry `index`: (pixel format, description); `Err(EINVAL)` past the end.
pub fn enum_fmt(fd: BorrowedFd<'_>, buf_type: u32, index: u32) -> Result<(u32, String), Errno> {
    // SAFETY: plain integers and arrays.
    let mut d: raw::v4l2_fmtdesc = unsafe { zeroed() };
    d.index = index;
    d.type_ = buf_type;
    // SAFETY: VIDIOC_ENUM_FMT reads and writes one v4l2_fmtdesc, alive across the call.
    unsafe { ioctl(fd, Updater::<VIDIOC_ENUM_FMT, _>::new(&mut d))? };
    Ok((d.pixelformat, c_str(&d.description)))
}

/// A frame size a format offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// Exactly this size.
    Discrete(u32, u32),
    /// Any size in a range, in steps: (min_w, max_w, step_w, min_h, max_h, step_h).
    Stepwise(u32, u32, u32, u32, u32, u32),
}

/// `VIDIOC_ENUM_FRAMESIZES` entry `index` of `pixelformat`.
pub fn enum_framesize(
    fd: BorrowedFd<'_>,
    pixelformat: u32,
    index: u32,
) -> Result<FrameSize, Errno> {
    // SAFETY: plain integers and a union of integer structs.
    let mut e: raw::v4l2_frmsizeenum = unsafe { zeroed() };
    e.index = index;
    e.pixel_format = pixelformat;
    // SAFETY: VIDIOC_ENUM_FRAMESIZES reads and writes one v4l2_frmsizeenum.
    unsafe { ioctl(fd, Updater::<VIDIOC_ENUM_FRAMESIZES, _>::new(&mut e))? };
    // SAFETY: `type_` says which union member the driver filled (1 = discrete).
    Ok(unsafe {
        if e.type_ == 1 {
            let d = e.__bindgen_anon_1.discrete;
            FrameSize::Discrete(d.width, d.height)
        } else {
            let s = e.__bindgen_anon_1.stepwise;
            FrameSize::Stepwise(
                s.min_width,
                s.max_width,
                s.step_width,
                s.min_height,
                s.max_height,
                s.step_height,
            )
        }
    })
}

/// One plane of a pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaneFmt {
    /// Bytes per row.
    pub bytesperline: u32,
    /// Bytes of the plane (the whole image for single-planar formats).
    pub sizeimage: u32,
}

/// A pixel format, single- or multi-planar (`planes.len()` memory planes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PixFormat {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// V4L2 fourcc.
    pub pixelformat: u32,
    /// Field order (`FIELD_NONE` for progressive).
    pub field: u32,
    /// Memory planes.
    pub planes: Vec<PlaneFmt>,
}

fn format_to_raw(buf_type: u32, f: &PixFormat) -> raw::v4l2_format {
    // SAFETY: v4l2_format is integers and a union of integer structs (one has a pointer).
    let mut r: raw::v4l2_format = unsafe { zeroed() };
    r.type_ = buf_type;
    if buf_type == BUF_TYPE_CAPTURE_MPLANE {
        // SAFETY: writing union members of plain data is safe to do; reading is what needs
        // care. Only the member the type selects is written.
        let mp = unsafe { &mut r.fmt.pix_mp };
        mp.width = f.width;
        mp.height = f.height;
        mp.pixelformat = f.pixelformat;
        mp.field = f.field;
        mp.num_planes = f.planes.len().min(MAX_PLANES) as u8;
        for (i, p) in f.planes.iter().take(MAX_PLANES).enumerate() {
            mp.plane_fmt[i].bytesperline = p.bytesperline;
            mp.plane_fmt[i].sizeimage = p.sizeimage;
        }
    } else {
        // SAFETY: as above, the single-planar member.
        let pix = unsafe { &mut r.fmt.pix };
        pix.width = f.width;
        pix.height = f.height;
        pix.pixelformat = f.pixelformat;
        pix.field = f.field;
        if let Some(p) = f.planes.first() {
            pix.bytesperline = p.bytesperline;
            pix.sizeimage = p.sizeimage;
        }
    }
    r
}

fn format_from_raw(r: &raw::v4l2_format) -> PixFormat {
    if r.type_ == BUF_TYPE_CAPTURE_MPLANE {
        // SAFETY: the type selects the pix_mp member, which the driver filled.
        let mp = unsafe { &r.fmt.pix_mp };
        PixFormat {
            width: mp.width,
            height: mp.height,
            pixelformat: mp.pixelformat,
            field: mp.field,
            planes: mp.plane_fmt[..(mp.num_planes as usize).min(MAX_PLANES)]
                .iter()
                .map(|p| PlaneFmt {
                    bytesperline: p.bytesperline,
                    sizeimage: p.sizeimage,
                })
                .collect(),
        }
    } else {
        // SAFETY: the type selects the pix member.
        let pix = unsafe { &r.fmt.pix };
        PixFormat {
            width: pix.width,
            height: pix.height,
            pixelformat: pix.pixelformat,
            field: pix.field,
            planes: vec![PlaneFmt {
                bytesperline: pix.bytesperline,
                sizeimage: pix.sizeimage,
            }],
        }
    }
}

/// `VIDIOC_G_FMT`.
pub fn g_fmt(fd: BorrowedFd<'_>, buf_type: u32) -> Result<PixFormat, Errno> {
    let mut r = format_to_raw(buf_type, &PixFormat::default());
    // SAFETY: VIDIOC_G_FMT reads and writes one v4l2_format, alive across the call.
    unsafe { ioctl(fd, Updater::<VIDIOC_G_FMT, _>::new(&mut r))? };
    Ok(format_from_raw(&r))
}

/// `VIDIOC_S_FMT`: asks for `want`, returns what the driver chose.
pub fn s_fmt(fd: BorrowedFd<'_>, buf_type: u32, want: &PixFormat) -> Result<PixFormat, Errno> {
    let mut r = format_to_raw(buf_type, want);
    // SAFETY: VIDIOC_S_FMT reads and writes one v4l2_format, alive across the call.
    unsafe { ioctl(fd, Updater::<VIDIOC_S_FMT, _>::new(&mut r))? };
    Ok(format_from_raw(&r))
}

/// `VIDIOC_G_PARM`: the frame interval (num, den) and whether it can be set.
pub fn g_parm(fd: BorrowedFd<'_>, buf_type: u32) -> Result<((u32, u32), bool), Errno> {
    // SAFETY: integers and a union of integer structs.
    let mut p: raw::v4l2_streamparm = unsafe { zeroed() };
    p.type_ = buf_type;
    // SAFETY: VIDIOC_G_PARM reads and writes one v4l2_streamparm.
    unsafe { ioctl(fd, Updater::<VIDIOC_G_PARM, _>::new(&mut p))? };
    // SAFETY: capture types select the capture member.
    let c = unsafe { p.parm.capture };
    Ok((
        (c.timeperframe.numerator, c.timeperframe.denominator),
        c.capability & 0x1000 != 0, // V4L2_CAP_TIMEPERFRAME
    ))
}

/// `VIDIOC_S_PARM` with a frame interval; returns the interval the driver chose.
pub fn s_parm(
    fd: BorrowedFd<'_>,
    buf_type: u32,
    interval: (u32, u32),
) -> Result<(u32, u32), Errno> {
    // SAFETY: integers and a union of integer structs.
    let mut p: raw::v4l2_streamparm = unsafe { zeroed() };
    p.type_ = buf_type;
    // Writing the union member the type selects (a safe write of plain data).
    p.parm.capture.timeperframe.numerator = interval.0;
    p.parm.capture.timeperframe.denominator = interval.1;
    // SAFETY: VIDIOC_S_PARM reads and writes one v4l2_streamparm.
    unsafe { ioctl(fd, Updater::<VIDIOC_S_PARM, _>::new(&mut p))? };
    // SAFETY: capture types select the capture member.
    let t = unsafe { p.parm.capture.timeperframe };
    Ok((t.numerator, t.denominator))
}

/// `VIDIOC_REQBUFS`: asks for `count` buffers of `memory` type; returns how many were given
/// (0 frees them all).
pub fn reqbufs(fd: BorrowedFd<'_>, buf_type: u32, memory: u32, count: u32) -> Result<u32, Errno> {
    // SAFETY: plain integers.
    let mut r: raw::v4l2_requestbuffers = unsafe { zeroed() };
    r.count = count;
    r.type_ = buf_type;
    r.memory = memory;
    // SAFETY: VIDIOC_REQBUFS reads and writes one v4l2_requestbuffers.
    unsafe { ioctl(fd, Updater::<VIDIOC_REQBUFS, _>::new(&mut r))? };
    Ok(r.count)
}

/// One memory plane of a queued or dequeued buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaneInfo {
    /// Bytes the buffer holds for this plane.
    pub length: u32,
    /// Bytes of data in it (dequeued buffers).
    pub bytesused: u32,
    /// Offset of the data from the plane start (multi-planar only).
    pub data_offset: u32,
    /// `MMAP`: the offset to pass to `mmap`.
    pub mem_offset: u32,
}

/// A buffer as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BufInfo {
    /// Index in the queue.
    pub index: u32,
    /// `V4L2_BUF_FLAG_*`.
    pub flags: u32,
    /// Frame sequence number (counts frames the driver produced, dropped ones included).
    pub sequence: u32,
    /// Capture time (the driver's clock, CLOCK_MONOTONIC for nearly all), ns.
    pub timestamp_ns: u64,
    /// Memory planes.
    pub planes: Vec<PlaneInfo>,
}

/// How a buffer is queued.
#[derive(Debug)]
pub enum QueueMem<'a> {
    /// Driver-allocated memory.
    Mmap,
    /// Our dma-bufs: per memory plane (fd, length in bytes, data offset — multi-planar only).
    Dmabuf(&'a [(BorrowedFd<'a>, u32, u32)]),
}

/// Runs one buffer ioctl (QUERYBUF, QBUF, DQBUF) with a plane array for multi-planar types.
fn buffer_ioctl<const OP: Opcode>(
    fd: BorrowedFd<'_>,
    buf_type: u32,
    memory: u32,
    index: u32,
    nplanes: usize,
    fill: impl FnOnce(&mut raw::v4l2_buffer, &mut [raw::v4l2_plane]),
) -> Result<BufInfo, Errno> {
    let mplane = buf_type == BUF_TYPE_CAPTURE_MPLANE;
    // SAFETY: plain integers and unions of integers.
    let mut planes: [raw::v4l2_plane; MAX_PLANES] = unsafe { zeroed() };
    // SAFETY: integers, structs of integers, and a union with a pointer (null when zero).
    let mut b: raw::v4l2_buffer = unsafe { zeroed() };
    b.index = index;
    b.type_ = buf_type;
    b.memory = memory;
    let n = nplanes.clamp(1, MAX_PLANES);
    if mplane {
        b.m.planes = planes.as_mut_ptr();
        b.length = n as u32;
    }
    fill(&mut b, &mut planes[..n]);
    // SAFETY: the ioctl reads and writes one v4l2_buffer and, for multi-planar types, the
    // `length` v4l2_planes `m.planes` points to — `planes`, alive across the call.
    unsafe { ioctl(fd, Updater::<OP, _>::new(&mut b))? };
    let info_planes = if mplane {
        planes[..(b.length as usize).min(n)]
            .iter()
            .map(|p| PlaneInfo {
                length: p.length,
                bytesused: p.bytesused,
                data_offset: p.data_offset,
                // SAFETY: mem_offset is the member MMAP buffers use; for DMABUF it reads
                // the fd's bits as a number, which is never used.
                mem_offset: unsafe { p.m.mem_offset },
            })
            .collect()
    } else {
        vec![PlaneInfo {
            length: b.length,
            bytesused: b.bytesused,
            data_offset: 0,
            // SAFETY: as above, for the single-planar union.
            mem_offset: unsafe { b.m.offset },
        }]
    };
    Ok(BufInfo {
        index: b.index,
        flags: b.flags,
        sequence: b.sequence,
        timestamp_ns: b.timestamp.tv_sec as u64 * 1_000_000_000 + b.timestamp.tv_usec as u64 * 1000,
        planes: info_planes,
    })
}

/// `VIDIOC_QUERYBUF` of an `MMAP` buffer with `nplanes` memory planes.
pub fn querybuf(
    fd: BorrowedFd<'_>,
    buf_type: u32,
    index: u32,
    nplanes: usize,
) -> Result<BufInfo, Errno> {
    buffer_ioctl::<VIDIOC_QUERYBUF>(fd, buf_type, MEMORY_MMAP, index, nplanes, |_, _| {})
}

/// `VIDIOC_QBUF`.
pub fn qbuf(
    fd: BorrowedFd<'_>,
    buf_type: u32,
    index: u32,
    nplanes: usize,
    mem: QueueMem<'_>,
) -> Result<(), Errno> {
    let mplane = buf_type == BUF_TYPE_CAPTURE_MPLANE;
    let memory = match mem {
        QueueMem::Mmap => MEMORY_MMAP,
        QueueMem::Dmabuf(_) => MEMORY_DMABUF,
    };
    buffer_ioctl::<VIDIOC_QBUF>(fd, buf_type, memory, index, nplanes, |b, planes| {
        if let QueueMem::Dmabuf(fds) = mem {
            use std::os::fd::AsRawFd;
            if mplane {
                for (p, (f, len, off)) in planes.iter_mut().zip(fds) {
                    p.m.fd = f.as_raw_fd();
                    p.length = *len;
                    p.data_offset = *off;
                }
            } else if let Some((f, len, _)) = fds.first() {
                b.m.fd = f.as_raw_fd();
                b.length = *len;
            }
        }
    })
    .map(|_| ())
}

/// `VIDIOC_DQBUF` (the fd is non-blocking: `EAGAIN` when no buffer is ready).
pub fn dqbuf(
    fd: BorrowedFd<'_>,
    buf_type: u32,
    memory: u32,
    nplanes: usize,
) -> Result<BufInfo, Errno> {
    buffer_ioctl::<VIDIOC_DQBUF>(fd, buf_type, memory, 0, nplanes, |_, _| {})
}

/// `VIDIOC_EXPBUF`: plane `plane` of `MMAP` buffer `index` as a dma-buf (read-write, CLOEXEC).
pub fn expbuf(fd: BorrowedFd<'_>, buf_type: u32, index: u32, plane: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain integers.
    let mut e: raw::v4l2_exportbuffer = unsafe { zeroed() };
    e.type_ = buf_type;
    e.index = index;
    e.plane = plane;
    e.flags = (libc::O_RDWR | libc::O_CLOEXEC) as u32;
    // SAFETY: VIDIOC_EXPBUF reads and writes one v4l2_exportbuffer.
    unsafe { ioctl(fd, Updater::<VIDIOC_EXPBUF, _>::new(&mut e))? };
    // SAFETY: on success the kernel installed a new fd in e.fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(e.fd) })
}

/// `VIDIOC_STREAMON`.
pub fn streamon(fd: BorrowedFd<'_>, buf_type: u32) -> Result<(), Errno> {
    // SAFETY: VIDIOC_STREAMON reads one int (the buffer type).
    unsafe { ioctl(fd, Setter::<VIDIOC_STREAMON, i32>::new(buf_type as i32)) }
}

/// `VIDIOC_STREAMOFF` (returns every queued buffer to the application).
pub fn streamoff(fd: BorrowedFd<'_>, buf_type: u32) -> Result<(), Errno> {
    // SAFETY: VIDIOC_STREAMOFF reads one int (the buffer type).
    unsafe { ioctl(fd, Setter::<VIDIOC_STREAMOFF, i32>::new(buf_type as i32)) }
}

/// A read-only `mmap` of one plane of an `MMAP` buffer (copy mode); unmapped on drop.
#[derive(Debug)]
pub struct PlaneMap {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; access is through &self
// (read-only slices), so moving it to another thread is sound.
unsafe impl Send for PlaneMap {}

impl PlaneMap {
    /// Maps `len` bytes at `mem_offset` of the device.
    pub fn new(fd: BorrowedFd<'_>, mem_offset: u32, len: u32) -> Result<PlaneMap, Errno> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        // SAFETY: a fresh shared read-only mapping of the device's buffer at the offset
        // QUERYBUF gave; nothing else refers to the address range.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len as usize,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                mem_offset as u64,
            )?
        };
        Ok(PlaneMap {
            ptr,
            len: len as usize,
        })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live mapping for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for PlaneMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range this value mapped, once.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr, self.len) } {
            log::error!("v4l2: munmap of a capture buffer failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_through_the_raw_structs() {
        let sp = PixFormat {
            width: 640,
            height: 480,
            pixelformat: u32::from_le_bytes(*b"YUYV"),
            field: FIELD_NONE,
            planes: vec![PlaneFmt {
                bytesperline: 1280,
                sizeimage: 1280 * 480,
            }],
        };
        let r = format_to_raw(BUF_TYPE_CAPTURE, &sp);
        assert_eq!(format_from_raw(&r), sp);
        let mp = PixFormat {
            width: 64,
            height: 32,
            pixelformat: u32::from_le_bytes(*b"NM12"),
            field: FIELD_NONE,
            planes: vec![
                PlaneFmt {
                    bytesperline: 64,
                    sizeimage: 64 * 32,
                },
                PlaneFmt {
                    bytesperline: 64,
                    sizeimage: 64 * 16,
                },
            ],
        };
        let r = format_to_raw(BUF_TYPE_CAPTURE_MPLANE, &mp);
        assert_eq!(format_from_raw(&r), mp);
    }

    #[test]
    fn opcodes_match_videodev2_h() {
        // Values from <linux/videodev2.h> on x86_64.
        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_S_FMT, 0xc0d0_5605);
        assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
        assert_eq!(VIDIOC_QBUF, 0xc058_560f);
        assert_eq!(VIDIOC_EXPBUF, 0xc040_5610);
        assert_eq!(VIDIOC_DQBUF, 0xc058_5611);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_S_PARM, 0xc0cc_5616);
    }
}
