//! The fan-out section's consumers: one producer (in the peer) publishing at a socket path,
//! and `N` subscribers, each on its own thread of this process with its own [`Subscriber`] and
//! null sink, joined one after the other so that the publisher serves them in join order (the
//! last to join is the last sent each frame). Each thread times its own handoffs and its own
//! CPU per batch.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use frameshare::bus::subscriber::Target;
use frameshare::bus::{Subscriber, SubscriberEvent, SubscriberOptions};
use frameshare::sink::null::NullSink;
use frameshare::sink::{FrameIn, Sink, StreamInfo};

use super::control::thread_cpu_ns;
use super::{BenchError, FRAME_PATIENCE};

/// What one consumer measured over a batch.
#[derive(Debug, Default)]
pub(super) struct ConsumerBatch {
    /// Handoff latency of each frame, ns.
    pub(super) latency_ns: Vec<u64>,
    /// The thread's CPU time over the batch, ns.
    pub(super) cpu_ns: u64,
}

enum Command {
    Run(u64),
    Quit,
}

struct Worker {
    commands: mpsc::Sender<Command>,
    results: mpsc::Receiver<Result<ConsumerBatch, String>>,
    thread: Option<JoinHandle<()>>,
}

/// The consumers of one fan-out cell.
pub(super) struct FanOutEnd {
    workers: Vec<Worker>,
    path: PathBuf,
}

/// A socket path for a fan-out cell of this process.
pub(super) fn socket_path(cell: usize) -> PathBuf {
    std::env::temp_dir().join(format!(
        "frameshare-bench-{}-fan-out-{cell}.sock",
        std::process::id()
    ))
}

impl FanOutEnd {
    /// Starts `consumers` subscriber threads on `path`, one after the other: each joins (its
    /// Hello answered) before the next starts. Then `ready` (the peer's answer once all joined
    /// and the pool was announced), then every thread takes the `buffers` announced.
    pub(super) fn start(
        path: &Path,
        consumers: usize,
        buffers: usize,
        ready: impl FnOnce() -> Result<(), BenchError>,
    ) -> Result<FanOutEnd, BenchError> {
        let mut end = FanOutEnd {
            workers: Vec::with_capacity(consumers),
            path: path.to_owned(),
        };
        for i in 0..consumers {
            let (commands, command_rx) = mpsc::channel();
            let (result_tx, results) = mpsc::channel();
            let target = Target::Path(path.to_owned());
            let thread = std::thread::Builder::new()
                .name(format!("fan-out {i}"))
                .spawn(move || consumer_thread(i, target, buffers, command_rx, result_tx))
                .map_err(|e| BenchError::Peer(format!("starting a consumer thread: {e}")))?;
            end.workers.push(Worker {
                commands,
                results,
                thread: Some(thread),
            });
            // Joined (our Hello sent after the producer's): the next one joins after it.
            end.result(i)?;
        }
        ready()?;
        for i in 0..consumers {
            end.result(i)?;
        }
        Ok(end)
    }

    fn result(&mut self, i: usize) -> Result<ConsumerBatch, BenchError> {
        match self.workers[i].results.recv() {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(BenchError::Peer(format!("fan-out consumer {i}: {e}"))),
            Err(_) => Err(BenchError::Peer(format!("fan-out consumer {i} stopped"))),
        }
    }

    /// How many consumers.
    pub(super) fn consumers(&self) -> usize {
        self.workers.len()
    }

    /// Every consumer takes `frames` frames; their measurements, in join order.
    pub(super) fn run(&mut self, frames: u64) -> Result<Vec<ConsumerBatch>, BenchError> {
        for w in &self.workers {
            // A thread that ended already says why in its result.
            let _ = w.commands.send(Command::Run(frames));
        }
        (0..self.workers.len()).map(|i| self.result(i)).collect()
    }
}

impl Drop for FanOutEnd {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.commands.send(Command::Quit);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        // The publisher removes its socket when it ends; this covers a peer that died.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn consumer_thread(
    index: usize,
    target: Target,
    buffers: usize,
    commands: mpsc::Receiver<Command>,
    results: mpsc::Sender<Result<ConsumerBatch, String>>,
) {
    let outcome = (|| -> Result<(), BenchError> {
        let mut null = NullSink::default();
        let caps = null.caps();
        let mut sub = Subscriber::to(
            target,
            SubscriberOptions {
                name: format!("fan-out consumer {index}"),
                fences: caps.fences,
                kinds: caps.kinds,
                formats: caps.formats,
                stall_timeout: FRAME_PATIENCE,
                connect_timeout: Some(FRAME_PATIENCE),
                ..SubscriberOptions::default()
            },
        )?;
        // Joined.
        match sub.next(Some(FRAME_PATIENCE))? {
            SubscriberEvent::Connected { producer, .. } => null.start(&StreamInfo {
                producer: producer.name,
                pattern: None,
            })?,
            other => return Err(unexpected("Connected", &other)),
        }
        let _ = results.send(Ok(ConsumerBatch::default()));
        // The pool.
        for _ in 0..buffers {
            match sub.next(Some(FRAME_PATIENCE))? {
                SubscriberEvent::BufferAdded { id, buffer } => null.add_buffer(id, &buffer)?,
                other => return Err(unexpected("AddBuffer", &other)),
            }
        }
        let _ = results.send(Ok(ConsumerBatch::default()));
        while let Ok(Command::Run(frames)) = commands.recv() {
            let mut batch = ConsumerBatch {
                latency_ns: Vec::with_capacity(frames as usize),
                cpu_ns: 0,
            };
            let cpu0 = thread_cpu_ns();
            for _ in 0..frames {
                let mut f = match sub.next(Some(FRAME_PATIENCE))? {
                    SubscriberEvent::Frame(f) => f,
                    other => return Err(unexpected("a Frame", &other)),
                };
                batch
                    .latency_ns
                    .push(f.received_ns.saturating_sub(f.timestamp_ns));
                let acquire = f.take_acquire_fence();
                let out = null.frame(FrameIn {
                    id: f.id,
                    seq: f.seq,
                    buffer: f.buffer(),
                    acquire,
                    meta: &f.meta,
                })?;
                f.release(out.release)?;
            }
            batch.cpu_ns = thread_cpu_ns() - cpu0;
            if results.send(Ok(batch)).is_err() {
                break;
            }
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        let _ = results.send(Err(e.to_string()));
    }
}

fn unexpected(wanted: &str, got: &SubscriberEvent) -> BenchError {
    BenchError::Peer(format!("expected {wanted}, got {got:?}"))
}
