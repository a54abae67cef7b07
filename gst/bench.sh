#!/usr/bin/env bash
# Side by side, in one run: frameshare's GStreamer pair against GStreamer's own shared-memory
# pair, at 1080p and 4K (BGRx). Each producer is `videotestsrc ! <sink>` in gst-launch-1.0; each
# consumer runs in-process (examples/consumer_cpu.rs) and measures between its first and last
# buffer: frames per second and the consumer's CPU time per frame (all its threads).
#   frameshare: videotestsrc ! framesharesink        framesharesrc ! fakesink
#   gstreamer:  videotestsrc ! shmsink                shmsrc ! capsfilter ! fakesink
# GStreamer's fd-passing pair (unixfdsink/unixfdsrc) is 1.24+; Debian bookworm has 1.22, so
# the comparison is with shmsink/shmsrc, which also lets videotestsrc write into shared memory
# (its allocator) but sends every buffer's offset and waits on a pipe per release.
# Two rates: `max` (the producer as fast as it goes: the consumer often finds the next frame
# already there) and `60fps` (a live videotestsrc: the consumer sleeps and wakes for every
# frame, as with a camera), so the per-frame cost is compared on equal terms.
# Writes CSV to stdout (and to $1 if given): pair,rate,size,frames,seconds,fps,cpu_us_per_frame.
#   gst/bench.sh [OUT.csv]     (FRAMES=300 by default; build first: ci/gst does)
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${FRAMES:-300}
out=${1:-}
# The same packages and features as ci/gst builds, so nothing is rebuilt for the bench.
cargo build -q --release --all-features -p frameshare-cli -p gst-plugin-frameshare --example consumer_cpu
export GST_PLUGIN_PATH=$PWD/target/release
consumer=$PWD/target/release/examples/consumer_cpu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export FRAMESHARE_RUNTIME_DIR=$dir
sink='fakesink name=out signal-handoffs=true sync=false'

rows=("pair,rate,size,frames,seconds,fps,cpu_us_per_frame")
for rate in max 60fps; do
for size in 1920x1080 3840x2160; do
  w=${size%x*} h=${size#*x}
  caps="video/x-raw,format=BGRx,width=$w,height=$h,framerate=60/1"
  live=false; [ "$rate" = max ] || live=true
  # The producer sends a few more frames than the consumer counts: the consumer stops at
  # $frames and the producer's tail goes nowhere.
  n=$((frames + 10))

  gst-launch-1.0 -q videotestsrc is-live=$live num-buffers=$n pattern=black ! "$caps" ! \
    framesharesink stream=bench wait-for-consumers=1 sync=false >/dev/null 2>&1 &
  prod=$!
  row=$("$consumer" "$frames" "framesharesrc stream=bench ! $sink")
  wait $prod || true
  rows+=("frameshare,$rate,$size,$row")

  shm=$((w * h * 4 * 8))
  gst-launch-1.0 -q videotestsrc is-live=$live num-buffers=$n pattern=black ! "$caps" ! \
    shmsink socket-path="$dir/shm" shm-size=$shm wait-for-connection=true sync=false \
    >/dev/null 2>&1 &
  prod=$!
  for _ in $(seq 50); do [ -S "$dir/shm" ] && break; sleep 0.1; done
  row=$("$consumer" "$frames" "shmsrc socket-path=$dir/shm is-live=true ! $caps ! $sink")
  kill $prod 2>/dev/null || true
  wait $prod 2>/dev/null || true
  rm -f "$dir/shm"
  rows+=("shmsink/shmsrc,$rate,$size,$row")
done
done
printf '%s\n' "${rows[@]}"
[ -z "$out" ] || printf '%s\n' "${rows[@]}" >"$out"
