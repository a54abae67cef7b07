//! Frame metadata for C: the timestamps and sequence numbers of a received frame, and the
//! metadata of `frameshare::meta::FrameMeta` (clock, source sequence and time, crop,
//! colorimetry, corrupt flag, bytes used, application key/values) — getters on the frames a
//! subscriber gets (`fs_frame_*`), setters on the buffers a publisher loans (`fs_loan_set_*`).
//! Enumerations cross as `uint32_t` constants (their wire codes), so a value C makes up is
//! refused rather than undefined.

use std::ffi::c_char;

use frameshare::meta::{
    Clock, Colorimetry, Crop, Matrix, MetaError, Primaries, Range, Timestamp, Transfer,
};

use crate::fs_status;
use crate::handle::{self, call, out_ptr, with_mut, with_ref, Error};
use crate::publisher::fs_loan;
use crate::subscriber::fs_frame;

/// The clock a timestamp is on (`FS_CLOCK_*`).
pub type fs_clock = u32;
/// `CLOCK_MONOTONIC` (frames are stamped with it unless their metadata names another).
pub const FS_CLOCK_MONOTONIC: fs_clock = 1;
/// `CLOCK_BOOTTIME` (monotonic, and counts suspend).
pub const FS_CLOCK_BOOTTIME: fs_clock = 2;
/// `CLOCK_REALTIME` (wall clock).
pub const FS_CLOCK_REALTIME: fs_clock = 3;

/// YCbCr matrix coefficients (`FS_MATRIX_*`).
pub type fs_matrix = u32;
/// Not said.
pub const FS_MATRIX_UNKNOWN: fs_matrix = 0;
/// ITU-R BT.601.
pub const FS_MATRIX_BT601: fs_matrix = 1;
/// ITU-R BT.709.
pub const FS_MATRIX_BT709: fs_matrix = 2;
/// ITU-R BT.2020 (non-constant luminance).
pub const FS_MATRIX_BT2020: fs_matrix = 3;
/// RGB (no matrix).
pub const FS_MATRIX_RGB: fs_matrix = 4;

/// Quantisation range (`FS_RANGE_*`).
pub type fs_range = u32;
/// Not said.
pub const FS_RANGE_UNKNOWN: fs_range = 0;
/// Limited (video) range: Y 16–235.
pub const FS_RANGE_LIMITED: fs_range = 1;
/// Full range: 0–255.
pub const FS_RANGE_FULL: fs_range = 2;

/// Colour primaries (`FS_PRIMARIES_*`).
pub type fs_primaries = u32;
/// Not said.
pub const FS_PRIMARIES_UNKNOWN: fs_primaries = 0;
/// BT.601 (SMPTE 170M).
pub const FS_PRIMARIES_BT601: fs_primaries = 1;
/// BT.709 / sRGB.
pub const FS_PRIMARIES_BT709: fs_primaries = 2;
/// BT.2020.
pub const FS_PRIMARIES_BT2020: fs_primaries = 3;

/// Transfer function (`FS_TRANSFER_*`).
pub type fs_transfer = u32;
/// Not said.
pub const FS_TRANSFER_UNKNOWN: fs_transfer = 0;
/// BT.709 (also BT.601).
pub const FS_TRANSFER_BT709: fs_transfer = 1;
/// sRGB.
pub const FS_TRANSFER_SRGB: fs_transfer = 2;
/// SMPTE ST 2084 (PQ).
pub const FS_TRANSFER_PQ: fs_transfer = 3;
/// ARIB STD-B67 (HLG).
pub const FS_TRANSFER_HLG: fs_transfer = 4;
/// Linear light.
pub const FS_TRANSFER_LINEAR: fs_transfer = 5;

/// Most application key/values a frame carries.
pub const FS_MAX_KEY_VALUES: usize = 16;
/// Longest key, bytes (printable ASCII, no spaces).
pub const FS_MAX_KEY: usize = 64;
/// Longest value, bytes.
pub const FS_MAX_VALUE: usize = 256;

/// A rectangle, pixels.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct fs_rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// How a frame's values map to colours.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct fs_colorimetry {
    /// `FS_MATRIX_*`.
    pub matrix: fs_matrix,
    /// `FS_RANGE_*`.
    pub range: fs_range,
    /// `FS_PRIMARIES_*`.
    pub primaries: fs_primaries,
    /// `FS_TRANSFER_*`.
    pub transfer: fs_transfer,
}

fn clock(code: fs_clock) -> Result<Clock, Error> {
    u8::try_from(code)
        .ok()
        .and_then(Clock::from_wire)
        .ok_or_else(|| Error::InvalidArgument(format!("clock {code} is not an FS_CLOCK_* value")))
}

/// Decodes a wire-coded enumeration from C, naming it in the error.
fn code<T>(v: u32, what: &str, decode: fn(u8) -> Option<T>) -> Result<T, Error> {
    u8::try_from(v)
        .ok()
        .and_then(decode)
        .ok_or_else(|| Error::InvalidArgument(format!("colorimetry {what} {v} is out of range")))
}

/// The frame's sequence number.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `seq` points to writable
/// storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_seq(frame: *const fs_frame, seq: *mut u64) -> fs_status {
    call(|| {
        let out = out_ptr(seq, "seq")?;
        with_ref(frame, |f| {
            out.write(f.frame.seq);
            Ok(())
        })
    })
}

/// When the producer had the frame ready, nanoseconds on `*clock` (`FS_CLOCK_*`; NULL if not
/// wanted), and when it arrived here (`*received_ns`, CLOCK_MONOTONIC; NULL if not wanted).
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `ns` points to writable
/// storage; `clock` and `received_ns` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_timestamp(
    frame: *const fs_frame,
    ns: *mut u64,
    clock: *mut fs_clock,
    received_ns: *mut u64,
) -> fs_status {
    call(|| {
        let out = out_ptr(ns, "ns")?;
        with_ref(frame, |f| {
            out.write(f.frame.timestamp_ns);
            handle::write_opt(clock, f.frame.meta.clock.to_wire().into());
            handle::write_opt(received_ns, f.frame.received_ns);
            Ok(())
        })
    })
}

/// The source's own sequence number (a camera's), if it has one: `*present` says.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `present` and `seq` point to
/// writable storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_source_seq(
    frame: *const fs_frame,
    present: *mut bool,
    seq: *mut u64,
) -> fs_status {
    call(|| {
        let (present, out) = (out_ptr(present, "present")?, out_ptr(seq, "seq")?);
        with_ref(frame, |f| {
            present.write(f.frame.meta.source_seq.is_some());
            out.write(f.frame.meta.source_seq.unwrap_or(0));
            Ok(())
        })
    })
}

/// The source's own timestamp (a camera's capture time), if it has one: `*present` says.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `present`, `ns` and `clock`
/// point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_source_time(
    frame: *const fs_frame,
    present: *mut bool,
    ns: *mut u64,
    clock: *mut fs_clock,
) -> fs_status {
    call(|| {
        let present = out_ptr(present, "present")?;
        let (out_ns, out_clock) = (out_ptr(ns, "ns")?, out_ptr(clock, "clock")?);
        with_ref(frame, |f| {
            let t = f.frame.meta.source_time;
            present.write(t.is_some());
            out_ns.write(t.map_or(0, |t| t.ns));
            out_clock.write(t.map_or(0, |t| t.clock.to_wire().into()));
            Ok(())
        })
    })
}

/// The part of the frame that holds the picture, if said: `*present` says.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `present` and `crop` point to
/// writable storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_crop(
    frame: *const fs_frame,
    present: *mut bool,
    crop: *mut fs_rect,
) -> fs_status {
    call(|| {
        let (present, out) = (out_ptr(present, "present")?, out_ptr(crop, "crop")?);
        with_ref(frame, |f| {
            let c = f.frame.meta.crop;
            present.write(c.is_some());
            out.write(c.map_or(fs_rect::default(), |c| fs_rect {
                x: c.x,
                y: c.y,
                width: c.width,
                height: c.height,
            }));
            Ok(())
        })
    })
}

/// The frame's colorimetry, if said: `*present` says.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `present` and `colorimetry`
/// point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_colorimetry(
    frame: *const fs_frame,
    present: *mut bool,
    colorimetry: *mut fs_colorimetry,
) -> fs_status {
    call(|| {
        let present = out_ptr(present, "present")?;
        let out = out_ptr(colorimetry, "colorimetry")?;
        with_ref(frame, |f| {
            let c = f.frame.meta.colorimetry;
            present.write(c.is_some());
            out.write(c.map_or(fs_colorimetry::default(), |c| fs_colorimetry {
                matrix: c.matrix.to_wire().into(),
                range: c.range.to_wire().into(),
                primaries: c.primaries.to_wire().into(),
                transfer: c.transfer.to_wire().into(),
            }));
            Ok(())
        })
    })
}

/// Whether the source flagged the frame corrupt (a camera's error flag), and how many bytes
/// of the buffer it filled, if less than the frame (`*bytes_used_present` says; NULL pointers
/// for what is not wanted).
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `corrupt`,
/// `bytes_used_present` and `bytes_used` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_flags(
    frame: *const fs_frame,
    corrupt: *mut bool,
    bytes_used_present: *mut bool,
    bytes_used: *mut u64,
) -> fs_status {
    call(|| {
        with_ref(frame, |f| {
            let m = &f.frame.meta;
            handle::write_opt(corrupt, m.corrupt);
            handle::write_opt(bytes_used_present, m.bytes_used.is_some());
            handle::write_opt(bytes_used, m.bytes_used.unwrap_or(0));
            Ok(())
        })
    })
}

/// How many application key/values the frame carries.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `count` points to writable
/// storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_key_value_count(
    frame: *const fs_frame,
    count: *mut usize,
) -> fs_status {
    call(|| {
        let out = out_ptr(count, "count")?;
        with_ref(frame, |f| {
            out.write(f.keys.len());
            Ok(())
        })
    })
}

/// Key/value `index` (in the order they were set): `*key` a NUL-terminated string, `*value`
/// and `*len` its bytes (not NUL-terminated), all borrowed: valid while the frame is.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `key`, `value` and `len`
/// point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_key_value_at(
    frame: *const fs_frame,
    index: usize,
    key: *mut *const c_char,
    value: *mut *const u8,
    len: *mut usize,
) -> fs_status {
    call(|| {
        let out_key = out_ptr(key, "key")?;
        let (out_value, out_len) = (out_ptr(value, "value")?, out_ptr(len, "len")?);
        with_ref(frame, |f| {
            let (k, v) = f.frame.meta.key_values().nth(index).ok_or_else(|| {
                Error::InvalidArgument(format!("key/value {index}: the frame has {}", f.keys.len()))
            })?;
            debug_assert_eq!(f.keys[index].to_bytes(), k.as_bytes());
            out_key.write(f.keys[index].as_ptr());
            out_value.write(v.as_ptr());
            out_len.write(v.len());
            Ok(())
        })
    })
}

/// The value of `key`: `*value` and `*len` its bytes (borrowed: valid while the frame is),
/// `*present` whether the frame has it.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `key` is a NUL-terminated
/// string; `present`, `value` and `len` point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_key_value(
    frame: *const fs_frame,
    key: *const c_char,
    present: *mut bool,
    value: *mut *const u8,
    len: *mut usize,
) -> fs_status {
    call(|| {
        // SAFETY: a NUL-terminated string (Safety above).
        let key = unsafe { handle::str_arg(key, "key") }?;
        let present = out_ptr(present, "present")?;
        let (out_value, out_len) = (out_ptr(value, "value")?, out_ptr(len, "len")?);
        with_ref(frame, |f| {
            let v = f.frame.meta.get(key);
            present.write(v.is_some());
            out_value.write(v.map_or(std::ptr::null(), <[u8]>::as_ptr));
            out_len.write(v.map_or(0, <[u8]>::len));
            Ok(())
        })
    })
}

/// Sets the clock the frame's timestamp is taken on (`FS_CLOCK_*`; monotonic unless set).
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_set_clock(loan: *mut fs_loan, clock_id: fs_clock) -> fs_status {
    call(|| {
        let c = clock(clock_id)?;
        with_mut(loan, |l| {
            l.meta.clock = c;
            Ok(())
        })
    })
}

/// Sets the source's own sequence number (a camera's).
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_set_source_seq(loan: *mut fs_loan, seq: u64) -> fs_status {
    call(|| {
        with_mut(loan, |l| {
            l.meta.source_seq = Some(seq);
            Ok(())
        })
    })
}

/// Sets the source's own timestamp (a camera's capture time): `ns` on `clock_id`
/// (`FS_CLOCK_*`).
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_set_source_time(
    loan: *mut fs_loan,
    ns: u64,
    clock_id: fs_clock,
) -> fs_status {
    call(|| {
        let clock = clock(clock_id)?;
        with_mut(loan, |l| {
            l.meta.source_time = Some(Timestamp { ns, clock });
            Ok(())
        })
    })
}

/// Sets the part of the frame that holds the picture.
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked); `crop` points to a `fs_rect`.
#[no_mangle]
pub unsafe extern "C" fn fs_loan_set_crop(loan: *mut fs_loan, crop: *const fs_rect) -> fs_status {
    call(|| {
        if crop.is_null() {
            return Err(Error::InvalidArgument("crop is NULL".into()));
        }
        // SAFETY: non-NULL and, by the caller's promise, a fs_rect (any bits are valid).
        let c = unsafe { crop.read() };
        with_mut(loan, |l| {
            l.meta.crop = Some(Crop {
                x: c.x,
                y: c.y,
                width: c.width,
                height: c.height,
            });
            Ok(())
        })
    })
}

/// Sets the frame's colorimetry (each field one of its `FS_*` constants).
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked); `colorimetry` points to a
/// `fs_colorimetry`.
#[no_mangle]
pub unsafe extern "C" fn fs_loan_set_colorimetry(
    loan: *mut fs_loan,
    colorimetry: *const fs_colorimetry,
) -> fs_status {
    call(|| {
        if colorimetry.is_null() {
            return Err(Error::InvalidArgument("colorimetry is NULL".into()));
        }
        // SAFETY: non-NULL and, by the caller's promise, a fs_colorimetry (any bits valid).
        let c = unsafe { colorimetry.read() };
        let value = Colorimetry {
            matrix: code(c.matrix, "matrix", Matrix::from_wire)?,
            range: code(c.range, "range", Range::from_wire)?,
            primaries: code(c.primaries, "primaries", Primaries::from_wire)?,
            transfer: code(c.transfer, "transfer", Transfer::from_wire)?,
        };
        with_mut(loan, |l| {
            l.meta.colorimetry = Some(value);
            Ok(())
        })
    })
}

/// Flags the frame corrupt (or not), and sets how many bytes of the buffer the source filled
/// when less than the frame (`bytes_used_present` false: the whole frame).
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_set_flags(
    loan: *mut fs_loan,
    corrupt: bool,
    bytes_used_present: bool,
    bytes_used: u64,
) -> fs_status {
    call(|| {
        with_mut(loan, |l| {
            l.meta.corrupt = corrupt;
            l.meta.bytes_used = bytes_used_present.then_some(bytes_used);
            Ok(())
        })
    })
}

/// Adds (or replaces) an application key/value: `key` 1–`FS_MAX_KEY` printable ASCII bytes
/// without spaces, `value` `len` bytes (at most `FS_MAX_VALUE`; NULL if `len` is 0), at most
/// `FS_MAX_KEY_VALUES` per frame (`FS_ERR_META` otherwise).
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked); `key` is a NUL-terminated string;
/// `value` points to `len` readable bytes (or is NULL with `len` 0).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_set_key_value(
    loan: *mut fs_loan,
    key: *const c_char,
    value: *const u8,
    len: usize,
) -> fs_status {
    call(|| {
        // SAFETY: a NUL-terminated string (Safety above).
        let key = unsafe { handle::str_arg(key, "key") }?;
        if len > FS_MAX_VALUE {
            return Err(MetaError::ValueTooLong {
                key: key.to_owned(),
                len,
            }
            .into());
        }
        let value: &[u8] = match (value.is_null(), len) {
            (_, 0) => &[],
            (true, _) => return Err(Error::InvalidArgument("value is NULL".into())),
            // SAFETY: non-NULL, and the caller promises `len` readable bytes there, which
            // are only read (copied into the metadata) during this call.
            (false, _) => unsafe { std::slice::from_raw_parts(value, len) },
        };
        with_mut(loan, |l| Ok(l.meta.set(key, value)?))
    })
}
