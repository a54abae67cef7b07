//! Session-level protocol checks, in one process: each end must reject a peer that breaks the
//! rules with an error naming what was wrong, and tell the peer why (Bye). A subscriber's
//! session is its stream, so it ends; a publisher ends only the offender's session (counted,
//! logged) and keeps serving the others, whose frames all still verify. The raw peer is a
//! `Channel` driven by hand; the other end is the library's `Publisher` or `Subscriber`.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{capture_logs, logged, readable, verify_consumer};
use frameshare::alloc::{memfd::MemfdAllocator, Allocator};
use frameshare::buffer::KindSet;
use frameshare::bus::wire::{self, ByeCode, FrameMsg, Hello, Message, Role};
use frameshare::bus::{
    Channel, ChannelError, Publisher, PublisherOptions, SubscribeError, Subscriber,
    SubscriberEvent, SubscriberOptions,
};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::meta::FrameMeta;
use frameshare::source::{Generator, Pattern};

const WAIT: Duration = Duration::from_secs(10);

fn layout() -> FrameLayout {
    FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap()
}

fn memfd_buffers(n: usize) -> Vec<frameshare::Buffer> {
    let mut a = MemfdAllocator::new();
    (0..n).map(|_| a.allocate(&layout()).unwrap()).collect()
}

fn frame(id: u32, seq: u64) -> Message {
    Message::Frame(FrameMsg {
        id,
        seq,
        timestamp_ns: 0,
        flags: 0,
        meta: FrameMeta::default(),
    })
}

fn recv(chan: &mut Channel) -> Message {
    chan.recv_timeout(Some(WAIT)).unwrap().0
}

// ---- a raw producer against the library's subscriber ----

fn producer_hello() -> Message {
    Message::Hello(Hello {
        role: Role::Producer,
        kinds: KindSet::all(),
        name: "generator".into(),
        pattern: Some("bars".into()),
        ..Hello::default()
    })
}

/// A subscriber on `chan` in a thread, collecting events until the first error.
fn subscriber(
    chan: Channel,
) -> thread::JoinHandle<Result<(Vec<SubscriberEvent>, SubscribeError), SubscribeError>> {
    thread::spawn(move || {
        let opts = SubscriberOptions {
            name: "test".into(),
            ..SubscriberOptions::default()
        };
        let mut sub = Subscriber::from_channel(chan, opts)?;
        let mut events = Vec::new();
        loop {
            match sub.next(Some(WAIT)) {
                Ok(e) => events.push(e),
                Err(e) => return Ok((events, e)),
            }
        }
    })
}

/// Plays a raw producer: Hello, then reads the consumer's.
fn raw_producer(chan: &mut Channel) {
    chan.send(&producer_hello(), &[]).unwrap();
    match recv(chan) {
        Message::Hello(h) => assert_eq!(h.role, Role::Consumer, "{h:?}"),
        m => panic!("expected the consumer's Hello, got {m:?}"),
    }
}

/// The next message on `chan` is a Bye with `code` whose reason mentions `needle`.
fn expect_bye(chan: &mut Channel, code: ByeCode, needle: &str) -> String {
    match recv(chan) {
        Message::Bye { code: c, reason } => {
            assert_eq!(c, code, "{reason}");
            assert!(
                reason.contains(needle),
                "Bye reason {reason:?} should mention {needle:?}"
            );
            reason
        }
        m => panic!("expected Bye, got {m:?}"),
    }
}

/// `err` is the protocol error naming `needle`, and the peer was told so (Bye).
fn expect_rejected(err: &SubscribeError, chan: &mut Channel, needle: &str) {
    assert!(
        matches!(err, SubscribeError::Protocol(m) if m.contains(needle)),
        "{err}"
    );
    expect_bye(chan, ByeCode::Protocol, needle);
}

#[test]
fn frame_for_unknown_buffer_is_rejected() {
    let (mut p, c) = Channel::pair().unwrap();
    let consumer = subscriber(c);
    raw_producer(&mut p);
    p.send(&frame(9, 1), &[]).unwrap();
    let (events, err) = consumer.join().unwrap().unwrap();
    assert!(
        matches!(events[..], [SubscriberEvent::Connected { .. }]),
        "{events:?}"
    );
    expect_rejected(&err, &mut p, "unknown buffer 9");
}

#[test]
fn reusing_a_held_buffer_is_rejected_and_earlier_frames_stay_delivered() {
    let (mut p, c) = Channel::pair().unwrap();
    let consumer = subscriber(c);
    raw_producer(&mut p);
    let buffer = memfd_buffers(1).remove(0);
    let add = Message::AddBuffer {
        id: 0,
        kind: buffer.kind(),
        layout: layout(),
        sysv_id: None,
    };
    p.send(&add, &buffer.fds()).unwrap();
    p.send(&frame(0, 1), &[]).unwrap();
    p.send(&frame(0, 2), &[]).unwrap();
    // The subscriber keeps every event, so frame 1 is still held when frame 2 comes.
    let (events, err) = consumer.join().unwrap().unwrap();
    assert!(
        matches!(events[1], SubscriberEvent::BufferAdded { id: 0, .. }),
        "{events:?}"
    );
    assert!(
        matches!(&events[2], SubscriberEvent::Frame(f) if f.seq == 1),
        "the first frame was delivered: {events:?}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
    expect_rejected(&err, &mut p, "still held for frame 1");
}

/// A frame goes back exactly once: released explicitly (with `release`) or when dropped, and
/// never again; releasing a frame twice is impossible by construction (`release` takes it).
#[test]
fn a_frame_is_given_back_exactly_once() {
    let (mut p, c) = Channel::pair().unwrap();
    let consumer = thread::spawn(move || {
        let mut sub = Subscriber::from_channel(c, SubscriberOptions::default()).unwrap();
        let mut ended = None;
        while ended.is_none() {
            match sub.next(Some(WAIT)).unwrap() {
                SubscriberEvent::Frame(f) if f.seq == 1 => f.release(None).unwrap(),
                SubscriberEvent::Frame(f) => drop(f),
                SubscriberEvent::Ended { code, reason } => ended = Some((code, reason)),
                _ => {}
            }
        }
        ended.unwrap()
    });
    raw_producer(&mut p);
    let buffer = memfd_buffers(1).remove(0);
    let add = Message::AddBuffer {
        id: 0,
        kind: buffer.kind(),
        layout: layout(),
        sysv_id: None,
    };
    p.send(&add, &buffer.fds()).unwrap();
    p.send(&frame(0, 1), &[]).unwrap();
    assert_eq!(
        recv(&mut p),
        Message::Release {
            id: 0,
            seq: 1,
            flags: 0
        }
    );
    p.send(&frame(0, 2), &[]).unwrap();
    assert_eq!(
        recv(&mut p),
        Message::Release {
            id: 0,
            seq: 2,
            flags: 0
        }
    );
    let bye = Message::Bye {
        code: ByeCode::Done,
        reason: "stream ended".into(),
    };
    p.send(&bye, &[]).unwrap();
    assert_eq!(
        consumer.join().unwrap(),
        (ByeCode::Done, "stream ended".to_owned())
    );
    // Nothing followed the two releases: the subscriber is gone.
    assert!(
        matches!(p.recv_timeout(Some(WAIT)), Err(ChannelError::PeerClosed)),
        "a second release, or a Bye after the producer's"
    );
}

#[test]
fn wrong_role_in_hello_is_rejected() {
    let (mut p, c) = Channel::pair().unwrap();
    let t = thread::spawn(move || Subscriber::from_channel(c, SubscriberOptions::default()));
    let confused = Message::Hello(Hello {
        role: Role::Consumer,
        name: "confused".into(),
        ..Hello::default()
    });
    p.send(&confused, &[]).unwrap();
    let err = t.join().unwrap().unwrap_err();
    expect_rejected(&err, &mut p, "expected the producer's Hello");

    // The publisher's side: a producer's Hello to a producer.
    let mut publisher = Publisher::new(PublisherOptions::default()).unwrap();
    let (ours, mut theirs) = Channel::pair().unwrap();
    publisher.add_connection(ours, false).unwrap();
    assert!(matches!(recv(&mut theirs), Message::Hello(h) if h.role == Role::Producer));
    theirs.send(&producer_hello(), &[]).unwrap();
    publisher.dispatch(Some(WAIT)).unwrap();
    expect_bye(
        &mut theirs,
        ByeCode::Protocol,
        "a producer connected to a producer",
    );
    assert!(publisher.consumers().is_empty());
    assert_eq!(publisher.stats().joined, 0);
}

// ---- a raw consumer against the library's publisher ----

/// Plays a raw consumer: reads the producer's Hello, answers with `features` and `name`.
fn raw_consumer(chan: &mut Channel, features: u32, name: &str) {
    match recv(chan) {
        Message::Hello(h) => assert_eq!(h.role, Role::Producer, "{h:?}"),
        m => panic!("expected the producer's Hello, got {m:?}"),
    }
    let hello = Message::Hello(Hello {
        role: Role::Consumer,
        features,
        kinds: KindSet::all(),
        name: name.into(),
        ..Hello::default()
    });
    chan.send(&hello, &[]).unwrap();
}

/// A publisher of the generator's moving box (what the verify sink checks), a raw consumer
/// `name` and a well-behaved verifying consumer (a thread), both live, with `buffers` buffers.
struct TwoConsumers {
    publisher: Publisher,
    raw: Channel,
    good: thread::JoinHandle<frameshare::pipeline::ConsumeReport>,
    generator: Generator,
    seq: u64,
}

impl TwoConsumers {
    fn new(name: &str, features: u32, buffers: usize, opts: PublisherOptions) -> TwoConsumers {
        let mut publisher = Publisher::new(PublisherOptions {
            name: "generator".into(),
            pattern: Some("box".into()),
            ..opts
        })
        .unwrap();
        let (ours, mut raw) = Channel::pair().unwrap();
        publisher.add_connection(ours, false).unwrap();
        raw_consumer(&mut raw, features, name);
        let (ours, theirs) = Channel::pair().unwrap();
        publisher.add_connection(ours, true).unwrap();
        let good = verify_consumer(theirs);
        assert!(publisher.wait_for_consumers(2, Some(WAIT)).unwrap());
        publisher.set_buffers(memfd_buffers(buffers)).unwrap();
        TwoConsumers {
            publisher,
            raw,
            good,
            generator: Generator::new(Pattern::MovingBox, &layout()),
            seq: 0,
        }
    }

    /// Fills and publishes the next frame; its buffer id.
    fn publish(&mut self) -> u32 {
        let mut loan = self.publisher.loan().unwrap().expect("a free buffer");
        let id = loan.id();
        self.generator
            .fill(id, &mut loan.write().unwrap(), self.seq);
        loan.publish(self.seq).unwrap();
        self.seq += 1;
        id
    }

    /// The raw consumer reads its AddBuffers and the frame `seq` in buffer `id`.
    fn raw_takes(&mut self, buffers: usize, id: u32, seq: u64) {
        for _ in 0..buffers {
            assert!(matches!(recv(&mut self.raw), Message::AddBuffer { .. }));
        }
        match recv(&mut self.raw) {
            Message::Frame(f) => assert_eq!((f.id, f.seq), (id, seq)),
            m => panic!("expected frame {seq}, got {m:?}"),
        }
    }

    /// Serves until the raw consumer is gone, counted as `left` or `evicted`.
    fn serve_until_gone(&mut self) {
        let deadline = Instant::now() + WAIT;
        while self.publisher.consumers().len() > 1 {
            assert!(
                Instant::now() < deadline,
                "the raw consumer is still served"
            );
            self.publisher
                .dispatch(Some(Duration::from_millis(100)))
                .unwrap();
        }
    }

    /// The stream goes on without the raw consumer: `more` frames, then the end; the good
    /// consumer verified every frame of the stream.
    fn finish(mut self, more: u64) -> frameshare::bus::PublisherStats {
        for _ in 0..more {
            self.publish();
        }
        let total = self.seq;
        let stats = self.publisher.finish().unwrap();
        assert_eq!(stats.published, total);
        let good = self.good.join().unwrap();
        assert_eq!(good.error, None, "{good:?}");
        assert_eq!(good.frames_delivered, total, "{good:?}");
        assert_eq!(good.frames_verified, total, "{good:?}");
        assert_eq!(good.ended.as_deref(), Some("stream ended"));
        stats
    }
}

#[test]
fn double_release_is_rejected_by_the_producer_which_goes_on() {
    capture_logs();
    let mut s = TwoConsumers::new("double-releaser", 0, 2, PublisherOptions::default());
    let id = s.publish();
    s.raw_takes(2, id, 0);
    let release = Message::Release {
        id,
        seq: 0,
        flags: 0,
    };
    s.raw.send(&release, &[]).unwrap();
    s.raw.send(&release, &[]).unwrap();
    s.serve_until_gone();
    expect_bye(&mut s.raw, ByeCode::Protocol, "double release");
    assert_eq!(s.publisher.stats().left, 1);
    let log = logged(&["double-releaser (pid", "double release"]);
    assert_eq!(log.len(), 1, "{log:?}");
    let stats = s.finish(10);
    assert_eq!((stats.joined, stats.left, stats.evicted), (2, 2, 0));
}

/// A consumer that dies holding a frame is forgotten at once: the buffer comes back, the
/// publisher goes on (no error, no wait for a stall timeout).
#[test]
fn a_consumer_that_dies_is_forgotten_at_once() {
    capture_logs();
    let mut publisher = Publisher::new(PublisherOptions::default()).unwrap();
    let (ours, mut raw) = Channel::pair().unwrap();
    publisher.add_connection(ours, false).unwrap();
    raw_consumer(&mut raw, 0, "mortal");
    assert!(publisher.wait_for_consumers(1, Some(WAIT)).unwrap());
    publisher.set_buffers(memfd_buffers(1)).unwrap();
    let loan = publisher.loan().unwrap().expect("the one buffer");
    let id = loan.id();
    loan.publish(0).unwrap();
    assert!(matches!(recv(&mut raw), Message::AddBuffer { .. }));
    let (msg, fds) = raw.recv_timeout(Some(WAIT)).unwrap();
    assert!(matches!(msg, Message::Frame(_)), "{msg:?}");
    // Dies holding frame 0 in the only buffer.
    drop((raw, fds));
    let t = Instant::now();
    let loan = publisher.loan().unwrap().expect("the buffer came back");
    assert_eq!(loan.id(), id);
    drop(loan);
    assert!(t.elapsed() < WAIT, "{:?}", t.elapsed());
    assert!(publisher.consumers().is_empty());
    assert_eq!(publisher.stats().left, 1);
    assert_eq!(
        logged(&["mortal (pid", "left", "peer closed"]).len(),
        1,
        "{:?}",
        logged(&["mortal"])
    );
}

/// `Publisher::add_buffers` (for buffers met one at a time, as a GStreamer upstream's pool):
/// each new buffer's fds go once to the consumers there, beside those already announced
/// (nothing retires); a consumer joining later is told of them all; a frame in either reaches
/// both without a second announcement.
#[test]
fn added_buffers_are_announced_once_each() {
    let mut publisher = Publisher::new(PublisherOptions::default()).unwrap();
    let (ours, mut early) = Channel::pair().unwrap();
    publisher.add_connection(ours, false).unwrap();
    raw_consumer(&mut early, 0, "early");
    assert!(publisher.wait_for_consumers(1, Some(WAIT)).unwrap());
    let mut buffers = memfd_buffers(2);
    let second = buffers.pop().unwrap();
    let a = publisher.add_buffers(buffers).unwrap();
    let b = publisher.add_buffers(vec![second]).unwrap();
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0], b[0], "a buffer added beside another gets its own id");
    for want in [a[0], b[0]] {
        match recv(&mut early) {
            Message::AddBuffer { id, .. } => assert_eq!(id, want),
            m => panic!("expected AddBuffer {want}, got {m:?}"),
        }
    }
    let (ours, mut late) = Channel::pair().unwrap();
    publisher.add_connection(ours, false).unwrap();
    raw_consumer(&mut late, 0, "late");
    assert!(publisher.wait_for_consumers(2, Some(WAIT)).unwrap());
    publisher
        .publish(b[0], 0, FrameMeta::default(), None)
        .unwrap();
    match recv(&mut early) {
        Message::Frame(f) => assert_eq!((f.id, f.seq), (b[0], 0)),
        m => panic!("expected the frame, not a second announcement: {m:?}"),
    }
    let mut told = Vec::new();
    loop {
        match recv(&mut late) {
            Message::AddBuffer { id, .. } => told.push(id),
            Message::Frame(f) => break assert_eq!((f.id, f.seq), (b[0], 0)),
            m => panic!("unexpected {m:?}"),
        }
    }
    told.sort_unstable();
    let mut want = vec![a[0], b[0]];
    want.sort_unstable();
    assert_eq!(
        told, want,
        "the late consumer is told of both buffers, once"
    );
}

/// A slow consumer is not a stalled one: under `wait` it paces the stream, so frames queue
/// behind its slow ones and each stays out far longer than the stall timeout — yet it gives one
/// back every period, and it is never evicted. (The stall clock of a hold runs from the later
/// of its delivery and the consumer's last give-back.)
#[test]
fn a_slow_consumer_that_keeps_giving_frames_back_is_not_evicted() {
    let stall = Duration::from_secs(2);
    let (buffers, frames, period) = (24, 40u64, Duration::from_millis(150));
    let mut s = TwoConsumers::new(
        "slow",
        0,
        buffers,
        PublisherOptions {
            stall_timeout: stall,
            setup_timeout: stall,
            ..PublisherOptions::default()
        },
    );
    // The raw consumer moves to its own thread (the fixture keeps an unused channel).
    let (unused, _peer) = Channel::pair().unwrap();
    let mut raw = std::mem::replace(&mut s.raw, unused);
    let slow = thread::spawn(move || {
        let mut got = 0u64;
        loop {
            match raw.recv_timeout(Some(WAIT)).unwrap().0 {
                Message::AddBuffer { .. } | Message::RemoveBuffer { .. } => {}
                Message::Frame(f) => {
                    // One frame per period: the frames behind it wait in the socket.
                    thread::sleep(period);
                    let release = Message::Release {
                        id: f.id,
                        seq: f.seq,
                        flags: 0,
                    };
                    raw.send(&release, &[]).unwrap();
                    got += 1;
                }
                Message::EndOfStream { .. } => {}
                Message::Bye { code, reason } => return (got, code, reason),
                m => panic!("{m:?}"),
            }
        }
    });
    let start = Instant::now();
    for _ in 0..frames {
        s.publish();
    }
    let stats = s.publisher.stats().clone();
    assert_eq!(stats.evicted, 0, "{stats:?}");
    let stats = s.finish(0);
    let (got, code, reason) = slow.join().unwrap();
    assert_eq!((got, code), (frames, ByeCode::Done), "{reason}");
    assert_eq!(stats.evicted, 0, "{stats:?}");
    // The test means something only if the stream was paced by the slow consumer, well past
    // the stall timeout in all.
    assert!(start.elapsed() > stall, "{:?}", start.elapsed());
}

/// A consumer that holds its frames past the stall timeout is evicted with a Bye saying so;
/// the stream goes on for the others, which lose no frame. Until it gives a frame back after
/// it was told of the buffers, a consumer may be setting itself up (GPU pipelines, a display
/// mode): the longer setup timeout applies then.
#[test]
fn a_consumer_that_keeps_its_frames_is_evicted() {
    capture_logs();
    let (stall, setup) = (Duration::from_millis(300), Duration::from_millis(1200));
    let opts = || PublisherOptions {
        stall_timeout: stall,
        setup_timeout: setup,
        ..PublisherOptions::default()
    };

    // Gives nothing back at all: evicted after the setup timeout.
    let mut s = TwoConsumers::new("hoarder", 0, 2, opts());
    let first = Instant::now();
    let a = s.publish();
    let b = s.publish();
    s.raw_takes(2, a, 0);
    assert!(matches!(recv(&mut s.raw), Message::Frame(f) if f.id == b && f.seq == 1));
    // Both buffers are with the hoarder: the next loan waits for its eviction.
    s.publish();
    let waited = first.elapsed();
    assert!(
        waited >= setup,
        "evicted after {waited:?}, before {setup:?}"
    );
    expect_bye(
        &mut s.raw,
        ByeCode::Evicted,
        "stalled: held frame 0 (buffer 0) for more than 1.2s, giving nothing back since it was \
         told of the buffers",
    );
    let stats = s.publisher.stats();
    assert_eq!((stats.evicted, stats.left), (1, 0));
    assert_eq!(logged(&["hoarder (pid", "evicted: stalled"]).len(), 1);
    let stats = s.finish(20);
    assert_eq!((stats.joined, stats.left, stats.evicted), (2, 1, 1));

    // Gives one frame back, then keeps the next: set up, so the stall timeout applies.
    let mut s = TwoConsumers::new("keeper", 0, 2, opts());
    let a = s.publish();
    s.raw_takes(2, a, 0);
    let release = Message::Release {
        id: a,
        seq: 0,
        flags: 0,
    };
    s.raw.send(&release, &[]).unwrap();
    let kept = Instant::now();
    let b = s.publish();
    assert!(matches!(recv(&mut s.raw), Message::Frame(f) if f.id == b && f.seq == 1));
    // The keeper holds frame 1, and frame 2 as soon as it is sent: the loan of frame 3 waits.
    s.publish();
    s.publish();
    let waited = kept.elapsed();
    assert!(
        waited >= stall,
        "evicted after {waited:?}, before {stall:?}"
    );
    let reason = loop {
        match recv(&mut s.raw) {
            Message::Frame(_) => continue,
            Message::Bye { code, reason } => {
                assert_eq!(code, ByeCode::Evicted, "{reason}");
                break reason;
            }
            m => panic!("expected frames and a Bye, got {m:?}"),
        }
    };
    // Frame 1 or 2, whichever the eviction found first: both were overdue by then.
    assert!(
        reason.starts_with("stalled: held frame ") && reason.ends_with("for more than 300ms"),
        "{reason}"
    );
    let stats = s.finish(20);
    assert_eq!((stats.joined, stats.left, stats.evicted), (2, 1, 1));
}

/// A datagram the publisher cannot decode is a protocol error it reports back (Bye naming what
/// was wrong), not a silent hang-up; the others are served on.
#[test]
fn garbage_from_a_consumer_gets_a_bye() {
    capture_logs();
    let mut s = TwoConsumers::new("noisy", 0, 2, PublisherOptions::default());
    let id = s.publish();
    s.raw_takes(2, id, 0);
    s.raw
        .send_raw(b"\x00\x01 not a frameshare message", &[])
        .unwrap();
    s.serve_until_gone();
    expect_bye(
        &mut s.raw,
        ByeCode::Protocol,
        "malformed message: bad magic",
    );
    assert_eq!(logged(&["noisy (pid", "malformed"]).len(), 1);
    let stats = s.finish(10);
    assert_eq!((stats.joined, stats.left), (2, 2));
}

/// `finish` tells a consumer that announced `FEATURE_END_OF_STREAM` that no frame follows
/// (so a display gives back the frame it still shows), waits for the release, then says Bye.
#[test]
fn finish_says_end_of_stream_to_a_consumer_that_takes_it() {
    let mut publisher = Publisher::new(PublisherOptions::default()).unwrap();
    let (ours, mut c) = Channel::pair().unwrap();
    publisher.add_connection(ours, false).unwrap();
    raw_consumer(&mut c, wire::FEATURE_END_OF_STREAM, "display");
    assert!(publisher.wait_for_consumers(1, Some(WAIT)).unwrap());
    publisher.set_buffers(memfd_buffers(1)).unwrap();
    let loan = publisher.loan().unwrap().unwrap();
    let id = loan.id();
    loan.publish(41).unwrap();
    let display = thread::spawn(move || {
        assert!(matches!(recv(&mut c), Message::AddBuffer { .. }));
        assert!(matches!(recv(&mut c), Message::Frame(f) if f.seq == 41));
        // The frame stays "on screen" until the end of the stream is announced.
        assert_eq!(recv(&mut c), Message::EndOfStream { last_seq: 41 });
        let release = Message::Release {
            id,
            seq: 41,
            flags: 0,
        };
        c.send(&release, &[]).unwrap();
        expect_bye(&mut c, ByeCode::Done, "stream ended");
    });
    let stats = publisher.finish().unwrap();
    display.join().unwrap();
    assert_eq!((stats.published, stats.joined, stats.left), (1, 1, 1));
}

// ---- the version rule ----

/// `msg` encoded with protocol version `version` in its header.
fn encoded_as(version: u16, msg: &Message) -> Vec<u8> {
    let mut b = Vec::new();
    msg.encode(&mut b);
    b[4..6].copy_from_slice(&version.to_le_bytes());
    b
}

/// Reads one raw datagram (a message in another version's encoding).
fn recv_raw(chan: &Channel) -> Vec<u8> {
    assert!(readable(chan, WAIT), "nothing from the peer");
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    let (n, _) = rustix::net::recv(chan, &mut buf[..], rustix::net::RecvFlags::empty()).unwrap();
    buf.truncate(n);
    buf
}

/// The Bye a peer of version 1 gets: in version 1's encoding, naming both versions.
fn expect_v1_bye(bytes: &[u8], needle: &str) {
    assert_eq!(Message::peek_version(bytes), Some(1), "{bytes:?}");
    // The Bye's layout is the same in every version: re-stamped, it decodes as ours.
    let mut ours = bytes.to_vec();
    ours[4..6].copy_from_slice(&wire::VERSION.to_le_bytes());
    match Message::decode(&ours, 0).unwrap() {
        Message::Bye { code, reason } => {
            assert_eq!(code, ByeCode::Version, "{reason}");
            assert!(reason.contains(needle), "{reason:?} should say {needle:?}");
        }
        m => panic!("expected Bye, got {m:?}"),
    }
}

#[test]
fn a_version_1_consumer_gets_a_version_1_bye() {
    let mut publisher = Publisher::new(PublisherOptions::default()).unwrap();
    let (ours, mut old) = Channel::pair().unwrap();
    publisher.add_connection(ours, false).unwrap();
    assert!(matches!(recv(&mut old), Message::Hello(_)));
    let hello = Message::Hello(Hello {
        role: Role::Consumer,
        name: "old".into(),
        ..Hello::default()
    });
    old.send_raw(&encoded_as(1, &hello), &[]).unwrap();
    let deadline = Instant::now() + WAIT;
    while publisher.stats().refused == 0 {
        assert!(
            Instant::now() < deadline,
            "the old consumer was not answered"
        );
        publisher
            .dispatch(Some(Duration::from_millis(100)))
            .unwrap();
    }
    expect_v1_bye(
        &recv_raw(&old),
        &format!(
            "this producer speaks frameshare protocol version {}, the consumer 1",
            wire::VERSION
        ),
    );
    // And the session is over.
    assert_eq!(recv_raw(&old), Vec::<u8>::new());
    assert_eq!(publisher.stats().joined, 0);
}

#[test]
fn a_version_1_producer_gets_a_version_1_bye() {
    let (old, c) = Channel::pair().unwrap();
    let t = thread::spawn(move || Subscriber::from_channel(c, SubscriberOptions::default()));
    old.send_raw(&encoded_as(1, &producer_hello()), &[])
        .unwrap();
    let err = t.join().unwrap().unwrap_err();
    let why = format!(
        "this consumer speaks frameshare protocol version {}, the producer 1",
        wire::VERSION
    );
    assert!(
        matches!(&err, SubscribeError::Bye { code: ByeCode::Version, reason } if *reason == why),
        "{err}"
    );
    expect_v1_bye(&recv_raw(&old), &why);
}
