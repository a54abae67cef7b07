//! Fuzz target `subscriber_session`: see `frameshare_fuzz::subscriber`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    frameshare_fuzz::subscriber::run(data);
});
