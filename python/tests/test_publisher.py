"""The Python publisher: frames written through NumPy arrays over the loaned buffers, checked
by `frameshare consume --sink verify` (which recomputes every frame from the pattern the
publisher announces), and by a Python subscriber for metadata."""

import threading

import numpy as np
import pytest

import frameshare
from conftest import mapping_of

SIZE = (630, 480)


def consume(spawn, cli, stream, sink="verify"):
    return spawn(cli, "consume", "--stream", stream, "--sink", sink, "--json", "--wait", "30")


def fill(loan, pattern, seq, fmt, size):
    """Writes the generator's frame `seq` into the loan through its arrays (locals: they die
    here, before the loan ends, so nothing is copied)."""
    planes = loan.planes
    for plane, want in zip(planes, frameshare.generated_planes(pattern, seq, fmt, size)):
        assert plane.flags.writeable and plane.shape == want.shape
        plane[...] = want


@pytest.mark.parametrize("fmt", ["XR24", "NV12", "YUYV"])
def test_frames_written_in_python_are_verified_by_the_cli(cli, stream, spawn, fmt):
    frames = 60
    with frameshare.Publisher(stream, format=fmt, size=SIZE, buffers=4, alloc="auto",
                              pattern="box") as pub:
        consumer = consume(spawn, cli, stream)
        assert pub.wait_for_consumers(1, timeout=30)
        for seq in range(frames):
            with pub.loan() as loan:
                fill(loan, "box", seq, fmt, SIZE)
                loan.publish(seq)
            assert loan.ended
        stats = pub.finish()
    report = consumer.report()
    assert stats["published"] == frames and stats["dropped"] == 0
    assert stats["bytes_copied"] == 0 and stats["loans_detached"] == 0
    assert report["frames_delivered"] == frames
    assert report["frames_verified"] == frames, report
    assert report["bytes_copied"] == 0


def test_loan_arrays_are_the_buffer_and_writable():
    with frameshare.Publisher("py-loan-geometry", format="NV12", size=SIZE, buffers=2,
                              alloc="memfd") as pub:
        with pub.loan() as loan:
            y, uv = loan.planes
            assert (y.shape, uv.shape) == ((480, 630), (240, 630))
            assert y.strides == (768, 1) and y.flags.writeable
            m = mapping_of(y.__array_interface__["data"][0])
            assert "s" in m["perms"] and "frameshare-NV12" in m["path"], m
            del y, uv
        assert loan.ended and pub.stats["published"] == 0  # given back unsent
        with pytest.raises(frameshare.FrameReleasedError):
            loan.planes


def test_an_array_kept_past_publish_writes_into_a_private_copy(cli, stream, spawn):
    """Writes through an array that outlived its loan never reach a published frame: the
    array was detached when the loan ended, and the consumer verifies every frame."""
    fmt, size, frames = "XR24", (320, 240), 40
    with frameshare.Publisher(stream, format=fmt, size=size, buffers=3, alloc="auto",
                              pattern="box") as pub:
        consumer = consume(spawn, cli, stream)
        assert pub.wait_for_consumers(1, timeout=30)
        kept = None
        for seq in range(frames):
            loan = pub.loan()
            fill(loan, "box", seq, fmt, size)
            if seq == 5:
                kept = loan.planes[0]
                address = kept.__array_interface__["data"][0]
                with pytest.warns(frameshare.DetachedArrayWarning):
                    loan.publish(seq)
                assert kept.__array_interface__["data"][0] == address
                assert not mapping_of(address)["path"], "now a private anonymous copy"
            else:
                loan.publish(seq)
            if kept is not None:
                kept[...] = 0xAB  # scribbling on a frame that is out: must not be seen
        stats = pub.finish()
    report = consumer.report()
    assert stats["loans_detached"] == 1 and stats["bytes_copied"] > 0
    assert report["frames_verified"] == frames, report
    assert (kept == 0xAB).all()


def test_metadata_and_pixels_reach_a_python_subscriber():
    stream = "py-meta-round-trip"
    meta = {
        "clock": "boottime",
        "source_seq": 77,
        "source_time": {"ns": 123456789, "clock": "realtime"},
        "crop": {"x": 2, "y": 4, "width": 60, "height": 40},
        "colorimetry": {"matrix": "bt709", "range": "full", "primaries": "bt709",
                        "transfer": "srgb"},
        "corrupt": True,
        "bytes_used": 4096,
        "key_values": {"exposure_us": b"8000", "lens": b"wide"},
    }
    got = []
    errors = []
    pub = frameshare.Publisher(stream, format="XR24", size=(64, 48), buffers=2, alloc="memfd")

    def subscribe():
        try:
            with frameshare.Subscriber(stream, timeout=30) as sub:
                for frame in sub:
                    with frame:
                        got.append((frame.seq, frame.meta, frame.planes[0][0, 0].tolist()))
        except Exception as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=subscribe)
    t.start()
    try:
        assert pub.wait_for_consumers(1, timeout=30)
        for seq in range(3):
            with pub.loan() as loan:
                loan.planes[0][...] = np.array([seq, 1, 2, 3], dtype=np.uint8)
                loan.publish(seq, meta=meta if seq == 1 else None)
        pub.finish()
    finally:
        t.join(timeout=30)
    assert not errors, errors
    assert [g[0] for g in got] == [0, 1, 2]
    assert got[1][1] == meta
    assert got[0][1]["crop"] is None and got[0][1]["key_values"] == {}
    assert [g[2] for g in got] == [[0, 1, 2, 3], [1, 1, 2, 3], [2, 1, 2, 3]]


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(frameshare.Error, match="pixel format"):
        frameshare.Publisher("py-bad-format", format="ZZZZ9")
    with pytest.raises(ValueError, match="pattern"):
        frameshare.Publisher("py-bad-pattern", size=(64, 48), alloc="memfd", pattern="plaid")
    with pytest.raises(KeyError, match="unknown metadata key"):
        with frameshare.Publisher("py-bad-meta", size=(64, 48), alloc="memfd") as pub:
            with pub.loan() as loan:
                loan.publish(0, meta={"exposure": 1})


def test_finishing_ends_an_open_loan(cli, stream, spawn):
    """A loan still open when the stream finishes is given back unsent, its live arrays
    detached first."""
    with frameshare.Publisher(stream, format="XR24", size=(64, 48), buffers=2,
                              alloc="memfd") as pub:
        loan = pub.loan()
        kept = loan.planes[0]
        kept[...] = 7
        with pytest.warns(frameshare.DetachedArrayWarning):
            stats = pub.finish()
    assert loan.ended and stats["published"] == 0 and stats["loans_detached"] == 1
    assert not mapping_of(kept.__array_interface__["data"][0])["path"]
    assert (kept == 7).all()
    with pytest.raises(frameshare.FrameReleasedError):
        loan.planes
