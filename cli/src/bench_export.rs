//! `bench --export csv|md`, `--plot FILE.svg` and `--baseline FILE`: the benchmark's latency
//! distributions as a table a spreadsheet or a README takes, as a box plot per backend and size,
//! and compared with an earlier run's `--json`. Everything reads the report as JSON (the
//! `--json` shape), so an earlier run's file and this run are read the same way. The `bench`
//! command reaches all of it through [`ExportArgs`] (flattened into its arguments): the
//! baseline is read before measuring, the output rendered and the plot written after.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

/// One latency distribution of the report: the floor, a zero-copy cell or a copying baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `floor`, `handoff` or `copy`.
    pub section: String,
    /// The allocator (`memfd`, …), the copy method (`pipe`, `shm-ring`) or `socket`.
    pub what: String,
    /// Frame size `WxH` (`-` for the floor).
    pub size: String,
    /// Bytes per frame.
    pub frame_bytes: u64,
    /// The distribution, µs.
    pub latency: Dist,
}

/// Percentiles and spread, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Dist {
    /// Samples.
    pub samples: u64,
    /// Smallest.
    pub min: f64,
    /// 25th percentile.
    pub p25: f64,
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

fn dist(cell: &Value) -> Dist {
    let l = &cell["latency_us"];
    Dist {
        samples: cell["samples"]
            .as_u64()
            .or_else(|| l["samples"].as_u64())
            .unwrap_or(0),
        min: num(l, "min"),
        p25: num(l, "p25"),
        p50: num(l, "p50"),
        p75: num(l, "p75"),
        p99: num(l, "p99"),
        max: num(l, "max"),
        mean: num(l, "mean"),
        stddev: num(l, "stddev"),
    }
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("-").to_owned()
}

/// The latency distributions of a report (its `--json` form), in the report's order.
pub fn rows(report: &Value) -> Vec<Row> {
    let mut out = Vec::new();
    if report["floor"].is_object() {
        out.push(Row {
            section: "floor".into(),
            what: "socket".into(),
            size: "-".into(),
            frame_bytes: 0,
            latency: dist(&report["floor"]),
        });
    }
    for (section, key, name) in [
        ("handoff", "handoff", "alloc"),
        ("copy", "copy_baselines", "method"),
    ] {
        for cell in report[key].as_array().into_iter().flatten() {
            out.push(Row {
                section: section.into(),
                what: text(cell, name),
                size: text(cell, "size"),
                frame_bytes: cell["frame_bytes"].as_u64().unwrap_or(0),
                latency: dist(cell),
            });
        }
    }
    out
}

const COLUMNS: [&str; 13] = [
    "section",
    "what",
    "size",
    "frame_bytes",
    "samples",
    "min_us",
    "p25_us",
    "p50_us",
    "mean_us",
    "stddev_us",
    "p75_us",
    "p99_us",
    "max_us",
];

fn cells(r: &Row) -> [String; 13] {
    let d = &r.latency;
    let f = |x: f64| format!("{x:.2}");
    [
        r.section.clone(),
        r.what.clone(),
        r.size.clone(),
        r.frame_bytes.to_string(),
        d.samples.to_string(),
        f(d.min),
        f(d.p25),
        f(d.p50),
        f(d.mean),
        f(d.stddev),
        f(d.p75),
        f(d.p99),
        f(d.max),
    ]
}

/// CSV, one line per distribution, with a header line.
pub fn csv(rows: &[Row]) -> String {
    let mut s = COLUMNS.join(",") + "\n";
    for r in rows {
        s += &cells(r).join(",");
        s.push('\n');
    }
    s
}

/// A Markdown table (as hyperfine's `--export-markdown`).
pub fn markdown(rows: &[Row]) -> String {
    let mut s = format!("| {} |\n|", COLUMNS.join(" | "));
    for (i, _) in COLUMNS.iter().enumerate() {
        s += if i < 3 { "---|" } else { "---:|" };
    }
    s.push('\n');
    for r in rows {
        let _ = writeln!(s, "| {} |", cells(r).join(" | "));
    }
    s
}

/// The spread of every distribution, as hyperfine prints it: mean ± σ, min … max.
pub fn spread_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "spread (µs): mean ± σ, min … max, p25 … p75 (the quartiles box the median)\n",
    );
    for r in rows.iter().filter(|r| r.latency.samples > 0) {
        let d = &r.latency;
        let _ = writeln!(
            s,
            "  {:<8} {:<10} {:>10}  {:>8.1} ± {:<8.1} {:>8.1} … {:<9.1} {:>8.1} … {:<8.1} ({} samples)",
            r.section, r.what, r.size, d.mean, d.stddev, d.min, d.max, d.p25, d.p75, d.samples
        );
    }
    s
}

/// One cell's median now against an earlier run's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// `handoff` or `copy` (or `floor`).
    pub section: String,
    /// Allocator or method.
    pub what: String,
    /// Size.
    pub size: String,
    /// p50 then, µs.
    pub before_p50_us: f64,
    /// p50 now, µs.
    pub now_p50_us: f64,
    /// now / before.
    pub ratio: f64,
    /// The change is larger than both runs' spread (the interquartile ranges): more than noise.
    pub significant: bool,
}

/// Compares this run's distributions with an earlier run's, cell by cell (cells in only one of
/// them are left out).
pub fn compare(before: &[Row], now: &[Row]) -> Vec<Change> {
    now.iter()
        .filter_map(|n| {
            let b = before
                .iter()
                .find(|b| b.section == n.section && b.what == n.what && b.size == n.size)?;
            let (bd, nd) = (b.latency, n.latency);
            if bd.p50 <= 0.0 {
                return None;
            }
            let noise = (bd.p75 - bd.p25).max(0.0) + (nd.p75 - nd.p25).max(0.0);
            Some(Change {
                section: n.section.clone(),
                what: n.what.clone(),
                size: n.size.clone(),
                before_p50_us: bd.p50,
                now_p50_us: nd.p50,
                ratio: nd.p50 / bd.p50,
                significant: (nd.p50 - bd.p50).abs() > noise,
            })
        })
        .collect()
}

/// The comparison as text.
pub fn changes_table(file: &str, changes: &[Change]) -> String {
    let mut s = format!("baseline {file}: p50 now against then\n");
    let _ = writeln!(
        s,
        "  {:<8} {:<10} {:>10} {:>11} {:>11} {:>7}",
        "", "what", "size", "then µs", "now µs", "now/then"
    );
    for c in changes {
        let _ = writeln!(
            s,
            "  {:<8} {:<10} {:>10} {:>11.1} {:>11.1} {:>7.2}{}",
            c.section,
            c.what,
            c.size,
            c.before_p50_us,
            c.now_p50_us,
            c.ratio,
            if c.significant {
                if c.ratio > 1.0 {
                    "  slower (beyond both runs' spread)"
                } else {
                    "  faster (beyond both runs' spread)"
                }
            } else {
                "  within the spread"
            }
        );
    }
    if changes.is_empty() {
        s += "  (no cell of this run is in the baseline)\n";
    }
    s
}

/// Draws the distributions as box plots on a log scale, one box per backend and size (and the
/// floor and copying baselines for scale): the box is p25–p75 with the median across it, the
/// whisker runs from the minimum to p99, a dot marks the maximum.
pub fn svg(rows: &[Row], title: &str) -> Result<String, String> {
    use plotters::prelude::*;
    let rows: Vec<&Row> = rows.iter().filter(|r| r.latency.samples > 0).collect();
    if rows.is_empty() {
        return Err("no latency distribution to plot".into());
    }
    let lo = rows
        .iter()
        .map(|r| r.latency.min)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(1.0e6)
        * 0.8;
    let hi = rows.iter().map(|r| r.latency.max).fold(1.0, f64::max) * 1.25;
    let lo = lo.min(hi / 2.0).max(0.01);
    let width = (160 + 115 * rows.len() as u32).max(640);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 520)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let labels: Vec<String> = rows
            .iter()
            .map(|r| match r.section.as_str() {
                "floor" => "floor".to_owned(),
                _ => format!("{} {}", r.what, r.size),
            })
            .collect();
        let n = rows.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..n - 0.5, (lo..hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_label_style(("sans-serif", 11))
            .y_label_formatter(&|v| {
                if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .y_desc("µs (log scale)")
            .draw()
            .map_err(err)?;
        let palette = [
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(44, 160, 44),
            RGBColor(214, 39, 40),
            RGBColor(148, 103, 189),
            RGBColor(140, 86, 75),
        ];
        let mut whats: Vec<&str> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            if !whats.contains(&r.what.as_str()) {
                whats.push(&r.what);
            }
            let colour = match r.section.as_str() {
                "floor" => RGBColor(120, 120, 120),
                _ => palette[whats.iter().position(|w| *w == r.what).unwrap_or(0) % palette.len()],
            };
            let x = i as f64;
            let d = &r.latency;
            let clamp = |v: f64| v.max(lo);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, clamp(d.min)), (x, clamp(d.p99))],
                    colour.stroke_width(1),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.3, clamp(d.p25)), (x + 0.3, clamp(d.p75))],
                    colour.mix(0.35).filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.3, clamp(d.p25)), (x + 0.3, clamp(d.p75))],
                    colour.stroke_width(1),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x - 0.3, clamp(d.p50)), (x + 0.3, clamp(d.p50))],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (x, clamp(d.max)),
                    3,
                    colour.filled(),
                )))
                .map_err(err)?;
        }
        root.draw(&Text::new(
            "box: p25–p75, bar: median, whisker: min–p99, dot: max",
            (80, 500),
            ("sans-serif", 12),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// `bench --export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Export {
    /// Comma-separated values, a header line first.
    Csv,
    /// A Markdown table.
    Md,
}

/// The options this module adds to `bench` (flattened into its arguments).
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Print the latency distributions (floor, every backend and size, the copying
    /// baselines: min, quartiles, mean, σ, p99, max) as CSV or a Markdown table instead of
    /// the report.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub export: Option<Export>,
    /// Also draw the latency distributions as box plots per backend and size into this
    /// SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Compare with an earlier run's `bench --json` output: each cell's median then and
    /// now, and whether it moved beyond both runs' spread.
    #[arg(long, value_name = "FILE.json")]
    pub baseline: Option<PathBuf>,
}

/// An earlier run, read from `--baseline FILE`.
#[derive(Debug)]
pub struct Baseline {
    file: String,
    rows: Vec<Row>,
}

impl ExportArgs {
    /// Reads `--baseline`, if given. Called before measuring, so that an unreadable file is a
    /// usage error at once rather than after minutes of measuring.
    pub fn load_baseline(&self) -> Result<Option<Baseline>, String> {
        let Some(path) = &self.baseline else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--baseline {}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            format!(
                "--baseline {}: not a `bench --json` report: {e}",
                path.display()
            )
        })?;
        Ok(Some(Baseline {
            file: path.display().to_string(),
            rows: rows(&v),
        }))
    }

    /// What `bench` prints for a finished run: `report` is its `--json` value and `text` its
    /// table; `json` asks for the JSON (with the baseline comparison added as `baseline`).
    pub fn render(
        &self,
        mut report: Value,
        text: &str,
        json: bool,
        baseline: Option<&Baseline>,
    ) -> Result<String, serde_json::Error> {
        let now = rows(&report);
        let changes = baseline.map(|b| compare(&b.rows, &now));
        Ok(match (self.export, json) {
            (Some(Export::Csv), _) => csv(&now),
            (Some(Export::Md), _) => markdown(&now),
            (None, true) => {
                if let Some(c) = &changes {
                    report["baseline"] = serde_json::to_value(c)?;
                }
                serde_json::to_string_pretty(&report)? + "\n"
            }
            (None, false) => {
                let mut s = format!("{text}{}", spread_table(&now));
                if let (Some(b), Some(c)) = (baseline, &changes) {
                    s += &changes_table(&b.file, c);
                }
                s
            }
        })
    }

    /// Writes the `--plot` SVG of `report` (its `--json` value), if asked; returns its path.
    pub fn write_plot(&self, report: &Value, title: &str) -> anyhow::Result<Option<&Path>> {
        let Some(path) = &self.plot else {
            return Ok(None);
        };
        let svg = svg(&rows(report), title).map_err(anyhow::Error::msg)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        let lat = |p50: f64| {
            serde_json::json!({"p50": p50, "p99": p50 * 2.0, "max": p50 * 3.0, "min": p50 / 2.0,
                "p25": p50 * 0.9, "p75": p50 * 1.1, "mean": p50, "stddev": 1.0, "samples": 100})
        };
        serde_json::json!({
            "floor": {"latency_us": lat(7.0), "samples": 100},
            "handoff": [
                {"alloc": "memfd", "size": "640x480", "frame_bytes": 1228800, "latency_us": lat(12.0), "samples": 100},
                {"alloc": "sysv-shm", "size": "640x480", "frame_bytes": 1228800, "latency_us": lat(14.0), "samples": 100},
            ],
            "copy_baselines": [
                {"method": "pipe", "size": "640x480", "frame_bytes": 1228800, "latency_us": lat(280.0), "samples": 100},
            ],
        })
    }

    #[test]
    fn csv_and_markdown_have_a_row_per_distribution() {
        let r = rows(&report());
        assert_eq!(r.len(), 4);
        let c = csv(&r);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("section,what,size,frame_bytes,samples,min_us"));
        assert!(lines[2].starts_with("handoff,memfd,640x480,1228800,100,6.00,10.80,12.00"));
        let m = markdown(&r);
        assert!(m.contains("| handoff | sysv-shm | 640x480 |"), "{m}");
        assert_eq!(m.lines().count(), 6);
        let t = spread_table(&r);
        assert!(t.contains("12.0 ± 1.0"), "{t}");
    }

    #[test]
    fn a_baseline_comparison_names_what_moved_beyond_the_spread() {
        let before = rows(&report());
        let mut later = report();
        later["handoff"][0]["latency_us"]["p50"] = 24.0.into();
        let ch = compare(&before, &rows(&later));
        let memfd = ch.iter().find(|c| c.what == "memfd").unwrap();
        assert_eq!(memfd.ratio, 2.0);
        assert!(memfd.significant);
        let sysv = ch.iter().find(|c| c.what == "sysv-shm").unwrap();
        assert!(!sysv.significant && sysv.ratio == 1.0);
        assert!(changes_table("b.json", &ch).contains("slower"));
    }

    #[test]
    fn the_plot_is_an_svg_with_a_box_per_cell() {
        let s = svg(&rows(&report()), "handoff latency").unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..80.min(s.len())]);
        assert!(
            s.contains("memfd 640x480") && s.contains("pipe 640x480"),
            "labels"
        );
        assert!(s.matches("<rect").count() >= 8, "boxes");
        assert!(s.contains("handoff latency"));
    }
}
