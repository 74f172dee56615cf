//! The checkpoint manifest: what one checkpoint consists of, as bytes a store keeps.
//!
//! A manifest names a checkpoint (id, epoch, parent, timestamp, watermark), the position in each
//! core's WAL that replay starts from, the snapshot parts that hold operator state, and the
//! sources' offsets. `core/FORMAT.md` ("Checkpoint manifest") specifies the bytes:
//!
//! ```text
//! offset size field
//!  0     8    magic      89 4C 4D 46 0D 0A 1A 0A ("\x89LMF\r\n\x1a\n")
//!  8     2    version    u16 LE, 1
//! 10     2    flags      u16 LE, 0
//! 12     4    body_len   u32 LE, at most MAX_BODY_LEN
//! 16     n    body       postcard encoding of the manifest's fields
//! 16+n   4    crc        CRC32C(bytes 0..16+n), u32 LE
//! ```
//!
//! Nothing allocates. [`Manifest::encode`] writes into the caller's buffer;
//! [`Manifest::decode`] returns a [`Manifest`] that borrows the bytes it was given: strings and
//! byte strings point into them, and each [`List`] keeps its encoded entries and decodes one per
//! iterator step, so a manifest of any size (up to [`MAX_BODY_LEN`]) decodes in constant memory.
//! Decoding checks every entry once, so iterating a decoded list meets no error.
//!
//! Both directions apply the same content rules ([`Invalid`]): what encodes decodes.
//!
//! # Fuzzing
//! Under `cfg(fuzzing)` the checksum comparison passes, so a fuzzer reaches the body parser and
//! the content checks behind it; nothing else changes.

mod check;
mod error;
mod key;
mod list;

pub use error::{DecodeError, EncodeError, Invalid};
pub use key::{KeyError, MAX_KEY_LEN, validate_key};
pub use list::{Iter, List};

use crate::crc::{Crc32c, crc32c};
use crate::lsn::{Lsn, SegmentId};
use core::fmt;
use serde::{Deserialize, Serialize};

/// Bytes in the fixed header before the body.
pub const HEADER_LEN: usize = 16;
/// Bytes of the CRC32C after the body.
pub const CRC_LEN: usize = 4;
/// The magic at the start of every manifest, built like the log segment's (`\x89LAM...`): the
/// high byte and the CR LF / ^Z catch a file that went through a text-mode transfer.
pub const MAGIC: [u8; 8] = *b"\x89LMF\r\n\x1a\n";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// The longest body accepted, 16 MiB: a bound on what a damaged length can make a reader take.
pub const MAX_BODY_LEN: usize = 1 << 24;

mod field {
    use core::ops::Range;
    pub(crate) const MAGIC: Range<usize> = 0..8;
    pub(crate) const VERSION: Range<usize> = 8..10;
    pub(crate) const FLAGS: Range<usize> = 10..12;
    pub(crate) const BODY_LEN: Range<usize> = 12..16;
}

/// A checkpoint manifest. Build one with slices ([`List::new`]) to encode it; a decoded one
/// borrows the encoded bytes.
///
/// The fields are in their order on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Manifest<'a> {
    /// The checkpoint's id; ids grow with each checkpoint.
    pub id: u64,
    /// The epoch whose barrier this checkpoint was taken at.
    pub epoch: u64,
    /// The checkpoint this one is incremental over (its parts may be the parent's), `None` for
    /// the first. Always below `id`.
    pub parent: Option<u64>,
    /// When the checkpoint was taken, in the caller's clock and unit (the core has no clock;
    /// milliseconds since the Unix epoch is the suggestion).
    pub timestamp: u64,
    /// The event-time watermark at the barrier, in the engine's unit (`i64::MIN` for none).
    pub watermark: i64,
    /// Where replay starts in each core's WAL, in strictly increasing core order.
    pub wal: List<'a, WalPosition>,
    /// The operator snapshot parts, in strictly increasing (operator, partition) order.
    pub parts: List<'a, Part<'a>>,
    /// Each source connector's offsets, in strictly increasing connector-name order.
    pub offsets: List<'a, SourceOffset<'a>>,
}

/// Where replay of one core's WAL starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WalWire", into = "WalWire")]
pub struct WalPosition {
    /// The core (the log of a per-core set).
    pub core: u32,
    /// The last LSN the checkpoint covers: replay starts after it (`Lsn::ZERO`: from the start).
    pub lsn: Lsn,
    /// The segment that holds `lsn`, so a reader starts there without a search.
    pub segment: SegmentId,
}

/// [`WalPosition`] on the wire: its fields as plain integers.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct WalWire {
    core: u32,
    lsn: u64,
    segment: u64,
}

impl From<WalWire> for WalPosition {
    fn from(w: WalWire) -> Self {
        WalPosition {
            core: w.core,
            lsn: Lsn(w.lsn),
            segment: SegmentId(w.segment),
        }
    }
}

impl From<WalPosition> for WalWire {
    fn from(p: WalPosition) -> Self {
        WalWire {
            core: p.core,
            lsn: p.lsn.0,
            segment: p.segment.0,
        }
    }
}

/// One stored piece of an operator's state snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part<'a> {
    /// The operator whose state this is.
    pub operator: &'a str,
    /// Which part of the operator's state (a key range or hash partition, the writer's choice).
    pub partition: u32,
    /// The object's name in the checkpoint store: one plain name ([`validate_key`]).
    pub key: &'a str,
    /// The object's length in bytes.
    pub size: u64,
    /// CRC32C of the object's bytes.
    pub crc: u32,
    /// The checkpoint that wrote the object: this one, or an earlier one whose part is reused.
    pub written_by: u64,
}

/// One source connector's position, opaque to lamina.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOffset<'a> {
    /// The connector's name.
    pub connector: &'a str,
    /// Its offsets, in the connector's own encoding.
    #[serde(with = "bytes")]
    pub bytes: &'a [u8],
}

/// Byte strings as postcard byte arrays (length, then the bytes in one copy), not as sequences
/// of `u8` (the same bytes on the wire, one element at a time).
mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
        <&'de [u8]>::deserialize(d)
    }
}

impl<'a> Manifest<'a> {
    /// Checks the content rules that [`Manifest::encode`] and [`Manifest::decode`] apply.
    ///
    /// # Errors
    /// The first rule broken, in field order.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut rules = check::Rules::new(self.id, self.parent)?;
        for (i, w) in self.wal.iter().enumerate() {
            rules.wal(i, &w)?;
        }
        for (i, p) in self.parts.iter().enumerate() {
            rules.part(i, &p)?;
        }
        for (i, o) in self.offsets.iter().enumerate() {
            rules.offset(i, &o)?;
        }
        Ok(())
    }

    /// Bytes [`Manifest::encode`] writes: header, body and checksum.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len() + CRC_LEN
    }

    fn body_len(&self) -> usize {
        // Measuring cannot fail: the size flavor accepts every byte.
        postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default()).unwrap_or(0)
    }

    /// Writes the manifest at the start of `buf` and returns how many bytes it took
    /// ([`Manifest::encoded_len`]).
    ///
    /// # Errors
    /// [`EncodeError::Invalid`] if the content breaks a rule ([`Manifest::validate`]),
    /// [`EncodeError::BodyTooLong`] past [`MAX_BODY_LEN`], [`EncodeError::BufferTooSmall`] if it
    /// does not fit. `buf` may be partly written on error.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        self.validate()?;
        let body_len = self.body_len();
        if body_len > MAX_BODY_LEN {
            return Err(EncodeError::BodyTooLong { len: body_len });
        }
        let total = HEADER_LEN + body_len + CRC_LEN;
        let too_small = EncodeError::BufferTooSmall {
            needed: total,
            available: buf.len(),
        };
        let Some(out) = buf.get_mut(..total) else {
            return Err(too_small);
        };
        let Some((header, rest)) = out.split_at_mut_checked(HEADER_LEN) else {
            return Err(too_small);
        };
        let Some((body, crc)) = rest.split_at_mut_checked(body_len) else {
            return Err(too_small);
        };
        // Serialization is deterministic: it fills exactly the `body_len` bytes it measured.
        postcard::to_slice(self, body).map_err(|_| too_small)?;
        header.copy_from_slice(&encode_header(body_len as u32));
        let sum = Crc32c::new().update(header).update(body).finish();
        crc.copy_from_slice(&sum.to_le_bytes());
        Ok(total)
    }

    /// Decodes the manifest that is exactly `bytes`, checking magic, version, length, checksum,
    /// flags, the body's encoding and the content rules, in that order.
    ///
    /// # Errors
    /// The first check that fails, as a [`DecodeError`]. No length in the bytes is trusted
    /// before it is checked against [`MAX_BODY_LEN`] and `bytes.len()`.
    pub fn decode(bytes: &'a [u8]) -> Result<Manifest<'a>, DecodeError> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(DecodeError::Truncated {
                len: bytes.len(),
                needed: HEADER_LEN,
            });
        };
        if header.get(field::MAGIC) != Some(&MAGIC[..]) {
            return Err(DecodeError::BadMagic);
        }
        let version = u16::from_le_bytes(take(header, field::VERSION));
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let stated = u32::from_le_bytes(take(header, field::BODY_LEN));
        let body_len = stated as usize;
        if body_len > MAX_BODY_LEN {
            return Err(DecodeError::BodyTooLong { len: stated });
        }
        let total = HEADER_LEN + body_len + CRC_LEN;
        if bytes.len() < total {
            return Err(DecodeError::Truncated {
                len: bytes.len(),
                needed: total,
            });
        }
        if bytes.len() > total {
            return Err(DecodeError::TrailingBytes {
                len: bytes.len(),
                expected: total,
            });
        }
        let covered = bytes.get(..HEADER_LEN + body_len).unwrap_or(&[]);
        let stored = u32::from_le_bytes(take(bytes, HEADER_LEN + body_len..total));
        let computed = crc32c(covered);
        if !(cfg!(fuzzing) || stored == computed) {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        let flags = u16::from_le_bytes(take(header, field::FLAGS));
        if flags != 0 {
            return Err(DecodeError::UnsupportedFlags { flags });
        }
        let body = covered.get(HEADER_LEN..).unwrap_or(&[]);
        check::body(body)
    }
}

/// One line for `lamina inspect` and logs: the identity and the list sizes.
impl fmt::Display for Manifest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checkpoint {} epoch {} parent ", self.id, self.epoch)?;
        match self.parent {
            Some(parent) => write!(f, "{parent}")?,
            None => f.write_str("none")?,
        }
        write!(
            f,
            " timestamp {} watermark {} cores {} parts {} sources {}",
            self.timestamp,
            self.watermark,
            self.wal.len(),
            self.parts.len(),
            self.offsets.len()
        )
    }
}

/// The header of a manifest whose body is `body_len` bytes.
fn encode_header(body_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    for (range, value) in [
        (field::MAGIC, &MAGIC[..]),
        (field::VERSION, &VERSION.to_le_bytes()[..]),
        (field::BODY_LEN, &body_len.to_le_bytes()[..]),
    ] {
        if let Some(dst) = h.get_mut(range) {
            dst.copy_from_slice(value);
        }
    }
    h
}

fn take<const N: usize>(bytes: &[u8], range: core::ops::Range<usize>) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(range).filter(|src| src.len() == N) {
        out.copy_from_slice(src);
    }
    out
}
