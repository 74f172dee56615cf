//! Reading records back from any LSN: the headers say which segment to start in, then a
//! [`SegmentDecoder`] walks the segments in order, with the chain checks recovery makes.

use crate::Error;
use lamina_core::decode::{Decoded, End, Mode, SegmentDecoder, Skipped};
use lamina_core::io::SegmentStorage;
use lamina_core::record::Kind;
use lamina_core::recover::Replay;
use lamina_core::segment::{self, SegmentHeader};
use lamina_core::{Lsn, SegmentId};
use std::sync::Arc;

/// Damaged regions a log opened in `SkipCorrupt` remembers from its recovery, at most; a log
/// whose recovery stepped over more steps over any damage when read.
pub(crate) const MAX_STEPPED: usize = 4096;

/// What reads step over: in a log opened in `SkipCorrupt`, the damaged regions its recovery
/// stepped over (and reported), and the ends of segments it stepped from into a successor that
/// does not link (a segment whose end was damaged), and no other. Damage met anywhere else
/// appeared after the open and was never reported: reading it is an error, not a silent loss.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stepped {
    /// The log was opened in `SkipCorrupt`.
    skip: bool,
    regions: Arc<[(SegmentId, Skipped)]>,
    /// Headers recovery went on reading at across a broken link, each with the first LSN it lost
    /// before it (the LSN after the last record it read).
    salvaged: Arc<[(SegmentHeader, Lsn)]>,
    /// Recovery stepped over more than [`MAX_STEPPED`] regions or links: any damage is stepped
    /// over.
    overflow: bool,
}

impl Stepped {
    /// For a log opened in `mode` whose recovery stepped over `regions` (`overflow`: and more
    /// than were kept).
    pub(crate) fn new(mode: Mode, regions: Vec<(SegmentId, Skipped)>, overflow: bool) -> Self {
        Stepped {
            skip: mode == Mode::SkipCorrupt,
            regions: regions.into(),
            salvaged: Arc::new([]),
            overflow,
        }
    }

    /// The log was opened in `SkipCorrupt`: reads decode in that mode.
    pub(crate) fn skip_corrupt(&self) -> bool {
        self.skip
    }

    /// Whether reads step over the damage `skipped` in `segment`: recovery stepped over it.
    pub(crate) fn steps_over(&self, segment: SegmentId, skipped: &Skipped) -> bool {
        self.skip && (self.overflow || self.regions.contains(&(segment, *skipped)))
    }

    /// Whether a read that lost its way before LSN `lost` (at a segment's damaged end) goes on
    /// at the segment with header `h`: recovery went on there from the same place.
    pub(crate) fn goes_on_at(&self, h: &SegmentHeader, lost: Lsn) -> bool {
        self.skip
            && h.first_lsn >= lost
            && (self.overflow
                || self
                    .salvaged
                    .iter()
                    .any(|(header, at)| header == h && lost >= *at))
    }
}

/// Collects what [`Stepped`] keeps from recovery's replay.
#[derive(Debug, Default)]
pub(crate) struct SteppedBuilder {
    regions: Vec<(SegmentId, Skipped)>,
    salvaged: Vec<(SegmentHeader, Lsn)>,
    overflow: bool,
    /// The segment read last, the LSN after its last record, and whether that was a seal.
    last: Option<(SegmentHeader, Lsn, bool)>,
}

impl SteppedBuilder {
    /// Takes in one step of recovery's replay.
    pub(crate) fn replayed(&mut self, replayed: Replay<'_>) {
        match replayed {
            Replay::Skipped { segment, skipped } => {
                if self.regions.len() < MAX_STEPPED {
                    self.regions.push((segment, skipped));
                } else {
                    self.overflow = true;
                }
            }
            Replay::Segment(h) => {
                if let Some((p, after, sealed)) = self.last {
                    let linked = sealed
                        && h.log_id == p.log_id
                        && h.core == p.core
                        && h.sequence == p.sequence.next()
                        && h.prev_nonce == p.nonce
                        && h.first_lsn == after;
                    if !linked {
                        if self.salvaged.len() < MAX_STEPPED {
                            self.salvaged.push((*h, after));
                        } else {
                            self.overflow = true;
                        }
                    }
                }
                self.last = Some((*h, h.first_lsn, false));
            }
            Replay::Record(r) => {
                if let Some((_, after, sealed)) = &mut self.last {
                    *after = r.header.lsn.next();
                    *sealed = r.header.kind == Kind::Seal;
                }
            }
        }
    }

    /// What reads of a log opened in `mode` step over.
    pub(crate) fn build(self, mode: Mode) -> Stepped {
        let mut stepped = Stepped::new(mode, self.regions, self.overflow);
        stepped.salvaged = self.salvaged.into();
        stepped
    }
}

/// The ids of every segment, ascending.
pub(crate) fn list<S: SegmentStorage>(storage: &mut S) -> Result<Vec<SegmentId>, Error> {
    let listing = |e: S::Error| Error::Storage {
        op: "listing the segments".into(),
        detail: format!("{e:?}"),
    };
    let mut ids = Vec::new();
    loop {
        let count = storage.list(&mut ids).map_err(listing)?;
        if count <= ids.len() {
            ids.truncate(count);
            return Ok(ids);
        }
        ids.resize(count, SegmentId(0));
    }
}

/// The header of `segment`, or `None` when it has none that parses (a blank segment).
pub(crate) fn header<S: SegmentStorage>(
    storage: &mut S,
    segment: SegmentId,
) -> Result<Option<SegmentHeader>, Error> {
    let mut bytes = [0u8; segment::HEADER_LEN];
    let mut n = 0;
    while n < bytes.len() {
        let Some(rest) = bytes.get_mut(n..) else {
            break;
        };
        let got = storage
            .read_at(segment, n as u64, rest)
            .map_err(|e| Error::Storage {
                op: format!("reading the header of segment {segment}"),
                detail: format!("{e:?}"),
            })?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(bytes.get(..n).and_then(|b| SegmentHeader::parse(b).ok()))
}

/// One record handed over by [`read_records`]: a data record, an epoch marker or a checkpoint
/// marker (seals and padding carry nothing and are not handed over).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    /// The record's kind.
    pub(crate) kind: Kind,
    /// Its LSN.
    pub(crate) lsn: Lsn,
    /// The epoch it belongs to: the segment header's epoch, moved on by every epoch marker read
    /// since (an epoch marker belongs to the epoch it starts).
    pub(crate) epoch: u64,
    /// Its payload.
    pub(crate) payload: &'a [u8],
}

/// Hands every data record with an LSN from `from` to `upto` (inclusive) to `each`, in order
/// (stepping over the damage `SkipCorrupt` recovery stepped over); returns the LSN after the last record handed over (`from` when none was). Records below the
/// oldest segment held were truncated: reading then starts at the oldest record held.
pub(crate) fn read_from<S: SegmentStorage>(
    storage: &mut S,
    from: Lsn,
    upto: Lsn,
    window: &mut [u8],
    stepped: &Stepped,
    each: &mut dyn FnMut(Lsn, &[u8]),
) -> Result<Lsn, Error> {
    let mut next = from;
    read_records(storage, from, upto, window, stepped, &mut |entry| {
        if entry.kind == Kind::Data {
            each(entry.lsn, entry.payload);
            next = entry.lsn.next();
        }
    })?;
    Ok(next)
}

/// Hands every data, epoch and checkpoint record with an LSN from `from` to `upto` (inclusive)
/// to `each`, in order, with the epoch each belongs to (stepping over the damage `SkipCorrupt`
/// recovery stepped over). Records below the oldest segment held
/// were truncated: reading then starts at the oldest record held.
pub(crate) fn read_records<S: SegmentStorage>(
    storage: &mut S,
    from: Lsn,
    upto: Lsn,
    window: &mut [u8],
    stepped: &Stepped,
    each: &mut dyn FnMut(Entry<'_>),
) -> Result<(), Error> {
    // Damage that recovery stepped over in `SkipCorrupt` is stepped over again; in the other
    // modes recovery left none behind, so any damage met here is an error.
    let mode = if stepped.skip_corrupt() {
        Mode::SkipCorrupt
    } else {
        Mode::Strict
    };
    if upto < from || upto == Lsn::ZERO {
        return Ok(());
    }
    let fail = |detail: String| Error::Read { from, detail };
    let ids = list(storage)?;
    let mut start = 0;
    for (i, id) in ids.iter().enumerate() {
        if header(storage, *id)?.is_some_and(|h| h.first_lsn <= from) {
            start = i;
        }
    }
    let mut expected: Option<Lsn> = None;
    let mut prev: Option<SegmentHeader> = None;
    let mut epoch = 0;
    let held = ids.get(start..).unwrap_or(&[]);
    for (i, &id) in held.iter().enumerate() {
        let mut decoder = SegmentDecoder::new(&mut *window, mode);
        loop {
            match decoder.poll() {
                Decoded::NeedMore => {
                    let offset = decoder.offset_wanted();
                    let n = storage.read_at(id, offset, decoder.space()).map_err(|e| {
                        fail(format!(
                            "read error in segment {id} at offset {offset}: {e:?}"
                        ))
                    })?;
                    if n == 0 {
                        decoder.finish();
                    } else {
                        decoder.fill(n);
                    }
                }
                Decoded::Header(h) => {
                    let expected_lsn = expected.unwrap_or(h.first_lsn);
                    let linked = prev.is_none_or(|p| {
                        h.log_id == p.log_id
                            && h.core == p.core
                            && h.sequence == p.sequence.next()
                            && h.prev_nonce == p.nonce
                    });
                    // A link that does not hold is read on only where recovery read on.
                    let continues = (linked && h.first_lsn == expected_lsn)
                        || stepped.goes_on_at(&h, expected_lsn);
                    if h.sequence != id || !continues {
                        return Err(fail(format!(
                            "segment {id} does not continue the log: its header says segment {} \
                             from LSN {}, LSN {expected_lsn} was expected",
                            h.sequence, h.first_lsn
                        )));
                    }
                    expected = Some(h.first_lsn);
                    epoch = h.epoch;
                    prev = Some(h);
                }
                Decoded::Record(r) => {
                    let lsn = r.header.lsn;
                    if lsn > upto {
                        return Ok(());
                    }
                    let kind = r.header.kind;
                    if kind == Kind::Epoch
                        && let Ok(bytes) = <[u8; 8]>::try_from(r.payload)
                    {
                        epoch = u64::from_le_bytes(bytes);
                    }
                    if lsn >= from && matches!(kind, Kind::Data | Kind::Epoch | Kind::Checkpoint) {
                        each(Entry {
                            kind,
                            lsn,
                            epoch,
                            payload: r.payload,
                        });
                    }
                    expected = Some(lsn.next());
                    if lsn == upto {
                        return Ok(());
                    }
                }
                Decoded::Skipped(s) if stepped.steps_over(id, &s) => {
                    expected = Some(s.resumed);
                }
                Decoded::Skipped(s) => {
                    return Err(fail(format!(
                        "damage in segment {id} at offset {}: LSN {} on are lost",
                        s.offset, s.first_lost
                    )));
                }
                Decoded::End(End::Sealed { .. }) => break,
                Decoded::End(End::Clean { offset, next_lsn })
                | Decoded::End(End::Torn {
                    offset, next_lsn, ..
                }) => {
                    if next_lsn > upto {
                        // Everything durable was read: the rest was never acknowledged.
                        return Ok(());
                    }
                    // A damaged end that `SkipCorrupt` recovery stepped from into the next
                    // segment: the read goes on there too.
                    if let Some(&successor) = held.get(i + 1)
                        && let Some(h) = header(storage, successor)?
                        && stepped.goes_on_at(&h, next_lsn)
                    {
                        expected = Some(next_lsn);
                        prev = None;
                        break;
                    }
                    return Err(fail(format!(
                        "segment {id} ends at offset {offset} (before LSN {next_lsn}) \
                         short of the durable LSN {upto}"
                    )));
                }
                Decoded::End(End::Corrupt(c)) => {
                    return Err(fail(format!(
                        "corruption in segment {id} at offset {} (LSN {} expected)",
                        c.offset, c.expected_lsn
                    )));
                }
                Decoded::End(End::BadHeader { error, .. }) => {
                    return Err(fail(format!("segment {id} has a bad header: {error}")));
                }
                Decoded::Error(e) => {
                    return Err(fail(format!("segment {id}: {e}")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Stepped;
    use lamina_core::decode::{Mode, Skipped};
    use lamina_core::{Lsn, SegmentId};

    fn skip(offset: u64) -> Skipped {
        Skipped {
            offset,
            len: 64,
            first_lost: Lsn(10),
            resumed: Lsn(12),
        }
    }

    #[test]
    fn only_the_regions_recovery_stepped_over_are_stepped_over() {
        let known = Stepped::new(Mode::SkipCorrupt, vec![(SegmentId(1), skip(100))], false);
        assert!(known.steps_over(SegmentId(1), &skip(100)));
        assert!(!known.steps_over(SegmentId(1), &skip(200)));
        assert!(!known.steps_over(SegmentId(2), &skip(100)));
    }

    #[test]
    fn past_the_limit_any_damage_is_stepped_over_and_other_modes_step_over_none() {
        let overflowed = Stepped::new(Mode::SkipCorrupt, Vec::new(), true);
        assert!(overflowed.steps_over(SegmentId(5), &skip(7)));
        for mode in [Mode::Strict, Mode::PointInTime] {
            let strict = Stepped::new(mode, vec![(SegmentId(1), skip(100))], true);
            assert!(!strict.skip_corrupt());
            assert!(!strict.steps_over(SegmentId(1), &skip(100)));
        }
    }
}
