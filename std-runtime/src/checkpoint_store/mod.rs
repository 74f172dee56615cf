//! The checkpoint store: where checkpoint manifests and the snapshot parts they name are kept.
//!
//! [`CheckpointStore`] is the contract the checkpoint and recovery code use; it is written so that
//! a store over an object store (S3 and the like) fits it as well as a directory does: parts are
//! whole objects written once under a plain key, manifests are numbered objects published
//! create-only, and every read is verified. [`FileSystemCheckpointStore`] keeps them in a
//! directory (feature `file`); [`ObjectsCheckpointStore`] keeps them in any
//! [`lamina_core::io::ObjectStorage`].

#[cfg(feature = "file")]
mod buffers;
mod error;
#[cfg(feature = "file")]
mod file;
mod names;
mod objects;

pub use error::{CheckpointError, ManifestDamage, StoreOp};
#[cfg(feature = "file")]
pub use file::FileSystemCheckpointStore;
pub use names::{MANIFEST_SUFFIX, manifest_file_name, parse_manifest_file_name};
pub use objects::ObjectsCheckpointStore;

use lamina_core::crc::crc32c;
use lamina_core::manifest::{CRC_LEN, HEADER_LEN, MAX_BODY_LEN, Manifest, validate_key};

/// The longest manifest a store reads: header, the longest body the format allows, checksum. A
/// longer object under a manifest's name is damage, never read.
pub const MAX_MANIFEST_LEN: u64 = (HEADER_LEN + MAX_BODY_LEN + CRC_LEN) as u64;

/// What a stored part is: the two values a manifest records for it and a read checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PartInfo {
    /// Its length in bytes.
    pub size: u64,
    /// CRC32C of its bytes.
    pub crc: u32,
}

/// Builds a checkpoint's encoded manifest from what its parts are, as stored (in the order of
/// their keys), for [`CheckpointStore::put_checkpoint`].
pub type ManifestFromParts<'a> =
    dyn Fn(&[PartInfo]) -> Result<Vec<u8>, CheckpointError> + Sync + 'a;

/// A manifest as read from the store: its id and its encoded bytes, which decode, validate and
/// carry that id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredManifest {
    /// The checkpoint id it is stored under (and holds).
    pub id: u64,
    /// The encoded manifest ([`Manifest::decode`] them).
    pub bytes: Vec<u8>,
}

impl StoredManifest {
    /// The decoded manifest, borrowing the bytes.
    ///
    /// # Errors
    /// None for a manifest a store returned (it was decoded before); the decode error otherwise.
    pub fn manifest(&self) -> Result<Manifest<'_>, lamina_core::manifest::DecodeError> {
        Manifest::decode(&self.bytes)
    }
}

/// A newer manifest [`CheckpointStore::latest_manifest`] passed over, and why.
#[derive(Debug)]
pub struct SkippedManifest {
    /// Its id (from its name).
    pub id: u64,
    /// Why it cannot be used: [`CheckpointError::ManifestDamaged`] naming where it is and what
    /// is wrong, or a `NotFound` storage error when it was deleted while being read.
    pub error: CheckpointError,
}

/// What [`CheckpointStore::latest_manifest`] found.
#[derive(Debug, Default)]
pub struct LatestManifest {
    /// The highest-numbered manifest that is whole and valid, `None` when there is none.
    pub latest: Option<StoredManifest>,
    /// The higher-numbered manifests passed over on the way to it, highest first. Empty when
    /// the newest one was used: anything here means recovery falls back and must say so.
    pub skipped: Vec<SkippedManifest>,
}

/// Where checkpoints are kept: snapshot parts under plain keys, and numbered manifests that name
/// them. Blocking; `Send + Sync`, so parts can be written from several threads at once.
///
/// Every key is checked with [`lamina_core::manifest::validate_key`] before anything is touched:
/// a key is one plain name, never a path, since keys come back from manifests that are untrusted
/// when read.
pub trait CheckpointStore: Send + Sync {
    /// Stores `bytes` as part `key`, replacing any part of that name whole (a reader sees the old
    /// bytes or the new, never a mix). Durable on return. Returns the size and CRC32C a manifest
    /// records for it.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidKey`] or [`CheckpointError::ReservedKey`] before anything is
    /// written; a storage error naming the part.
    fn put_part(&self, key: &str, bytes: &[u8]) -> Result<PartInfo, CheckpointError>;

    /// Whether parts whose length is a multiple of 4 KiB are written faster here (a store
    /// writing with direct I/O writes them whole, with no last block to cut back), so that an
    /// encoder whose format can pad should (a key-value part's `padded` flag, `core/FORMAT.md`).
    /// `false` by default.
    fn prefers_block_padding(&self) -> bool {
        false
    }

    /// Stores parts `keys`, all durable on return, and returns what a manifest records for
    /// each, in order. `encode(i, buf)` appends part `i`'s bytes to `buf` and leaves the bytes
    /// it holds alone (a writer reuses one buffer for many parts, so large parts cost no fresh
    /// memory each, and may start the part where it suits its I/O). By default each part is encoded and [`Self::put_part`] in turn; a store may do
    /// better (a directory: parts encoded and written on some threads while others sync the ones
    /// written, then all moved into place with one directory sync). A failure may leave some of
    /// them stored (no manifest names them yet, so garbage collection removes them).
    ///
    /// # Errors
    /// As [`Self::put_part`], for a part that failed (one of them, when several did).
    fn put_parts(
        &self,
        keys: &[String],
        encode: &(dyn Fn(usize, &mut Vec<u8>) + Sync),
    ) -> Result<Vec<PartInfo>, CheckpointError> {
        let mut buf = Vec::new();
        keys.iter()
            .enumerate()
            .map(|(i, key)| {
                buf.clear();
                encode(i, &mut buf);
                self.put_part(key, &buf)
            })
            .collect()
    }

    /// A whole checkpoint in one call: stores parts `keys` as [`Self::put_parts`] does, then
    /// publishes manifest `id`, whose bytes `manifest(infos)` builds from what the parts are, as
    /// [`Self::publish_manifest`] does (checked first, create-only). By default exactly that, in
    /// turn; a store may write the manifest while the parts are still being written, and
    /// publish it only once they are durable.
    ///
    /// # Errors
    /// As [`Self::put_parts`] and [`Self::publish_manifest`]; `manifest`'s own error. Parts may
    /// be left stored (garbage collection removes them); the manifest is published or absent.
    fn put_checkpoint(
        &self,
        id: u64,
        keys: &[String],
        encode: &(dyn Fn(usize, &mut Vec<u8>) + Sync),
        manifest: &ManifestFromParts<'_>,
    ) -> Result<Vec<PartInfo>, CheckpointError> {
        let infos = self.put_parts(keys, encode)?;
        self.publish_manifest(id, &manifest(&infos)?)?;
        Ok(infos)
    }

    /// Reads part `key` whole and checks it against the size and CRC32C a manifest recorded.
    /// The stored length is checked before anything is read, so a manifest never makes the
    /// store read more than `size` bytes.
    ///
    /// # Errors
    /// [`CheckpointError::PartSize`] or [`CheckpointError::PartChecksum`] for a damaged part,
    /// [`CheckpointError::PartNotAFile`] for something that is not a stored object, a
    /// `NotFound` storage error for a missing one; each names the part.
    fn read_part(&self, key: &str, size: u64, crc: u32) -> Result<Vec<u8>, CheckpointError>;

    /// Deletes part `key`, durably. Deleting a missing part succeeds, so an interrupted garbage
    /// collection is simply run again.
    ///
    /// # Errors
    /// A bad key, or a storage error naming the part.
    fn delete_part(&self, key: &str) -> Result<(), CheckpointError>;

    /// Deletes several parts, durably: by default one [`Self::delete_part`] each.
    ///
    /// # Errors
    /// As [`Self::delete_part`], for the first that failed; the ones before it are deleted.
    fn delete_parts(&self, keys: &[String]) -> Result<(), CheckpointError> {
        keys.iter().try_for_each(|key| self.delete_part(key))
    }

    /// The keys of the stored parts, sorted. Names that are not valid keys (and temporary files
    /// of writes in progress or interrupted) are not parts and are left out.
    ///
    /// # Errors
    /// A storage error when the parts cannot be listed.
    fn list_parts(&self) -> Result<Vec<String>, CheckpointError>;

    /// Publishes `bytes`, an encoded manifest of checkpoint `id`, create-only: the first writer
    /// of manifest `id` wins, durably on return. The bytes are checked first (they decode,
    /// validate and hold `id`), so a store never publishes a manifest it would not read back.
    ///
    /// # Errors
    /// [`CheckpointError::ManifestExists`] when manifest `id` is already there (a writer that
    /// gets it has lost and must stop); [`CheckpointError::ManifestInvalid`] for bytes that are
    /// not a manifest of `id`; a storage error.
    fn publish_manifest(&self, id: u64, bytes: &[u8]) -> Result<(), CheckpointError>;

    /// Reads manifest `id` and checks it: at most [`MAX_MANIFEST_LEN`] bytes, it decodes and
    /// validates, and it holds `id`.
    ///
    /// # Errors
    /// [`CheckpointError::ManifestDamaged`] naming the manifest and what is wrong; a `NotFound`
    /// storage error for a missing one; another storage error (a read error) otherwise.
    fn read_manifest(&self, id: u64) -> Result<Vec<u8>, CheckpointError>;

    /// The ids of the stored manifests, ascending. Other names are ignored.
    ///
    /// # Errors
    /// A storage error when the manifests cannot be listed.
    fn list_manifests(&self) -> Result<Vec<u64>, CheckpointError>;

    /// Deletes manifest `id`, durably. Deleting a missing manifest succeeds.
    ///
    /// # Errors
    /// A storage error naming the manifest.
    fn delete_manifest(&self, id: u64) -> Result<(), CheckpointError>;

    /// The highest-numbered manifest that is whole and valid, and the newer ones passed over
    /// because they are damaged (a crash cannot leave a half-published manifest, but a disk can
    /// damage one), with the reason for each.
    ///
    /// # Errors
    /// A storage error other than damage (the listing fails, a read fails with an I/O error):
    /// the latest checkpoint is then unknown, and falling back past it would be wrong.
    fn latest_manifest(&self) -> Result<LatestManifest, CheckpointError> {
        let mut ids = self.list_manifests()?;
        let mut skipped = Vec::new();
        while let Some(id) = ids.pop() {
            match self.read_manifest(id) {
                Ok(bytes) => {
                    return Ok(LatestManifest {
                        latest: Some(StoredManifest { id, bytes }),
                        skipped,
                    });
                }
                Err(error) if error.is_manifest_skippable() => {
                    skipped.push(SkippedManifest { id, error });
                }
                Err(error) => return Err(error),
            }
        }
        Ok(LatestManifest {
            latest: None,
            skipped,
        })
    }
}

/// Checks that `bytes` are a manifest a store may hand out as checkpoint `id`.
pub(crate) fn check_manifest(id: u64, bytes: &[u8]) -> Result<(), ManifestDamage> {
    if bytes.len() as u64 > MAX_MANIFEST_LEN {
        return Err(ManifestDamage::TooLong {
            len: bytes.len() as u64,
        });
    }
    let manifest = Manifest::decode(bytes).map_err(ManifestDamage::Decode)?;
    if manifest.id != id {
        return Err(ManifestDamage::IdMismatch { found: manifest.id });
    }
    Ok(())
}

/// The prefix of the temporary files object backends write before publishing (lamina-file's
/// `FileObjects` names them so): never a part's key, so a part can never be one of them.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Checks that `key` may name a part: a plain name ([`validate_key`]), and not one of the
/// temporary files'.
pub(crate) fn check_key(key: &str) -> Result<(), CheckpointError> {
    validate_key(key).map_err(|error| CheckpointError::InvalidKey {
        key: key.to_owned(),
        error,
    })?;
    if key.starts_with(TEMP_PREFIX) {
        return Err(CheckpointError::ReservedKey {
            key: key.to_owned(),
            prefix: TEMP_PREFIX,
        });
    }
    Ok(())
}

/// What a part's writer records for `bytes`.
pub(crate) fn part_info(bytes: &[u8]) -> PartInfo {
    PartInfo {
        size: bytes.len() as u64,
        crc: crc32c(bytes),
    }
}

/// Checks part `key`'s stored `bytes` (read from `location`) against the size and CRC32C its
/// manifest recorded.
pub(crate) fn verify_part(
    key: &str,
    location: &str,
    size: u64,
    crc: u32,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, CheckpointError> {
    if bytes.len() as u64 != size {
        return Err(CheckpointError::PartSize {
            key: key.to_owned(),
            location: location.to_owned(),
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    let actual = crc32c(&bytes);
    if actual != crc {
        return Err(CheckpointError::PartChecksum {
            key: key.to_owned(),
            location: location.to_owned(),
            expected: crc,
            actual,
        });
    }
    Ok(bytes)
}

/// Runs `job(i)` for every `i` below `count` on up to `threads` scoped threads, and returns the
/// results in index order, or the first error (a job that panicked is `panicked()`).
pub(crate) fn in_parallel<T: Send>(
    count: usize,
    threads: usize,
    job: &(dyn Fn(usize) -> Result<T, CheckpointError> + Sync),
    panicked: &(dyn Fn() -> CheckpointError + Sync),
) -> Result<Vec<T>, CheckpointError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = threads.min(count).max(1);
    let results: Vec<Result<Vec<(usize, T)>, CheckpointError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= count {
                            return Ok(done);
                        }
                        done.push((i, job(i)?));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(panicked())))
            .collect()
    });
    let mut all = Vec::with_capacity(count);
    for result in results {
        all.extend(result?);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}
