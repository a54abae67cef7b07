//! Publishers and their loans, for C: `fs_publisher` publishes a named stream and owns its
//! buffer pool (allocated here by an allocator name); `fs_loan` is one buffer lent to the
//! application to fill (mapped for the CPU, or drawn by the generator), given a fence and
//! metadata, then published or cancelled. One loan at a time, as `Publisher::loan` borrows the
//! publisher in Rust; between calls the loan is suspended (`Loan::suspend`), and taken up again
//! (`Publisher::resume_loan`) to be published or given back.

use std::collections::HashMap;
use std::ffi::c_char;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use frameshare::alloc::AllocatorSpec;
use frameshare::buffer::{BufferMapping, SharedWrite};
use frameshare::bus::{Publisher, PublisherOptions, PublisherStats, StreamName, WhenFull};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::meta::FrameMeta;
use frameshare::pipeline::pattern_name;
use frameshare::source::{Pattern, Scene};
use frameshare::sync::SyncFile;
use frameshare::Buffer;

use crate::handle::{self, call, out_ptr, with_mut, with_ref, Error, Handle, Kind};
use crate::{fs_buffer_info, fs_mapping, fs_status};

/// What to do when a frame is due and every buffer is still with consumers (`FS_WHEN_FULL_*`).
pub type fs_when_full = u32;
/// `fs_publisher_loan` waits (serving consumers) until a buffer comes back.
pub const FS_WHEN_FULL_WAIT: fs_when_full = 0;
/// `fs_publisher_loan` gives no loan (the frame is counted dropped).
pub const FS_WHEN_FULL_DROP: fs_when_full = 1;

/// Publisher settings; `fs_publisher_options_default()` fills them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fs_publisher_options {
    /// What the producer is, told to consumers (NULL: "frameshare").
    pub name: *const c_char,
    /// The generator pattern the frames follow (`"box"`, `"bars"`, `"solid:RRGGBB"`), or NULL.
    /// Announced to consumers, whose verifying sinks recompute each frame from it, and drawn
    /// by `fs_loan_fill_generated`.
    pub pattern: *const c_char,
    /// `FS_WHEN_FULL_WAIT` or `FS_WHEN_FULL_DROP`.
    pub when_full: fs_when_full,
    /// A consumer that holds a frame or leaves its socket unread this long is evicted,
    /// milliseconds (0: 10 000).
    pub stall_timeout_ms: u32,
}

/// A publisher's counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct fs_publisher_stats {
    /// Frames published.
    pub published: u64,
    /// Frames not sent: no free buffer under `FS_WHEN_FULL_DROP`, or a release fence that did
    /// not signal in time.
    pub dropped: u64,
    /// Consumers that joined.
    pub joined: u64,
    /// Consumers that left or died.
    pub left: u64,
    /// Consumers evicted for stalling.
    pub evicted: u64,
    /// Peers refused (credentials, protocol version, buffers they cannot take).
    pub refused: u64,
}

impl From<&PublisherStats> for fs_publisher_stats {
    fn from(s: &PublisherStats) -> Self {
        fs_publisher_stats {
            published: s.published,
            dropped: s.dropped,
            joined: s.joined,
            left: s.left,
            evicted: s.evicted,
            refused: s.refused,
        }
    }
}

/// A publisher (opaque).
pub struct fs_publisher {
    publisher: Publisher,
    serial: u64,
    pattern: Option<Pattern>,
    /// The pattern's scene for the current buffers' format and size.
    scene: Option<Scene>,
    /// Writable CPU mappings of the pool's buffers, by id, made on first use.
    mappings: Vec<Option<Arc<BufferMapping>>>,
    /// The generator frame each buffer holds, where `fs_loan_fill_generated` drew the last
    /// one and nothing else wrote it since (the next fill redraws only what changed).
    drawn: HashMap<u32, u64>,
    loan_out: bool,
}

impl Handle for fs_publisher {
    const KIND: Kind = Kind::Publisher;
    const NAME: &'static str = "fs_publisher";
}

/// A buffer on loan from a publisher (opaque).
pub struct fs_loan {
    publisher: *mut fs_publisher,
    serial: u64,
    id: u32,
    buffer: Buffer,
    pub(crate) meta: FrameMeta,
    acquire: Option<SyncFile>,
    /// The application's mapping (`fs_loan_map`), if open.
    write: Option<SharedWrite>,
}

impl Handle for fs_loan {
    const KIND: Kind = Kind::Loan;
    const NAME: &'static str = "fs_loan";
}

impl fs_publisher {
    /// A writable mapping of buffer `id` (`buffer`), made once.
    fn mapping(&mut self, id: u32, buffer: &Buffer) -> Result<Arc<BufferMapping>, Error> {
        let i = id as usize;
        if self.mappings.len() <= i {
            self.mappings.resize(i + 1, None);
        }
        if let Some(m) = &self.mappings[i] {
            return Ok(m.clone());
        }
        let m = Arc::new(buffer.map(true)?);
        self.mappings[i] = Some(m.clone());
        Ok(m)
    }
}

/// Runs `f` on a loan and its publisher (both used exclusively).
fn with_loan<R>(
    loan: *mut fs_loan,
    f: impl FnOnce(&mut fs_loan, &mut fs_publisher) -> Result<R, Error>,
) -> Result<R, Error> {
    with_mut(loan, |l| {
        with_mut(l.publisher, |p| {
            if p.serial != l.serial {
                return Err(Error::BadHandle("fs_publisher (of this loan)"));
            }
            f(l, p)
        })
    })
}

/// What `fs_publisher_options_default` returns (a constant: nothing there can panic).
const OPTIONS_DEFAULT: fs_publisher_options = fs_publisher_options {
    name: std::ptr::null(),
    pattern: std::ptr::null(),
    when_full: FS_WHEN_FULL_WAIT,
    stall_timeout_ms: 0,
};

/// Default publisher settings: no name, no pattern, `FS_WHEN_FULL_WAIT`, a 10 s stall timeout.
#[no_mangle]
pub extern "C" fn fs_publisher_options_default() -> fs_publisher_options {
    OPTIONS_DEFAULT
}

/// Publishes the stream `stream` (its socket in `$FRAMESHARE_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/frameshare`, else `/run/frameshare` for root), or listens at the socket
/// path `stream` if it starts with `/`. Consumers may connect from now on; give the stream
/// buffers with `fs_publisher_allocate_buffers` before loaning. Free it with
/// `fs_publisher_finish` (a clean end) or `fs_publisher_free`.
///
/// # Safety
/// `stream` is a NUL-terminated string; `options` is NULL (defaults) or points to a
/// `fs_publisher_options` whose strings are NULL or NUL-terminated; `out` points to writable
/// storage for the handle.
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_new(
    stream: *const c_char,
    options: *const fs_publisher_options,
    out: *mut *mut fs_publisher,
) -> fs_status {
    call(|| {
        let out = out_ptr(out, "out")?;
        // SAFETY: the caller passes a NUL-terminated string (Safety above).
        let stream = unsafe { handle::str_arg(stream, "stream") }?;
        let o = if options.is_null() {
            fs_publisher_options_default()
        } else {
            // SAFETY: non-NULL and, by the caller's promise, a valid fs_publisher_options (all
            // of its fields accept any bit pattern).
            unsafe { options.read() }
        };
        // SAFETY: the options' strings are NULL or NUL-terminated (Safety above).
        let name = unsafe { handle::opt_str_arg(o.name, "options.name") }?;
        // SAFETY: as above.
        let pattern = unsafe { handle::opt_str_arg(o.pattern, "options.pattern") }?
            .map(|p| p.parse::<Pattern>().map_err(Error::InvalidArgument))
            .transpose()?;
        let when_full = match o.when_full {
            FS_WHEN_FULL_WAIT => WhenFull::Wait,
            FS_WHEN_FULL_DROP => WhenFull::Drop,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "options.when_full {other} is not an FS_WHEN_FULL_* value"
                )))
            }
        };
        let defaults = PublisherOptions::default();
        let opts = PublisherOptions {
            name: name.map_or(defaults.name.clone(), str::to_owned),
            pattern: pattern.map(pattern_name),
            when_full,
            stall_timeout: match o.stall_timeout_ms {
                0 => defaults.stall_timeout,
                ms => Duration::from_millis(ms.into()),
            },
            ..defaults
        };
        let publisher = if stream.starts_with('/') {
            Publisher::listen(Path::new(stream), opts)?
        } else {
            Publisher::bind(&StreamName::new(stream)?, opts)?
        };
        out.write(handle::register(fs_publisher {
            publisher,
            serial: handle::next_serial(),
            pattern,
            scene: None,
            mappings: Vec::new(),
            drawn: HashMap::new(),
            loan_out: false,
        }));
        Ok(())
    })
}

/// Gives the stream `count` (1–64) new buffers of `fourcc` (`FS_FORMAT_*`), `width` x
/// `height`, LINEAR with rows aligned to 256 bytes, from the allocator `alloc` (`"auto"` or
/// NULL: the best this machine offers; `"memfd"`, `"dma-heap"`, `"udmabuf"`, `"posix-shm"`,
/// `"sysv-shm"`, …). Buffers there were retire (consumers are told once they gave their
/// frames back): a format or size change. Not while a loan is out (`FS_ERR_BUSY`).
///
/// # Safety
/// `publisher` is a handle from `fs_publisher_new` (checked); `alloc` is NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_allocate_buffers(
    publisher: *mut fs_publisher,
    alloc: *const c_char,
    fourcc: u32,
    width: u32,
    height: u32,
    count: u32,
) -> fs_status {
    call(|| {
        // SAFETY: NULL or NUL-terminated (Safety above).
        let alloc = unsafe { handle::opt_str_arg(alloc, "alloc") }?.unwrap_or("auto");
        with_mut(publisher, |p| {
            if p.loan_out {
                return Err(Error::Busy(
                    "a loan is out: publish or cancel it before changing the buffers".into(),
                ));
            }
            if !(1..=frameshare::bus::wire::MAX_BUFFERS).contains(&count) {
                return Err(Error::InvalidArgument(format!(
                    "count {count}: want 1-{}",
                    frameshare::bus::wire::MAX_BUFFERS
                )));
            }
            let layout = FrameLayout::linear(Fourcc(fourcc), width, height, 256)?;
            let mut allocator = alloc.parse::<AllocatorSpec>()?.open()?;
            let buffers = (0..count)
                .map(|_| allocator.allocate(&layout))
                .collect::<Result<Vec<_>, _>>()?;
            p.publisher.set_buffers(buffers)?;
            // Ids of retired buffers are reused: forget what was mapped or drawn under them.
            p.mappings.clear();
            p.drawn.clear();
            p.scene = p.pattern.map(|pattern| Scene::new(pattern, &layout));
            Ok(())
        })
    })
}

/// Serves consumers (connections, handshakes, releases) until at least `count` of them take
/// frames. `FS_ERR_TIMEOUT` if `timeout_ms` passed first (negative: no limit).
///
/// # Safety
/// `publisher` is a handle from `fs_publisher_new` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_wait_for_consumers(
    publisher: *mut fs_publisher,
    count: u32,
    timeout_ms: i32,
) -> fs_status {
    call(|| {
        with_mut(publisher, |p| {
            let timeout = handle::timeout_ms(timeout_ms);
            match p.publisher.wait_for_consumers(count as usize, timeout)? {
                true => Ok(()),
                false => Err(Error::Timeout(format!(
                    "fewer than {count} consumer(s) after {timeout_ms} ms"
                ))),
            }
        })
    })
}

/// Serves consumers until something happened or `timeout_ms` passed (negative: until
/// something happened; 0: only what is pending). `*progress` (if not NULL) says whether
/// something happened. Call it when the publisher's fd (`fs_publisher_fd`) is readable.
///
/// # Safety
/// `publisher` is a handle from `fs_publisher_new` (checked); `progress` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_dispatch(
    publisher: *mut fs_publisher,
    timeout_ms: i32,
    progress: *mut bool,
) -> fs_status {
    call(|| {
        with_mut(publisher, |p| {
            let done = p.publisher.dispatch(handle::timeout_ms(timeout_ms))?;
            handle::write_opt(progress, done);
            Ok(())
        })
    })
}

/// The publisher's fd for `poll()`/`epoll` (readable when `fs_publisher_dispatch` has work),
/// borrowed: valid until the publisher is freed.
///
/// # Safety
/// `publisher` is a handle from `fs_publisher_new` (checked); `fd` points to a writable int.
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_fd(
    publisher: *const fs_publisher,
    fd: *mut i32,
) -> fs_status {
    call(|| {
        let out = out_ptr(fd, "fd")?;
        with_ref(publisher, |p| {
            out.write(p.publisher.as_fd().as_raw_fd());
            Ok(())
        })
    })
}

/// The publisher's counters so far, and how many consumers take frames now.
///
/// # Safety
/// `publisher` is a handle from `fs_publisher_new` (checked); `stats` points to writable
/// storage; `consumers` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_get_stats(
    publisher: *const fs_publisher,
    stats: *mut fs_publisher_stats,
    consumers: *mut u32,
) -> fs_status {
    call(|| {
        let out = out_ptr(stats, "stats")?;
        with_ref(publisher, |p| {
            out.write(p.publisher.stats().into());
            handle::write_opt(consumers, p.publisher.consumers().len() as u32);
            Ok(())
        })
    })
}

/// Takes a free buffer for the next frame. `*loan` is the loan, or NULL when the frame is
/// dropped (counted): no buffer came free under `FS_WHEN_FULL_DROP`, or its release fences
/// did not signal in time. Under `FS_WHEN_FULL_WAIT` this serves consumers until one gives a
/// buffer back. One loan at a time: `FS_ERR_BUSY` while one is out.
///
/// # Safety
/// `publisher` is a handle from `fs_publisher_new` (checked); `loan` points to writable
/// storage for the handle.
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_loan(
    publisher: *mut fs_publisher,
    loan: *mut *mut fs_loan,
) -> fs_status {
    call(|| {
        let out = out_ptr(loan, "loan")?;
        with_mut(publisher, |p| {
            if p.loan_out {
                return Err(Error::Busy(
                    "a loan is out already: publish or cancel it first".into(),
                ));
            }
            let Some(l) = p.publisher.loan()? else {
                out.write(std::ptr::null_mut());
                return Ok(());
            };
            let buffer = l.buffer().clone();
            let id = l.suspend();
            p.loan_out = true;
            out.write(handle::register(fs_loan {
                publisher,
                serial: p.serial,
                id,
                buffer,
                meta: FrameMeta::default(),
                acquire: None,
                write: None,
            }));
            Ok(())
        })
    })
}

/// Ends the stream cleanly and frees the publisher: consumers are told no frame follows,
/// their frames are waited for (a stalled consumer is evicted after the stall timeout), they
/// are told goodbye, and the socket is removed. `stats` (if not NULL) gets the final counters.
/// The handle is gone whatever this returns; a loan still out is dropped unsent.
///
/// # Safety
/// `publisher` is a handle from `fs_publisher_new` (checked); `stats` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_finish(
    publisher: *mut fs_publisher,
    stats: *mut fs_publisher_stats,
) -> fs_status {
    call(|| {
        let p = handle::take(publisher)?;
        let final_stats = p.publisher.finish()?;
        handle::write_opt(stats, (&final_stats).into());
        Ok(())
    })
}

/// Frees the publisher without a clean end: consumers see the producer go away (those that
/// reconnect wait for it to come back). NULL is a no-op.
///
/// # Safety
/// `publisher` is NULL or a handle from `fs_publisher_new` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_publisher_free(publisher: *mut fs_publisher) -> fs_status {
    call(|| {
        if !publisher.is_null() {
            drop(handle::take(publisher)?);
        }
        Ok(())
    })
}

/// The loaned buffer: its id, memory (fds), format and planes. The fds are borrowed: valid
/// while the loan is.
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked); `info` points to writable storage.
#[no_mangle]
pub unsafe extern "C" fn fs_loan_buffer(
    loan: *const fs_loan,
    info: *mut fs_buffer_info,
) -> fs_status {
    call(|| {
        let out = out_ptr(info, "info")?;
        with_ref(loan, |l| {
            out.write(crate::buffer_info(l.id, &l.buffer));
            Ok(())
        })
    })
}

/// Maps the loaned buffer for writing on the CPU (for dma-bufs, brackets the access with
/// `DMA_BUF_IOCTL_SYNC` WRITE START now and END at `fs_loan_unmap`, publish or cancel).
/// `*mapping` gets each plane's address. Mapping again returns the same mapping. The buffer
/// may hold an older frame: write every pixel.
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked); `mapping` points to writable
/// storage.
#[no_mangle]
pub unsafe extern "C" fn fs_loan_map(loan: *mut fs_loan, mapping: *mut fs_mapping) -> fs_status {
    call(|| {
        let out = out_ptr(mapping, "mapping")?;
        with_loan(loan, |l, p| {
            if l.write.is_none() {
                l.write = Some(p.mapping(l.id, &l.buffer)?.write_shared()?);
            }
            // The application writes it now: the generator redraws all of it next time.
            p.drawn.remove(&l.id);
            let w = l.write.as_ref().expect("set above");
            out.write(crate::mapping_of(w.layout(), |i| w.region_ptr(i)));
            Ok(())
        })
    })
}

/// Ends the CPU access `fs_loan_map` began (the mapping's addresses are no longer valid).
/// Without a mapping, a no-op.
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_unmap(loan: *mut fs_loan) -> fs_status {
    call(|| {
        with_mut(loan, |l| {
            l.write = None;
            Ok(())
        })
    })
}

/// Draws frame `seq` of the publisher's generator pattern (`fs_publisher_options.pattern`)
/// into the loaned buffer: exactly what `frameshare produce` draws, so consumers that verify
/// (`frameshare consume --sink verify`) accept it. Redraws only the rows that changed since
/// this buffer last held a generated frame. `FS_ERR_UNSUPPORTED` without a pattern.
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_fill_generated(loan: *mut fs_loan, seq: u64) -> fs_status {
    call(|| {
        with_loan(loan, |l, p| {
            if p.scene.is_none() {
                return Err(Error::Unsupported(
                    "the publisher has no generator pattern (fs_publisher_options.pattern)".into(),
                ));
            }
            let temporary;
            let (access, mapped) = match &l.write {
                Some(w) => (w, true),
                None => {
                    temporary = p.mapping(l.id, &l.buffer)?.write_shared()?;
                    (&temporary, false)
                }
            };
            let scene = p.scene.as_ref().expect("checked above");
            let frame = scene.frame(seq);
            let layout = access.layout();
            // A buffer the application has mapped may hold anything: draw all of it.
            let before = if mapped {
                p.drawn.remove(&l.id)
            } else {
                p.drawn.insert(l.id, seq)
            };
            let ranges = match before {
                Some(prev) if !mapped => frame.rows_differing_from(prev),
                _ => vec![(0, layout.height())],
            };
            for (y0, y1) in ranges {
                for (plane, info) in layout.info().planes.iter().enumerate() {
                    let pl = layout.planes()[plane];
                    let (base, len) = access.region_ptr(pl.fd_index as usize);
                    for r in y0.div_ceil(info.vsub)..y1.div_ceil(info.vsub) {
                        let row = frame.row(plane, r);
                        let start = pl.offset as usize + r as usize * pl.stride as usize;
                        assert!(start + row.len() <= len, "a row past its mapping");
                        // SAFETY: `base..base+len` is a live writable mapping (the guard
                        // `access` holds it) and the row lies inside it (asserted); the source
                        // is a Vec of this process, not in that mapping; the publisher loaned
                        // the buffer to us alone, so nothing else writes it now.
                        unsafe {
                            std::ptr::copy_nonoverlapping(row.as_ptr(), base.add(start), row.len())
                        };
                    }
                }
            }
            Ok(())
        })
    })
}

/// Attaches an acquire fence (a sync_file fd) that consumers wait on before reading: the
/// pixels are written by a device after the frame is published. The fd is taken over (closed
/// by the library), also when this fails.
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked); `fence_fd` is an open fd the
/// caller owns and gives up.
#[no_mangle]
pub unsafe extern "C" fn fs_loan_set_acquire_fence(loan: *mut fs_loan, fence_fd: i32) -> fs_status {
    call(|| {
        if fence_fd < 0 {
            return Err(Error::InvalidArgument(format!("fence fd {fence_fd}")));
        }
        // SAFETY: the caller hands over an open fd it owns (Safety above); from here it is
        // owned once, by this OwnedFd.
        let fd = unsafe { OwnedFd::from_raw_fd(fence_fd) };
        let fence = SyncFile::try_from_fd(fd)?;
        with_mut(loan, |l| {
            l.acquire = Some(fence);
            Ok(())
        })
    })
}

/// Publishes the loaned buffer as frame `seq` to every consumer, as their policies say, with
/// the metadata and acquire fence set on the loan; a mapping still open is ended first. The
/// loan handle is gone whatever this returns.
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_publish(loan: *mut fs_loan, seq: u64) -> fs_status {
    call(|| {
        let mut l = handle::take(loan)?;
        // The CPU access ends before any consumer reads.
        l.write = None;
        with_mut(l.publisher, |p| {
            if p.serial != l.serial {
                return Err(Error::BadHandle("fs_publisher (of this loan)"));
            }
            p.loan_out = false;
            let mut loan = p.publisher.resume_loan(l.id)?;
            *loan.meta_mut() = std::mem::take(&mut l.meta);
            if let Some(fence) = l.acquire.take() {
                loan.set_acquire_fence(fence);
            }
            loan.publish(seq)?;
            Ok(())
        })
    })
}

/// Gives the loaned buffer back unsent (a mapping still open is ended). The loan handle is
/// gone; if its publisher was freed already, this only frees the loan.
///
/// # Safety
/// `loan` is a handle from `fs_publisher_loan` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_loan_cancel(loan: *mut fs_loan) -> fs_status {
    call(|| {
        let mut l = handle::take(loan)?;
        l.write = None;
        match with_mut(l.publisher, |p| {
            if p.serial != l.serial {
                return Err(Error::BadHandle("fs_publisher (of this loan)"));
            }
            p.loan_out = false;
            drop(p.publisher.resume_loan(l.id)?); // a loan dropped unsent gives the buffer back
            Ok(())
        }) {
            Err(Error::BadHandle(_)) => Ok(()),
            other => other,
        }
    })
}
