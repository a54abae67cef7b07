#!/bin/bash
# Where a frame's time goes, on each side: syscalls per frame (strace -c -f) and where the CPU
# goes (perf record -e cpu-clock, a software event that works in VMs; flat profile by symbol).
# One producer (`frameshare produce`, memfd, the `solid` generator: 8 stamp rows per frame) and
# one consumer (`frameshare consume --sink null`), paced (1000 fps: the consumer idles between
# frames, as behind a camera) and unpaced.
#
#   bench/profile.sh [OUT_DIR]        FRAMES=20000 SIZE=1920x1080 FRAMESHARE=target/release/frameshare
#                                     PERF=0 (strace only)
#
# Writes OUT_DIR/{strace,perf}-{producer,consumer}-{paced,unpaced}.txt and prints syscalls per
# frame. perf is optional (Debian: linux-perf); strace is not.
set -euo pipefail
out=${1:-/tmp/frameshare-profile}
fs=${FRAMESHARE:-target/release/frameshare}
frames=${FRAMES:-20000}
size=${SIZE:-1920x1080}
mkdir -p "$out"
export FRAMESHARE_RUNTIME_DIR=$(mktemp -d)
trap 'rm -rf "$FRAMESHARE_RUNTIME_DIR"' EXIT

# run TOOL-PREFIX MODE: the pair once, each side under the tool (its output file named by side).
run_pair() {
    local tool=$1 mode=$2 fps=()
    [ "$mode" = paced ] && fps=(--fps 1000)
    local name=profile-$tool-$mode
    tool_cmd() {
        case $tool in
            strace) echo strace -c -f -o "$out/strace-$1-$mode.txt" ;;
            perf) echo perf record -q -e cpu-clock -F 20000 -o "$out/perf-$1-$mode.data" -- ;;
            none) echo ;;
        esac
    }
    $(tool_cmd consumer) "$fs" consume --stream "$name" --sink null >/dev/null 2>&1 &
    local consumer=$!
    $(tool_cmd producer) "$fs" produce --stream "$name" --alloc memfd --size "$size" \
        --source generator:solid --frames "$frames" "${fps[@]}" >/dev/null 2>&1
    wait $consumer
}

per_frame() { # strace -c output → "syscall calls/frame" for the busy ones, and the total
    # Rows: % time, seconds, usecs/call, calls, [errors], syscall (errors may be empty).
    awk -v n="$frames" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF !~ /^[0-9]+$/ && $4 / n >= 0.01 {
        printf "    %-16s %6.2f\n", $NF, $4 / n }' "$1"
}

for mode in unpaced paced; do
    run_pair strace $mode
    for side in producer consumer; do
        echo "$side, $mode, $size, $frames frames: syscalls per frame (strace -c -f)"
        per_frame "$out/strace-$side-$mode.txt"
    done
    if [ "${PERF:-1}" != 0 ] && command -v perf >/dev/null; then
        run_pair perf $mode
        for side in producer consumer; do
            perf report -q -i "$out/perf-$side-$mode.data" --no-children --sort dso,symbol \
                --percent-limit 1 2>/dev/null | head -40 > "$out/perf-$side-$mode.txt" || true
        done
    fi
done
echo "profiles in $out"
