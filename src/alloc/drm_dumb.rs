//! DRM dumb-buffer backend: `DRM_IOCTL_MODE_CREATE_DUMB` on a DRM card node (vkms, vgem, or any
//! KMS driver), exported as a dma-buf with PRIME (`DRM_IOCTL_PRIME_HANDLE_TO_FD`,
//! `DRM_CLOEXEC | DRM_RDWR`); the GEM handle is closed right after the export, so the dma-buf
//! fd is the buffer's only owner. The driver chooses the stride. Devices are found by driver
//! name (`drm-dumb:vkms`), never by node number; render nodes refuse dumb buffers, so only
//! `card*` nodes are used. Not in `auto`: dumb buffers are for scanout and tests.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::Device as _;
use drm::Device as _;
use rustix::io::Errno;

use super::{sys_err, AllocError, Allocator};
use crate::buffer::{Buffer, BufferKind};
use crate::format::{FrameLayout, PlaneLayout};

/// Where DRM nodes live.
pub const DRI_DIR: &str = "/dev/dri";

/// An open DRM card node.
#[derive(Debug)]
struct Card(File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl drm::Device for Card {}
impl drm::control::Device for Card {}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

/// Card nodes (`/dev/dri/cardN`), in number order.
fn card_nodes() -> Vec<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(DRI_DIR)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix("card")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// DRM card nodes and their driver names (`DRM_IOCTL_VERSION`), for nodes this process can open.
pub fn cards() -> Vec<(PathBuf, String)> {
    card_nodes()
        .into_iter()
        .filter_map(|path| {
            let card = open_card(&path).ok()?;
            let name = card
                .get_driver()
                .ok()?
                .name()
                .to_string_lossy()
                .into_owned();
            Some((path, name))
        })
        .collect()
}

fn open_card(path: &Path) -> std::io::Result<Card> {
    let card = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map(Card)?;
    crate::sys::kms::drop_master(&card);
    Ok(card)
}

/// Makes PRIME-exported dumb buffers on one DRM card.
#[derive(Debug)]
pub struct DrmDumbAllocator {
    card: Card,
    path: PathBuf,
    driver: String,
    count: u64,
}

impl DrmDumbAllocator {
    /// Opens the card whose driver is `driver` (`vkms`, `vgem`, …), or with `None` the first card
    /// that can make a dumb buffer.
    pub fn open(driver: Option<&str>) -> Result<Self, AllocError> {
        let unavailable = |why: String| AllocError::Unavailable {
            kind: "drm-dumb",
            why,
        };
        let nodes = card_nodes();
        if nodes.is_empty() {
            return Err(unavailable(format!("no DRM card nodes in {DRI_DIR}")));
        }
        let mut seen = Vec::new();
        for path in nodes {
            let card = match open_card(&path) {
                Ok(c) => c,
                Err(e) => {
                    seen.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let name = match card.get_driver() {
                Ok(d) => d.name().to_string_lossy().into_owned(),
                Err(e) => {
                    seen.push(format!("{}: DRM_IOCTL_VERSION: {e}", path.display()));
                    continue;
                }
            };
            let wanted = match driver {
                Some(want) => want == name,
                // Any driver that can make a dumb buffer (GET_CAP(DUMB_BUFFER) is refused by
                // render-only drivers such as vgem that still implement dumb_create, so try one).
                None => match card.create_dumb_buffer((1, 1), DrmFourcc::Xrgb8888, 32) {
                    Ok(db) => {
                        let _ = card.destroy_dumb_buffer(db);
                        true
                    }
                    Err(e) => {
                        seen.push(format!("{} ({name}): no dumb buffers: {e}", path.display()));
                        false
                    }
                },
            };
            if wanted {
                return Ok(DrmDumbAllocator {
                    card,
                    path,
                    driver: name,
                    count: 0,
                });
            }
            if driver.is_some() {
                seen.push(format!("{} is {name}", path.display()));
            }
        }
        Err(unavailable(match driver {
            Some(want) => format!("no DRM card with driver {want:?} ({})", seen.join("; ")),
            None => format!("no DRM card makes dumb buffers ({})", seen.join("; ")),
        }))
    }

    /// The card node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The card's driver name.
    pub fn driver(&self) -> &str {
        &self.driver
    }
}

/// What to ask `CREATE_DUMB` for: (width, height, bpp). One-plane formats ask for their own bpp
/// and a width that makes the layout's (aligned) stride; multi-plane formats ask for a bytes-wide
/// (bpp 8) buffer with every plane's rows stacked, all planes then sharing the driver's pitch.
fn dumb_request(layout: &FrameLayout) -> (u32, u32, u32) {
    let info = layout.info();
    if let [p] = info.planes {
        let bits = p.bytes_per_block * 8;
        if bits % p.block_width == 0 {
            let bpp = bits / p.block_width;
            let stride_bits = layout.planes()[0].stride as u64 * 8;
            let width = if stride_bits % bpp as u64 == 0 {
                (stride_bits / bpp as u64) as u32
            } else {
                layout.width()
            };
            return (width.max(layout.width()), layout.height(), bpp);
        }
    }
    let width = layout.planes().iter().map(|p| p.stride).max().unwrap_or(0);
    let rows = (0..layout.planes().len())
        .map(|i| layout.plane_rows(i))
        .sum();
    (width, rows, 8)
}

/// The layout of a dumb buffer with the driver's `pitch`: planes stacked, all with that pitch.
fn dumb_layout(layout: &FrameLayout, pitch: u32) -> Result<FrameLayout, AllocError> {
    let mut offset = 0u64;
    let mut planes = Vec::with_capacity(layout.planes().len());
    for i in 0..layout.planes().len() {
        planes.push(PlaneLayout {
            fd_index: 0,
            offset,
            stride: pitch,
        });
        offset += pitch as u64 * layout.plane_rows(i) as u64;
    }
    Ok(FrameLayout::new(
        layout.fourcc(),
        layout.modifier(),
        layout.width(),
        layout.height(),
        planes,
        offset,
    )?)
}

impl Allocator for DrmDumbAllocator {
    fn kind(&self) -> BufferKind {
        BufferKind::DrmDumb
    }

    fn describe(&self) -> String {
        format!("drm-dumb {} ({})", self.path.display(), self.driver)
    }

    fn allocate(&mut self, layout: &FrameLayout) -> Result<Buffer, AllocError> {
        layout.validate()?;
        let kind = BufferKind::DrmDumb;
        let (width, height, bpp) = dumb_request(layout);
        let format = DrmFourcc::try_from(layout.fourcc().0).unwrap_or(DrmFourcc::Xrgb8888);
        let dumb = self
            .card
            .create_dumb_buffer((width, height), format, bpp)
            .map_err(|e| {
                sys_err(kind, "DRM_IOCTL_MODE_CREATE_DUMB", Some(self.path.clone()))(errno_of(&e))
            })?;
        let pitch = dumb.pitch();
        let handle = dumb.handle();
        let exported = self
            .card
            .buffer_to_prime_fd(handle, drm::CLOEXEC | drm::RDWR)
            .map_err(|e| {
                sys_err(
                    kind,
                    "DRM_IOCTL_PRIME_HANDLE_TO_FD",
                    Some(self.path.clone()),
                )(errno_of(&e))
            });
        // The dma-buf (if made) holds its own reference to the memory: drop the GEM handle now,
        // whatever happened, so no handle outlives this call.
        if let Err(e) = self.card.destroy_dumb_buffer(dumb) {
            log::warn!("{}: DRM_IOCTL_MODE_DESTROY_DUMB: {e}", self.path.display());
        }
        let fd = exported?;
        self.count += 1;
        let _ = crate::sys::dma_buf::set_name(
            fd.as_fd(),
            &format!("frameshare {} {}", layout.fourcc(), self.count),
        );
        let out = dumb_layout(layout, pitch)?;
        Ok(Buffer::from_fds(kind, out, vec![fd])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Fourcc;

    #[test]
    fn requests_keep_the_aligned_stride() {
        let l = FrameLayout::linear(Fourcc::XR24, 640, 480, 256).unwrap();
        assert_eq!(dumb_request(&l), (640, 480, 32));
        let l = FrameLayout::linear(Fourcc::XR24, 100, 10, 256).unwrap();
        assert_eq!(dumb_request(&l), (128, 10, 32)); // stride 512
        let l = FrameLayout::linear(Fourcc::YUYV, 64, 8, 1).unwrap();
        assert_eq!(dumb_request(&l), (64, 8, 16));
        let l = FrameLayout::linear(Fourcc::RG24, 640, 4, 256).unwrap();
        assert_eq!(dumb_request(&l), (640, 4, 24)); // a 2048-byte stride is not whole pixels
        let l = FrameLayout::linear(Fourcc::NV12, 320, 240, 64).unwrap();
        assert_eq!(dumb_request(&l), (320, 360, 8));
    }

    #[test]
    fn layouts_use_the_driver_pitch() {
        let l = FrameLayout::linear(Fourcc::NV12, 320, 240, 64).unwrap();
        let d = dumb_layout(&l, 384).unwrap();
        assert_eq!(d.planes()[0].stride, 384);
        assert_eq!(d.planes()[1].offset, 384 * 240);
        assert_eq!(d.size(), 384 * 360);
        assert!(dumb_layout(&l, 100).is_err(), "pitch below a row of pixels");
    }
}
