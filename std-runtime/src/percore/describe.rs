//! The description of a per-core set on the file backend: a small object `PERCORE` in the set's
//! directory, published atomically (temp file, fsync, rename, directory fsync), that says how
//! many cores the set has.
//!
//! Its 20 bytes, integers little-endian:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `89 4C 50 43 0D 0A 1A 0A` (`\x89LPC\r\n\x1a\n`, built like the segment magic) |
//! | 8 | 2 | version: 1 |
//! | 10 | 2 | reserved: 0 |
//! | 12 | 4 | core count (u32, at least 1) |
//! | 16 | 4 | CRC32C of bytes `0..16` |

use crate::Error;
use lamina_core::crc::crc32c;
use lamina_core::io::{ObjectOp, ObjectStorage, Publish};
use lamina_file::FileObjects;
use std::io::{ErrorKind, Read};
use std::path::Path;

/// The description's object name.
pub(crate) const NAME: &str = "PERCORE";

const MAGIC: [u8; 8] = *b"\x89LPC\r\n\x1a\n";
const VERSION: u16 = 1;
const LEN: usize = 20;
/// Bytes the checksum covers.
const BODY: usize = 16;

/// The bytes that describe a set of `cores` cores.
fn encode(cores: u32) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let fields: [&[u8]; 4] = [
        &MAGIC,
        &VERSION.to_le_bytes(),
        &0u16.to_le_bytes(),
        &cores.to_le_bytes(),
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

/// The core count a description holds, or what is wrong with it.
fn decode(bytes: &[u8]) -> Result<u32, String> {
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
    match u32::from_le_bytes([c0, c1, c2, c3]) {
        0 => Err("it says the set has no cores".into()),
        cores => Ok(cores),
    }
}

/// The core count of the set in `dir`, or `None` when it has no description.
pub(crate) fn read(dir: &Path) -> Result<Option<u32>, Error> {
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

/// Publishes the description of a set of `cores` cores in `dir`, atomically and durably.
pub(crate) fn write(dir: &Path, cores: u32) -> Result<(), Error> {
    let storage_error = |detail: String| Error::Storage {
        op: format!(
            "publishing the per-core set description in {}",
            dir.display()
        ),
        detail,
    };
    let mut objects = FileObjects::open(dir).map_err(|e| storage_error(e.to_string()))?;
    let data = encode(cores);
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
    use super::{LEN, decode, encode};

    #[test]
    fn round_trip_keeps_the_core_count() {
        assert_eq!(decode(&encode(4)), Ok(4));
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let good = encode(4);
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
        let good = encode(4);
        assert!(decode(&good[..LEN - 1]).is_err());
        assert!(decode(&[good.as_slice(), &[0]].concat()).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&encode(0)).is_err());
    }
}
