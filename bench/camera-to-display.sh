#!/usr/bin/env bash
# bench/camera-to-display.sh — camera to display, frameshare against GStreamer, side by side in one
# VM boot: vivid's first capture node (640x480 XR24, asked for 30 fps: vivid defaults to 5) to
# vkms, FRAMES frames each.
#   frameshare: `frameshare run --source v4l2:NODE:export --sink kms:vkms:direct` (the camera's own
#               buffers exported as dma-bufs, sent to a consumer process that scans them out)
#   converted:  the same with the camera in YUYV and `--sink kms:vkms`: the consumer converts each
#               frame with Vulkan into a display buffer before the plane scans it out
#               (CONVERTED=0 leaves it out; CONVERTED=only runs only it)
#   GStreamer:  `gst-launch-1.0 v4l2src io-mode=dmabuf ! kmssink` (one process, the same buffers)
# Prints, for each: wall seconds, frames, fps, and CPU µs per frame (user + system of every
# process of the pipeline). Run it in the VM:
#   cargo build --release --all-features && ci/vm-run bench/camera-to-display.sh
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${FRAMES:-300}
bin=${FRAMESHARE:-target/release/frameshare}
node=
for n in /sys/class/video4linux/video*; do
  if [ "$(cat "$n/name")" = vivid-000-vid-cap ]; then node=/dev/$(basename "$n"); break; fi
done
[ -n "$node" ] || { echo "no vivid capture node (run this inside ci/vm-run)" >&2; exit 1; }
v4l2-ctl -d "$node" --set-fmt-video=width=640,height=480,pixelformat=XR24 >/dev/null 2>&1 || true
# Buffer timestamps at the start of the frame, so capture -> flip is measured from the capture:
# vivid's default end-of-frame stamp is computed ahead of the time the buffer is ready.
v4l2-ctl -d "$node" -c timestamp_source=1

measure() {  # measure NAME CMD...: wall time, and user + system CPU of the command and its children
  local name=$1 wall user sys
  shift
  if ! /usr/bin/time -f '%e %U %S' -o /tmp/c2d.time "$@" >/tmp/c2d.out 2>/tmp/c2d.err; then
    echo "$name failed:" >&2; cat /tmp/c2d.out /tmp/c2d.err >&2; exit 1
  fi
  read -r wall user sys </tmp/c2d.time
  awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v f="$frames" 'BEGIN {
    printf "%-11s %4d frames in %6.2f s  %6.1f fps  CPU %7.0f us/frame (user %.2f s, sys %.2f s)\n",
      n, f, w, f / w, (u + s) * 1e6 / f, u, s }'
  # frameshare's own report: the rate once streaming (start-up left out), capture → flip
  # latency (the camera's buffer timestamp → the page-flip event), copies, conversions (and
  # how many went to the display as an IN_FENCE_FD, with no CPU wait).
  if [ "$name" != gstreamer ]; then
    python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
c = r.get("capture_to_flip_us") or {}
print("  fps once streaming %.1f, delivered %s, dropped %s, converted %s (IN_FENCE_FD %s), copied %s B"
      % (r["fps"], r["frames_delivered"], r["frames_dropped"], r["frames_converted"],
         r["conversion_in_fences"], r["bytes_copied"]))
print("  capture -> flip ms: p50 %.1f  p99 %.1f  (%s frames)"
      % (c.get("p50", 0) / 1e3, c.get("p99", 0) / 1e3, c.get("samples", 0)))' /tmp/c2d.out
  else
    # GStreamer's latency tracer: v4l2src's push -> kmssink's pad, per buffer (it starts after
    # the capture and ends before the flip, so it is less than capture -> flip).
    grep -oE 'time=\(guint64\)[0-9]+' /tmp/c2d.err | cut -d')' -f2 | sort -n |
      awk '{ v[NR] = $1 } END { if (NR) printf "  latency tracer (push -> sink pad) ms: p50 %.1f  p99 %.1f  (%d buffers)\n",
        v[int((NR - 1) * 0.5) + 1] / 1e6, v[int((NR - 1) * 0.99) + 1] / 1e6, NR }'
  fi
}

converted=${CONVERTED:-1}
if [ "$converted" = only ]; then
  echo "camera $node 640x480 YUYV -> Vulkan conversion -> vkms, $frames frames"
  measure converted "$bin" run --source "v4l2:$node:export:fps=30" --format YUYV --size 640x480 \
    --sink kms:vkms --frames "$frames" --json
  exit 0
fi

echo "camera $node 640x480 XR24 -> vkms, $frames frames each"
measure frameshare "$bin" run --source "v4l2:$node:export:fps=30" --format XR24 --size 640x480 \
  --sink kms:vkms:direct --frames "$frames" --json
GST_TRACERS=latency GST_DEBUG=GST_TRACER:7 GST_DEBUG_NO_COLOR=1 \
  measure gstreamer gst-launch-1.0 -q v4l2src device="$node" io-mode=dmabuf num-buffers="$frames" \
  ! video/x-raw,format=BGRx,width=640,height=480,framerate=30/1 ! kmssink driver-name=vkms
if [ "$converted" != 0 ]; then
  echo "camera $node 640x480 YUYV -> Vulkan conversion -> vkms, $frames frames"
  measure converted "$bin" run --source "v4l2:$node:export:fps=30" --format YUYV --size 640x480 \
    --sink kms:vkms --frames "$frames" --json
fi
