//! Recovery of a whole log: every segment decoded in order, the chain between them checked, the
//! end classified, and the position to resume from.
//!
//! [`recover`] reads through the backend's plain reads ([`SegmentStorage::read_at`]) with a
//! caller window, hands every record to the caller as it goes (replay), and returns a
//! [`Recovered`]: a [`RecoveryReport`] and a [`Resume`] for the commit pipeline. It changes
//! nothing; the cut of a torn tail is made durable by the pipeline it resumes (a seal at the
//! cut), and segments to discard are named in the report ([`discard`] deletes them): every
//! segment stored after the last one that holds the log (blank, damaged, skipped or cut off),
//! since the log's next segment would collide with it.
//!
//! What each mode does at each kind of damage is in `core/FORMAT.md` ("Recovery modes"). In
//! short: a torn tail is cut in every mode; damage that a watermark proves, a segment that is not
//! last but not sealed, a broken chain and a damaged header are errors in `Strict`, a cut (and
//! the segments after it discarded) in `PointInTime`, and skipped in `SkipCorrupt`. A read error
//! aborts recovery in every mode: it never becomes a cut. A segment of an unknown version is an
//! error in every mode.

use crate::commit::{Resume, ResumeTail};
use crate::decode::{Beyond, Corruption, Decoded, End, Mode, Record, SegmentDecoder, Skipped};
use crate::io::{ErrorType, SegmentOp, SegmentStorage};
use crate::lsn::{Lsn, SegmentId};
use crate::record::Kind;
use crate::segment::{HeaderError, SegmentHeader};
use core::fmt;

/// What recovery hands to the caller as it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay<'a> {
    /// A segment starts.
    Segment(&'a SegmentHeader),
    /// A record, in LSN order.
    Record(&'a Record<'a>),
    /// Damage skipped in [`Mode::SkipCorrupt`].
    Skipped {
        /// The segment.
        segment: SegmentId,
        /// What was skipped.
        skipped: Skipped,
    },
}

/// Why the chain of segments is broken or a segment is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// Damage inside a segment that a later frame's watermark proves was acknowledged.
    Records(Corruption),
    /// A segment that is followed by another does not end with a seal.
    Unsealed {
        /// Where its records end.
        offset: u64,
    },
    /// The segment's header does not validate.
    Header(HeaderError),
    /// The segment's header names another log or core.
    Foreign {
        /// The log id found.
        log_id: u64,
        /// The core found.
        core: u32,
    },
    /// The segment's sequence is not its predecessor's + 1, or not the id it is stored under.
    Sequence {
        /// The sequence expected.
        expected: SegmentId,
        /// The sequence found.
        found: SegmentId,
    },
    /// A damaged region that [`Mode::SkipCorrupt`] stepped over.
    Skipped(Skipped),
    /// The header does not link to its predecessor (nonce or first LSN).
    Link {
        /// The first LSN expected.
        expected_lsn: Lsn,
        /// The first LSN found.
        found_lsn: Lsn,
    },
}

/// Damage found, where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DamageReport {
    /// The segment.
    pub segment: SegmentId,
    /// The byte offset in it (0 for header and chain damage).
    pub offset: u64,
    /// The LSN expected there.
    pub expected_lsn: Lsn,
    /// What is wrong.
    pub damage: Damage,
}

impl fmt::Display for DamageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {} offset {} (expected LSN {}): ",
            self.segment, self.offset, self.expected_lsn
        )?;
        match self.damage {
            Damage::Records(c) => write!(
                f,
                "damaged records; record {} at offset {} was written after LSN {} was acknowledged",
                c.witness_lsn, c.witness_offset, c.witness_watermark
            ),
            Damage::Unsealed { offset } => {
                write!(
                    f,
                    "segment is followed by another but ends unsealed at offset {offset}"
                )
            }
            Damage::Header(e) => write!(f, "{e}"),
            Damage::Skipped(s) => write!(
                f,
                "skipped {} damaged bytes, LSNs {} to {} lost",
                s.len,
                s.first_lost,
                s.resumed.prev()
            ),
            Damage::Foreign { log_id, core } => {
                write!(f, "segment belongs to log {log_id:016x} core {core}")
            }
            Damage::Sequence { expected, found } => {
                write!(f, "segment sequence {found} where {expected} was expected")
            }
            Damage::Link {
                expected_lsn,
                found_lsn,
            } => write!(
                f,
                "segment does not link to its predecessor (first LSN {found_lsn}, expected {expected_lsn})"
            ),
        }
    }
}

/// A torn tail that recovery cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The segment.
    pub segment: SegmentId,
    /// Where the cut is.
    pub offset: u64,
    /// The first LSN cut: the next record takes it.
    pub next_lsn: Lsn,
    /// Valid frames beyond the cut (discarded).
    pub beyond: Beyond,
    /// Where the cut bytes end.
    pub extent: u64,
}

/// What recovery found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: u64,
    /// Records handed to the caller.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The first LSN recovered (`Lsn::ZERO` for an empty log).
    pub first_lsn: Lsn,
    /// The last LSN recovered (`Lsn::ZERO` for an empty log).
    pub last_lsn: Lsn,
    /// The torn tail cut, if there was one.
    pub cut: Option<Cut>,
    /// The first damage found that `PointInTime` cut at or `SkipCorrupt` stepped over.
    pub damage: Option<DamageReport>,
    /// Damaged regions and segments skipped (`SkipCorrupt`).
    pub skipped: u64,
    /// Segments from this one on are to be deleted before the log is resumed: a `PointInTime`
    /// cut before them, or blank segments prepared but never started.
    pub discard_from: Option<SegmentId>,
    /// Blank segments at the end (prepared, never started).
    pub blank_segments: u64,
    /// How long recovery took. The core has no clock and leaves it zero; a runtime that times
    /// the scan fills it in.
    pub elapsed: core::time::Duration,
}

/// The outcome of [`recover`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Where to resume appending; `None` for a log with no segment started yet.
    pub resume: Option<Resume>,
    /// What was found.
    pub report: RecoveryReport,
}

/// Why recovery stopped.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoverError<E> {
    /// A read or listing failed. Nothing was cut.
    Io {
        /// The segment being read (`None` for the listing).
        segment: Option<SegmentId>,
        /// The offset being read.
        offset: u64,
        /// The backend's error.
        error: E,
    },
    /// Damage that the mode does not allow to cut (`Strict`).
    Corrupt(DamageReport),
    /// A segment of a format version this code does not read.
    UnsupportedVersion {
        /// The segment.
        segment: SegmentId,
        /// Its version.
        version: u16,
    },
    /// A record larger than the decode window.
    WindowTooSmall {
        /// The segment.
        segment: SegmentId,
        /// Where the record is.
        offset: u64,
        /// Its LSN (`Lsn::ZERO` when the window cannot even hold a segment header).
        lsn: Lsn,
        /// Bytes the window needs.
        needed: usize,
    },
    /// More segments than the caller's id buffer holds.
    TooManySegments {
        /// How many exist.
        count: usize,
    },
}

impl<E> RecoverError<E> {
    /// The segment the error is about, when it is about one.
    #[must_use]
    pub fn segment(&self) -> Option<SegmentId> {
        match self {
            RecoverError::Io { segment, .. } => *segment,
            RecoverError::Corrupt(d) => Some(d.segment),
            RecoverError::UnsupportedVersion { segment, .. }
            | RecoverError::WindowTooSmall { segment, .. } => Some(*segment),
            RecoverError::TooManySegments { .. } => None,
        }
    }

    /// The error for a decoder failure in `segment`.
    pub(crate) fn decode(segment: SegmentId, e: crate::decode::DecodeError) -> Self {
        match e {
            crate::decode::DecodeError::WindowTooSmall {
                offset,
                lsn,
                needed,
            } => RecoverError::WindowTooSmall {
                segment,
                offset,
                lsn,
                needed,
            },
        }
    }
}

impl<E: fmt::Debug> fmt::Display for RecoverError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoverError::Io {
                segment: Some(s),
                offset,
                error,
            } => {
                write!(f, "read error in segment {s} at offset {offset}: {error:?}")
            }
            RecoverError::Io {
                segment: None,
                error,
                ..
            } => {
                write!(f, "cannot list segments: {error:?}")
            }
            RecoverError::Corrupt(d) => write!(f, "corruption: {d}"),
            RecoverError::UnsupportedVersion { segment, version } => {
                write!(
                    f,
                    "segment {segment} has unsupported format version {version}"
                )
            }
            RecoverError::WindowTooSmall {
                segment,
                offset,
                lsn,
                needed,
            } => write!(
                f,
                "segment {segment} offset {offset}: record {lsn} needs a {needed}-byte decode window"
            ),
            RecoverError::TooManySegments { count } => {
                write!(f, "{count} segments exceed the recovery id buffer")
            }
        }
    }
}

impl<E: fmt::Debug> core::error::Error for RecoverError<E> {}

/// How one segment ended, as far as the chain needs to know.
#[derive(Clone, Copy, Debug)]
struct Tail {
    header: SegmentHeader,
    end: End,
    epoch: u64,
}

/// Recovers the log in `storage`: see the module documentation. `ids` holds the segment listing
/// (its length bounds how many segments a log may have), `window` the decoder's window
/// ([`crate::decode::min_window`] of the largest payload).
///
/// # Errors
/// [`RecoverError`]; records handed to `replay` before the error are valid (they precede it).
pub fn recover<S: SegmentStorage>(
    storage: &mut S,
    ids: &mut [SegmentId],
    window: &mut [u8],
    mode: Mode,
    replay: &mut dyn FnMut(Replay<'_>),
) -> Result<Recovered, RecoverError<S::Error>> {
    let count = storage.list(ids).map_err(|error| RecoverError::Io {
        segment: None,
        offset: 0,
        error,
    })?;
    let ids = ids
        .get(..count)
        .ok_or(RecoverError::TooManySegments { count })?;
    let mut report = RecoveryReport::default();
    // The last segment that held records, and how it ended.
    let mut tail: Option<Tail> = None;
    // Blank segments seen after `tail` (they are trailing unless a real one follows).
    let mut blanks_since: Option<(SegmentId, u64)> = None;

    for &id in ids {
        // Checked when the header is read, before any of the segment's records is replayed.
        let check = |header: &SegmentHeader| chain_damage(tail.as_ref(), blanks_since, header, id);
        let scanned = scan_segment(storage, id, window, mode, &check, &mut report, replay)?;
        let (header, end, epoch) = match scanned {
            Scanned::Blank => {
                let (first, n) = blanks_since.unwrap_or((id, 0));
                blanks_since = Some((first, n + 1));
                continue;
            }
            Scanned::Broken(damage) => match mode {
                Mode::Strict => return Err(RecoverError::Corrupt(damage)),
                // Damage at a segment's start: the log ends before the segment (or before the
                // blank ones that precede it).
                Mode::PointInTime => {
                    let from = blanks_since.map_or(id, |(first, _)| first);
                    return finish_cut_before(from, tail, damage, report);
                }
                Mode::SkipCorrupt => {
                    report.damage.get_or_insert(damage);
                    report.skipped += 1;
                    continue;
                }
            },
            Scanned::BadHeader(error) => {
                let damage = DamageReport {
                    segment: id,
                    offset: 0,
                    expected_lsn: tail.map_or(Lsn::ZERO, |t| next_after(&t.end)),
                    damage: Damage::Header(error),
                };
                match mode {
                    Mode::Strict => return Err(RecoverError::Corrupt(damage)),
                    Mode::PointInTime => {
                        let from = blanks_since.map_or(id, |(first, _)| first);
                        return finish_cut_before(from, tail, damage, report);
                    }
                    Mode::SkipCorrupt => {
                        report.damage.get_or_insert(damage);
                        report.skipped += 1;
                        continue;
                    }
                }
            }
            Scanned::Segment { header, end, epoch } => (header, end, epoch),
        };
        blanks_since = None;
        tail = Some(Tail { header, end, epoch });
        // Damage inside a segment: corruption stops Strict here; PointInTime cuts here.
        if let End::Corrupt(c) = end {
            let damage = DamageReport {
                segment: id,
                offset: c.offset,
                expected_lsn: c.expected_lsn,
                damage: Damage::Records(c),
            };
            match mode {
                Mode::Strict => return Err(RecoverError::Corrupt(damage)),
                Mode::PointInTime => {
                    report.damage = Some(damage);
                    return Ok(finish(tail, next_segment(ids, id), report));
                }
                Mode::SkipCorrupt => {}
            }
        }
    }
    if let Some((first, n)) = blanks_since {
        report.blank_segments = n;
        report.discard_from.get_or_insert(first);
    }
    // Whatever is stored after the last segment that holds the log (blank, damaged or skipped
    // segments) is not part of it, and would collide with the successor the log creates.
    let after_tail = match tail {
        Some(t) => next_segment(ids, t.header.sequence),
        None => ids.first().copied(),
    };
    Ok(finish(tail, after_tail, report))
}

/// Damage in how a segment with `header`, stored as `id`, continues the log: blank segments
/// before it (a segment that lost its header), or a link to `prev` that does not hold.
fn chain_damage(
    prev: Option<&Tail>,
    blanks_before: Option<(SegmentId, u64)>,
    header: &SegmentHeader,
    id: SegmentId,
) -> Option<DamageReport> {
    let expected_lsn = prev.map_or(header.first_lsn, |t| next_after(&t.end));
    if let Some((first, _)) = blanks_before {
        return Some(DamageReport {
            segment: first,
            offset: 0,
            expected_lsn,
            damage: Damage::Header(HeaderError::Blank),
        });
    }
    match prev {
        Some(prev) => link_damage(prev, header, id),
        None if header.sequence != id => Some(DamageReport {
            segment: id,
            offset: 0,
            expected_lsn,
            damage: Damage::Sequence {
                expected: id,
                found: header.sequence,
            },
        }),
        None => None,
    }
}

/// Says whether `header` continues `prev` correctly, where `id` is the id it is stored under.
fn link_damage(prev: &Tail, header: &SegmentHeader, id: SegmentId) -> Option<DamageReport> {
    let expected_lsn = next_after(&prev.end);
    let report = |damage| {
        Some(DamageReport {
            segment: id,
            offset: 0,
            expected_lsn,
            damage,
        })
    };
    if !matches!(prev.end, End::Sealed { .. }) {
        let offset = match prev.end {
            End::Clean { offset, .. } | End::Torn { offset, .. } => offset,
            End::Corrupt(c) => c.offset,
            _ => 0,
        };
        return Some(DamageReport {
            segment: prev.header.sequence,
            offset,
            expected_lsn,
            damage: Damage::Unsealed { offset },
        });
    }
    if header.log_id != prev.header.log_id || header.core != prev.header.core {
        return report(Damage::Foreign {
            log_id: header.log_id,
            core: header.core,
        });
    }
    let expected = prev.header.sequence.next();
    if header.sequence != expected || header.sequence != id {
        return report(Damage::Sequence {
            expected,
            found: header.sequence,
        });
    }
    if header.prev_nonce != prev.header.nonce || header.first_lsn != expected_lsn {
        return report(Damage::Link {
            expected_lsn,
            found_lsn: header.first_lsn,
        });
    }
    None
}

/// The LSN after a segment's end.
fn next_after(end: &End) -> Lsn {
    match *end {
        End::Sealed { last_lsn, .. } => last_lsn.next(),
        End::Clean { next_lsn, .. } | End::Torn { next_lsn, .. } => next_lsn,
        End::Corrupt(c) => c.expected_lsn,
        End::BadHeader { .. } => Lsn::ZERO,
    }
}

fn next_segment(ids: &[SegmentId], id: SegmentId) -> Option<SegmentId> {
    ids.iter().copied().find(|s| *s > id)
}

/// `PointInTime` at damage in or before segment `id`: the log ends with `tail`, and `id` and
/// everything after it is discarded.
fn finish_cut_before<E>(
    id: SegmentId,
    tail: Option<Tail>,
    damage: DamageReport,
    mut report: RecoveryReport,
) -> Result<Recovered, RecoverError<E>> {
    report.damage = Some(damage);
    Ok(finish(tail, Some(id), report))
}

/// The resume position after `tail`, segments from `discard` on discarded.
fn finish(tail: Option<Tail>, discard: Option<SegmentId>, mut report: RecoveryReport) -> Recovered {
    if let Some(d) = discard {
        report.discard_from = Some(report.discard_from.map_or(d, |x| x.min(d)));
    }
    let Some(tail) = tail else {
        return Recovered {
            resume: None,
            report,
        };
    };
    let id = tail.header.sequence;
    let resume = |offset, next_lsn, tail_kind| Resume {
        header: tail.header,
        offset,
        next_lsn,
        epoch: tail.epoch,
        tail: tail_kind,
    };
    let resume = match tail.end {
        End::Sealed { last_lsn, offset } => resume(offset, last_lsn.next(), ResumeTail::Sealed),
        End::Clean { offset, next_lsn } => resume(offset, next_lsn, ResumeTail::Open),
        End::Torn {
            offset,
            next_lsn,
            beyond,
            extent,
        } => {
            report.cut = Some(Cut {
                segment: id,
                offset,
                next_lsn,
                beyond,
                extent,
            });
            resume(offset, next_lsn, ResumeTail::Torn)
        }
        End::Corrupt(c) => {
            report.cut = Some(Cut {
                segment: id,
                offset: c.offset,
                next_lsn: c.expected_lsn,
                beyond: c.beyond,
                extent: c.beyond.extent,
            });
            resume(c.offset, c.expected_lsn, ResumeTail::Torn)
        }
        End::BadHeader { .. } => {
            return Recovered {
                resume: None,
                report,
            };
        }
    };
    Recovered {
        resume: Some(resume),
        report,
    }
}

enum Scanned {
    /// Never started (all zero), or a creation that never completed.
    Blank,
    /// The header is valid but does not continue the chain.
    Broken(DamageReport),
    BadHeader(HeaderError),
    Segment {
        header: SegmentHeader,
        end: End,
        epoch: u64,
    },
}

fn scan_segment<S: SegmentStorage>(
    storage: &mut S,
    id: SegmentId,
    window: &mut [u8],
    mode: Mode,
    check: &dyn Fn(&SegmentHeader) -> Option<DamageReport>,
    report: &mut RecoveryReport,
    replay: &mut dyn FnMut(Replay<'_>),
) -> Result<Scanned, RecoverError<S::Error>> {
    let mut decoder = SegmentDecoder::new(window, mode);
    let mut header: Option<SegmentHeader> = None;
    let mut epoch = 0;
    report.segments += 1;
    loop {
        match decoder.poll() {
            Decoded::NeedMore => {
                let offset = decoder.offset_wanted();
                let space = decoder.space();
                let n = storage
                    .read_at(id, offset, space)
                    .map_err(|error| RecoverError::Io {
                        segment: Some(id),
                        offset,
                        error,
                    })?;
                if n == 0 {
                    decoder.finish();
                } else {
                    decoder.fill(n);
                    report.bytes += n as u64;
                }
            }
            Decoded::Header(h) => {
                if let Some(damage) = check(&h) {
                    // Salvage reads a segment that does not link as long as it is this log's
                    // and moves the LSNs forward (the gap is reported); another log's segment,
                    // or one that would replay LSNs already read, is skipped whole.
                    // A segment stored under another id than its own is skipped too: resuming
                    // would name it by the wrong file.
                    let foreign = matches!(damage.damage, Damage::Foreign { .. });
                    if mode != Mode::SkipCorrupt
                        || foreign
                        || h.sequence != id
                        || h.first_lsn < damage.expected_lsn
                    {
                        return Ok(Scanned::Broken(damage));
                    }
                    report.damage.get_or_insert(damage);
                    report.skipped += 1;
                }
                epoch = h.epoch;
                header = Some(h);
                replay(Replay::Segment(&h));
            }
            Decoded::Record(r) => {
                if r.header.kind == Kind::Epoch
                    && let Ok(bytes) = <[u8; 8]>::try_from(r.payload)
                {
                    epoch = u64::from_le_bytes(bytes);
                }
                if report.first_lsn == Lsn::ZERO {
                    report.first_lsn = r.header.lsn;
                }
                report.last_lsn = r.header.lsn;
                report.records += 1;
                replay(Replay::Record(&r));
            }
            Decoded::Skipped(skipped) => {
                report.skipped += 1;
                report.damage.get_or_insert(DamageReport {
                    segment: id,
                    offset: skipped.offset,
                    expected_lsn: skipped.first_lost,
                    damage: Damage::Skipped(skipped),
                });
                replay(Replay::Skipped {
                    segment: id,
                    skipped,
                });
            }
            Decoded::End(End::BadHeader {
                error,
                rest_is_zero,
            }) => {
                return match error {
                    HeaderError::UnsupportedVersion { version } => {
                        Err(RecoverError::UnsupportedVersion {
                            segment: id,
                            version,
                        })
                    }
                    // A creation that never completed leaves a blank or partial header and
                    // nothing after it.
                    HeaderError::Blank | HeaderError::Truncated { .. } | HeaderError::Damaged
                        if rest_is_zero =>
                    {
                        Ok(Scanned::Blank)
                    }
                    e => Ok(Scanned::BadHeader(e)),
                };
            }
            Decoded::End(end) => {
                let Some(header) = header else {
                    return Ok(Scanned::BadHeader(HeaderError::Blank));
                };
                return Ok(Scanned::Segment { header, end, epoch });
            }
            Decoded::Error(e) => return Err(RecoverError::decode(id, e)),
        }
    }
}

/// Deletes the segments that recovery said to discard (`report.discard_from` and after), then
/// makes the deletes durable. Blocking: it waits for each completion.
///
/// # Errors
/// The backend's error, with the segment it was deleting.
pub fn discard<S: SegmentStorage>(
    storage: &mut S,
    ids: &mut [SegmentId],
    from: SegmentId,
) -> Result<(), RecoverError<<S as ErrorType>::Error>> {
    let count = storage.list(ids).map_err(|error| RecoverError::Io {
        segment: None,
        offset: 0,
        error,
    })?;
    let ids = ids
        .get(..count)
        .ok_or(RecoverError::TooManySegments { count })?;
    let mut token = RESERVED_TOKENS;
    for &id in ids.iter().filter(|id| **id >= from) {
        token += 1;
        run_blocking(storage, token, SegmentOp::Delete { segment: id }).map_err(|error| {
            RecoverError::Io {
                segment: Some(id),
                offset: 0,
                error,
            }
        })?;
    }
    run_blocking(storage, token + 1, SegmentOp::SyncNamespace).map_err(|error| RecoverError::Io {
        segment: None,
        offset: 0,
        error,
    })
}

/// Tokens from here up are recovery's own ([`discard`]); a pipeline's never reach them.
pub const RESERVED_TOKENS: u64 = 1 << 63;

/// Submits one operation and waits for its completion (polling: meant for backends that complete
/// at once or make progress inside `poll_completion`). Completions of other tokens (requests of a
/// dropped pipeline still in flight) are consumed and ignored.
fn run_blocking<S: SegmentStorage>(
    storage: &mut S,
    token: u64,
    op: SegmentOp<'_>,
) -> Result<(), S::Error> {
    storage.submit(token, op)?;
    loop {
        if let Some((t, result)) = storage.poll_completion()
            && t == token
        {
            return result;
        }
    }
}
