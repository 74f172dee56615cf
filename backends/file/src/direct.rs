//! Writing a new file's bytes with direct I/O (`O_DIRECT`), past the page cache.
//!
//! Why: a buffered write copies every byte into page-cache pages the kernel allocates, accounts
//! and later writes back; for checkpoint parts, written once and read back only by recovery,
//! that copy was the largest CPU cost of a checkpoint (measured: ~3.5 ms of CPU per 2 MiB part,
//! four times a plain copy, on the 2-core machine), on the same CPUs that encode the parts.
//! A direct write hands the device the caller's memory instead. Its price: the memory, the file
//! offset and the length must be aligned as the file system says (`statx` `STATX_DIOALIGN`,
//! Linux 6.1+), so the bytes go through an aligned buffer of the thread's, the last block is
//! padded with zeros and the file cut back to its length; and a write waits for the device.
//! Bytes that are whole blocks from aligned memory are one write with no copy and no cut (the
//! cut is not free: ext4 reads the last block back to zero its end, behind the writes in
//! flight), which is why a checkpoint part is padded to whole blocks in its format.
//! Where direct I/O is not offered (no `DIOALIGN`, or the write is refused with `EINVAL`), the
//! caller writes through the page cache as before.

use rustix::fs::{OFlags, StatxFlags};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes written per direct write: large enough that the device sees big requests, small
/// enough that the thread's aligned buffer stays modest.
const CHUNK: usize = 1 << 20;
/// The most bytes of one direct write from the caller's memory: a multiple of every alignment
/// trusted, under the 2 GiB past which a write returns short.
const DIRECT_MAX: usize = 1 << 30;
/// The largest alignment trusted (a larger one is treated as "no direct I/O").
const MAX_ALIGN: u32 = 1 << 16;

/// The alignments direct I/O needs on a file, both powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Alignment {
    /// Of the memory written from.
    mem: usize,
    /// Of the file offset and the length of each write.
    offset: usize,
}

/// The alignments direct I/O needs on `file`, or `None` when its file system does not offer
/// direct I/O (or does not say).
pub(crate) fn alignment(file: &File) -> Option<Alignment> {
    let stat = rustix::fs::statx(
        file,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        StatxFlags::DIOALIGN,
    )
    .ok()?;
    if stat.stx_mask & StatxFlags::DIOALIGN.bits() == 0 {
        return None;
    }
    let ok = |a: u32| a.is_power_of_two() && a <= MAX_ALIGN;
    if !ok(stat.stx_dio_mem_align) || !ok(stat.stx_dio_offset_align) {
        return None;
    }
    Some(Alignment {
        mem: stat.stx_dio_mem_align as usize,
        offset: stat.stx_dio_offset_align as usize,
    })
}

thread_local! {
    /// The thread's buffer for aligned copies: up to `CHUNK` plus room to align its start.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes `data` at offset 0 of `file`, which is new and empty, with direct I/O, and sets the
/// file's length to `data.len()`. Returns `Ok(false)`, with the file's flags as they were and
/// nothing written, when the file system refused direct I/O: the caller then writes `data`
/// through the page cache.
///
/// # Errors
/// A write, flag or truncate error; the file's contents are then unspecified.
pub(crate) fn write_new(file: &File, data: &[u8], align: Alignment) -> io::Result<bool> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags | OFlags::DIRECT)?;
    let written = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => write_chunks(file, data, align, &mut scratch),
        Err(e) => Err(io::Error::other(e)),
    });
    // Later operations (the sync, a rewrite through the page cache) see the file as opened.
    rustix::fs::fcntl_setfl(file, flags)?;
    match written {
        Ok(true) => {
            // Only a last block padded here has zeros to cut off.
            if !data.len().is_multiple_of(align.offset) {
                file.set_len(data.len() as u64)?;
            }
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `data` with direct I/O: straight from `data` when its memory is aligned (all but its
/// last partial block, in one write, so the device gets the whole at once), else in chunks
/// copied through `scratch`; the last block padded with zeros. `Ok(false)` if the first write
/// was refused with `EINVAL` (direct I/O not allowed here).
fn write_chunks(
    file: &File,
    data: &[u8],
    align: Alignment,
    scratch: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut offset = 0usize;
    if (data.as_ptr() as usize).is_multiple_of(align.mem) {
        let whole = data.len() - data.len() % align.offset;
        // In writes of at most `DIRECT_MAX` (a write returns short past 2 GiB).
        for head in data.get(..whole).unwrap_or_default().chunks(DIRECT_MAX) {
            if !write_at(file, head, offset)? {
                return Ok(false);
            }
            offset += head.len();
        }
    }
    // Only as large as what is left needs (the last block alone, from aligned memory). A chunk
    // is a multiple of both alignments (powers of two, at most `MAX_ALIGN` <= `CHUNK`).
    let left = data.len().saturating_sub(offset);
    if left == 0 {
        return Ok(true);
    }
    let chunk = left.next_multiple_of(align.offset).min(CHUNK);
    if scratch.len() < chunk + align.mem {
        scratch.resize(chunk + align.mem, 0);
    }
    let start = scratch.as_ptr().align_offset(align.mem);
    let Some(buf) = scratch.get_mut(start..start + chunk) else {
        return Err(io::Error::other("direct I/O buffer cannot be aligned"));
    };
    for piece in data.get(offset..).unwrap_or_default().chunks(chunk) {
        let padded = piece.len().next_multiple_of(align.offset);
        let (bytes, pad) = buf.split_at_mut(piece.len());
        bytes.copy_from_slice(piece);
        if let Some(pad) = pad.get_mut(..padded - piece.len()) {
            pad.fill(0);
        }
        let Some(out) = buf.get(..padded) else {
            return Err(io::Error::other("direct I/O chunk larger than its buffer"));
        };
        if !write_at(file, out, offset)? {
            return Ok(false);
        }
        offset += piece.len();
    }
    Ok(true)
}

/// Writes all of `bytes` (aligned) at `offset` with one direct write; `Ok(false)` if refused
/// with `EINVAL` at offset 0, where nothing has been written yet.
fn write_at(file: &File, bytes: &[u8], offset: usize) -> io::Result<bool> {
    match file.write_at(bytes, offset as u64) {
        Ok(n) if n == bytes.len() => Ok(true),
        // A short direct write leaves an offset that may not be aligned: give up on it.
        Ok(n) => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("direct write of {} bytes wrote {n}", bytes.len()),
        )),
        Err(e)
            if offset == 0 && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_write_reads_back_as_written_at_every_length_around_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        // Where no alignment is offered, a refusal (nothing written) is the right answer too.
        let align = alignment(&probe).unwrap_or(Alignment {
            mem: 4096,
            offset: 4096,
        });
        let data: Vec<u8> = (0..3 * CHUNK as u32 + 7)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for len in [
            0,
            1,
            align.offset - 1,
            align.offset,
            align.offset + 1,
            CHUNK,
            CHUNK + 3,
            data.len(),
        ] {
            let path = dir.path().join(format!("f{len}"));
            let file = File::create_new(&path).unwrap();
            let direct = write_new(&file, &data[..len], align).unwrap();
            drop(file);
            let back = std::fs::read(&path).unwrap();
            if !direct {
                assert!(
                    back.is_empty(),
                    "a refused direct write wrote {} bytes",
                    back.len()
                );
                continue;
            }
            assert_eq!(back.len(), len, "length {len}");
            assert!(back == data[..len], "bytes of length {len}");
        }
    }

    #[test]
    fn a_direct_write_from_aligned_memory_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        let align = alignment(&probe).unwrap_or(Alignment {
            mem: 4096,
            offset: 4096,
        });
        let mut memory = vec![0u8; 3 * CHUNK + 2 * MAX_ALIGN as usize];
        let at = memory.as_ptr().align_offset(MAX_ALIGN as usize);
        for (i, b) in memory.iter_mut().enumerate() {
            *b = (i * 7 % 253) as u8;
        }
        for len in [1, align.offset, align.offset + 1, 3 * CHUNK + 5] {
            let data = &memory[at..at + len];
            let path = dir.path().join(format!("f{len}"));
            let file = File::create_new(&path).unwrap();
            let direct = write_new(&file, data, align).unwrap();
            drop(file);
            let back = std::fs::read(&path).unwrap();
            if !direct {
                assert!(back.is_empty());
                continue;
            }
            assert!(back == data, "bytes of length {len}");
        }
    }

    #[test]
    fn flags_are_restored_after_a_direct_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create_new(dir.path().join("f")).unwrap();
        let align = alignment(&file).unwrap_or(Alignment {
            mem: 4096,
            offset: 4096,
        });
        let before = rustix::fs::fcntl_getfl(&file).unwrap();
        write_new(&file, b"abc", align).unwrap();
        assert_eq!(rustix::fs::fcntl_getfl(&file).unwrap(), before);
    }
}
