#!/bin/bash
# frameshare against GStreamer's own process-to-process pairs, side by side on this machine:
#
#   frameshare   produce (memfd, generator:solid) → consume --sink null
#   gst-shm      videotestsrc pattern=black ! shmsink  →  shmsrc ! fakesink
#   gst-unixfd   videotestsrc pattern=black ! unixfdsink  →  unixfdsrc ! fakesink
#                (GStreamer ≥ 1.24 only; Debian bookworm has 1.22, so there it is skipped)
#
# Each configuration (pair × size × unpaced / 60 fps) runs once per round; rounds interleave
# the pairs, and the medians over rounds go to the CSV, one row per configuration. Figures:
#   fps          unpaced: frames / the producer's run (frameshare: its own elapsed_s;
#                GStreamer: fpsdisplaysink's running average at the consumer, start-up left out)
#   *_cpu_us     user+system CPU of each process per frame (its rusage), minus what the same
#                command spends on a 10-frame run (start-up: GStreamer's plugin loading)
#   handoff_*    frameshare only: its consumer's own handoff latency (producer stamp → frame
#                received); GStreamer has no such stamp: empty
# The producers are not equally cheap: videotestsrc clears the whole frame each time (into
# shmsink's own memory: no copy), frameshare's solid generator rewrites 8 stamp rows. The
# producer CPU column shows the difference; `frameshare bench --gstreamer` compares fps with
# both producers clearing each frame.
#
#   bench/compare-gstreamer.sh [OUT_DIR]     ROUNDS=3 FRAMES=3000 SIZES="1920x1080 3840x2160"
#                                            FRAMESHARE=target/release/frameshare
# Writes OUT_DIR/compare-gstreamer.csv and OUT_DIR/compare-gstreamer.svg (bars: fps, and CPU per
# frame of each side; drawn by python3 itself, nothing to install), prints the table.
set -euo pipefail
out=${1:-/tmp/frameshare-compare}
fs=$(realpath "${FRAMESHARE:-target/release/frameshare}")
rounds=${ROUNDS:-3}
frames=${FRAMES:-3000}
paced_frames=${PACED_FRAMES:-300}
sizes=${SIZES:-1920x1080 3840x2160}
mkdir -p "$out"
raw=$out/raw.csv
csv=$out/compare-gstreamer.csv
work=$(mktemp -d)
export FRAMESHARE_RUNTIME_DIR=$work
trap 'rm -rf "$work"' EXIT
command -v gst-launch-1.0 >/dev/null || { echo "gst-launch-1.0 not found (gstreamer1.0-tools)" >&2; exit 1; }
gst_version=$(gst-launch-1.0 --version | sed -n 's/.*version //p' | head -1)
pairs="frameshare gst-shm"
if gst-inspect-1.0 unixfdsink >/dev/null 2>&1; then
    pairs="$pairs gst-unixfd"
else
    echo "note: GStreamer $gst_version has no unixfdsink/unixfdsrc (they came in 1.24): gst-unixfd skipped" >&2
fi

# timed FILE CMD…: runs CMD, writes its user+system CPU seconds (wait4's rusage, µs resolution;
# GNU time rounds to 10 ms) to FILE, exits with its status.
timed() {
    python3 -c '
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write("%.6f\n" % (ru.ru_utime + ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(status))' "$@"
}
cpu_of() { cat "$1"; }

# frameshare_run SIZE FRAMES RATE → "fps prod_cpu_s cons_cpu_s p50 p99"
frameshare_run() {
    local size=$1 n=$2 rate=$3 name=cmp$RANDOM fps_arg=()
    [ "$rate" != unpaced ] && fps_arg=(--fps "$rate")
    timed "$work/c.time" timeout 120 "$fs" consume --stream "$name" --sink null --json > "$work/c.json" 2>/dev/null &
    local c=$!
    timed "$work/p.time" timeout 120 "$fs" produce --stream "$name" --alloc memfd --size "$size" \
        --source generator:solid --frames "$n" "${fps_arg[@]}" --json > "$work/p.json" 2>"$work/p.err" \
        || { echo "frameshare produce failed:" >&2; cat "$work/p.err" >&2; kill $c 2>/dev/null; return 1; }
    wait $c || { echo "frameshare consume failed" >&2; return 1; }
    python3 - "$work/p.json" "$work/c.json" "$n" <<'EOF'
import json, sys
p, c, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
print(n / p["elapsed_s"], c["latency_us"]["p50"], c["latency_us"]["p99"])
EOF
    echo "$(cpu_of "$work/p.time") $(cpu_of "$work/c.time")"
}

# gst_run PAIR SIZE FRAMES RATE → "fps" then "prod_cpu_s cons_cpu_s"
gst_run() {
    local pair=$1 size=$2 n=$3 rate=$4
    local w=${size%x*} h=${size#*x} sock=$work/gst.sock live=false fr=30/1
    [ "$rate" != unpaced ] && { live=true; fr=$rate/1; }
    local caps="video/x-raw,format=BGRx,width=$w,height=$h,framerate=$fr"
    local sink src
    rm -f "$sock"
    if [ "$pair" = gst-shm ]; then
        sink=(shmsink "socket-path=$sock" wait-for-connection=true sync=false "shm-size=$((w * h * 4 * 64))")
        src=(shmsrc "socket-path=$sock" ! "$caps")
    else
        sink=(unixfdsink "socket-path=$sock" sync=false)
        src=(unixfdsrc "socket-path=$sock")
    fi
    timed "$work/p.time" timeout 150 gst-launch-1.0 -q videotestsrc "num-buffers=$n" pattern=black "is-live=$live" \
        ! "$caps" ! "${sink[@]}" >/dev/null 2>&1 &
    local p=$!
    local tries=0
    while [ ! -S "$sock" ]; do
        kill -0 $p 2>/dev/null && ((tries++ < 1000)) || { echo "$pair: no socket at $sock" >&2; return 1; }
        sleep 0.01
    done
    timed "$work/c.time" timeout 120 gst-launch-1.0 -v "${src[@]}" ! fpsdisplaysink \
        "video-sink=fakesink enable-last-sample=false" text-overlay=false sync=false \
        fps-update-interval=50 > "$work/c.out" 2>&1 || true
    wait $p || true
    local fps
    fps=$(grep -o 'average: [0-9.]*' "$work/c.out" | tail -1 | cut -d' ' -f2 || true)
    echo "${fps:-nan} nan nan"
    echo "$(cpu_of "$work/p.time") $(cpu_of "$work/c.time")"
}

run() { # PAIR SIZE FRAMES RATE
    if [ "$1" = frameshare ]; then frameshare_run "$2" "$3" "$4"; else gst_run "$@"; fi
}

echo "round,pair,size,rate,frames,fps,handoff_p50_us,handoff_p99_us,producer_cpu_s,consumer_cpu_s,startup_producer_cpu_s,startup_consumer_cpu_s" > "$raw"
for ((r = 1; r <= rounds; r++)); do
    order=$pairs
    [ $((r % 2)) = 0 ] && order=$(echo "$pairs" | tr ' ' '\n' | tac | tr '\n' ' ')
    for size in $sizes; do
        for rate in unpaced 60; do
            n=$frames; [ "$rate" != unpaced ] && n=$paced_frames
            for pair in $order; do
                echo "round $r/$rounds: $pair $size $rate ($n frames)" >&2
                run "$pair" "$size" "$n" "$rate" > "$work/run.out"
                mapfile -t a < "$work/run.out"
                run "$pair" "$size" 10 unpaced > "$work/run.out"
                mapfile -t s < "$work/run.out"
                read -r fps p50 p99 <<< "${a[0]}"; read -r pc cc <<< "${a[1]}"; read -r sp sc <<< "${s[1]}"
                echo "$r,$pair,$size,$rate,$n,$fps,$p50,$p99,$pc,$cc,$sp,$sc" >> "$raw"
            done
        done
    done
done

python3 - "$raw" "$csv" "$gst_version" <<'EOF'
import csv, math, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(v):
    v = [x for x in v if not math.isnan(x)]
    return statistics.median(v) if v else float("nan")
groups = {}
for r in rows:
    groups.setdefault((r["pair"], r["size"], r["rate"]), []).append(r)
out = csv.writer(open(sys.argv[2], "w"))
out.writerow(["pair", "gstreamer_version", "size", "rate", "frames", "rounds", "fps",
              "producer_cpu_us_per_frame", "consumer_cpu_us_per_frame",
              "handoff_p50_us", "handoff_p99_us"])
print(f"{'pair':<11} {'size':>10} {'rate':>8} {'fps':>9} {'prod µs':>9} {'cons µs':>9} {'p50 µs':>8} {'p99 µs':>8}")
for (pair, size, rate), rs in groups.items():
    n = int(rs[0]["frames"])
    f = lambda k: [float(r[k]) for r in rs]
    per = lambda k, s: med([(float(r[k]) - float(r[s])) * 1e6 / (n - 10) for r in rs])
    fps = med(f("fps")) if rate == "unpaced" else float("nan")
    vals = [fps, per("producer_cpu_s", "startup_producer_cpu_s"),
            per("consumer_cpu_s", "startup_consumer_cpu_s"),
            med(f("handoff_p50_us")), med(f("handoff_p99_us"))]
    out.writerow([pair, sys.argv[3] if pair != "frameshare" else "", size, rate, n, len(rs)]
                 + ["" if math.isnan(v) else f"{v:.2f}" for v in vals])
    print(f"{pair:<11} {size:>10} {rate:>8} " + " ".join(
        f"{'-' if math.isnan(v) else f'{v:.1f}':>{w}}" for v, w in zip(vals, (9, 9, 9, 8, 8))))
EOF
python3 - "$csv" "$out/compare-gstreamer.svg" <<'EOF'
# One group of bars per configuration (pair, size, rate): unpaced fps in one panel, producer and
# consumer CPU per frame in the other. Plain SVG: no plotting library needed.
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
val = lambda r, k: float(r[k]) if r[k] else 0.0
panels = [("unpaced frames/s", [("fps", "#4477aa")], [r for r in rows if r["rate"] == "unpaced"]),
          ("CPU µs per frame", [("producer_cpu_us_per_frame", "#ee6677"),
                                ("consumer_cpu_us_per_frame", "#228833")], rows)]
width, ph, top = 300 + 70 * len(rows), 220, 30
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * (ph + 90)}" '
       'font-family="sans-serif" font-size="11">']
for k, (title, series, rs) in enumerate(panels):
    y0 = top + k * (ph + 90)
    peak = max([val(r, s) for r in rs for s, _ in series] + [1e-9])
    svg.append(f'<text x="10" y="{y0 - 10}" font-size="13">{title} (tallest bar {peak:.1f})</text>')
    svg.append(f'<line x1="60" y1="{y0 + ph}" x2="{width - 10}" y2="{y0 + ph}" stroke="black"/>')
    for i, r in enumerate(rs):
        x = 70 + i * 70
        for j, (s, colour) in enumerate(series):
            h = ph * val(r, s) / peak
            svg.append(f'<rect x="{x + j * 22}" y="{y0 + ph - h:.1f}" width="20" height="{h:.1f}" '
                       f'fill="{colour}"><title>{s} {val(r, s):.1f}</title></rect>')
        for line, text in enumerate((r["pair"], r["size"], r["rate"])):
            svg.append(f'<text x="{x}" y="{y0 + ph + 14 + 12 * line}">{text}</text>')
    for j, (s, colour) in enumerate(series):
        svg.append(f'<text x="{width - 220}" y="{y0 + 12 * j}" fill="{colour}">{s}</text>')
svg.append("</svg>")
open(sys.argv[2], "w").write("\n".join(svg) + "\n")
EOF
echo "CSV: $csv (per round: $raw), plot: $out/compare-gstreamer.svg"
