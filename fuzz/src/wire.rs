//! `wire_decode`: the first input byte is the number of fds that "arrived" (`% 7`), the rest is
//! one datagram. Decoding must not panic; a message that decodes must re-encode into a
//! datagram that decodes to the same message with the fds the message implies, that fits the
//! largest datagram, and whose encoding is stable (encode ∘ decode ∘ encode = encode).

use frameshare::bus::wire::{Message, MAX_MESSAGE};

/// Runs the property on one input; the message if it decoded.
pub fn run(data: &[u8]) -> Option<Message> {
    let (&fds, bytes) = data.split_first()?;
    let fds = fds as usize % (crate::script::MAX_SCRIPT_FDS + 1);
    let msg = Message::decode(bytes, fds).ok()?;
    assert_eq!(
        msg.fd_count(),
        fds,
        "decoded {} with the wrong fd count",
        msg.name()
    );
    let mut encoded = Vec::new();
    msg.encode(&mut encoded);
    assert!(
        encoded.len() <= MAX_MESSAGE,
        "{} re-encodes to {} bytes",
        msg.name(),
        encoded.len()
    );
    assert!(
        encoded.len() <= bytes.len(),
        "{} re-encodes to {} bytes, more than the {} it was decoded from",
        msg.name(),
        encoded.len(),
        bytes.len()
    );
    let again = Message::decode(&encoded, msg.fd_count())
        .unwrap_or_else(|e| panic!("{msg:?} re-encoded does not decode: {e}"));
    assert_eq!(again, msg, "round trip changed the message");
    let mut encoded_again = Vec::new();
    again.encode(&mut encoded_again);
    assert_eq!(encoded_again, encoded, "encoding is not stable");
    Some(msg)
}
