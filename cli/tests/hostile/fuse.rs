//! A FUSE filesystem served by a thread of this test: one file, `frame`; after
//! [`Stalling::stall`] it answers no request at all, as a hostile peer's daemon would.

use super::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub const FILE: &str = "frame";
const FILE_SIZE: u64 = 1 << 20;

pub struct Stalling {
    stalled: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    server: Option<thread::JoinHandle<()>>,
    mountpoint: PathBuf,
}

impl Stalling {
    /// Mounts it at `dir`; `None` (and a note) where FUSE cannot be mounted here.
    pub fn mount(dir: &Path) -> Option<Stalling> {
        let dev = match std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/fuse")
        {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                eprintln!("skipped: no FUSE here (/dev/fuse: {e})");
                return None;
            }
        };
        let data = format!(
            "fd={},rootmode=40000,user_id={},group_id={}",
            dev.as_raw_fd(),
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw()
        );
        let data = std::ffi::CString::new(data).unwrap();
        if let Err(e) = rustix::mount::mount(
            "frameshare-hostile",
            dir,
            "fuse.frameshare-hostile",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            data.as_c_str(),
        ) {
            eprintln!("skipped: cannot mount FUSE here ({e}; needs CAP_SYS_ADMIN)");
            return None;
        }
        let stalled = Arc::new(AtomicBool::new(false));
        let quit = Arc::new(AtomicBool::new(false));
        let server = {
            let (stalled, quit) = (stalled.clone(), quit.clone());
            thread::spawn(move || serve(dev, &stalled, &quit))
        };
        Some(Stalling {
            stalled,
            quit,
            server: Some(server),
            mountpoint: dir.to_owned(),
        })
    }

    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

impl Drop for Stalling {
    /// Closes the daemon's end, which aborts the connection: every request still waiting
    /// fails, so nothing in this process stays blocked on it.
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
    }
}

const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const INIT: u32 = 26;
const INTERRUPT: u32 = 36;
const BATCH_FORGET: u32 = 42;
const ENOENT: i32 = 2;
const ENOSYS: i32 = 38;

fn serve(dev: OwnedFd, stalled: &AtomicBool, quit: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 17];
    while !quit.load(Ordering::SeqCst) {
        let mut p = [rustix::event::PollFd::new(
            &dev,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(
            &mut p,
            Some(&rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            }),
        ) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let n = match rustix::io::read(&dev, &mut buf) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(_) => return, // unmounted or aborted
        };
        let req = &buf[..n];
        let opcode = u32::from_le_bytes(req[4..8].try_into().unwrap());
        let unique = u64::from_le_bytes(req[8..16].try_into().unwrap());
        let nodeid = u64::from_le_bytes(req[16..24].try_into().unwrap());
        if matches!(opcode, FORGET | BATCH_FORGET | INTERRUPT) {
            continue; // never answered
        }
        if stalled.load(Ordering::SeqCst) {
            continue; // the hostile part: the request waits for good
        }
        let reply: Result<Vec<u8>, i32> = match opcode {
            INIT => {
                let max_readahead = u32::from_le_bytes(req[48..52].try_into().unwrap());
                let mut out = Vec::new();
                for v in [7u32, 31, max_readahead, 0] {
                    out.extend(v.to_le_bytes());
                }
                out.extend(16u16.to_le_bytes()); // max_background
                out.extend(12u16.to_le_bytes()); // congestion_threshold
                out.extend(4096u32.to_le_bytes()); // max_write
                out.extend(1u32.to_le_bytes()); // time_gran
                out.resize(64, 0);
                Ok(out)
            }
            LOOKUP => {
                let name = &req[40..];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if nodeid == 1 && name == FILE.as_bytes() {
                    let mut out = Vec::new();
                    out.extend(2u64.to_le_bytes()); // nodeid
                    out.extend(0u64.to_le_bytes()); // generation
                    out.extend([0u8; 24]); // entry_valid, attr_valid, their nsecs: 0
                    out.extend(attr(2));
                    Ok(out)
                } else {
                    Err(ENOENT)
                }
            }
            GETATTR => {
                let mut out = vec![0u8; 16]; // attr_valid 0: ask every time
                out.extend(attr(nodeid));
                Ok(out)
            }
            OPEN => {
                let mut out = 1u64.to_le_bytes().to_vec(); // fh
                out.extend([0u8; 8]); // open_flags, backing id
                Ok(out)
            }
            _ => Err(ENOSYS),
        };
        let (error, body) = match reply {
            Ok(b) => (0i32, b),
            Err(e) => (-e, Vec::new()),
        };
        let mut out = ((16 + body.len()) as u32).to_le_bytes().to_vec();
        out.extend(error.to_le_bytes());
        out.extend(unique.to_le_bytes());
        out.extend(body);
        if rustix::io::write(&dev, &out).is_err() {
            return;
        }
    }
}

/// `struct fuse_attr` of the root directory (node 1) or the file (node 2).
fn attr(nodeid: u64) -> Vec<u8> {
    let (size, mode, nlink) = if nodeid == 1 {
        (0, 0o040755u32, 2u32)
    } else {
        (FILE_SIZE, 0o100600, 1)
    };
    let mut a = Vec::new();
    a.extend(nodeid.to_le_bytes()); // ino
    a.extend(size.to_le_bytes());
    a.extend(size.div_ceil(512).to_le_bytes()); // blocks
    a.extend([0u8; 24 + 12]); // atime mtime ctime, their nsecs
    a.extend(mode.to_le_bytes());
    a.extend(nlink.to_le_bytes());
    a.extend(rustix::process::geteuid().as_raw().to_le_bytes());
    a.extend(rustix::process::getegid().as_raw().to_le_bytes());
    a.extend(0u32.to_le_bytes()); // rdev
    a.extend(4096u32.to_le_bytes()); // blksize
    a.extend(0u32.to_le_bytes()); // flags
    a
}
