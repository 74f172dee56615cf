//! The checks behind the `part` fuzz target, and its seeds.
//!
//! A key-value snapshot part has no checksum of its own (the manifest keeps its CRC32C), so the
//! fuzzer reaches the parser directly. The checks: no panic, and a part that parses is
//! canonical: its header and entries, encoded again, are exactly the input bytes.

use lamina_core::changelog::Entry;
use lamina_core::part::{self, ALL_BUCKETS, Header, Kind};

/// Encodes a part of `header` (its count is taken from `entries`) holding `entries`.
fn encode(header: Header, entries: &[Entry<'_>]) -> Vec<u8> {
    let header = Header {
        count: entries.len() as u64,
        ..header
    };
    let mut out = header.emit().to_vec();
    for e in entries {
        let len = e.encoded_len().expect("a parsed entry encodes") as u32;
        out.extend_from_slice(&len.to_le_bytes());
        e.emit_pieces(|p| out.extend_from_slice(p));
    }
    if header.padded {
        out.resize(out.len() + part::padding(out.len()), 0);
    }
    out
}

/// Parses `bytes` as a part and checks what a successful parse returns.
pub fn check_part(bytes: &[u8]) {
    let mut entries = Vec::new();
    let Ok(header) = part::read(bytes, |e| entries.push(e)) else {
        return;
    };
    assert_eq!(header.count, entries.len() as u64);
    assert_eq!(
        encode(header, &entries),
        bytes,
        "a parsed part is not canonical"
    );
}

/// The seed files of the `part` target: `(file name, bytes)`.
pub fn seed_files() -> Vec<(&'static str, Vec<u8>)> {
    let delta = Header {
        kind: Kind::Delta,
        core: 2,
        bucket: ALL_BUCKETS,
        buckets: 4,
        count: 0,
        padded: false,
    };
    let base = Header {
        kind: Kind::Base,
        core: 0,
        bucket: 0,
        buckets: 1,
        count: 0,
        padded: false,
    };
    vec![
        (
            "delta",
            encode(
                delta,
                &[
                    Entry::Put {
                        key: b"ab",
                        value: b"xyz",
                    },
                    Entry::Delete { key: b"cd" },
                ],
            ),
        ),
        (
            "base",
            encode(
                base,
                &[
                    Entry::Put {
                        key: b"a",
                        value: b"1",
                    },
                    Entry::Put {
                        key: b"b",
                        value: b"",
                    },
                ],
            ),
        ),
        ("empty-base", encode(base, &[])),
        (
            "padded-delta",
            encode(
                Header {
                    padded: true,
                    ..delta
                },
                &[Entry::Delete { key: b"cd" }],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `LAMINA_WRITE_SEEDS=1 cargo test` (in `fuzz/`) rewrites the seed files.
    #[test]
    fn checked_in_part_seeds_are_what_seed_files_builds() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join("part");
        for (name, bytes) in seed_files() {
            let path = dir.join(name);
            if std::env::var_os("LAMINA_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{} is stale",
                path.display()
            );
        }
    }

    #[test]
    fn part_seeds_parse_and_pass_the_checks() {
        for (name, bytes) in seed_files() {
            assert!(part::read(&bytes, |_| {}).is_ok(), "{name}");
            check_part(&bytes);
        }
    }
}
