//! The buffer pool `framesharesink` offers upstream in `propose_allocation`: each buffer is a
//! frameshare allocation (memfd, POSIX shm or a dma-buf from a dma-heap or udmabuf) wrapped as
//! fd or dma-buf `GstMemory`, laid out as the caps' `GstVideoInfo` says (and described by a
//! `GstVideoMeta`), so `videotestsrc`, `videoconvert` and friends write straight into memory
//! that consumers map. The pool records each buffer's identity (the fd's inode) and kind in a
//! [`Registry`] the sink shares, so the sink knows its own buffers when they come back filled.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use frameshare::alloc::{Allocator, AllocatorSpec};
use frameshare::BufferKind;
use gst::glib;
use gst::subclass::prelude::*;

use crate::fdmem;
use crate::format::{self, MemorySpan};

/// An fd's identity: (device, inode) — the same object however many times it is dup'd or sent.
pub type Identity = (u64, u64);

/// The identity of the object behind `fd`.
pub fn identity(fd: BorrowedFd<'_>) -> rustix::io::Result<Identity> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// The kinds of the pool's live buffers, by identity: shared by a pool and its sink.
pub type Registry = Arc<Mutex<HashMap<Identity, BufferKind>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

glib::wrapper! {
    /// A pool of frameshare buffers (see the module docs).
    pub struct FramesharePool(ObjectSubclass<imp::FramesharePool>)
        @extends gst::BufferPool, gst::Object;
}

impl FramesharePool {
    /// A pool allocating with `spec` and recording its buffers in `registry`.
    pub fn new(spec: AllocatorSpec, registry: Registry) -> Self {
        let pool: Self = glib::Object::new();
        let mut st = lock(&pool.imp().state);
        st.spec = Some(spec);
        st.registry = registry;
        drop(st);
        pool
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct State {
        pub spec: Option<AllocatorSpec>,
        pub registry: Registry,
        allocator: Option<Box<dyn Allocator>>,
        info: Option<gst_video::VideoInfo>,
    }

    #[derive(Default)]
    pub struct FramesharePool {
        pub state: Mutex<State>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for FramesharePool {
        const NAME: &'static str = "GstFramesharePool";
        type Type = super::FramesharePool;
        type ParentType = gst::BufferPool;
    }

    impl ObjectImpl for FramesharePool {}
    impl GstObjectImpl for FramesharePool {}

    impl BufferPoolImpl for FramesharePool {
        fn options() -> &'static [&'static str] {
            &["GstBufferPoolOptionVideoMeta"]
        }

        fn set_config(&self, config: &mut gst::BufferPoolConfigRef) -> bool {
            let Some((Some(caps), _, _, _)) = config.params() else {
                return false;
            };
            let Ok(info) = gst_video::VideoInfo::from_caps(&caps) else {
                return false;
            };
            if format::fourcc_of(info.format()).is_none() {
                return false;
            }
            let mut st = lock(&self.state);
            if st.allocator.is_none() {
                let spec = st.spec.clone().unwrap_or(AllocatorSpec::Memfd);
                match spec.open() {
                    Ok(a) if a.kind() != BufferKind::SysvShm => st.allocator = Some(a),
                    Ok(_) => {
                        gst::error!(gst::CAT_RUST, imp = self, "sysv-shm has no fds to share");
                        return false;
                    }
                    Err(e) => {
                        gst::error!(gst::CAT_RUST, imp = self, "allocator {spec}: {e}");
                        return false;
                    }
                }
            }
            st.info = Some(info);
            drop(st);
            self.parent_set_config(config)
        }

        fn alloc_buffer(
            &self,
            _params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            let mut st = lock(&self.state);
            let info = st.info.clone().ok_or(gst::FlowError::NotNegotiated)?;
            let size = info.size() as u64;
            let span = MemorySpan {
                start: 0,
                size,
                fd_offset: 0,
            };
            let layout = format::layout_of(&info, info.offset(), info.stride(), &[span], &[size])
                .map_err(|e| {
                gst::error!(gst::CAT_RUST, imp = self, "{e}");
                gst::FlowError::NotNegotiated
            })?;
            let alloc = st.allocator.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
            let fbuf = alloc.allocate(&layout).map_err(|e| {
                gst::error!(gst::CAT_RUST, imp = self, "allocating a frame: {e}");
                gst::FlowError::Error
            })?;
            let kind = fbuf.kind();
            let mut buffer = gst::Buffer::new();
            {
                let b = buffer.get_mut().expect("new buffers are writable");
                for fd in fbuf.fds() {
                    let id = identity(fd).map_err(|_| gst::FlowError::Error)?;
                    let fd_size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
                        .map_err(|_| gst::FlowError::Error)?;
                    let owned = fd.try_clone_to_owned().map_err(|_| gst::FlowError::Error)?;
                    let mut mem = fdmem::wrap_fd(owned, fd_size as usize, kind.is_dma_buf())
                        .map_err(|_| gst::FlowError::Error)?;
                    mem.get_mut()
                        .expect("a new memory is writable")
                        .resize(0..size as usize);
                    b.append_memory(mem);
                    lock(&st.registry).insert(id, kind);
                }
                gst_video::VideoMeta::add_full(
                    b,
                    gst_video::VideoFrameFlags::empty(),
                    info.format(),
                    info.width(),
                    info.height(),
                    info.offset(),
                    info.stride(),
                )
                .map_err(|_| gst::FlowError::Error)?;
            }
            Ok(buffer)
        }

        fn free_buffer(&self, buffer: gst::Buffer) {
            let registry = lock(&self.state).registry.clone();
            for mem in buffer.iter_memories() {
                let id = mem
                    .downcast_memory_ref::<gst_allocators::FdMemory>()
                    .and_then(|m| fdmem::with_memory_fd(m, |fd| identity(fd).ok()))
                    .flatten();
                if let Some(id) = id {
                    lock(&registry).remove(&id);
                }
            }
            self.parent_free_buffer(buffer);
        }
    }
}
