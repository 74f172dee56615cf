//! [`Tail`]: follows a log from any LSN while its owner appends and syncs on another thread,
//! handing out each data record once it is durable.
//!
//! The one rule that keeps it safe: bytes read from a segment are trusted only for the frames up
//! to the durable LSN loaded *before* they were read. Every frame up to that LSN was written whole
//! before the owner published it; anything past it may be a write still in flight (half landed)
//! and is read again once the durable LSN covers it.

use crate::Error;
use crate::read::{self, Stepped};
use crate::watch::{Waited, Watch};
use lamina_core::decode::{Decoded, Mode, SegmentDecoder, min_window};
use lamina_core::io::{Error as _, Failure, SegmentStorage};
use lamina_core::record::{self, HeaderCheck, Kind, Seed};
use lamina_core::segment::{self, SegmentHeader};
use lamina_core::{Lsn, SegmentId};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The smallest window a tail reads in: 64 KiB, so that one read brings many records.
const MIN_WINDOW: usize = 64 * 1024;

/// A data record handed out by [`Tail::next`], borrowed from the tail's window until the next
/// call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailRecord<'a> {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its payload.
    pub payload: &'a [u8],
}

/// Where the tail is in the chain of segments.
#[derive(Clone, Copy, Debug)]
enum Position {
    /// At the start of `segment`, whose header is still to be read; `prev` is the segment before
    /// it in the chain (sealed), `None` for the segment the tail started in.
    Start {
        segment: SegmentId,
        prev: Option<SegmentHeader>,
    },
    /// Inside the segment with this header, reading frames with its seed.
    In { header: SegmentHeader, seed: Seed },
}

/// A reader that follows a log while its owner writes it, on another thread: made by
/// [`crate::WriteAheadLog::tail_with`] (or `tail` on the file backend), it reads through its own
/// read-only view of the segments and learns the durable LSN from the owner.
///
/// [`Self::next`] hands out the data records in LSN order, each once, none skipped, each only
/// once it is durable (never a partial one, never one of a write still in flight). It follows the
/// chain of segments across roll-overs, checking each link as recovery does. It keeps its place
/// and reads in chunks into a window it reuses, so records already durable cost no system call
/// each.
///
/// It ends with an error: [`Error::Closed`] after the last durable record of a log that was closed
/// (or dropped), [`Error::Poisoned`] after the last durable record of a poisoned log,
/// [`Error::Panicked`] after the last durable record of a [`crate::SharedLog`] whose leader
/// panicked,
/// [`Error::Truncated`] when segments it had not read yet were deleted, [`Error::Read`] for damage
/// or a read error, [`Error::Storage`] when the segments cannot be listed. Every error but
/// `Closed`, `Poisoned` and `Panicked` is final: later calls answer it again.
///
/// ```
/// use lamina::{Error, Lsn, Options, WriteAheadLog};
/// # use lamina_tests::{shared::SharedSim, sim::SimStorage};
/// # fn main() -> Result<(), Error> {
/// # let storage = SharedSim::new(SimStorage::new(1));
/// let (mut log, _) = WriteAheadLog::open_with(storage, Options::default())?;
/// // On the file backend: `log.tail(Lsn::FIRST)?`.
/// let mut tail = log.tail_with(log.storage().reader(), Lsn::FIRST)?;
/// let follower = std::thread::spawn(move || {
///     let mut seen = Vec::new();
///     loop {
///         match tail.next(None) {
///             Ok(Some(record)) => seen.push((record.lsn, record.payload.to_vec())),
///             Ok(None) => {} // only after a timeout
///             Err(Error::Closed { .. }) => return Ok(seen),
///             Err(e) => return Err(e),
///         }
///     }
/// });
/// let a = log.append(b"a")?;
/// let b = log.append(b"b")?;
/// log.sync()?;
/// log.close()?;
/// let seen = follower.join().expect("follower")?;
/// assert_eq!(seen, [(a, b"a".to_vec()), (b, b"b".to_vec())]);
/// # Ok(())
/// # }
/// ```
pub struct Tail<R: SegmentStorage> {
    reader: R,
    watch: Arc<Watch>,
    log_id: u64,
    core: u32,
    /// Records below it are read but not handed out.
    from: Lsn,
    /// The damage `SkipCorrupt` recovery stepped over: stepped over again (its records are
    /// lost), as `read_from` does; other damage is an error.
    stepped: Stepped,
    /// The LSN of the next frame in the chain.
    next: Lsn,
    at: Position,
    window: Box<[u8]>,
    /// `window[start..end]` holds the current segment's bytes from offset `pos`.
    start: usize,
    end: usize,
    pos: u64,
    /// The buffered bytes hold every frame up to this LSN whole (the durable LSN loaded before
    /// the oldest of them was read).
    trusted: Lsn,
    failed: Option<Error>,
}

impl<R: SegmentStorage> fmt::Debug for Tail<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tail")
            .field("log_id", &self.log_id)
            .field("from", &self.from)
            .field("next", &self.next)
            .field("durable", &self.watch.durable())
            .finish_non_exhaustive()
    }
}

impl<R: SegmentStorage> Tail<R> {
    /// A tail of the log `log_id` / `core` from `from`, reading through `reader`; finds the
    /// segment to start in.
    pub(crate) fn new(
        mut reader: R,
        watch: Arc<Watch>,
        from: Lsn,
        log_id: u64,
        core: u32,
        max_payload: u32,
        stepped: Stepped,
    ) -> Result<Self, Error> {
        // `Lsn::ZERO`: from the oldest record held, whatever truncation deleted.
        let oldest_held = from == Lsn::ZERO;
        let ids = read::list(&mut reader)?;
        let mut oldest: Option<SegmentHeader> = None;
        let mut start: Option<SegmentHeader> = None;
        for id in ids {
            // A segment without a header that parses is one being created: nothing in it is
            // durable yet, and the chain reaches it from its predecessor's seal.
            let Some(h) = read::header(&mut reader, id)? else {
                continue;
            };
            if h.log_id != log_id || h.core != core || h.sequence != id {
                return Err(Error::Read {
                    from,
                    detail: format!(
                        "segment {id} belongs to another log (log {:#x}, core {}, sequence {}) \
                         than the one tailed (log {log_id:#x}, core {core})",
                        h.log_id, h.core, h.sequence
                    ),
                });
            }
            oldest.get_or_insert(h);
            if h.first_lsn <= from || (oldest_held && start.is_none()) {
                start = Some(h);
            }
        }
        let Some(oldest) = oldest else {
            return Err(Error::Read {
                from,
                detail: "the log holds no segment with a header".into(),
            });
        };
        let from = if oldest_held { oldest.first_lsn } else { from };
        let Some(start) = start else {
            return Err(Error::Truncated {
                next: from,
                detail: format!(
                    "the oldest record held is LSN {} (segment {})",
                    oldest.first_lsn, oldest.sequence
                ),
            });
        };
        let max_payload = usize::try_from(max_payload).unwrap_or(usize::MAX);
        let window = vec![0u8; min_window(max_payload).max(MIN_WINDOW)].into_boxed_slice();
        Ok(Tail {
            reader,
            watch,
            log_id,
            core,
            from,
            stepped,
            next: start.first_lsn,
            at: Position::Start {
                segment: start.sequence,
                prev: None,
            },
            window,
            start: 0,
            end: 0,
            pos: 0,
            trusted: Lsn::ZERO,
            failed: None,
        })
    }

    /// The next data record, once it is durable: waits for it up to `timeout` (`None`: as long as
    /// it takes) and answers `Ok(None)` when the time passed first. `Some(Duration::ZERO)` only
    /// looks.
    ///
    /// # Errors
    /// [`Error::Closed`] when the log was closed or dropped and every durable record was handed
    /// out; [`Error::Poisoned`] likewise for a poisoned log, [`Error::Panicked`] for a shared
    /// log whose leader panicked; [`Error::Truncated`] when segments
    /// not yet read were deleted (their records are lost to this tail); [`Error::Read`] for damage
    /// in durable records, a read error or a broken chain of segments; [`Error::Storage`] when the
    /// segments cannot be listed.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Option<TailRecord<'_>>, Error> {
        // A timeout too long to be a deadline waits as long as it takes.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            if self.next > self.watch.durable() {
                match self.watch.wait(self.next.prev(), deadline) {
                    Waited::Moved(_) => {}
                    Waited::TimedOut => return Ok(None),
                    Waited::Ended(durable, why) => {
                        if durable < self.next {
                            return Err(why);
                        }
                    }
                }
                continue;
            }
            match self.step() {
                Ok(None) => {}
                Ok(Some((lsn, from, to))) => {
                    let payload = self.window.get(from..to).unwrap_or(&[]);
                    return Ok(Some(TailRecord { lsn, payload }));
                }
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// The LSN of the next frame the tail reads: every data record below it, from where the tail
    /// started, was handed out (but those `SkipCorrupt` recovery stepped over).
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// The durable LSN the log's owner published last.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.watch.durable()
    }

    /// The read-only view the tail reads through.
    #[must_use]
    pub fn reader(&self) -> &R {
        &self.reader
    }

    /// Reads the frame of LSN `self.next`, which is durable. Returns the LSN and the window range
    /// of the payload of a data record to hand out.
    fn step(&mut self) -> Result<Option<(Lsn, usize, usize)>, Error> {
        let (header, seed) = match self.at {
            Position::In { header, seed } => (header, seed),
            Position::Start { segment, prev } => self.enter(segment, prev)?,
        };
        let segment = header.sequence;
        if let Err(e) = self.fill(segment, record::HEADER_LEN) {
            return if self.go_on_after(header)? {
                Ok(None)
            } else {
                Err(e)
            };
        }
        let frame_header = self
            .buffered()
            .get(..record::HEADER_LEN)
            .and_then(|b| <&[u8; record::HEADER_LEN]>::try_from(b).ok())
            .map(|b| record::check_header(&seed, b));
        let h = match frame_header {
            Some(HeaderCheck::Valid(h)) if h.lsn == self.next => h,
            Some(HeaderCheck::Valid(h)) => {
                let what = format!("the frame there has LSN {} instead", h.lsn);
                return self.damaged(header, what);
            }
            Some(HeaderCheck::Zero) => return self.damaged(header, "it holds zeros".into()),
            _ => return self.damaged(header, "its frame header does not validate".into()),
        };
        let len = h.frame_len();
        if len > self.window.len() {
            return Err(self.fail(format!(
                "the frame of LSN {} in segment {segment} at offset {} takes {len} bytes, more \
                 than the log's max_payload allows",
                h.lsn, self.pos
            )));
        }
        self.fill(segment, len)?;
        let frame = self.buffered().get(..len).unwrap_or(&[]);
        if !record::check_body(&seed, frame) {
            return self.damaged(header, "its frame body does not validate".into());
        }
        let from = self.start + record::HEADER_LEN;
        let to = from + record::payload(&h, frame).len();
        self.start += len;
        self.pos += len as u64;
        self.next = h.lsn.next();
        match h.kind {
            Kind::Data if h.lsn >= self.from => return Ok(Some((h.lsn, from, to))),
            Kind::Seal => {
                // Nothing follows in this segment: the chain goes on in the next one.
                self.at = Position::Start {
                    segment: segment.next(),
                    prev: Some(header),
                };
                self.discard();
            }
            _ => {}
        }
        Ok(None)
    }

    /// Reads the header of `segment` (with the first records after it) and checks that it
    /// continues the chain at `self.next`.
    fn enter(
        &mut self,
        segment: SegmentId,
        prev: Option<SegmentHeader>,
    ) -> Result<(SegmentHeader, Seed), Error> {
        self.discard();
        self.pos = 0;
        self.fill(segment, segment::HEADER_LEN)?;
        let parsed = self
            .buffered()
            .get(..segment::HEADER_LEN)
            .map(SegmentHeader::parse);
        let header = match parsed {
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                return Err(self.damage(segment, format!("the segment header is bad: {e}")));
            }
            None => return Err(self.damage(segment, "the segment header is short".into())),
        };
        let linked = prev.is_none_or(|p| h_links(&header, &p));
        if header.log_id != self.log_id
            || header.core != self.core
            || header.sequence != segment
            || header.first_lsn != self.next
            || !linked
        {
            return Err(self.fail(format!(
                "segment {segment} does not continue the log: its header says log {:#x}, core \
                 {}, segment {} from LSN {}; LSN {} was expected",
                header.log_id, header.core, header.sequence, header.first_lsn, self.next
            )));
        }
        self.start += segment::HEADER_LEN;
        self.pos = segment::HEADER_LEN as u64;
        let seed = header.seed();
        self.at = Position::In { header, seed };
        Ok((header, seed))
    }

    fn buffered(&self) -> &[u8] {
        self.window.get(self.start..self.end).unwrap_or(&[])
    }

    /// Forgets the buffered bytes (the position stays).
    fn discard(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Makes the window hold at least `n` bytes of `segment` from `self.pos`, all of them
    /// trusted for the frame of `self.next` (`n` fits in the window).
    fn fill(&mut self, segment: SegmentId, n: usize) -> Result<(), Error> {
        if self.trusted < self.next {
            // Read before this frame was durable: it may have been a write in flight.
            self.discard();
        }
        while self.end - self.start < n {
            if self.start == self.end {
                self.discard();
                // Loaded before the read: every frame up to it is whole in what is read now.
                self.trusted = self.watch.durable();
            } else if self.start > 0 {
                self.window.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let offset = self.pos + (self.end - self.start) as u64;
            let space = self.window.get_mut(self.end..).unwrap_or(&mut []);
            let got = match self.reader.read_at(segment, offset, space) {
                Ok(got) => got,
                Err(e) if e.failure() == Failure::NotFound => {
                    return Err(self.truncated(segment));
                }
                Err(e) => {
                    return Err(self.fail(format!(
                        "read error in segment {segment} at offset {offset}: {e:?}"
                    )));
                }
            };
            if got == 0 {
                return Err(self.damage(segment, "the segment ends there".into()));
            }
            self.end = (self.end + got).min(self.window.len());
        }
        Ok(())
    }

    /// A durable frame is damaged: in `SkipCorrupt`, steps over it to the next valid record (the
    /// records between are lost, as recovery reported); else the error.
    fn damaged(
        &mut self,
        header: SegmentHeader,
        what: String,
    ) -> Result<Option<(Lsn, usize, usize)>, Error> {
        if self.stepped.skip_corrupt()
            && let Some((offset, lsn)) = self.next_valid(header)?
        {
            self.discard();
            self.pos = offset;
            self.next = lsn;
            return Ok(None);
        }
        if self.go_on_after(header)? {
            return Ok(None);
        }
        Err(self.damage(header.sequence, what))
    }

    /// At the damaged end of the segment with `header`: when `SkipCorrupt` recovery went on from
    /// the same place in the next segment (which does not link), goes on there too.
    fn go_on_after(&mut self, header: SegmentHeader) -> Result<bool, Error> {
        if !self.stepped.skip_corrupt() {
            return Ok(false);
        }
        let successor = header.sequence.next();
        let Some(h) = read::header(&mut self.reader, successor)? else {
            return Ok(false);
        };
        if !self.stepped.goes_on_at(&h, self.next) || h.first_lsn > self.watch.durable() {
            return Ok(false);
        }
        self.discard();
        self.at = Position::Start {
            segment: successor,
            prev: None,
        };
        self.next = h.first_lsn;
        Ok(true)
    }

    /// Decodes the tail's segment from its start in `SkipCorrupt`, as recovery did, to the first
    /// valid record at `self.next` or after; its offset and LSN, or `None` when no durable one
    /// follows. Only on damage, so its window is allocated here.
    fn next_valid(&mut self, header: SegmentHeader) -> Result<Option<(u64, Lsn)>, Error> {
        let segment = header.sequence;
        let durable = self.watch.durable();
        let mut window = vec![0u8; self.window.len()];
        let mut decoder = SegmentDecoder::new(&mut window, Mode::SkipCorrupt);
        loop {
            match decoder.poll() {
                Decoded::NeedMore => {
                    let offset = decoder.offset_wanted();
                    match self.reader.read_at(segment, offset, decoder.space()) {
                        Ok(0) => decoder.finish(),
                        Ok(n) => decoder.fill(n),
                        Err(e) => {
                            return Err(self.fail(format!(
                                "read error in segment {segment} at offset {offset}: {e:?}"
                            )));
                        }
                    }
                }
                Decoded::Header(h) if h == header => {}
                Decoded::Record(r) if r.header.lsn < self.next => {}
                Decoded::Record(r) if r.header.lsn <= durable && r.offset > self.pos => {
                    return Ok(Some((r.offset, r.header.lsn)));
                }
                Decoded::Skipped(s) if self.stepped.steps_over(segment, &s) => {}
                _ => return Ok(None),
            }
        }
    }

    /// The error for a durable frame that cannot be read where it should be: the segment was
    /// deleted under the tail when it is no longer listed, else damage.
    fn damage(&mut self, segment: SegmentId, what: String) -> Error {
        match read::list(&mut self.reader) {
            Ok(ids) if !ids.contains(&segment) => self.truncated(segment),
            Ok(_) => self.fail(format!(
                "damage in segment {segment} at offset {} where the durable LSN {} should be: \
                 {what}",
                self.pos, self.next
            )),
            Err(e) => e,
        }
    }

    fn truncated(&self, segment: SegmentId) -> Error {
        Error::Truncated {
            next: self.next,
            detail: format!("segment {segment} was deleted before the tail read it"),
        }
    }

    fn fail(&self, detail: String) -> Error {
        Error::Read {
            from: self.next,
            detail,
        }
    }
}

/// Whether `h` follows `prev` in the chain.
fn h_links(h: &SegmentHeader, prev: &SegmentHeader) -> bool {
    h.log_id == prev.log_id
        && h.core == prev.core
        && h.sequence == prev.sequence.next()
        && h.prev_nonce == prev.nonce
}
