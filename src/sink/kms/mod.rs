//! The display sink: frames shown on a KMS display with atomic modesetting, without copying
//! them, split by concern the way Smithay splits its DRM backend:
//!
//! - `options`: what a `kms[:…]` spec says ([`KmsOptions`]: parsed purely, opened apart);
//! - `output`: the card, the connector → CRTC → primary plane path, the plane's formats, the
//!   mode for a frame size, and the read-only listing for `frameshare probe` ([`outputs`]);
//! - `framebuffer`: dma-buf → GEM handle → framebuffer, imported once per buffer;
//! - `commit`: the atomic commits and the CRTC state they leave, as one type;
//! - `writeback`: capturing the screen through the writeback connector and comparing it;
//! - `display`: [`KmsDisplay`], the presenter those make up;
//! - `sink`: [`KmsSink`], what `--sink kms` builds: the display behind a [`crate::sink::Sink`],
//!   holding each frame until it left the screen;
//! - `convert` (features `kms` and `vulkan`): the Vulkan conversion the sink puts in front of
//!   the plane for buffers it cannot scan out; a build without Vulkan refuses those, saying so.
//!
//! Devices are named by path (`kms:/dev/dri/card1`) or by driver (`kms:vkms`); plain `kms` takes
//! the first card node with a connected display.

mod commit;
#[cfg(feature = "vulkan")]
mod convert;
mod display;
mod framebuffer;
mod options;
mod output;
mod sink;
mod writeback;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;

pub use display::{KmsDisplay, KmsStats, Presented};
pub use options::{ConvertPolicy, DeviceSpec, KmsOptions};
pub use output::{outputs, KmsConnectorInfo, KmsDeviceInfo, KmsPlaneInfo};
pub use sink::{ConversionRefusal, ConvertStats, KmsSink};
pub use writeback::Captured;

use crate::alloc::AllocError;
use crate::buffer::{BufferError, BufferKind};
use crate::format::{Fourcc, Modifier};
use crate::sync::FenceError;

/// Errors from the display.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// No usable display device.
    #[error("KMS: no display device: {0}")]
    NoDevice(String),
    /// A DRM call failed.
    #[error("KMS {path}: {op} failed")]
    Sys {
        /// The device node.
        path: PathBuf,
        /// What was attempted.
        op: String,
        /// The error.
        #[source]
        errno: Errno,
    },
    /// The driver is not an atomic KMS driver: it refuses a client capability this display
    /// needs.
    #[error("KMS {path}: driver {driver} refuses client capability {capability} (not an atomic KMS device)")]
    NotAtomic {
        /// The device node.
        path: PathBuf,
        /// Its driver.
        driver: String,
        /// `UNIVERSAL_PLANES` or `ATOMIC`.
        capability: &'static str,
        /// What the driver said.
        #[source]
        errno: Errno,
    },
    /// The device has no connected output, or none that fits.
    #[error("KMS {path}: {why}")]
    NoOutput {
        /// The device node.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// A KMS object lacks a property commits need.
    #[error("KMS {path}: the {object} has no {name} property")]
    MissingProperty {
        /// The device node.
        path: PathBuf,
        /// `plane`, `CRTC`, `connector`, `writeback connector`.
        object: &'static str,
        /// The property.
        name: &'static str,
    },
    /// The buffer is not a dma-buf.
    #[error("KMS needs dma-buf buffers: buffer {id} is {kind} (use --alloc dma-heap, udmabuf, gbm or drm-dumb)")]
    NotDmaBuf {
        /// Buffer id.
        id: u32,
        /// Its kind.
        kind: BufferKind,
    },
    /// The plane cannot scan this format out.
    #[error("KMS {path}: plane {plane} cannot scan out {fourcc} with modifier {modifier} (it takes: {supported})")]
    Unsupported {
        /// The device node.
        path: PathBuf,
        /// Plane id.
        plane: u32,
        /// Format asked for.
        fourcc: Fourcc,
        /// Modifier asked for.
        modifier: Modifier,
        /// What the plane lists.
        supported: String,
    },
    /// The plane cannot scan this buffer out, and the conversion in front of it cannot take it
    /// either.
    #[error(
        "KMS: buffer {id} ({kind} {fourcc} {modifier}) can be neither scanned out by {connector} \
         (it takes {takes}) nor converted: {why}"
    )]
    NotDisplayable {
        /// Buffer id.
        id: u32,
        /// Its kind.
        kind: BufferKind,
        /// Its format.
        fourcc: Fourcc,
        /// Its modifier.
        modifier: Modifier,
        /// The connector.
        connector: String,
        /// The formats the plane scans out.
        takes: String,
        /// Why the conversion cannot take it.
        why: ConversionRefusal,
    },
    /// `kms:…:convert` asked to convert every frame, and the conversion cannot run here.
    #[error("KMS: every frame is to be converted (convert), but {0}")]
    ConversionUnavailable(ConversionRefusal),
    /// A display buffer for the conversion could not be made.
    #[error("KMS: display buffer for buffer {id}")]
    DisplayBuffer {
        /// The buffer it was for.
        id: u32,
        /// Why not.
        #[source]
        source: AllocError,
    },
    /// A page flip (or writeback) did not complete in time.
    #[error("KMS {path}: {what} did not complete within {timeout:?}{}", note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Timeout {
        /// The device node.
        path: PathBuf,
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
        /// Why it may be stuck.
        note: Option<String>,
    },
    /// Writeback was asked for but is not possible here.
    #[error("KMS {path}: writeback: {why}")]
    Writeback {
        /// The device node.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// A writeback job completed with an error.
    #[error("KMS {path}: the writeback fence signalled an error")]
    WritebackFailed {
        /// The device node.
        path: PathBuf,
        /// The fence's error.
        #[source]
        errno: Errno,
    },
    /// Bad `--sink kms:...` options.
    #[error("bad KMS sink option {0:?} (want kms[:/dev/dri/cardN|:DRIVER][:connector=NAME][:verify-writeback][:convert|:direct])")]
    BadOption(String),
    /// Unknown buffer id.
    #[error("KMS: buffer {0} was never added")]
    UnknownBuffer(u32),
    /// A buffer could not be mapped or made.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A fence failed.
    #[error(transparent)]
    Fence(#[from] FenceError),
    /// A layout the driver gave back does not hold.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
}

impl KmsError {
    /// Whether the display cannot take this stream (its buffers' memory, format or modifier),
    /// as opposed to a device that failed.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            KmsError::NotDmaBuf { .. }
                | KmsError::Unsupported { .. }
                | KmsError::NotDisplayable { .. }
                | KmsError::ConversionUnavailable(_)
        )
    }

    /// A failed DRM call `op` on `path`.
    fn sys(path: &Path, op: impl Into<String>, e: std::io::Error) -> KmsError {
        KmsError::Sys {
            path: path.to_owned(),
            op: op.into(),
            errno: errno(&e),
        }
    }

    /// The message with its sources, for a message that gathers several errors (the devices
    /// tried one after the other).
    fn with_sources(&self) -> String {
        let mut s = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            s.push_str(&format!(": {e}"));
            source = e.source();
        }
        s
    }
}

/// The errno of an I/O error from a DRM call.
fn errno(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}
