//! The worked example of `core/FORMAT.md`, computed by the real encoder and decoder.
//!
//! The hex dumps below are pasted verbatim in `FORMAT.md`, and the tests check both that the code
//! still produces them and that the document still contains them, so neither can drift. To print
//! the dumps again: `cargo test -p lamina-core --test format_example -- --nocapture`.

use lamina_core::crc::{Crc32c, crc32c};
use lamina_core::decode::{Decoded, End, Mode, SegmentDecoder, min_window};
use lamina_core::record::{self, Kind};
use lamina_core::segment::SegmentHeader;
use lamina_core::{Lsn, SegmentId};

/// The document these dumps are pasted into.
const FORMAT_MD: &str = include_str!("../FORMAT.md");

/// The example segment: the first segment of log `0x0123456789abcdef`, core 0.
fn example_header() -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id: 0x0123_4567_89ab_cdef,
        sequence: SegmentId(0),
        nonce: 0x5eed_5eed_0000_0001,
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    }
}

/// The example record: the log's first record, nothing durable yet, payload "hello".
fn example_record() -> [u8; 40] {
    let mut frame = [0u8; 40];
    let n = record::encode(
        &mut frame,
        &example_header().seed(),
        Lsn(1),
        Lsn::ZERO,
        Kind::Data,
        b"hello",
    )
    .unwrap();
    assert_eq!(n, 40);
    frame
}

/// `offset: 8 bytes  8 bytes`, 16 bytes a row, as in `FORMAT.md`.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        out.push_str(&format!("{:04x}:", row * 16));
        for (i, b) in chunk.iter().enumerate() {
            if i == 8 {
                out.push(' ');
            }
            out.push_str(&format!(" {b:02x}"));
        }
        out.push('\n');
    }
    out
}

const HEADER_DUMP: &str = "\
0000: 89 4c 41 4d 0d 0a 1a 0a  01 00 00 00 00 00 00 00
0010: ef cd ab 89 67 45 23 01  00 00 00 00 00 00 00 00
0020: 01 00 00 00 ed 5e ed 5e  01 00 00 00 00 00 00 00
0030: 00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00
0040: 00 00 00 00 07 71 f4 d5
";

const RECORD_DUMP: &str = "\
0000: 70 ef 08 3f 0b 44 a2 7b  01 00 00 00 00 00 00 00
0010: 00 00 00 00 00 00 00 00  05 00 00 00 01 00 00 00
0020: 68 65 6c 6c 6f 00 00 00
";

#[test]
fn crc32c_check_value_is_the_catalogued_one() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn example_segment_header_has_the_documented_bytes() {
    let bytes = example_header().emit();
    let dump = hex_dump(&bytes);
    println!("segment header:\n{dump}");
    assert_eq!(dump, HEADER_DUMP);
    // The header checksum is a plain CRC32C of bytes 0..68, stored little-endian at 68..72.
    assert_eq!(crc32c(&bytes[..68]), 0xD5F4_7107);
    assert_eq!(bytes[68..72], 0xD5F4_7107_u32.to_le_bytes());
    assert_eq!(SegmentHeader::parse(&bytes), Ok(example_header()));
}

#[test]
fn example_hello_record_has_the_documented_bytes() {
    let frame = example_record();
    let dump = hex_dump(&frame);
    println!("record:\n{dump}");
    assert_eq!(dump, RECORD_DUMP);
}

#[test]
fn example_frame_checksums_are_one_crc32c_over_seed_then_covered_bytes() {
    let header = example_header().emit();
    let frame = example_record();
    let seed = &header[16..40];
    // One CRC32C computation over the concatenation, not a CRC of a CRC.
    let mut header_input = seed.to_vec();
    header_input.extend_from_slice(&frame[8..32]);
    let mut body_input = seed.to_vec();
    body_input.extend_from_slice(&frame[8..40]);
    assert_eq!(crc32c(&header_input), 0x3F08_EF70);
    assert_eq!(crc32c(&body_input), 0x7BA2_440B);
    assert_eq!(
        Crc32c::new().update(seed).update(&frame[8..32]).finish(),
        0x3F08_EF70
    );
    assert_eq!(frame[0..4], 0x3F08_EF70_u32.to_le_bytes());
    assert_eq!(frame[4..8], 0x7BA2_440B_u32.to_le_bytes());
}

#[test]
fn example_segment_decodes_to_one_record_and_a_clean_end() {
    let mut segment = example_header().emit().to_vec();
    segment.extend_from_slice(&example_record());
    // A pre-zeroed file: the space after the record is zeros.
    segment.resize(4096, 0);
    let mut window = vec![0u8; min_window(64)];
    let mut decoder = SegmentDecoder::new(&mut window, Mode::Strict);
    let mut rest = &segment[..];
    let mut seen = Vec::new();
    let end = loop {
        match decoder.poll() {
            Decoded::NeedMore if rest.is_empty() => decoder.finish(),
            Decoded::NeedMore => {
                let n = decoder.feed(rest);
                rest = &rest[n..];
            }
            Decoded::Header(h) => assert_eq!(h, example_header()),
            Decoded::Record(r) => seen.push((r.header.lsn, r.header.kind, r.payload.to_vec())),
            Decoded::End(end) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(seen, vec![(Lsn(1), Kind::Data, b"hello".to_vec())]);
    assert_eq!(
        end,
        End::Clean {
            offset: 112,
            next_lsn: Lsn(2)
        }
    );
}

#[test]
fn format_md_contains_the_example_dumps_verbatim() {
    assert!(
        FORMAT_MD.contains(HEADER_DUMP),
        "FORMAT.md lost the segment header dump"
    );
    assert!(
        FORMAT_MD.contains(RECORD_DUMP),
        "FORMAT.md lost the record dump"
    );
}
