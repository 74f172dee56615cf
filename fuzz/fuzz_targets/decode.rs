//! Arbitrary bytes into the segment decoder: the first byte picks the chunk size and the mode,
//! the rest is the segment. Nothing may panic, the decoder must finish, and what it reports must
//! be consistent whatever the chunking (see `lamina_fuzz::check_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, segment)) = data.split_first() else {
        return;
    };
    lamina_fuzz::check_decode(control, segment);
});
