//! Helpers shared by the integration tests: where the binary is, whether we are inside the
//! project's VM, and the device gate (fail inside the VM, skip loudly on a host).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The built `frameshare` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_frameshare")
}

/// Whether this process runs inside `ci/vm-run` (its guest init sets FRAMESHARE_IN_VM=1).
pub fn in_vm() -> bool {
    std::env::var_os("FRAMESHARE_IN_VM").is_some_and(|v| v == "1")
}

/// Device gate: true if `path` exists. Inside the VM a missing device is a failure (panic);
/// on a host the test prints "skipped: needs the VM (no PATH)" and should return.
pub fn need(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if in_vm() {
        panic!("{path} is missing inside the VM: the VM kernel or rig is broken");
    }
    eprintln!("skipped: needs the VM (no {path})");
    false
}

/// Runs `frameshare ARGS`, returning its output.
pub fn frameshare(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("running frameshare")
}

/// Runs `frameshare run ... --json` and parses the summary, asserting exit status 0.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    json_of(&["run"], args)
}

/// Runs `frameshare bench --vulkan-only ... --json` (Vulkan import vs staging) and parses the
/// result, asserting exit status 0 (every frame verified on both paths).
pub fn vulkan_bench_json(args: &[&str]) -> serde_json::Value {
    json_of(&["bench", "--vulkan-only"], args)
}

/// Runs `frameshare FIRST... ARGS... --json` and parses its output, asserting exit status 0.
fn json_of(first: &[&str], args: &[&str]) -> serde_json::Value {
    let mut all = first.to_vec();
    all.extend_from_slice(args);
    all.push("--json");
    let out = frameshare(&all);
    assert!(
        out.status.success(),
        "frameshare {all:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from {all:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `frameshare ARGS`, asserting that it fails, and returns its stderr.
pub fn run_fails(args: &[&str]) -> String {
    let out = frameshare(args);
    assert!(
        !out.status.success(),
        "frameshare {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}
