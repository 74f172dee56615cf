//! A whole log directory read as recovery reads it (`lamina_core::recover`): every segment,
//! every checksum, the chain between segments and the classification of its end, through a
//! read-only view ([`FileReader`]) that takes no lock and writes nothing. What recovery *would*
//! do; `verify` and `repair` build on it.

use crate::errors::{CliError, io_text};
use crate::output::segment_path;
use indicatif::ProgressBar;
use lamina::file_backend::{FileError, FileReader, Op};
use lamina::{Mode, SegmentId};
use lamina_core::decode::Skipped;
use lamina_core::io::{Completion, ErrorType, SegmentOp, SegmentStorage};
use lamina_core::recover::{self, RecoverError, Recovered, Replay};
use lamina_core::segment::{MAGIC, SegmentHeader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What reading a log directory found.
#[derive(Debug)]
pub(crate) struct LogCheck {
    /// The log directory.
    pub(crate) dir: PathBuf,
    /// The segments listed.
    pub(crate) ids: Vec<SegmentId>,
    /// The header of every segment recovery read, in order.
    pub(crate) headers: Vec<SegmentHeader>,
    /// Damaged regions stepped over (`SkipCorrupt`).
    pub(crate) skipped: Vec<(SegmentId, Skipped)>,
    /// The largest payload read.
    pub(crate) max_payload: usize,
    /// Recovery's outcome.
    pub(crate) outcome: Result<Recovered, RecoverError<FileError>>,
    /// How long the read took.
    pub(crate) elapsed: Duration,
}

impl LogCheck {
    /// The file of segment `id`.
    pub(crate) fn file(&self, id: SegmentId) -> PathBuf {
        segment_path(&self.dir, id)
    }

    /// A recovery error in one line, naming the file (the core's `Display` shows the backend's
    /// error with `Debug`).
    pub(crate) fn error_text(&self, e: &RecoverError<FileError>) -> String {
        match e {
            RecoverError::Io {
                segment,
                offset,
                error,
            } => {
                let path = segment.map_or_else(|| self.dir.clone(), |s| self.file(s));
                let what = match error {
                    FileError::Io { op, source, .. } => {
                        let at = match op {
                            Op::Read => format!(" at offset {offset}"),
                            _ => String::new(),
                        };
                        format!("{op} failed{at}: {}", io_text(source))
                    }
                    other => other.to_string(),
                };
                format!("{}: {what}", path.display())
            }
            other => match other.segment() {
                Some(s) => format!("{}: {other}", self.file(s).display()),
                None => format!("{}: {other}", self.dir.display()),
            },
        }
    }

    /// Whether no segment file here starts with the segment magic: the directory holds files
    /// named like segments, but none is one (a foreign or garbage directory, not a damaged log).
    pub(crate) fn foreign(&self) -> bool {
        self.headers.is_empty()
            && !self.ids.iter().any(|id| {
                let mut magic = [0u8; 8];
                crate::segfile::open(&self.file(*id))
                    .is_ok_and(|f| f.read_exact_at(&mut magic, 0).is_ok() && magic == MAGIC)
            })
    }
}

/// Reads the log in `dir` through `reader` as recovery in `mode` would, advancing `bar` by the
/// bytes read.
///
/// # Errors
/// When the segments cannot be listed: a one-line error naming the directory.
pub(crate) fn check(
    dir: &Path,
    reader: FileReader,
    mode: Mode,
    bar: &ProgressBar,
) -> Result<LogCheck, CliError> {
    let mut storage = Counting { inner: reader, bar };
    let mut window = crate::segfile::window();
    // Room for segments made while it reads; a listing that outgrows it is taken again.
    let mut room = 64;
    for _ in 0..3 {
        let count = list(&mut storage.inner, dir)?.len();
        let mut ids = vec![SegmentId(0); count + room];
        let mut headers = Vec::new();
        let mut skipped = Vec::new();
        let mut max_payload = 0;
        let started = Instant::now();
        let outcome = recover::recover(
            &mut storage,
            &mut ids,
            &mut window,
            mode,
            &mut |r| match r {
                Replay::Segment(h) => headers.push(*h),
                Replay::Record(r) => max_payload = max_payload.max(r.payload.len()),
                Replay::Skipped {
                    segment,
                    skipped: s,
                } => skipped.push((segment, s)),
            },
        );
        if let Err(RecoverError::TooManySegments { count }) = outcome {
            room = count;
            continue;
        }
        let elapsed = started.elapsed();
        return Ok(LogCheck {
            dir: dir.to_path_buf(),
            ids: list(&mut storage.inner, dir)?,
            headers,
            skipped,
            max_payload,
            outcome,
            elapsed,
        });
    }
    Err(CliError::unreadable(
        dir,
        "segments keep appearing faster than they can be listed",
    ))
}

/// The segments `reader` lists, ascending.
fn list(reader: &mut FileReader, dir: &Path) -> Result<Vec<SegmentId>, CliError> {
    let mut ids = Vec::new();
    loop {
        let count = reader
            .list(&mut ids)
            .map_err(|e| CliError::unreadable(dir, e))?;
        if count <= ids.len() {
            ids.truncate(count);
            return Ok(ids);
        }
        ids.resize(count, SegmentId(0));
    }
}

/// The total size of the segment files in `dir` (for the progress bar; a file that cannot be
/// looked at counts 0).
pub(crate) fn total_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            lamina::file_backend::names::parse_segment_file_name(&e.file_name().to_string_lossy())
                .is_some()
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A storage that reads through another and counts the bytes on a progress bar.
struct Counting<'a> {
    inner: FileReader,
    bar: &'a ProgressBar,
}

impl ErrorType for Counting<'_> {
    type Error = FileError;
}

impl SegmentStorage for Counting<'_> {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), FileError> {
        // The reader refuses every change.
        self.inner.submit(token, op)
    }

    fn poll_completion(&mut self) -> Option<Completion<FileError>> {
        self.inner.poll_completion()
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, FileError> {
        let n = self.inner.read_at(segment, offset, buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, FileError> {
        self.inner.list(out)
    }
}
