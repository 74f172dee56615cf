//! Like `decode`, with a valid segment header in front of the fuzzer's bytes, so that every input
//! reaches record decoding and the damage scan (see `lamina_fuzz::check_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, frames)) = data.split_first() else {
        return;
    };
    let mut segment = lamina_fuzz::prefix_header().emit().to_vec();
    segment.extend_from_slice(frames);
    lamina_fuzz::check_decode(control, &segment);
});
