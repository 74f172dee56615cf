//! One segment file read on its own, as it is: its header, its records and how it ends, without
//! the chain between segments (that is `verify`'s). Read-only: files are opened for reading
//! only and without blocking, and nothing is locked.

use crate::errors::{CliError, io_text};
use lamina::Lsn;
use lamina_core::decode::{self, DecodeError, Decoded, End, Mode, Record, SegmentDecoder};
use lamina_core::record::MAX_PAYLOAD;
use lamina_core::segment::{HeaderError, SegmentHeader};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A decode window that holds the largest frame the format allows, so that no valid record is
/// ever too large to check (16 MiB and a bit; zero pages cost nothing until touched).
pub(crate) fn window() -> Vec<u8> {
    vec![0u8; decode::min_window(MAX_PAYLOAD as usize)]
}

/// What kind of file system object `meta` is, in words, for one that is not a regular file or a
/// directory.
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without blocking (a FIFO under a segment's name would otherwise
/// wait for a writer forever) and checks it is a regular file.
pub(crate) fn open(path: &Path) -> Result<File, CliError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| CliError::io(path, &e))?;
    let meta = file.metadata().map_err(|e| CliError::io(path, &e))?;
    if !meta.is_file() {
        return Err(CliError::unreadable(
            path,
            format!("{}, not a segment file", kind_of(&meta)),
        ));
    }
    Ok(file)
}

/// One segment file, read through.
#[derive(Clone, Debug)]
pub(crate) struct SegmentScan {
    /// Its file.
    pub(crate) path: PathBuf,
    /// The file's size in bytes.
    pub(crate) size: u64,
    /// Its header, when it has one that validates.
    pub(crate) header: Option<SegmentHeader>,
    /// Records read (every kind, the seal included).
    pub(crate) records: u64,
    /// The first record's LSN.
    pub(crate) first_lsn: Option<Lsn>,
    /// The last record's LSN.
    pub(crate) last_lsn: Option<Lsn>,
    /// The largest payload read.
    pub(crate) max_payload: usize,
    /// How it ends; `Err` when a frame could not be checked.
    pub(crate) end: Result<End, DecodeError>,
    /// The scan stopped early because the caller asked it to.
    pub(crate) stopped: bool,
}

/// Reads the segment file at `path` through `window` in `mode` (`Strict` stops at the first
/// damage; `SkipCorrupt` steps over it to find how far the segment goes), handing each record to
/// `each` (which returns `false` to stop reading).
///
/// # Errors
/// When the file cannot be opened or read: a one-line error naming it.
pub(crate) fn scan(
    path: &Path,
    window: &mut [u8],
    mode: Mode,
    each: &mut dyn FnMut(&Record<'_>) -> bool,
) -> Result<SegmentScan, CliError> {
    let file = open(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut scan = SegmentScan {
        path: path.to_path_buf(),
        size,
        header: None,
        records: 0,
        first_lsn: None,
        last_lsn: None,
        max_payload: 0,
        end: Ok(End::Clean {
            offset: 0,
            next_lsn: Lsn::ZERO,
        }),
        stopped: false,
    };
    let mut decoder = SegmentDecoder::new(window, mode);
    loop {
        match decoder.poll() {
            Decoded::NeedMore => {
                let offset = decoder.offset_wanted();
                let n = file.read_at(decoder.space(), offset).map_err(|e| {
                    CliError::unreadable(path, format!("read at offset {offset}: {}", io_text(&e)))
                })?;
                if n == 0 {
                    decoder.finish();
                } else {
                    decoder.fill(n);
                }
            }
            Decoded::Header(h) => scan.header = Some(h),
            Decoded::Record(r) => {
                scan.records += 1;
                scan.first_lsn.get_or_insert(r.header.lsn);
                scan.last_lsn = Some(r.header.lsn);
                scan.max_payload = scan.max_payload.max(r.payload.len());
                if !each(&r) {
                    scan.stopped = true;
                    return Ok(scan);
                }
            }
            // Only `SkipCorrupt` steps over damage; the records after it are read on.
            Decoded::Skipped(_) => {}
            Decoded::End(end) => {
                scan.end = Ok(end);
                return Ok(scan);
            }
            Decoded::Error(e) => {
                scan.end = Err(e);
                return Ok(scan);
            }
        }
    }
}

/// How a segment ends, in a word (for tables and JSON) and in a sentence.
pub(crate) fn describe_end(end: &Result<End, DecodeError>) -> (&'static str, String) {
    match end {
        Ok(End::Sealed { last_lsn, offset }) => (
            "sealed",
            format!("sealed by LSN {last_lsn}, ending at offset {offset}"),
        ),
        Ok(End::Clean { offset, next_lsn }) => (
            "open",
            format!("not sealed: records end at offset {offset}, the next LSN is {next_lsn}"),
        ),
        Ok(End::Torn {
            offset,
            next_lsn,
            beyond,
            extent,
        }) => (
            "torn",
            format!(
                "torn tail at offset {offset}: LSN {next_lsn} on, {} bytes to offset {extent}{}",
                extent.saturating_sub(*offset),
                match beyond.frames {
                    0 => String::new(),
                    n => format!(", {n} valid frames beyond"),
                }
            ),
        ),
        Ok(End::Corrupt(c)) => (
            "corrupt",
            format!(
                "damaged records at offset {} (LSN {} expected): record {} at offset {} was \
                 written after LSN {} was durable",
                c.offset, c.expected_lsn, c.witness_lsn, c.witness_offset, c.witness_watermark
            ),
        ),
        Ok(End::BadHeader {
            error: HeaderError::Blank,
            ..
        }) => ("blank", "blank: prepared, never started".into()),
        Ok(End::BadHeader {
            error,
            rest_is_zero,
        }) => (
            "bad-header",
            if *rest_is_zero {
                format!("{error}, and nothing after it (a creation that never completed)")
            } else {
                error.to_string()
            },
        ),
        Err(e) => ("unreadable", e.to_string()),
    }
}

/// Where a segment's records end (the offset the next one would go at, or the damage).
pub(crate) fn used(end: &Result<End, DecodeError>) -> Option<u64> {
    match end {
        Ok(End::Sealed { offset, .. } | End::Clean { offset, .. } | End::Torn { offset, .. }) => {
            Some(*offset)
        }
        Ok(End::Corrupt(c)) => Some(c.offset),
        _ => None,
    }
}
