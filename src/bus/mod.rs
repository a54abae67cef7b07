//! The frame bus: named streams, one producer and any number of consumers, each with its own
//! policy. The [`Publisher`] owns a buffer pool and sends each buffer's fds once per consumer;
//! frames are ids. The [`Subscriber`] checks and imports each buffer, hands frames out (given
//! back when dropped), and can wait for a restarted producer. Underneath: the wire format
//! ([`wire`]), the SEQPACKET + SCM_RIGHTS channel ([`socket`]), stream names and their
//! sockets ([`name`]), and who may connect ([`access`]).

pub mod access;
pub mod monitor;
pub mod name;
mod poller;
pub mod publisher;
pub mod socket;
pub mod subscriber;
pub mod wire;

pub use access::AccessPolicy;
pub use name::{NameError, StreamName};
pub use poller::Waker;
pub use publisher::{Loan, PublishError, Publisher, PublisherOptions, PublisherStats, WhenFull};
pub use socket::{Channel, ChannelError, Credentials, Listener};
pub use subscriber::{Frame, SubscribeError, Subscriber, SubscriberEvent, SubscriberOptions};
pub use wire::{ByeCode, Policy, StreamStatus};

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), the clock frames are stamped with unless
/// their metadata names another.
pub fn monotonic_ns() -> u64 {
    crate::meta::Clock::Monotonic.now_ns()
}

#[cfg(test)]
mod tests {
    /// An application moves its publisher or subscriber to the thread (or task) that runs it.
    #[test]
    fn publisher_and_subscriber_are_send() {
        fn send<T: Send>() {}
        send::<super::Publisher>();
        send::<super::Subscriber>();
        send::<super::Frame>();
    }
}
