//! frameshare: move video frames between Linux processes without copying them.
//!
//! A producer allocates frame buffers ([`alloc`]: dma-heap, udmabuf, GBM, memfd, POSIX or SysV
//! shm), fills them from a [`source`], and shares them once over a unix socket ([`bus`]); per
//! frame only a buffer id, a sequence number, a timestamp and an optional fence cross. The
//! consumer hands frames to a [`sink`] (verify, PNG, Vulkan, KMS, …) and gives each buffer back
//! with an optional release fence.
//!
//! Layers, each using only those below: `pipeline` → `sink` → `gpu` (feature `vulkan`) →
//! `source` → `bus` → `alloc` → `buffer`, `sync` → `format`; `sys` (private) holds the raw
//! system calls.
//!
//! # Unsafe code
//! The crate denies `unsafe_code`; two declared islands opt in, and every block there carries a
//! `// SAFETY:` line (enforced by `clippy::undocumented_unsafe_blocks`):
//! - `sys` (private): raw ioctls, `mmap`, `shmat`, fd adoption;
//! - `gpu::vulkan` (feature `vulkan`), the GPU layer, where ash makes every call `unsafe`.
//!
//! # Features
//! `vulkan` (GPU import and conversion, ash), `kms` (display sink, drm-dumb allocator, drm),
//! `png` (the PNG sink), `gbm` (GBM allocator, links libgbm), `v4l2` (camera source, bindgen).
//! With none, the library is the transport, the shared-memory and dma-buf allocators, the CPU
//! sinks and the generator.

pub mod alloc;
pub mod buffer;
pub mod bus;
pub mod counters;
#[cfg(feature = "vulkan")]
pub mod explain;
pub mod format;
#[cfg(feature = "vulkan")]
pub mod gpu;
pub mod latency;
pub mod meta;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod sync;
mod sys;

pub use buffer::{Buffer, BufferKind};
pub use format::{Fourcc, FrameLayout, Modifier};
