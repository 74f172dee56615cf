//! The record frame: a 32-byte header, the payload, zero padding to a multiple of 8 bytes.
//!
//! ```text
//! offset size field
//!  0     4    header_crc  CRC32C(seed ++ frame[8..32])      (the header fields)
//!  4     4    body_crc    CRC32C(seed ++ frame[8..frame_len])  (header fields, payload, padding)
//!  8     8    lsn         u64 LE, never 0
//! 16     8    watermark   u64 LE, highest LSN the writer knew durable when it framed this
//!                         record; always < lsn
//! 24     4    len         u32 LE, payload length, <= MAX_PAYLOAD
//! 28     1    kind        1 data, 2 epoch, 3 checkpoint, 4 seal, 5 padding
//! 29     3    reserved    zero
//! 32     len  payload
//!             zero padding up to the next multiple of 8
//! ```
//!
//! `seed` is the segment's 24 seed bytes ([`crate::segment::SegmentHeader::seed`]): a frame only
//! validates inside the segment that wrote it. The header CRC lets a reader trust `len` before it
//! reads the payload; the body CRC covers the header fields again together with the payload, so
//! neither is ever checked alone. See `core/FORMAT.md` for the whole format.
//!
//! # Fuzzing
//! Under `cfg(fuzzing)` both checksum comparisons pass, so a fuzzer reaches the states behind
//! them; nothing else changes.

use crate::crc::Crc32c;
use crate::lsn::Lsn;
use core::fmt;

/// Bytes in a record header.
pub const HEADER_LEN: usize = 32;
/// Frames start at, and are padded to, multiples of this many bytes within a segment.
pub const ALIGN: usize = 8;
/// The largest payload the format allows (16 MiB). A header claiming more is damage, whatever its
/// checksum says.
pub const MAX_PAYLOAD: u32 = 1 << 24;

/// Byte ranges of the header fields.
mod field {
    use core::ops::Range;
    pub(crate) const HEADER_CRC: Range<usize> = 0..4;
    pub(crate) const BODY_CRC: Range<usize> = 4..8;
    pub(crate) const LSN: Range<usize> = 8..16;
    pub(crate) const WATERMARK: Range<usize> = 16..24;
    pub(crate) const LEN: Range<usize> = 24..28;
    pub(crate) const KIND: usize = 28;
    pub(crate) const RESERVED: Range<usize> = 29..32;
    /// What the header CRC covers: the header fields (not the body CRC, so that both checksums
    /// come from one pass over the frame).
    pub(crate) const HEADER_COVERED: Range<usize> = 8..super::HEADER_LEN;
    /// Where the body CRC starts covering.
    pub(crate) const BODY_START: usize = 8;
}

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// The caller's data.
    Data = 1,
    /// An epoch boundary: the payload is the new epoch, u64 LE.
    Epoch = 2,
    /// A checkpoint marker: the payload is the checkpoint id, u64 LE.
    Checkpoint = 3,
    /// The last record of a segment: nothing follows in this segment.
    Seal = 4,
    /// Filler that carries no data (for aligned batches); it still takes an LSN.
    Padding = 5,
}

impl Kind {
    /// The kind with this code, if the format defines it.
    #[must_use]
    pub const fn from_u8(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Data),
            2 => Some(Kind::Epoch),
            3 => Some(Kind::Checkpoint),
            4 => Some(Kind::Seal),
            5 => Some(Kind::Padding),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Data => "data",
            Kind::Epoch => "epoch",
            Kind::Checkpoint => "checkpoint",
            Kind::Seal => "seal",
            Kind::Padding => "padding",
        })
    }
}

/// The CRC32C state after a segment's seed bytes: the starting point of every frame checksum in
/// that segment. Computed once per segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed(Crc32c);

impl Seed {
    /// The seed for a segment whose seed bytes are `bytes`.
    #[must_use]
    pub fn new(bytes: &[u8]) -> Seed {
        Seed(Crc32c::new().update(bytes))
    }
}

/// The parsed header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The highest LSN the writer knew durable (a sync had proven it) when it framed the record.
    pub watermark: Lsn,
    /// The payload length in bytes.
    pub len: u32,
    /// What the record is.
    pub kind: Kind,
}

impl RecordHeader {
    /// Bytes the whole frame takes: header, payload, padding.
    #[must_use]
    pub const fn frame_len(&self) -> usize {
        frame_len(self.len as usize)
    }
}

/// Bytes a frame with a `payload_len`-byte payload takes: header, payload, padding to [`ALIGN`]
/// (`usize::MAX` for a length no buffer could hold).
#[must_use]
pub const fn frame_len(payload_len: usize) -> usize {
    match payload_len.checked_next_multiple_of(ALIGN) {
        Some(padded) => padded.saturating_add(HEADER_LEN),
        None => usize::MAX,
    }
}

/// Why a record could not be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload is longer than [`MAX_PAYLOAD`].
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
    },
    /// The output buffer is shorter than the frame.
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
    },
    /// The watermark is not below the LSN, or the LSN is zero.
    BadLsn,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::PayloadTooLarge { len } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the maximum of {MAX_PAYLOAD}"
                )
            }
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: the frame needs {needed} bytes")
            }
            EncodeError::BadLsn => f.write_str("record LSN is zero or not above its watermark"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Writes the frame of `header` (its `len` is taken from `payload`) and `payload` at the start of
/// `out`, and returns the frame's length.
///
/// # Errors
/// [`EncodeError`] when the payload is too large, `out` is too short, or the LSNs are not valid.
pub fn encode(
    out: &mut [u8],
    seed: &Seed,
    lsn: Lsn,
    watermark: Lsn,
    kind: Kind,
    payload: &[u8],
) -> Result<usize, EncodeError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_PAYLOAD)
        .ok_or(EncodeError::PayloadTooLarge { len: payload.len() })?;
    if lsn == Lsn::ZERO || lsn == Lsn::MAX || watermark >= lsn {
        return Err(EncodeError::BadLsn);
    }
    let total = frame_len(payload.len());
    let frame = out
        .get_mut(..total)
        .ok_or(EncodeError::BufferTooSmall { needed: total })?;
    let (header, body) = frame.split_at_mut(HEADER_LEN);
    let header: &mut [u8; HEADER_LEN] = header
        .try_into()
        .map_err(|_| EncodeError::BufferTooSmall { needed: total })?;
    header[field::LSN].copy_from_slice(&lsn.0.to_le_bytes());
    header[field::WATERMARK].copy_from_slice(&watermark.0.to_le_bytes());
    header[field::LEN].copy_from_slice(&len.to_le_bytes());
    header[field::KIND] = kind as u8;
    header[field::RESERVED].fill(0);
    let (data, padding) = body.split_at_mut(payload.len());
    data.copy_from_slice(payload);
    padding.fill(0);
    // The header checksum's input is a prefix of the body checksum's: one pass serves both.
    let fields = seed.0.update(&header[field::HEADER_COVERED]);
    let body_crc = fields.update(data).update(padding).finish();
    header[field::HEADER_CRC].copy_from_slice(&fields.finish().to_le_bytes());
    header[field::BODY_CRC].copy_from_slice(&body_crc.to_le_bytes());
    Ok(total)
}

/// What a 32-byte window holds where a header could start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// All 32 bytes are zero: space never written (or zeroed).
    Zero,
    /// Not a header of this segment: a checksum or field that does not validate.
    Invalid,
    /// A header that validates; its body still has to be checked with [`check_body`].
    Valid(RecordHeader),
}

/// Checks a header against the segment's seed.
///
/// Checks, in order: all-zero, the header checksum, then the fields (known kind, reserved bytes
/// zero, `len <= MAX_PAYLOAD`, `0 < lsn`, `watermark < lsn`). Only after all pass is `len`
/// trusted.
#[must_use]
pub fn check_header(seed: &Seed, header: &[u8; HEADER_LEN]) -> HeaderCheck {
    if header.iter().all(|b| *b == 0) {
        return HeaderCheck::Zero;
    }
    let stored = read_u32(header, field::HEADER_CRC.start);
    let computed = seed.0.update(&header[field::HEADER_COVERED]).finish();
    if !checksum_matches(stored, computed) {
        return HeaderCheck::Invalid;
    }
    let lsn = Lsn(read_u64(header, field::LSN.start));
    let watermark = Lsn(read_u64(header, field::WATERMARK.start));
    let len = read_u32(header, field::LEN.start);
    let Some(kind) = Kind::from_u8(header[field::KIND]) else {
        return HeaderCheck::Invalid;
    };
    if header[field::RESERVED].iter().any(|b| *b != 0)
        || len > MAX_PAYLOAD
        || lsn == Lsn::ZERO
        || lsn == Lsn::MAX
        || watermark >= lsn
    {
        return HeaderCheck::Invalid;
    }
    HeaderCheck::Valid(RecordHeader {
        lsn,
        watermark,
        len,
        kind,
    })
}

/// Checks the body checksum of a whole frame (`frame` is exactly `header.frame_len()` bytes,
/// starting with the header that [`check_header`] accepted).
#[must_use]
pub fn check_body(seed: &Seed, frame: &[u8]) -> bool {
    let (Some(stored), Some(covered)) =
        (frame.get(field::BODY_CRC), frame.get(field::BODY_START..))
    else {
        return false;
    };
    let Ok(stored) = <[u8; 4]>::try_from(stored) else {
        return false;
    };
    let stored = u32::from_le_bytes(stored);
    checksum_matches(stored, seed.0.update(covered).finish())
}

/// The payload of a validated frame.
#[must_use]
pub fn payload<'f>(header: &RecordHeader, frame: &'f [u8]) -> &'f [u8] {
    frame
        .get(HEADER_LEN..HEADER_LEN.saturating_add(header.len as usize))
        .unwrap_or(&[])
}

#[inline]
fn checksum_matches(stored: u32, computed: u32) -> bool {
    cfg!(fuzzing) || stored == computed
}

#[inline]
fn read_u32(header: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(header.get(at..at + 4).unwrap_or(&[0; 4]));
    u32::from_le_bytes(b)
}

#[inline]
fn read_u64(header: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(header.get(at..at + 8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = b"log-id--sequence--nonce-";

    fn encode_one(payload: &[u8], out: &mut [u8]) -> usize {
        encode(out, &Seed::new(SEED), Lsn(7), Lsn(5), Kind::Data, payload).unwrap()
    }

    #[test]
    fn round_trip() {
        let mut out = [0u8; 64];
        let n = encode_one(b"hello", &mut out);
        assert_eq!(n, 40);
        let seed = Seed::new(SEED);
        let HeaderCheck::Valid(h) = check_header(&seed, out[..32].try_into().unwrap()) else {
            panic!("header did not validate");
        };
        assert_eq!(
            (h.lsn, h.watermark, h.len, h.kind),
            (Lsn(7), Lsn(5), 5, Kind::Data)
        );
        assert!(check_body(&seed, &out[..n]));
        assert_eq!(payload(&h, &out[..n]), b"hello");
    }

    #[test]
    fn another_seed_never_validates() {
        let mut out = [0u8; 64];
        encode_one(b"hello", &mut out);
        let other = Seed::new(b"log-id--sequence--nonce+");
        assert_eq!(
            check_header(&other, out[..32].try_into().unwrap()),
            HeaderCheck::Invalid
        );
    }

    #[test]
    fn every_bit_flip_is_caught() {
        let mut out = [0u8; 64];
        let n = encode_one(b"hello, world", &mut out);
        let seed = Seed::new(SEED);
        for bit in 0..n * 8 {
            let mut damaged = out;
            damaged[bit / 8] ^= 1 << (bit % 8);
            let ok = match check_header(&seed, damaged[..32].try_into().unwrap()) {
                HeaderCheck::Valid(h) => check_body(&seed, &damaged[..h.frame_len().min(64)]),
                _ => false,
            };
            assert!(!ok, "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut out = [0u8; 16];
        let seed = Seed::new(SEED);
        assert_eq!(
            encode(&mut out, &seed, Lsn(2), Lsn(1), Kind::Data, b""),
            Err(EncodeError::BufferTooSmall { needed: 32 })
        );
        let mut out = [0u8; 64];
        assert_eq!(
            encode(&mut out, &seed, Lsn(2), Lsn(2), Kind::Data, b""),
            Err(EncodeError::BadLsn)
        );
        assert_eq!(
            encode(&mut out, &seed, Lsn(0), Lsn(0), Kind::Data, b""),
            Err(EncodeError::BadLsn)
        );
    }
}
