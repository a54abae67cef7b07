//! The C functions called as C calls them: a publisher and a subscriber over a named stream
//! (memfd buffers, so it runs anywhere), metadata and key/values end to end, a wrong pixel
//! caught, and the boundary's refusals (NULL, bad and busy handles, values out of range,
//! non-fence fds, panics).

use std::ffi::{c_char, CStr};
use std::os::fd::IntoRawFd;
use std::ptr::{null, null_mut};
use std::sync::Once;
use std::thread;

use crate::fs_status::{self, *};
use crate::meta::*;
use crate::publisher::*;
use crate::subscriber::*;
use crate::*;

/// Every test's streams live in one private runtime directory.
fn runtime() {
    static DIR: Once = Once::new();
    DIR.call_once(|| {
        let dir =
            std::env::temp_dir().join(format!("frameshare-capi-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("FRAMESHARE_RUNTIME_DIR", &dir);
    });
}

fn last_error() -> String {
    // SAFETY: fs_last_error returns a NUL-terminated string valid until the next failing call
    // on this thread; it is copied at once.
    unsafe { CStr::from_ptr(fs_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn ok(status: fs_status) {
    assert_eq!(status, FS_OK, "{}", last_error());
}

/// A failing status, with the message it left.
#[track_caller]
fn fails(status: fs_status, want: fs_status) -> String {
    assert_eq!(status, want, "{}", last_error());
    last_error()
}

const W: u32 = 64;
const H: u32 = 48;

/// Publishes `frames` frames of `pattern` on `stream`; `draw` fills each loan.
fn publish(
    stream: &'static CStr,
    frames: u64,
    draw: fn(*mut fs_loan, u64),
) -> thread::JoinHandle<fs_publisher_stats> {
    thread::spawn(move || {
        let mut opts = fs_publisher_options_default();
        opts.pattern = c"box".as_ptr();
        opts.name = c"capi-test".as_ptr();
        let mut p = null_mut();
        // SAFETY: in every call here, valid strings, options and out-pointers; handles as made.
        unsafe {
            ok(fs_publisher_new(stream.as_ptr(), &opts, &mut p));
            ok(fs_publisher_allocate_buffers(
                p,
                c"memfd".as_ptr(),
                FS_FORMAT_XR24,
                W,
                H,
                3,
            ));
            ok(fs_publisher_wait_for_consumers(p, 1, 10_000));
            for seq in 0..frames {
                let mut loan = null_mut();
                ok(fs_publisher_loan(p, &mut loan));
                assert!(!loan.is_null(), "a waiting publisher always gets a loan");
                draw(loan, seq);
                ok(fs_loan_publish(loan, seq));
            }
            let mut stats = fs_publisher_stats::default();
            ok(fs_publisher_finish(p, &mut stats));
            stats
        }
    })
}

fn generated_with_metadata(loan: *mut fs_loan, seq: u64) {
    // SAFETY: in every call here, a live loan; valid strings, structs and byte ranges.
    unsafe {
        ok(fs_loan_fill_generated(loan, seq));
        ok(fs_loan_set_clock(loan, FS_CLOCK_BOOTTIME));
        ok(fs_loan_set_source_seq(loan, 1000 + seq));
        ok(fs_loan_set_source_time(
            loan,
            5_000 + seq,
            FS_CLOCK_REALTIME,
        ));
        let crop = fs_rect {
            x: 2,
            y: 4,
            width: 32,
            height: 16,
        };
        ok(fs_loan_set_crop(loan, &crop));
        let c = fs_colorimetry {
            matrix: FS_MATRIX_BT709,
            range: FS_RANGE_FULL,
            primaries: FS_PRIMARIES_BT709,
            transfer: FS_TRANSFER_SRGB,
        };
        ok(fs_loan_set_colorimetry(loan, &c));
        ok(fs_loan_set_flags(loan, seq == 1, true, 77));
        ok(fs_loan_set_key_value(
            loan,
            c"origin".as_ptr(),
            b"c".as_ptr(),
            1,
        ));
        ok(fs_loan_set_key_value(loan, c"empty".as_ptr(), null(), 0));
    }
}

/// Events until the stream ends, each frame passed to `check` and released.
fn subscribe(stream: &CStr, mut check: impl FnMut(*mut fs_frame, u64)) -> (u64, fs_bye_code) {
    let mut opts = fs_subscriber_options_default();
    opts.name = c"capi-test-sub".as_ptr();
    let mut s = null_mut();
    let mut frames = 0;
    // SAFETY: in every call here, valid strings, options and out-pointers; handles as made.
    unsafe {
        ok(fs_subscriber_connect(stream.as_ptr(), &opts, &mut s));
        let mut fd = -1;
        ok(fs_subscriber_fd(s, &mut fd));
        assert!(fd >= 0);
        loop {
            let mut e = std::mem::MaybeUninit::<fs_event>::uninit();
            ok(fs_subscriber_next(s, 10_000, e.as_mut_ptr()));
            let e = e.assume_init();
            match e.kind {
                fs_event_kind::FS_EVENT_FRAME => {
                    frames += 1;
                    check(e.frame, e.seq);
                    ok(fs_frame_release(e.frame, -1));
                }
                fs_event_kind::FS_EVENT_ENDED => {
                    let text = CStr::from_ptr(e.text).to_string_lossy().into_owned();
                    assert!(text.contains("stream ended"), "{text}");
                    let mut e2 = std::mem::MaybeUninit::<fs_event>::uninit();
                    fails(fs_subscriber_next(s, 0, e2.as_mut_ptr()), FS_ERR_ENDED);
                    ok(fs_subscriber_free(s));
                    return (frames, e.code);
                }
                fs_event_kind::FS_EVENT_CONNECTED => {
                    let text = CStr::from_ptr(e.text).to_string_lossy().into_owned();
                    assert_eq!(text, "capi-test");
                }
                _ => {}
            }
        }
    }
}

#[test]
fn frames_and_their_metadata_cross_and_verify() {
    runtime();
    let publisher = publish(c"capi-meta", 6, generated_with_metadata);
    let (frames, code) = subscribe(c"capi-meta", |f, seq| {
        // SAFETY: in every call here, a live frame; out-pointers to locals.
        unsafe {
            let mut b = fs_buffer_info::default();
            ok(fs_frame_buffer(f, &mut b));
            assert_eq!(
                (b.fourcc, b.width, b.height, b.modifier),
                (FS_FORMAT_XR24, W, H, 0)
            );
            assert_eq!((b.kind, b.plane_count, b.sysv_id), (FS_BUFFER_MEMFD, 1, -1));
            assert!(b.planes[0].fd >= 0 && b.planes[0].stride >= W * 4);

            let mut m = fs_mapping::default();
            ok(fs_frame_map(f, &mut m));
            let p = m.planes[0];
            assert!(!p.data.is_null());
            assert_eq!(
                (p.row_bytes, p.rows, p.stride),
                (W * 4, H, b.planes[0].stride)
            );
            // Row 0 starts with the stamp's cell for bit 0: white if seq is odd (XR24 green).
            let green = *p.data.add(1);
            assert_eq!(green > 128, seq & 1 == 1, "frame {seq}: stamp bit 0");
            ok(fs_frame_verify_generated(f));
            ok(fs_frame_unmap(f));
            ok(fs_frame_verify_generated(f)); // maps for itself when not mapped

            let (mut s, mut present) = (0u64, false);
            ok(fs_frame_seq(f, &mut s));
            assert_eq!(s, seq);
            let (mut ns, mut clock, mut received) = (0, 0, 0);
            ok(fs_frame_timestamp(f, &mut ns, &mut clock, &mut received));
            assert_eq!(clock, FS_CLOCK_BOOTTIME);
            assert!(ns > 0 && received > 0);
            ok(fs_frame_source_seq(f, &mut present, &mut s));
            assert_eq!((present, s), (true, 1000 + seq));
            ok(fs_frame_source_time(f, &mut present, &mut ns, &mut clock));
            assert_eq!((present, ns, clock), (true, 5_000 + seq, FS_CLOCK_REALTIME));
            let mut crop = fs_rect::default();
            ok(fs_frame_crop(f, &mut present, &mut crop));
            assert_eq!(
                (present, crop.x, crop.y, crop.width, crop.height),
                (true, 2, 4, 32, 16)
            );
            let mut c = fs_colorimetry::default();
            ok(fs_frame_colorimetry(f, &mut present, &mut c));
            assert_eq!(
                (present, c.matrix, c.range, c.primaries, c.transfer),
                (
                    true,
                    FS_MATRIX_BT709,
                    FS_RANGE_FULL,
                    FS_PRIMARIES_BT709,
                    FS_TRANSFER_SRGB
                )
            );
            let (mut corrupt, mut used) = (false, 0u64);
            ok(fs_frame_flags(f, &mut corrupt, &mut present, &mut used));
            assert_eq!((corrupt, present, used), (seq == 1, true, 77));

            let mut n = 0usize;
            ok(fs_frame_key_value_count(f, &mut n));
            assert_eq!(n, 2);
            let (mut key, mut value, mut len): (*const c_char, *const u8, usize) =
                (null(), null(), 0);
            ok(fs_frame_key_value_at(f, 0, &mut key, &mut value, &mut len));
            assert_eq!(CStr::from_ptr(key), c"origin");
            assert_eq!(std::slice::from_raw_parts(value, len), b"c");
            fails(
                fs_frame_key_value_at(f, 2, &mut key, &mut value, &mut len),
                FS_ERR_INVALID_ARGUMENT,
            );
            ok(fs_frame_key_value(
                f,
                c"empty".as_ptr(),
                &mut present,
                &mut value,
                &mut len,
            ));
            assert_eq!((present, len), (true, 0));
            ok(fs_frame_key_value(
                f,
                c"absent".as_ptr(),
                &mut present,
                &mut value,
                &mut len,
            ));
            assert!(!present && value.is_null());

            let mut fence = 0;
            ok(fs_frame_acquire_fence(f, &mut fence));
            assert_eq!(fence, -1, "the generator publishes without fences");
        }
    });
    assert_eq!(frames, 6);
    assert_eq!(code, FS_BYE_DONE);
    let stats = publisher.join().unwrap();
    assert_eq!((stats.published, stats.dropped, stats.joined), (6, 0, 1));
}

#[test]
fn a_frame_that_is_not_the_generators_is_a_mismatch() {
    runtime();
    // The loan is mapped and written by hand: every byte 0x5a, which no frame of `box` is.
    let publisher = publish(c"capi-mismatch", 2, |loan, _| {
        // SAFETY: a live loan; the mapping's planes are writable for rows x stride bytes.
        unsafe {
            let mut m = fs_mapping::default();
            ok(fs_loan_map(loan, &mut m));
            let p = m.planes[0];
            std::ptr::write_bytes(p.data, 0x5a, (p.rows * p.stride) as usize);
            ok(fs_loan_unmap(loan));
        }
    });
    let mut mismatches = 0;
    subscribe(c"capi-mismatch", |f, _| {
        // SAFETY: a live frame.
        let message = fails(unsafe { fs_frame_verify_generated(f) }, FS_ERR_MISMATCH);
        assert!(message.contains("differs"), "{message}");
        mismatches += 1;
    });
    assert_eq!(mismatches, 2);
    publisher.join().unwrap();
}

/// sw_sync timelines, if this machine has them: a test that needs them fails in the VM (which
/// has them) and is skipped elsewhere.
fn sw_sync() -> bool {
    if frameshare::sync::SwSyncTimeline::is_available() {
        return true;
    }
    assert!(
        std::env::var_os("FRAMESHARE_IN_VM").is_none(),
        "the VM must have sw_sync (debugfs sync/sw_sync)"
    );
    eprintln!("skipped: needs the VM (no sw_sync)");
    false
}

#[test]
fn fences_cross_as_sync_file_fds() {
    use frameshare::sync::SwSyncTimeline;
    runtime();
    if !sw_sync() {
        return;
    }
    const FRAMES: u64 = 4;
    // Each frame is published behind an acquire fence that signals 20 ms later.
    let publisher = thread::spawn(|| {
        let timeline = SwSyncTimeline::open().unwrap();
        let mut opts = fs_publisher_options_default();
        opts.pattern = c"bars".as_ptr();
        let mut p = null_mut();
        // SAFETY: in every call here, valid strings, options and out-pointers; handles as made;
        // each fence fd is handed over once.
        unsafe {
            ok(fs_publisher_new(c"capi-fences".as_ptr(), &opts, &mut p));
            ok(fs_publisher_allocate_buffers(
                p,
                null(),
                FS_FORMAT_XR24,
                W,
                H,
                2,
            ));
            ok(fs_publisher_wait_for_consumers(p, 1, 10_000));
            for seq in 0..FRAMES {
                let mut loan = null_mut();
                ok(fs_publisher_loan(p, &mut loan));
                assert!(!loan.is_null(), "frame {seq}: release fences must signal");
                ok(fs_loan_fill_generated(loan, seq));
                let fence = timeline.create_fence(seq as u32 + 1).unwrap();
                ok(fs_loan_set_acquire_fence(
                    loan,
                    fence.into_fd().into_raw_fd(),
                ));
                ok(fs_loan_publish(loan, seq));
                thread::sleep(std::time::Duration::from_millis(20));
                timeline.advance(1).unwrap();
            }
            let mut stats = fs_publisher_stats::default();
            ok(fs_publisher_finish(p, &mut stats));
            stats
        }
    });
    // Each frame goes back behind a release fence, signalled once it went.
    let releases = SwSyncTimeline::open().unwrap();
    let mut opts = fs_subscriber_options_default();
    opts.name = c"capi-fences-sub".as_ptr();
    let mut s = null_mut();
    let mut frames = 0;
    // SAFETY: in every call here, valid strings, options and out-pointers; handles as made;
    // each release fence fd is handed over once.
    unsafe {
        ok(fs_subscriber_connect(
            c"capi-fences".as_ptr(),
            &opts,
            &mut s,
        ));
        loop {
            let mut e = std::mem::MaybeUninit::<fs_event>::uninit();
            ok(fs_subscriber_next(s, 10_000, e.as_mut_ptr()));
            let e = e.assume_init();
            match e.kind {
                fs_event_kind::FS_EVENT_FRAME => {
                    let mut fd = -1;
                    ok(fs_frame_acquire_fence(e.frame, &mut fd));
                    assert!(fd >= 0, "frame {}: no acquire fence", e.seq);
                    // Mapping waits for the fence: the pixels are there once it returns.
                    let mut m = fs_mapping::default();
                    ok(fs_frame_map(e.frame, &mut m));
                    ok(fs_frame_verify_generated(e.frame));
                    let release = releases.create_fence(frames as u32 + 1).unwrap();
                    ok(fs_frame_release(e.frame, release.into_fd().into_raw_fd()));
                    releases.advance(1).unwrap();
                    frames += 1;
                }
                fs_event_kind::FS_EVENT_ENDED => break,
                _ => {}
            }
        }
        ok(fs_subscriber_free(s));
    }
    assert_eq!(frames, FRAMES);
    let stats = publisher.join().unwrap();
    assert_eq!((stats.published, stats.dropped), (FRAMES, 0));
}

#[test]
fn null_bad_and_busy_handles_are_refused() {
    runtime();
    // SAFETY: in every call here, every pointer is NULL, a bogus address the registry refuses
    // before any dereference, or valid.
    unsafe {
        let mut loan = null_mut();
        let m = fails(
            fs_publisher_loan(null_mut(), &mut loan),
            FS_ERR_INVALID_ARGUMENT,
        );
        assert!(m.contains("fs_publisher is NULL"), "{m}");
        let bogus = 0x1000 as *mut fs_publisher;
        fails(fs_publisher_loan(bogus, &mut loan), FS_ERR_BAD_HANDLE);
        fails(
            fs_frame_release(0x2000 as *mut fs_frame, -1),
            FS_ERR_BAD_HANDLE,
        );
        ok(fs_publisher_free(null_mut()));

        let mut p = null_mut();
        let mut opts = fs_publisher_options_default();
        opts.pattern = c"box".as_ptr();
        fails(
            fs_publisher_new(c"capi-handles".as_ptr(), &opts, null_mut()),
            FS_ERR_INVALID_ARGUMENT,
        );
        fails(
            fs_publisher_new(c"no/slash".as_ptr(), &opts, &mut p),
            FS_ERR_NAME,
        );
        opts.when_full = 9;
        fails(
            fs_publisher_new(c"capi-handles".as_ptr(), &opts, &mut p),
            FS_ERR_INVALID_ARGUMENT,
        );
        opts.when_full = FS_WHEN_FULL_DROP;
        opts.pattern = c"plaid".as_ptr();
        fails(
            fs_publisher_new(c"capi-handles".as_ptr(), &opts, &mut p),
            FS_ERR_INVALID_ARGUMENT,
        );
        opts.pattern = c"box".as_ptr();
        ok(fs_publisher_new(c"capi-handles".as_ptr(), &opts, &mut p));

        // A handle of another type is not a publisher.
        let mut s = null_mut();
        ok(fs_subscriber_connect(
            c"capi-handles".as_ptr(),
            null(),
            &mut s,
        ));
        fails(fs_publisher_loan(s.cast(), &mut loan), FS_ERR_BAD_HANDLE);
        let mut sopts = fs_subscriber_options_default();
        sopts.policy = 7;
        let mut s2 = null_mut();
        fails(
            fs_subscriber_connect(c"x".as_ptr(), &sopts, &mut s2),
            FS_ERR_INVALID_ARGUMENT,
        );
        assert!(s2.is_null(), "nothing is made on a refusal");

        // No buffers yet: the loan is dropped (NULL), not an error.
        ok(fs_publisher_loan(p, &mut loan));
        assert!(loan.is_null());
        fails(
            fs_publisher_allocate_buffers(p, c"memfd".as_ptr(), FS_FORMAT_XR24, W, H, 0),
            FS_ERR_INVALID_ARGUMENT,
        );
        fails(
            fs_publisher_allocate_buffers(p, c"memfd".as_ptr(), 0x2020_2020, W, H, 2),
            FS_ERR_FORMAT,
        );
        fails(
            fs_publisher_allocate_buffers(p, c"floppy".as_ptr(), FS_FORMAT_XR24, W, H, 2),
            FS_ERR_INVALID_ARGUMENT,
        );
        ok(fs_publisher_allocate_buffers(
            p,
            c"memfd".as_ptr(),
            FS_FORMAT_NV12,
            W,
            H,
            2,
        ));

        // One loan at a time; the buffers stay while it is out.
        ok(fs_publisher_loan(p, &mut loan));
        assert!(!loan.is_null());
        let mut second = null_mut();
        fails(fs_publisher_loan(p, &mut second), FS_ERR_BUSY);
        fails(
            fs_publisher_allocate_buffers(p, c"memfd".as_ptr(), FS_FORMAT_XR24, W, H, 2),
            FS_ERR_BUSY,
        );
        let mut info = fs_buffer_info::default();
        ok(fs_loan_buffer(loan, &mut info));
        assert_eq!((info.fourcc, info.plane_count), (FS_FORMAT_NV12, 2));
        fails(fs_loan_set_clock(loan, 0), FS_ERR_INVALID_ARGUMENT);
        let bad = fs_colorimetry {
            matrix: 99,
            ..Default::default()
        };
        fails(fs_loan_set_colorimetry(loan, &bad), FS_ERR_INVALID_ARGUMENT);
        fails(
            fs_loan_set_key_value(loan, c"a b".as_ptr(), null(), 0),
            FS_ERR_META,
        );
        let big = [0u8; FS_MAX_VALUE + 1];
        fails(
            fs_loan_set_key_value(loan, c"k".as_ptr(), big.as_ptr(), big.len()),
            FS_ERR_META,
        );

        // An fd that is not a sync_file is refused, and taken over (closed) all the same: its
        // number no longer names that socket (it may name another by now: tests run in
        // threads). A socket, as the library closes those at once (a refused file on a
        // filesystem is closed on a background thread, so a FUSE daemon cannot hold us).
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let raw = a.into_raw_fd();
        let link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
        let before = link(raw);
        assert!(before.is_some());
        fails(fs_loan_set_acquire_fence(loan, raw), FS_ERR_FENCE);
        assert_ne!(link(raw), before, "the fd was not closed");

        ok(fs_loan_cancel(loan));
        fails(fs_loan_cancel(loan), FS_ERR_BAD_HANDLE);
        ok(fs_publisher_loan(p, &mut loan));
        assert!(!loan.is_null(), "the cancelled buffer is free again");

        // A handle in use is busy for every other call (here: a call made from inside one).
        let nested = crate::handle::with_mut(p, |_| {
            let mut fd = 0;
            Ok(fs_publisher_fd(p, &mut fd))
        });
        assert_eq!(nested.unwrap(), FS_ERR_BUSY);
        fails(fs_publisher_free(s.cast()), FS_ERR_BAD_HANDLE);

        // A loan outliving its publisher: refused, and still freed by cancel.
        ok(fs_publisher_free(p));
        fails(fs_loan_fill_generated(loan, 0), FS_ERR_BAD_HANDLE);
        ok(fs_loan_cancel(loan));
        fails(fs_publisher_free(p), FS_ERR_BAD_HANDLE);
        ok(fs_subscriber_free(s));
    }
}

#[test]
fn a_panic_stops_at_the_boundary() {
    let status = crate::handle::call(|| panic!("boom at the boundary"));
    assert_eq!(status, FS_ERR_PANIC);
    assert!(
        last_error().contains("boom at the boundary"),
        "{}",
        last_error()
    );
    // SAFETY: fs_status_name returns a static NUL-terminated string.
    let name = unsafe { CStr::from_ptr(fs_status_name(status)) };
    assert_eq!(name, c"FS_ERR_PANIC");
}

#[test]
fn constants_match_the_library() {
    use frameshare::buffer::BufferKind;
    use frameshare::bus::ByeCode;
    use frameshare::format::Fourcc;
    let formats = [
        (FS_FORMAT_XR24, Fourcc::XR24),
        (FS_FORMAT_AR24, Fourcc::AR24),
        (FS_FORMAT_XB24, Fourcc::XB24),
        (FS_FORMAT_AB24, Fourcc::AB24),
        (FS_FORMAT_RG24, Fourcc::RG24),
        (FS_FORMAT_NV12, Fourcc::NV12),
        (FS_FORMAT_YUYV, Fourcc::YUYV),
        (FS_FORMAT_UYVY, Fourcc::UYVY),
        (FS_FORMAT_NV21, Fourcc::NV21),
        (FS_FORMAT_YU12, Fourcc::YU12),
        (FS_FORMAT_NV16, Fourcc::NV16),
        (FS_FORMAT_P010, Fourcc::P010),
    ];
    assert_eq!(formats.len(), Fourcc::ALL.len());
    for (c, f) in formats {
        assert_eq!(c, f.0, "{f}");
    }
    let kinds = [
        (FS_BUFFER_DMA_HEAP, BufferKind::DmaHeap),
        (FS_BUFFER_UDMABUF, BufferKind::Udmabuf),
        (FS_BUFFER_GBM, BufferKind::Gbm),
        (FS_BUFFER_V4L2_EXPORT, BufferKind::V4l2Export),
        (FS_BUFFER_DRM_DUMB, BufferKind::DrmDumb),
        (FS_BUFFER_MEMFD, BufferKind::Memfd),
        (FS_BUFFER_POSIX_SHM, BufferKind::PosixShm),
        (FS_BUFFER_SYSV_SHM, BufferKind::SysvShm),
    ];
    assert_eq!(kinds.len(), BufferKind::ALL.len());
    for (c, k) in kinds {
        assert_eq!(c, u32::from(k.to_wire()), "{k}");
    }
    for (c, b) in [
        (FS_BYE_DONE, ByeCode::Done),
        (FS_BYE_PROTOCOL, ByeCode::Protocol),
        (FS_BYE_INTERNAL, ByeCode::Internal),
        (FS_BYE_VERSION, ByeCode::Version),
        (FS_BYE_REFUSED, ByeCode::Refused),
        (FS_BYE_EVICTED, ByeCode::Evicted),
    ] {
        assert_eq!(c, b.to_wire());
    }
    assert_eq!(FS_MAX_PLANES, frameshare::format::MAX_PLANES);
    assert_eq!(FS_MAX_KEY_VALUES, frameshare::meta::MAX_KEY_VALUES);
    assert_eq!(FS_MAX_KEY, frameshare::meta::MAX_KEY);
    assert_eq!(FS_MAX_VALUE, frameshare::meta::MAX_VALUE);
    let version = format!("{FS_VERSION_MAJOR}.{FS_VERSION_MINOR}.{FS_VERSION_PATCH}");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    // SAFETY: fs_version returns a static NUL-terminated string.
    let reported = unsafe { CStr::from_ptr(fs_version()) };
    assert_eq!(reported.to_str().unwrap(), version);
}

/// What a handle owns may move to another thread between calls.
#[test]
fn handle_contents_are_send() {
    fn send<T: Send>() {}
    send::<frameshare::bus::Publisher>();
    send::<frameshare::bus::Subscriber>();
    send::<frameshare::bus::Frame>();
    send::<frameshare::buffer::SharedRead>();
    send::<frameshare::buffer::SharedWrite>();
}
