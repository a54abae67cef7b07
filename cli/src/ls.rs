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
    /// The object's name: memfd name, shm path, dma-buf name (`DMA_BUF_SET_NAME`), or SysV id.
    pub name: String,
    /// How the process holds it: `fd N`, `mapped`, or `attached`.
    pub how: String,
    /// The object's inode (a SysV segment's id): one buffer has the same inode in every
    /// process that holds it, as in Android's dmabuf_dump.
    pub inode: Option<u64>,
    /// A dma-buf's exporter (`system`, `udmabuf`, `vgem`, …) from fdinfo.
    pub exporter: Option<String>,
}

/// A shared-memory object nobody holds: what `ipcs` is run to find.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Orphan {
    /// `sysv-shm` or `posix-shm`.
    pub kind: String,
    /// `shmid N` or the /dev/shm path.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Owner's user id.
    pub uid: u32,
    /// Why it is an orphan.
    pub why: String,
}

/// One process's share.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProcessTotal {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// Buffers it holds (a buffer both mapped and held by fd counts once).
    pub buffers: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Totals.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Per process.
    pub processes: Vec<ProcessTotal>,
    /// Distinct buffers (by kind and inode) over every process.
    pub buffers: usize,
    /// Their bytes, each buffer counted once however many processes hold it.
    pub bytes: u64,
    /// Orphans and their bytes.
    pub orphans: usize,
    /// Bytes orphans hold.
    pub orphan_bytes: u64,
}

/// What `ls` shows of buffers.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// Buffers held, by process.
    pub buffers: Vec<Holding>,
    /// Objects nobody holds.
    pub orphans: Vec<Orphan>,
    /// Totals.
    pub totals: Totals,
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

/// Whether a buffer's name says frameshare made it (memfds are `frameshare-…`, dma-bufs are
/// named `frameshare …` with `DMA_BUF_SET_NAME`, POSIX shm objects `/dev/shm/frameshare-…`).
pub fn frameshare_name(name: &str) -> bool {
    name.trim_start_matches("/dev/shm/")
        .starts_with("frameshare")
}

/// The inode of the process's executable: a sandbox that runs from a memfd (its executable
/// is `/memfd:… (deleted)`) holds that memfd, which is code, not a frame.
fn exe_inode(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// Whether an fd refers to a lock or socket in a frameshare runtime directory (a producer
/// holds `NAME.lock` while it lives).
fn frameshare_runtime_file(link: &str) -> bool {
    link.contains("/frameshare/") && link.ends_with(".lock")
}

/// One process's buffers; the bool says whether anything marks it as a frameshare process.
fn scan_fds(pid: u32, comm: &str, out: &mut Vec<Holding>) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let exe = exe_inode(pid);
    let mut marked = false;
    for e in dir.flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        marked |= frameshare_runtime_file(&link);
        let Some((kind, mut name)) = classify_link(&link) else {
            continue;
        };
        let meta = std::fs::metadata(e.path()).ok();
        let inode = meta.as_ref().map(std::os::unix::fs::MetadataExt::ino);
        if kind == "memfd" && inode.is_some() && inode == exe {
            continue; // the process's own code (a sandbox's memfd executable)
        }
        let fd = e.file_name().to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let mut size = fdinfo_field(&info, "size:").and_then(|s| s.parse().ok());
        let mut exporter = None;
        if kind == "dma-buf" {
            exporter = fdinfo_field(&info, "exp_name:").filter(|s| !s.is_empty());
            name = fdinfo_field(&info, "name:").unwrap_or_default();
        } else {
            size = meta.as_ref().map(std::os::unix::fs::MetadataExt::size);
        }
        marked |= frameshare_name(&name);
        out.push(Holding {
            pid,
            comm: comm.to_owned(),
            kind: kind.into(),
            size,
            name,
            how: format!("fd {fd}"),
            inode: fdinfo_field(&info, "ino:")
                .and_then(|i| i.parse().ok())
                .or(inode),
            exporter,
        });
    }
    marked
}

/// A SysV segment from /proc/sysvipc/shm.
#[derive(Debug, Clone, Copy)]
struct Segment {
    size: u64,
    cpid: u32,
    nattch: u64,
    uid: u32,
}

/// SysV segments by id.
fn sysv_segments() -> BTreeMap<i64, Segment> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = |n: &str| header.iter().position(|h| *h == n);
    let (Some(id), Some(size), Some(cpid), Some(nattch), Some(uid)) = (
        col("shmid"),
        col("size"),
        col("cpid"),
        col("nattch"),
        col("uid"),
    ) else {
        return BTreeMap::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.get(id)?.parse().ok()?,
                Segment {
                    size: f.get(size)?.parse().ok()?,
                    cpid: f.get(cpid)?.parse().ok()?,
                    nattch: f.get(nattch)?.parse().ok()?,
                    uid: f.get(uid)?.parse().ok()?,
                },
            ))
        })
        .collect()
}

/// One process's mappings of shared objects; the bool says whether one is frameshare's.
fn scan_maps(
    pid: u32,
    comm: &str,
    segments: &BTreeMap<i64, Segment>,
    out: &mut Vec<Holding>,
) -> bool {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return false;
    };
    let exe = exe_inode(pid);
    let mut seen = std::collections::BTreeSet::new();
    let mut marked = false;
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(perms), Some(inode), Some(path)) = (f.get(1), f.get(4), f.get(5)) else {
            continue;
        };
        if !seen.insert((inode.to_string(), path.to_string())) {
            continue;
        }
        if path.starts_with("/SYSV") {
            // For SysV mappings the inode column is the segment id.
            let id: i64 = inode.parse().unwrap_or(-1);
            out.push(Holding {
                pid,
                comm: comm.into(),
                kind: "sysv-shm".into(),
                size: segments.get(&id).map(|s| s.size),
                name: format!("shmid {id}"),
                how: "attached".into(),
                inode: u64::try_from(id).ok(),
                exporter: None,
            });
        } else if let Some((kind, name)) = classify_link(path) {
            let inode = inode.parse().ok();
            // Code mapped from a memfd (a JIT, a sandbox), and the rest of a memfd executable's
            // image (its read-only and data segments): not frames.
            if perms.contains('x') || (kind == "memfd" && inode.is_some() && inode == exe) {
                continue;
            }
            marked |= frameshare_name(&name);
            if !out
                .iter()
                .any(|h| h.pid == pid && h.kind == kind && (h.name == name || h.inode == inode))
            {
                out.push(Holding {
                    pid,
                    comm: comm.into(),
                    kind: kind.into(),
                    size: None,
                    name,
                    how: "mapped".into(),
                    inode,
                    exporter: None,
                });
            }
        }
    }
    marked
}

/// POSIX shm objects (files in /dev/shm) that no process we can see holds, as (path, size,
/// uid); `all`: every one, else those named `frameshare-…`.
fn unheld_shm_files(held: &std::collections::BTreeSet<u64>, all: bool) -> Vec<Orphan> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    let mut out: Vec<Orphan> = dir
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let path = e.path().display().to_string();
            (m.is_file() && !held.contains(&m.ino()) && (all || frameshare_name(&path))).then(
                || Orphan {
                    kind: "posix-shm".into(),
                    name: path,
                    size: m.size(),
                    uid: m.uid(),
                    why: "no process holds it open or mapped".into(),
                },
            )
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every shared buffer held by every process we can see, sorted by pid, and the orphans.
/// Without `all`, only frameshare's buffers: every buffer of a process that holds one named
/// `frameshare…` (whatever the process is called: an application embedding the library counts),
/// that is named `frameshare`, or that holds a stream's lock; and the SysV segments such a
/// process created, wherever attached.
pub fn scan(all: bool) -> Inventory {
    let segments = sysv_segments();
    let mut everything = Vec::new();
    let mut ours = std::collections::BTreeSet::new();
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
        let mut mine = Vec::new();
        let a = scan_fds(pid, &c, &mut mine);
        let b = scan_maps(pid, &c, &segments, &mut mine);
        if a || b || c == "frameshare" {
            ours.insert(pid);
        }
        everything.extend(mine);
    }
    // Inodes of POSIX shm files held anywhere (before filtering), for the orphan check.
    let held_shm: std::collections::BTreeSet<u64> = everything
        .iter()
        .filter(|h| h.kind == "posix-shm")
        .filter_map(|h| h.inode)
        .collect();
    let frameshare_segment = |id: &Option<u64>| {
        id.and_then(|i| i64::try_from(i).ok())
            .and_then(|i| segments.get(&i))
            .is_some_and(|s| ours.contains(&s.cpid))
    };
    let buffers: Vec<Holding> = everything
        .into_iter()
        .filter(|h| {
            all || ours.contains(&h.pid) || (h.kind == "sysv-shm" && frameshare_segment(&h.inode))
        })
        .collect();
    let mut orphans: Vec<Orphan> = segments
        .iter()
        .filter(|(_, s)| s.nattch == 0)
        .map(|(id, s)| Orphan {
            kind: "sysv-shm".into(),
            name: format!("shmid {id}"),
            size: s.size,
            uid: s.uid,
            why: format!(
                "nattch 0: nobody attached (created by pid {}{})",
                s.cpid,
                if std::path::Path::new(&format!("/proc/{}", s.cpid)).exists() {
                    ""
                } else {
                    ", gone"
                }
            ),
        })
        .collect();
    orphans.extend(unheld_shm_files(&held_shm, all));
    let totals = totals(&buffers, &orphans);
    Inventory {
        buffers,
        orphans,
        totals,
    }
}

fn totals(buffers: &[Holding], orphans: &[Orphan]) -> Totals {
    let key = |h: &Holding| (h.kind.clone(), h.inode, h.name.clone());
    let mut processes: Vec<ProcessTotal> = Vec::new();
    let mut seen_per_pid = std::collections::BTreeSet::new();
    for h in buffers {
        if !seen_per_pid.insert((h.pid, key(h))) {
            continue;
        }
        match processes.iter_mut().find(|p| p.pid == h.pid) {
            Some(p) => {
                p.buffers += 1;
                p.bytes += h.size.unwrap_or(0);
            }
            None => processes.push(ProcessTotal {
                pid: h.pid,
                comm: h.comm.clone(),
                buffers: 1,
                bytes: h.size.unwrap_or(0),
            }),
        }
    }
    let mut distinct: BTreeMap<(String, Option<u64>, String), u64> = BTreeMap::new();
    for h in buffers {
        let e = distinct.entry(key(h)).or_default();
        *e = (*e).max(h.size.unwrap_or(0));
    }
    Totals {
        processes,
        buffers: distinct.len(),
        bytes: distinct.values().sum(),
        orphans: orphans.len(),
        orphan_bytes: orphans.iter().map(|o| o.size).sum(),
    }
}

/// Formats the inventory as tables: buffers with per-process totals, then orphans.
pub fn table(inv: &Inventory) -> String {
    let mut s = format!(
        "{:>7}  {:<16} {:<10} {:>12}  {:<10} {:>10}  {:<10} NAME\n",
        "PID", "COMMAND", "KIND", "SIZE", "HOW", "INODE", "EXPORTER"
    );
    let items = &inv.buffers;
    for (i, h) in items.iter().enumerate() {
        let size = h.size.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let inode = h.inode.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        s += &format!(
            "{:>7}  {:<16} {:<10} {:>12}  {:<10} {:>10}  {:<10} {}\n",
            h.pid,
            h.comm,
            h.kind,
            size,
            h.how,
            inode,
            h.exporter.as_deref().unwrap_or("-"),
            h.name
        );
        if items.get(i + 1).is_none_or(|n| n.pid != h.pid) {
            if let Some(p) = inv.totals.processes.iter().find(|p| p.pid == h.pid) {
                s += &format!(
                    "{:>7}  {:<16} total: {} buffer(s), {} bytes\n",
                    "", "", p.buffers, p.bytes
                );
            }
        }
    }
    if items.is_empty() {
        s += "(no shared frame buffers in use)\n";
    } else {
        s += &format!(
            "total: {} buffer(s) in {} process(es), {} bytes (each buffer counted once)\n",
            inv.totals.buffers,
            inv.totals.processes.len(),
            inv.totals.bytes
        );
    }
    if !inv.orphans.is_empty() {
        s += &format!(
            "\nORPHANS (held by nobody: remove with ipcrm -m ID or rm PATH)\n{:<10} {:>12}  {:>6}  {:<32} WHY\n",
            "KIND", "SIZE", "UID", "NAME"
        );
        for o in &inv.orphans {
            s += &format!(
                "{:<10} {:>12}  {:>6}  {:<32} {}\n",
                o.kind, o.size, o.uid, o.name, o.why
            );
        }
        s += &format!(
            "total: {} orphan(s), {} bytes\n",
            inv.totals.orphans, inv.totals.orphan_bytes
        );
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
        // Without --all: this test process is not called `frameshare`, but it holds buffers
        // frameshare made (an application embedding the library), so it is listed.
        let inv = scan(false);
        let mine: Vec<&Holding> = inv.buffers.iter().filter(|h| h.pid == me).collect();
        assert!(
            mine.iter().any(|h| h.kind == "memfd"
                && h.name.starts_with("frameshare-XR24")
                && h.size == Some(16384)
                && h.inode.is_some()),
            "{mine:?}"
        );
        let id = sysv.sysv_id().unwrap();
        assert!(
            mine.iter()
                .any(|h| h.kind == "sysv-shm" && h.name == format!("shmid {id}")),
            "{mine:?}"
        );
        let total = inv.totals.processes.iter().find(|p| p.pid == me).unwrap();
        assert!(total.buffers >= 2 && total.bytes >= 2 * 16384, "{total:?}");
        assert!(inv.totals.bytes >= total.bytes, "{:?}", inv.totals);
        assert!(table(&inv).contains("total:"));
        drop(memfd);
        assert!(alive(me));
    }

    #[test]
    fn orphans_are_found() {
        // A SysV segment nobody attaches (as `ipcmk -M` leaves one) and a /dev/shm file nobody
        // holds: both listed as orphans, then removed.
        let made = std::process::Command::new("ipcmk")
            .args(["-M", "8192"])
            .output()
            .expect("ipcmk (util-linux)");
        let text = String::from_utf8_lossy(&made.stdout);
        let id: i64 = text
            .rsplit(' ')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("ipcmk said {text:?}"));
        let path = format!("/dev/shm/frameshare-orphan-test-{}", std::process::id());
        let shm_file = std::fs::write(&path, [0u8; 4096]).is_ok();
        let inv = scan(false);
        let _ = std::process::Command::new("ipcrm")
            .args(["-m", &id.to_string()])
            .status();
        if shm_file {
            let _ = std::fs::remove_file(&path);
        }
        let sysv = inv
            .orphans
            .iter()
            .find(|o| o.kind == "sysv-shm" && o.name == format!("shmid {id}"));
        assert!(
            sysv.is_some_and(|o| o.size == 8192 && o.why.contains("nattch 0")),
            "{:?}",
            inv.orphans
        );
        if shm_file {
            assert!(
                inv.orphans
                    .iter()
                    .any(|o| o.kind == "posix-shm" && o.name == path),
                "{:?}",
                inv.orphans
            );
        }
        assert!(table(&inv).contains("ORPHANS"));
    }
}
