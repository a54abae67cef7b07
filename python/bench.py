#!/usr/bin/env python3
"""Python subscriber vs the Rust subscriber on the same stream, side by side.

Each round runs `frameshare produce` (the generator, unpaced, `solid` pattern: it rewrites only
the stamp rows, so the producer costs little) twice: once consumed by `frameshare consume
--sink null` (the Rust subscriber: take the frame, give it back), once by this process's
`frameshare.Subscriber` (each frame's planes made into NumPy arrays over the buffer and one
pixel read, then given back). Rounds alternate which goes first. Reported, median over rounds:

A third consumer, the Python subscriber taking frames without making arrays, shows what the
arrays cost.

- frames/s: frames over the producer's wall time (policy `wait`: it is paced by its consumer);
- CPU µs per frame of the consumer: the Rust consumer's whole process (getrusage of the child:
  start-up and connection included, a few ms spread over the frames), the Python consumer's
  loop (getrusage of this process around it; the interpreter's start-up excluded);
- bytes copied: the Rust consumer's report, the Python subscriber's `stats["bytes_copied"]`.

    python/bench.py [--frames 3000] [--size 1920x1080] [--rounds 5] [--alloc auto] [--json]

Needs the frameshare CLI (`$FRAMESHARE_BIN`, else target/release/frameshare) and the
frameshare wheel installed (ci/python does both).
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import frameshare

REPO = pathlib.Path(__file__).resolve().parents[1]


def cli() -> str:
    return os.environ.get("FRAMESHARE_BIN") or str(REPO / "target" / "release" / "frameshare")


def producer(stream: str, args) -> subprocess.Popen:
    return subprocess.Popen(
        [cli(), "produce", "--stream", stream, "--source", "generator:solid", "--size",
         args.size, "--frames", str(args.frames), "--alloc", args.alloc, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def producer_report(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=600)
    if p.returncode != 0:
        sys.exit(f"frameshare produce failed ({p.returncode}): {err}")
    return json.loads(out)


def cpu_s(r: resource.struct_rusage) -> float:
    return r.ru_utime + r.ru_stime


def rust_round(args) -> dict:
    stream = f"bench-rs-{uuid.uuid4().hex[:8]}"
    prod = producer(stream, args)
    cons = subprocess.Popen(
        [cli(), "consume", "--stream", stream, "--sink", "null", "--json", "--wait", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = cons.stdout.read()
    _, status, usage = os.wait4(cons.pid, 0)
    cons.returncode = os.waitstatus_to_exitcode(status)
    if cons.returncode != 0:
        sys.exit(f"frameshare consume failed ({cons.returncode}): {cons.stderr.read()}")
    report = json.loads(out)
    p = producer_report(prod)
    frames = report["frames_delivered"]
    return {
        "frames": frames,
        "fps": p["frames_produced"] / p["elapsed_s"],
        "cpu_us_per_frame": cpu_s(usage) / frames * 1e6,
        "bytes_copied": report["bytes_copied"],
    }


def python_round(args, arrays: bool) -> dict:
    stream = f"bench-py-{uuid.uuid4().hex[:8]}"
    prod = producer(stream, args)
    frames = 0
    with frameshare.Subscriber(stream, timeout=30) as sub:
        before = resource.getrusage(resource.RUSAGE_SELF)
        for frame in sub:
            if arrays:
                with frame:
                    frame.planes[0][0, 0, 0]  # arrays over the buffer, one pixel read
            else:
                frame.release()
            frames += 1
        after = resource.getrusage(resource.RUSAGE_SELF)
        copied = sub.stats["bytes_copied"]
    p = producer_report(prod)
    return {
        "frames": frames,
        "fps": p["frames_produced"] / p["elapsed_s"],
        "cpu_us_per_frame": (cpu_s(after) - cpu_s(before)) / frames * 1e6,
        "bytes_copied": copied,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--alloc", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not os.environ.get("FRAMESHARE_RUNTIME_DIR"):
        os.environ["FRAMESHARE_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="frameshare-bench-")

    rounds = {
        "rust": rust_round,
        "python": lambda a: python_round(a, arrays=True),
        "python_frames_only": lambda a: python_round(a, arrays=False),
    }
    runs = {who: [] for who in rounds}
    for r in range(args.rounds):
        order = list(rounds)
        if r % 2:
            order.reverse()
        for who in order:
            runs[who].append(rounds[who](args))
            time.sleep(0.2)

    def median(who: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[who])

    result = {
        "size": args.size,
        "frames": args.frames,
        "rounds": args.rounds,
        "alloc": args.alloc,
    }
    for who in rounds:
        result[who] = {
            "fps": median(who, "fps"),
            "cpu_us_per_frame": median(who, "cpu_us_per_frame"),
            "bytes_copied": max(x["bytes_copied"] for x in runs[who]),
            "frames": sum(x["frames"] for x in runs[who]),
        }
    result["python_over_rust"] = {
        "fps": result["python"]["fps"] / result["rust"]["fps"],
        "cpu_per_frame": result["python"]["cpu_us_per_frame"]
        / result["rust"]["cpu_us_per_frame"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.size}, {args.frames} frames x {args.rounds} rounds, alloc {args.alloc}")
    print(f"{'subscriber':<28}{'frames/s':>10}{'CPU µs/frame':>14}{'bytes copied':>14}")
    for who, label in (("rust", "Rust (consume --sink null)"),
                       ("python", "Python (planes as arrays)"),
                       ("python_frames_only", "Python (frames, no arrays)")):
        x = result[who]
        print(f"{label:<28}{x['fps']:>10.0f}{x['cpu_us_per_frame']:>14.1f}{x['bytes_copied']:>14}")
    q = result["python_over_rust"]
    print(f"{'Python / Rust':<28}{q['fps']:>10.2f}{q['cpu_per_frame']:>14.2f}")
    if any(result[who]["bytes_copied"] for who in rounds):
        sys.exit("a subscriber copied frame bytes")


if __name__ == "__main__":
    main()
