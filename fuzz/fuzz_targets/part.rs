//! Arbitrary bytes into the key-value snapshot part parser. Nothing may panic, and a part that
//! parses must be canonical (see `lamina_fuzz::part::check_part`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lamina_fuzz::part::check_part(data);
});
