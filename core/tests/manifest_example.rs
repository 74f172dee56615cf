//! The worked example of the "Checkpoint manifest" section of `core/FORMAT.md`, computed by the
//! real encoder and decoder.
//!
//! The hex dump below is pasted verbatim in `FORMAT.md`, and the tests check both that the code
//! still produces it and that the document still contains it, so neither can drift. To print the
//! dump again: `cargo test -p lamina-core --test manifest_example -- --nocapture`.

use lamina_core::crc::crc32c;
use lamina_core::manifest::{List, Manifest, Part, SourceOffset, WalPosition};
use lamina_core::{Lsn, SegmentId};

/// The document the dump is pasted into.
const FORMAT_MD: &str = include_str!("../FORMAT.md");

const WAL: [WalPosition; 2] = [
    WalPosition {
        core: 0,
        lsn: Lsn(40),
        segment: SegmentId(0),
    },
    WalPosition {
        core: 1,
        lsn: Lsn(300),
        segment: SegmentId(1),
    },
];

const PARTS: [Part<'static>; 1] = [Part {
    operator: "sum",
    partition: 0,
    key: "2-sum-0",
    size: 4096,
    crc: 0xdead_beef,
    written_by: 2,
}];

const OFFSETS: [SourceOffset<'static>; 1] = [SourceOffset {
    connector: "kafka",
    bytes: &[0x01, 0x02],
}];

/// Checkpoint 2 of two cores, over checkpoint 1.
fn example() -> Manifest<'static> {
    Manifest {
        id: 2,
        epoch: 5,
        parent: Some(1),
        timestamp: 1_764_000_000_000,
        watermark: 1000,
        wal: List::new(&WAL),
        parts: List::new(&PARTS),
        offsets: List::new(&OFFSETS),
    }
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

fn encoded() -> Vec<u8> {
    let m = example();
    let mut buf = vec![0u8; m.encoded_len()];
    assert_eq!(m.encode(&mut buf), Ok(buf.len()));
    buf
}

const DUMP: &str = "\
0000: 89 4c 4d 46 0d 0a 1a 0a  01 00 00 00 34 00 00 00
0010: 02 05 01 01 80 d0 df b4  ab 33 d0 0f 02 00 28 00
0020: 01 ac 02 01 01 03 73 75  6d 00 07 32 2d 73 75 6d
0030: 2d 30 80 20 ef fd b6 f5  0d 02 01 05 6b 61 66 6b
0040: 61 02 01 02 5b 7e ba c2
";

#[test]
fn example_fields_sit_where_the_document_says() {
    let bytes = encoded();
    assert_eq!(bytes.len(), 72);
    // Header: body_len 0x34 = 52, so the checksum sits at 16 + 52 = 0x44.
    assert_eq!(bytes[12..16], 52u32.to_le_bytes());
    assert_eq!(crc32c(&bytes[..0x44]), 0xc2ba_7e5b);
    assert_eq!(bytes[0x44..], 0xc2ba_7e5b_u32.to_le_bytes());
    // Varints: the timestamp takes 6 bytes, the watermark is zigzag (1000 -> 2000).
    assert_eq!(bytes[0x14..0x1a], [0x80, 0xd0, 0xdf, 0xb4, 0xab, 0x33]);
    assert_eq!(bytes[0x1a..0x1c], [0xd0, 0x0f]);
    // The part's CRC32C field is a varint u32, not 4 fixed bytes.
    assert_eq!(bytes[0x34..0x39], [0xef, 0xfd, 0xb6, 0xf5, 0x0d]);
    assert_eq!(&bytes[0x3c..0x41], b"kafka");
}

#[test]
fn example_manifest_has_the_documented_bytes() {
    let bytes = encoded();
    let dump = hex_dump(&bytes);
    println!("manifest ({} bytes):\n{dump}", bytes.len());
    assert_eq!(dump, DUMP);
}

#[test]
fn example_manifest_decodes_to_the_example() {
    let bytes = encoded();
    assert_eq!(Manifest::decode(&bytes), Ok(example()));
}

#[test]
fn format_md_contains_the_example_dump_verbatim() {
    assert!(FORMAT_MD.contains(DUMP), "FORMAT.md lost the manifest dump");
}
