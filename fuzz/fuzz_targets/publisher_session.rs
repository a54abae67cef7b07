//! Fuzz target `publisher_session`: see `frameshare_fuzz::publisher`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    frameshare_fuzz::publisher::run(data);
});
