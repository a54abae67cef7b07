//! Tests of the C API, calling the C functions from Rust (unit tests: the crate has no rlib).

mod api;
mod header;
