//! The description of a per-core set on the file backend: a small object `PERCORE` in the set's
//! directory, published atomically (temp file, fsync, rename, directory fsync), that says how
//! many cores the set has and which set it is. Core `i`'s log takes the log id
//! [`core_log_id`]`(set id, i)`, so a core directory of another set is told apart by its segment
//! headers.
//!
//! Its 28 bytes, integers little-endian:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `89 4C 50 43 0D 0A 1A 0A` (`\x89LPC\r\n\x1a\n`, built like the segment magic) |
//! | 8 | 2 | version: 1 |
//! | 10 | 2 | reserved: 0 |
//! | 12 | 4 | core count (u32, at least 1) |
//! | 16 | 8 | set id (u64, random at creation) |
//! | 24 | 4 | CRC32C of bytes `0..24` |

use crate::Error;
use lamina_core::crc::crc32c;
use lamina_core::io::{ObjectOp, ObjectStorage, Publish};
use lamina_file::FileObjects;
use std::io::{ErrorKind, Read};
use std::path::Path;

/// The description's file name in a set's directory.
pub const NAME: &str = "PERCORE";

const MAGIC: [u8; 8] = *b"\x89LPC\r\n\x1a\n";
const VERSION: u16 = 1;
const LEN: usize = 28;
/// Bytes the checksum covers.
const BODY: usize = 24;

/// What a per-core set's description (`dir/PERCORE`) says: how many cores the set has and which
/// set it is. [`Description::read`] reads it without opening the set (no lock is taken), for
/// tools that look at a set from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Description {
    /// How many cores the set has.
    pub cores: u32,
    /// Which set it is.
    pub set_id: u64,
}

impl Description {
    /// The description of the set in `dir`, read-only; `None` when `dir` has none.
    ///
    /// # Errors
    /// [`Error::CoreSet`] when the description is not a regular file, cannot be read, or is
    /// damaged, too short or too long, or of another version.
    pub fn read(dir: &Path) -> Result<Option<Description>, Error> {
        read(dir)
    }

    /// The log id core `core`'s log has in this set: a core directory whose segments carry
    /// another belongs to another set.
    #[must_use]
    pub fn core_log_id(&self, core: usize) -> u64 {
        core_log_id(self.set_id, core)
    }

    /// The directory of core `core`'s log in the set in `dir`.
    #[must_use]
    pub fn core_dir(dir: &Path, core: usize) -> std::path::PathBuf {
        super::file::core_dir(dir, core)
    }
}

pub(crate) use super::core_log_id;

/// The bytes of `description`.
fn encode(description: Description) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let fields: [&[u8]; 5] = [
        &MAGIC,
        &VERSION.to_le_bytes(),
        &0u16.to_le_bytes(),
        &description.cores.to_le_bytes(),
        &description.set_id.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        if let Some(dst) = out.get_mut(at..at + field.len()) {
            dst.copy_from_slice(field);
        }
        at += field.len();
    }
    let crc = crc32c(out.get(..BODY).unwrap_or_default());
    if let Some(dst) = out.get_mut(BODY..) {
        dst.copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// What a description holds, or what is wrong with it.
fn decode(bytes: &[u8]) -> Result<Description, String> {
    let Ok(bytes) = <&[u8; LEN]>::try_from(bytes) else {
        return Err(format!(
            "it is {} bytes long, a description is {LEN}",
            bytes.len()
        ));
    };
    let [
        m0,
        m1,
        m2,
        m3,
        m4,
        m5,
        m6,
        m7,
        v0,
        v1,
        r0,
        r1,
        c0,
        c1,
        c2,
        c3,
        s0,
        s1,
        s2,
        s3,
        s4,
        s5,
        s6,
        s7,
        k0,
        k1,
        k2,
        k3,
    ] = *bytes;
    if [m0, m1, m2, m3, m4, m5, m6, m7] != MAGIC {
        return Err("it is not a per-core set description (wrong magic)".into());
    }
    let version = u16::from_le_bytes([v0, v1]);
    if version != VERSION {
        return Err(format!(
            "description version {version} is not supported, this build reads {VERSION}"
        ));
    }
    let crc = u32::from_le_bytes([k0, k1, k2, k3]);
    if crc32c(bytes.get(..BODY).unwrap_or_default()) != crc || [r0, r1] != [0, 0] {
        return Err("it is damaged (checksum or reserved bytes)".into());
    }
    let set_id = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
    match u32::from_le_bytes([c0, c1, c2, c3]) {
        0 => Err("it says the set has no cores".into()),
        cores => Ok(Description { cores, set_id }),
    }
}

/// The description of the set in `dir`, or `None` when it has none.
pub(crate) fn read(dir: &Path) -> Result<Option<Description>, Error> {
    let path = dir.join(NAME);
    let bad = |detail: String| Error::CoreSet {
        dir: dir.display().to_string(),
        detail: format!("the description {}: {detail}", path.display()),
    };
    // Looked at before it is opened: opening a FIFO under the name would wait for a writer.
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => return Err(bad("it is not a regular file".into())),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot be looked at: {e}"))),
    }
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot be opened: {e}"))),
    };
    // One byte more than a description, so a longer file is told apart without reading it all.
    let mut bytes = Vec::with_capacity(LEN + 1);
    file.take(LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    decode(&bytes).map(Some).map_err(bad)
}

/// Publishes `description` in `dir`, atomically and durably.
pub(crate) fn write(dir: &Path, description: Description) -> Result<(), Error> {
    let storage_error = |detail: String| Error::Storage {
        op: format!(
            "publishing the per-core set description in {}",
            dir.display()
        ),
        detail,
    };
    let mut objects = FileObjects::open(dir).map_err(|e| storage_error(e.to_string()))?;
    let data = encode(description);
    objects
        .submit(
            0,
            ObjectOp::Publish {
                name: NAME,
                data: &data,
                mode: Publish::Replace,
            },
        )
        .map_err(|e| storage_error(e.to_string()))?;
    // FileObjects completes inside `submit`.
    match objects.poll_completion() {
        Some((_, result)) => result.map_err(|e| storage_error(e.to_string())),
        None => Err(storage_error("the publish never completed".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::{Description, LEN, core_log_id, decode, encode};

    const FOUR: Description = Description {
        cores: 4,
        set_id: 0x1234_5678_9abc_def0,
    };

    #[test]
    fn round_trip_keeps_the_core_count_and_the_set() {
        assert_eq!(decode(&encode(FOUR)), Ok(FOUR));
    }

    #[test]
    fn core_log_ids_differ_between_cores_and_sets() {
        let ids: std::collections::HashSet<u64> = (0..64)
            .flat_map(|core| [core_log_id(1, core), core_log_id(2, core)])
            .collect();
        assert_eq!(ids.len(), 128);
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let good = encode(FOUR);
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip of byte {byte} bit {bit} accepted"
                );
            }
        }
    }

    #[test]
    fn wrong_lengths_and_zero_cores_are_refused() {
        let good = encode(FOUR);
        assert!(decode(&good[..LEN - 1]).is_err());
        assert!(decode(&[good.as_slice(), &[0]].concat()).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&encode(Description { cores: 0, ..FOUR })).is_err());
    }
}
