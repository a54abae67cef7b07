//! The layering rule, checked: each top-level module of the library may use only the modules
//! below it. Read from the sources (`crate::MODULE` paths and `use super::…` out of a module's
//! own tree are what count), so a new upward import fails this test instead of waiting for a
//! reviewer.
//!
//! ```text
//! pipeline, explain
//!   └ sink
//!       ├ gpu
//!       └ source
//!           └ bus, alloc
//!               └ sync, meta, counters, latency
//!                   └ buffer
//!                       └ format, sys
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each module and the modules it may use.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    const MEMORY: &[&str] = &["format", "sys", "buffer", "sync", "meta", "counters"];
    BTreeMap::from([
        ("format", &[][..]),
        ("sys", &["format"][..]),
        ("meta", &[][..]),
        ("counters", &[][..]),
        ("latency", &[][..]),
        ("buffer", &["format", "sys", "counters"][..]),
        ("sync", &["format", "sys", "buffer"][..]),
        ("alloc", MEMORY),
        (
            "bus",
            &["format", "sys", "buffer", "sync", "meta", "counters"][..],
        ),
        (
            "source",
            &[
                "format", "sys", "buffer", "sync", "meta", "counters", "alloc", "bus",
            ][..],
        ),
        (
            "gpu",
            &[
                "format", "sys", "buffer", "sync", "meta", "counters", "alloc",
            ][..],
        ),
        (
            "sink",
            &[
                "format", "sys", "buffer", "sync", "meta", "counters", "latency", "alloc",
                "source", "gpu",
            ][..],
        ),
        (
            "explain",
            &[
                "format", "sys", "buffer", "sync", "counters", "alloc", "gpu",
            ][..],
        ),
        (
            "pipeline",
            &[
                "format", "sys", "buffer", "sync", "meta", "counters", "latency", "alloc", "bus",
                "source", "sink", "gpu",
            ][..],
        ),
    ])
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/bus/wire/mod.rs` → `bus`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// The `crate::X` modules a file refers to (comments, doc comments and the unit tests at the
/// end of a file excluded: a test may build its fixtures from any layer).
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    for line in code.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn each_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = allowed();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut broken = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        seen.insert(module.clone());
        let Some(ok) = allowed.get(module.as_str()) else {
            broken.push(format!(
                "{}: module `{module}` is not in the layering table (add it to tests/layering.rs and the README)",
                f.display()
            ));
            continue;
        };
        for used in uses(&std::fs::read_to_string(f).unwrap()) {
            if used != module && allowed.contains_key(used.as_str()) && !ok.contains(&used.as_str())
            {
                broken.push(format!(
                    "{}: `{module}` uses `crate::{used}`, a layer it may not use",
                    f.display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
    assert!(seen.contains("bus") && seen.contains("sink"), "{seen:?}");
}

#[test]
fn the_table_has_no_cycles() {
    let allowed = allowed();
    // Each module's allowed set must not include a module that may use it back.
    for (m, deps) in &allowed {
        for d in deps.iter() {
            assert!(
                !allowed.get(d).is_some_and(|dd| dd.contains(m)),
                "{m} and {d} may use each other"
            );
        }
    }
}

/// A library user with no features compiles none of the CLI's or the devices' crates.
#[test]
fn the_library_without_features_pulls_no_cli_or_device_crates() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "frameshare",
            "-e",
            "normal",
            "--no-default-features",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"rustix"), "{tree}");
    for banned in [
        "clap",
        "anyhow",
        "indicatif",
        "ash",
        "drm",
        "png",
        "gbm",
        "v4l",
        "serde_json",
    ] {
        assert!(
            !crates.contains(&banned),
            "`{banned}` is in the featureless library's tree:\n{tree}"
        );
    }
}
