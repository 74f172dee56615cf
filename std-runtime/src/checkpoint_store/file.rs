//! [`FileSystemCheckpointStore`]: the checkpoint store in a directory, on `lamina-file`'s
//! atomically published objects.

use super::buffers::Buffers;
use super::error::{CheckpointError, ManifestDamage, StoreOp};
use super::names::{manifest_file_name, parse_manifest_file_name};
use super::{
    CheckpointStore, MAX_MANIFEST_LEN, ManifestFromParts, PartInfo, check_key, check_manifest,
    part_info, verify_part,
};
use crate::parallel::Permits;
use lamina_core::io::{Error as _, ObjectOp, ObjectStorage, Publish};
use lamina_file::{FileError, FileObjects, StagedObject, WholeObject};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

/// The subdirectory that holds the parts.
const PARTS_DIR: &str = "parts";
/// The subdirectory that holds the manifests.
const MANIFESTS_DIR: &str = "manifests";
/// Threads encoding and writing parts. A part is written with direct I/O, so its writer waits
/// for the device: more writers than cores keep parts being encoded while others wait (with 8,
/// the last parts of a 16-part checkpoint were encoded only once the first were written).
const ENCODERS: usize = 16;
/// Where a part starts in its writer's buffer: the largest memory alignment direct I/O asks
/// of common devices (4 KiB sectors).
const PART_ALIGN: usize = 4096;
/// Bytes of encoding buffers kept between checkpoints ([`Buffers`]): a dozen writers'
/// buffers of 2 MiB parts, each grown by doubling to 4 MiB.
const KEPT_BUFFER_BYTES: usize = 48 << 20;
/// Threads syncing written parts: syncs mostly wait on the device, and the file system merges
/// the flushes of those in flight together.
const SYNCERS: usize = 16;

/// A checkpoint store in a directory: parts in `dir/parts/{key}`, manifests in
/// `dir/manifests/{id:020}.manifest`.
///
/// Every write goes to a temporary file (`.tmp-*`, never listed or read; a part's written with
/// direct I/O where the file system offers it, see [`FileObjects::stage`]), is fsynced, moved into
/// place and the directory fsynced: a part by `rename` (replacing), a manifest by `link`, which
/// fails if the name is taken, so the first writer of manifest N wins even across processes.
/// A crash leaves the old object or the new one whole, and at worst a temporary file.
///
/// Keys are checked before any file is touched: one plain name
/// ([`lamina_core::manifest::validate_key`]), not starting with `.tmp-`. A read never follows a
/// symlink found under a part's or a manifest's name (it is [`CheckpointError::PartNotAFile`],
/// or a manifest damaged as [`ManifestDamage::NotAFile`]), so a planted link cannot make the
/// store read outside `dir`; deleting such a name removes the link, never its target.
///
/// Memory: the buffers parts were encoded into are kept for the next checkpoint, up to 48 MiB
/// (reused memory is already mapped, and a part encoded into it is not moved as it grows).
#[derive(Debug)]
pub struct FileSystemCheckpointStore {
    dir: PathBuf,
    parts: FileObjects,
    manifests: FileObjects,
    buffers: Buffers,
}

impl FileSystemCheckpointStore {
    /// Opens the store in `dir`, creating it and its two subdirectories if missing (durably).
    ///
    /// # Errors
    /// A storage error naming the directory when it cannot be created or is not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let dir = dir.as_ref().to_path_buf();
        let open = |sub: &str| {
            let path = dir.join(sub);
            FileObjects::open(&path).map_err(|e| storage(StoreOp::Open, &path, e))
        };
        let parts = open(PARTS_DIR)?;
        let manifests = open(MANIFESTS_DIR)?;
        Ok(FileSystemCheckpointStore {
            dir,
            parts,
            manifests,
            buffers: Buffers::new(KEPT_BUFFER_BYTES),
        })
    }

    /// The store's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where part `key` is stored, once the key is checked.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidKey`] or [`CheckpointError::ReservedKey`].
    pub fn part_path(&self, key: &str) -> Result<PathBuf, CheckpointError> {
        check_key(key)?;
        Ok(self.parts.dir().join(key))
    }

    /// Where manifest `id` is stored.
    #[must_use]
    pub fn manifest_path(&self, id: u64) -> PathBuf {
        self.manifests.dir().join(manifest_file_name(id))
    }

    /// Runs one publish or delete in `dir`. `FileObjects` completes inside `submit`; a fresh one
    /// per call keeps the store `Sync` with no lock, so parts are written in parallel.
    fn run(dir: &Path, op: ObjectOp<'_>) -> Result<(), FileError> {
        let mut objects = FileObjects::open(dir)?;
        objects.submit(0, op)?;
        match objects.poll_completion() {
            Some((_, result)) => result,
            None => Err(FileError::Io {
                op: lamina_file::Op::Write,
                path: dir.to_path_buf(),
                segment: None,
                source: std::io::Error::other("the operation reported no completion"),
            }),
        }
    }

    /// The valid names in `dir`, sorted (temporary files are never listed).
    fn names(dir: &Path, op: StoreOp) -> Result<Vec<String>, CheckpointError> {
        let mut objects = FileObjects::open(dir).map_err(|e| storage(op, dir, e))?;
        let mut names = Vec::new();
        objects
            .list("", &mut |name| names.push(name.to_owned()))
            .map_err(|e| storage(op, dir, e))?;
        Ok(names)
    }
}

impl CheckpointStore for FileSystemCheckpointStore {
    /// Parts are written with direct I/O where the file system offers it: one padded to whole
    /// 4 KiB blocks is one aligned write, with no last block copied and no truncate after it
    /// (which on ext4 waits for the block to be read back). The zeros cost no disk space on a
    /// file system of 4 KiB blocks.
    fn prefers_block_padding(&self) -> bool {
        true
    }

    fn put_part(&self, key: &str, bytes: &[u8]) -> Result<PartInfo, CheckpointError> {
        let path = self.part_path(key)?;
        let op = ObjectOp::Publish {
            name: key,
            data: bytes,
            mode: Publish::Replace,
        };
        Self::run(self.parts.dir(), op).map_err(|e| storage(StoreOp::PutPart, &path, e))?;
        Ok(part_info(bytes))
    }

    /// Parts are encoded and written to temporary files on a few threads while others sync
    /// the ones written (so the device works while the CPUs encode), then all are renamed into
    /// place and the directory synced once.
    fn put_parts(
        &self,
        keys: &[String],
        encode: &(dyn Fn(usize, &mut Vec<u8>) + Sync),
    ) -> Result<Vec<PartInfo>, CheckpointError> {
        for key in keys {
            check_key(key)?;
        }
        let (staged, _) = stage_parts(&self.parts, &self.buffers, keys, encode, None)?;
        let (staged, infos): (Vec<_>, Vec<_>) = staged.into_iter().unzip();
        self.parts
            .commit_staged(staged)
            .map_err(|e| storage(StoreOp::PutPart, self.parts.dir(), e))?;
        Ok(infos)
    }

    /// As [`Self::put_parts`], and the manifest is built as soon as the last part is encoded,
    /// then written and synced to a temporary file while the parts are still being written:
    /// once the parts are in place, publishing it is only its `link` and a directory sync.
    fn put_checkpoint(
        &self,
        id: u64,
        keys: &[String],
        encode: &(dyn Fn(usize, &mut Vec<u8>) + Sync),
        manifest: &ManifestFromParts<'_>,
    ) -> Result<Vec<PartInfo>, CheckpointError> {
        for key in keys {
            check_key(key)?;
        }
        if keys.is_empty() {
            self.publish_manifest(id, &manifest(&[])?)?;
            return Ok(Vec::new());
        }
        let job = ManifestJob {
            id,
            objects: &self.manifests,
            build: manifest,
        };
        let (staged, staged_manifest) =
            stage_parts(&self.parts, &self.buffers, keys, encode, Some(&job))?;
        let staged_manifest = staged_manifest
            .ok_or_else(|| writer_panicked(StoreOp::PublishManifest, &self.manifest_path(id)))?;
        let (staged, infos): (Vec<_>, Vec<_>) = staged.into_iter().unzip();
        self.parts
            .commit_staged(staged)
            .map_err(|e| storage(StoreOp::PutPart, self.parts.dir(), e))?;
        self.manifests
            .publish_staged(staged_manifest, Publish::IfAbsent)
            .map_err(|e| publish_error(id, &self.manifest_path(id), e))?;
        Ok(infos)
    }

    fn delete_parts(&self, keys: &[String]) -> Result<(), CheckpointError> {
        for key in keys {
            check_key(key)?;
        }
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.parts
            .delete_many(&names)
            .map_err(|e| storage(StoreOp::DeletePart, self.parts.dir(), e))
    }

    fn read_part(&self, key: &str, size: u64, crc: u32) -> Result<Vec<u8>, CheckpointError> {
        let path = self.part_path(key)?;
        let location = || path.display().to_string();
        let bytes = match self.parts.read_whole(key, size) {
            Ok(WholeObject::Bytes(bytes)) => bytes,
            Ok(WholeObject::TooLong { len }) => {
                return Err(CheckpointError::PartSize {
                    key: key.to_owned(),
                    location: location(),
                    expected: size,
                    actual: len,
                });
            }
            Err(FileError::NotRegularFile { .. }) => {
                return Err(CheckpointError::PartNotAFile {
                    key: key.to_owned(),
                    location: location(),
                });
            }
            Err(e) => return Err(storage(StoreOp::ReadPart, &path, e)),
        };
        verify_part(key, &location(), size, crc, bytes)
    }

    fn delete_part(&self, key: &str) -> Result<(), CheckpointError> {
        let path = self.part_path(key)?;
        Self::run(self.parts.dir(), ObjectOp::Delete { name: key })
            .map_err(|e| storage(StoreOp::DeletePart, &path, e))
    }

    fn list_parts(&self) -> Result<Vec<String>, CheckpointError> {
        let mut names = Self::names(self.parts.dir(), StoreOp::ListParts)?;
        names.retain(|name| check_key(name).is_ok());
        Ok(names)
    }

    fn publish_manifest(&self, id: u64, bytes: &[u8]) -> Result<(), CheckpointError> {
        check_manifest(id, bytes)
            .map_err(|damage| CheckpointError::ManifestInvalid { id, damage })?;
        let name = manifest_file_name(id);
        let path = self.manifests.dir().join(&name);
        let op = ObjectOp::Publish {
            name: &name,
            data: bytes,
            mode: Publish::IfAbsent,
        };
        Self::run(self.manifests.dir(), op).map_err(|e| publish_error(id, &path, e))
    }

    fn read_manifest(&self, id: u64) -> Result<Vec<u8>, CheckpointError> {
        let name = manifest_file_name(id);
        let path = self.manifests.dir().join(&name);
        let damaged = |damage| CheckpointError::ManifestDamaged {
            id,
            location: path.display().to_string(),
            damage,
        };
        match self.manifests.read_whole(&name, MAX_MANIFEST_LEN) {
            Ok(WholeObject::Bytes(bytes)) => match check_manifest(id, &bytes) {
                Ok(()) => Ok(bytes),
                Err(damage) => Err(damaged(damage)),
            },
            Ok(WholeObject::TooLong { len }) => Err(damaged(ManifestDamage::TooLong { len })),
            Err(FileError::NotRegularFile { .. }) => Err(damaged(ManifestDamage::NotAFile)),
            Err(e) => Err(storage(StoreOp::ReadManifest, &path, e)),
        }
    }

    fn list_manifests(&self) -> Result<Vec<u64>, CheckpointError> {
        let names = Self::names(self.manifests.dir(), StoreOp::ListManifests)?;
        let mut ids: Vec<u64> = names
            .iter()
            .filter_map(|name| parse_manifest_file_name(name))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn delete_manifest(&self, id: u64) -> Result<(), CheckpointError> {
        let name = manifest_file_name(id);
        let path = self.manifests.dir().join(&name);
        Self::run(self.manifests.dir(), ObjectOp::Delete { name: &name })
            .map_err(|e| storage(StoreOp::DeleteManifest, &path, e))
    }
}

/// A manifest [`stage_parts`] stages once every part is encoded, built from what they are.
struct ManifestJob<'a> {
    id: u64,
    objects: &'a FileObjects,
    build: &'a ManifestFromParts<'a>,
}

impl ManifestJob<'_> {
    /// Builds the manifest from `infos`, checks it, and writes and syncs it to a temporary file.
    fn stage(&self, infos: &[PartInfo]) -> Result<StagedObject, CheckpointError> {
        let bytes = (self.build)(infos)?;
        check_manifest(self.id, &bytes).map_err(|damage| CheckpointError::ManifestInvalid {
            id: self.id,
            damage,
        })?;
        let name = manifest_file_name(self.id);
        self.objects
            .stage(&name, &bytes)
            .and_then(StagedObject::sync)
            .map_err(|e| storage(StoreOp::PublishManifest, &self.objects.dir().join(&name), e))
    }
}

/// Encodes, writes and syncs parts `keys` as temporary files of `parts`: [`ENCODERS`] threads
/// (the calling thread one of them) encode (each into a buffer of its own from `buffers`,
/// reused; no more at once than there are CPUs) and write, and hand each written file to
/// [`SYNCERS`] threads that sync it; an encoder that has no part left to encode (and each, when
/// there are no more parts than encoders) syncs its own, since a hand-over only adds a thread's
/// wake-up to the tail. With a `manifest`, a thread of its own stages it as soon as the last
/// part is encoded. Returns each part, synced, with its size and CRC32C, in order, and the
/// manifest staged (`None` without one, or if it was never built); on error the temporary files
/// written are removed.
fn stage_parts(
    parts: &FileObjects,
    buffers: &Buffers,
    keys: &[String],
    encode: &(dyn Fn(usize, &mut Vec<u8>) + Sync),
    manifest: Option<&ManifestJob<'_>>,
) -> Result<StagedParts, CheckpointError> {
    let location = |i: usize| parts.dir().join(keys.get(i).map_or("", String::as_str));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let cpus = Permits::per_cpu();
    let (tx, rx) = mpsc::channel::<(usize, StagedObject, PartInfo)>();
    let rx = Mutex::new(rx);
    // What each part is, and how many are encoded: the manifest is built from all of them.
    let encoded = Mutex::new((vec![None; keys.len()], 0usize));
    // As many encoders as parts: each syncs its own, no syncer is needed.
    let inline = keys.len() <= ENCODERS;
    let encoder = |tx: mpsc::Sender<(usize, StagedObject, PartInfo)>,
                   to_manifest: mpsc::Sender<Vec<PartInfo>>| {
        let mut buf = buffers.lend();
        // Parts this encoder synced itself (their temporary files removed if it fails).
        let mut done = Vec::new();
        loop {
            // Parts are taken in order once a CPU is free to encode them, so the first are
            // written while the later ones are encoded.
            let permit = cpus.acquire();
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(key) = keys.get(i) else {
                return Ok(done);
            };
            if failed.load(Ordering::Relaxed) {
                return Ok(done);
            }
            // The part starts where the buffer's memory is aligned for direct I/O, so that it
            // is written from there, without a copy (unless encoding it moved the buffer).
            buf.clear();
            buf.reserve(PART_ALIGN);
            let at = buf.as_ptr().align_offset(PART_ALIGN).min(PART_ALIGN);
            buf.resize(at, 0);
            encode(i, &mut buf);
            let at = realign(&mut buf, at);
            let part = buf.get(at..).unwrap_or_default();
            let info = part_info(part);
            // Only now: checksumming with no CPU of its own, behind the next parts' encoding,
            // held this part's write back by a millisecond and more.
            drop(permit);
            if manifest.is_some() {
                // The encoder of the last part hands every part's info to the manifest's thread.
                let mut encoded = encoded.lock().unwrap_or_else(PoisonError::into_inner);
                let (infos, count) = &mut *encoded;
                if let Some(slot) = infos.get_mut(i) {
                    *slot = Some(info);
                    *count += 1;
                }
                if *count == keys.len() {
                    let _ = to_manifest.send(infos.iter().flatten().copied().collect());
                }
            }
            let staged = parts.stage(key, part).map_err(|e| (i, e))?;
            // With no part left to encode, handing this one to a syncer only adds a thread's
            // wake-up to the checkpoint's tail: sync it here.
            if inline || next.load(Ordering::Relaxed) >= keys.len() {
                done.push((i, staged.sync().map_err(|e| (i, e))?, info));
            } else {
                // The syncers outlive every sender, so a send cannot fail while one runs.
                let _ = tx.send((i, staged, info));
            }
        }
    };
    let syncer = || {
        let mut done = Vec::new();
        let mut error = None;
        // Every file sent is received, so none is left behind when something fails.
        while let Ok((i, staged, info)) = rx.lock().map_or(Err(mpsc::RecvError), |rx| rx.recv()) {
            if failed.load(Ordering::Relaxed) {
                staged.discard();
                continue;
            }
            match staged.sync() {
                Ok(staged) => done.push((i, staged, info)),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    error = Some((i, e));
                }
            }
        }
        (done, error)
    };
    let (to_manifest, infos) = mpsc::channel::<Vec<PartInfo>>();
    let encode_parts = |tx, to_manifest| {
        let result = encoder(tx, to_manifest);
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        result
    };
    let (encoded, synced, staged_manifest) = std::thread::scope(|scope| {
        // The calling thread is one of the encoders: the first part is encoded without
        // waiting for a thread to start (~0.1 ms in a large process).
        let own = (tx.clone(), to_manifest.clone());
        let encoders: Vec<_> = (1..ENCODERS.min(keys.len()))
            .map(|_| {
                let (tx, to_manifest) = (tx.clone(), to_manifest.clone());
                scope.spawn(|| encode_parts(tx, to_manifest))
            })
            .collect();
        // Spawned after the encoders, which have the work to start. It waits for the last
        // part's encoder, or for every encoder to have gone (a failure).
        let failed = &failed;
        let manifest = manifest.map(|job| {
            scope.spawn(move || {
                let infos = infos.recv().ok()?;
                let staged = job.stage(&infos);
                if staged.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                Some(staged)
            })
        });
        drop(tx);
        drop(to_manifest);
        let syncers: Vec<_> = (0..if inline { 0 } else { SYNCERS.min(keys.len()) })
            .map(|_| scope.spawn(syncer))
            .collect();
        // A panic of the caller's `encode` here is what it is on a spawned encoder: a
        // writer that died, reported as an error once the others are done.
        let mine = catch_unwind(AssertUnwindSafe(|| encode_parts(own.0, own.1))).ok();
        let encoded: Vec<_> = std::iter::once(mine)
            .chain(encoders.into_iter().map(|h| h.join().ok()))
            .collect();
        let synced: Vec<_> = syncers.into_iter().map(|h| h.join().ok()).collect();
        let staged_manifest = manifest.map(|h| h.join().ok());
        (encoded, synced, staged_manifest)
    });
    let panicked = || writer_panicked(StoreOp::PutPart, parts.dir());
    let mut errors = Vec::new();
    let staged_manifest = match staged_manifest {
        None | Some(Some(None)) => None,
        Some(Some(Some(Ok(staged)))) => Some(staged),
        Some(Some(Some(Err(e)))) => {
            errors.push(e);
            None
        }
        Some(None) => {
            errors.push(panicked());
            None
        }
    };
    let mut staged = Vec::with_capacity(keys.len());
    for result in encoded {
        match result {
            Some(Ok(done)) => staged.extend(done),
            Some(Err((i, e))) => errors.push(storage(StoreOp::PutPart, &location(i), e)),
            None => errors.push(panicked()),
        }
    }
    for result in synced {
        match result {
            Some((done, error)) => {
                staged.extend(done);
                if let Some((i, e)) = error {
                    errors.push(storage(StoreOp::PutPart, &location(i), e));
                }
            }
            None => errors.push(panicked()),
        }
    }
    if errors.is_empty() && staged.len() != keys.len() {
        errors.push(panicked());
    }
    if let Some(e) = errors.into_iter().next() {
        for (_, object, _) in staged {
            object.discard();
        }
        return Err(e);
    }
    staged.sort_unstable_by_key(|(i, _, _)| *i);
    let staged = staged
        .into_iter()
        .map(|(_, object, info)| (object, info))
        .collect();
    Ok((staged, staged_manifest))
}

/// What [`stage_parts`] staged: each part with its size and CRC32C, and the manifest.
type StagedParts = (Vec<(StagedObject, PartInfo)>, Option<StagedObject>);

/// The error of a writer thread that panicked while doing `op` in `location`.
fn writer_panicked(op: StoreOp, location: &Path) -> CheckpointError {
    CheckpointError::Storage {
        op,
        location: location.display().to_string(),
        failure: lamina_core::io::Failure::Other,
        source: Box::new(std::io::Error::other("a checkpoint writer thread panicked")),
    }
}

/// The error of publishing manifest `id` at `path`: [`CheckpointError::ManifestExists`] when
/// another writer published it first.
fn publish_error(id: u64, path: &Path, e: FileError) -> CheckpointError {
    if e.failure() == lamina_core::io::Failure::AlreadyExists {
        CheckpointError::ManifestExists {
            id,
            location: path.display().to_string(),
        }
    } else {
        storage(StoreOp::PublishManifest, path, e)
    }
}

/// Moves the part at `buf[at..]` to where `buf`'s memory is aligned for direct I/O, if encoding
/// it grew (so moved) the buffer; returns where it starts now. One copy in memory is cheaper
/// than writing an unaligned part through a bounce buffer, a chunk at a time.
fn realign(buf: &mut Vec<u8>, at: usize) -> usize {
    if (buf.as_ptr() as usize + at).is_multiple_of(PART_ALIGN) {
        return at;
    }
    let len = buf.len().saturating_sub(at);
    buf.reserve(PART_ALIGN);
    let to = buf.as_ptr().align_offset(PART_ALIGN).min(PART_ALIGN);
    // Within the capacity just reserved: the buffer does not move again.
    buf.resize(buf.len().max(to + len), 0);
    buf.copy_within(at..at + len, to);
    buf.truncate(to + len);
    to
}

/// A storage error of `op` at `path`.
fn storage(op: StoreOp, path: &Path, e: FileError) -> CheckpointError {
    CheckpointError::Storage {
        op,
        location: path.display().to_string(),
        failure: e.failure(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reserved_prefix_is_the_file_backends_temporary_prefix() {
        assert_eq!(super::super::TEMP_PREFIX, lamina_file::names::TEMP_PREFIX);
    }

    #[test]
    fn a_part_moved_by_its_buffer_growing_is_realigned_whole() {
        let part: Vec<u8> = (0..10_000u32).map(|i| (i % 249) as u8).collect();
        for at in [0, 1, 17, 4095, 4096] {
            // A buffer whose part starts at an offset that is (almost surely) not aligned.
            let mut buf = vec![0u8; at];
            buf.extend_from_slice(&part);
            let to = super::realign(&mut buf, at);
            assert!((buf.as_ptr() as usize + to).is_multiple_of(super::PART_ALIGN));
            assert!(
                buf[to..] == part[..],
                "part moved from {at} to {to} changed"
            );
        }
    }
}
