"""Shared fixtures: the frameshare CLI, a runtime directory for stream sockets, unique stream
names, and producer/consumer processes that are always reaped."""

import json
import os
import pathlib
import subprocess
import tempfile
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# Stream sockets of this run live here (ci/python sets a fresh one per run); set before any
# frameshare object reads it.
if not os.environ.get("FRAMESHARE_RUNTIME_DIR"):
    os.environ["FRAMESHARE_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="frameshare-pytest-")


@pytest.fixture(scope="session")
def cli() -> str:
    """The frameshare binary: $FRAMESHARE_BIN, else the workspace's release build."""
    path = os.environ.get("FRAMESHARE_BIN") or str(REPO / "target" / "release" / "frameshare")
    assert os.access(path, os.X_OK), (
        f"no frameshare binary at {path}: build it (cargo build --release --bin frameshare) "
        "or set FRAMESHARE_BIN"
    )
    return path


@pytest.fixture
def stream() -> str:
    """A stream name no other test uses."""
    return f"py-{uuid.uuid4().hex[:12]}"


class Proc:
    """A CLI process whose JSON report is read when it ends."""

    def __init__(self, args: list[str]):
        self.args = args
        self.p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def report(self, timeout: float = 60) -> dict:
        out, err = self.p.communicate(timeout=timeout)
        assert self.p.returncode == 0, (
            f"{' '.join(self.args)} exited {self.p.returncode}\nstdout:\n{out}\nstderr:\n{err}"
        )
        return json.loads(out)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.communicate()


@pytest.fixture
def spawn():
    """Starts CLI processes; kills whatever is still running at the end of the test."""
    procs: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc([str(a) for a in args])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


def plane_span(array) -> int:
    """Bytes from an array's first byte to the end of its last one (its strides honoured)."""
    return sum((n - 1) * s for n, s in zip(array.shape, array.strides)) + array.itemsize


def mapping_of(address: int) -> dict:
    """The /proc/self/maps entry holding `address`: start, end, perms, path."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                path = fields[5].strip() if len(fields) > 5 else ""
                return {"start": start, "end": end, "perms": fields[1], "path": path}
    raise AssertionError(f"address 0x{address:x} is in no mapping of this process")
