//! The boundary every entry point goes through: the registry of live handles (a handle is an
//! address the registry knows, with its type and who is using it, so a freed, foreign or
//! wrong-type pointer is refused before anything dereferences it, and two threads never use
//! one handle at once), the panic catcher, the error type and its status codes, the
//! thread-local last error, and the checks on pointers and strings from C.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use frameshare::alloc::AllocError;
use frameshare::buffer::BufferError;
use frameshare::bus::{NameError, PublishError, SubscribeError};
use frameshare::format::FormatError;
use frameshare::meta::MetaError;
use frameshare::source::generator::Mismatch;
use frameshare::sync::FenceError;

use crate::fs_status::{self, *};

/// The types of handle C holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Publisher,
    Loan,
    Subscriber,
    Frame,
}

/// A type C gets handles to.
pub(crate) trait Handle {
    /// Its kind in the registry.
    const KIND: Kind;
    /// Its C name, for messages.
    const NAME: &'static str;
}

/// Who is using a live handle.
#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// Calls reading it now.
    readers: u32,
    /// A call changing it now.
    writer: bool,
}

/// Live handles by address.
static LIVE: Mutex<BTreeMap<usize, Entry>> = Mutex::new(BTreeMap::new());

fn live() -> MutexGuard<'static, BTreeMap<usize, Entry>> {
    // Nothing panics while holding the lock; a poisoned map is still consistent.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh number for a handle that others point to (a publisher, for its loans): an address
/// can be reused by a later handle, a serial cannot.
pub(crate) fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Makes `value` a handle C can hold.
pub(crate) fn register<T: Handle>(value: T) -> *mut T {
    let ptr = Box::into_raw(Box::new(value));
    live().insert(
        ptr as usize,
        Entry {
            kind: T::KIND,
            readers: 0,
            writer: false,
        },
    );
    ptr
}

/// Use of a handle, given back when dropped (also when the call panics).
struct Claim {
    addr: usize,
    writer: bool,
}

impl Claim {
    fn new<T: Handle>(ptr: *const T, writer: bool) -> Result<Claim, Error> {
        if ptr.is_null() {
            return Err(Error::InvalidArgument(format!("{} is NULL", T::NAME)));
        }
        let addr = ptr as usize;
        let mut live = live();
        let entry = live
            .get_mut(&addr)
            .filter(|e| e.kind == T::KIND)
            .ok_or(Error::BadHandle(T::NAME))?;
        if entry.writer || (writer && entry.readers > 0) {
            return Err(Error::Busy(format!(
                "the {} is in use by another thread",
                T::NAME
            )));
        }
        if writer {
            entry.writer = true;
        } else {
            entry.readers += 1;
        }
        Ok(Claim { addr, writer })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(e) = live().get_mut(&self.addr) {
            if self.writer {
                e.writer = false;
            } else {
                e.readers -= 1;
            }
        }
    }
}

/// Runs `f` on the handle `ptr` with exclusive use of it.
pub(crate) fn with_mut<T: Handle, R>(
    ptr: *mut T,
    f: impl FnOnce(&mut T) -> Result<R, Error>,
) -> Result<R, Error> {
    let _claim = Claim::new(ptr.cast_const(), true)?;
    // SAFETY: the registry knows `ptr` as a live `Box<T>` made by `register` and not yet
    // taken back, and the exclusive claim keeps every other call off it until `_claim` drops,
    // after `f` returned: this is the only reference.
    let value = unsafe { &mut *ptr };
    f(value)
}

/// Runs `f` on the handle `ptr`, shared with other readers.
pub(crate) fn with_ref<T: Handle, R>(
    ptr: *const T,
    f: impl FnOnce(&T) -> Result<R, Error>,
) -> Result<R, Error> {
    let _claim = Claim::new(ptr, false)?;
    // SAFETY: as in `with_mut`; a shared claim admits only other shared references.
    let value = unsafe { &*ptr };
    f(value)
}

/// Takes the handle `ptr` back from C (it is no longer live).
pub(crate) fn take<T: Handle>(ptr: *mut T) -> Result<Box<T>, Error> {
    if ptr.is_null() {
        return Err(Error::InvalidArgument(format!("{} is NULL", T::NAME)));
    }
    {
        let mut live = live();
        let addr = ptr as usize;
        match live.get(&addr) {
            Some(e) if e.kind == T::KIND && !e.writer && e.readers == 0 => {
                live.remove(&addr);
            }
            Some(e) if e.kind == T::KIND => {
                return Err(Error::Busy(format!(
                    "the {} is in use by another thread",
                    T::NAME
                )))
            }
            _ => return Err(Error::BadHandle(T::NAME)),
        }
    }
    // SAFETY: `ptr` came from `Box::into_raw` in `register`, and removing it from the registry
    // above (unclaimed) made this the only owner: no later call can reach it.
    Ok(unsafe { Box::from_raw(ptr) })
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A bad argument.
    #[error("{0}")]
    InvalidArgument(String),
    /// A pointer that is not a live handle of its type.
    #[error("not a live {0} handle (never made, freed already, or another kind of handle)")]
    BadHandle(&'static str),
    /// In use.
    #[error("{0}")]
    Busy(String),
    /// The stream lacks what the call needs.
    #[error("{0}")]
    Unsupported(String),
    /// Nothing came in time.
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
}

impl Error {
    /// The code C sees.
    pub(crate) fn status(&self) -> fs_status {
        match self {
            Error::InvalidArgument(_) => FS_ERR_INVALID_ARGUMENT,
            Error::BadHandle(_) => FS_ERR_BAD_HANDLE,
            Error::Busy(_) => FS_ERR_BUSY,
            Error::Unsupported(_) => FS_ERR_UNSUPPORTED,
            Error::Timeout(_) => FS_ERR_TIMEOUT,
            Error::Publish(e) => match e {
                PublishError::Name(_) => FS_ERR_NAME,
                PublishError::Channel(_) | PublishError::Poll(_) | PublishError::Interrupted => {
                    FS_ERR_IO
                }
                PublishError::Buffer(e) => buffer_status(e),
                PublishError::UnknownBuffer(_)
                | PublishError::NotLoaned(_)
                | PublishError::TooManyBuffers => FS_ERR_INVALID_ARGUMENT,
                PublishError::Busy(_) => FS_ERR_BUSY,
                PublishError::Fence(e) => fence_status(e),
                PublishError::NoConsumer(_) => FS_ERR_NO_CONSUMER,
            },
            Error::Subscribe(e) => match e {
                SubscribeError::Name(_) => FS_ERR_NAME,
                SubscribeError::Channel(_)
                | SubscribeError::Poll(_)
                | SubscribeError::Interrupted => FS_ERR_IO,
                SubscribeError::NotThere { .. } => FS_ERR_NOT_FOUND,
                SubscribeError::Protocol(_)
                | SubscribeError::Bye { .. }
                | SubscribeError::Untrusted(_) => FS_ERR_PEER,
                SubscribeError::Buffer { source, .. } => buffer_status(source),
                SubscribeError::Ended => FS_ERR_ENDED,
                SubscribeError::Timeout(_) => FS_ERR_TIMEOUT,
                SubscribeError::NotHeld { .. } => FS_ERR_INVALID_ARGUMENT,
            },
            Error::Alloc(AllocError::Layout(_)) => FS_ERR_FORMAT,
            Error::Alloc(AllocError::UnknownName(_)) => FS_ERR_INVALID_ARGUMENT,
            Error::Alloc(_) => FS_ERR_BUFFER,
            Error::Format(_) => FS_ERR_FORMAT,
            Error::Buffer(e) => buffer_status(e),
            Error::Name(_) => FS_ERR_NAME,
            Error::Fence(e) => fence_status(e),
            Error::Meta(_) => FS_ERR_META,
            Error::Mismatch(_) => FS_ERR_MISMATCH,
        }
    }
}

fn buffer_status(e: &BufferError) -> fs_status {
    match e {
        BufferError::Layout(_) => FS_ERR_FORMAT,
        _ => FS_ERR_BUFFER,
    }
}

fn fence_status(e: &FenceError) -> fs_status {
    if e.is_timeout() {
        FS_ERR_TIMEOUT
    } else {
        FS_ERR_FENCE
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// The last error's message on this thread.
pub(crate) fn last_error() -> *const c_char {
    // A panic cannot come out of here: `with` on a live thread and a borrow nothing else holds.
    LAST_ERROR.with(|m| m.borrow().as_ptr())
}

fn set_last_error(message: String) {
    let message = CString::new(message.replace('\0', "\u{fffd}")).unwrap_or_default();
    LAST_ERROR.with(|m| *m.borrow_mut() = message);
}

/// An error and its causes, each said once (a message that already includes its source is
/// not repeated), as the command line prints them.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// Runs the body of an entry point: its error becomes a status and the thread's last error,
/// and a panic is caught here, at the boundary, and becomes `FS_ERR_PANIC`.
pub(crate) fn call(f: impl FnOnce() -> Result<(), Error>) -> fs_status {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => FS_OK,
        Ok(Err(e)) => {
            set_last_error(describe(&e));
            e.status()
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".into());
            set_last_error(format!("internal error (a bug in frameshare): {what}"));
            FS_ERR_PANIC
        }
    }
}

/// Runs an entry point that returns a value rather than a status (and has no error): a panic
/// is caught here all the same, and `fallback` returned.
pub(crate) fn no_panic<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Writes `value` to the out-pointer `out`, named `what` in the error if it is NULL. Check
/// every out-pointer with [`out_ptr`] before acting, so that a NULL one changes nothing.
pub(crate) fn out_ptr<T>(out: *mut T, what: &str) -> Result<OutPtr<T>, Error> {
    if out.is_null() {
        return Err(Error::InvalidArgument(format!("{what} is NULL")));
    }
    Ok(OutPtr(out))
}

/// A checked, non-NULL out-pointer from C.
pub(crate) struct OutPtr<T>(*mut T);

impl<T> OutPtr<T> {
    /// Stores `value` there.
    pub(crate) fn write(self, value: T) {
        // SAFETY: non-NULL (checked by `out_ptr`), and the C caller promises (every function's
        // Safety section) that out-pointers point to writable, aligned storage of their type.
        // `write` does not read or drop what was there (C storage may be uninitialised).
        unsafe { self.0.write(value) }
    }
}

/// Writes `value` to `out` if it is not NULL (an optional out-pointer).
pub(crate) fn write_opt<T>(out: *mut T, value: T) {
    if !out.is_null() {
        OutPtr(out).write(value);
    }
}

/// A NUL-terminated UTF-8 string argument (`what` names it in errors).
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn str_arg<'a>(s: *const c_char, what: &str) -> Result<&'a str, Error> {
    // SAFETY: forwarded to the caller's contract.
    unsafe { opt_str_arg(s, what) }?
        .ok_or_else(|| Error::InvalidArgument(format!("{what} is NULL")))
}

/// A string argument that may be NULL.
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(
    s: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Error> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string living for 'a.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str()
        .map(Some)
        .map_err(|_| Error::InvalidArgument(format!("{what} is not UTF-8")))
}

/// A timeout from C: negative waits as long as it takes.
pub(crate) fn timeout_ms(ms: i32) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}
