//! Process-wide counters of expensive setup work — buffer handles made (allocations and
//! imports), CPU mappings, GPU imports — so benchmarks can show that the steady state does none
//! (target: zero after warm-up).

use std::sync::atomic::{AtomicU64, Ordering};

/// Buffer handles created ([`crate::Buffer::from_fds`] / `from_sysv`): allocations on the
/// producer side, imports on the consumer side.
pub static BUFFERS: AtomicU64 = AtomicU64::new(0);
/// CPU mappings made ([`crate::Buffer::map`]).
pub static MAPPINGS: AtomicU64 = AtomicU64::new(0);
/// GPU memory imports made (Vulkan sink).
pub static GPU_IMPORTS: AtomicU64 = AtomicU64::new(0);

/// A snapshot of all counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Buffer handles created.
    pub buffers: u64,
    /// CPU mappings made.
    pub mappings: u64,
    /// GPU imports made.
    pub gpu_imports: u64,
}

impl Counters {
    /// Reads the counters now.
    pub fn now() -> Counters {
        Counters {
            buffers: BUFFERS.load(Ordering::Relaxed),
            mappings: MAPPINGS.load(Ordering::Relaxed),
            gpu_imports: GPU_IMPORTS.load(Ordering::Relaxed),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Counters) -> Counters {
        Counters {
            buffers: self.buffers - earlier.buffers,
            mappings: self.mappings - earlier.mappings,
            gpu_imports: self.gpu_imports - earlier.gpu_imports,
        }
    }
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
