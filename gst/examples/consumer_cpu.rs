//! The consumer half of `gst/bench.sh`: runs a consumer pipeline whose last element is
//! `fakesink name=out signal-handoffs=true`, and measures, between its first and its last
//! buffer (so start-up and plugin loading are left out), the frames per second and the
//! process's CPU time (every thread, user + system) per frame. Prints one CSV row:
//! `frames,seconds,fps,cpu_us_per_frame`.
//!
//! `cargo run --release -p gst-plugin-frameshare --example consumer_cpu -- FRAMES 'PIPELINE'`

use std::sync::{Arc, Mutex};
use std::time::Instant;

use gst::prelude::*;

/// Process CPU time (all threads), ns.
fn cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[derive(Default)]
struct Marks {
    frames: u64,
    first: Option<(Instant, u64)>,
    last: Option<(Instant, u64)>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(frames), Some(pipeline)) = (args.next(), args.next()) else {
        eprintln!("usage: consumer_cpu FRAMES 'PIPELINE ! fakesink name=out signal-handoffs=true'");
        std::process::exit(2);
    };
    let want: u64 = frames.parse().expect("FRAMES is a number");
    gst::init().expect("gst::init");
    gstframeshare::plugin_register_static().expect("the frameshare plugin");
    let pipeline = gst::parse::launch(&pipeline).expect("the pipeline parses");
    let sink = pipeline
        .downcast_ref::<gst::Bin>()
        .expect("a pipeline")
        .by_name("out")
        .expect("a fakesink named out");
    let marks = Arc::new(Mutex::new(Marks::default()));
    let m = marks.clone();
    sink.connect("handoff", false, move |_| {
        let now = (Instant::now(), cpu_ns());
        let mut m = m.lock().unwrap();
        m.frames += 1;
        m.first.get_or_insert(now);
        m.last = Some(now);
        None
    });
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(300);
    // A consumer that does not forward the producer's end (shmsrc) would wait for frames that
    // never come: it stops after a second without one.
    let quiet = std::time::Duration::from_secs(1);
    loop {
        {
            let m = marks.lock().unwrap();
            let stalled = m.last.is_some_and(|(t, _)| t.elapsed() > quiet);
            if m.frames >= want || stalled || Instant::now() > deadline {
                break;
            }
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => {
                    eprintln!("consumer pipeline: {} ({:?})", e.error(), e.debug());
                    std::process::exit(1);
                }
                _ => {}
            }
        }
    }
    let m = marks.lock().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    let (Some(first), Some(last)) = (m.first, m.last) else {
        eprintln!("no frame arrived");
        std::process::exit(1);
    };
    let n = m.frames.saturating_sub(1).max(1);
    let secs = last.0.duration_since(first.0).as_secs_f64();
    println!(
        "{},{:.3},{:.1},{:.1}",
        m.frames,
        secs,
        n as f64 / secs,
        (last.1 - first.1) as f64 / 1000.0 / n as f64
    );
}
