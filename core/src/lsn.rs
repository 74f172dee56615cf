//! Log sequence numbers and segment identities.

use core::fmt;

/// A log sequence number: the position of a record in its log, +1 per record, continuous across
/// segments. `Lsn(0)` is never a record's LSN: it means "nothing" (for example "nothing durable
/// yet"), so the first record of a new log is `Lsn(1)`. Nor is `Lsn(u64::MAX)` ([`Lsn::MAX`]),
/// so that the LSN after any record exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// "No record": below every record's LSN.
    pub const ZERO: Lsn = Lsn(0);
    /// The LSN of the first record of a new log.
    pub const FIRST: Lsn = Lsn(1);
    /// Above every record's LSN.
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// The LSN that follows this one ([`Lsn::MAX`] stays there).
    #[must_use]
    pub const fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }

    /// The LSN before this one (`Lsn::ZERO` stays zero).
    #[must_use]
    pub const fn prev(self) -> Lsn {
        Lsn(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A segment's sequence number within its log: 0 for the first segment, +1 for each next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

impl SegmentId {
    /// The segment that follows this one.
    #[must_use]
    pub const fn next(self) -> SegmentId {
        SegmentId(self.0.wrapping_add(1))
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
