//! The group-commit pipeline: a state machine that frames appends into the caller's buffer,
//! decides when a batch becomes a write and when a sync is due, and moves the durable LSN only
//! when a sync proves it. It does no I/O and reads no clock.
//!
//! Told things: [`Pipeline::append`], [`Pipeline::flush`], [`Pipeline::handle_completion`],
//! [`Pipeline::handle_timeout`]. Asked things: [`Pipeline::poll_io`], [`Pipeline::poll_event`],
//! [`Pipeline::poll_timeout`]. A driver loops: feed completions in, submit every request
//! `poll_io` gives, forward events, arm the timer.
//!
//! # The durability rule
//! Batches are written as they are cut, up to [`Config::max_writes_in_flight`] at once, completing
//! in any order. At most one sync is in flight. A sync covers exactly the writes whose completion
//! had been handled when it was issued (`fdatasync` does not cover a write still in progress), so
//! when it completes those writes are durable, and the durable LSN moves to the highest LSN below
//! which every write is durable. In [`Config::linked`] mode each write carries its own sync and
//! is durable when it completes.
//!
//! After any failed write, sync or create the pipeline is poisoned: it issues nothing more and
//! reports nothing more durable, whatever completes later.
//!
//! # Segments
//! When a frame would not fit in the segment (leaving room for a seal), a seal is framed first
//! and the segment is rolled: the next segment is created only once the seal is durable, and its
//! writes are issued only once its creation is durable in the namespace. So every segment but the
//! last ends with a durable seal.
//!
//! # Buffer
//! The buffer is a ring. A batch is a contiguous range of it; a frame never wraps. Bytes are
//! reused once their batch is durable.

use crate::io::Failure;
use crate::lsn::{Lsn, SegmentId};
use crate::record::{self, Kind, Seed};
use crate::segment::{self, SegmentHeader};
use core::fmt;
use core::ops::Range;
use heapless::Deque;

/// When a batch is cut and handed out as a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every record is its own batch.
    EveryRecord,
    /// A batch is cut once it holds `max_records` records or at least `max_bytes` bytes (so it
    /// may pass `max_bytes` by one frame), or `max_delay` nanoseconds after its first record was
    /// appended, whichever comes first.
    Batch {
        /// Records per batch at most (at least 1).
        max_records: u32,
        /// Bytes per batch at most.
        max_bytes: u32,
        /// Nanoseconds a record waits at most before its batch is cut.
        max_delay: u64,
    },
    /// Only [`Pipeline::flush`] cuts a batch (or a full buffer).
    Manual,
}

/// The pipeline's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// When batches are cut.
    pub policy: SyncPolicy,
    /// Writes in flight at most (at least 1, at most the pipeline's `SLOTS`).
    pub max_writes_in_flight: usize,
    /// Each write carries its own sync (linked write→fsync); no separate syncs are issued.
    pub linked: bool,
    /// A segment's size at most, header and seal included.
    pub segment_size: u64,
    /// The largest payload accepted.
    pub max_payload: u32,
    /// Random bits for the nonces of the segments this pipeline starts. Required (0 is refused):
    /// fresh randomness on every open, so that a segment re-created under the same sequence
    /// number (after a cut, or in a reused file) never has the seed of its earlier life, whose
    /// frames would then validate. The core has no source of randomness of its own.
    pub nonce_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: SyncPolicy::Batch {
                max_records: 1024,
                max_bytes: 64 * 1024,
                max_delay: 1_000_000,
            },
            max_writes_in_flight: 4,
            linked: false,
            segment_size: 64 * 1024 * 1024,
            max_payload: 1024 * 1024,
            nonce_seed: 0,
        }
    }
}

/// The last LSN an append may take: the few above it are kept for the seals of a roll and a
/// close, and [`Lsn::MAX`] is never a record's.
pub const LAST_APPENDABLE: Lsn = Lsn(u64::MAX - 4);

/// The largest offset a resumed segment may end at (2^62): beyond any real segment, and far
/// enough from `u64::MAX` that offset arithmetic cannot overflow.
pub const MAX_SEGMENT_OFFSET: u64 = 1 << 62;

/// Bytes of a seal frame (it has no payload).
pub const SEAL_LEN: usize = record::frame_len(0);

/// A configuration that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_writes_in_flight` is 0 or more than the pipeline's slots.
    WritesInFlight,
    /// The buffer cannot hold two of the largest frames.
    BufferTooSmall {
        /// Bytes it needs at least.
        needed: usize,
    },
    /// A segment cannot hold its header, the largest frame and a seal.
    SegmentTooSmall {
        /// Bytes it needs at least.
        needed: u64,
    },
    /// `max_payload` exceeds the format's limit.
    PayloadLimit,
    /// `nonce_seed` is 0: it must be fresh randomness.
    NonceSeed,
    /// A batch policy with `max_records == 0`.
    Policy,
    /// The position to resume from is not inside the segment.
    ResumePosition,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::WritesInFlight => f.write_str("max_writes_in_flight must be 1..=SLOTS"),
            ConfigError::BufferTooSmall { needed } => {
                write!(f, "write buffer too small: needs at least {needed} bytes")
            }
            ConfigError::SegmentTooSmall { needed } => {
                write!(f, "segment size too small: needs at least {needed} bytes")
            }
            ConfigError::PayloadLimit => write!(f, "max_payload exceeds {}", record::MAX_PAYLOAD),
            ConfigError::NonceSeed => {
                f.write_str("nonce_seed must be fresh randomness for every open, not 0")
            }
            ConfigError::Policy => f.write_str("a batch policy needs max_records >= 1"),
            ConfigError::ResumePosition => f.write_str("resume offset is outside the segment"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Why an append was refused. The record was not framed (a seal that rolled the segment may
/// have been).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendError {
    /// The payload exceeds [`Config::max_payload`].
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The buffer or the batch slots are full: drive I/O until writes complete, then retry.
    Full,
    /// The pipeline is poisoned by an earlier failure; reopen and recover.
    Poisoned(Poison),
    /// The log was closed.
    Closed,
    /// A seal is written by [`Pipeline::close`] and by roll-over, not appended.
    SealKind,
    /// The log has used up its LSNs ([`LAST_APPENDABLE`]).
    LsnExhausted,
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::TooLarge { len } => write!(f, "record of {len} bytes exceeds max_payload"),
            AppendError::Full => f.write_str("write buffer full: wait for writes to complete"),
            AppendError::Poisoned(p) => write!(f, "log poisoned by an earlier failure: {p}"),
            AppendError::Closed => f.write_str("log closed"),
            AppendError::SealKind => f.write_str("seal records cannot be appended"),
            AppendError::LsnExhausted => f.write_str("the log has used up its LSNs"),
        }
    }
}

impl core::error::Error for AppendError {}

/// The failure that poisoned the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poison {
    /// Which operation failed.
    pub op: OpKind,
    /// The segment it was on.
    pub segment: SegmentId,
    /// How it failed.
    pub failure: Failure,
}

impl fmt::Display for Poison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} of segment {} failed: {}",
            self.op, self.segment, self.failure
        )
    }
}

/// Which operation a request or a poison is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Creating a segment.
    Create,
    /// Making creates durable.
    SyncNamespace,
    /// A write.
    Write,
    /// A sync.
    Sync,
}

/// An I/O request for the driver to submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoRequest {
    /// Create `segment` with `header` at offset 0.
    Create {
        /// The token of its completion.
        token: u64,
        /// Which segment.
        segment: SegmentId,
        /// The header bytes.
        header: [u8; segment::HEADER_LEN],
    },
    /// Make completed creates durable.
    SyncNamespace {
        /// The token of its completion.
        token: u64,
    },
    /// Write the pipeline's bytes `range` ([`Pipeline::bytes`]) at `offset` of `segment`.
    Write {
        /// The token of its completion.
        token: u64,
        /// Which segment.
        segment: SegmentId,
        /// Byte offset in the segment.
        offset: u64,
        /// The range of the pipeline's buffer to write; unchanged until the completion.
        range: Range<usize>,
        /// A linked write→sync: durable on completion.
        sync: bool,
    },
    /// Sync `segment`.
    Sync {
        /// The token of its completion.
        token: u64,
        /// Which segment.
        segment: SegmentId,
    },
}

impl IoRequest {
    /// The token its completion must carry.
    #[must_use]
    pub fn token(&self) -> u64 {
        match self {
            IoRequest::Create { token, .. }
            | IoRequest::SyncNamespace { token }
            | IoRequest::Write { token, .. }
            | IoRequest::Sync { token, .. } => *token,
        }
    }
}

/// Something the pipeline reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Every record up to and including `upto` is durable.
    Durable {
        /// The durable LSN.
        upto: Lsn,
    },
    /// A segment was rolled: `to` is now being written.
    Rolled {
        /// The sealed segment.
        from: SegmentId,
        /// The new one.
        to: SegmentId,
    },
    /// The pipeline is poisoned; nothing more will be durable.
    Poisoned(Poison),
    /// [`Pipeline::close`] finished: the final seal is durable.
    Closed {
        /// The seal's LSN, the log's last.
        last: Lsn,
    },
}

/// A completion that does not match anything in flight: a driver bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCompletion {
    /// The token it carried.
    pub token: u64,
}

impl fmt::Display for UnknownCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "completion for unknown token {}", self.token)
    }
}

impl core::error::Error for UnknownCompletion {}

/// Where to resume a log that recovery scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The header of the last segment.
    pub header: SegmentHeader,
    /// Where its records end (the next frame's offset).
    pub offset: u64,
    /// The next LSN.
    pub next_lsn: Lsn,
    /// The epoch in force.
    pub epoch: u64,
    /// How the segment ends.
    pub tail: ResumeTail,
}

/// How the last segment of a recovered log ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResumeTail {
    /// Its records end cleanly at the resume offset: appends continue there.
    Open,
    /// A torn tail was cut at the resume offset: a seal is written there and the log continues
    /// in a new segment, so frames a crash left beyond the cut can never come back.
    Torn,
    /// It ends with a seal (the log was closed, or rolled before its successor was created):
    /// the log continues in a new segment.
    Sealed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Cut, waiting for its write to be issued.
    Queued,
    Writing,
    Written,
    /// Written, and a sync in flight covers it.
    Syncing,
    Durable,
}

#[derive(Clone, Debug)]
struct Slot {
    token: u64,
    segment: SegmentId,
    offset: u64,
    range: Range<usize>,
    last_lsn: Lsn,
    state: SlotState,
}

/// The state of the segment being appended to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SegState {
    /// Waiting for the previous segment's seal (if any) to be durable before creating this one.
    AwaitSeal { seal: Lsn },
    /// The create is in flight.
    Creating { token: u64 },
    /// Created; the namespace sync is due.
    Created,
    /// The namespace sync is in flight.
    SyncingNamespace { token: u64 },
    /// Writes may be issued.
    Ready,
}

/// The sync that makes a recovered segment's records durable before anything builds on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecoverySync {
    Due {
        segment: SegmentId,
        durable: Lsn,
    },
    InFlight {
        token: u64,
        segment: SegmentId,
        durable: Lsn,
    },
    Done,
}

/// Where a requested close stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    Open,
    /// Waiting for everything appended to be durable before the seal is framed.
    Requested,
    /// The final seal is framed.
    Sealed(Lsn),
    Reported,
}

/// The group-commit pipeline over a caller's buffer, with `SLOTS` batches at most between being
/// cut and being durable. See the module documentation.
pub struct Pipeline<'b, const SLOTS: usize> {
    buf: &'b mut [u8],
    config: Config,
    /// Batches cut and not yet durable, oldest first.
    slots: Deque<Slot, SLOTS>,
    /// Where the open batch starts and where the next frame goes, in `buf`.
    batch_start: usize,
    head: usize,
    batch_records: u32,
    batch_deadline: Option<u64>,
    flush_wanted: bool,

    /// The segment being appended to and where its next frame goes.
    header: SegmentHeader,
    seed: Seed,
    seg_offset: u64,
    seg_state: SegState,
    /// The segment whose batches are still being written while `header` is already its
    /// successor.
    rolled_from: Option<SegmentId>,
    recovery: RecoverySync,
    epoch: u64,

    next_lsn: Lsn,
    durable: Lsn,
    durable_reported: Lsn,
    sync_token: Option<u64>,
    writes_in_flight: usize,
    next_token: u64,

    poison: Option<Poison>,
    poison_reported: bool,
    closing: Closing,
    /// A roll to report once the new segment is ready.
    rolled: Option<(SegmentId, SegmentId)>,
    rolled_ready: bool,
}

impl<'b, const SLOTS: usize> Pipeline<'b, SLOTS> {
    /// A pipeline for a new log whose first segment has `header` (its `first_lsn` is the first
    /// LSN appended). The first request is that segment's creation.
    ///
    /// # Errors
    /// [`ConfigError`] when the buffer, segment size or limits cannot work together.
    pub fn create(
        buf: &'b mut [u8],
        config: Config,
        header: SegmentHeader,
    ) -> Result<Self, ConfigError> {
        let mut p = Self::new(
            buf,
            config,
            header,
            segment::HEADER_LEN as u64,
            header.first_lsn,
        )?;
        p.seg_state = SegState::AwaitSeal { seal: Lsn::ZERO };
        Ok(p)
    }

    /// A pipeline that continues a recovered log. The first request syncs the recovered
    /// segment, so that what recovery found is durable before anything is built on it; with
    /// [`ResumeTail::Torn`] a seal is written at the cut next and the log continues in a new
    /// segment.
    ///
    /// # Errors
    /// [`ConfigError`] as for [`Self::create`], or when the offset is outside the segment.
    pub fn resume(buf: &'b mut [u8], config: Config, resume: Resume) -> Result<Self, ConfigError> {
        // A segment written under a larger `segment_size` may already be past this one's: the
        // next append then rolls at once.
        if resume.offset < segment::HEADER_LEN as u64
            || !resume.offset.is_multiple_of(record::ALIGN as u64)
            || resume.offset > MAX_SEGMENT_OFFSET
        {
            return Err(ConfigError::ResumePosition);
        }
        let mut p = Self::new(buf, config, resume.header, resume.offset, resume.next_lsn)?;
        p.epoch = resume.epoch;
        // Nothing is durable until the recovery sync says so.
        p.durable = Lsn::ZERO;
        p.durable_reported = Lsn::ZERO;
        p.recovery = RecoverySync::Due {
            segment: resume.header.sequence,
            durable: resume.next_lsn.prev(),
        };
        match resume.tail {
            ResumeTail::Open => {}
            // The seal's watermark claims the recovered records durable: true once the recovery
            // sync completes, and no write is issued before it does.
            ResumeTail::Torn => p.roll(resume.next_lsn.prev()),
            ResumeTail::Sealed => p.start_successor(Lsn::ZERO),
        }
        Ok(p)
    }

    fn new(
        buf: &'b mut [u8],
        config: Config,
        header: SegmentHeader,
        seg_offset: u64,
        next_lsn: Lsn,
    ) -> Result<Self, ConfigError> {
        if next_lsn == Lsn::ZERO
            || next_lsn == Lsn::MAX
            || header.first_lsn == Lsn::ZERO
            || header.first_lsn == Lsn::MAX
        {
            return Err(ConfigError::ResumePosition);
        }
        if config.nonce_seed == 0 {
            return Err(ConfigError::NonceSeed);
        }
        if config.max_writes_in_flight == 0 || config.max_writes_in_flight > SLOTS {
            return Err(ConfigError::WritesInFlight);
        }
        if config.max_payload > record::MAX_PAYLOAD {
            return Err(ConfigError::PayloadLimit);
        }
        if let SyncPolicy::Batch { max_records: 0, .. } = config.policy {
            return Err(ConfigError::Policy);
        }
        let largest = record::frame_len(config.max_payload as usize);
        if buf.len() < 2 * largest + 2 * SEAL_LEN {
            return Err(ConfigError::BufferTooSmall {
                needed: 2 * largest + 2 * SEAL_LEN,
            });
        }
        let needed = (segment::HEADER_LEN + largest + SEAL_LEN) as u64;
        if config.segment_size < needed {
            return Err(ConfigError::SegmentTooSmall { needed });
        }
        Ok(Pipeline {
            buf,
            config,
            slots: Deque::new(),
            batch_start: 0,
            head: 0,
            batch_records: 0,
            batch_deadline: None,
            flush_wanted: false,
            seed: header.seed(),
            header,
            seg_offset,
            seg_state: SegState::Ready,
            rolled_from: None,
            recovery: RecoverySync::Done,
            epoch: header.epoch,
            next_lsn,
            durable: next_lsn.prev(),
            durable_reported: next_lsn.prev(),
            sync_token: None,
            writes_in_flight: 0,
            next_token: 1,
            poison: None,
            poison_reported: false,
            closing: Closing::Open,
            rolled: None,
            rolled_ready: false,
        })
    }

    /// Frames a data record and returns its LSN. No I/O, no allocation: the record is in the
    /// buffer and goes out with its batch. It is durable once [`Event::Durable`] reaches its LSN.
    ///
    /// # Errors
    /// [`AppendError`]; nothing is framed then.
    pub fn append(&mut self, payload: &[u8], now: u64) -> Result<Lsn, AppendError> {
        self.append_kind(Kind::Data, payload, now)
    }

    /// Frames an epoch marker: records after it belong to `epoch`, and so do segments started
    /// after it.
    ///
    /// # Errors
    /// [`AppendError`]; nothing is framed then.
    pub fn append_epoch(&mut self, epoch: u64, now: u64) -> Result<Lsn, AppendError> {
        let lsn = self.append_kind(Kind::Epoch, &epoch.to_le_bytes(), now)?;
        self.epoch = epoch;
        Ok(lsn)
    }

    /// Frames a record of any kind but [`Kind::Seal`].
    ///
    /// # Errors
    /// [`AppendError`]; nothing is framed then.
    pub fn append_kind(
        &mut self,
        kind: Kind,
        payload: &[u8],
        now: u64,
    ) -> Result<Lsn, AppendError> {
        if let Some(p) = self.poison {
            return Err(AppendError::Poisoned(p));
        }
        if self.closing != Closing::Open {
            return Err(AppendError::Closed);
        }
        if kind == Kind::Seal {
            return Err(AppendError::SealKind);
        }
        if payload.len() > self.config.max_payload as usize {
            return Err(AppendError::TooLarge { len: payload.len() });
        }
        let len = record::frame_len(payload.len());
        if self.next_lsn > LAST_APPENDABLE {
            return Err(AppendError::LsnExhausted);
        }
        if self.seg_offset.saturating_add((len + SEAL_LEN) as u64) > self.config.segment_size {
            // Room for the seal is always kept, so the seal fits here; the record goes into the
            // next segment.
            // One roll at a time: the successor must be created (durably) before it is rolled.
            if !self.can_roll() || !self.has_room(SEAL_LEN) || !self.can_cut() {
                return Err(self.full());
            }
            self.roll(self.durable);
        }
        if !self.has_room(len) {
            return Err(self.full());
        }
        let lsn = self
            .frame(kind, payload, self.durable)
            .ok_or(AppendError::LsnExhausted)?;
        if self.batch_records == 1
            && let SyncPolicy::Batch { max_delay, .. } = self.config.policy
        {
            self.batch_deadline = Some(now.saturating_add(max_delay));
        }
        self.cut_if_due();
        Ok(lsn)
    }

    /// The answer to an append that finds no room: the open batch is cut (whatever the policy),
    /// so that writing it frees the room.
    fn full(&mut self) -> AppendError {
        self.flush();
        AppendError::Full
    }

    /// Cuts the open batch now (or as soon as a slot frees), so that everything appended so far
    /// is written and synced.
    pub fn flush(&mut self) {
        if self.head != self.batch_start {
            self.flush_wanted = true;
            self.cut_if_due();
        }
    }

    /// Seals the log: once everything appended is durable, a seal record that vouches for all of
    /// it is written; [`Event::Closed`] follows once the seal is durable. Appends fail with
    /// [`AppendError::Closed`] from now on.
    ///
    /// # Errors
    /// [`AppendError::Poisoned`].
    pub fn close(&mut self) -> Result<(), AppendError> {
        if let Some(p) = self.poison {
            return Err(AppendError::Poisoned(p));
        }
        if self.closing == Closing::Open {
            self.closing = Closing::Requested;
            self.flush();
        }
        Ok(())
    }

    /// Frames the final seal once every record before it is durable, so it vouches for all.
    fn seal_if_closing(&mut self) {
        if self.closing == Closing::Requested
            && self.slots.is_empty()
            && self.head == self.batch_start
            && self.durable == self.next_lsn.prev()
            && self.has_room(SEAL_LEN)
            && let Some(last) = self.frame(Kind::Seal, &[], self.durable)
        {
            self.closing = Closing::Sealed(last);
            self.flush_wanted = true;
        }
    }

    /// The next I/O request to submit, if any. Call again after:
    /// * a request: at once, until `None`;
    /// * `None`: after [`Self::handle_completion`], [`Self::append`], [`Self::flush`],
    ///   [`Self::handle_timeout`].
    #[must_use]
    pub fn poll_io(&mut self) -> Option<IoRequest> {
        if self.poison.is_some() {
            return None;
        }
        self.seal_if_closing();
        self.cut_if_due();
        match self.recovery {
            RecoverySync::Due { segment, durable } => {
                let token = self.token();
                self.recovery = RecoverySync::InFlight {
                    token,
                    segment,
                    durable,
                };
                return Some(IoRequest::Sync { token, segment });
            }
            RecoverySync::InFlight { .. } => return None,
            RecoverySync::Done => {}
        }
        match self.seg_state {
            SegState::AwaitSeal { seal } if self.durable >= seal && self.rolled_from.is_none() => {
                let token = self.token();
                self.seg_state = SegState::Creating { token };
                return Some(IoRequest::Create {
                    token,
                    segment: self.header.sequence,
                    header: self.header.emit(),
                });
            }
            SegState::Created => {
                let token = self.token();
                self.seg_state = SegState::SyncingNamespace { token };
                return Some(IoRequest::SyncNamespace { token });
            }
            _ => {}
        }
        if let Some(req) = self.next_write() {
            return Some(req);
        }
        self.next_sync()
    }

    fn next_write(&mut self) -> Option<IoRequest> {
        if self.writes_in_flight >= self.config.max_writes_in_flight {
            return None;
        }
        let ready_segment = match (self.seg_state, self.rolled_from) {
            (_, Some(old)) => Some(old),
            (SegState::Ready, None) => Some(self.header.sequence),
            _ => None,
        }?;
        let linked = self.config.linked;
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.state == SlotState::Queued && s.segment == ready_segment)?;
        slot.state = SlotState::Writing;
        self.writes_in_flight += 1;
        Some(IoRequest::Write {
            token: slot.token,
            segment: slot.segment,
            offset: slot.offset,
            range: slot.range.clone(),
            sync: linked,
        })
    }

    fn next_sync(&mut self) -> Option<IoRequest> {
        if self.config.linked || self.sync_token.is_some() {
            return None;
        }
        let segment = self
            .slots
            .iter()
            .find(|s| s.state == SlotState::Written)?
            .segment;
        let token = self.token();
        // A sync covers one segment's writes (fdatasync is per file), so only those.
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.state == SlotState::Written && s.segment == segment)
        {
            slot.state = SlotState::Syncing;
        }
        self.sync_token = Some(token);
        Some(IoRequest::Sync { token, segment })
    }

    /// The bytes of a write request's range.
    #[must_use]
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or(&[])
    }

    /// Reports the end of a request. A failure poisons the pipeline.
    ///
    /// # Errors
    /// [`UnknownCompletion`] when `token` matches nothing in flight (a driver bug); the state is
    /// unchanged.
    pub fn handle_completion(
        &mut self,
        token: u64,
        result: Result<(), Failure>,
    ) -> Result<(), UnknownCompletion> {
        let (op, segment) = self
            .complete(token, result.is_ok())
            .ok_or(UnknownCompletion { token })?;
        if let Err(failure) = result {
            if self.poison.is_none() {
                self.poison = Some(Poison {
                    op,
                    segment,
                    failure,
                });
            }
            return Ok(());
        }
        if self.poison.is_some() {
            // Nothing is durable after a failure, whatever completes.
            return Ok(());
        }
        if op == OpKind::SyncNamespace {
            self.rolled_ready = self.rolled.is_some();
        }
        self.advance_durable();
        self.seal_if_closing();
        Ok(())
    }

    /// Marks the request `token` as ended (successfully when `ok`, and only if nothing failed
    /// before) and says what it was. A token is known once: its state moves on here.
    fn complete(&mut self, token: u64, ok: bool) -> Option<(OpKind, SegmentId)> {
        let ok = ok && self.poison.is_none();
        match self.seg_state {
            SegState::Creating { token: t } if t == token => {
                self.seg_state = SegState::Created;
                return Some((OpKind::Create, self.header.sequence));
            }
            SegState::SyncingNamespace { token: t } if t == token => {
                self.seg_state = SegState::Ready;
                return Some((OpKind::SyncNamespace, self.header.sequence));
            }
            _ => {}
        }
        if let RecoverySync::InFlight {
            token: t,
            segment,
            durable,
        } = self.recovery
            && t == token
        {
            self.recovery = RecoverySync::Done;
            if ok {
                // The recovered records are durable now.
                self.durable = self.durable.max(durable);
            }
            return Some((OpKind::Sync, segment));
        }
        if self.sync_token == Some(token) {
            self.sync_token = None;
            let mut segment = self.header.sequence;
            for slot in self
                .slots
                .iter_mut()
                .filter(|s| s.state == SlotState::Syncing)
            {
                segment = slot.segment;
                slot.state = if ok {
                    SlotState::Durable
                } else {
                    SlotState::Written
                };
            }
            return Some((OpKind::Sync, segment));
        }
        let linked = self.config.linked;
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.token == token && s.state == SlotState::Writing)?;
        slot.state = if linked && ok {
            SlotState::Durable
        } else {
            SlotState::Written
        };
        self.writes_in_flight -= 1;
        Some((OpKind::Write, slot.segment))
    }

    /// Moves the durable LSN over the durable prefix of the slots and frees their bytes.
    fn advance_durable(&mut self) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.state == SlotState::Durable)
        {
            if let Some(slot) = self.slots.pop_front() {
                self.durable = slot.last_lsn;
                if self.rolled_from == Some(slot.segment)
                    && !self.slots.iter().any(|s| s.segment == slot.segment)
                {
                    // The old segment is complete; its successor can be created.
                    self.rolled_from = None;
                }
            }
        }
        if self.slots.is_empty() && self.head == self.batch_start {
            // Nothing in use: start the ring over, so batches stay long.
            self.head = 0;
            self.batch_start = 0;
        }
    }

    /// The next thing to report, if any. Call again after:
    /// * an event: at once, until `None`;
    /// * `None`: after [`Self::handle_completion`].
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        // Durability proven before a failure is still reported, first.
        if self.durable > self.durable_reported {
            self.durable_reported = self.durable;
            return Some(Event::Durable { upto: self.durable });
        }
        if let Some(p) = self.poison {
            if !self.poison_reported {
                self.poison_reported = true;
                return Some(Event::Poisoned(p));
            }
            return None;
        }
        if self.rolled_ready {
            self.rolled_ready = false;
            if let Some((from, to)) = self.rolled.take() {
                return Some(Event::Rolled { from, to });
            }
        }
        if let Closing::Sealed(last) = self.closing
            && self.durable >= last
        {
            self.closing = Closing::Reported;
            return Some(Event::Closed { last });
        }
        None
    }

    /// When [`Self::handle_timeout`] is next due, if a batch is waiting on its delay. Call again
    /// after:
    /// * [`Self::append`] (a batch may have started) and [`Self::handle_timeout`];
    /// * anything that cuts a batch ([`Self::flush`], [`Self::handle_completion`]).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.batch_deadline
    }

    /// Tells the pipeline the time; a batch whose delay has passed is cut.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.batch_deadline.is_some_and(|d| now >= d) {
            // The cut happens now, or as soon as a slot frees: the deadline is spent either way.
            self.batch_deadline = None;
            self.flush();
        }
    }

    /// Every record up to this LSN is durable.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// The LSN the next record is framed with. An append that rolls the segment over gives this
    /// LSN to the seal and takes the one after: use the LSN `append` returns.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The segment being appended to.
    #[must_use]
    pub fn segment(&self) -> &SegmentHeader {
        &self.header
    }

    /// The failure that poisoned the pipeline, if one did.
    #[must_use]
    pub fn poisoned(&self) -> Option<Poison> {
        self.poison
    }

    /// Whether the pipeline has I/O to request or completions to wait for: a cut batch not yet
    /// durable, a sync, a segment being created, the recovery sync. While it is `false` only an
    /// open batch (not cut yet) may be waiting, and a driver can skip its round of `poll_io`,
    /// completions and events until the next append, flush or timeout.
    #[must_use]
    pub fn io_pending(&self) -> bool {
        !self.slots.is_empty()
            || self.sync_token.is_some()
            || self.recovery != RecoverySync::Done
            || !matches!(self.seg_state, SegState::Ready)
    }

    /// Whether nothing is waiting: every appended record is durable and no request is in flight.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.slots.is_empty()
            && self.head == self.batch_start
            && self.sync_token.is_none()
            && self.recovery == RecoverySync::Done
            && matches!(self.seg_state, SegState::Ready)
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Frames a record at `head` (room checked by the caller) and returns its LSN; `None`, with
    /// nothing framed, only when the LSN space is used up.
    fn frame(&mut self, kind: Kind, payload: &[u8], watermark: Lsn) -> Option<Lsn> {
        let lsn = self.next_lsn;
        let watermark = watermark.min(lsn.prev());
        let out = self.buf.get_mut(self.head..).unwrap_or(&mut []);
        let len = record::encode(out, &self.seed, lsn, watermark, kind, payload).ok()?;
        self.head += len;
        self.seg_offset = self.seg_offset.saturating_add(len as u64);
        self.batch_records += 1;
        self.next_lsn = lsn.next();
        Some(lsn)
    }

    /// Seals the current segment at its end and switches appends to its successor.
    fn roll(&mut self, watermark: Lsn) {
        self.flush_wanted = false;
        // Appends stop short of the LSN space's end so that a seal always has its LSN.
        let Some(seal) = self.frame(Kind::Seal, &[], watermark) else {
            return;
        };
        self.cut();
        self.rolled_from = Some(self.header.sequence);
        self.start_successor(seal);
    }

    /// Switches appends to the successor of the current segment, created once `seal` is durable.
    fn start_successor(&mut self, seal: Lsn) {
        let old = self.header.sequence;
        // Everything that tells this segment's life from an earlier one with the same sequence
        // goes in: the open's random seed, the predecessor's nonce, where the segment starts.
        let nonce = splitmix(
            self.config.nonce_seed
                ^ splitmix(self.header.nonce ^ self.next_lsn.0.rotate_left(17))
                ^ old.next().0.rotate_left(32),
        );
        self.header = self.header.successor(nonce, self.next_lsn, self.epoch);
        self.seed = self.header.seed();
        self.seg_offset = segment::HEADER_LEN as u64;
        self.rolled = Some((old, self.header.sequence));
        self.seg_state = SegState::AwaitSeal { seal };
    }

    fn can_roll(&self) -> bool {
        self.seg_state == SegState::Ready
            && self.rolled_from.is_none()
            && self.recovery == RecoverySync::Done
    }

    fn can_cut(&self) -> bool {
        !self.slots.is_full()
    }

    fn cut_if_due(&mut self) {
        if self.head == self.batch_start || !self.can_cut() {
            return;
        }
        let due = self.flush_wanted
            || match self.config.policy {
                SyncPolicy::EveryRecord => true,
                SyncPolicy::Batch {
                    max_records,
                    max_bytes,
                    ..
                } => {
                    self.batch_records >= max_records
                        || (self.head - self.batch_start) as u64 >= u64::from(max_bytes)
                }
                SyncPolicy::Manual => false,
            };
        if due {
            self.cut();
        }
    }

    /// Hands the open batch out as a slot (a free slot was checked by the caller).
    fn cut(&mut self) {
        if self.head == self.batch_start {
            return;
        }
        let len = (self.head - self.batch_start) as u64;
        let slot = Slot {
            token: self.next_token,
            segment: self.header.sequence,
            offset: self.seg_offset - len,
            range: self.batch_start..self.head,
            last_lsn: self.next_lsn.prev(),
            state: SlotState::Queued,
        };
        if self.slots.push_back(slot).is_ok() {
            self.next_token += 1;
            self.batch_start = self.head;
            self.batch_records = 0;
            self.batch_deadline = None;
            self.flush_wanted = false;
        }
    }

    /// Whether `len` contiguous bytes can be framed at `head`, moving `head` to the ring's start
    /// (after cutting the open batch, which must stay contiguous) when the end has no room.
    fn has_room(&mut self, len: usize) -> bool {
        let tail = self
            .slots
            .front()
            .map_or(self.batch_start, |s| s.range.start);
        let in_use = !self.slots.is_empty() || self.head != self.batch_start;
        if !in_use {
            self.head = 0;
            self.batch_start = 0;
            return len <= self.buf.len();
        }
        if self.head >= tail {
            // In use: tail..head. Room at the end, or at the start before tail.
            if self.head + len <= self.buf.len() {
                return true;
            }
            if len >= tail {
                return false;
            }
            if self.head != self.batch_start {
                if !self.can_cut() {
                    return false;
                }
                self.cut();
            }
            self.head = 0;
            self.batch_start = 0;
            true
        } else {
            // Wrapped: in use tail..end and 0..head; room between head and tail.
            self.head + len < tail
        }
    }
}

/// A 64-bit mixer (SplitMix64's finaliser): distinct inputs give well-spread nonces.
const fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
