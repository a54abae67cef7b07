//! DRM device nodes and the pieces of the atomic KMS interface the `drm` crate leaves raw: finding
//! a node by its driver (never by its number), and the fence slots `OUT_FENCE_PTR` and
//! `WRITEBACK_OUT_FENCE_PTR` point at — an `s32` the kernel writes a new sync_file fd into during
//! the commit ioctl, which becomes an [`OwnedFd`] here at once.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use drm::Device as _;

/// Where DRM nodes live.
pub const DRI_DIR: &str = "/dev/dri";

/// Which kind of DRM node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// `cardN`: modesetting (KMS) and, on most drivers, rendering.
    Card,
    /// `renderDN`: rendering and buffer allocation only, no KMS, no master.
    #[cfg_attr(not(feature = "gbm"), allow(dead_code))]
    Render,
}

impl NodeKind {
    fn prefix(self) -> &'static str {
        match self {
            NodeKind::Card => "card",
            NodeKind::Render => "renderD",
        }
    }
}

/// An open DRM node (read-write, close-on-exec) and the name of its kernel driver.
#[derive(Debug)]
pub struct DrmFile {
    file: File,
    path: PathBuf,
    driver: String,
}

impl AsFd for DrmFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl drm::Device for DrmFile {}
impl drm::control::Device for DrmFile {}

impl DrmFile {
    /// Opens `path` and asks its driver's name (`DRM_IOCTL_VERSION`).
    pub fn open(path: &Path) -> std::io::Result<DrmFile> {
        let file = File::options().read(true).write(true).open(path)?;
        let mut f = DrmFile {
            file,
            path: path.to_owned(),
            driver: String::new(),
        };
        f.driver = f.get_driver()?.name().to_string_lossy().into_owned();
        Ok(f)
    }

    /// Gives DRM master up if this open made us master (the first opener of a primary node
    /// becomes it): a process that only allocates must not keep the display from the one that
    /// drives it. Not being master is fine.
    #[cfg_attr(not(feature = "gbm"), allow(dead_code))]
    pub fn drop_master(&self) {
        drop_master(self);
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel driver (`vkms`, `vgem`, `i915`, …).
    pub fn driver(&self) -> &str {
        &self.driver
    }
}

/// [`DrmFile::drop_master`] for any open DRM node.
pub fn drop_master(card: &impl drm::Device) {
    match card.release_master_lock() {
        Ok(()) => log::debug!("DRM: gave up master (this process only allocates)"),
        // EINVAL: not master; render nodes have none.
        Err(e) => log::trace!("DRM: DROP_MASTER: {e}"),
    }
}

/// Nodes of one kind under `/dev/dri`, in number order.
pub fn nodes(kind: NodeKind) -> Vec<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(DRI_DIR)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix(kind.prefix())?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Opens the first node of `kind` whose driver is `driver`, or returns what was found instead.
pub fn open_by_driver(kind: NodeKind, driver: &str) -> Result<DrmFile, String> {
    let mut seen = Vec::new();
    for path in nodes(kind) {
        match DrmFile::open(&path) {
            Ok(f) if f.driver == driver => return Ok(f),
            Ok(f) => seen.push(format!("{} is {}", path.display(), f.driver)),
            Err(e) => seen.push(format!("{}: {e}", path.display())),
        }
    }
    Err(if seen.is_empty() {
        format!(
            "no DRM {} nodes in {DRI_DIR}",
            kind.prefix().trim_end_matches('D')
        )
    } else {
        format!("no node with driver {driver:?} ({})", seen.join("; "))
    })
}

/// Waits up to `timeout` for `fd` to become readable (DRM events pending); false on timeout.
pub fn wait_readable(
    fd: BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> Result<bool, rustix::io::Errno> {
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    Ok(super::poll::poll_until(&mut fds, super::poll::deadline_after(Some(timeout)))? > 0)
}

/// The GEM handle in a GBM buffer object's handle union (DRM-backed GBM stores it as `u32`).
#[cfg(feature = "gbm")]
pub fn gbm_gem_handle(h: ::gbm::BufferObjectHandle) -> u32 {
    // SAFETY: the union holds plain integers and a pointer, no drop glue; GBM on a DRM device
    // fills its `u32` member with the GEM handle, so reading that member reads initialised bytes.
    unsafe { h.u32_ }
}

/// Where the kernel writes a fence fd during an atomic commit (`OUT_FENCE_PTR`,
/// `WRITEBACK_OUT_FENCE_PTR` take the address of an `s32`). Boxed so the address stays put.
#[derive(Debug)]
pub struct FenceSlot(Box<i32>);

impl Default for FenceSlot {
    fn default() -> Self {
        FenceSlot(Box::new(-1))
    }
}

impl FenceSlot {
    /// A slot holding -1 (no fence).
    pub fn new() -> Self {
        Self::default()
    }

    /// The property value for the commit: the slot's address. Resets the slot to -1 first, so a
    /// commit that fails leaves nothing behind to take. The slot must outlive the commit ioctl.
    pub fn prop_value(&mut self) -> u64 {
        *self.0 = -1;
        (&mut *self.0 as *mut i32) as usize as u64
    }

    /// Takes the fd the kernel wrote in the last commit, if it wrote one.
    pub fn take(&mut self) -> Option<OwnedFd> {
        // SAFETY: the slot is a live, aligned i32; the kernel wrote it (through the address we
        // exposed to it as an integer) during the commit ioctl, which has returned. A volatile
        // read keeps the compiler from assuming the value is still the -1 we stored.
        let raw = unsafe { std::ptr::read_volatile(&*self.0) };
        *self.0 = -1;
        // SAFETY: a non-negative value is a new fd the kernel installed for us; nothing else
        // owns it.
        (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_slot_starts_empty_and_resets() {
        let mut s = FenceSlot::new();
        assert!(s.take().is_none());
        let addr = s.prop_value();
        assert_ne!(addr, 0);
        assert_eq!(addr, s.prop_value(), "the address is stable");
        assert!(s.take().is_none());
    }

    #[test]
    fn node_listing_does_not_panic_without_dri() {
        // On a host without /dev/dri both lists are empty; in the VM they are not.
        let _ = nodes(NodeKind::Card);
        let _ = nodes(NodeKind::Render);
        let e = open_by_driver(NodeKind::Card, "no-such-driver").unwrap_err();
        assert!(e.contains("no"), "{e}");
    }
}
