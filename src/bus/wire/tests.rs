use super::codec::{Writer, CRITICAL};
use super::*;
use crate::meta::{Clock, Colorimetry, Crop, Matrix, Primaries, Range, Timestamp, Transfer};

fn round_trip(m: Message, fds: usize) {
    let mut buf = Vec::new();
    m.encode(&mut buf);
    assert!(buf.len() <= MAX_MESSAGE);
    assert_eq!(Message::decode(&buf, fds).unwrap(), m);
}

fn add_buffer() -> Message {
    Message::AddBuffer {
        id: 3,
        kind: BufferKind::Memfd,
        layout: FrameLayout::linear(Fourcc::NV12, 640, 480, 64).unwrap(),
        sysv_id: None,
    }
}

fn frame(id: u32, flags: u32) -> Message {
    Message::Frame(FrameMsg {
        id,
        seq: 1,
        timestamp_ns: 1,
        flags,
        meta: FrameMeta::default(),
    })
}

fn full_meta() -> FrameMeta {
    let mut m = FrameMeta {
        clock: Clock::Boottime,
        source_seq: Some(77),
        source_time: Some(Timestamp {
            ns: 123_456_789,
            clock: Clock::Monotonic,
        }),
        crop: Some(Crop {
            x: 2,
            y: 4,
            width: 636,
            height: 472,
        }),
        colorimetry: Some(Colorimetry {
            matrix: Matrix::Bt709,
            range: Range::Limited,
            primaries: Primaries::Bt709,
            transfer: Transfer::Bt709,
        }),
        corrupt: true,
        bytes_used: Some(4096),
        ..FrameMeta::default()
    };
    m.set("exposure_us", b"8000").unwrap();
    m.set("gain", &[1, 2, 3]).unwrap();
    m
}

#[test]
fn every_message_round_trips() {
    round_trip(
        Message::Hello(Hello {
            role: Role::Consumer,
            features: FEATURE_FENCES,
            kinds: KindSet::from_bits(0b1010),
            formats: vec![FormatModifier::linear(Fourcc::XR24)],
            name: "verify".into(),
            stream: Some("cam0".into()),
            pattern: None,
            policy: Some(Policy::Latest),
        }),
        0,
    );
    round_trip(
        Message::Hello(Hello {
            role: Role::Producer,
            name: "generator".into(),
            pattern: Some("bars".into()),
            ..Hello::default()
        }),
        0,
    );
    round_trip(
        Message::Hello(Hello {
            role: Role::Monitor,
            ..Hello::default()
        }),
        0,
    );
    round_trip(add_buffer(), 1);
    round_trip(
        Message::AddBuffer {
            id: 0,
            kind: BufferKind::SysvShm,
            layout: FrameLayout::linear(Fourcc::XR24, 64, 64, 1).unwrap(),
            sysv_id: Some(1234),
        },
        0,
    );
    round_trip(Message::RemoveBuffer { id: 63 }, 0);
    round_trip(frame(1, 0), 0);
    round_trip(frame(1, FLAG_FENCE), 1);
    round_trip(
        Message::Frame(FrameMsg {
            id: 2,
            seq: u64::MAX,
            timestamp_ns: 42,
            flags: 0,
            meta: full_meta(),
        }),
        0,
    );
    round_trip(
        Message::Release {
            id: 2,
            seq: 9,
            flags: FLAG_FENCE,
        },
        1,
    );
    round_trip(Message::EndOfStream { last_seq: 299 }, 0);
    round_trip(
        Message::Bye {
            code: ByeCode::Evicted,
            reason: "stalled ✓".into(),
        },
        0,
    );
    round_trip(
        Message::Bye {
            code: ByeCode::Other(77),
            reason: String::new(),
        },
        0,
    );
    round_trip(
        Message::Status(StreamStatus {
            stream: "cam0".into(),
            pid: 42,
            source: "generator:box".into(),
            format: "XR24".into(),
            width: 640,
            height: 480,
            memory: "memfd".into(),
            buffers: 4,
            frames: 1000,
            fps_milli: 29_970,
            consumer_count: 2,
            consumers: vec![
                ConsumerStatus {
                    pid: 43,
                    uid: 1000,
                    name: "verify".into(),
                    policy: Policy::Wait,
                    delivered: 999,
                    dropped: 0,
                    held: 1,
                },
                ConsumerStatus {
                    pid: 44,
                    uid: 1000,
                    name: "null".into(),
                    policy: Policy::Drop,
                    delivered: 500,
                    dropped: 499,
                    held: 2,
                },
            ],
        }),
        0,
    );
}

#[test]
fn frame_messages_are_small() {
    let mut buf = Vec::new();
    frame(1, 0).encode(&mut buf);
    assert_eq!(buf.len(), HEADER_LEN + 24, "no metadata: no field");
    let mut release = Vec::new();
    Message::Release {
        id: 1,
        seq: 1,
        flags: 0,
    }
    .encode(&mut release);
    assert_eq!(release.len(), HEADER_LEN + 16);
}

#[test]
fn the_hot_path_encoders_write_the_same_bytes() {
    // A frame encoded by reference, with the fence flag added for one consumer.
    let f = FrameMsg {
        id: 5,
        seq: 99,
        timestamp_ns: 1234,
        flags: 0,
        meta: full_meta(),
    };
    let mut by_ref = Vec::new();
    f.encode_with_flags(FLAG_FENCE, &mut by_ref);
    let mut fenced = f.clone();
    fenced.flags = FLAG_FENCE;
    assert_eq!(by_ref, encoded(&Message::Frame(fenced)));
    f.encode_with_flags(0, &mut by_ref);
    assert_eq!(by_ref, encoded(&Message::Frame(f)));
    // A release on the stack.
    for flags in [0, FLAG_FENCE] {
        let m = Message::Release {
            id: 63,
            seq: u64::MAX - 1,
            flags,
        };
        assert_eq!(
            encode_release(63, u64::MAX - 1, flags).as_slice(),
            encoded(&m)
        );
    }
}

fn encoded(m: &Message) -> Vec<u8> {
    let mut b = Vec::new();
    m.encode(&mut b);
    b
}

/// A frame message with `extra` appended as tagged fields.
fn frame_with_fields(extra: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut b = encoded(&frame(1, 0));
    extra(&mut Writer(&mut b));
    let len = (b.len() - HEADER_LEN) as u32;
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b
}

#[test]
fn unknown_fields_are_skipped_unless_critical() {
    // A newer peer's optional field: skipped, the frame decodes.
    let b = frame_with_fields(|w| w.field(0x0777, |w| w.u64(5)));
    assert_eq!(Message::decode(&b, 0).unwrap(), frame(1, 0));
    // A newer peer's critical field: refused, naming the tag.
    let b = frame_with_fields(|w| w.field(CRITICAL | 0x0777, |w| w.u8(1)));
    assert_eq!(
        Message::decode(&b, 0),
        Err(WireError::Field {
            what: "Frame",
            field: "unknown critical field",
            value: (CRITICAL | 0x0777) as u64
        })
    );
    // A known field with a value of the wrong size.
    let b = frame_with_fields(|w| w.field(2, |w| w.u32(5)));
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Truncated { what: "Frame", .. })
    ));
    let b = frame_with_fields(|w| w.field(1, |w| w.u16(1)));
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Trailing { what: "Frame", .. })
    ));
    // A field whose length runs past the datagram.
    let mut b = frame_with_fields(|w| w.field(2, |w| w.u64(5)));
    let n = b.len();
    b[n - 10..n - 8].copy_from_slice(&200u16.to_le_bytes());
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn bad_metadata_is_rejected() {
    let b = frame_with_fields(|w| w.field(1, |w| w.u8(9)));
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Field { field: "clock", .. })
    ));
    let b = frame_with_fields(|w| {
        w.field(4, |w| {
            for v in [0, 0, 0, 5] {
                w.u32(v)
            }
        })
    });
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Field { field: "crop", .. })
    ));
    let kv = |w: &mut Writer<'_>| {
        w.field(8, |w| {
            w.u8(1);
            w.bytes(b"k");
            w.bytes(b"v");
        })
    };
    let b = frame_with_fields(|w| {
        kv(w);
        kv(w);
    });
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Meta(crate::meta::MetaError::BadKey(_)))
    ));
    let b = frame_with_fields(|w| {
        w.field(8, |w| {
            w.u8(3);
            w.bytes(b"a b");
        })
    });
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Meta(crate::meta::MetaError::BadKey(_)))
    ));
}

#[test]
fn truncated_is_rejected() {
    let b = encoded(&add_buffer());
    assert!(matches!(
        Message::decode(&b[..5], 1),
        Err(WireError::Truncated { what: "header", .. })
    ));
    // Cut the payload but fix up the length so only the content check can catch it.
    let mut cut = b[..b.len() - 4].to_vec();
    let len = (cut.len() - HEADER_LEN) as u32;
    cut[8..12].copy_from_slice(&len.to_le_bytes());
    assert!(matches!(
        Message::decode(&cut, 1),
        Err(WireError::Truncated {
            what: "AddBuffer",
            ..
        })
    ));
}

#[test]
fn bad_header_fields_are_rejected() {
    let good = encoded(&Message::RemoveBuffer { id: 1 });
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::BadMagic(_))
    ));
    let mut b = good.clone();
    b[4..6].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(Message::decode(&b, 0), Err(WireError::Version(1)));
    assert_eq!(Message::peek_version(&b), Some(1));
    let mut b = good.clone();
    b[6..8].copy_from_slice(&99u16.to_le_bytes());
    assert_eq!(Message::decode(&b, 0), Err(WireError::UnknownType(99)));
    let mut b = good.clone();
    b[8..12].copy_from_slice(&100u32.to_le_bytes());
    assert_eq!(
        Message::decode(&b, 0),
        Err(WireError::Length {
            declared: 100,
            actual: 4
        })
    );
    let mut b = good.clone();
    b.extend_from_slice(&[0, 0]);
    b[8..12].copy_from_slice(&6u32.to_le_bytes());
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Trailing { extra: 2, .. })
    ));
}

#[test]
fn a_bye_for_an_older_version_has_that_version_and_the_same_layout() {
    let mut v1 = Vec::new();
    Message::encode_bye_for_version(1, ByeCode::Version, "speak 2", &mut v1);
    assert_eq!(Message::peek_version(&v1), Some(1));
    // Re-stamped with our version, the same bytes decode as our Bye: the layout is shared.
    let mut ours = v1.clone();
    ours[4..6].copy_from_slice(&VERSION.to_le_bytes());
    assert_eq!(
        Message::decode(&ours, 0).unwrap(),
        Message::Bye {
            code: ByeCode::Version,
            reason: "speak 2".into()
        }
    );
}

#[test]
fn out_of_range_ids_flags_roles_and_policies_are_rejected() {
    let b = encoded(&frame(MAX_BUFFERS, 0));
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Field { field: "id", .. })
    ));
    let b = encoded(&Message::Release {
        id: 1,
        seq: 1,
        flags: 0x80,
    });
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Field { field: "flags", .. })
    ));
    let mut b = encoded(&Message::Hello(Hello::default()));
    b[HEADER_LEN] = 9;
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Field { field: "role", .. })
    ));
    let mut b = encoded(&Message::Hello(Hello {
        policy: Some(Policy::Drop),
        ..Hello::default()
    }));
    let n = b.len();
    b[n - 1] = 9;
    assert!(matches!(
        Message::decode(&b, 0),
        Err(WireError::Field {
            field: "policy",
            ..
        })
    ));
}

#[test]
fn plane_outside_buffer_is_rejected() {
    let mut m = add_buffer();
    if let Message::AddBuffer { layout, .. } = &mut m {
        let size = layout.size();
        layout.planes_mut_unchecked()[1].offset = size - 10;
    }
    let b = encoded(&m);
    assert!(matches!(
        Message::decode(&b, 1),
        Err(WireError::Layout { id: 3, .. })
    ));
}

#[test]
fn unknown_kind_and_bad_plane_count_are_rejected() {
    let mut b = encoded(&add_buffer());
    b[HEADER_LEN + 4] = 200;
    assert!(matches!(
        Message::decode(&b, 1),
        Err(WireError::Field { field: "kind", .. })
    ));
    let mut b = encoded(&add_buffer());
    b[HEADER_LEN + 5] = 9;
    assert!(matches!(
        Message::decode(&b, 1),
        Err(WireError::Field {
            field: "planes",
            ..
        })
    ));
}

#[test]
fn fd_count_mismatch_is_rejected() {
    let b = encoded(&add_buffer());
    assert_eq!(
        Message::decode(&b, 0),
        Err(WireError::FdCount {
            what: "AddBuffer",
            want: 1,
            got: 0
        })
    );
    assert_eq!(
        Message::decode(&b, 2),
        Err(WireError::FdCount {
            what: "AddBuffer",
            want: 1,
            got: 2
        })
    );
    assert!(matches!(
        Message::decode(&encoded(&frame(1, FLAG_FENCE)), 0),
        Err(WireError::FdCount { .. })
    ));
    assert!(matches!(
        Message::decode(&encoded(&frame(1, 0)), 1),
        Err(WireError::FdCount { .. })
    ));
}

#[test]
fn sysv_id_must_match_kind() {
    let mut m = add_buffer();
    if let Message::AddBuffer { sysv_id, .. } = &mut m {
        *sysv_id = Some(5);
    }
    assert!(matches!(
        Message::decode(&encoded(&m), 1),
        Err(WireError::Field {
            field: "sysv_id",
            ..
        })
    ));
}

#[test]
fn text_is_bounded_and_checked() {
    let long = "x".repeat(1000);
    let b = encoded(&Message::Bye {
        code: ByeCode::Done,
        reason: long,
    });
    match Message::decode(&b, 0).unwrap() {
        Message::Bye { reason, .. } => assert_eq!(reason.len(), MAX_TEXT),
        m => panic!("{m:?}"),
    }
    let mut b = encoded(&Message::Bye {
        code: ByeCode::Done,
        reason: "ab".into(),
    });
    let n = b.len();
    b[n - 1] = 0xff;
    assert_eq!(Message::decode(&b, 0), Err(WireError::Text("Bye")));
}

#[test]
fn status_lists_are_bounded() {
    let s = StreamStatus {
        consumer_count: 1000,
        consumers: vec![ConsumerStatus::default(); 1000],
        ..StreamStatus::default()
    };
    let b = encoded(&Message::Status(s));
    assert!(b.len() <= MAX_MESSAGE);
    match Message::decode(&b, 0).unwrap() {
        Message::Status(s) => {
            assert_eq!(s.consumer_count, 1000);
            assert_eq!(s.consumers.len(), status::MAX_LISTED_CONSUMERS);
        }
        m => panic!("{m:?}"),
    }
}
