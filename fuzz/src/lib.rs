//! The harnesses behind frameshare's fuzz targets: a byte script format that the fuzzer mutates
//! (and that [`seeds`] writes from real messages), the kinds of fds a hostile peer can attach
//! ([`fds`]), the leak checks run after every input ([`leaks`]), and the three properties:
//! [`wire`] (decode, and a decoded message round-trips), [`subscriber`] and [`publisher`] (a
//! session with a peer played by the input: no panic, no hang, no fd or mapping leak, and the
//! publisher never fails because of what one consumer sent).
//!
//! # Script format
//! Session inputs are a flags byte, then operations, each an opcode byte and its operands (see
//! each target). A datagram operand is `len: u16 LE`, `bytes[len]`, `nfds: u8` (`% 7`: 0–6, so
//! more fds than one message may carry can be sent), then per fd `kind: u8` ([`fds::FdKind`],
//! `% 8`) and `size: u32 LE` ([`fds::FIT`] sizes the fd for the plane layout the datagram
//! announces, if it is an `AddBuffer`). Reading past the end of the input ends the script.

pub mod fds;
pub mod leaks;
pub mod publisher;
pub mod script;
pub mod seeds;
pub mod subscriber;
pub mod wire;
