//! The checkpoint manifest's encoding: round trips of arbitrary manifests, damage (every bit flip,
//! every truncation, hostile bytes) always an error, and each framing and content rule failing
//! with its own error.
//!
//! `LAMINA_MANIFEST_CASES` sets the proptest case count (default 64).

use lamina_core::crc::crc32c;
use lamina_core::manifest::{
    CRC_LEN, DecodeError, EncodeError, HEADER_LEN, Invalid, KeyError, List, MAGIC, MAX_BODY_LEN,
    MAX_KEY_LEN, Manifest, Part, SourceOffset, VERSION, WalPosition,
};
use lamina_core::{Lsn, SegmentId};
use proptest::prelude::*;

/// A manifest's content in owned form, for strategies to build and tests to borrow from.
#[derive(Clone, Debug)]
struct Owned {
    id: u64,
    epoch: u64,
    parent: Option<u64>,
    timestamp: u64,
    watermark: i64,
    wal: Vec<WalPosition>,
    parts: Vec<(String, u32, String, u64, u32, u64)>,
    offsets: Vec<(String, Vec<u8>)>,
}

impl Owned {
    fn with<R>(&self, f: impl FnOnce(&Manifest<'_>) -> R) -> R {
        let parts: Vec<Part<'_>> = self
            .parts
            .iter()
            .map(|(operator, partition, key, size, crc, written_by)| Part {
                operator,
                partition: *partition,
                key,
                size: *size,
                crc: *crc,
                written_by: *written_by,
            })
            .collect();
        let offsets: Vec<SourceOffset<'_>> = self
            .offsets
            .iter()
            .map(|(connector, bytes)| SourceOffset { connector, bytes })
            .collect();
        f(&Manifest {
            id: self.id,
            epoch: self.epoch,
            parent: self.parent,
            timestamp: self.timestamp,
            watermark: self.watermark,
            wal: List::new(&self.wal),
            parts: List::new(&parts),
            offsets: List::new(&offsets),
        })
    }

    fn encode(&self) -> Vec<u8> {
        self.with(|m| {
            let mut buf = vec![0u8; m.encoded_len()];
            let n = m.encode(&mut buf).expect("a valid manifest encodes");
            assert_eq!(n, buf.len());
            buf
        })
    }
}

/// A small valid manifest with one entry in every list.
fn sample() -> Owned {
    Owned {
        id: 7,
        epoch: 3,
        parent: Some(6),
        timestamp: 1_764_000_000_000,
        watermark: -5,
        wal: vec![
            WalPosition {
                core: 0,
                lsn: Lsn(100),
                segment: SegmentId(2),
            },
            WalPosition {
                core: 1,
                lsn: Lsn(90),
                segment: SegmentId(1),
            },
        ],
        parts: vec![
            ("join".into(), 0, "7-join-0".into(), 4096, 0xdead_beef, 7),
            ("join".into(), 1, "5-join-1".into(), 10, 0x1234_5678, 5),
        ],
        offsets: vec![("kafka".into(), vec![1, 2, 3])],
    }
}

/// Frames `body` as the format says, with any magic, version, flags and stated length: the test's
/// own writer, so that bytes the encoder refuses to produce can be decoded.
fn frame(magic: [u8; 8], version: u16, flags: u16, stated: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&stated.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The postcard body of `m`, without the encoder's content checks.
fn raw_body(m: &Manifest<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    let n = postcard::to_slice(m, &mut buf).unwrap().len();
    buf.truncate(n);
    buf
}

/// Frames `m` correctly, whether or not its content is valid.
fn raw_encode(m: &Manifest<'_>) -> Vec<u8> {
    let body = raw_body(m);
    frame(MAGIC, VERSION, 0, body.len() as u32, &body)
}

fn cases() -> u32 {
    std::env::var("LAMINA_MANIFEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Object keys that pass `validate_key`, short and at the limit.
fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{1,40}".prop_filter("not a dot name", |k| k != "." && k != ".."),
        Just("k".repeat(MAX_KEY_LEN)),
    ]
}

fn u64_edge() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), any::<u64>()]
}

fn owned_strategy() -> impl Strategy<Value = Owned> {
    (u64_edge(), u64_edge(), any::<Option<prop::sample::Index>>())
        .prop_flat_map(|(id, epoch, parent)| {
            // A parent below the id (64-bit `usize` holds every id).
            let parent = parent
                .filter(|_| id > 0)
                .map(|i| i.index(id as usize) as u64);
            let wal = prop::collection::btree_map(any::<u32>(), (u64_edge(), u64_edge()), 0..6)
                .prop_map(|m| {
                    m.into_iter()
                        .map(|(core, (lsn, segment))| WalPosition {
                            core,
                            lsn: Lsn(lsn),
                            segment: SegmentId(segment),
                        })
                        .collect::<Vec<_>>()
                });
            let parts = prop::collection::btree_map(
                (".{0,12}", any::<u32>()),
                (key_strategy(), u64_edge(), any::<u32>(), 0..=id),
                0..6,
            )
            .prop_map(|m| {
                m.into_iter()
                    .map(|((op, partition), (key, size, crc, by))| {
                        (op, partition, key, size, crc, by)
                    })
                    .collect::<Vec<_>>()
            });
            let offsets = prop::collection::btree_map(
                ".{0,12}",
                prop::collection::vec(any::<u8>(), 0..40),
                0..4,
            )
            .prop_map(|m| m.into_iter().collect::<Vec<_>>());
            (
                Just((id, epoch, parent)),
                any::<u64>(),
                prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()],
                wal,
                parts,
                offsets,
            )
        })
        .prop_map(
            |((id, epoch, parent), timestamp, watermark, wal, parts, offsets)| Owned {
                id,
                epoch,
                parent,
                timestamp,
                watermark,
                wal,
                parts,
                offsets,
            },
        )
}

/// The errors a damaged frame may give: never a parse of another manifest.
fn is_damage(e: &DecodeError) -> bool {
    matches!(
        e,
        DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::BadMagic
            | DecodeError::UnsupportedVersion { .. }
            | DecodeError::BodyTooLong { .. }
            | DecodeError::ChecksumMismatch { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_manifests_round_trip(owned in owned_strategy()) {
        let bytes = owned.encode();
        owned.with(|m| -> Result<(), TestCaseError> {
            let decoded = Manifest::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&decoded, m);
            prop_assert_eq!(decoded.wal.len(), owned.wal.len());
            prop_assert_eq!(decoded.parts.iter().count(), owned.parts.len());
            prop_assert_eq!(decoded.offsets.iter().len(), owned.offsets.len());
            // A decoded manifest encodes to the same bytes.
            let mut again = vec![0u8; decoded.encoded_len()];
            prop_assert_eq!(decoded.encode(&mut again), Ok(bytes.len()));
            prop_assert_eq!(&again, &bytes);
            Ok(())
        })?;
    }

    #[test]
    fn every_single_bit_flip_is_detected(owned in owned_strategy()) {
        let bytes = owned.encode();
        let mut damaged = bytes.clone();
        for bit in 0..bytes.len() * 8 {
            damaged[bit / 8] ^= 1 << (bit % 8);
            let result = Manifest::decode(&damaged);
            prop_assert!(
                matches!(&result, Err(e) if is_damage(e)),
                "bit {} flipped: {:?}", bit, result
            );
            damaged[bit / 8] ^= 1 << (bit % 8);
        }
    }

    #[test]
    fn truncation_at_every_length_is_an_error(owned in owned_strategy()) {
        let bytes = owned.encode();
        for len in 0..bytes.len() {
            let result = Manifest::decode(&bytes[..len]);
            let expected_needed = if len < HEADER_LEN { HEADER_LEN } else { bytes.len() };
            prop_assert_eq!(
                result,
                Err(DecodeError::Truncated { len, needed: expected_needed })
            );
        }
    }

    #[test]
    fn hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Manifest::decode(&bytes);
    }

    #[test]
    fn hostile_bodies_behind_a_valid_frame_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let bytes = frame(MAGIC, VERSION, 0, body.len() as u32, &body);
        // A body that happens to parse is a valid manifest in every respect.
        if let Ok(m) = Manifest::decode(&bytes) {
            prop_assert_eq!(m.validate(), Ok(()));
            prop_assert_eq!(m.wal.iter().count(), m.wal.len());
            prop_assert_eq!(m.parts.iter().count(), m.parts.len());
            prop_assert_eq!(m.offsets.iter().count(), m.offsets.len());
        }
    }

    #[test]
    fn damaged_bodies_behind_a_valid_frame_never_panic(
        owned in owned_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        // A writer's bug, not storage damage: the checksum is made to match, so every edit
        // reaches the body parser and the content rules.
        let mut body = owned.with(raw_body);
        for (at, byte) in edits {
            let at = at.index(body.len());
            body[at] = byte;
        }
        let bytes = frame(MAGIC, VERSION, 0, body.len() as u32, &body);
        if let Ok(m) = Manifest::decode(&bytes) {
            prop_assert_eq!(m.validate(), Ok(()));
            prop_assert_eq!(m.wal.iter().count(), m.wal.len());
            prop_assert_eq!(m.parts.iter().count(), m.parts.len());
            prop_assert_eq!(m.offsets.iter().count(), m.offsets.len());
            // What decodes encodes again, and decodes to the same manifest.
            let mut again = vec![0u8; m.encoded_len()];
            let n = m.encode(&mut again).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(Manifest::decode(&again[..n]), Ok(m));
        }
    }
}

#[test]
fn empty_lists_and_extreme_values_round_trip() {
    let first = Owned {
        id: 0,
        epoch: 0,
        parent: None,
        timestamp: 0,
        watermark: i64::MIN,
        wal: vec![],
        parts: vec![],
        offsets: vec![],
    };
    let extreme = Owned {
        id: u64::MAX,
        epoch: u64::MAX,
        parent: Some(u64::MAX - 1),
        timestamp: u64::MAX,
        watermark: i64::MAX,
        wal: vec![WalPosition {
            core: u32::MAX,
            lsn: Lsn::MAX,
            segment: SegmentId(u64::MAX),
        }],
        parts: vec![(
            String::new(),
            u32::MAX,
            "k".repeat(MAX_KEY_LEN),
            u64::MAX,
            u32::MAX,
            u64::MAX,
        )],
        offsets: vec![(String::new(), vec![0xff; 1000])],
    };
    for owned in [first, extreme] {
        let bytes = owned.encode();
        owned.with(|m| assert_eq!(Manifest::decode(&bytes).as_ref(), Ok(m)));
    }
}

#[test]
fn bad_magic_is_named() {
    let mut bytes = sample().encode();
    bytes[1] = b'X';
    assert_eq!(Manifest::decode(&bytes), Err(DecodeError::BadMagic));
    // A log segment is not a manifest.
    let mut segment = sample().encode();
    segment[..8].copy_from_slice(b"\x89LAM\r\n\x1a\n");
    assert_eq!(Manifest::decode(&segment), Err(DecodeError::BadMagic));
}

#[test]
fn unknown_version_is_named_before_the_checksum() {
    let mut bytes = sample().encode();
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    let e = Manifest::decode(&bytes).unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedVersion { version: 2 });
    assert_eq!(
        e.to_string(),
        "manifest format version 2 is not supported (this build reads 1)"
    );
}

#[test]
fn huge_stated_length_is_an_error_not_a_read() {
    for stated in [MAX_BODY_LEN as u32 + 1, u32::MAX] {
        let bytes = frame(MAGIC, VERSION, 0, stated, b"");
        assert_eq!(
            Manifest::decode(&bytes),
            Err(DecodeError::BodyTooLong { len: stated })
        );
    }
    // Within the limit but beyond the buffer: truncated.
    let bytes = frame(MAGIC, VERSION, 0, 1000, b"");
    assert_eq!(
        Manifest::decode(&bytes),
        Err(DecodeError::Truncated {
            len: HEADER_LEN + CRC_LEN,
            needed: HEADER_LEN + 1000 + CRC_LEN
        })
    );
}

#[test]
fn bytes_after_the_checksum_are_refused() {
    let mut bytes = sample().encode();
    let expected = bytes.len();
    bytes.push(0);
    assert_eq!(
        Manifest::decode(&bytes),
        Err(DecodeError::TrailingBytes {
            len: expected + 1,
            expected
        })
    );
}

#[test]
fn damaged_body_is_a_checksum_mismatch() {
    let mut bytes = sample().encode();
    bytes[HEADER_LEN + 3] ^= 0x10;
    assert!(matches!(
        Manifest::decode(&bytes),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
}

#[test]
fn unknown_flags_are_refused() {
    let body = sample().with(raw_body);
    let bytes = frame(MAGIC, VERSION, 1, body.len() as u32, &body);
    assert_eq!(
        Manifest::decode(&bytes),
        Err(DecodeError::UnsupportedFlags { flags: 1 })
    );
}

#[test]
fn body_that_does_not_parse_is_malformed_with_its_offset() {
    // id 1, epoch 0, parent tag 2 (neither None nor Some).
    let bytes = frame(MAGIC, VERSION, 0, 3, &[1, 0, 2]);
    assert!(matches!(
        Manifest::decode(&bytes),
        Err(DecodeError::Malformed { at: 2, .. })
    ));
    // A body cut short inside a list.
    let mut body = sample().with(raw_body);
    body.truncate(body.len() - 2);
    let bytes = frame(MAGIC, VERSION, 0, body.len() as u32, &body);
    assert!(matches!(
        Manifest::decode(&bytes),
        Err(DecodeError::Malformed { .. })
    ));
    // A list count far beyond the bytes: the loop ends at the body's end.
    let bytes = frame(
        MAGIC,
        VERSION,
        0,
        10,
        &[1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f],
    );
    assert!(matches!(
        Manifest::decode(&bytes),
        Err(DecodeError::Malformed { at: 10, .. })
    ));
}

#[test]
fn invalid_utf8_in_a_name_is_malformed() {
    let mut owned = sample();
    owned.offsets = vec![("\u{7f}".into(), vec![])];
    let mut body = owned.with(raw_body);
    // The connector name is the body's last string but for the offset bytes: its one byte sits
    // right before the bytes' length (0) at the end.
    let at = body.len() - 2;
    assert_eq!(body[at], 0x7f);
    body[at] = 0xff;
    let bytes = frame(MAGIC, VERSION, 0, body.len() as u32, &body);
    assert!(matches!(
        Manifest::decode(&bytes),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn bytes_after_the_last_field_are_refused() {
    let mut body = sample().with(raw_body);
    body.push(0);
    let bytes = frame(MAGIC, VERSION, 0, body.len() as u32, &body);
    assert_eq!(
        Manifest::decode(&bytes),
        Err(DecodeError::TrailingBody { unused: 1 })
    );
}

/// `owned` is refused by the encoder, and its raw frame by the decoder, both with `expected`.
fn assert_invalid(owned: &Owned, expected: Invalid) {
    owned.with(|m| {
        assert_eq!(m.validate(), Err(expected));
        let mut buf = vec![0u8; m.encoded_len()];
        assert_eq!(m.encode(&mut buf), Err(EncodeError::Invalid(expected)));
        assert_eq!(
            Manifest::decode(&raw_encode(m)),
            Err(DecodeError::Invalid(expected))
        );
    });
}

#[test]
fn parent_not_before_the_id_is_refused() {
    let mut owned = sample();
    owned.parent = Some(7);
    assert_invalid(&owned, Invalid::ParentNotBefore { id: 7, parent: 7 });
    owned.parent = Some(8);
    assert_invalid(&owned, Invalid::ParentNotBefore { id: 7, parent: 8 });
}

#[test]
fn repeated_core_is_refused() {
    let mut owned = sample();
    owned.wal[1].core = 0;
    assert_invalid(&owned, Invalid::DuplicateCore { index: 1, core: 0 });
}

#[test]
fn cores_out_of_order_are_refused() {
    let mut owned = sample();
    owned.wal.swap(0, 1);
    assert_invalid(&owned, Invalid::CoresOutOfOrder { index: 1 });
}

#[test]
fn repeated_part_is_refused() {
    let mut owned = sample();
    owned.parts[1].1 = 0;
    assert_invalid(&owned, Invalid::DuplicatePart { index: 1 });
}

#[test]
fn parts_out_of_order_are_refused() {
    let mut owned = sample();
    owned.parts.swap(0, 1);
    assert_invalid(&owned, Invalid::PartsOutOfOrder { index: 1 });
}

#[test]
fn part_written_by_a_later_checkpoint_is_refused() {
    let mut owned = sample();
    owned.parts[1].5 = 8;
    assert_invalid(
        &owned,
        Invalid::PartFromLaterCheckpoint {
            index: 1,
            written_by: 8,
            id: 7,
        },
    );
}

#[test]
fn part_keys_that_escape_the_store_are_refused() {
    let cases: [(&str, KeyError); 7] = [
        ("", KeyError::Empty),
        ("..", KeyError::DotName),
        ("../../etc/passwd", KeyError::Separator { at: 2 }),
        ("/etc/passwd", KeyError::Separator { at: 0 }),
        ("a\\b", KeyError::Separator { at: 1 }),
        ("a\0b", KeyError::Nul { at: 1 }),
        ("C:x", KeyError::Forbidden { at: 1, byte: b':' }),
    ];
    for (key, error) in cases {
        let mut owned = sample();
        owned.parts[0].2 = key.into();
        assert_invalid(&owned, Invalid::BadKey { index: 0, error });
    }
    let mut owned = sample();
    owned.parts[1].2 = "k".repeat(MAX_KEY_LEN + 1);
    assert_invalid(
        &owned,
        Invalid::BadKey {
            index: 1,
            error: KeyError::TooLong {
                len: MAX_KEY_LEN + 1,
            },
        },
    );
}

#[test]
fn repeated_connector_is_refused() {
    let mut owned = sample();
    owned.offsets.push(("kafka".into(), vec![]));
    assert_invalid(&owned, Invalid::DuplicateConnector { index: 1 });
}

#[test]
fn connectors_out_of_order_are_refused() {
    let mut owned = sample();
    owned.offsets.push(("files".into(), vec![]));
    assert_invalid(&owned, Invalid::ConnectorsOutOfOrder { index: 1 });
}

#[test]
fn short_buffer_is_refused_with_the_size_needed() {
    sample().with(|m| {
        let needed = m.encoded_len();
        let mut buf = vec![0u8; needed - 1];
        assert_eq!(
            m.encode(&mut buf),
            Err(EncodeError::BufferTooSmall {
                needed,
                available: needed - 1
            })
        );
        let mut big = vec![0xAAu8; needed + 10];
        assert_eq!(m.encode(&mut big), Ok(needed));
        assert_eq!(Manifest::decode(&big[..needed]).as_ref(), Ok(m));
    });
}

#[test]
fn body_over_the_limit_is_refused_by_the_encoder() {
    let big = vec![0u8; MAX_BODY_LEN];
    let offsets = [SourceOffset {
        connector: "c",
        bytes: &big,
    }];
    let m = Manifest {
        id: 1,
        epoch: 0,
        parent: None,
        timestamp: 0,
        watermark: 0,
        wal: List::empty(),
        parts: List::empty(),
        offsets: List::new(&offsets),
    };
    let len = m.encoded_len() - HEADER_LEN - CRC_LEN;
    assert!(len > MAX_BODY_LEN);
    assert_eq!(m.encode(&mut []), Err(EncodeError::BodyTooLong { len }));
}

#[test]
fn decoded_lists_iterate_their_entries_in_order() {
    let owned = sample();
    let bytes = owned.encode();
    let m = Manifest::decode(&bytes).unwrap();
    assert!(
        m.wal.as_slice().is_none(),
        "a decoded list borrows the bytes"
    );
    let cores: Vec<u32> = m.wal.iter().map(|w| w.core).collect();
    assert_eq!(cores, [0, 1]);
    let keys: Vec<&str> = m.parts.iter().map(|p| p.key).collect();
    assert_eq!(keys, ["7-join-0", "5-join-1"]);
    let o = m.offsets.iter().next().unwrap();
    assert_eq!((o.connector, o.bytes), ("kafka", &[1u8, 2, 3][..]));
    // The strings point into the encoded bytes: nothing was copied.
    let range = bytes.as_ptr_range();
    assert!(range.contains(&o.connector.as_ptr()));
}

#[test]
fn errors_read_as_sentences() {
    let e = DecodeError::Invalid(Invalid::BadKey {
        index: 2,
        error: KeyError::DotName,
    });
    assert_eq!(
        e.to_string(),
        "invalid manifest: snapshot part 2: object key is `.` or `..`"
    );
    assert_eq!(
        DecodeError::BadMagic.to_string(),
        "not a lamina manifest (bad magic)"
    );
    let crc = DecodeError::ChecksumMismatch {
        stored: 1,
        computed: 2,
    };
    assert_eq!(
        crc.to_string(),
        "manifest damaged: checksum 0x00000002 does not match the stored 0x00000001"
    );
}

#[test]
fn body_of_exactly_the_limit_round_trips_and_one_more_byte_is_refused() {
    // Every field but the offset bytes takes 14 bytes here (ten one-byte fields, the connector
    // name's length and byte, and a four-byte varint length of the bytes).
    let big = vec![0x5au8; MAX_BODY_LEN - 13];
    for (len, fits) in [(MAX_BODY_LEN - 14, true), (MAX_BODY_LEN - 13, false)] {
        let offsets = [SourceOffset {
            connector: "c",
            bytes: &big[..len],
        }];
        let m = Manifest {
            id: 1,
            epoch: 0,
            parent: None,
            timestamp: 0,
            watermark: 0,
            wal: List::empty(),
            parts: List::empty(),
            offsets: List::new(&offsets),
        };
        let body_len = m.encoded_len() - HEADER_LEN - CRC_LEN;
        let mut buf = vec![0u8; m.encoded_len()];
        if fits {
            assert_eq!(body_len, MAX_BODY_LEN);
            assert_eq!(m.encode(&mut buf), Ok(buf.len()));
            assert_eq!(Manifest::decode(&buf), Ok(m));
        } else {
            assert_eq!(body_len, MAX_BODY_LEN + 1);
            assert_eq!(
                m.encode(&mut buf),
                Err(EncodeError::BodyTooLong { len: body_len })
            );
        }
    }
}

#[test]
fn display_is_one_line_naming_the_checkpoint() {
    let owned = sample();
    let bytes = owned.encode();
    let m = Manifest::decode(&bytes).unwrap();
    assert_eq!(
        m.to_string(),
        "checkpoint 7 epoch 3 parent 6 timestamp 1764000000000 watermark -5 cores 2 parts 2 \
         sources 1"
    );
}
