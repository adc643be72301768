//! Fuzz target `fast_path`: see `checks::fast_path`.
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::fast_path(data));
