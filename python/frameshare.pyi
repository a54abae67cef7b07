"""frameshare: video frames shared between Linux processes without a copy.

``Subscriber`` hands out frames whose planes are read-only NumPy arrays over the producer's
buffers (the mapping itself: no copy); ``Publisher`` lends buffers as writable arrays and sends
them. An array still alive when its frame ends is detached: its memory becomes a private copy
of that frame (``DetachedArrayWarning``, counted in ``stats["bytes_copied"]``), so it never
shows a buffer the producer reused.
"""

from types import TracebackType
from typing import Iterator, Literal, TypedDict

import numpy as np
import numpy.typing as npt

__version__: str

Planes = tuple[npt.NDArray[np.uint8], ...]

class Error(Exception):
    """A frameshare operation failed (the message names the cause and its sources)."""

class FrameReleasedError(Error):
    """The frame (or loan) has ended: its planes are no longer available."""

class DetachedArrayWarning(RuntimeWarning):
    """An array outlived its frame and was detached (a private copy of the frame)."""

class SourceTime(TypedDict):
    ns: int
    clock: Literal["monotonic", "boottime", "realtime"]

class Crop(TypedDict):
    x: int
    y: int
    width: int
    height: int

class Colorimetry(TypedDict, total=False):
    matrix: Literal["unknown", "bt601", "bt709", "bt2020", "rgb"]
    range: Literal["unknown", "limited", "full"]
    primaries: Literal["unknown", "bt601", "bt709", "bt2020"]
    transfer: Literal["unknown", "bt709", "srgb", "pq", "hlg", "linear"]

class Meta(TypedDict, total=False):
    """Frame metadata: what ``Frame.meta`` gives (every key) and ``Loan.publish`` takes (any)."""

    clock: Literal["monotonic", "boottime", "realtime"]
    source_seq: int | None
    source_time: SourceTime | None
    crop: Crop | None
    colorimetry: Colorimetry | None
    corrupt: bool
    bytes_used: int | None
    key_values: dict[str, bytes]

class Producer(TypedDict):
    name: str
    stream: str | None
    pattern: str | None
    pid: int
    uid: int

class SubscriberStats(TypedDict):
    frames: int
    frames_detached: int
    bytes_copied: int

class PublisherStats(TypedDict, total=False):
    published: int
    dropped: int
    joined: int
    left: int
    evicted: int
    refused: int
    loans_detached: int
    bytes_copied: int

class Frame:
    """A frame on loan from the producer; it goes back when it ends (end of a ``with`` block,
    ``release()``, the next frame taken, or garbage)."""

    seq: int
    buffer_id: int
    timestamp_ns: int
    received_ns: int
    format: str
    width: int
    height: int
    @property
    def planes(self) -> Planes:
        """Each plane as a read-only uint8 array over the buffer (no copy): packed RGB formats
        as (height, width, bytes per pixel), the others (NV12's Y and UV, YUYV, UYVY) as
        (rows, bytes per row); rows keep the buffer's stride. Raises ``FrameReleasedError``
        once the frame has ended."""
    @property
    def meta(self) -> Meta: ...
    @property
    def released(self) -> bool: ...
    @property
    def exports(self) -> int:
        """Live exports of the planes: what would be detached if the frame ended now."""
    def release(self) -> None:
        """Gives the frame back now (arrays still alive are detached first)."""
    def __enter__(self) -> Frame: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class Subscriber:
    """A subscription to a named stream (or a socket path, with a ``/``); iterate it for
    frames. Taking the next frame ends the one before."""

    def __init__(
        self,
        name: str,
        policy: Literal["wait", "drop", "latest"] = "wait",
        reconnect: bool = False,
        timeout: float | None = 10.0,
    ) -> None: ...
    def __iter__(self) -> Iterator[Frame]: ...
    def __next__(self) -> Frame: ...
    def next_frame(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or ``None`` at the end of the stream; ``TimeoutError`` if none came
        within ``timeout`` seconds."""
    @property
    def producer(self) -> Producer | None: ...
    @property
    def ended(self) -> str | None: ...
    @property
    def stats(self) -> SubscriberStats: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Subscriber: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class Loan:
    """A buffer lent to fill a frame: write into ``planes``, then ``publish(seq)``."""

    id: int
    @property
    def planes(self) -> Planes:
        """Each plane as a writable uint8 array over the buffer (shapes as ``Frame.planes``)."""
    @property
    def ended(self) -> bool: ...
    def publish(self, seq: int, meta: Meta | None = None) -> None: ...
    def cancel(self) -> None: ...
    def __enter__(self) -> Loan: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class Publisher:
    """The producer end of a named stream, with a pool of frame buffers."""

    def __init__(
        self,
        name: str,
        format: str = "XR24",
        size: tuple[int, int] = (1920, 1080),
        buffers: int = 4,
        alloc: str = "auto",
        pattern: str | None = None,
        when_full: Literal["wait", "drop"] = "wait",
        stride_align: int = 256,
    ) -> None: ...
    def loan(self) -> Loan | None:
        """A free buffer as a ``Loan`` (waits for one under ``when_full="wait"``); ``None``:
        the frame is dropped."""
    def wait_for_consumers(self, n: int = 1, timeout: float | None = None) -> bool: ...
    def dispatch(self, timeout: float = 0.0) -> bool: ...
    def fileno(self) -> int: ...
    @property
    def consumers(self) -> int: ...
    @property
    def socket_path(self) -> str | None: ...
    @property
    def allocator(self) -> str: ...
    @property
    def stats(self) -> PublisherStats: ...
    def finish(self) -> PublisherStats: ...
    def __enter__(self) -> Publisher: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

def generated_planes(
    pattern: str, seq: int, format: str = "XR24", size: tuple[int, int] = (1920, 1080)
) -> Planes:
    """What the generator draws for frame ``seq`` of ``pattern`` (``box``, ``bars``,
    ``solid:RRGGBB``): one packed array per plane, shaped like ``Frame.planes``."""

class Counters(TypedDict):
    buffers: int
    mappings: int
    gpu_imports: int

def counters() -> Counters:
    """Process-wide counts of buffer handles made, CPU mappings made and GPU imports."""
