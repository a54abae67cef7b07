//! Tests of the C API, calling the C functions from Rust.

mod header;
