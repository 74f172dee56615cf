//! The errors of encoding and decoding a manifest.

use super::{HEADER_LEN, MAX_BODY_LEN, VERSION, key::KeyError};
use core::fmt;

/// A manifest that breaks a rule of its own content (checked by both encode and decode).
///
/// `index` is the entry's position in its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The parent checkpoint id is not below the manifest's own id.
    ParentNotBefore {
        /// The manifest's checkpoint id.
        id: u64,
        /// Its parent's id.
        parent: u64,
    },
    /// Two WAL positions name the same core.
    DuplicateCore {
        /// Index of the second one.
        index: usize,
        /// The core.
        core: u32,
    },
    /// WAL positions are not in increasing core order.
    CoresOutOfOrder {
        /// Index of the first entry out of order.
        index: usize,
    },
    /// Two snapshot parts have the same operator and partition.
    DuplicatePart {
        /// Index of the second one.
        index: usize,
    },
    /// Snapshot parts are not in increasing (operator, partition) order.
    PartsOutOfOrder {
        /// Index of the first entry out of order.
        index: usize,
    },
    /// A part claims to be written by a checkpoint later than this manifest's.
    PartFromLaterCheckpoint {
        /// Index of the part.
        index: usize,
        /// The checkpoint id the part names.
        written_by: u64,
        /// The manifest's checkpoint id.
        id: u64,
    },
    /// A part's object key is not a plain name ([`validate_key`](super::validate_key)).
    BadKey {
        /// Index of the part.
        index: usize,
        /// What is wrong with the key.
        error: KeyError,
    },
    /// Two source offsets name the same connector.
    DuplicateConnector {
        /// Index of the second one.
        index: usize,
    },
    /// Source offsets are not in increasing connector-name order.
    ConnectorsOutOfOrder {
        /// Index of the first entry out of order.
        index: usize,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::ParentNotBefore { id, parent } => {
                write!(
                    f,
                    "checkpoint {id} names parent {parent}, which is not before it"
                )
            }
            Invalid::DuplicateCore { index, core } => {
                write!(f, "WAL position {index} repeats core {core}")
            }
            Invalid::CoresOutOfOrder { index } => {
                write!(f, "WAL position {index} is not in increasing core order")
            }
            Invalid::DuplicatePart { index } => {
                write!(f, "snapshot part {index} repeats an operator and partition")
            }
            Invalid::PartsOutOfOrder { index } => write!(
                f,
                "snapshot part {index} is not in increasing (operator, partition) order"
            ),
            Invalid::PartFromLaterCheckpoint {
                index,
                written_by,
                id,
            } => write!(
                f,
                "snapshot part {index} claims checkpoint {written_by} wrote it, after this \
                 checkpoint {id}"
            ),
            Invalid::BadKey { index, error } => write!(f, "snapshot part {index}: {error}"),
            Invalid::DuplicateConnector { index } => {
                write!(f, "source offset {index} repeats a connector name")
            }
            Invalid::ConnectorsOutOfOrder { index } => write!(
                f,
                "source offset {index} is not in increasing connector-name order"
            ),
        }
    }
}

impl core::error::Error for Invalid {}

/// Why a manifest could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is shorter than the encoded manifest.
    BufferTooSmall {
        /// Bytes the encoded manifest takes ([`Manifest::encoded_len`](super::Manifest::encoded_len)).
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The body would exceed [`MAX_BODY_LEN`].
    BodyTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The manifest breaks a rule of its content.
    Invalid(Invalid),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed, available } => write!(
                f,
                "manifest needs {needed} bytes, the buffer has {available}"
            ),
            EncodeError::BodyTooLong { len } => write!(
                f,
                "manifest body of {len} bytes exceeds the limit of {MAX_BODY_LEN}"
            ),
            EncodeError::Invalid(e) => write!(f, "invalid manifest: {e}"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Why bytes are not a manifest this code can use, in the order decoding checks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header, or than the length the header states.
    Truncated {
        /// Bytes there are.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The magic is wrong: not a lamina manifest.
    BadMagic,
    /// A lamina manifest of a version this code does not read.
    UnsupportedVersion {
        /// The version found.
        version: u16,
    },
    /// The header states a body longer than [`MAX_BODY_LEN`]: damage, never a reason to read
    /// or reserve that much.
    BodyTooLong {
        /// The stated length.
        len: u32,
    },
    /// More bytes than the header states: the manifest is not exactly the bytes given.
    TrailingBytes {
        /// Bytes there are.
        len: usize,
        /// Bytes the header accounts for.
        expected: usize,
    },
    /// The CRC32C does not match: the manifest is damaged.
    ChecksumMismatch {
        /// The checksum stored at the end.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// Header flags this version does not define are set.
    UnsupportedFlags {
        /// The flags found.
        flags: u16,
    },
    /// The body does not parse as postcard (a writer's bug: its checksum matched).
    Malformed {
        /// Offset in the body where parsing failed.
        at: usize,
        /// What postcard reported.
        error: postcard::Error,
    },
    /// The body has bytes after its last field (a writer's bug: its checksum matched).
    TrailingBody {
        /// Bytes left over.
        unused: usize,
    },
    /// The manifest parses but breaks a rule of its content.
    Invalid(Invalid),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { len, needed } => {
                write!(f, "manifest truncated: {len} of {needed} bytes")
            }
            DecodeError::BadMagic => f.write_str("not a lamina manifest (bad magic)"),
            DecodeError::UnsupportedVersion { version } => write!(
                f,
                "manifest format version {version} is not supported (this build reads {VERSION})"
            ),
            DecodeError::BodyTooLong { len } => write!(
                f,
                "manifest header states a body of {len} bytes, over the limit of {MAX_BODY_LEN} \
                 (damaged header)"
            ),
            DecodeError::TrailingBytes { len, expected } => write!(
                f,
                "manifest is {len} bytes, its header accounts for {expected} (header {HEADER_LEN} \
                 + body + checksum 4)"
            ),
            DecodeError::ChecksumMismatch { stored, computed } => write!(
                f,
                "manifest damaged: checksum {computed:#010x} does not match the stored {stored:#010x}"
            ),
            DecodeError::UnsupportedFlags { flags } => {
                write!(f, "manifest flags {flags:#06x} are not supported")
            }
            DecodeError::Malformed { at, error } => {
                write!(f, "manifest body does not parse at body byte {at}: {error}")
            }
            DecodeError::TrailingBody { unused } => {
                write!(f, "manifest body has {unused} bytes after its last field")
            }
            DecodeError::Invalid(e) => write!(f, "invalid manifest: {e}"),
        }
    }
}

impl core::error::Error for DecodeError {}

impl From<Invalid> for DecodeError {
    fn from(e: Invalid) -> Self {
        DecodeError::Invalid(e)
    }
}

impl From<Invalid> for EncodeError {
    fn from(e: Invalid) -> Self {
        EncodeError::Invalid(e)
    }
}
