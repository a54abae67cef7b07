//! A live view of running streams (`frameshare ls`, `frameshare top`, like `pw-top`): each
//! stream's producer is asked, as a monitor, for its [`StreamStatus`] — format, rate, and every
//! consumer with its policy and counters. A monitor takes no frames and no buffers.

use std::path::Path;
use std::time::Duration;

use super::name::{self, NameError, StreamName};
use super::socket::{Channel, ChannelError};
use super::wire::{ByeCode, Hello, Message, Role, StreamStatus};

/// Errors asking a producer for its status.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The channel failed (no producer there: a stale socket).
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The producer refused or answered something else.
    #[error("{0}")]
    Answer(String),
}

/// Asks the producer at `path` for its status (waiting at most `timeout` for the answer).
pub fn status_at(path: &Path, timeout: Duration) -> Result<StreamStatus, MonitorError> {
    let mut chan = Channel::connect(path)?;
    let hello = |m: &mut Channel| {
        m.send(
            &Message::Hello(Hello {
                role: Role::Monitor,
                name: "monitor".into(),
                ..Hello::default()
            }),
            &[],
        )
    };
    loop {
        match chan.recv_timeout(Some(timeout))? {
            (Message::Hello(h), _) if h.role == Role::Producer => hello(&mut chan)?,
            (Message::Status(s), _) => return Ok(s),
            (Message::Bye { code, reason }, _) if code != ByeCode::Done => {
                return Err(MonitorError::Answer(format!("{reason} ({code})")))
            }
            (m, _) => {
                return Err(MonitorError::Answer(format!(
                    "the producer answered {} instead of its status",
                    m.name()
                )))
            }
        }
    }
}

/// A stream found in the runtime directory.
#[derive(Debug)]
pub struct StreamEntry {
    /// Its name.
    pub name: StreamName,
    /// Its status, or why it could not be had (a stale socket: its producer died).
    pub status: Result<StreamStatus, MonitorError>,
}

/// Every stream in [`name::runtime_dir`], each asked for its status.
pub fn streams(timeout: Duration) -> Result<Vec<StreamEntry>, NameError> {
    Ok(name::list()?
        .into_iter()
        .map(|n| {
            let status = n
                .socket_path()
                .map_err(|e| MonitorError::Answer(e.to_string()))
                .and_then(|p| status_at(&p, timeout));
            StreamEntry { name: n, status }
        })
        .collect())
}
