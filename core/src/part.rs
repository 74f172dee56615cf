//! The key-value snapshot part: one stored object of a core's state in a checkpoint, a base
//! (every key of one bucket) or a delta (the keys of any bucket changed since the parent
//! checkpoint). `core/FORMAT.md`, "Key-value snapshot part", specifies the bytes:
//!
//! ```text
//! offset size field
//!  0     8    magic    89 4C 4B 56 0D 0A 1A 0A ("\x89LKV\r\n\x1a\n")
//!  8     2    version  u16 LE, 1
//! 10     1    kind     0 base, 1 delta
//! 11     1    flags    bit 0: padded; the other bits 0
//! 12     4    core     u32 LE
//! 16     4    bucket   u32 LE (a base's bucket; 0xffffffff in a delta)
//! 20     4    buckets  u32 LE, how many buckets the core's state is split into (at least 1)
//! 24     8    count    u64 LE, entries that follow
//! 32     ...  count × | len (u32 LE) | changelog entry (len bytes) |
//!        ...  padded: zeros to the next multiple of 4096 bytes (0 to 4095 of them)
//! ```
//!
//! Entries are changelog entries ([`crate::changelog::Entry`]): puts, and in a delta also
//! deletes, in strictly increasing key order, so a state has exactly one encoding. The object
//! has no checksum of its own: the manifest records its size and CRC32C, checked on every read.
//! Parsing allocates nothing and trusts no length before checking it.

use crate::changelog::{Entry, EntryError};
use crate::crc::crc32c;
use core::fmt;

/// The magic at the start of every part.
pub const MAGIC: [u8; 8] = *b"\x89LKV\r\n\x1a\n";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Bytes of each entry's length prefix.
pub const LEN_PREFIX: usize = 4;
/// The `bucket` field of a delta, which spans every bucket.
pub const ALL_BUCKETS: u32 = u32::MAX;
/// The `flags` bit of a padded part.
pub const FLAG_PADDED: u8 = 1;
/// A padded part's length is a multiple of this: the block a store writing with direct I/O
/// writes whole, with no tail to cut back.
pub const PAD_BLOCK: usize = 4096;

/// The zero bytes a padded part has after `len` bytes of header and entries.
#[must_use]
pub const fn padding(len: usize) -> usize {
    (PAD_BLOCK - len % PAD_BLOCK) % PAD_BLOCK
}

/// The bucket of `buckets` that `key` belongs to: CRC32C of the key modulo `buckets` (a
/// `buckets` of 0 counts as 1).
#[must_use]
pub fn bucket_of(key: &[u8], buckets: u32) -> u32 {
    crc32c(key) % buckets.max(1)
}

/// What a part holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Every key of one bucket, as puts.
    Base,
    /// The keys changed since the parent checkpoint, of any bucket: puts and deletes.
    Delta,
}

/// A part's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Base or delta.
    pub kind: Kind,
    /// The core whose state it holds.
    pub core: u32,
    /// A base's bucket ([`ALL_BUCKETS`] in a delta).
    pub bucket: u32,
    /// How many buckets the core's state is split into.
    pub buckets: u32,
    /// How many entries follow.
    pub count: u64,
    /// Zeros follow the last entry, up to a multiple of [`PAD_BLOCK`] bytes.
    pub padded: bool,
}

impl Header {
    /// The header's bytes.
    #[must_use]
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let fields: [&[u8]; 8] = [
            &MAGIC,
            &VERSION.to_le_bytes(),
            &[match self.kind {
                Kind::Base => 0,
                Kind::Delta => 1,
            }],
            &[if self.padded { FLAG_PADDED } else { 0 }],
            &self.core.to_le_bytes(),
            &self.bucket.to_le_bytes(),
            &self.buckets.to_le_bytes(),
            &self.count.to_le_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            if let Some(slot) = out.get_mut(at..at + field.len()) {
                slot.copy_from_slice(field);
            }
            at += field.len();
        }
        out
    }

    /// Parses and checks a header: magic, version, kind and flags (only [`FLAG_PADDED`] may be
    /// set), and a bucket that fits the kind (a base's below `buckets`, a delta's
    /// [`ALL_BUCKETS`]).
    ///
    /// # Errors
    /// The first check that fails.
    pub fn parse(bytes: &[u8]) -> Result<Header, PartError> {
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(PartError::Truncated { len: bytes.len() });
        };
        let field = |at: usize| -> [u8; 4] {
            let mut b = [0u8; 4];
            if let Some(src) = h.get(at..at + 4) {
                b.copy_from_slice(src);
            }
            b
        };
        if h.get(..8) != Some(&MAGIC[..]) {
            return Err(PartError::BadMagic);
        }
        let [v0, v1, kind, flags] = field(8);
        let version = u16::from_le_bytes([v0, v1]);
        if version != VERSION {
            return Err(PartError::UnsupportedVersion { version });
        }
        let kind = match (kind, flags & !FLAG_PADDED) {
            (0, 0) => Kind::Base,
            (1, 0) => Kind::Delta,
            _ => return Err(PartError::BadKind { kind, flags }),
        };
        let u32_at = |at: usize| u32::from_le_bytes(field(at));
        let (core, bucket, buckets) = (u32_at(12), u32_at(16), u32_at(20));
        let count = u64::from(u32_at(24)) | (u64::from(u32_at(28)) << 32);
        let placed = match kind {
            Kind::Base => bucket < buckets,
            Kind::Delta => bucket == ALL_BUCKETS && buckets > 0,
        };
        if !placed {
            return Err(PartError::BadBucket { bucket, buckets });
        }
        Ok(Header {
            kind,
            core,
            bucket,
            buckets,
            count,
            padded: flags & FLAG_PADDED != 0,
        })
    }
}

/// What is wrong with one entry of a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryFault {
    /// Fewer than 4 bytes are left for its length.
    LengthCutOff,
    /// Its length runs past the end of the part.
    PastEnd {
        /// The length.
        len: u32,
        /// Bytes left after the length.
        left: usize,
    },
    /// Its bytes are not a changelog entry.
    Parse(EntryError),
    /// A delete in a base part.
    DeleteInBase,
    /// A barrier, which no part holds.
    Barrier,
    /// Its key is not above the previous entry's.
    KeyOrder,
    /// In a base, its key belongs to another bucket.
    WrongBucket {
        /// The key's bucket.
        bucket: u32,
    },
}

/// Why bytes are not a well-formed part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PartError {
    /// Shorter than the header.
    Truncated {
        /// The length.
        len: usize,
    },
    /// Not a part's magic.
    BadMagic,
    /// A version this code does not read.
    UnsupportedVersion {
        /// The version.
        version: u16,
    },
    /// An undefined kind or flags value.
    BadKind {
        /// The kind byte.
        kind: u8,
        /// The flags byte.
        flags: u8,
    },
    /// A bucket that does not fit the kind and the bucket count.
    BadBucket {
        /// The bucket field.
        bucket: u32,
        /// The buckets field.
        buckets: u32,
    },
    /// Entry `index` is malformed.
    Entry {
        /// Its index.
        index: u64,
        /// What is wrong.
        fault: EntryFault,
    },
    /// Bytes follow the last entry the header counts.
    Trailing {
        /// The header's count.
        count: u64,
        /// Bytes left.
        left: usize,
    },
    /// A padded part's bytes after its last entry are not zeros to the next multiple of
    /// [`PAD_BLOCK`].
    BadPadding {
        /// Bytes after the last entry.
        left: usize,
        /// Bytes of padding due there.
        due: usize,
    },
    /// The part ends before the entries the header counts.
    TooFew {
        /// The header's count.
        count: u64,
        /// Entries found.
        found: u64,
    },
}

impl fmt::Display for EntryFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryFault::LengthCutOff => f.write_str("its length is cut off"),
            EntryFault::PastEnd { len, left } => {
                write!(f, "its length {len} runs past the end ({left} bytes left)")
            }
            EntryFault::Parse(e) => write!(f, "{e}"),
            EntryFault::DeleteInBase => f.write_str("a delete in a base part"),
            EntryFault::Barrier => f.write_str("a barrier in a part"),
            EntryFault::KeyOrder => f.write_str("its key is not above the previous entry's"),
            EntryFault::WrongBucket { bucket } => {
                write!(f, "its key belongs to bucket {bucket}, not the part's")
            }
        }
    }
}

impl fmt::Display for PartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartError::Truncated { len } => write!(
                f,
                "{len} bytes are shorter than a part's {HEADER_LEN}-byte header"
            ),
            PartError::BadMagic => f.write_str("not a snapshot part (bad magic)"),
            PartError::UnsupportedVersion { version } => write!(
                f,
                "part format version {version} is not supported (this build reads {VERSION})"
            ),
            PartError::BadKind { kind, flags } => {
                write!(f, "unknown part kind {kind} or flags {flags}")
            }
            PartError::BadBucket { bucket, buckets } => {
                write!(
                    f,
                    "bucket {bucket:#x} does not fit {buckets} buckets and the part's kind"
                )
            }
            PartError::Entry { index, fault } => write!(f, "entry {index}: {fault}"),
            PartError::Trailing { count, left } => {
                write!(
                    f,
                    "{left} bytes follow the {count} entries the header counts"
                )
            }
            PartError::BadPadding { left, due } => write!(
                f,
                "the {left} bytes after the last entry are not {due} zero bytes of padding"
            ),
            PartError::TooFew { count, found } => {
                write!(
                    f,
                    "the header counts {count} entries, the part holds {found}"
                )
            }
        }
    }
}

impl core::error::Error for PartError {}

/// Parses a whole part and hands each entry to `each`, in order, checking everything the
/// format promises: the header, each entry's framing and shape, strictly increasing keys, a
/// base's keys in its bucket and puts only, the count, nothing after the last entry but a
/// padded part's zeros to the next multiple of [`PAD_BLOCK`]. `each` may have seen the entries
/// before a damaged one: apply a part to a scratch state, or discard it on error.
///
/// # Errors
/// The first thing that is wrong.
pub fn read<'a>(bytes: &'a [u8], mut each: impl FnMut(Entry<'a>)) -> Result<Header, PartError> {
    let header = Header::parse(bytes)?;
    let mut rest = bytes.get(HEADER_LEN..).unwrap_or_default();
    let mut previous: Option<&[u8]> = None;
    let mut index = 0u64;
    while index < header.count {
        let bad = |fault| PartError::Entry { index, fault };
        if rest.is_empty() {
            return Err(PartError::TooFew {
                count: header.count,
                found: index,
            });
        }
        let Some((len, tail)) = rest.split_first_chunk::<LEN_PREFIX>() else {
            return Err(bad(EntryFault::LengthCutOff));
        };
        let len = u32::from_le_bytes(*len);
        let Some((body, tail)) = usize::try_from(len)
            .ok()
            .and_then(|l| tail.split_at_checked(l))
        else {
            return Err(bad(EntryFault::PastEnd {
                len,
                left: tail.len(),
            }));
        };
        let entry = Entry::parse(body).map_err(|e| bad(EntryFault::Parse(e)))?;
        let key = match (header.kind, entry) {
            (_, Entry::Put { key, .. }) | (Kind::Delta, Entry::Delete { key }) => key,
            (Kind::Base, Entry::Delete { .. }) => return Err(bad(EntryFault::DeleteInBase)),
            (_, Entry::Barrier { .. }) => return Err(bad(EntryFault::Barrier)),
        };
        if previous.is_some_and(|p| p >= key) {
            return Err(bad(EntryFault::KeyOrder));
        }
        if header.kind == Kind::Base {
            let bucket = bucket_of(key, header.buckets);
            if bucket != header.bucket {
                return Err(bad(EntryFault::WrongBucket { bucket }));
            }
        }
        each(entry);
        previous = Some(key);
        rest = tail;
        index += 1;
    }
    if header.padded {
        let due = padding(bytes.len() - rest.len());
        if rest.len() != due || rest.iter().any(|&b| b != 0) {
            return Err(PartError::BadPadding {
                left: rest.len(),
                due,
            });
        }
    } else if !rest.is_empty() {
        return Err(PartError::Trailing {
            count: header.count,
            left: rest.len(),
        });
    }
    Ok(header)
}
