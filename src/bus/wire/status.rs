//! `Status`: a producer's live view of its stream, sent to a monitor (`frameshare ls`/`top`):
//! the stream, its format, its rate, and each consumer with its policy and counters.

use super::codec::{Reader, Writer};
use super::{Policy, WireError};
use crate::format::Fourcc;

/// Most consumers one `Status` lists (the rest are counted, not listed).
pub const MAX_LISTED_CONSUMERS: usize = 100;

/// One consumer of a stream, as its producer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ConsumerStatus {
    /// Its process id (from the socket's peer credentials).
    pub pid: u32,
    /// Its user id (likewise).
    pub uid: u32,
    /// What it said it is (its sink: `verify`, `vulkan`, …).
    pub name: String,
    /// Its policy.
    #[serde(serialize_with = "policy_name")]
    pub policy: Policy,
    /// Frames sent to it.
    pub delivered: u64,
    /// Frames it skipped (its policy), or that were dropped for it.
    pub dropped: u64,
    /// Buffers it holds now.
    pub held: u32,
}

fn policy_name<S: serde::Serializer>(p: &Policy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

/// A stream, as its producer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct StreamStatus {
    /// The stream's name (empty for a producer on a bare socket path).
    pub stream: String,
    /// The producer's process id.
    pub pid: u32,
    /// What the producer is (`generator:box`, `v4l2:/dev/video1`, …).
    pub source: String,
    /// The frames' format (empty before the first buffer).
    pub format: String,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// The buffers' memory kind.
    pub memory: String,
    /// Buffers in the pool.
    pub buffers: u32,
    /// Frames produced so far.
    pub frames: u64,
    /// Frames per second over the last second or so, thousandths.
    pub fps_milli: u64,
    /// Consumers connected now (may exceed `consumers.len()`).
    pub consumer_count: u32,
    /// The consumers, up to [`MAX_LISTED_CONSUMERS`].
    pub consumers: Vec<ConsumerStatus>,
}

impl StreamStatus {
    pub(super) fn write(&self, w: &mut Writer<'_>) {
        w.text(&self.stream);
        w.u32(self.pid);
        w.text(&self.source);
        w.text(&self.format);
        w.u32(self.width);
        w.u32(self.height);
        w.text(&self.memory);
        w.u32(self.buffers);
        w.u64(self.frames);
        w.u64(self.fps_milli);
        w.u32(self.consumer_count);
        let listed = &self.consumers[..self.consumers.len().min(MAX_LISTED_CONSUMERS)];
        w.u16(listed.len() as u16);
        for c in listed {
            w.u32(c.pid);
            w.u32(c.uid);
            w.text(&c.name);
            w.u8(c.policy.to_wire());
            w.u64(c.delivered);
            w.u64(c.dropped);
            w.u32(c.held);
        }
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<StreamStatus, WireError> {
        let mut s = StreamStatus {
            stream: r.text()?,
            pid: r.u32()?,
            source: r.text()?,
            format: r.text()?,
            width: r.u32()?,
            height: r.u32()?,
            memory: r.text()?,
            buffers: r.u32()?,
            frames: r.u64()?,
            fps_milli: r.u64()?,
            consumer_count: r.u32()?,
            consumers: Vec::new(),
        };
        let n = r.u16()? as usize;
        if n > MAX_LISTED_CONSUMERS {
            return Err(r.field_err("consumers", n as u64));
        }
        for _ in 0..n {
            let pid = r.u32()?;
            let uid = r.u32()?;
            let name = r.text()?;
            let p = r.u8()?;
            s.consumers.push(ConsumerStatus {
                pid,
                uid,
                name,
                policy: Policy::from_wire(p).ok_or_else(|| r.field_err("policy", p as u64))?,
                delivered: r.u64()?,
                dropped: r.u64()?,
                held: r.u32()?,
            });
        }
        Ok(s)
    }

    /// The pixel format as a fourcc, if the stream has one yet.
    pub fn fourcc(&self) -> Option<Fourcc> {
        self.format.parse().ok()
    }
}
