//! The checkpoint store's error: what failed, on which part or manifest, and where it lives.

use lamina_core::io::Failure;
use lamina_core::manifest::{DecodeError, KeyError};
use std::fmt;

/// The store operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOp {
    /// Opening the store (creating its directories).
    Open,
    /// Writing a part.
    PutPart,
    /// Reading a part.
    ReadPart,
    /// Deleting a part.
    DeletePart,
    /// Listing the parts.
    ListParts,
    /// Publishing a manifest.
    PublishManifest,
    /// Reading a manifest.
    ReadManifest,
    /// Deleting a manifest.
    DeleteManifest,
    /// Listing the manifests.
    ListManifests,
}

impl fmt::Display for StoreOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreOp::Open => "opening the store",
            StoreOp::PutPart => "writing a part",
            StoreOp::ReadPart => "reading a part",
            StoreOp::DeletePart => "deleting a part",
            StoreOp::ListParts => "listing the parts",
            StoreOp::PublishManifest => "publishing a manifest",
            StoreOp::ReadManifest => "reading a manifest",
            StoreOp::DeleteManifest => "deleting a manifest",
            StoreOp::ListManifests => "listing the manifests",
        })
    }
}

/// Why stored (or offered) bytes are not a usable manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestDamage {
    /// They do not decode: truncated, a flipped bit, not a manifest at all.
    Decode(DecodeError),
    /// They are a valid manifest of another checkpoint than the name says.
    IdMismatch {
        /// The id the manifest holds.
        found: u64,
    },
    /// The object is longer than any manifest can be; it was not read.
    TooLong {
        /// Its length in bytes.
        len: u64,
    },
    /// Something that is not a stored object (a directory, a FIFO) has the manifest's name.
    NotAFile,
}

impl fmt::Display for ManifestDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestDamage::Decode(e) => write!(f, "{e}"),
            ManifestDamage::IdMismatch { found } => {
                write!(f, "it holds checkpoint {found}, not the one its name says")
            }
            ManifestDamage::TooLong { len } => write!(
                f,
                "it is {len} bytes, longer than any manifest ({} bytes at most)",
                super::MAX_MANIFEST_LEN
            ),
            ManifestDamage::NotAFile => f.write_str("it is not a regular file"),
        }
    }
}

/// An error of a [`crate::CheckpointStore`]. Each variant names the part key or manifest id and,
/// where the store has one, the location (a path for the file-system store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A key that is not one plain name; nothing was touched.
    #[error("checkpoint part key {key:?} refused: {error}")]
    InvalidKey {
        /// The key given (or read from a manifest).
        key: String,
        /// What is wrong with it.
        error: KeyError,
    },
    /// A key the store keeps for its own temporary files; nothing was touched.
    #[error(
        "checkpoint part key {key:?} refused: names starting with {prefix:?} are the store's temporary files"
    )]
    ReservedKey {
        /// The key given.
        key: String,
        /// The reserved prefix.
        prefix: &'static str,
    },
    /// A stored part's length differs from the one its manifest recorded: truncated, extended,
    /// or another object.
    #[error(
        "checkpoint part {key:?} at {location} is {actual} bytes, the manifest says {expected}"
    )]
    PartSize {
        /// The part.
        key: String,
        /// Where it is stored.
        location: String,
        /// The length the manifest recorded.
        expected: u64,
        /// The stored length.
        actual: u64,
    },
    /// A stored part's CRC32C differs from the one its manifest recorded: it is damaged.
    #[error(
        "checkpoint part {key:?} at {location} is damaged: its CRC32C is {actual:#010x}, the \
         manifest says {expected:#010x}"
    )]
    PartChecksum {
        /// The part.
        key: String,
        /// Where it is stored.
        location: String,
        /// The checksum the manifest recorded.
        expected: u32,
        /// The checksum of the stored bytes.
        actual: u32,
    },
    /// Something that is not a stored object (a directory, a FIFO) has the part's name; it was
    /// not read.
    #[error("checkpoint part {key:?} at {location} is not a regular file")]
    PartNotAFile {
        /// The part.
        key: String,
        /// Where it is.
        location: String,
    },
    /// Manifest `id` exists already: another writer published it first, and this one lost.
    #[error(
        "checkpoint manifest {id} at {location} already exists: another writer published it first"
    )]
    ManifestExists {
        /// The manifest's id.
        id: u64,
        /// Where it is stored.
        location: String,
    },
    /// Bytes offered for publishing as manifest `id` are not a valid manifest of `id`; nothing
    /// was written.
    #[error("checkpoint manifest {id} refused before publishing: {damage}")]
    ManifestInvalid {
        /// The id it was to be published as.
        id: u64,
        /// What is wrong.
        damage: ManifestDamage,
    },
    /// The caller's builder could not make manifest `id` from the parts written
    /// ([`crate::CheckpointStore::put_checkpoint`]); nothing was published.
    #[error("checkpoint manifest {id} could not be built: {reason}")]
    ManifestNotBuilt {
        /// The checkpoint.
        id: u64,
        /// Why, in the builder's words.
        reason: String,
    },
    /// A stored manifest is damaged.
    #[error("checkpoint manifest {id} at {location} is unusable: {damage}")]
    ManifestDamaged {
        /// The manifest's id (from its name).
        id: u64,
        /// Where it is stored.
        location: String,
        /// What is wrong.
        damage: ManifestDamage,
    },
    /// The storage failed (or the object is missing: see `failure`).
    #[error("checkpoint store: {op} failed at {location} ({failure}): {source}")]
    Storage {
        /// What the store was doing.
        op: StoreOp,
        /// The part, manifest or directory it was doing it to.
        location: String,
        /// The kind of failure, to match on.
        failure: Failure,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl CheckpointError {
    /// The kind of failure: `AlreadyExists` for a lost manifest publish, `NotFound` for a
    /// missing part or manifest, `Io` for a device error, `Other` for everything else (bad keys
    /// and damage included).
    #[must_use]
    pub fn failure(&self) -> Failure {
        match self {
            CheckpointError::ManifestExists { .. } => Failure::AlreadyExists,
            CheckpointError::Storage { failure, .. } => *failure,
            _ => Failure::Other,
        }
    }

    /// Whether a manifest read that failed this way is passed over by
    /// [`crate::CheckpointStore::latest_manifest`]: damage, or a manifest deleted between the
    /// listing and the read. A read error is not: it leaves the latest checkpoint unknown.
    #[must_use]
    pub fn is_manifest_skippable(&self) -> bool {
        matches!(
            self,
            CheckpointError::ManifestDamaged { .. }
                | CheckpointError::Storage {
                    op: StoreOp::ReadManifest,
                    failure: Failure::NotFound,
                    ..
                }
        )
    }
}
