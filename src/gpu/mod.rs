//! The GPU layer: getting frames into a GPU and running work on them, below the sinks. Today
//! that is [`vulkan`] (feature `vulkan`): devices and their import capabilities, buffer imports
//! (dma-buf, host pointer, staging), the compute conversions and checksums, and fences as
//! SYNC_FD semaphores. The Vulkan sink, the display's conversion stage, `explain` (the import
//! preflight) and the CLI's probe and bench use it; it uses only the layers below (buffer,
//! sync, format, sys), never a sink or the protocol.

#[cfg(feature = "vulkan")]
pub mod vulkan;
