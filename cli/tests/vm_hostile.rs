//! Hostile peers, the parts that need dma-bufs (inside the VM; on a host they print
//! "skipped"): the CPU sinks refuse a dma-buf whose layout is tiled or INVALID instead of
//! misreading it, and received dma-bufs are told apart by their exporter, from the kernel's own
//! records. `hostile.rs` plays the rest on any machine.

mod common;

use std::os::fd::AsFd;
use std::thread;
use std::time::Duration;

use frameshare::alloc::AllocatorSpec;
use frameshare::buffer::{classify_fd, BufferKind, FdClass, KindSet};
use frameshare::bus::socket::Channel;
use frameshare::bus::wire::{self, Hello, Message, Role};
use frameshare::bus::{ByeCode, Subscriber, SubscriberOptions};
use frameshare::format::{Fourcc, FrameLayout, Modifier};
use frameshare::pipeline::{self, ConsumeOptions, ConsumeReport};
use frameshare::sink::Sink;

const WAIT: Duration = Duration::from_secs(30);

fn layout() -> FrameLayout {
    FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap()
}

/// Announces one dma-heap buffer with `modifier` to an in-process consumer feeding `sink`;
/// returns the consumer's Bye and report.
fn announce_to(
    sink: Box<dyn Sink + Send>,
    modifier: Modifier,
) -> (Option<(ByeCode, String)>, ConsumeReport) {
    let (mut p, c) = Channel::pair().unwrap();
    let consumer = thread::spawn(move || {
        let mut sink = sink;
        let mut sub = Subscriber::from_channel(c, SubscriberOptions::default()).unwrap();
        pipeline::consume(&mut sub, sink.as_mut(), &ConsumeOptions::default()).unwrap()
    });
    let hello = Hello {
        role: Role::Producer,
        features: wire::FEATURE_FENCES,
        kinds: KindSet::all(),
        name: "generator".into(),
        pattern: Some("box".into()),
        ..Default::default()
    };
    p.send(&Message::Hello(hello), &[]).unwrap();
    let _ = p.recv_timeout(Some(WAIT)).unwrap();
    let buffer = AllocatorSpec::DmaHeap(None)
        .open()
        .unwrap()
        .allocate(&layout())
        .unwrap();
    let add = Message::AddBuffer {
        id: 0,
        kind: BufferKind::DmaHeap,
        layout: layout().with_modifier(modifier).unwrap(),
        sysv_id: None,
    };
    p.send(&add, &buffer.fds()).unwrap();
    let bye = loop {
        match p.recv_timeout(Some(WAIT)) {
            Ok((Message::Bye { code, reason }, _)) => break Some((code, reason)),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    drop(p);
    (bye, consumer.join().unwrap())
}

#[test]
fn cpu_sinks_refuse_dma_bufs_they_cannot_read() {
    if !common::need("/dev/dma_heap/system") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("frameshare-vm-hostile-{}", std::process::id()));
    let x_tiled = Modifier(0x0100_0000_0000_0001);
    for modifier in [x_tiled, Modifier::INVALID] {
        let sinks: [(&str, Box<dyn Sink + Send>); 2] = [
            (
                "verify",
                Box::new(frameshare::sink::verify::VerifySink::new()),
            ),
            (
                "png",
                Box::new(frameshare::sink::png::PngSink::new(dir.clone()).unwrap()),
            ),
        ];
        for (name, sink) in sinks {
            let (bye, report) = announce_to(sink, modifier);
            let needle =
                format!("{name} reads LINEAR buffers only: buffer 0 has modifier {modifier}");
            let (_, reason) = bye.unwrap_or_else(|| panic!("{name}: no Bye"));
            assert!(reason.contains(&needle), "{name}: Bye {reason:?}");
            let err = report.error.unwrap_or_default();
            assert!(err.contains(&needle), "{name}: {err}");
            assert_eq!(report.frames_delivered, 0);
            eprintln!("{name}, {modifier}: refused: {reason}");
        }
    }
    assert_eq!(
        std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0),
        0,
        "no picture of a buffer it cannot read"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dma_bufs_are_classified_by_their_exporter() {
    if !common::need("/dev/dma_heap/system") || !common::need("/dev/udmabuf") {
        return;
    }
    for (spec, exporter) in [
        (AllocatorSpec::DmaHeap(None), "system"),
        (AllocatorSpec::Udmabuf, "udmabuf"),
    ] {
        let b = spec.open().unwrap().allocate(&layout()).unwrap();
        let class = classify_fd(b.fds()[0].as_fd());
        assert_eq!(
            class,
            FdClass::DmaBuf {
                exporter: exporter.into()
            },
            "{spec}"
        );
    }
}
