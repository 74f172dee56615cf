//! Arbitrary bytes into the checkpoint manifest decoder. Nothing may panic, and a manifest that
//! decodes must be valid and survive re-encoding (see `lamina_fuzz::manifest::check_manifest`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lamina_fuzz::manifest::check_manifest(data);
});
