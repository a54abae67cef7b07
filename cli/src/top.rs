//! `frameshare ls` and `frameshare top`: the live streams (asked as a monitor: producer, format,
//! rate, each consumer with its policy and counters) and, for `ls`, the shared buffers every
//! process holds.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use frameshare::bus::monitor::{self, StreamEntry};
use frameshare::bus::StreamStatus;

use crate::ls;

/// How long a producer may take to answer a monitor.
const ANSWER: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct StreamView {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StreamStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn views(entries: Vec<StreamEntry>) -> Vec<StreamView> {
    entries
        .into_iter()
        .map(|e| match e.status {
            Ok(s) => StreamView {
                name: e.name.to_string(),
                status: Some(s),
                error: None,
            },
            Err(err) => StreamView {
                name: e.name.to_string(),
                status: None,
                error: Some(format!("stale (no producer answers: {err})")),
            },
        })
        .collect()
}

/// The streams as a table.
fn table(streams: &[StreamView]) -> String {
    let mut s = String::new();
    if streams.is_empty() {
        s += "(no streams)\n";
    }
    for v in streams {
        let Some(st) = &v.status else {
            s += &format!(
                "{:<16} {}\n",
                v.name,
                v.error.as_deref().unwrap_or_default()
            );
            continue;
        };
        s += &format!(
            "{:<16} pid {:<7} {:<18} {} {}x{} {} ×{}  {:.1} fps  {} frames  {} consumer(s)\n",
            v.name,
            st.pid,
            st.source,
            if st.format.is_empty() {
                "-"
            } else {
                &st.format
            },
            st.width,
            st.height,
            st.memory,
            st.buffers,
            st.fps_milli as f64 / 1000.0,
            st.frames,
            st.consumer_count
        );
        for c in &st.consumers {
            s +=
                &format!(
                "  └ pid {:<7} uid {:<6} {:<14} {:<6} delivered {:<9} dropped {:<7} holding {}\n",
                c.pid, c.uid, c.name, c.policy.name(), c.delivered, c.dropped, c.held
            );
        }
    }
    s
}

/// `frameshare ls`.
pub fn ls(all: bool, json: bool) -> Result<i32> {
    let streams = views(monitor::streams(ANSWER).unwrap_or_default());
    let inv = ls::scan(all);
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            schema: u32,
            streams: &'a [StreamView],
            buffers: &'a [ls::Holding],
            orphans: &'a [ls::Orphan],
            totals: &'a ls::Totals,
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&Out {
                schema: crate::report::SCHEMA,
                streams: &streams,
                buffers: &inv.buffers,
                orphans: &inv.orphans,
                totals: &inv.totals,
            })?
        );
    } else {
        out!("STREAMS\n{}", table(&streams));
        out!("\nBUFFERS\n{}", ls::table(&inv));
    }
    Ok(0)
}

/// `frameshare top`: the streams table, redrawn every `interval`.
pub fn top(interval: Duration, count: Option<u64>) -> Result<i32> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut n = 0u64;
    loop {
        let streams = views(monitor::streams(ANSWER)?);
        if tty {
            out!("\x1b[H\x1b[2J");
        }
        out!("{}", table(&streams));
        if !tty {
            outln!();
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}
