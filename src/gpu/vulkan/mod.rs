//! Vulkan, split by Vulkan object the way wgpu-hal's backend is:
//!
//! | module | owns |
//! |---|---|
//! | `instance` | the loader and instance ([`Instance`]), physical devices and what they can import ([`Adapter`], [`DeviceCaps`]), device choice ([`select`]) |
//! | `device` | the logical device and its queue ([`Device`]) |
//! | `memory` | allocation and binding, imported or not (one `allocate_and_bind`), object lifetimes |
//! | `import` | a buffer's memory into the device by the best path ([`Import`]: dma-buf image or buffer, host pointer, staging) |
//! | `compute` | the compute pipelines ([`Pipelines`]) built from `shaders/` |
//! | `job` | per buffer, the outputs and the recorded command buffer ([`FrameJob`]) |
//! | `queue` | submitting a job per frame with its acquire and release fences ([`FrameQueue`]) |
//! | `sync` | SYNC_FD semaphores and fences |
//! | `conv` | format and flag mappings (fourcc → Vulkan formats, images, shader codes) |
//! | [`checksum`] | the frame checksum the shaders compute, defined for the CPU |
//! | `error` | [`VulkanError`], by class, and the per-call result mappings |
//!
//! # The second unsafe island
//! The crate denies `unsafe_code`; `sys` is the first island that allows it, this module the
//! second: ash makes every Vulkan call `unsafe`, so the layer opts in here, once, for all of its
//! files. Every block carries a `// SAFETY:` line (enforced by
//! `clippy::undocumented_unsafe_blocks`), create-infos name the rule they satisfy (`// Rule:`),
//! and the public API is safe: objects are owned by values that destroy them (half-built ones
//! too), a job's outputs and staging memory are unreachable while a submission uses them, and
//! fds cross into the driver through `sys::fd::hand_over`.
#![allow(unsafe_code)]

pub mod checksum;
mod compute;
mod conv;
mod device;
mod error;
mod import;
mod instance;
mod job;
mod memory;
mod queue;
mod sync;

pub use compute::Pipelines;
pub use conv::{image_plan, image_specs, ImagePlan, ImageSpec};
pub use device::Device;
pub use error::{chain, PassedOver, VulkanError};
pub use import::{Import, ImportMode};
pub use instance::{
    icd_installed, probe, select, Adapter, DeviceCaps, FormatSupport, ImportPath, Instance,
    ModifierSupport,
};
pub use job::{Conversion, FrameJob};
pub use queue::FrameQueue;
