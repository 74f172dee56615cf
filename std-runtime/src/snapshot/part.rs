//! The key-value snapshot part: one stored object of a core's state, a base (every key of one
//! bucket) or a delta (the keys of any bucket changed since the parent checkpoint). The bytes are
//! specified in `core/FORMAT.md`, "Key-value snapshot part":
//!
//! ```text
//! offset size field
//!  0     8    magic    89 4C 4B 56 0D 0A 1A 0A ("\x89LKV\r\n\x1a\n")
//!  8     2    version  u16 LE, 1
//! 10     1    kind     0 base, 1 delta
//! 11     1    flags    0
//! 12     4    core     u32 LE
//! 16     4    bucket   u32 LE (a base's bucket; 0xffffffff in a delta)
//! 20     4    buckets  u32 LE, how many buckets the core's state is split into
//! 24     8    count    u64 LE, entries that follow
//! 32     ...  count × | len (u32 LE) | changelog entry (len bytes) |
//! ```
//!
//! Entries are changelog entries (puts; in a delta also deletes), in strictly increasing key
//! order, so every state has exactly one encoding. The object has no checksum of its own: the
//! manifest records its size and CRC32C and the store checks both on every read.

use lamina_core::changelog::Entry;
use lamina_core::crc::crc32c;

/// The magic at the start of every part.
pub const PART_MAGIC: [u8; 8] = *b"\x89LKV\r\n\x1a\n";
/// The part format version this code writes and reads.
pub const PART_VERSION: u16 = 1;
/// Bytes of the fixed header.
pub const PART_HEADER_LEN: usize = 32;
/// The `bucket` field of a delta, which spans every bucket.
pub const ALL_BUCKETS: u32 = u32::MAX;

/// Which bucket of `buckets` a key belongs to: CRC32C of the key, modulo `buckets` (at least 1).
#[must_use]
pub fn bucket_of(key: &[u8], buckets: u32) -> u32 {
    crc32c(key) % buckets.max(1)
}

/// What a part holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartKind {
    /// Every key of one bucket, as puts.
    Base,
    /// The keys changed since the parent checkpoint, of any bucket: puts and deletes.
    Delta,
}

/// A part's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PartHeader {
    /// Base or delta.
    pub kind: PartKind,
    /// The core whose state it holds.
    pub core: u32,
    /// A base's bucket ([`ALL_BUCKETS`] for a delta).
    pub bucket: u32,
    /// How many buckets the core's state is split into.
    pub buckets: u32,
    /// How many entries follow.
    pub count: u64,
}

/// Builds a part's bytes, entry by entry, in increasing key order.
#[derive(Debug)]
pub struct PartWriter {
    bytes: Vec<u8>,
    count: u64,
}

impl PartWriter {
    /// A part of `kind` for `core`; `bucket` is a base's bucket (ignored for a delta).
    #[must_use]
    pub fn new(kind: PartKind, core: u32, bucket: u32, buckets: u32) -> Self {
        let mut bytes = Vec::with_capacity(4096);
        bytes.extend_from_slice(&PART_MAGIC);
        bytes.extend_from_slice(&PART_VERSION.to_le_bytes());
        bytes.push(match kind {
            PartKind::Base => 0,
            PartKind::Delta => 1,
        });
        bytes.push(0);
        bytes.extend_from_slice(&core.to_le_bytes());
        let bucket = match kind {
            PartKind::Base => bucket,
            PartKind::Delta => ALL_BUCKETS,
        };
        bytes.extend_from_slice(&bucket.to_le_bytes());
        bytes.extend_from_slice(&buckets.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        PartWriter { bytes, count: 0 }
    }

    /// Appends a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.entry(&Entry::Put { key, value });
    }

    /// Appends a delete (deltas only: [`read_part`] refuses one in a base).
    pub fn delete(&mut self, key: &[u8]) {
        self.entry(&Entry::Delete { key });
    }

    fn entry(&mut self, entry: &Entry<'_>) {
        // A key or value too long for a changelog entry never reached the state: the ring
        // refuses it before it is applied.
        let len = entry
            .encoded_len()
            .and_then(|l| u32::try_from(l).ok())
            .unwrap_or(0);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        entry.emit_pieces(|piece| self.bytes.extend_from_slice(piece));
        self.count += 1;
    }

    /// Entries appended so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The part's bytes.
    #[must_use]
    pub fn finish(mut self) -> Vec<u8> {
        if let Some(field) = self.bytes.get_mut(24..32) {
            field.copy_from_slice(&self.count.to_le_bytes());
        }
        self.bytes
    }
}

/// Why bytes are not a well-formed part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartError {
    /// Shorter than the header.
    #[error("{len} bytes are shorter than a part's {PART_HEADER_LEN}-byte header")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// The magic is not a part's.
    #[error("not a snapshot part (bad magic)")]
    BadMagic,
    /// A version this code does not read.
    #[error("part format version {0} is not supported (this build reads version {PART_VERSION})")]
    UnsupportedVersion(u16),
    /// A kind or flags value that is not defined.
    #[error("unknown part kind {kind} or flags {flags}")]
    BadKind {
        /// The kind byte.
        kind: u8,
        /// The flags byte.
        flags: u8,
    },
    /// The header names another core, bucket or bucket count than the manifest does.
    #[error("the header says core {core}, bucket {bucket} of {buckets}; {expected} was expected")]
    WrongPlace {
        /// Core in the header.
        core: u32,
        /// Bucket in the header.
        bucket: u32,
        /// Buckets in the header.
        buckets: u32,
        /// What the reader expected.
        expected: String,
    },
    /// Entry `index` is malformed: its length runs past the end, it does not parse, it is a
    /// delete in a base or a barrier, its key is out of order, or it is in the wrong bucket.
    #[error("entry {index}: {detail}")]
    BadEntry {
        /// The entry's index.
        index: u64,
        /// What is wrong.
        detail: String,
    },
    /// The header's count and the entries differ, or bytes follow the last entry.
    #[error("the header counts {count} entries; {detail}")]
    Count {
        /// The header's count.
        count: u64,
        /// What was found.
        detail: String,
    },
}

/// Parses a part's header.
///
/// # Errors
/// [`PartError::Truncated`], [`PartError::BadMagic`], [`PartError::UnsupportedVersion`],
/// [`PartError::BadKind`].
pub fn read_header(bytes: &[u8]) -> Result<PartHeader, PartError> {
    let Some(header) = bytes.first_chunk::<PART_HEADER_LEN>() else {
        return Err(PartError::Truncated { len: bytes.len() });
    };
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&header[at..at + 4]);
        u32::from_le_bytes(b)
    };
    if header[..8] != PART_MAGIC {
        return Err(PartError::BadMagic);
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != PART_VERSION {
        return Err(PartError::UnsupportedVersion(version));
    }
    let (kind, flags) = (header[10], header[11]);
    let kind = match (kind, flags) {
        (0, 0) => PartKind::Base,
        (1, 0) => PartKind::Delta,
        _ => return Err(PartError::BadKind { kind, flags }),
    };
    let mut count = [0u8; 8];
    count.copy_from_slice(&header[24..32]);
    Ok(PartHeader {
        kind,
        core: u32_at(12),
        bucket: u32_at(16),
        buckets: u32_at(20),
        count: u64::from_le_bytes(count),
    })
}

/// Parses a whole part and hands each entry to `each`, in order, after checking everything the
/// format promises: the header, each entry's framing and shape, strictly increasing keys, a
/// base's keys in its bucket and puts only, the count, nothing after the last entry. A damaged
/// part stops with an error before any entry after the damage is handed out; `each` may have
/// seen the entries before it, so apply a part to a scratch state, or discard on error.
///
/// # Errors
/// A [`PartError`] for the first thing that is wrong.
pub fn read_part(bytes: &[u8], mut each: impl FnMut(Entry<'_>)) -> Result<PartHeader, PartError> {
    let header = read_header(bytes)?;
    if header.buckets == 0
        || (header.kind == PartKind::Base && header.bucket >= header.buckets)
        || (header.kind == PartKind::Delta && header.bucket != ALL_BUCKETS)
    {
        return Err(PartError::WrongPlace {
            core: header.core,
            bucket: header.bucket,
            buckets: header.buckets,
            expected: "a bucket below the bucket count (a delta: 0xffffffff)".into(),
        });
    }
    let mut rest = bytes.get(PART_HEADER_LEN..).unwrap_or_default();
    let mut previous: Option<&[u8]> = None;
    let mut index = 0u64;
    while !rest.is_empty() {
        let bad = |detail: String| PartError::BadEntry { index, detail };
        if index >= header.count {
            return Err(PartError::Count {
                count: header.count,
                detail: format!("{} bytes follow the last one", rest.len()),
            });
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(bad("its length is cut off".into()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some((body, tail)) = tail.split_at_checked(len) else {
            return Err(bad(format!(
                "its length {len} runs past the end ({} bytes left)",
                tail.len()
            )));
        };
        let entry = Entry::parse(body).map_err(|e| bad(e.to_string()))?;
        let key = match (header.kind, entry) {
            (_, Entry::Put { key, .. }) | (PartKind::Delta, Entry::Delete { key }) => key,
            (PartKind::Base, Entry::Delete { .. }) => {
                return Err(bad("a delete in a base part".into()));
            }
            (_, Entry::Barrier { .. }) => return Err(bad("a barrier in a part".into())),
        };
        if previous.is_some_and(|p| p >= key) {
            return Err(bad("its key is not above the previous entry's".into()));
        }
        if header.kind == PartKind::Base && bucket_of(key, header.buckets) != header.bucket {
            return Err(bad(format!(
                "its key belongs to bucket {}, not {}",
                bucket_of(key, header.buckets),
                header.bucket
            )));
        }
        each(entry);
        previous = Some(key);
        rest = tail;
        index += 1;
    }
    if index != header.count {
        return Err(PartError::Count {
            count: header.count,
            detail: format!("the part holds {index}"),
        });
    }
    Ok(header)
}
