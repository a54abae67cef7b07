//! `frameshare ls`: an `ipcs`-like inventory of the shared frame buffers alive on this machine —
//! dma-bufs (with exporter and name from fdinfo), memfds, POSIX shm objects and SysV segments —
//! per process, read from /proc. Only what the caller may read is listed (all of it as root).

use std::collections::BTreeMap;

use serde::Serialize;

/// One buffer held by one process.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Holding {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// `dma-buf`, `memfd`, `posix-shm` or `sysv-shm`.
    pub kind: String,
    /// Bytes, when known.
    pub size: Option<u64>,
    /// The object's name: memfd name, shm path, dma-buf exporter and name, or SysV id.
    pub name: String,
    /// How the process holds it: `fd N`, `mapped`, or `attached`.
    pub how: String,
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn fdinfo_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
}

/// Classifies an fd's link target (`/memfd:NAME (deleted)`, `/dev/shm/NAME`, `/dmabuf:NAME`,
/// `anon_inode:dmabuf`).
pub fn classify_link(link: &str) -> Option<(&'static str, String)> {
    let clean = link.trim_end_matches(" (deleted)");
    if let Some(name) = clean.strip_prefix("/memfd:") {
        Some(("memfd", name.to_owned()))
    } else if clean.starts_with("/dev/shm/") {
        Some(("posix-shm", clean.to_owned()))
    } else if clean.starts_with("/dmabuf:") || clean == "anon_inode:dmabuf" {
        Some(("dma-buf", clean.trim_start_matches("/dmabuf:").to_owned()))
    } else {
        None
    }
}

fn scan_fds(pid: u32, comm: &str, out: &mut Vec<Holding>) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for e in dir.flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some((kind, mut name)) = classify_link(&link) else {
            continue;
        };
        let fd = e.file_name().to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let mut size = fdinfo_field(&info, "size:").and_then(|s| s.parse().ok());
        if kind == "dma-buf" {
            let exp = fdinfo_field(&info, "exp_name:").unwrap_or_default();
            let label = fdinfo_field(&info, "name:").unwrap_or_default();
            name = [exp, label]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
        } else {
            size = std::fs::metadata(e.path())
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::size(&m));
        }
        out.push(Holding {
            pid,
            comm: comm.to_owned(),
            kind: kind.into(),
            size,
            name,
            how: format!("fd {fd}"),
        });
    }
}

/// SysV segments by id: (size, creator pid, attach count).
fn sysv_segments() -> BTreeMap<i64, (u64, u32, u64)> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = |n: &str| header.iter().position(|h| *h == n);
    let (Some(id), Some(size), Some(cpid), Some(nattch)) =
        (col("shmid"), col("size"), col("cpid"), col("nattch"))
    else {
        return BTreeMap::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.get(id)?.parse().ok()?,
                (
                    f.get(size)?.parse().ok()?,
                    f.get(cpid)?.parse().ok()?,
                    f.get(nattch)?.parse().ok()?,
                ),
            ))
        })
        .collect()
}

fn scan_maps(
    pid: u32,
    comm: &str,
    segments: &BTreeMap<i64, (u64, u32, u64)>,
    out: &mut Vec<Holding>,
) {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return;
    };
    let mut seen = std::collections::BTreeSet::new();
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(inode), Some(path)) = (f.get(4), f.get(5)) else {
            continue;
        };
        if !seen.insert((inode.to_string(), path.to_string())) {
            continue;
        }
        if path.starts_with("/SYSV") {
            // For SysV mappings the inode column is the segment id.
            let id: i64 = inode.parse().unwrap_or(-1);
            let size = segments.get(&id).map(|s| s.0);
            out.push(Holding {
                pid,
                comm: comm.into(),
                kind: "sysv-shm".into(),
                size,
                name: format!("shmid {id}"),
                how: "attached".into(),
            });
        } else if let Some((kind, name)) = classify_link(path) {
            if !out
                .iter()
                .any(|h| h.pid == pid && h.kind == kind && h.name == name)
            {
                out.push(Holding {
                    pid,
                    comm: comm.into(),
                    kind: kind.into(),
                    size: None,
                    name,
                    how: "mapped".into(),
                });
            }
        }
    }
}

/// Every shared buffer held by every process we can see, sorted by pid. With `only_frameshare`,
/// only processes named `frameshare` (and test binaries that use the crate are not included).
pub fn inventory(only_frameshare: bool) -> Vec<Holding> {
    let segments = sysv_segments();
    let mut out = Vec::new();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    for pid in pids {
        let c = comm(pid);
        if only_frameshare && c != "frameshare" {
            continue;
        }
        scan_fds(pid, &c, &mut out);
        scan_maps(pid, &c, &segments, &mut out);
    }
    out
}

/// Formats the inventory as a table.
pub fn table(items: &[Holding]) -> String {
    let mut s = format!(
        "{:>7}  {:<16} {:<10} {:>12}  {:<10} NAME\n",
        "PID", "COMMAND", "KIND", "SIZE", "HOW"
    );
    for h in items {
        let size = h.size.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        s += &format!(
            "{:>7}  {:<16} {:<10} {:>12}  {:<10} {}\n",
            h.pid, h.comm, h.kind, size, h.how, h.name
        );
    }
    if items.is_empty() {
        s += "(no shared frame buffers in use)\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `path` names a process directory that still exists.
    fn alive(pid: u32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    use frameshare::alloc::{self, Allocator};
    use frameshare::format::{Fourcc, FrameLayout};

    #[test]
    fn links_are_classified() {
        assert_eq!(
            classify_link("/memfd:frameshare-XR24-1 (deleted)"),
            Some(("memfd", "frameshare-XR24-1".into()))
        );
        assert_eq!(
            classify_link("/dev/shm/frameshare-1-ab (deleted)")
                .unwrap()
                .0,
            "posix-shm"
        );
        assert_eq!(
            classify_link("/dmabuf:frameshare XR24 1").unwrap().0,
            "dma-buf"
        );
        assert_eq!(classify_link("anon_inode:dmabuf").unwrap().0, "dma-buf");
        assert_eq!(classify_link("socket:[1234]"), None);
    }

    #[test]
    fn own_buffers_are_listed() {
        let layout = FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap();
        let memfd = alloc::memfd::MemfdAllocator::new()
            .allocate(&layout)
            .unwrap();
        let sysv = alloc::sysv_shm::SysvShmAllocator::new()
            .allocate(&layout)
            .unwrap();
        let _map = sysv.map(false).unwrap();
        let me = std::process::id();
        let mine: Vec<Holding> = inventory(false)
            .into_iter()
            .filter(|h| h.pid == me)
            .collect();
        assert!(
            mine.iter().any(|h| h.kind == "memfd"
                && h.name.starts_with("frameshare-XR24")
                && h.size == Some(16384)),
            "{mine:?}"
        );
        let id = sysv.sysv_id().unwrap();
        assert!(
            mine.iter()
                .any(|h| h.kind == "sysv-shm" && h.name == format!("shmid {id}")),
            "{mine:?}"
        );
        drop(memfd);
        assert!(alive(me));
    }
}
