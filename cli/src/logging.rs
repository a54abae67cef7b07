//! Logging: the library logs through the `log` facade; the binary prints it with env_logger.
//! `RUST_LOG` (e.g. `RUST_LOG=frameshare::bus=debug`) wins over `-v`/`-q`; without it, `-q`
//! shows errors only, the default shows warnings (and, for `produce`/`consume`, the stream's
//! own news: waiting for a producer, consumers joining and leaving), `-v` everything at info,
//! `-vv` debug, `-vvv` trace.

use std::io::Write;

/// How loud the command line was asked to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbosity {
    /// `-v` count.
    pub verbose: u8,
    /// `-q`.
    pub quiet: bool,
}

impl Verbosity {
    /// The filter used when `RUST_LOG` is not set. `stream_news` lets the frame bus's info
    /// messages through by default (the commands that wait and serve).
    pub fn default_filter(self, stream_news: bool) -> String {
        match (self.quiet, self.verbose) {
            (true, _) => "error".into(),
            (false, 0) if stream_news => "warn,frameshare::bus=info".into(),
            (false, 0) => "warn".into(),
            (false, 1) => "info".into(),
            (false, 2) => "debug".into(),
            _ => "trace".into(),
        }
    }

    /// The flags that give a child process the same verbosity (`RUST_LOG` it inherits).
    pub fn child_args(self) -> Vec<String> {
        match (self.quiet, self.verbose) {
            (true, _) => vec!["-q".into()],
            (false, 0) => vec![],
            (false, n) => vec![format!("-{}", "v".repeat(n as usize))],
        }
    }
}

/// Installs the logger. Lines read `frameshare[PID]: LEVEL: message` (the pid tells `run`'s
/// two processes apart); at debug and below the module path is added.
pub fn init(v: Verbosity, stream_news: bool) {
    let mut b = env_logger::Builder::new();
    b.parse_filters(&v.default_filter(stream_news));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let pid = std::process::id();
    b.format(move |f, r| {
        let level = r.level().as_str().to_ascii_lowercase();
        if r.level() >= log::Level::Debug {
            writeln!(
                f,
                "frameshare[{pid}]: {level}: {}: {}",
                r.module_path().unwrap_or(r.target()),
                r.args()
            )
        } else {
            writeln!(f, "frameshare[{pid}]: {level}: {}", r.args())
        }
    });
    b.target(env_logger::Target::Stderr);
    let _ = b.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_child_flags() {
        let v = |verbose, quiet| Verbosity { verbose, quiet };
        assert_eq!(v(0, false).default_filter(false), "warn");
        assert_eq!(
            v(0, false).default_filter(true),
            "warn,frameshare::bus=info"
        );
        assert_eq!(v(2, false).default_filter(true), "debug");
        assert_eq!(v(0, true).default_filter(true), "error");
        assert_eq!(v(2, false).child_args(), ["-vv"]);
        assert_eq!(v(0, true).child_args(), ["-q"]);
        assert!(v(0, false).child_args().is_empty());
    }
}
