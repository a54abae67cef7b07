//! The seed corpus (`fuzz/corpus/<target>/`), written from real messages so the fuzzer starts
//! from sessions that get somewhere: every message type for the decoder, and for each session
//! target a clean session and each way a peer can break one. `fuzz/gen-seeds` rewrites the
//! files; a test checks the committed corpus still matches this list and that every seed runs
//! through its harness without a finding.

use frameshare::buffer::{BufferKind, KindSet};
use frameshare::bus::wire::{
    self, ByeCode, ConsumerStatus, FrameMsg, Hello, Message, Policy, Role, StreamStatus,
};
use frameshare::format::{FormatModifier, Fourcc, FrameLayout, Modifier, PlaneLayout};
use frameshare::meta::{
    Clock, Colorimetry, Crop, FrameMeta, Matrix, Primaries, Range, Timestamp, Transfer,
};

use crate::fds::{FdKind, FdSpec, FIT};
use crate::script::ScriptWriter;

/// One seed: target, file name, contents.
pub type Seed = (&'static str, String, Vec<u8>);

fn enc(m: &Message) -> Vec<u8> {
    let mut b = Vec::new();
    m.encode(&mut b);
    b
}

fn producer_hello() -> Message {
    Message::Hello(Hello {
        role: Role::Producer,
        features: wire::FEATURE_FENCES,
        kinds: [BufferKind::Memfd].into_iter().collect(),
        formats: Vec::new(),
        name: "generator".into(),
        stream: Some("cam0".into()),
        pattern: Some("box".into()),
        policy: None,
    })
}

fn consumer_hello(policy: Policy, features: u32) -> Message {
    Message::Hello(Hello {
        role: Role::Consumer,
        features,
        kinds: KindSet::all(),
        formats: Vec::new(),
        name: "verify".into(),
        stream: Some("cam0".into()),
        pattern: None,
        policy: Some(policy),
    })
}

fn xr24() -> FrameLayout {
    FrameLayout::linear(Fourcc::XR24, 16, 8, 64).expect("valid")
}

/// NV12 with its two planes in two memory objects.
fn nv12_two_fds() -> FrameLayout {
    let planes = vec![
        PlaneLayout {
            fd_index: 0,
            offset: 0,
            stride: 64,
        },
        PlaneLayout {
            fd_index: 1,
            offset: 0,
            stride: 64,
        },
    ];
    FrameLayout::new(Fourcc::NV12, Modifier::LINEAR, 32, 16, planes, 64 * 16).expect("valid")
}

fn add_buffer(id: u32, kind: BufferKind, layout: FrameLayout) -> Message {
    Message::AddBuffer {
        id,
        kind,
        layout,
        sysv_id: (kind == BufferKind::SysvShm).then_some(0),
    }
}

fn frame(id: u32, seq: u64, flags: u32, meta: FrameMeta) -> Message {
    Message::Frame(FrameMsg {
        id,
        seq,
        timestamp_ns: 1_000_000 + seq,
        flags,
        meta,
    })
}

fn full_meta() -> FrameMeta {
    let mut m = FrameMeta::default();
    m.clock = Clock::Boottime;
    m.source_seq = Some(7);
    m.source_time = Some(Timestamp {
        ns: 123,
        clock: Clock::Realtime,
    });
    m.crop = Some(Crop {
        x: 1,
        y: 1,
        width: 8,
        height: 4,
    });
    m.colorimetry = Some(Colorimetry {
        matrix: Matrix::Bt709,
        range: Range::Limited,
        primaries: Primaries::Bt709,
        transfer: Transfer::Bt709,
    });
    m.corrupt = true;
    m.bytes_used = Some(512);
    m.set("exposure_us", b"8000").expect("valid key");
    m
}

fn bye(code: ByeCode, reason: &str) -> Message {
    Message::Bye {
        code,
        reason: reason.into(),
    }
}

fn status() -> Message {
    Message::Status(StreamStatus {
        stream: "cam0".into(),
        pid: 42,
        source: "generator:box".into(),
        format: "XR24".into(),
        width: 16,
        height: 8,
        memory: "memfd".into(),
        buffers: 2,
        frames: 10,
        fps_milli: 30_000,
        consumer_count: 1,
        consumers: vec![ConsumerStatus {
            pid: 43,
            uid: 1000,
            name: "verify".into(),
            policy: Policy::Latest,
            delivered: 9,
            dropped: 1,
            held: 1,
        }],
    })
}

/// `bytes` (an encoded message) with one more tagged field appended.
fn with_field(mut bytes: Vec<u8>, tag: u16, value: &[u8]) -> Vec<u8> {
    bytes.extend_from_slice(&tag.to_le_bytes());
    bytes.extend_from_slice(&(value.len() as u16).to_le_bytes());
    bytes.extend_from_slice(value);
    let len = (bytes.len() - wire::HEADER_LEN) as u32;
    bytes[8..12].copy_from_slice(&len.to_le_bytes());
    bytes
}

fn fd(kind: FdKind) -> FdSpec {
    FdSpec { kind, size: FIT }
}

fn wire_seeds() -> Vec<Seed> {
    let mut v: Vec<(&str, Vec<u8>, usize)> = vec![
        ("hello-producer", enc(&producer_hello()), 0),
        ("hello-consumer", enc(&consumer_hello(Policy::Latest, 3)), 0),
        (
            "hello-formats",
            enc(&Message::Hello(Hello {
                role: Role::Consumer,
                formats: vec![
                    FormatModifier::linear(Fourcc::XR24),
                    FormatModifier {
                        fourcc: Fourcc::NV12,
                        modifier: Modifier(0x0100_0000_0000_0001),
                    },
                ],
                ..Hello::default()
            })),
            0,
        ),
        (
            "hello-monitor",
            enc(&Message::Hello(Hello {
                role: Role::Monitor,
                name: "ls".into(),
                ..Hello::default()
            })),
            0,
        ),
        (
            "hello-unknown-field",
            with_field(enc(&producer_hello()), 0x0042, b"later"),
            0,
        ),
        (
            "hello-unknown-critical-field",
            // 0x8000: the critical bit (`wire::codec::CRITICAL`).
            with_field(enc(&producer_hello()), 0x8000 | 0x0042, b"must"),
            0,
        ),
        (
            "add-buffer-memfd",
            enc(&add_buffer(0, BufferKind::Memfd, xr24())),
            1,
        ),
        (
            "add-buffer-two-fds",
            enc(&add_buffer(1, BufferKind::PosixShm, nv12_two_fds())),
            2,
        ),
        (
            "add-buffer-sysv",
            enc(&add_buffer(2, BufferKind::SysvShm, xr24())),
            0,
        ),
        (
            "add-buffer-dma-buf",
            enc(&add_buffer(3, BufferKind::DmaHeap, xr24())),
            1,
        ),
        ("remove-buffer", enc(&Message::RemoveBuffer { id: 1 }), 0),
        ("frame", enc(&frame(0, 1, 0, FrameMeta::default())), 0),
        (
            "frame-fence",
            enc(&frame(3, 9, wire::FLAG_FENCE, FrameMeta::default())),
            1,
        ),
        ("frame-meta", enc(&frame(0, 2, 0, full_meta())), 0),
        (
            "frame-unknown-meta",
            with_field(enc(&frame(0, 3, 0, FrameMeta::default())), 0x0077, &[1, 2]),
            0,
        ),
        (
            "release",
            enc(&Message::Release {
                id: 0,
                seq: 1,
                flags: 0,
            }),
            0,
        ),
        (
            "release-fence",
            enc(&Message::Release {
                id: 2,
                seq: 5,
                flags: wire::FLAG_FENCE,
            }),
            1,
        ),
        (
            "end-of-stream",
            enc(&Message::EndOfStream { last_seq: 99 }),
            0,
        ),
        ("bye-done", enc(&bye(ByeCode::Done, "stream ended")), 0),
        ("bye-evicted", enc(&bye(ByeCode::Evicted, "stalled")), 0),
        ("bye-other", enc(&bye(ByeCode::Other(77), "é")), 0),
        ("status", enc(&status()), 0),
    ];
    let mut v1 = Vec::new();
    Message::encode_bye_for_version(1, ByeCode::Version, "version 1", &mut v1);
    v.push(("bye-version-1", v1, 0));
    v.into_iter()
        .map(|(name, bytes, fds)| {
            let mut input = vec![fds as u8];
            input.extend_from_slice(&bytes);
            ("wire_decode", name.to_owned(), input)
        })
        .collect()
}

// Subscriber opcodes (see `subscriber`).
const S_SEND: u8 = 0;
const S_DROP: u8 = 1;
const S_READ: u8 = 2;
const S_TAKE_FENCE: u8 = 3;
const S_RELEASE: u8 = 4;
const S_WAIT: u8 = 5;
const S_SHRINK: u8 = 6;

fn subscriber_seeds() -> Vec<Seed> {
    let hello = enc(&producer_hello());
    let start = |flags: u8| {
        let mut w = ScriptWriter::new(flags);
        w.datagram(&hello, &[]);
        w
    };
    let memfd = |w: &mut ScriptWriter, id: u32| {
        w.u8(S_SEND).datagram(
            &enc(&add_buffer(id, BufferKind::Memfd, xr24())),
            &[fd(FdKind::MemfdSealed)],
        );
    };
    let send = |w: &mut ScriptWriter, m: &Message| {
        w.u8(S_SEND).datagram(&enc(m), &[]);
    };
    let mut seeds = Vec::new();

    // A clean session: two buffers, frames read and given back, one removed, the end.
    let mut w = start(0);
    memfd(&mut w, 0);
    memfd(&mut w, 1);
    for seq in 0..4u64 {
        send(&mut w, &frame(seq as u32 % 2, seq, 0, FrameMeta::default()));
        w.u8(S_READ).u8(0).u8(S_DROP).u8(0);
    }
    send(&mut w, &Message::RemoveBuffer { id: 1 });
    send(&mut w, &frame(0, 4, 0, full_meta()));
    w.u8(S_READ).u8(0).u8(S_RELEASE).u8(0);
    send(&mut w, &Message::EndOfStream { last_seq: 4 });
    send(&mut w, &bye(ByeCode::Done, "stream ended"));
    seeds.push(("clean", w.out));

    // Frames held across the end of the stream, under each policy.
    for (flags, name) in [
        (1u8, "held-wait-fences"),
        (2, "held-drop"),
        (4, "held-latest"),
    ] {
        let mut w = start(flags);
        memfd(&mut w, 0);
        memfd(&mut w, 1);
        send(&mut w, &frame(0, 1, 0, FrameMeta::default()));
        send(&mut w, &frame(1, 2, 0, FrameMeta::default()));
        w.u8(S_WAIT);
        send(&mut w, &Message::EndOfStream { last_seq: 2 });
        w.u8(S_RELEASE).u8(1).u8(S_READ).u8(0);
        seeds.push((name, w.out));
    }

    // Planes in two memory objects (POSIX shm, which cannot be sealed).
    let mut w = start(0);
    w.u8(S_SEND).datagram(
        &enc(&add_buffer(0, BufferKind::PosixShm, nv12_two_fds())),
        &[fd(FdKind::PosixShm), fd(FdKind::PosixShm)],
    );
    send(&mut w, &frame(0, 1, 0, FrameMeta::default()));
    w.u8(S_READ).u8(0).u8(S_DROP).u8(0);
    seeds.push(("two-fds-posix-shm", w.out));

    // Each kind of fd where a sealed memfd belongs.
    for kind in FdKind::ALL {
        let mut w = start(0);
        w.u8(S_SEND)
            .datagram(&enc(&add_buffer(0, BufferKind::Memfd, xr24())), &[fd(kind)]);
        send(&mut w, &frame(0, 1, 0, FrameMeta::default()));
        w.u8(S_READ).u8(0);
        seeds.push((
            match kind {
                FdKind::MemfdSealed => "fd-memfd-sealed",
                FdKind::MemfdUnsealed => "fd-memfd-unsealed",
                FdKind::Pipe => "fd-pipe",
                FdKind::Socket => "fd-socket",
                FdKind::DevNull => "fd-dev-null",
                FdKind::RegularFile => "fd-regular-file",
                FdKind::PosixShm => "fd-posix-shm",
                FdKind::TruncatedMemfd => "fd-truncated-memfd",
            },
            w.out,
        ));
    }
    // A regular file and a POSIX shm object declared as what they are.
    for (kind, fd_kind, name) in [
        (
            BufferKind::PosixShm,
            FdKind::RegularFile,
            "posix-shm-regular-file",
        ),
        (BufferKind::PosixShm, FdKind::PosixShm, "posix-shm"),
        (BufferKind::DmaHeap, FdKind::MemfdSealed, "dma-heap-memfd"),
        (BufferKind::SysvShm, FdKind::MemfdSealed, "sysv-with-fd"),
    ] {
        let mut w = start(0);
        w.u8(S_SEND)
            .datagram(&enc(&add_buffer(0, kind, xr24())), &[fd(fd_kind)]);
        send(&mut w, &frame(0, 1, 0, FrameMeta::default()));
        w.u8(S_READ).u8(0);
        seeds.push((name, w.out));
    }

    // Memory shrunk under the subscriber's mapping after it was accepted: read as zeros
    // (no SIGBUS), reported when the access ends.
    let mut w = start(0);
    w.u8(S_SEND).datagram(
        &enc(&add_buffer(0, BufferKind::PosixShm, xr24())),
        &[fd(FdKind::PosixShm)],
    );
    send(&mut w, &frame(0, 1, 0, FrameMeta::default()));
    w.u8(S_READ).u8(0).u8(S_SHRINK).u8(0).u8(S_READ).u8(0);
    seeds.push(("shrink-posix-shm", w.out));
    let mut w = start(0);
    w.u8(S_SEND).datagram(
        &enc(&add_buffer(0, BufferKind::PosixShm, xr24())),
        &[fd(FdKind::MemfdUnsealed)],
    );
    send(&mut w, &frame(0, 1, 0, FrameMeta::default()));
    w.u8(S_SHRINK).u8(0).u8(S_READ).u8(0);
    seeds.push(("shrink-unsealed-memfd", w.out));

    // An acquire fence that is not a sync_file.
    let mut w = start(1);
    memfd(&mut w, 0);
    w.u8(S_SEND).datagram(
        &enc(&frame(0, 1, wire::FLAG_FENCE, FrameMeta::default())),
        &[FdSpec {
            kind: FdKind::Pipe,
            size: 0,
        }],
    );
    w.u8(S_TAKE_FENCE).u8(0);
    seeds.push(("fence-pipe", w.out));

    // Protocol errors: each ends the session with a Bye.
    let errors: [(&str, Vec<Message>); 7] = [
        (
            "frame-unknown-buffer",
            vec![frame(5, 1, 0, FrameMeta::default())],
        ),
        (
            "frame-reuses-held-buffer",
            vec![
                frame(0, 1, 0, FrameMeta::default()),
                frame(0, 2, 0, FrameMeta::default()),
            ],
        ),
        (
            "remove-held-buffer",
            vec![
                frame(0, 1, 0, FrameMeta::default()),
                Message::RemoveBuffer { id: 0 },
            ],
        ),
        (
            "remove-unknown-buffer",
            vec![Message::RemoveBuffer { id: 9 }],
        ),
        (
            "release-from-producer",
            vec![Message::Release {
                id: 0,
                seq: 1,
                flags: 0,
            }],
        ),
        ("status-from-producer", vec![status()]),
        ("bye-protocol", vec![bye(ByeCode::Protocol, "bad")]),
    ];
    for (name, msgs) in errors {
        let mut w = start(0);
        memfd(&mut w, 0);
        for m in &msgs {
            send(&mut w, m);
        }
        seeds.push((name, w.out));
    }
    let mut w = start(0);
    memfd(&mut w, 0);
    memfd(&mut w, 0);
    seeds.push(("add-buffer-twice", w.out));

    // More fds than a message carries (MSG_CTRUNC), and bytes that are no message.
    let mut w = start(0);
    w.u8(S_SEND).datagram(
        &enc(&add_buffer(0, BufferKind::Memfd, xr24())),
        &[fd(FdKind::MemfdSealed); 5],
    );
    seeds.push(("too-many-fds", w.out));
    let mut w = start(0);
    w.u8(S_SEND)
        .datagram(b"FSHR\x02\x00garbage", &[fd(FdKind::DevNull)]);
    seeds.push(("garbage", w.out));

    // Hellos that end the session before it starts.
    let mut v1 = Vec::new();
    Message::encode_bye_for_version(1, ByeCode::Done, "hello from version 1", &mut v1);
    let mut w = ScriptWriter::new(0);
    w.datagram(&v1, &[]);
    seeds.push(("hello-version-1", w.out));
    let mut w = ScriptWriter::new(0);
    w.datagram(&enc(&consumer_hello(Policy::Wait, 0)), &[]);
    seeds.push(("hello-wrong-role", w.out));

    seeds
        .into_iter()
        .map(|(name, bytes)| ("subscriber_session", name.to_owned(), bytes))
        .collect()
}

// Publisher opcodes (see `publisher`).
const P_SEND: u8 = 0;
const P_PUBLISH: u8 = 1;
const P_DISPATCH: u8 = 2;
const P_RELEASE: u8 = 3;
const P_SET_BUFFERS: u8 = 4;
const P_TOGGLE_READING: u8 = 5;
const P_READ: u8 = 6;
const P_SHUTDOWN: u8 = 7;
const P_SHRINK: u8 = 8;

fn publisher_seeds() -> Vec<Seed> {
    let start = |flags: u8, policy: Policy, features: u32| {
        let mut w = ScriptWriter::new(flags);
        w.u8(P_SEND)
            .datagram(&enc(&consumer_hello(policy, features)), &[]);
        w
    };
    let no_fence = 0u8;
    let mut seeds = Vec::new();

    // Clean sessions: frames published and given back, under each policy.
    for (policy, name) in [
        (Policy::Wait, "clean-wait"),
        (Policy::Drop, "clean-drop"),
        (Policy::Latest, "clean-latest"),
    ] {
        let mut w = start(2, policy, wire::FEATURE_END_OF_STREAM);
        for i in 0..12u8 {
            w.u8(P_PUBLISH).u8(P_RELEASE).u8(i).u8(no_fence);
        }
        w.u8(P_SEND)
            .datagram(&enc(&bye(ByeCode::Done, "consumer left")), &[]);
        w.u8(P_PUBLISH);
        seeds.push((name, w.out));
    }
    // Two frames out at once.
    let mut w = start(2, Policy::Wait, 0);
    for i in 0..6u8 {
        w.u8(P_PUBLISH)
            .u8(P_PUBLISH)
            .u8(P_RELEASE)
            .u8(2 * i)
            .u8(no_fence);
        w.u8(P_RELEASE).u8(2 * i + 1).u8(no_fence);
    }
    seeds.push(("two-held", w.out));

    // A format change while frames are held, then given back.
    let mut w = start(1, Policy::Wait, 0);
    w.u8(P_PUBLISH).u8(P_PUBLISH);
    w.u8(P_SET_BUFFERS).u8(1).u8(1);
    w.u8(P_PUBLISH).u8(P_RELEASE).u8(0).u8(no_fence);
    w.u8(P_RELEASE).u8(1).u8(no_fence).u8(P_PUBLISH);
    w.u8(P_SET_BUFFERS).u8(0).u8(2).u8(P_DISPATCH);
    seeds.push(("format-change", w.out));

    // A consumer that stops reading, then reads again; one that leaves without a word.
    let mut w = start(4, Policy::Wait, 0);
    w.u8(P_TOGGLE_READING);
    for _ in 0..8 {
        w.u8(P_PUBLISH).u8(P_SET_BUFFERS).u8(1).u8(0);
    }
    w.u8(P_TOGGLE_READING).u8(P_READ).u8(P_PUBLISH);
    seeds.push(("stops-reading", w.out));
    let mut w = start(0, Policy::Latest, 0);
    w.u8(P_PUBLISH).u8(P_SHUTDOWN).u8(P_PUBLISH).u8(P_PUBLISH);
    seeds.push(("hangs-up", w.out));

    // A consumer that tries to shrink the buffers it was given (sealed memfd, read-only POSIX
    // shm), then goes on.
    for (flags, name) in [(2u8, "shrink-memfd"), (2 | 8, "shrink-posix-shm")] {
        let mut w = start(flags, Policy::Wait, 0);
        w.u8(P_PUBLISH).u8(P_SHRINK).u8(0).u8(P_SHRINK).u8(1);
        w.u8(P_RELEASE).u8(0).u8(no_fence).u8(P_PUBLISH);
        seeds.push((name, w.out));
    }

    // Releases that are wrong: twice, for another frame, never held, with a bad fence.
    let mut w = start(0, Policy::Wait, 0);
    w.u8(P_PUBLISH).u8(P_RELEASE).u8(0).u8(no_fence);
    w.u8(P_RELEASE).u8(0).u8(no_fence).u8(P_PUBLISH);
    seeds.push(("double-release", w.out));
    let mut w = start(0, Policy::Wait, 0);
    w.u8(P_RELEASE).u8(3).u8(no_fence).u8(P_PUBLISH);
    seeds.push(("release-not-held", w.out));
    let mut w = start(0, Policy::Wait, 0);
    w.u8(P_PUBLISH).u8(P_SEND).datagram(
        &enc(&Message::Release {
            id: 0,
            seq: 77,
            flags: 0,
        }),
        &[],
    );
    seeds.push(("release-wrong-frame", w.out));
    for (kind, name) in [
        (FdKind::Pipe, "release-fence-pipe"),
        (FdKind::MemfdSealed, "release-fence-memfd"),
        (FdKind::DevNull, "release-fence-dev-null"),
    ] {
        let mut w = start(0, Policy::Wait, wire::FEATURE_FENCES);
        w.u8(P_PUBLISH)
            .u8(P_RELEASE)
            .u8(0)
            .u8(0x80 | kind as u8)
            .u8(P_PUBLISH);
        seeds.push((name, w.out));
    }

    // Hellos the publisher refuses, or answers and ends.
    let refusals: [(&str, Message); 4] = [
        (
            "hello-no-memfd",
            Message::Hello(Hello {
                role: Role::Consumer,
                kinds: KindSet::dma_bufs(),
                ..Hello::default()
            }),
        ),
        (
            "hello-other-format",
            Message::Hello(Hello {
                role: Role::Consumer,
                kinds: KindSet::all(),
                formats: vec![FormatModifier::linear(Fourcc::NV12)],
                ..Hello::default()
            }),
        ),
        (
            "hello-monitor",
            Message::Hello(Hello {
                role: Role::Monitor,
                name: "top".into(),
                ..Hello::default()
            }),
        ),
        ("hello-producer", producer_hello()),
    ];
    for (name, hello) in refusals {
        let mut w = ScriptWriter::new(0);
        w.u8(P_SEND).datagram(&enc(&hello), &[]).u8(P_PUBLISH);
        seeds.push((name, w.out));
    }
    let mut v1 = Vec::new();
    Message::encode_bye_for_version(1, ByeCode::Done, "hello from version 1", &mut v1);
    let mut w = ScriptWriter::new(0);
    w.u8(P_SEND).datagram(&v1, &[]).u8(P_PUBLISH);
    seeds.push(("hello-version-1", w.out));

    // Messages only a producer sends, with and without fds; more fds than fit.
    let mut w = start(0, Policy::Wait, 0);
    w.u8(P_PUBLISH).u8(P_SEND).datagram(
        &enc(&add_buffer(0, BufferKind::Memfd, xr24())),
        &[fd(FdKind::MemfdSealed)],
    );
    seeds.push(("add-buffer-from-consumer", w.out));
    let mut w = start(0, Policy::Wait, 0);
    w.u8(P_SEND)
        .datagram(&enc(&frame(0, 1, 0, FrameMeta::default())), &[]);
    seeds.push(("frame-from-consumer", w.out));
    let mut w = start(0, Policy::Wait, 0);
    w.u8(P_PUBLISH).u8(P_SEND).datagram(
        &enc(&Message::Release {
            id: 0,
            seq: 0,
            flags: 0,
        }),
        &[fd(FdKind::Socket); 5],
    );
    seeds.push(("too-many-fds", w.out));
    // No Hello at all (an untrusted peer has a deadline).
    let mut w = ScriptWriter::new(0);
    w.u8(P_PUBLISH).u8(P_DISPATCH).u8(P_PUBLISH);
    seeds.push(("no-hello", w.out));

    seeds
        .into_iter()
        .map(|(name, bytes)| ("publisher_session", name.to_owned(), bytes))
        .collect()
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut v = wire_seeds();
    v.extend(subscriber_seeds());
    v.extend(publisher_seeds());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        all()
            .into_iter()
            .find(|(t, n, _)| *t == target && n == name)
            .unwrap_or_else(|| panic!("no seed {target}/{name}"))
            .2
    }

    /// `fuzz/gen-seeds` runs this (with `FRAMESHARE_WRITE_SEEDS=1`) to rewrite the corpus.
    #[test]
    fn committed_corpus_matches_the_seeds() {
        let _serial = crate::leaks::TEST_SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let write = std::env::var_os("FRAMESHARE_WRITE_SEEDS").is_some();
        for (target, name, bytes) in all() {
            let path = corpus().join(target).join(&name);
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let committed = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e} (run fuzz/gen-seeds)", path.display()));
                assert_eq!(
                    committed,
                    bytes,
                    "{} is stale (run fuzz/gen-seeds)",
                    path.display()
                );
            }
        }
    }

    /// Every file in the corpus (seeds and reproducers of fixed findings) runs clean.
    #[test]
    fn every_corpus_file_runs_through_its_harness() {
        let _serial = crate::leaks::TEST_SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for target in ["wire_decode", "subscriber_session", "publisher_session"] {
            let dir = corpus().join(target);
            let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e} (run fuzz/gen-seeds)", dir.display()))
                .map(|e| {
                    let path = e.unwrap().path();
                    let bytes = std::fs::read(&path).unwrap();
                    (path, bytes)
                })
                .collect();
            inputs.sort();
            assert!(
                inputs.len() >= 20,
                "{}: only {} files",
                dir.display(),
                inputs.len()
            );
            for (path, bytes) in inputs {
                eprintln!("{}", path.display());
                match target {
                    "wire_decode" => drop(crate::wire::run(&bytes)),
                    "subscriber_session" => drop(crate::subscriber::run(&bytes)),
                    _ => drop(crate::publisher::run(&bytes)),
                }
            }
        }
    }

    #[test]
    fn every_message_seed_decodes_except_the_broken_ones() {
        for (_, name, bytes) in all().into_iter().filter(|(t, _, _)| *t == "wire_decode") {
            let broken = ["hello-unknown-critical-field", "bye-version-1"].contains(&name.as_str());
            assert_eq!(crate::wire::run(&bytes).is_some(), !broken, "{name}");
        }
    }

    #[test]
    fn subscriber_seeds_reach_what_they_are_for() {
        let _serial = crate::leaks::TEST_SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let run = |name| crate::subscriber::run(&seed("subscriber_session", name));
        let clean = run("clean");
        assert_eq!(
            (clean.buffers, clean.frames, clean.reads),
            (2, 5, 5),
            "{clean:?}"
        );
        assert!(clean.ended, "the Bye ends the session");
        let two = run("two-fds-posix-shm");
        assert_eq!((two.buffers, two.frames, two.reads), (1, 1, 1), "{two:?}");
        for name in ["held-wait-fences", "held-drop", "held-latest"] {
            let held = run(name);
            assert_eq!((held.frames, held.ended), (2, false), "{name}: {held:?}");
        }
        // Memory that is not what it claims ends the session before any frame.
        for name in [
            "fd-memfd-unsealed",
            "fd-pipe",
            "fd-socket",
            "fd-dev-null",
            "fd-regular-file",
            "fd-posix-shm",
            "fd-truncated-memfd",
            "dma-heap-memfd",
            "sysv-with-fd",
            "too-many-fds",
            "garbage",
        ] {
            let o = run(name);
            assert_eq!(
                (o.buffers, o.frames, o.ended),
                (0, 0, true),
                "{name}: {o:?}"
            );
        }
        for name in ["shrink-posix-shm", "shrink-unsealed-memfd"] {
            let o = run(name);
            assert_eq!(
                (o.buffers, o.truncated, o.ended),
                (1, 1, true),
                "{name}: {o:?}"
            );
        }
        assert_eq!(run("fd-memfd-sealed").reads, 1);
        assert_eq!(run("posix-shm").reads, 1);
        for name in [
            "frame-unknown-buffer",
            "frame-reuses-held-buffer",
            "remove-held-buffer",
            "remove-unknown-buffer",
            "release-from-producer",
            "status-from-producer",
            "bye-protocol",
            "add-buffer-twice",
            "fence-pipe",
            "hello-version-1",
            "hello-wrong-role",
        ] {
            assert!(run(name).ended, "{name}");
        }
    }

    #[test]
    fn publisher_seeds_reach_what_they_are_for() {
        let _serial = crate::leaks::TEST_SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let run = |name| crate::publisher::run(&seed("publisher_session", name));
        for name in ["clean-wait", "clean-drop", "clean-latest", "two-held"] {
            let o = run(name);
            assert_eq!(
                (o.frames, o.releases, o.bye),
                (12, 12, false),
                "{name}: {o:?}"
            );
        }
        assert!(run("format-change").frames >= 3);
        for name in ["shrink-memfd", "shrink-posix-shm"] {
            let o = run(name);
            assert_eq!(
                (o.frames, o.shrink_refused, o.bye),
                (2, 2, false),
                "{name}: {o:?}"
            );
        }
        for name in [
            "double-release",
            "release-not-held",
            "release-wrong-frame",
            "release-fence-pipe",
            "release-fence-memfd",
            "release-fence-dev-null",
            "hello-no-memfd",
            "hello-other-format",
            "hello-producer",
            "hello-version-1",
            "add-buffer-from-consumer",
            "frame-from-consumer",
            "too-many-fds",
        ] {
            assert!(run(name).bye, "{name}: no Bye");
        }
    }
}
