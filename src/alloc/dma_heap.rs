//! dma-heap backend: `DMA_HEAP_IOCTL_ALLOC` on `/dev/dma_heap/NAME` (`system`, or the CMA heap,
//! which the kernel names after its region: `reserved`, `linux,cma`, …; `cma` finds it), each
//! buffer named with `DMA_BUF_SET_NAME` so it shows up in debugfs and fdinfo.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{allocation_size, sys_err, AllocError, Allocator};
use crate::buffer::{Buffer, BufferKind};
use crate::format::FrameLayout;
use crate::sys;

/// Where heaps live.
pub const HEAP_DIR: &str = "/dev/dma_heap";

/// Allocates from one dma-heap.
#[derive(Debug)]
pub struct DmaHeapAllocator {
    heap: OwnedFd,
    path: PathBuf,
    count: u64,
}

/// The heaps this machine has (names under /dev/dma_heap), sorted.
pub fn heaps() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(HEAP_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn resolve(name: &str) -> Result<PathBuf, AllocError> {
    let unavailable = |why: String| AllocError::Unavailable {
        kind: "dma-heap",
        why,
    };
    let all = heaps();
    if all.is_empty() {
        return Err(unavailable(format!(
            "no {HEAP_DIR} (kernel without CONFIG_DMABUF_HEAPS)"
        )));
    }
    let found = if all.iter().any(|h| h == name) {
        Some(name.to_owned())
    } else if name == "cma" {
        // The CMA heap is named after the CMA region; anything but `system` is a CMA heap here.
        all.iter()
            .find(|h| h.contains("cma") || h.as_str() == "reserved")
            .cloned()
    } else {
        None
    };
    found.map(|h| Path::new(HEAP_DIR).join(h)).ok_or_else(|| {
        unavailable(format!(
            "no heap {name:?} in {HEAP_DIR} (have: {})",
            all.join(", ")
        ))
    })
}

impl DmaHeapAllocator {
    /// Opens heap `name` (`system`, `cma`, or any name under /dev/dma_heap).
    pub fn open(name: &str) -> Result<Self, AllocError> {
        let path = resolve(name)?;
        let heap = File::options()
            .read(true)
            .open(&path)
            .map_err(|e| AllocError::Unavailable {
                kind: "dma-heap",
                why: format!("{}: {e}", path.display()),
            })?;
        Ok(DmaHeapAllocator {
            heap: heap.into(),
            path,
            count: 0,
        })
    }

    /// The heap's device path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Allocator for DmaHeapAllocator {
    fn kind(&self) -> BufferKind {
        BufferKind::DmaHeap
    }

    fn describe(&self) -> String {
        format!("dma-heap {}", self.path.display())
    }

    fn allocate(&mut self, layout: &FrameLayout) -> Result<Buffer, AllocError> {
        layout.validate()?;
        let kind = BufferKind::DmaHeap;
        let fd = sys::dma_heap::alloc(self.heap.as_fd(), allocation_size(layout)).map_err(
            sys_err(kind, "DMA_HEAP_IOCTL_ALLOC", Some(self.path.clone())),
        )?;
        self.count += 1;
        let name = format!("frameshare {} {}", layout.fourcc(), self.count);
        if let Err(e) = sys::dma_buf::set_name(fd.as_fd(), &name) {
            log::debug!("DMA_BUF_SET_NAME: {e}"); // cosmetic only
        }
        Ok(Buffer::from_fds(kind, layout.clone(), vec![fd])?)
    }
}
