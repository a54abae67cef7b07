//! Session-level protocol checks, in one process with two threads: each end must reject a peer
//! that breaks the rules with an error naming what was wrong, and tell the peer why (Bye).

use std::thread;
use std::time::Duration;

use frameshare::alloc::{memfd::MemfdAllocator, Allocator};
use frameshare::bus::consumer::{Consumer, ConsumerCaps, Event};
use frameshare::bus::producer::{PoolPolicy, Producer, ProducerOptions};
use frameshare::bus::socket::{Channel, ChannelError};
use frameshare::bus::wire::{self, Message, Role};
use frameshare::bus::{all_kinds, SessionError};
use frameshare::format::{Fourcc, FrameLayout};

fn caps() -> ConsumerCaps {
    ConsumerCaps {
        features: wire::FEATURE_FENCES,
        kinds: all_kinds(),
        formats: vec![],
        name: "test".into(),
    }
}

fn layout() -> FrameLayout {
    FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap()
}

/// Plays a raw producer: Hello, then whatever `script` sends.
fn raw_producer(chan: &mut Channel) {
    let hello = Message::Hello {
        role: Role::Producer,
        features: 0,
        kinds: all_kinds(),
        formats: vec![],
        name: "generator:bars".into(),
    };
    chan.send(&hello, &[]).unwrap();
    let (msg, _) = chan.recv_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(
        msg,
        Message::Hello {
            role: Role::Consumer,
            ..
        }
    ));
}

/// Plays a raw consumer: reads the producer's Hello, answers with `features` and `name`.
fn raw_consumer(chan: &mut Channel, features: u32, name: &str) {
    let (hello, _) = chan.recv().unwrap();
    assert!(matches!(
        hello,
        Message::Hello {
            role: Role::Producer,
            ..
        }
    ));
    let consumer_hello = Message::Hello {
        role: Role::Consumer,
        features,
        kinds: all_kinds(),
        formats: vec![],
        name: name.into(),
    };
    chan.send(&consumer_hello, &[]).unwrap();
}

/// `err` is the protocol error naming `needle`, and the peer was told so (Bye).
fn expect_rejected(err: &SessionError, chan: &mut Channel, needle: &str) {
    assert!(
        matches!(err, SessionError::Protocol(m) if m.contains(needle)),
        "{err}"
    );
    expect_bye_containing(chan, needle);
}

fn expect_bye_containing(chan: &mut Channel, needle: &str) {
    match chan.recv_timeout(Some(Duration::from_secs(5))).unwrap().0 {
        Message::Bye { code, reason } => {
            assert_eq!(code, wire::BYE_PROTOCOL_ERROR);
            assert!(
                reason.contains(needle),
                "Bye reason {reason:?} should mention {needle:?}"
            );
        }
        m => panic!("expected Bye, got {m:?}"),
    }
}

#[test]
fn frame_for_unknown_buffer_is_rejected() {
    let (mut p, c) = Channel::pair().unwrap();
    let consumer = thread::spawn(move || {
        let mut c = Consumer::accept(c, &caps()).unwrap();
        c.next_event(Some(Duration::from_secs(5)))
    });
    raw_producer(&mut p);
    p.send(
        &Message::Frame {
            id: 9,
            seq: 1,
            timestamp_ns: 0,
            flags: 0,
        },
        &[],
    )
    .unwrap();
    let err = consumer.join().unwrap().unwrap_err();
    expect_rejected(&err, &mut p, "unknown buffer 9");
}

#[test]
fn reusing_a_held_buffer_is_rejected_and_earlier_frames_stay_delivered() {
    let (mut p, c) = Channel::pair().unwrap();
    let consumer = thread::spawn(move || {
        let mut c = Consumer::accept(c, &caps()).unwrap();
        let mut events = Vec::new();
        loop {
            match c.next_event(Some(Duration::from_secs(5))) {
                Ok(e) => events.push(e),
                Err(e) => return (events, e),
            }
        }
    });
    raw_producer(&mut p);
    let buffer = MemfdAllocator::new().allocate(&layout()).unwrap();
    p.send(
        &Message::AddBuffer {
            id: 0,
            kind: buffer.kind(),
            layout: layout(),
            sysv_id: -1,
        },
        &buffer.fds(),
    )
    .unwrap();
    p.send(
        &Message::Frame {
            id: 0,
            seq: 1,
            timestamp_ns: 0,
            flags: 0,
        },
        &[],
    )
    .unwrap();
    p.send(
        &Message::Frame {
            id: 0,
            seq: 2,
            timestamp_ns: 0,
            flags: 0,
        },
        &[],
    )
    .unwrap();
    let (events, err) = consumer.join().unwrap();
    assert!(matches!(events[0], Event::BufferAdded(0)));
    assert!(
        matches!(&events[1], Event::Frame(f) if f.seq == 1),
        "the first frame was delivered"
    );
    assert!(
        matches!(&err, SessionError::Protocol(m) if m.contains("still held for frame 1")),
        "{err}"
    );
}

#[test]
fn double_release_is_rejected_by_the_producer() {
    let (p, mut c) = Channel::pair().unwrap();
    let (both_sent, wait_for_both) = std::sync::mpsc::channel::<()>();
    let producer = thread::spawn(move || {
        let opts = ProducerOptions {
            policy: PoolPolicy::Wait,
            release_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let mut prod = Producer::connect(p, opts, 0).unwrap();
        prod.add_buffer(MemfdAllocator::new().allocate(&layout()).unwrap())
            .unwrap();
        let id = prod.acquire().unwrap().unwrap();
        prod.submit(id, 0, None).unwrap();
        // Read only once both releases are queued: the first is fine, the second is not.
        wait_for_both.recv().unwrap();
        prod.drain(Duration::from_secs(5))
    });
    raw_consumer(&mut c, 0, "evil");
    let (add, _fds) = c.recv().unwrap();
    assert!(matches!(add, Message::AddBuffer { id: 0, .. }));
    assert!(matches!(
        c.recv().unwrap().0,
        Message::Frame { id: 0, seq: 0, .. }
    ));
    let release = Message::Release {
        id: 0,
        seq: 0,
        flags: 0,
    };
    c.send(&release, &[]).unwrap();
    c.send(&release, &[]).unwrap();
    both_sent.send(()).unwrap();
    let err = producer.join().unwrap().unwrap_err();
    expect_rejected(&err, &mut c, "double release");
}

#[test]
fn peer_death_is_a_clean_error() {
    let (p, c) = Channel::pair().unwrap();
    let producer = thread::spawn(move || {
        let mut prod = Producer::connect(p, ProducerOptions::default(), 0).unwrap();
        prod.add_buffer(MemfdAllocator::new().allocate(&layout()).unwrap())
            .unwrap();
        let id = prod.acquire().unwrap().unwrap();
        prod.submit(id, 0, None).unwrap();
        // Only one buffer and the consumer is gone: waiting for it must fail, not hang.
        prod.acquire()
    });
    let mut consumer = Consumer::accept(c, &caps()).unwrap();
    assert!(matches!(
        consumer.next_event(None).unwrap(),
        Event::BufferAdded(0)
    ));
    assert!(matches!(
        consumer.next_event(None).unwrap(),
        Event::Frame(_)
    ));
    drop(consumer);
    let err = producer.join().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Channel(frameshare::bus::socket::ChannelError::PeerClosed)
        ),
        "{err}"
    );
}

#[test]
fn releasing_what_is_not_held_is_a_local_error() {
    let (mut p, c) = Channel::pair().unwrap();
    let t = thread::spawn(move || {
        raw_producer(&mut p);
        p
    });
    let mut consumer = Consumer::accept(c, &caps()).unwrap();
    let _p = t.join().unwrap();
    let err = consumer.release(3, 1, None).unwrap_err();
    assert!(matches!(err, SessionError::Usage(_)), "{err}");
}

#[test]
fn wrong_role_in_hello_is_rejected() {
    let (mut p, c) = Channel::pair().unwrap();
    let t = thread::spawn(move || Consumer::accept(c, &caps()).map(|_| ()));
    p.send(
        &Message::Hello {
            role: Role::Consumer,
            features: 0,
            kinds: 0,
            formats: vec![],
            name: "confused".into(),
        },
        &[],
    )
    .unwrap();
    let err = t.join().unwrap().unwrap_err();
    assert!(
        matches!(&err, SessionError::Protocol(m) if m.contains("expected the producer's Hello")),
        "{err}"
    );
}

/// A consumer that takes frames but gives none back is reported stalled: after
/// `first_release_timeout` while it has released nothing (its first frames may wait for
/// one-time setup), after the shorter `release_timeout` once it has released one.
#[test]
fn a_consumer_that_keeps_its_buffers_is_reported_stalled() {
    use std::time::Instant;
    let (p, mut c) = Channel::pair().unwrap();
    let (release_one, wait_release) = std::sync::mpsc::channel::<()>();
    let consumer = thread::spawn(move || {
        raw_consumer(&mut c, 0, "hoarder");
        // Keep every frame; give frame 0 back only when told; stop when the producer is gone.
        loop {
            if wait_release.try_recv().is_ok() {
                let r = Message::Release {
                    id: 0,
                    seq: 0,
                    flags: 0,
                };
                c.send(&r, &[]).unwrap();
            }
            match c.recv_timeout(Some(Duration::from_millis(20))) {
                Ok(_) | Err(ChannelError::Timeout(_)) => {}
                Err(_) => return,
            }
        }
    });
    let opts = ProducerOptions {
        policy: PoolPolicy::Wait,
        release_timeout: Duration::from_millis(300),
        first_release_timeout: Duration::from_millis(1200),
        ..Default::default()
    };
    let mut prod = Producer::connect(p, opts, 0).unwrap();
    for _ in 0..2 {
        prod.add_buffer(MemfdAllocator::new().allocate(&layout()).unwrap())
            .unwrap();
    }
    for seq in 0..2 {
        let id = prod.acquire().unwrap().expect("a free buffer");
        prod.submit(id, seq, None).unwrap();
    }
    // Nothing released yet: the first-release timeout applies.
    let t = Instant::now();
    let err = prod.acquire().unwrap_err();
    let waited = t.elapsed();
    assert!(
        matches!(err, SessionError::Stalled(d) if d == Duration::from_millis(1200)),
        "{err}"
    );
    assert!(waited >= Duration::from_millis(1200), "{waited:?}");
    // One release: buffer 0 comes back and is reused; then the short timeout applies.
    release_one.send(()).unwrap();
    let id = prod.acquire().unwrap().expect("buffer 0 back");
    assert_eq!(id, 0);
    prod.submit(id, 2, None).unwrap();
    let t = Instant::now();
    let err = prod.acquire().unwrap_err();
    let waited = t.elapsed();
    assert!(
        matches!(err, SessionError::Stalled(d) if d == Duration::from_millis(300)),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1200),
        "{waited:?}"
    );
    drop(prod);
    consumer.join().unwrap();
}

/// A datagram the producer cannot decode is a protocol error it reports back (Bye naming what
/// was wrong), not a silent hang-up.
#[test]
fn garbage_from_the_consumer_gets_a_bye() {
    let (p, mut c) = Channel::pair().unwrap();
    let producer = thread::spawn(move || {
        let mut prod = Producer::connect(p, ProducerOptions::default(), 0).unwrap();
        prod.add_buffer(MemfdAllocator::new().allocate(&layout()).unwrap())
            .unwrap();
        let id = prod.acquire().unwrap().unwrap();
        prod.submit(id, 0, None).unwrap();
        // Waits for a release; gets garbage.
        prod.acquire().map(|_| ())
    });
    raw_consumer(&mut c, 0, "noisy");
    assert!(matches!(c.recv().unwrap().0, Message::AddBuffer { .. }));
    assert!(matches!(c.recv().unwrap().0, Message::Frame { .. }));
    c.send_raw(b"\x00\x01 not a frameshare message", &[])
        .unwrap();
    let err = producer.join().unwrap().unwrap_err();
    expect_rejected(&err, &mut c, "malformed");
}

/// `finish` tells a consumer that announced `FEATURE_END_OF_STREAM` that no frame follows
/// (so a display gives back the frame it still shows), waits for the release, then says Bye.
#[test]
fn finish_says_end_of_stream_to_a_consumer_that_takes_it() {
    let (p, mut c) = Channel::pair().unwrap();
    let producer = thread::spawn(move || {
        let mut prod = Producer::connect(p, ProducerOptions::default(), 0).unwrap();
        prod.add_buffer(MemfdAllocator::new().allocate(&layout()).unwrap())
            .unwrap();
        let id = prod.acquire().unwrap().unwrap();
        prod.submit(id, 41, None).unwrap();
        prod.finish()
    });
    raw_consumer(&mut c, wire::FEATURE_END_OF_STREAM, "display");
    assert!(matches!(c.recv().unwrap().0, Message::AddBuffer { .. }));
    assert!(matches!(
        c.recv().unwrap().0,
        Message::Frame { seq: 41, .. }
    ));
    // The frame stays "on screen" until the end of the stream is announced.
    assert_eq!(
        c.recv_timeout(Some(Duration::from_secs(5))).unwrap().0,
        Message::EndOfStream { last_seq: 41 }
    );
    let release = Message::Release {
        id: 0,
        seq: 41,
        flags: 0,
    };
    c.send(&release, &[]).unwrap();
    assert!(matches!(
        c.recv().unwrap().0,
        Message::Bye {
            code: wire::BYE_DONE,
            ..
        }
    ));
    let stats = producer.join().unwrap().unwrap();
    assert_eq!((stats.produced, stats.released), (1, 1));
}
