//! Fuzz target `wire_decode`: see `frameshare_fuzz::wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    frameshare_fuzz::wire::run(data);
});
