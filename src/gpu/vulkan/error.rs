//! [`VulkanError`]: what went wrong, by class — no loader or device, unsupported by this driver,
//! out of memory, device lost, a wait that timed out, or a call that failed unexpectedly — so a
//! caller can tell "this machine cannot" from "try again" from "the GPU is gone".
//!
//! Failed calls are mapped where they are made, wgpu-hal style, by small `map_*_err` helpers
//! that list the `VkResult`s the specification allows that call to return; a result a helper
//! does not list is kept as [`VulkanError::Call`] with the call's name.

use std::time::Duration;

use ash::vk;

use super::instance::ImportPath;
use crate::buffer::BufferError;
use crate::format::{FormatError, Modifier};

/// Errors from the GPU layer.
#[derive(Debug, thiserror::Error)]
pub enum VulkanError {
    /// No Vulkan loader library (libvulkan.so.1) could be opened.
    #[error("no Vulkan loader (libvulkan.so.1); install libvulkan1 and a driver (e.g. mesa-vulkan-drivers)")]
    NoLoader(#[source] ash::LoadingError),
    /// The loader is there but offers no device (no ICD installed, or none works).
    #[error("the Vulkan loader lists no device (no ICD installed?): {why}")]
    NoDevice {
        /// What the loader said.
        why: &'static str,
    },
    /// No device has what is needed.
    #[error("no Vulkan device can {what}: {why}")]
    NoSuitableDevice {
        /// What was wanted.
        what: String,
        /// Why each device was passed over.
        why: String,
    },
    /// The driver or device cannot do this (a format, modifier, layout, size, extension or
    /// memory type it lacks). Retrying will not help; another path or device may.
    #[error("{what}")]
    Unsupported {
        /// What is not supported, and why.
        what: String,
    },
    /// Host or device memory (or a pool carved from it) ran out.
    #[error("{call}: out of {memory} memory")]
    OutOfMemory {
        /// The call.
        call: &'static str,
        /// `host` or `device` (or `descriptor pool`).
        memory: &'static str,
    },
    /// The device was lost (driver reset, GPU hang): nothing made on it works any more.
    #[error("{call}: the Vulkan device was lost")]
    DeviceLost {
        /// The call that saw it.
        call: &'static str,
    },
    /// A wait ran out of time.
    #[error("{what} did not happen within {after:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// A call failed with a result its mapping does not expect.
    #[error("{call} failed: {result}")]
    Call {
        /// The call.
        call: &'static str,
        /// Its result.
        result: vk::Result,
    },
    /// A resource or queue is busy with a submission that has not completed.
    #[error("{what} is in use by a submission that has not completed")]
    InFlight {
        /// The resource.
        what: &'static str,
    },
    /// An import path was forced and failed.
    #[error("{path} import failed")]
    Import {
        /// The path.
        path: ImportPath,
        /// Why.
        #[source]
        source: Box<VulkanError>,
    },
    /// No zero-copy path works, and the staging copy cannot read the modifier.
    #[error("no import works ({}), and a staging copy needs LINEAR, not {modifier}", passed_over_list(.passed_over))]
    NoImportPath {
        /// The buffer's modifier.
        modifier: Modifier,
        /// Each path tried, and why it failed.
        passed_over: Vec<PassedOver>,
    },
    /// The buffer could not be inspected, mapped or accessed.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A layout could not be made.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// An fd operation failed (a `dup` before handing an fd to the driver).
    #[error("{op}")]
    Fd {
        /// What was attempted.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The SPIR-V built into the crate is malformed (a build problem).
    #[error("the embedded SPIR-V cannot be read")]
    Shader(#[source] std::io::Error),
}

/// An import path that was tried and failed.
#[derive(Debug)]
pub struct PassedOver {
    /// The path.
    pub path: ImportPath,
    /// Why it failed.
    pub why: VulkanError,
}

/// `path: why; path: why` (the full chain of each reason).
pub(crate) fn passed_over_list(passed: &[PassedOver]) -> String {
    passed
        .iter()
        .map(|p| format!("{}: {}", p.path, chain(&p.why)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error and its sources, `: `-separated (for notes and lists that hold several errors).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

impl VulkanError {
    /// Whether the driver or device cannot do this at all (another path or device may).
    pub fn is_unsupported(&self) -> bool {
        match self {
            Self::Unsupported { .. } | Self::NoImportPath { .. } => true,
            Self::Import { source, .. } => source.is_unsupported(),
            _ => false,
        }
    }

    /// Whether the device is gone (every object made on it is dead).
    pub fn is_device_lost(&self) -> bool {
        match self {
            Self::DeviceLost { .. } => true,
            Self::Import { source, .. } => source.is_device_lost(),
            _ => false,
        }
    }

    /// Whether memory ran out.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            Self::OutOfMemory { .. } => true,
            Self::Import { source, .. } => source.is_out_of_memory(),
            _ => false,
        }
    }

    /// An [`VulkanError::Unsupported`] saying `what`.
    pub(crate) fn unsupported(what: impl Into<String>) -> Self {
        Self::Unsupported { what: what.into() }
    }
}

/// The out-of-memory results most calls may return; anything else is unexpected.
fn oom(call: &'static str, result: vk::Result) -> VulkanError {
    match result {
        vk::Result::ERROR_OUT_OF_HOST_MEMORY => VulkanError::OutOfMemory {
            call,
            memory: "host",
        },
        vk::Result::ERROR_OUT_OF_DEVICE_MEMORY => VulkanError::OutOfMemory {
            call,
            memory: "device",
        },
        result => VulkanError::Call { call, result },
    }
}

/// Calls that may return `OUT_OF_HOST_MEMORY` and `OUT_OF_DEVICE_MEMORY` (object creation,
/// command buffer begin/end, fence reset, …).
pub(crate) fn map_oom_err(call: &'static str) -> impl Fn(vk::Result) -> VulkanError {
    move |result| oom(call, result)
}

/// Calls that also may return `DEVICE_LOST` (queue submission, waits, device creation).
pub(crate) fn map_oom_and_lost_err(call: &'static str) -> impl Fn(vk::Result) -> VulkanError {
    move |result| match result {
        vk::Result::ERROR_DEVICE_LOST => VulkanError::DeviceLost { call },
        result => oom(call, result),
    }
}

/// Calls that take an external handle (an fd, a host pointer): `INVALID_EXTERNAL_HANDLE` says
/// the driver cannot use that memory or fence.
pub(crate) fn map_external_handle_err(call: &'static str) -> impl Fn(vk::Result) -> VulkanError {
    move |result| match result {
        vk::Result::ERROR_INVALID_EXTERNAL_HANDLE => {
            VulkanError::unsupported(format!("{call}: the driver cannot import this handle"))
        }
        result => oom(call, result),
    }
}

/// Instance creation: `INCOMPATIBLE_DRIVER` means no usable ICD.
pub(crate) fn map_instance_err(result: vk::Result) -> VulkanError {
    match result {
        vk::Result::ERROR_INCOMPATIBLE_DRIVER => VulkanError::NoDevice {
            why: "vkCreateInstance: no compatible driver",
        },
        vk::Result::ERROR_INITIALIZATION_FAILED => VulkanError::NoDevice {
            why: "vkCreateInstance: initialization failed",
        },
        result => oom("vkCreateInstance", result),
    }
}

/// Device creation: a missing extension or feature is unsupported; the device may be lost.
pub(crate) fn map_device_err(result: vk::Result) -> VulkanError {
    match result {
        vk::Result::ERROR_EXTENSION_NOT_PRESENT | vk::Result::ERROR_FEATURE_NOT_PRESENT => {
            VulkanError::unsupported(format!("vkCreateDevice: {result}"))
        }
        result => map_oom_and_lost_err("vkCreateDevice")(result),
    }
}

/// Format and image-format queries: `FORMAT_NOT_SUPPORTED` (and its usage cousin) is an
/// answer, not a failure.
pub(crate) fn map_format_query_err(what: String) -> impl FnOnce(vk::Result) -> VulkanError {
    move |result| match result {
        vk::Result::ERROR_FORMAT_NOT_SUPPORTED
        | vk::Result::ERROR_IMAGE_USAGE_NOT_SUPPORTED_KHR => {
            VulkanError::unsupported(format!("{what}: not supported"))
        }
        result => oom("vkGetPhysicalDeviceImageFormatProperties2", result),
    }
}

/// Image creation with an explicit DRM-modifier layout: the driver checks the plane layout.
pub(crate) fn map_modifier_image_err(what: String) -> impl FnOnce(vk::Result) -> VulkanError {
    move |result| match result {
        vk::Result::ERROR_INVALID_DRM_FORMAT_MODIFIER_PLANE_LAYOUT_EXT => {
            VulkanError::unsupported(format!("the driver rejects the plane layout of {what}"))
        }
        result => oom("vkCreateImage(DRM modifier)", result),
    }
}

/// Descriptor-set allocation: the pool running out is out of memory too.
pub(crate) fn map_pool_err(call: &'static str) -> impl Fn(vk::Result) -> VulkanError {
    move |result| match result {
        vk::Result::ERROR_OUT_OF_POOL_MEMORY | vk::Result::ERROR_FRAGMENTED_POOL => {
            VulkanError::OutOfMemory {
                call,
                memory: "descriptor pool",
            }
        }
        result => oom(call, result),
    }
}

/// Fence waits: `TIMEOUT` is a [`VulkanError::Timeout`] of `what`.
pub(crate) fn map_wait_err(
    what: &'static str,
    after: Duration,
) -> impl FnOnce(vk::Result) -> VulkanError {
    move |result| match result {
        vk::Result::TIMEOUT => VulkanError::Timeout { what, after },
        result => map_oom_and_lost_err("vkWaitForFences")(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_classes() {
        assert!(
            map_oom_and_lost_err("vkQueueSubmit")(vk::Result::ERROR_DEVICE_LOST).is_device_lost()
        );
        assert!(
            map_oom_err("vkCreateBuffer")(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY)
                .is_out_of_memory()
        );
        assert!(map_external_handle_err("vkImportSemaphoreFdKHR")(
            vk::Result::ERROR_INVALID_EXTERNAL_HANDLE
        )
        .is_unsupported());
        assert!(map_modifier_image_err("XR24".into())(
            vk::Result::ERROR_INVALID_DRM_FORMAT_MODIFIER_PLANE_LAYOUT_EXT
        )
        .is_unsupported());
        assert!(matches!(
            map_wait_err("a frame", Duration::from_secs(1))(vk::Result::TIMEOUT),
            VulkanError::Timeout { .. }
        ));
        // A result the call is not expected to return keeps its name and value.
        let e = map_oom_err("vkCreateFence")(vk::Result::ERROR_UNKNOWN);
        assert!(matches!(
            e,
            VulkanError::Call {
                call: "vkCreateFence",
                result: vk::Result::ERROR_UNKNOWN
            }
        ));
        let wrapped = VulkanError::Import {
            path: ImportPath::DmaBufImage,
            source: Box::new(VulkanError::unsupported("modifier not listed")),
        };
        assert!(wrapped.is_unsupported());
        assert_eq!(
            chain(&wrapped),
            "dma-buf-image import failed: modifier not listed"
        );
    }
}
