//! frameshare: move video frames between Linux processes without copying them.
//!
//! A producer allocates frame buffers (dma-heap, udmabuf, memfd, POSIX or SysV shm), fills them
//! from a [`source`], and shares them once over a unix socket ([`ipc`]); per frame only a buffer
//! id, a sequence number, a timestamp and an optional fence cross. The consumer hands frames to a
//! [`sink`] (verify, PNG, Vulkan, …) and gives each buffer back with an optional release fence.
//!
//! Layers, each using only those below: `pipeline` → `sink`, `source` → `ipc` → `alloc` →
//! `buffer`, `sync` → `format`, `sys` (the only unsafe code).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc;
pub mod bench;
pub mod buffer;
pub mod counters;
pub mod explain;
pub mod format;
pub mod inventory;
pub mod ipc;
pub mod pipeline;
pub mod probe;
pub mod sink;
pub mod source;
pub mod sync;
pub mod sys;

pub use buffer::{Buffer, BufferKind};
pub use format::{Fourcc, FrameLayout, Modifier};
