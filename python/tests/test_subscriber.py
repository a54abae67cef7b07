"""The Python subscriber against `frameshare produce`: every frame verified against what the
generator draws, planes that are the mapped buffer itself (no copy), and arrays that outlive
their frame detached, never left viewing a buffer the producer reuses."""

import ctypes

import numpy as np
import pytest

import frameshare
from conftest import mapping_of, plane_span

# 630 pixels: every plane's rows are padded to the 256-byte stride alignment, so the arrays
# must honour the stride (they are not contiguous).
SIZE = (630, 480)

SHAPES = {
    "XR24": [(480, 630, 4)],
    "RG24": [(480, 630, 3)],
    "NV12": [(480, 630), (240, 630)],
    "YUYV": [(480, 1260)],
}


def produce(spawn, cli, stream, fmt="XR24", size=SIZE, frames=60, alloc="auto", pattern="box",
            buffers=4):
    return spawn(cli, "produce", "--stream", stream, "--source", f"generator:{pattern}",
                 "--format", fmt, "--size", f"{size[0]}x{size[1]}", "--frames", frames,
                 "--alloc", alloc, "--buffers", buffers, "--json")


def check_frame(frame, pattern, fmt, size):
    """Compares every plane of `frame` with the generator's, byte for byte (the arrays are
    locals: they die when this returns, before the frame ends, so nothing is copied)."""
    planes = frame.planes
    assert [p.shape for p in planes] == SHAPES[fmt]
    expected = frameshare.generated_planes(pattern, frame.seq, fmt, size)
    for i, (got, want) in enumerate(zip(planes, expected)):
        assert got.dtype == np.uint8
        assert not got.flags.writeable, "a received frame is read-only"
        row_bytes = got.shape[1] * (got.shape[2] if got.ndim == 3 else 1)
        assert got.strides[0] % 256 == 0 and got.strides[0] > row_bytes, got.strides
        assert not got.flags.c_contiguous
        np.testing.assert_array_equal(got, want, err_msg=f"frame {frame.seq} plane {i}")
    with pytest.raises(ValueError):
        planes[0].setflags(write=True)
    assert frame.planes is planes, "the arrays are made once per frame"


@pytest.mark.parametrize("fmt", ["XR24", "RG24", "NV12", "YUYV"])
def test_every_frame_of_a_produced_stream_is_verified(cli, stream, spawn, fmt):
    frames = 60
    producer = produce(spawn, cli, stream, fmt, frames=frames)
    before = frameshare.counters()
    seqs, buffers = [], set()
    with frameshare.Subscriber(stream, timeout=30) as sub:
        assert sub.producer["pattern"] == "box"
        assert sub.producer["stream"] == stream
        for frame in sub:
            with frame:
                assert (frame.format, frame.width, frame.height) == (fmt, *SIZE)
                check_frame(frame, "box", fmt, SIZE)
                meta = frame.meta
                assert meta["clock"] == "monotonic" and meta["corrupt"] is False
                assert frame.timestamp_ns <= frame.received_ns
            assert frame.released
            seqs.append(frame.seq)
            buffers.add(frame.buffer_id)
        assert sub.ended is not None, "the stream said it ended"
        stats = sub.stats
    report = producer.report()
    assert report["frames_produced"] == frames
    assert seqs == list(range(frames)), "policy wait: every frame, in order"
    assert stats == {"frames": frames, "frames_detached": 0, "bytes_copied": 0}
    made = {k: v - before[k] for k, v in frameshare.counters().items()}
    # Each buffer imported and mapped once, however many frames went through it.
    assert len(buffers) == 4
    assert made["buffers"] == len(buffers) and made["mappings"] == len(buffers), made


@pytest.mark.parametrize("alloc", ["auto", "memfd", "posix-shm", "sysv-shm"])
def test_a_plane_array_is_the_mapped_buffer_itself(cli, stream, spawn, alloc):
    """The array's data address lies in this process's shared mapping of the producer's
    buffer (per /proc/self/maps), the same address frame after frame for the same buffer, and
    the bytes there change when the producer writes the next frame into that buffer."""
    size, frames = (640, 480), 24
    produce(spawn, cli, stream, size=size, frames=frames, alloc=alloc)
    seen = {}  # buffer id -> (seq, address, row 0 bytes) of the last frame in it
    reuses = 0
    with frameshare.Subscriber(stream, timeout=30) as sub:
        for frame in sub:
            with frame:
                plane = frame.planes[0]
                address = plane.__array_interface__["data"][0]
                m = mapping_of(address)
                assert "s" in m["perms"], f"{alloc}: a shared mapping, not a private copy: {m}"
                assert m["path"], f"{alloc}: backed by the buffer's memory object: {m}"
                assert m["start"] <= address and address + plane_span(plane) <= m["end"]
                row = plane[0].tobytes()
                expected_row = frameshare.generated_planes("box", frame.seq, "XR24", size)[0][0]
                assert row == expected_row.tobytes()
                assert ctypes.string_at(address, len(row)) == row
                del plane
                if frame.buffer_id in seen:
                    reuses += 1
                    last_seq, last_address, last_row = seen[frame.buffer_id]
                    assert address == last_address, "the same mapping, not a new copy"
                    # The producer wrote the next frame into the same memory: the bytes at the
                    # address changed from frame last_seq's to this one's (the stamp rows).
                    assert last_row != row, (last_seq, frame.seq)
                seen[frame.buffer_id] = (frame.seq, address, row)
        assert sub.stats["bytes_copied"] == 0
    assert reuses == frames - len(seen) > 0


def test_an_array_that_outlives_its_frame_is_detached(cli, stream, spawn):
    """An array still alive when its frame ends keeps that frame's pixels, at the same address,
    in a private copy: the producer's later writes into the buffer never reach it."""
    size, fmt = (640, 480), "XR24"
    produce(spawn, cli, stream, size=size, frames=24, buffers=3)
    with frameshare.Subscriber(stream, timeout=30) as sub:
        frame = sub.next_frame(timeout=30)
        seq, buffer_id = frame.seq, frame.buffer_id
        kept = frame.planes[0]
        kept_view = kept[100:200, 50:60]  # a view of the view: the same export
        address = kept.__array_interface__["data"][0]
        assert "s" in mapping_of(address)["perms"]
        assert frame.exports == 1
        with pytest.warns(frameshare.DetachedArrayWarning, match=f"frame {seq}"):
            frame.release()
        assert frame.released
        with pytest.raises(frameshare.FrameReleasedError):
            frame.planes
        # Same address, now an anonymous private mapping (the copy), not the shared buffer.
        assert kept.__array_interface__["data"][0] == address
        m = mapping_of(address)
        assert "p" in m["perms"] and not m["path"], m
        expected = frameshare.generated_planes("box", seq, fmt, size)[0]
        np.testing.assert_array_equal(kept, expected)
        stats = sub.stats
        assert stats["frames_detached"] == 1
        assert stats["bytes_copied"] >= kept.nbytes

        reused_by = None
        for frame in sub:
            with frame:
                check_frame_content(frame, fmt, size)
                if frame.buffer_id == buffer_id and reused_by is None:
                    reused_by = frame.seq
                    assert frame.planes[0].__array_interface__["data"][0] != address
        assert reused_by is not None and reused_by > seq, "the producer reused the buffer"
        # Still the frame it was made from, though the producer rewrote its buffer since.
        np.testing.assert_array_equal(kept, expected)
        np.testing.assert_array_equal(kept_view, expected[100:200, 50:60])
        assert sub.stats["frames_detached"] == 1, "the frames whose arrays died: no copy"


def check_frame_content(frame, fmt, size):
    expected = frameshare.generated_planes("box", frame.seq, fmt, size)
    for got, want in zip(frame.planes, expected):
        np.testing.assert_array_equal(got, want)


def test_an_ended_frame_exports_nothing(cli, stream, spawn):
    """The object the arrays are views of refuses new views once the frame has ended (when no
    array was alive to detach, the buffer went back to the producer as it was)."""
    produce(spawn, cli, stream, size=(64, 48), frames=4)
    with frameshare.Subscriber(stream, timeout=30) as sub:
        frame = sub.next_frame(timeout=30)
        plane_buffer = frame.planes[0].base.obj  # what the frame's arrays are views of
        assert frame.exports == 1  # the frame's own cached arrays
        frame.release()
        assert sub.stats["frames_detached"] == 0
        with pytest.raises(frameshare.FrameReleasedError):
            memoryview(plane_buffer)
        sub.close()


def test_taking_the_next_frame_ends_the_one_before(cli, stream, spawn):
    produce(spawn, cli, stream, size=(64, 48), frames=6)
    with frameshare.Subscriber(stream, timeout=30) as sub:
        first = sub.next_frame(timeout=30)
        second = sub.next_frame(timeout=30)
        assert first.released and not second.released
        assert second.seq == first.seq + 1
        with pytest.raises(frameshare.FrameReleasedError):
            first.planes
        assert sub.stats["frames_detached"] == 0


def test_a_missing_stream_fails_after_the_timeout():
    with pytest.raises(frameshare.Error, match="no producer"):
        frameshare.Subscriber("py-nobody-publishes-this", timeout=0.3)


def test_a_subscriber_that_goes_away_detaches_the_arrays_of_its_frame(cli, stream, spawn):
    """Dropping the subscriber gives its frame back (the producer may reuse the buffer), so
    an array of that frame still alive is detached first."""
    size = (64, 48)
    produce(spawn, cli, stream, size=size, frames=8)
    sub = frameshare.Subscriber(stream, timeout=30)
    frame = sub.next_frame(timeout=30)
    kept = frame.planes[0]
    expected = frameshare.generated_planes("box", frame.seq, "XR24", size)[0]
    with pytest.warns(frameshare.DetachedArrayWarning):
        del sub
    assert frame.released
    assert not mapping_of(kept.__array_interface__["data"][0])["path"]
    np.testing.assert_array_equal(kept, expected)


def test_plane_exports_are_strided_read_only_views(cli, stream, spawn):
    """What the buffer protocol hands out: the stride kept, read-only, and no contiguous or
    writable view of a padded plane."""
    produce(spawn, cli, stream, fmt="NV12", frames=2)
    with frameshare.Subscriber(stream, timeout=30) as sub:
        with sub.next_frame(timeout=30) as frame:
            plane_buffer = frame.planes[1].base.obj
            mv = memoryview(plane_buffer)
            assert mv.readonly and mv.format == "B" and mv.itemsize == 1
            assert mv.shape == (240, 630) and mv.strides == (768, 1)
            assert not mv.c_contiguous and mv.nbytes == 240 * 630
            with pytest.raises(TypeError, match="not writable"):
                ctypes.c_char.from_buffer(plane_buffer)  # asks for a writable view
            assert frame.exports == 3  # the frame's two arrays and this memoryview
            mv.release()
            assert frame.exports == 2
        assert sub.stats["frames_detached"] == 0
