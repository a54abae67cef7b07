//! The library's examples, built and run as a user would: `publish` serves the stream `demo`,
//! two `subscribe`s verify every frame they get (one joins from the start, one while it runs).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_until, RuntimeDir};

/// Builds the root package's examples in this test's profile (with all features, as the
/// suite builds the library, so nothing is rebuilt) and returns their directory.
fn examples() -> PathBuf {
    let release = !cfg!(debug_assertions);
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "-q",
            "-p",
            "frameshare",
            "--examples",
            "--all-features",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build");
    assert!(status.success(), "building the examples failed");
    // target/<profile>/deps/examples-HASH → target/<profile>/examples
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

#[test]
fn publish_and_subscribe_examples_verify_every_frame() {
    let dir = examples();
    let rt = RuntimeDir::new("examples");
    let run = |name: &str| {
        Command::new(dir.join(name))
            .env("FRAMESHARE_RUNTIME_DIR", &rt.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting example {name}: {e}"))
    };
    let mut publisher = run("publish");
    // The stream exists once its socket does; the publisher then waits for a subscriber.
    wait_until(
        "the publish example's stream",
        Duration::from_secs(120),
        || {
            assert!(
                publisher.try_wait().unwrap().is_none(),
                "publish exited before it served"
            );
            rt.entries().iter().any(|e| e.starts_with("demo"))
        },
    );
    let first = run("subscribe");
    let second = run("subscribe");
    let mut verified = Vec::new();
    for (who, child) in [("first", first), ("second", second)] {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{who} subscribe: {}\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // "…: N frames verified, 0 wrong"
        let n: u64 = text
            .split(" frames verified, 0 wrong")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{who} subscribe printed: {text}"));
        assert!(n > 0, "{who} subscribe verified nothing: {text}");
        verified.push(n);
    }
    let out = publisher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "publish: {}\n{text}", out.status);
    assert!(text.contains("published 300 frames"), "{text}");
    // The publisher waited for a subscriber before its first frame: one of them saw them all
    // unless the other joined first; together they verified at least the whole stream once.
    assert!(verified.iter().max() == Some(&300), "{verified:?}");
}
