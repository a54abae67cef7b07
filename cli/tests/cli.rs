//! The command line as a user meets it (issue 14's walk-through, case by case): help that lists
//! every value, usage errors that exit 2 before anything is forked or connected, retries only
//! where retrying helps (and said), errors said once and naming the side, logs, `explain`'s
//! exit statuses, `ls` orphans and embedders, one report schema, completions and man pages.

mod common;

use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, frameshare};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `frameshare ARGS` and asserts its exit status.
fn status_of(args: &[&str], want: i32) -> std::process::Output {
    let out = frameshare(args);
    assert_eq!(
        out.status.code(),
        Some(want),
        "frameshare {args:?}: want exit {want}\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    out
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("frameshare-cli-{}-{name}", std::process::id()))
}

#[test]
fn help_lists_every_sink_allocator_format_policy_and_pattern() {
    for cmd in ["run", "produce", "consume"] {
        let text = stdout(&status_of(&[cmd, "--help"], 0));
        let mut want: Vec<&str> = Vec::new();
        if cmd != "produce" {
            // Sinks (the walk-through found vulkan and kms missing).
            want.extend([
                "verify",
                "null",
                "png:DIR",
                "vulkan",
                "vulkan:staging",
                "kms",
            ]);
            want.extend(["Possible values:", "latest:", "vulkan:png:DIR"]);
        }
        if cmd != "consume" {
            want.extend([
                "auto",
                "dma-heap",
                "udmabuf",
                "drm-dumb",
                "gbm",
                "memfd",
                "posix-shm",
                "sysv-shm",
            ]);
            want.extend([
                "XR24", "AR24", "XB24", "AB24", "RG24", "NV12", "YUYV", "UYVY",
            ]);
            want.extend(["bars", "box", "solid", "generator", "v4l2"]);
        }
        if cmd == "consume" {
            want.push("--fd <FD>"); // no longer hidden
        }
        for w in want {
            assert!(text.contains(w), "`{cmd} --help` lacks {w:?}:\n{text}");
        }
    }
    let top = stdout(&status_of(&["--help"], 0));
    for w in ["Exit status", "2 a usage error", "RUST_LOG", "-q, --quiet"] {
        assert!(top.contains(w), "--help lacks {w:?}:\n{top}");
    }
}

#[test]
fn version_says_commit_and_features() {
    let text = stdout(&status_of(&["--version"], 0));
    assert!(text.contains("(commit "), "{text}");
    assert!(text.contains("features: vulkan kms png"), "{text}");
    let commit = text
        .split("(commit ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_default();
    assert!(
        commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{commit:?}"
    );
}

#[test]
fn completions_and_man_pages_are_generated() {
    let bash = stdout(&status_of(&["completions", "bash"], 0));
    assert!(bash.contains("_frameshare()"), "{bash}");
    // Value completion knows the typed values.
    assert!(
        bash.contains("posix-shm") && bash.contains("latest"),
        "{bash}"
    );
    for shell in ["zsh", "fish"] {
        assert!(!stdout(&status_of(&["completions", shell], 0)).is_empty());
    }
    status_of(&["completions", "tcsh"], 2);
    let man = stdout(&status_of(&["manpage"], 0));
    assert!(man.contains(".TH frameshare"), "{man}");
    let dir = temp("man");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    status_of(&["manpage", "--dir", dir.to_str().unwrap()], 0);
    for page in [
        "frameshare.1",
        "frameshare-run.1",
        "frameshare-ls.1",
        "frameshare-explain.1",
    ] {
        assert!(dir.join(page).exists(), "no {page}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_values_are_usage_errors_found_before_anything_runs() {
    let cases: &[&[&str]] = &[
        &["run", "--alloc", "nonsense"],
        &["run", "--alloc", "memfd:foo"],
        &["run", "--format", "XX99"],
        &["run", "--format", "FOO"],
        &["run", "--size", "abc"],
        &["run", "--size", "641x480", "--format", "NV12"],
        &["run", "--size", "0x0"],
        &["run", "--policy", "never"],
        &["run", "--pattern", "zebra"],
        &["run", "--source", "camera"],
        &["run", "--sink", "bogus"],
        &["run", "--sink", "png"],
        &["run", "--sink", "vulkan:bogus"],
        &["run", "--fps", "0"],
        &["run", "--fps", "nan"],
        &["run", "--buffers", "0"],
        &["run", "--buffers", "100"],
        &["run", "--stride-align", "3"],
        &["run", "--when-full", "never"],
        &["run", "--acquire-fence", "sometimes"],
        &["produce", "--stream", "x", "--size", "1920x"],
        &["consume", "--stream", "x", "--sink", "bogus"],
        &["consume", "--stream", "x", "--policy", "never"],
        &["consume"],
        &["explain", "XR24", "abc"],
        &["explain", "XR24", "64x64", "--alloc", "bogus"],
        &["explain", "XR24", "64x64", "--modifier", "NOT_A_MODIFIER"],
        &["bench", "--sizes", "0x"],
    ];
    for args in cases {
        let t = Instant::now();
        let out = status_of(args, 2);
        let err = stderr(&out);
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        // Nothing was forked or connected: no consumer's echo, no wait for a producer.
        assert!(!err.contains("peer closed"), "{args:?}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            t.elapsed()
        );
    }
    // The message names the value and why.
    let err = stderr(&status_of(&["run", "--alloc", "nonsense"], 2));
    assert!(err.contains("unknown allocator \"nonsense\""), "{err}");
    let err = stderr(&status_of(&["run", "--sink", "bogus"], 2));
    assert!(err.contains("kms[") && err.contains("vulkan["), "{err}");
}

#[test]
fn an_allocator_missing_here_fails_in_the_producer_before_the_fork() {
    if std::path::Path::new("/dev/dma_heap").exists() {
        eprintln!("skipped: this machine has dma-heaps");
        return;
    }
    let out = status_of(&["run", "--alloc", "dma-heap", "--size", "64x64"], 1);
    let err = stderr(&out);
    assert!(
        err.contains("producer: opening the dma-heap allocator"),
        "{err}"
    );
    assert!(
        !err.contains("peer closed"),
        "said once, by the side that failed: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn consume_waits_only_where_waiting_helps_and_says_so() {
    // No producer yet: it waits, saying so once by default, and -q keeps it quiet.
    let path = temp("nobody.sock");
    let p = path.to_str().unwrap();
    let out = status_of(&["consume", "--socket", p, "--wait", "0.6"], 1);
    let err = stderr(&out);
    assert_eq!(
        err.matches("waiting for a producer at").count(),
        1,
        "said once: {err}"
    );
    let out = status_of(&["-q", "consume", "--socket", p, "--wait", "0.6"], 1);
    assert!(!stderr(&out).contains("waiting"), "{}", stderr(&out));

    // Not a socket, or a socket of the wrong type: retrying cannot help, so no wait.
    let file = temp("not-a-socket");
    std::fs::write(&file, b"x").unwrap();
    let stream = temp("stream.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&stream).unwrap();
    for target in [&file, &stream] {
        let t = Instant::now();
        let out = status_of(
            &[
                "consume",
                "--socket",
                target.to_str().unwrap(),
                "--wait",
                "20",
            ],
            1,
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{target:?}: retried for {:?}: {}",
            t.elapsed(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("consumer: connect on"),
            "{}",
            stderr(&out)
        );
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&stream);
}

#[test]
fn a_garbage_peer_is_named_once() {
    use rustix::net::{
        accept, bind, listen, send, socket, AddressFamily, SendFlags, SocketAddrUnix, SocketType,
    };
    let path = temp("garbage.sock");
    let _ = std::fs::remove_file(&path);
    let server = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
    bind(&server, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    listen(&server, 1).unwrap();
    let peer = std::thread::spawn(move || {
        let conn = accept(&server).unwrap();
        send(conn.as_fd(), b"GARBAGE GARBAGE GARBAGE", SendFlags::empty()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let out = status_of(&["consume", "--socket", path.to_str().unwrap()], 1);
    peer.join().unwrap();
    let err = stderr(&out);
    assert_eq!(err.matches("bad magic").count(), 1, "said once: {err}");
    assert!(err.contains("GARB"), "the magic as text: {err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn png_makes_only_the_last_directory_and_says_what_failed_once() {
    let base = temp("png");
    let _ = std::fs::remove_dir_all(&base);
    // A missing parent is an error, not `mkdir -p`.
    let deep = base.join("missing/dir");
    let sink = format!("png:{}", deep.display());
    let out = status_of(
        &[
            "run", "--alloc", "memfd", "--size", "64x64", "--frames", "2", "--sink", &sink,
        ],
        1,
    );
    let err = stderr(&out);
    assert!(!base.exists(), "created {base:?}: {err}");
    assert!(
        err.contains("frameshare: error: consumer: opening the sink: png sink: creating directory"),
        "{err}"
    );
    assert!(err.contains("parent directory does not exist"), "{err}");
    // A file where the directory should be: said once.
    std::fs::write(&base, b"x").unwrap();
    let sink = format!("png:{}", base.display());
    let err = stderr(&status_of(
        &[
            "run", "--alloc", "memfd", "--size", "64x64", "--frames", "2", "--sink", &sink,
        ],
        1,
    ));
    assert_eq!(err.matches("not a directory").count(), 1, "{err}");
    assert!(!err.contains("peer closed"), "{err}");
    std::fs::remove_file(&base).unwrap();
    // The last component is made.
    let dir = temp("png-ok");
    let _ = std::fs::remove_dir_all(&dir);
    let sink = format!("png:{}", dir.display());
    status_of(
        &[
            "run", "--alloc", "memfd", "--size", "64x64", "--frames", "2", "--sink", &sink,
        ],
        0,
    );
    assert!(dir.join("frame-000001.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn logs_honour_rust_log_and_reach_the_consumer_child() {
    let args = [
        "run", "--alloc", "memfd", "--size", "64x64", "--frames", "3",
    ];
    // Default: quiet on success.
    let out = status_of(&args, 0);
    assert_eq!(stderr(&out), "", "{}", stderr(&out));
    // -v reaches the child: info lines from two processes, the negotiation said.
    let mut v = vec!["-v"];
    v.extend(args);
    let err = stderr(&status_of(&v, 0));
    let pids: std::collections::BTreeSet<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("frameshare[")?.split(']').next())
        .collect();
    assert_eq!(pids.len(), 2, "producer and consumer both log: {err}");
    assert!(
        err.contains("producer: XR24 64x64 modifier LINEAR in 4 memfd buffer(s)"),
        "{err}"
    );
    assert!(
        err.contains("consumer: buffers are XR24 64x64 modifier LINEAR in memfd memory"),
        "{err}"
    );
    assert!(err.contains("(wait policy)"), "{err}");
    // RUST_LOG wins over the default, in both processes.
    let out = Command::new(bin())
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains(": debug: "), "{err}");
    assert!(
        err.contains("consumer: sink verify takes"),
        "the child's debug line: {err}"
    );
}

#[test]
fn produce_and_consume_report_the_run_schema() {
    let dir = temp("rt");
    std::fs::create_dir_all(&dir).unwrap();
    let producer = Command::new(bin())
        .args([
            "produce", "--stream", "schema", "--alloc", "memfd", "--size", "64x64", "--frames",
            "20", "--json",
        ])
        .env("FRAMESHARE_RUNTIME_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let consumer = Command::new(bin())
        .args(["consume", "--stream", "schema", "--json"])
        .env("FRAMESHARE_RUNTIME_DIR", &dir)
        .output()
        .unwrap();
    let produced = producer.wait_with_output().unwrap();
    assert!(consumer.status.success(), "{}", stderr(&consumer));
    assert!(produced.status.success(), "{}", stderr(&produced));
    let c: serde_json::Value = serde_json::from_slice(&consumer.stdout).unwrap();
    let p: serde_json::Value = serde_json::from_slice(&produced.stdout).unwrap();
    let r = common::run_json(&["--alloc", "memfd", "--size", "64x64", "--frames", "5"]);
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&c), keys(&r));
    assert_eq!(keys(&p), keys(&r));
    for (v, cmd) in [(&c, "consume"), (&p, "produce"), (&r, "run")] {
        assert_eq!(v["schema"], 1);
        assert_eq!(v["command"], cmd);
    }
    assert_eq!(c["frames_delivered"], 20, "{c}");
    assert_eq!(c["frames_verified"], 20, "{c}");
    assert!(c["fps"].as_f64().unwrap() > 0.0, "{c}");
    assert_eq!(p["frames_produced"], 20, "{p}");
    assert!(p["fps"].as_f64().unwrap() > 0.0, "{p}");
    assert_eq!(p["consumers"]["joined"], 1, "{p}");
    assert!(
        p["queue_latency_us"].is_null() && p["sink"].is_null(),
        "{p}"
    );
    // The text layout is the same table.
    let text = stdout(&status_of(
        &[
            "run", "--alloc", "memfd", "--size", "64x64", "--frames", "5",
        ],
        0,
    ));
    for line in [
        "allocator ",
        "sink ",
        "frames produced ",
        "frames verified ",
        "queue latency µs ",
        "handoff µs ",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explain_tells_no_from_bad_input() {
    // A fourcc frameshare does not handle: "no" (1), and no false "into no Vulkan device".
    let out = status_of(&["explain", "FOOO", "64x64", "--alloc", "memfd"], 1);
    let text = stdout(&out);
    assert!(text.contains("unsupported fourcc FOOO"), "{text}");
    assert!(!text.contains("no Vulkan device"), "{text}");
    // A size the format cannot have is bad input (2), said as `run` says it, not a "no".
    let out = status_of(&["explain", "YU12", "641x480", "--alloc", "memfd"], 2);
    assert!(
        stderr(&out).contains("width must be even"),
        "{}",
        stderr(&out)
    );
    // A modifier by name is understood and printed by name.
    let out = frameshare(&[
        "explain",
        "XR24",
        "64x64",
        "--modifier",
        "I915_X_TILED",
        "--alloc",
        "memfd",
    ]);
    assert_ne!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("modifier I915_X_TILED"),
        "{}",
        stdout(&out)
    );
    let out = frameshare(&[
        "explain",
        "XR24",
        "64x64",
        "--modifier",
        "0x0100000000000001",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["modifier"], "I915_X_TILED");
    // An allocator missing on this machine is not "works".
    if !std::path::Path::new("/dev/udmabuf").exists() {
        let out = status_of(
            &["explain", "XR24", "64x64", "--alloc", "udmabuf", "--json"],
            1,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["works"], false, "{v}");
        assert_eq!(v["allocator"]["available"], false, "{v}");
    }
    // KMS scanout is asked when wanted; with no display, the answer is no and says why.
    if !std::path::Path::new("/dev/dri").exists() {
        let out = status_of(
            &[
                "explain", "XR24", "64x64", "--into", "kms", "--alloc", "memfd",
            ],
            1,
        );
        assert!(stdout(&out).contains("no display"), "{}", stdout(&out));
    }
}

#[test]
fn ls_lists_embedders_and_orphans_as_json() {
    // This test process is not called frameshare; it holds a frameshare buffer.
    let layout =
        frameshare::format::FrameLayout::linear(frameshare::format::Fourcc::XR24, 64, 64, 64)
            .unwrap();
    let mut alloc = frameshare::alloc::memfd::MemfdAllocator::new();
    let _buf = frameshare::alloc::Allocator::allocate(&mut alloc, &layout).unwrap();
    let path = format!("/dev/shm/frameshare-ls-test-{}", std::process::id());
    let made = std::fs::write(&path, [0u8; 4096]).is_ok();
    let out = status_of(&["ls", "--json"], 0);
    if made {
        let _ = std::fs::remove_file(&path);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    let me = std::process::id() as u64;
    let mine: Vec<&serde_json::Value> = v["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["pid"] == me)
        .collect();
    assert!(
        mine.iter()
            .any(|b| b["kind"] == "memfd" && b["inode"].as_u64().is_some()),
        "{v}"
    );
    assert!(
        v["totals"]["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == me),
        "{v}"
    );
    if made {
        assert!(
            v["orphans"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["name"] == path.as_str()),
            "{v}"
        );
    }
}

fn read_png(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn camera_formats_make_the_right_pictures() {
    // Each format cameras emit, end to end: generated, verified by the consumer, and written
    // as PNG with the colours right (a swapped chroma order or a wrong plane would show).
    // Solid 0x3366cc: U and V far apart, so NV21 read as NV12 would come out orange.
    for format in ["NV21", "YU12", "NV16", "P010", "NV12"] {
        let dir = temp(&format!("fmt-{format}"));
        let _ = std::fs::remove_dir_all(&dir);
        let sink = format!("png:{}", dir.display());
        let args = [
            "run",
            "--alloc",
            "memfd",
            "--format",
            format,
            "--pattern",
            "solid:3366cc",
            "--size",
            "96x64",
            "--frames",
            "3",
            "--sink",
            &sink,
        ];
        status_of(&args, 0);
        let (w, h, rgba) = read_png(&dir.join("frame-000001.png"));
        assert_eq!((w, h), (96, 64));
        // A pixel below the stamp rows.
        let at = ((h - 2) * w + w / 2) as usize * 4;
        let px = &rgba[at..at + 3];
        for (got, want) in px.iter().zip([0x33u8, 0x66, 0xcc]) {
            assert!(
                got.abs_diff(want) <= 4,
                "{format}: pixel {px:?}, want about [51, 102, 204]"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let s = common::run_json(&[
            "--alloc",
            "memfd",
            "--format",
            format,
            "--pattern",
            "bars",
            "--size",
            "98x66",
            "--frames",
            "20",
        ]);
        assert_eq!(s["frames_verified"], 20, "{format}: {s}");
    }
}

#[test]
fn bench_exports_csv_and_a_plot_in_one_command_and_compares_with_a_baseline() {
    let base = [
        "bench",
        "--frames",
        "12",
        "--rounds",
        "1",
        "--pace-us",
        "100",
        "--sizes",
        "64x48,128x96",
        "--allocs",
        "memfd,sysv-shm",
    ];
    let svg = temp("bench.svg");
    let mut args = base.to_vec();
    args.extend(["--export", "csv", "--plot", svg.to_str().unwrap()]);
    let csv = stdout(&status_of(&args, 0));
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("section,what,size,frame_bytes,samples,min_us,p25_us,p50_us"),
        "{csv}"
    );
    for cell in [
        "memfd,64x48",
        "memfd,128x96",
        "sysv-shm,64x48",
        "sysv-shm,128x96",
    ] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&format!("handoff,{cell},")))
            .unwrap_or_else(|| panic!("no {cell} in {csv}"));
        // min ≤ p25 ≤ p50 ≤ p75 ≤ p99 ≤ max, σ ≥ 0.
        let f: Vec<f64> = row.split(',').skip(5).map(|x| x.parse().unwrap()).collect();
        let (min, p25, p50, mean, sd, p75, p99, max) =
            (f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]);
        assert!(
            min <= p25 && p25 <= p50 && p50 <= p75 && p75 <= p99 && p99 <= max,
            "{row}"
        );
        assert!(sd >= 0.0 && mean >= min && mean <= max, "{row}");
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.contains("memfd 128x96"),
        "{plot}"
    );
    std::fs::remove_file(&svg).unwrap();

    // The text report shows the spread; a baseline is compared cell by cell.
    let json = temp("bench.json");
    let mut args = base.to_vec();
    args.push("--json");
    std::fs::write(&json, status_of(&args, 0).stdout).unwrap();
    let mut args = base.to_vec();
    args.extend(["--baseline", json.to_str().unwrap()]);
    let text = stdout(&status_of(&args, 0));
    assert!(text.contains("spread (µs): mean ± σ"), "{text}");
    assert!(text.contains("p50 now against then"), "{text}");
    assert!(
        text.contains("sysv-shm") && text.contains("128x96"),
        "{text}"
    );
    std::fs::remove_file(&json).unwrap();
    // A baseline that is not a report is a usage error, before any measuring.
    status_of(&["bench", "--baseline", "/nonexistent.json"], 2);
}

#[test]
fn a_missing_local_sw_sync_is_blamed_on_this_machine() {
    if std::path::Path::new("/sys/kernel/debug/sync/sw_sync").exists() {
        eprintln!("skipped: this machine has sw_sync");
        return;
    }
    let out = status_of(
        &[
            "run",
            "--alloc",
            "memfd",
            "--size",
            "64x64",
            "--acquire-fence",
            "sw-sync",
        ],
        1,
    );
    let err = stderr(&out);
    assert!(
        err.contains("producer: setting up sw_sync acquire fences on this machine"),
        "{err}"
    );
    assert!(
        !err.contains("incompatible peer") && !err.contains("peer closed"),
        "{err}"
    );
}

#[test]
fn ls_all_leaves_out_memfd_executables() {
    // A sandbox runs its code from a memfd (its executable is /memfd:… (deleted)): that
    // mapping is code, not a frame.
    use std::os::fd::AsRawFd;
    let exe = rustix::fs::memfd_create("sandbox-exe", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let sleep = std::fs::read("/bin/sleep").unwrap();
    let mut f = std::fs::File::from(exe);
    std::io::Write::write_all(&mut f, &sleep).unwrap();
    // Executing a file someone may write fails (ETXTBSY): keep a read-only fd only.
    let ro = std::fs::File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
    drop(f);
    let path = format!("/proc/self/fd/{}", ro.as_raw_fd());
    let mut child = Command::new(&path).arg("10").spawn().unwrap();
    // The case under test exists only once the child runs the memfd (after its exec).
    let exe = format!("/proc/{}/exe", child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_link(&exe).is_ok_and(|p| p.to_string_lossy().starts_with("/memfd:")) {
        assert!(
            Instant::now() < deadline,
            "the child never ran from its memfd: {:?}",
            std::fs::read_link(&exe)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = status_of(&["ls", "--all", "--json"], 0);
    child.kill().unwrap();
    child.wait().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid = child.id() as u64;
    let listed: Vec<&serde_json::Value> = v["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["pid"] == pid)
        .collect();
    assert!(listed.is_empty(), "{listed:?}");
}
