//! The report as a table (what `frameshare bench` prints without `--json`).

use std::fmt;

use super::{BenchReport, FLOOR_PING_BYTES, FLOOR_PONG_BYTES};

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frameshare bench: {} frames, generator {}; {} ping-pongs per cell in {} interleaved rounds after {} warm-up frames; pools of {}; took {:.1} s",
            self.format, self.pattern, self.frames, self.rounds, self.warmup_frames, self.buffers, self.elapsed_s
        )?;
        writeln!(
            f,
            "Every ratio compares figures measured side by side in this run."
        )?;
        for s in &self.skipped_allocs {
            writeln!(f, "skipped {}: {}", s.alloc, s.reason)?;
        }
        let fl = &self.floor;
        writeln!(
            f,
            "\nfloor: bare SEQPACKET ping-pong ({FLOOR_PING_BYTES} B out, {FLOOR_PONG_BYTES} B back, one sendmsg and one recvmsg per side, same pace), {} samples: p50 {:.1} µs  p99 {:.1} µs  CPU per ping: consumer {:.2} µs, producer {:.2} µs",
            fl.samples, fl.latency_us.p50, fl.latency_us.p99, fl.consumer_cpu_us_per_frame, fl.producer_cpu_us_per_frame
        )?;

        writeln!(
            f,
            "\na. handoff latency, producer \"frame ready\" → consumer \"frame received\", one frame in flight, each handed over {:.0} µs after the previous release",
            self.pace_us
        )?;
        writeln!(
            f,
            "  {:<10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11} {:>5}",
            "alloc",
            "size",
            "MB/frame",
            "p50 µs",
            "p99 µs",
            "p50/floor",
            "p99/floor",
            "copied B/fr",
            "late"
        )?;
        for h in &self.handoff {
            writeln!(
                f,
                "  {:<10} {:>10} {:>10.2} {:>9.1} {:>9.1} {:>9.2} {:>9.2} {:>11.0} {:>5}",
                h.alloc,
                h.size,
                h.frame_bytes as f64 / 1e6,
                h.latency_us.p50,
                h.latency_us.p99,
                h.p50_vs_floor,
                h.p99_vs_floor,
                h.bytes_copied_per_frame,
                h.late_frames
            )?;
        }
        for s in &self.size_scaling {
            writeln!(
                f,
                "  {}: handoff p50 at {} / at {} = {:.2} (p99 {:.2}; {:.0}x the bytes); limit {:.1}: {}",
                s.alloc,
                s.large,
                s.small,
                s.p50_ratio,
                s.p99_ratio,
                s.bytes_ratio,
                s.limit,
                if s.within_limit { "ok" } else { "EXCEEDED" }
            )?;
        }

        writeln!(
            f,
            "\nb. consumer CPU time per frame (thread CPU, median over batches)"
        )?;
        writeln!(
            f,
            "  {:<10} {:>10} {:>9} {:>10} {:>10} {:>12} {:>10}",
            "alloc", "size", "null µs", "null/floor", "verify µs", "verify/floor", "verified"
        )?;
        for c in &self.consumer_cpu {
            writeln!(
                f,
                "  {:<10} {:>10} {:>9.2} {:>10.2} {:>10.1} {:>12.1} {:>10}",
                c.alloc,
                c.size,
                c.null_us_per_frame,
                c.null_vs_floor,
                c.verify_us_per_frame,
                c.verify_vs_floor,
                format!("{}/{}", c.frames_verified, c.verify_frames)
            )?;
        }

        writeln!(
            f,
            "\nc. fps: two processes (null sink, pool running ahead) vs the same generator in one process, {} frames each",
            self.fps_frames
        )?;
        writeln!(
            f,
            "  {:<10} {:>10} {:>12} {:>12} {:>7}",
            "alloc", "size", "2-proc fps", "in-proc fps", "ratio"
        )?;
        for p in &self.fps {
            writeln!(
                f,
                "  {:<10} {:>10} {:>12.0} {:>12.0} {:>7.2}",
                p.alloc, p.size, p.two_process_fps, p.in_process_fps, p.ratio
            )?;
        }

        writeln!(
            f,
            "\nd. copying baselines vs zero copy ({}), same run",
            self.reference_alloc
        )?;
        writeln!(
            f,
            "  {:<9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9} {:>8} {:>5}",
            "method",
            "size",
            "p50 µs",
            "p99 µs",
            "p50/floor",
            "p50/zc",
            "copied B/fr",
            "cpu µs",
            "cpu/zc",
            "late"
        )?;
        for b in &self.copy_baselines {
            writeln!(
                f,
                "  {:<9} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12.0} {:>9.1} {:>8.1} {:>5}",
                b.method,
                b.size,
                b.latency_us.p50,
                b.latency_us.p99,
                b.p50_vs_floor,
                b.p50_vs_zero_copy,
                b.bytes_copied_per_frame,
                b.consumer_cpu_us_per_frame,
                b.cpu_vs_zero_copy,
                b.late_frames
            )?;
        }
        if let Some(b) = self.copy_baselines.first() {
            writeln!(
                f,
                "  zero copy copied {:.0} B/frame; pipe: write() in + read() out, 2 copies; shm-ring: memcpy in, read in place, 1 copy",
                b.zero_copy_bytes_copied_per_frame,
            )?;
        }
        writeln!(
            f,
            "  late: handoffs that came after the pace because drawing the frame took longer (timing still from ready to received)"
        )?;

        let a = &self.after_warmup;
        writeln!(
            f,
            "\ne. after warm-up, over {} zero-copy frames: buffer allocations+imports {}, mappings {}, GPU imports {} (producer {}/{}/{}, consumer {}/{}/{}); target 0: {}",
            a.frames,
            a.total.buffers,
            a.total.mappings,
            a.total.gpu_imports,
            a.producer.buffers,
            a.producer.mappings,
            a.producer.gpu_imports,
            a.consumer.buffers,
            a.consumer.mappings,
            a.consumer.gpu_imports,
            if a.zero { "ok" } else { "NOT MET" }
        )?;

        self.fmt_later_sections(f)?;

        match (&self.vulkan, &self.vulkan_note) {
            (Some(v), _) if !v.per_size.is_empty() => {
                writeln!(
                    f,
                    "\nvulkan ({}): import vs staging, µs per frame; staging ÷ import",
                    v.device
                )?;
                writeln!(
                    f,
                    "  {:<10} {:>11} {:>11} {:>7} | {:>15} {:>15} {:>9} | {:>12}",
                    "size",
                    "frame: imp",
                    "staging",
                    "ratio",
                    "transfer: imp",
                    "staging",
                    "ratio",
                    "import call"
                )?;
                for s in &v.per_size {
                    writeln!(
                        f,
                        "  {:<10} {:>11.1} {:>11.1} {:>7.2} | {:>15.1} {:>15.1} {:>9.1} | {:>12.1}{}",
                        s.size,
                        s.import_us_per_frame,
                        s.staging_us_per_frame,
                        s.ratio,
                        s.import_transfer_us,
                        s.staging_transfer_us,
                        s.transfer_ratio,
                        s.import_call_us,
                        if s.gpu_timestamps { "" } else { "  (no GPU timestamps: CPU only)" }
                    )?;
                }
                Ok(())
            }
            (Some(v), _) => writeln!(
                f,
                "\nvulkan ({}, {}): import {:.1} µs/frame, staging {:.1} µs/frame, ratio {:.2}",
                v.device, v.size, v.import_us_per_frame, v.staging_us_per_frame, v.ratio
            ),
            (None, Some(note)) => writeln!(f, "\nvulkan: {note}"),
            (None, None) => writeln!(f, "\nvulkan: not measured"),
        }
    }
}

impl BenchReport {
    /// Sections f–i: a handoff's cost with nothing drawn, fan-out, GStreamer, the targets.
    fn fmt_later_sections(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\nf. per frame with a static source (nothing drawn): paced like a., then unpaced (pool running ahead); CPU is each side's thread"
        )?;
        writeln!(
            f,
            "  {:<10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
            "alloc",
            "size",
            "p50 µs",
            "p50/floor",
            "cons µs",
            "cons/fl",
            "prod µs",
            "prod/fl",
            "fps",
            "cons µs",
            "prod µs"
        )?;
        for c in &self.static_cost {
            writeln!(
                f,
                "  {:<10} {:>10} {:>8.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} | {:>9.0} {:>9.2} {:>9.2}",
                c.alloc,
                c.size,
                c.latency_us.p50,
                c.p50_vs_floor,
                c.consumer_cpu_us_per_frame,
                c.consumer_vs_floor,
                c.producer_cpu_us_per_frame,
                c.producer_vs_floor,
                c.unpaced_fps,
                c.unpaced_consumer_cpu_us_per_frame,
                c.unpaced_producer_cpu_us_per_frame
            )?;
        }

        if let Some(first) = self.fan_out.first() {
            writeln!(
                f,
                "\ng. fan-out: one producer, N consumers (threads of this process, each its own Subscriber, joined in order), {} {}, nothing drawn; paced, then unpaced",
                first.alloc, first.size
            )?;
            writeln!(
                f,
                "  {:>3} {:>9} {:>11} {:>9} {:>9}   per consumer in join order: p50/p99 µs, CPU µs/frame",
                "N", "prod µs", "+µs/consumer", "fps", "last/lone"
            )?;
            for g in &self.fan_out {
                let each: Vec<String> = g
                    .per_consumer
                    .iter()
                    .map(|c| {
                        format!(
                            "{:.0}/{:.0} {:.1}",
                            c.latency_us.p50, c.latency_us.p99, c.cpu_us_per_frame
                        )
                    })
                    .collect();
                writeln!(
                    f,
                    "  {:>3} {:>9.2} {:>11} {:>9.0} {:>9.2}   {}",
                    g.consumers,
                    g.producer_cpu_us_per_frame,
                    g.producer_cpu_us_per_extra_consumer
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "-".into()),
                    g.unpaced_fps,
                    g.last_p50_vs_lone,
                    each.join("  ")
                )?;
            }
        }

        match (&self.gstreamer_note, self.gstreamer.is_empty()) {
            (Some(note), true) => writeln!(f, "\nh. GStreamer shm: {note}")?,
            (None, true) => writeln!(f, "\nh. GStreamer shm: not measured (pass --gstreamer)")?,
            (note, false) => {
                writeln!(
                    f,
                    "\nh. unpaced fps against GStreamer's shmsink → shmsrc ({}), both producers clearing each frame (videotestsrc pattern=black into shmsink's memory: no copy)",
                    note.as_deref().unwrap_or("GStreamer")
                )?;
                writeln!(
                    f,
                    "  {:>10} {:<10} {:>14} {:>14} {:>7}",
                    "size", "alloc", "frameshare fps", "GStreamer fps", "ratio"
                )?;
                for g in &self.gstreamer {
                    writeln!(
                        f,
                        "  {:>10} {:<10} {:>14.0} {:>14.0} {:>7.2}{}",
                        g.size,
                        g.alloc,
                        g.frameshare_fps,
                        g.gstreamer_fps,
                        g.ratio,
                        match g.failed_runs.first() {
                            Some(why) => format!(
                                "  ({} GStreamer run(s) failed, left out: {why})",
                                g.failed_runs.len()
                            ),
                            None => String::new(),
                        }
                    )?;
                }
            }
        }

        writeln!(
            f,
            "\ni. targets ({}; each the worst over its sizes, ratios of figures from this run)",
            self.reference_alloc
        )?;
        for t in &self.targets {
            let verdict = match (t.met, t.value) {
                (Some(true), _) => "met".to_owned(),
                (Some(false), Some(v)) => {
                    format!("MISSED by {:.0}%", ((v / t.limit) - 1.0).abs() * 100.0)
                }
                _ => "not measured".to_owned(),
            };
            writeln!(
                f,
                "  {:<80} {:>6} {} {:<4} {:<16} {}",
                t.what,
                t.value
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into()),
                t.op,
                t.limit,
                verdict,
                t.detail
            )?;
        }
        Ok(())
    }
}
