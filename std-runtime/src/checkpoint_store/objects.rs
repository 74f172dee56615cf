//! [`ObjectsCheckpointStore`]: the checkpoint store over any [`ObjectStorage`], the core's
//! contract for named objects published whole.

use super::error::{CheckpointError, ManifestDamage, StoreOp};
use super::names::{manifest_file_name, parse_manifest_file_name};
use super::{
    CheckpointStore, MAX_MANIFEST_LEN, PartInfo, check_key, check_manifest, part_info, verify_part,
};
use lamina_core::io::{Error as _, Failure, ObjectOp, ObjectStorage, Publish};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Bytes read per call when an object is read whole: what a read holds beyond the object's
/// real length at most, so a manifest's claimed size never sizes an allocation.
const READ_CHUNK: usize = 64 * 1024;

/// A checkpoint store over two [`ObjectStorage`]s: one holds the parts under their keys, the
/// other the manifests under `{id:020}.manifest` (two directories of `FileObjects`, two
/// prefixes of an object store).
///
/// A part is published with [`Publish::Replace`], a manifest with [`Publish::IfAbsent`], so
/// the first writer of manifest N wins; an `AlreadyExists` completion is
/// [`CheckpointError::ManifestExists`]. Keys are checked before anything is touched
/// ([`lamina_core::manifest::validate_key`], and not starting with `.tmp-`). Every read is
/// verified: a part's length and CRC32C against its manifest's record (reading at most one byte
/// more than recorded before the length is known wrong), a manifest read at most
/// [`MAX_MANIFEST_LEN`] bytes and checked to decode, validate and hold its id.
///
/// The trait is `&self` and `Sync`, an [`ObjectStorage`] is `&mut self`: each storage sits
/// behind a lock, held for one operation. An operation is submitted and its completion polled
/// until it arrives (the contract has no call to wait on, so a backend that completes later is
/// polled with a yield in between); the lock keeps it the only one in flight.
pub struct ObjectsCheckpointStore<O> {
    parts: Mutex<O>,
    manifests: Mutex<O>,
    /// Named in errors before each object's name (`{root}/parts/{key}`).
    root: String,
    /// Threads encoding and storing parts in [`CheckpointStore::put_parts`].
    writers: usize,
}

impl<O> fmt::Debug for ObjectsCheckpointStore<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectsCheckpointStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// A backend's error, kept as its text (the contract's errors need only say their
/// [`Failure`]).
#[derive(Debug)]
struct BackendError(String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

impl<O> ObjectsCheckpointStore<O>
where
    O: ObjectStorage + Send,
    O::Error: fmt::Display,
{
    /// A store keeping parts in `parts` and manifests in `manifests`.
    #[must_use]
    pub fn new(parts: O, manifests: O) -> Self {
        ObjectsCheckpointStore {
            parts: Mutex::new(parts),
            manifests: Mutex::new(manifests),
            root: String::new(),
            writers: 1,
        }
    }

    /// Encodes and stores the parts of a checkpoint on `writers` threads (at least 1; default
    /// 1, so the storage sees the parts in order). The storage still does one operation at a
    /// time: what runs in parallel is the encoding and the waiting.
    #[must_use]
    pub fn with_writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// Names the store as `root` in its errors' locations (a directory, a bucket's URL).
    #[must_use]
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// Gives the two storages back (parts, manifests).
    #[must_use]
    pub fn into_inner(self) -> (O, O) {
        (
            self.parts
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
            self.manifests
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Where part `key` is, as errors name it.
    fn part_location(&self, key: &str) -> String {
        format!("{}parts/{key}", self.prefix())
    }

    /// Where manifest `name` is, as errors name it.
    fn manifest_location(&self, name: &str) -> String {
        format!("{}manifests/{name}", self.prefix())
    }

    fn prefix(&self) -> String {
        if self.root.is_empty() || self.root.ends_with('/') {
            self.root.clone()
        } else {
            format!("{}/", self.root)
        }
    }
}

/// Locks `storage`; a panic of another holder leaves nothing half done that a later
/// operation could see (each is one whole publish or delete), so the lock is taken anyway.
fn lock<O>(storage: &Mutex<O>) -> MutexGuard<'_, O> {
    storage.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The token of the next operation. One operation is in flight per storage (the caller holds
/// its lock); distinct tokens still tell a completion left over by an operation whose caller
/// panicked from the one awaited.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Runs `op` on `objects` to its completion.
fn run<O: ObjectStorage>(objects: &mut O, op: ObjectOp<'_>) -> Result<(), O::Error> {
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    objects.submit(token, op)?;
    loop {
        match objects.poll_completion() {
            Some((done, result)) if done == token => return result,
            // Left over from an operation nobody waits for any more.
            Some(_) => {}
            None => std::thread::yield_now(),
        }
    }
}

/// What [`read_whole`] found.
enum Whole {
    Bytes(Vec<u8>),
    /// Longer than the limit: its length (read to its end, nothing kept).
    TooLong(u64),
}

/// Reads object `name` whole if it is at most `limit` bytes, in chunks, so that memory follows
/// what the object holds, never what a manifest claims.
fn read_whole<O: ObjectStorage>(
    objects: &mut O,
    name: &str,
    limit: u64,
) -> Result<Whole, O::Error> {
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let offset = bytes.len() as u64;
        // At most one byte past the limit: enough to know the object is longer.
        let room = limit.saturating_add(1).saturating_sub(offset);
        let want = usize::try_from(room).unwrap_or(usize::MAX).min(READ_CHUNK);
        let Some(buf) = chunk.get_mut(..want) else {
            return Ok(Whole::Bytes(bytes));
        };
        let n = objects.read_at(name, offset, buf)?.min(buf.len());
        if n == 0 {
            return Ok(Whole::Bytes(bytes));
        }
        bytes.extend_from_slice(buf.get(..n).unwrap_or_default());
        if bytes.len() as u64 > limit {
            // Too long: count the rest without keeping it.
            let mut len = bytes.len() as u64;
            loop {
                let n = objects.read_at(name, len, &mut chunk)?.min(READ_CHUNK);
                if n == 0 {
                    return Ok(Whole::TooLong(len));
                }
                len += n as u64;
            }
        }
    }
}

/// A storage error of `op` at `location`.
fn storage<E: lamina_core::io::Error + fmt::Display>(
    op: StoreOp,
    location: String,
    e: &E,
) -> CheckpointError {
    CheckpointError::Storage {
        op,
        location,
        failure: e.failure(),
        source: Box::new(BackendError(e.to_string())),
    }
}

impl<O> CheckpointStore for ObjectsCheckpointStore<O>
where
    O: ObjectStorage + Send,
    O::Error: fmt::Display,
{
    fn put_part(&self, key: &str, bytes: &[u8]) -> Result<PartInfo, CheckpointError> {
        check_key(key)?;
        let op = ObjectOp::Publish {
            name: key,
            data: bytes,
            mode: Publish::Replace,
        };
        run(&mut *lock(&self.parts), op)
            .map_err(|e| storage(StoreOp::PutPart, self.part_location(key), &e))?;
        Ok(part_info(bytes))
    }

    fn put_parts(
        &self,
        keys: &[String],
        encode: &(dyn Fn(usize, &mut Vec<u8>) + Sync),
    ) -> Result<Vec<PartInfo>, CheckpointError> {
        let put = |i: usize| {
            let mut buf = Vec::new();
            encode(i, &mut buf);
            self.put_part(keys.get(i).map_or("", String::as_str), &buf)
        };
        let panicked = || CheckpointError::Storage {
            op: StoreOp::PutPart,
            location: self.part_location(""),
            failure: lamina_core::io::Failure::Other,
            source: Box::new(std::io::Error::other("a part writer panicked")),
        };
        super::in_parallel(keys.len(), self.writers, &put, &panicked)
    }

    fn read_part(&self, key: &str, size: u64, crc: u32) -> Result<Vec<u8>, CheckpointError> {
        check_key(key)?;
        let location = self.part_location(key);
        let read = read_whole(&mut *lock(&self.parts), key, size);
        match read {
            Ok(Whole::Bytes(bytes)) => verify_part(key, &location, size, crc, bytes),
            Ok(Whole::TooLong(actual)) => Err(CheckpointError::PartSize {
                key: key.to_owned(),
                location,
                expected: size,
                actual,
            }),
            Err(e) => Err(storage(StoreOp::ReadPart, location, &e)),
        }
    }

    fn delete_part(&self, key: &str) -> Result<(), CheckpointError> {
        check_key(key)?;
        match run(&mut *lock(&self.parts), ObjectOp::Delete { name: key }) {
            // The contract says a delete of an absent object succeeds; a backend that reports
            // it anyway is taken at its word that the object is gone.
            Err(e) if e.failure() != Failure::NotFound => {
                Err(storage(StoreOp::DeletePart, self.part_location(key), &e))
            }
            _ => Ok(()),
        }
    }

    fn list_parts(&self) -> Result<Vec<String>, CheckpointError> {
        let mut names = Vec::new();
        lock(&self.parts)
            .list("", &mut |name| names.push(name.to_owned()))
            .map_err(|e| storage(StoreOp::ListParts, self.part_location(""), &e))?;
        names.retain(|name| check_key(name).is_ok());
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    fn publish_manifest(&self, id: u64, bytes: &[u8]) -> Result<(), CheckpointError> {
        check_manifest(id, bytes)
            .map_err(|damage| CheckpointError::ManifestInvalid { id, damage })?;
        let name = manifest_file_name(id);
        let op = ObjectOp::Publish {
            name: &name,
            data: bytes,
            mode: Publish::IfAbsent,
        };
        run(&mut *lock(&self.manifests), op).map_err(|e| {
            let location = self.manifest_location(&name);
            if e.failure() == Failure::AlreadyExists {
                CheckpointError::ManifestExists { id, location }
            } else {
                storage(StoreOp::PublishManifest, location, &e)
            }
        })
    }

    fn read_manifest(&self, id: u64) -> Result<Vec<u8>, CheckpointError> {
        let name = manifest_file_name(id);
        let location = self.manifest_location(&name);
        let read = read_whole(&mut *lock(&self.manifests), &name, MAX_MANIFEST_LEN);
        let damage = match read {
            Ok(Whole::Bytes(bytes)) => match check_manifest(id, &bytes) {
                Ok(()) => return Ok(bytes),
                Err(damage) => damage,
            },
            Ok(Whole::TooLong(len)) => ManifestDamage::TooLong { len },
            Err(e) => return Err(storage(StoreOp::ReadManifest, location, &e)),
        };
        Err(CheckpointError::ManifestDamaged {
            id,
            location,
            damage,
        })
    }

    fn list_manifests(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids = Vec::new();
        lock(&self.manifests)
            .list("", &mut |name| ids.extend(parse_manifest_file_name(name)))
            .map_err(|e| storage(StoreOp::ListManifests, self.manifest_location(""), &e))?;
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn delete_manifest(&self, id: u64) -> Result<(), CheckpointError> {
        let name = manifest_file_name(id);
        match run(
            &mut *lock(&self.manifests),
            ObjectOp::Delete { name: &name },
        ) {
            Err(e) if e.failure() != Failure::NotFound => Err(storage(
                StoreOp::DeleteManifest,
                self.manifest_location(&name),
                &e,
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_core::crc::crc32c;
    use lamina_core::io::{Completion, ErrorType};
    use std::collections::{BTreeMap, VecDeque};

    /// Objects in memory that complete one poll late, read one byte per call, and report a
    /// delete of an absent object as `NotFound`: the liberties the contract allows a backend,
    /// and one it does not.
    #[derive(Default)]
    struct Slow {
        objects: BTreeMap<String, Vec<u8>>,
        pending: VecDeque<Completion<Failure>>,
        polls: u32,
    }

    impl ErrorType for Slow {
        type Error = Failure;
    }

    impl ObjectStorage for Slow {
        fn submit(&mut self, token: u64, op: ObjectOp<'_>) -> Result<(), Failure> {
            let result = match op {
                ObjectOp::Publish { name, data, mode } => {
                    if mode == Publish::IfAbsent && self.objects.contains_key(name) {
                        Err(Failure::AlreadyExists)
                    } else {
                        self.objects.insert(name.to_owned(), data.to_vec());
                        Ok(())
                    }
                }
                ObjectOp::Delete { name } => match self.objects.remove(name) {
                    Some(_) => Ok(()),
                    None => Err(Failure::NotFound),
                },
            };
            self.pending.push_back((token, result));
            Ok(())
        }

        fn poll_completion(&mut self) -> Option<Completion<Failure>> {
            self.polls += 1;
            if self.polls % 2 == 1 {
                return None;
            }
            self.pending.pop_front()
        }

        fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, Failure> {
            let bytes = self.objects.get(name).ok_or(Failure::NotFound)?;
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            match (bytes.get(at), buf.first_mut()) {
                (Some(b), Some(slot)) => {
                    *slot = *b;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }

        fn list(&mut self, prefix: &str, each: &mut dyn FnMut(&str)) -> Result<(), Failure> {
            for name in self.objects.keys().filter(|n| n.starts_with(prefix)) {
                each(name);
            }
            Ok(())
        }
    }

    #[test]
    fn a_late_completion_and_short_reads_still_give_whole_verified_objects() {
        let store = ObjectsCheckpointStore::new(Slow::default(), Slow::default());
        let bytes: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let info = store.put_part("p", &bytes).unwrap();
        assert_eq!((info.size, info.crc), (300, crc32c(&bytes)));
        assert_eq!(store.read_part("p", 300, info.crc).unwrap(), bytes);
        match store.read_part("p", 299, info.crc) {
            Err(CheckpointError::PartSize {
                expected: 299,
                actual: 300,
                location,
                ..
            }) => assert_eq!(location, "parts/p"),
            other => panic!("{other:?}"),
        }
        // A delete of an absent object reported as `NotFound` is taken as done.
        store.delete_part("p").unwrap();
        store.delete_part("p").unwrap();
        store.delete_manifest(9).unwrap();
    }

    #[test]
    fn a_completion_left_over_by_another_operation_is_not_taken_for_ours() {
        let mut parts = Slow::default();
        parts.pending.push_back((0, Err(Failure::Io)));
        let store = ObjectsCheckpointStore::new(parts, Slow::default());
        let info = store.put_part("p", b"ok").unwrap();
        assert_eq!(store.read_part("p", 2, info.crc).unwrap(), b"ok");
    }

    #[test]
    fn locations_name_the_root_and_the_object() {
        let store = ObjectsCheckpointStore::new(Slow::default(), Slow::default())
            .with_root("s3://bucket/ckpt");
        match store.read_part("gone", 1, 0) {
            Err(CheckpointError::Storage {
                op: StoreOp::ReadPart,
                failure: Failure::NotFound,
                location,
                ..
            }) => assert_eq!(location, "s3://bucket/ckpt/parts/gone"),
            other => panic!("{other:?}"),
        }
        match store.read_manifest(3) {
            Err(e) => assert!(
                e.to_string()
                    .contains("s3://bucket/ckpt/manifests/00000000000000000003.manifest"),
                "{e}"
            ),
            Ok(_) => panic!("read a missing manifest"),
        }
    }
}
