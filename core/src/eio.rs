//! An adapter over `embedded-io`: a device with its own driver (flash behind a translation layer,
//! an SD card, EEPROM) runs the log, blocking, with `flush` as the durability point.
//!
//! [`EioStorage`] implements [`SegmentStorage`] over `N` *partitions*, each a device that is
//! `embedded_io::Read + Write + Seek`, each holding at most one segment. [`EioLog`] bundles the
//! storage with a [`Pipeline`] into a blocking writer (`open` recovers, `append`, `sync`, `close`);
//! [`EioStorage::read_from`] and [`EioLog::read_from`] read records back from an LSN.
//!
//! # How segments map to partitions
//! A flash device has a fixed set of partitions, so the log is a ring over them. A segment lives
//! in whichever partition it was created in, and **the segment header at offset 0 is the only
//! record of which segment a partition holds** (its sequence field is the segment id). There is
//! no separate table of names to keep consistent with the data:
//! * `Create` takes a free partition (the first free one after the partition of the newest
//!   segment, so partitions are used round the ring and wear evenly), writes the header at 0 and
//!   flushes. A free partition is one whose header bytes are all `0x00` (deleted) or all `0xFF`
//!   (erased NOR/NAND flash, never used).
//! * `Delete` writes zeros over the header and flushes (on NOR flash, programming zeros needs no
//!   erase). The records behind the header stay as they are.
//! * `list` reads every partition's header ([`EioStorage::scan`]).
//!
//! So `SyncNamespace` completes at once and does nothing: the header write and its flush *are*
//! the namespace record, durable when `Create` or `Delete` completes, which is stronger than the
//! contract asks (durable after the next `SyncNamespace`). A file system needs the directory
//! fsync because a file's name lives apart from its data; here it does not.
//!
//! A partition is reused without being cleared: the stale records of its previous segment stay
//! behind the new header. They can never be read as records of the new segment, because every
//! frame checksum is seeded with the segment's log id, sequence and nonce (see
//! [`crate::record`]): the decoder sees a frame that does not validate and ends the segment
//! cleanly there, exactly as for a recycled file. This needs fresh randomness in
//! [`Config::nonce_seed`] on every open, which the pipeline requires anyway. (The `io` contract
//! allows stale bytes after a new header for this reason; it saves rewriting a whole partition per
//! segment.)
//!
//! A partition whose header is neither valid nor blank (data that is not a lamina segment, or a
//! header torn by a power cut inside a flush) cannot be named, so `list` fails with
//! [`EioError::Unidentified`] rather than guess: a guess could hide a segment that holds
//! acknowledged records. [`EioStorage::erase`] clears such a partition once someone has looked.
//! Two partitions claiming the same segment fail with [`EioError::Duplicate`]. A `Create` whose
//! header write or flush fails zeroes the header again (best effort), so that a failed create
//! does not leave such a partition behind.
//!
//! # Operations
//! Every operation runs to its end inside [`SegmentStorage::submit`] (seek, then `write` in a
//! loop that finishes short writes; `Sync` is `flush`, on the segment's partition only) and its
//! completion waits in a queue of `Q` entries for [`SegmentStorage::poll_completion`]. `Q` must
//! cover what a driver submits before it polls: for [`crate::drive`] and a `Pipeline<SLOTS>`,
//! `SLOTS + 2`. A failed operation is reported once and never retried; the pipeline is poisoned
//! by it. `Interrupted` is not retried either: whether the device wrote anything is unknown.
//!
//! # What the device must do, and the limits
//! * `flush` returns only once every byte written to the partition before it survives a power
//!   cut; reads return what was written, flushed or not.
//! * A power cut *inside* a flush may persist any part of what it was flushing: records are
//!   protected by the decoder's torn-tail rules, but a header torn that way makes its partition
//!   [`EioError::Unidentified`], and the log refuses to open until it is erased (a clear error,
//!   never a silent loss). A device that flushes atomically (the test model) never tears one.
//! * After a failed flush the log is poisoned. Reopening without a power cut reads what the
//!   device still holds and recovery makes it durable with a new flush. That is right for a
//!   device whose failed flush leaves the bytes pending; a device that drops them but keeps
//!   returning them on reads would make recovery trust data that is not stored.
//!
//! # Errors
//! [`EioError`] keeps the device error's [`ErrorKind`] and says which partition and which device
//! call failed. [`EioError::failure`](crate::io::Error::failure) maps it for the log:
//!
//! | device `ErrorKind` or adapter error            | [`Failure`]     |
//! |------------------------------------------------|-----------------|
//! | `OutOfMemory`, `WriteZero`                     | `NoSpace`       |
//! | `write` accepting 0 bytes, [`EioError::PastEnd`], [`EioError::NoFreePartition`] | `NoSpace` |
//! | `NotFound`, [`EioError::NotFound`]             | `NotFound`      |
//! | `AlreadyExists`, [`EioError::Exists`]          | `AlreadyExists` |
//! | `Unsupported`                                  | `Unsupported`   |
//! | `InvalidInput`, and the adapter's other errors | `Other`         |
//! | every other kind (`Other`, `Interrupted`, `TimedOut`, `InvalidData`, ...) | `Io` |
//!
//! `embedded-io` has no "storage full" kind (`std`'s `StorageFull` converts to `Other`), so a
//! driver should report a full device as `WriteZero` or `OutOfMemory` to be seen as `NoSpace`.

use crate::commit::{AppendError, Config, ConfigError, Event, Pipeline, Poison};
use crate::decode::{Decoded, End, Mode, Record, SegmentDecoder};
use crate::drive;
use crate::io::{self, Completion, Failure, SegmentOp, SegmentStorage};
use crate::lsn::{Lsn, SegmentId};
use crate::recover::{self, Damage, DamageReport, RecoverError, RecoveryReport, Replay};
use crate::segment::{self, HeaderError, SegmentHeader};
use core::fmt;
use embedded_io::{ErrorKind, Read, Seek, SeekFrom, Write};
use heapless::Deque;

/// Which device call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceOp {
    /// `Seek::seek`.
    Seek,
    /// `Read::read`.
    Read,
    /// `Write::write`.
    Write,
    /// `Write::flush`.
    Flush,
}

/// What went wrong in [`EioStorage`]. See the module documentation for the [`Failure`] each maps
/// to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EioError {
    /// A device call returned an error.
    Device {
        /// The partition.
        partition: usize,
        /// The call.
        op: DeviceOp,
        /// The error's kind.
        kind: ErrorKind,
    },
    /// `write` accepted no bytes of a non-empty buffer (a driver should return a `WriteZero`
    /// error instead; taken as a full device).
    WriteZero {
        /// The partition.
        partition: usize,
    },
    /// `seek` landed elsewhere than asked.
    SeekMismatch {
        /// The partition.
        partition: usize,
        /// The position asked for.
        wanted: u64,
        /// The position reported.
        got: u64,
    },
    /// Every partition holds a segment: delete old segments ([`EioStorage::delete_before`]).
    NoFreePartition,
    /// No partition holds this segment.
    NotFound {
        /// The segment.
        segment: SegmentId,
    },
    /// A partition holds this segment already.
    Exists {
        /// The segment.
        segment: SegmentId,
        /// Its partition.
        partition: usize,
    },
    /// A write would go past the end of the partition (the segment size exceeds the partition).
    PastEnd {
        /// The segment.
        segment: SegmentId,
        /// The partition.
        partition: usize,
        /// Where the write would end.
        end: u64,
        /// The partition's size.
        size: u64,
    },
    /// A partition cannot hold a segment header.
    PartitionTooSmall {
        /// The partition.
        partition: usize,
        /// Its size.
        size: u64,
    },
    /// A partition's header is neither a valid segment header nor blank, so which segment it
    /// holds, if any, is unknown. See [`EioStorage::erase`].
    Unidentified {
        /// The partition.
        partition: usize,
        /// Why the header does not parse.
        error: HeaderError,
    },
    /// Two partitions hold the same segment.
    Duplicate {
        /// The segment.
        segment: SegmentId,
        /// The two partitions.
        partitions: [usize; 2],
    },
    /// `Create` was given bytes that are not a segment header of that segment.
    BadHeader {
        /// The segment.
        segment: SegmentId,
    },
    /// The completion queue is full: poll completions before submitting more.
    QueueFull,
    /// No partition has this index.
    NoPartition {
        /// The index.
        partition: usize,
    },
}

impl EioError {
    /// The device error's kind, when a device call failed.
    #[must_use]
    pub fn device_kind(&self) -> Option<ErrorKind> {
        match self {
            EioError::Device { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl io::Error for EioError {
    fn failure(&self) -> Failure {
        match self {
            EioError::Device { kind, .. } => match kind {
                ErrorKind::OutOfMemory | ErrorKind::WriteZero => Failure::NoSpace,
                ErrorKind::NotFound => Failure::NotFound,
                ErrorKind::AlreadyExists => Failure::AlreadyExists,
                ErrorKind::Unsupported => Failure::Unsupported,
                ErrorKind::InvalidInput => Failure::Other,
                _ => Failure::Io,
            },
            EioError::WriteZero { .. } | EioError::PastEnd { .. } | EioError::NoFreePartition => {
                Failure::NoSpace
            }
            EioError::NotFound { .. } => Failure::NotFound,
            EioError::Exists { .. } => Failure::AlreadyExists,
            EioError::SeekMismatch { .. }
            | EioError::PartitionTooSmall { .. }
            | EioError::Unidentified { .. }
            | EioError::Duplicate { .. }
            | EioError::BadHeader { .. }
            | EioError::QueueFull
            | EioError::NoPartition { .. } => Failure::Other,
        }
    }
}

impl fmt::Display for EioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EioError::Device {
                partition,
                op,
                kind,
            } => write!(f, "partition {partition}: {op:?} failed: {kind:?}"),
            EioError::WriteZero { partition } => {
                write!(f, "partition {partition}: write accepted no bytes")
            }
            EioError::SeekMismatch {
                partition,
                wanted,
                got,
            } => write!(f, "partition {partition}: seek to {wanted} landed at {got}"),
            EioError::NoFreePartition => {
                f.write_str("no free partition: every partition holds a segment")
            }
            EioError::NotFound { segment } => write!(f, "segment {segment} is in no partition"),
            EioError::Exists { segment, partition } => {
                write!(
                    f,
                    "segment {segment} exists already in partition {partition}"
                )
            }
            EioError::PastEnd {
                segment,
                partition,
                end,
                size,
            } => write!(
                f,
                "segment {segment}: write up to {end} exceeds partition {partition} of {size} bytes"
            ),
            EioError::PartitionTooSmall { partition, size } => write!(
                f,
                "partition {partition} of {size} bytes cannot hold a segment header"
            ),
            EioError::Unidentified { partition, error } => write!(
                f,
                "partition {partition} holds no recognisable segment header ({error}); \
                 erase it once its contents are known to be unneeded"
            ),
            EioError::Duplicate {
                segment,
                partitions: [a, b],
            } => write!(f, "segment {segment} is in partitions {a} and {b}"),
            EioError::BadHeader { segment } => {
                write!(f, "create of segment {segment} got an invalid header")
            }
            EioError::QueueFull => f.write_str("completion queue full"),
            EioError::NoPartition { partition } => write!(f, "no partition {partition}"),
        }
    }
}

impl core::error::Error for EioError {}

/// The log's segments on `N` partitions, each an `embedded-io` device; `Q` completions wait at
/// most. See the module documentation.
pub struct EioStorage<D, const N: usize, const Q: usize = 16> {
    devices: [D; N],
    /// The header of the segment each partition holds (`None`: free). Valid once `scanned`.
    table: [Option<SegmentHeader>; N],
    sizes: [u64; N],
    scanned: bool,
    completions: Deque<Completion<EioError>, Q>,
    last_error: Option<EioError>,
}

impl<D, const N: usize, const Q: usize> EioStorage<D, N, Q>
where
    D: Read + Write + Seek,
{
    /// Storage over these partitions. No I/O until the first operation (or [`Self::scan`]).
    #[must_use]
    pub fn new(devices: [D; N]) -> Self {
        EioStorage {
            devices,
            table: [None; N],
            sizes: [0; N],
            scanned: false,
            completions: Deque::new(),
            last_error: None,
        }
    }

    /// Reads every partition's size and header, and learns which segment each holds.
    ///
    /// # Errors
    /// A device error, [`EioError::PartitionTooSmall`], [`EioError::Unidentified`] or
    /// [`EioError::Duplicate`]; the storage then knows nothing and scans again next time.
    pub fn scan(&mut self) -> Result<(), EioError> {
        self.scanned = false;
        let result = self.scan_inner();
        self.note(result)
    }

    fn scan_inner(&mut self) -> Result<(), EioError> {
        for (partition, ((dev, slot), size)) in self
            .devices
            .iter_mut()
            .zip(self.table.iter_mut())
            .zip(self.sizes.iter_mut())
            .enumerate()
        {
            *size = dev
                .seek(SeekFrom::End(0))
                .map_err(device(partition, DeviceOp::Seek))?;
            if *size < segment::HEADER_LEN as u64 {
                return Err(EioError::PartitionTooSmall {
                    partition,
                    size: *size,
                });
            }
            let mut bytes = [0u8; segment::HEADER_LEN];
            let n = read_full(dev, partition, 0, &mut bytes)?;
            let bytes = bytes.get(..n).unwrap_or(&[]);
            *slot = if n == segment::HEADER_LEN
                && (bytes.iter().all(|b| *b == 0) || bytes.iter().all(|b| *b == 0xFF))
            {
                None
            } else {
                Some(
                    SegmentHeader::parse(bytes)
                        .map_err(|error| EioError::Unidentified { partition, error })?,
                )
            };
        }
        for (a, ha) in self.table.iter().enumerate() {
            for (b, hb) in self.table.iter().enumerate().skip(a + 1) {
                if let (Some(ha), Some(hb)) = (ha, hb)
                    && ha.sequence == hb.sequence
                {
                    return Err(EioError::Duplicate {
                        segment: ha.sequence,
                        partitions: [a, b],
                    });
                }
            }
        }
        self.scanned = true;
        Ok(())
    }

    fn ensure_scanned(&mut self) -> Result<(), EioError> {
        if self.scanned { Ok(()) } else { self.scan() }
    }

    /// Records `result`'s error as the last one.
    fn note<T>(&mut self, result: Result<T, EioError>) -> Result<T, EioError> {
        if let Err(e) = &result {
            self.last_error = Some(*e);
        }
        result
    }

    /// The partition that holds `segment`, as of the last scan or operation.
    #[must_use]
    pub fn partition_of(&self, segment: SegmentId) -> Option<usize> {
        self.table
            .iter()
            .position(|h| h.is_some_and(|h| h.sequence == segment))
    }

    /// The header of `segment`, as of the last scan or operation.
    #[must_use]
    pub fn header_of(&self, segment: SegmentId) -> Option<SegmentHeader> {
        self.table
            .iter()
            .flatten()
            .find(|h| h.sequence == segment)
            .copied()
    }

    /// Every segment held, with its partition, as of the last scan or operation.
    pub fn segments(&self) -> impl Iterator<Item = (usize, SegmentHeader)> + '_ {
        self.table
            .iter()
            .enumerate()
            .filter_map(|(p, h)| h.map(|h| (p, h)))
    }

    /// The size of `partition` (0 before the first scan).
    #[must_use]
    pub fn partition_size(&self, partition: usize) -> u64 {
        self.sizes.get(partition).copied().unwrap_or(0)
    }

    /// The last error this storage reported (through a completion, a submit, a read or a
    /// listing): the detail behind a [`Failure`] that poisoned a pipeline.
    #[must_use]
    pub fn last_error(&self) -> Option<EioError> {
        self.last_error
    }

    /// The devices. What the storage knows of them is read again at the next operation, since a
    /// write through them may have changed a header.
    pub fn devices_mut(&mut self) -> &mut [D; N] {
        self.scanned = false;
        &mut self.devices
    }

    /// Gives the devices back.
    pub fn into_devices(self) -> [D; N] {
        self.devices
    }

    /// Writes zeros over `partition`'s header and flushes, so that it is free: whatever segment
    /// it held is gone. For clearing a partition that [`Self::scan`] reports as
    /// [`EioError::Unidentified`], once its contents are known to be unneeded.
    ///
    /// # Errors
    /// A device error, or [`EioError::NoPartition`].
    pub fn erase(&mut self, partition: usize) -> Result<(), EioError> {
        let result = self.clear_header(partition);
        self.scanned = false;
        self.note(result)
    }

    fn clear_header(&mut self, partition: usize) -> Result<(), EioError> {
        let dev = self
            .devices
            .get_mut(partition)
            .ok_or(EioError::NoPartition { partition })?;
        write_at(dev, partition, 0, &[0u8; segment::HEADER_LEN])?;
        dev.flush().map_err(device(partition, DeviceOp::Flush))?;
        if let Some(slot) = self.table.get_mut(partition) {
            *slot = None;
        }
        Ok(())
    }

    /// Deletes, oldest first, every segment that holds only records below `lsn` (its successor
    /// starts at or below `lsn`): the truncation after a checkpoint made them unneeded, which frees
    /// their partitions for new segments. The newest segment is never deleted. A power cut during
    /// it leaves the newest segments, still a chain. Returns how many were deleted.
    ///
    /// # Errors
    /// A device error; the segments before the failing one are deleted.
    pub fn delete_before(&mut self, lsn: Lsn) -> Result<usize, EioError> {
        self.scan()?;
        let mut deleted = 0;
        loop {
            let oldest = self
                .table
                .iter()
                .enumerate()
                .filter_map(|(p, h)| h.map(|h| (p, h)))
                .min_by_key(|(_, h)| h.sequence);
            let Some((partition, oldest)) = oldest else {
                break;
            };
            let successor = self
                .table
                .iter()
                .flatten()
                .filter(|h| h.sequence > oldest.sequence)
                .min_by_key(|h| h.sequence);
            if successor.is_none_or(|s| s.first_lsn > lsn) {
                break;
            }
            let result = self.clear_header(partition);
            if result.is_err() {
                self.scanned = false;
            }
            self.note(result)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Reads the records with LSNs from `from` to `upto` (inclusive) in order, handing each to
    /// `each`, and returns the LSN after the last record read. It starts at the segment that holds
    /// `from` (found from the headers), checks that each next segment continues where the last
    /// one ended, and stops at the end of the log. Records of every kind are handed over (the
    /// caller's are [`crate::record::Kind::Data`]); records below the oldest segment held were
    /// truncated, and reading then starts at the oldest record held. `window` is the decoder's
    /// window ([`crate::decode::min_window`] of the largest payload).
    ///
    /// # Errors
    /// A read error, damage in the records or headers, or a window too small; records handed to
    /// `each` before it are valid.
    pub fn read_from(
        &mut self,
        from: Lsn,
        upto: Lsn,
        window: &mut [u8],
        each: &mut dyn FnMut(&Record<'_>),
    ) -> Result<Lsn, RecoverError<EioError>> {
        let mut ids = [SegmentId(0); N];
        let count = self.list(&mut ids).map_err(|error| RecoverError::Io {
            segment: None,
            offset: 0,
            error,
        })?;
        let ids = ids.get(..count).unwrap_or(&[]);
        let start = ids
            .iter()
            .rposition(|id| self.header_of(*id).is_some_and(|h| h.first_lsn <= from))
            .unwrap_or(0);
        let mut next = from;
        let mut expected: Option<Lsn> = None;
        let mut prev: Option<SegmentHeader> = None;
        let mut segments = ids.get(start..).unwrap_or(&[]).iter().peekable();
        while let Some(&id) = segments.next() {
            let corrupt = |offset, expected_lsn, damage| {
                RecoverError::Corrupt(DamageReport {
                    segment: id,
                    offset,
                    expected_lsn,
                    damage,
                })
            };
            let mut decoder = SegmentDecoder::new(&mut *window, Mode::Strict);
            loop {
                match decoder.poll() {
                    Decoded::NeedMore => {
                        let offset = decoder.offset_wanted();
                        let n = self.read_at(id, offset, decoder.space()).map_err(|error| {
                            RecoverError::Io {
                                segment: Some(id),
                                offset,
                                error,
                            }
                        })?;
                        if n == 0 {
                            decoder.finish();
                        } else {
                            decoder.fill(n);
                        }
                    }
                    Decoded::Header(h) => {
                        // The same chain checks as recovery: one log, consecutive, linked.
                        let expected_lsn = expected.unwrap_or(h.first_lsn);
                        if let Some(p) = prev {
                            if h.log_id != p.log_id || h.core != p.core {
                                let damage = Damage::Foreign {
                                    log_id: h.log_id,
                                    core: h.core,
                                };
                                return Err(corrupt(0, expected_lsn, damage));
                            }
                            if h.sequence != p.sequence.next() {
                                let damage = Damage::Sequence {
                                    expected: p.sequence.next(),
                                    found: h.sequence,
                                };
                                return Err(corrupt(0, expected_lsn, damage));
                            }
                        }
                        let unlinked = prev.is_some_and(|p| h.prev_nonce != p.nonce);
                        if h.sequence != id || unlinked || h.first_lsn != expected_lsn {
                            return Err(corrupt(
                                0,
                                expected_lsn,
                                Damage::Link {
                                    expected_lsn,
                                    found_lsn: h.first_lsn,
                                },
                            ));
                        }
                        expected = Some(h.first_lsn);
                        prev = Some(h);
                    }
                    Decoded::Record(r) => {
                        let lsn = r.header.lsn;
                        if lsn > upto {
                            return Ok(next);
                        }
                        if lsn >= from {
                            each(&r);
                            next = lsn.next();
                        }
                        expected = Some(lsn.next());
                    }
                    Decoded::Skipped(s) => {
                        return Err(corrupt(s.offset, s.first_lost, Damage::Skipped(s)));
                    }
                    Decoded::End(End::Sealed { .. }) => break,
                    Decoded::End(End::Clean { offset, next_lsn })
                    | Decoded::End(End::Torn {
                        offset, next_lsn, ..
                    }) => {
                        if segments.peek().is_some() {
                            return Err(corrupt(offset, next_lsn, Damage::Unsealed { offset }));
                        }
                        return Ok(next);
                    }
                    Decoded::End(End::Corrupt(c)) => {
                        return Err(corrupt(c.offset, c.expected_lsn, Damage::Records(c)));
                    }
                    Decoded::End(End::BadHeader { error, .. }) => {
                        return Err(match error {
                            HeaderError::UnsupportedVersion { version } => {
                                RecoverError::UnsupportedVersion {
                                    segment: id,
                                    version,
                                }
                            }
                            e => corrupt(0, expected.unwrap_or(from), Damage::Header(e)),
                        });
                    }
                    Decoded::Error(e) => return Err(RecoverError::decode(id, e)),
                }
            }
        }
        Ok(next)
    }

    /// The partition of `segment`.
    fn find(&self, segment: SegmentId) -> Result<usize, EioError> {
        self.partition_of(segment)
            .ok_or(EioError::NotFound { segment })
    }

    /// The partition a new segment goes to: the first free one after the newest segment's.
    fn free_partition(&self) -> Result<usize, EioError> {
        let newest = self
            .table
            .iter()
            .enumerate()
            .filter_map(|(p, h)| h.map(|h| (p, h.sequence)))
            .max_by_key(|(_, s)| *s)
            .map_or(0, |(p, _)| p + 1);
        (0..N)
            .map(|i| (newest + i) % N)
            .find(|p| self.table.get(*p).is_some_and(Option::is_none))
            .ok_or(EioError::NoFreePartition)
    }

    /// Checks what can be checked before an operation starts; `Ok(Some(partition))` for an
    /// operation on a partition, `Ok(None)` for one that needs no device.
    fn prepare(&mut self, op: &SegmentOp<'_>) -> Result<Option<usize>, EioError> {
        if self.completions.is_full() {
            return Err(EioError::QueueFull);
        }
        self.ensure_scanned()?;
        match *op {
            SegmentOp::Create { segment, header } => {
                if let Some(partition) = self.partition_of(segment) {
                    return Err(EioError::Exists { segment, partition });
                }
                match SegmentHeader::parse(header) {
                    Ok(h) if h.sequence == segment && header.len() == segment::HEADER_LEN => {}
                    _ => return Err(EioError::BadHeader { segment }),
                }
                self.free_partition().map(Some)
            }
            SegmentOp::Write {
                segment,
                offset,
                data,
                ..
            } => {
                let partition = self.find(segment)?;
                let size = self.partition_size(partition);
                let end = offset.saturating_add(data.len() as u64);
                if end > size {
                    return Err(EioError::PastEnd {
                        segment,
                        partition,
                        end,
                        size,
                    });
                }
                Ok(Some(partition))
            }
            SegmentOp::Sync { segment } => self.find(segment).map(Some),
            SegmentOp::SyncNamespace => Ok(None),
            SegmentOp::Delete { segment } => Ok(self.partition_of(segment)),
        }
    }

    /// Runs `op` on `partition`.
    fn run(&mut self, partition: usize, op: &SegmentOp<'_>) -> Result<(), EioError> {
        let dev = self
            .devices
            .get_mut(partition)
            .ok_or(EioError::NoPartition { partition })?;
        match *op {
            SegmentOp::Create { header, .. } => {
                let written = write_at(dev, partition, 0, header)
                    .and_then(|()| dev.flush().map_err(device(partition, DeviceOp::Flush)));
                if written.is_err() {
                    // Give the partition back: zero what may be a partial header (best effort; a
                    // power cut undoes the unflushed header anyway).
                    if write_at(dev, partition, 0, &[0u8; segment::HEADER_LEN]).is_ok() {
                        let _ = dev.flush();
                    }
                    self.scanned = false;
                    return written;
                }
                if let (Some(slot), Ok(h)) =
                    (self.table.get_mut(partition), SegmentHeader::parse(header))
                {
                    *slot = Some(h);
                }
                Ok(())
            }
            SegmentOp::Write {
                offset, data, sync, ..
            } => {
                write_at(dev, partition, offset, data)?;
                if sync {
                    dev.flush().map_err(device(partition, DeviceOp::Flush))?;
                }
                Ok(())
            }
            SegmentOp::Sync { .. } => dev.flush().map_err(device(partition, DeviceOp::Flush)),
            SegmentOp::Delete { .. } => {
                let result = self.clear_header(partition);
                if result.is_err() {
                    self.scanned = false;
                }
                result
            }
            SegmentOp::SyncNamespace => Ok(()),
        }
    }
}

impl<D, const N: usize, const Q: usize> io::ErrorType for EioStorage<D, N, Q> {
    type Error = EioError;
}

impl<D, const N: usize, const Q: usize> SegmentStorage for EioStorage<D, N, Q>
where
    D: Read + Write + Seek,
{
    /// Runs `op` to its end and queues its completion. `Create` writes the header into a free
    /// partition and flushes; `Write` seeks and writes all of `data` (and flushes with `sync`);
    /// `Sync` flushes the segment's partition; `Delete` zeroes the header and flushes;
    /// `SyncNamespace` does nothing (see the module documentation).
    ///
    /// # Errors
    /// Without starting anything: [`EioError::QueueFull`], a failed scan, a `Create` of an
    /// existing segment or with no free partition, a `Write` or `Sync` of a missing segment, a
    /// `Write` past the partition's end. Device errors are reported by the completion.
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), EioError> {
        let prepared = self.prepare(&op);
        let partition = self.note(prepared)?;
        let result = match partition {
            Some(partition) => self.run(partition, &op),
            None => Ok(()),
        };
        let result = self.note(result);
        // Room was checked in `prepare`.
        self.completions
            .push_back((token, result))
            .map_err(|_| EioError::QueueFull)
    }

    fn poll_completion(&mut self) -> Option<Completion<EioError>> {
        self.completions.pop_front()
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, EioError> {
        let result = self.ensure_scanned().and_then(|()| {
            let partition = self.find(segment)?;
            let size = self.partition_size(partition);
            let room = usize::try_from(size.saturating_sub(offset)).unwrap_or(usize::MAX);
            let n = buf.len().min(room);
            let (Some(dev), Some(buf)) = (self.devices.get_mut(partition), buf.get_mut(..n)) else {
                return Ok(0);
            };
            if buf.is_empty() {
                return Ok(0);
            }
            seek_to(dev, partition, offset)?;
            dev.read(buf).map_err(device(partition, DeviceOp::Read))
        });
        self.note(result)
    }

    /// Reads every partition's header (a [`Self::scan`]) and writes the ids found, ascending.
    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, EioError> {
        self.scan()?;
        let mut ids = [SegmentId(0); N];
        let mut count = 0;
        for (slot, id) in ids
            .iter_mut()
            .zip(self.table.iter().flatten().map(|h| h.sequence))
        {
            *slot = id;
            count += 1;
        }
        let ids = ids.get_mut(..count).unwrap_or(&mut []);
        ids.sort_unstable();
        for (o, id) in out.iter_mut().zip(ids.iter()) {
            *o = *id;
        }
        Ok(count)
    }
}

/// The error of a failed device call.
fn device<E: embedded_io::Error>(partition: usize, op: DeviceOp) -> impl FnOnce(E) -> EioError {
    move |e| EioError::Device {
        partition,
        op,
        kind: e.kind(),
    }
}

fn seek_to<D: Seek>(dev: &mut D, partition: usize, offset: u64) -> Result<(), EioError> {
    let got = dev
        .seek(SeekFrom::Start(offset))
        .map_err(device(partition, DeviceOp::Seek))?;
    if got != offset {
        return Err(EioError::SeekMismatch {
            partition,
            wanted: offset,
            got,
        });
    }
    Ok(())
}

/// Seeks to `offset` and writes all of `data`, finishing short writes. Not `write_all`: that
/// panics when a driver returns `Ok(0)`, which is an error here.
fn write_at<D: Write + Seek>(
    dev: &mut D,
    partition: usize,
    offset: u64,
    mut data: &[u8],
) -> Result<(), EioError> {
    seek_to(dev, partition, offset)?;
    while !data.is_empty() {
        let n = dev
            .write(data)
            .map_err(device(partition, DeviceOp::Write))?;
        if n == 0 {
            return Err(EioError::WriteZero { partition });
        }
        // A driver claiming more than it was given has written all of it, at best.
        data = data.get(n..).unwrap_or(&[]);
    }
    Ok(())
}

/// Seeks to `offset` and reads until `buf` is full or the device ends; returns the bytes read.
fn read_full<D: Read + Seek>(
    dev: &mut D,
    partition: usize,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize, EioError> {
    seek_to(dev, partition, offset)?;
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        let got = dev.read(rest).map_err(device(partition, DeviceOp::Read))?;
        if got == 0 {
            break;
        }
        n += got.min(rest.len());
    }
    Ok(n)
}

/// How [`EioLog::open`] opens a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The pipeline's settings. `segment_size` must fit the smallest partition, and
    /// `nonce_seed` must be fresh randomness on every open. Time is not used: batches are cut by
    /// records and bytes, by a full buffer and by [`EioLog::sync`].
    pub config: Config,
    /// How recovery treats damage.
    pub mode: Mode,
    /// The log id of a log created on empty storage (an existing log keeps its own).
    pub log_id: u64,
    /// The core of a log created on empty storage.
    pub core: u32,
}

impl Options {
    /// Options with `config`, [`Mode::Strict`], and `log_id` for a new log on core 0.
    #[must_use]
    pub fn new(config: Config, log_id: u64) -> Self {
        Options {
            config,
            mode: Mode::Strict,
            log_id,
            core: 0,
        }
    }
}

/// Why [`EioLog`] could not open, sync or close.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EioLogError {
    /// Recovery stopped, or the segments it said to discard could not be deleted.
    Recover(RecoverError<EioError>),
    /// The configuration cannot work.
    Config(ConfigError),
    /// `segment_size` exceeds the smallest partition.
    SegmentTooLarge {
        /// The configured segment size.
        segment_size: u64,
        /// The smallest partition's size.
        partition_size: u64,
    },
    /// The storage failed outside the pipeline (a scan or a truncation).
    Storage(EioError),
    /// The backend stopped making progress before the records were durable (a blocking device
    /// always completes; this is a driver bug, never a success).
    Stalled {
        /// What is durable.
        durable: Lsn,
        /// What was to be.
        wanted: Lsn,
    },
    /// The log is poisoned by a failed operation: reopen it (after a truncation, if the device
    /// is full).
    Poisoned {
        /// What failed.
        poison: Poison,
        /// The storage's detail, when it has one.
        cause: Option<EioError>,
    },
}

impl fmt::Display for EioLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EioLogError::Recover(e) => write!(f, "recovery failed: {e}"),
            EioLogError::Config(e) => write!(f, "{e}"),
            EioLogError::SegmentTooLarge {
                segment_size,
                partition_size,
            } => write!(
                f,
                "segment size {segment_size} exceeds the smallest partition ({partition_size} bytes)"
            ),
            EioLogError::Storage(e) => write!(f, "storage: {e}"),
            EioLogError::Stalled { durable, wanted } => write!(
                f,
                "storage stopped completing: durable through {durable}, {wanted} was wanted"
            ),
            EioLogError::Poisoned {
                poison,
                cause: Some(cause),
            } => write!(f, "log poisoned: {poison} ({cause})"),
            EioLogError::Poisoned {
                poison,
                cause: None,
            } => write!(f, "log poisoned: {poison}"),
        }
    }
}

impl core::error::Error for EioLogError {}

/// A blocking log on [`EioStorage`]: a [`Pipeline`] whose every request runs at once.
///
/// `append` frames a record and writes whatever batch the policy cuts; `sync` writes the rest and
/// flushes, and returns once everything appended is durable. Every call returns with no I/O in
/// flight.
pub struct EioLog<'a, D, const N: usize, const SLOTS: usize = 8, const Q: usize = 16> {
    pipeline: Pipeline<'a, SLOTS>,
    storage: &'a mut EioStorage<D, N, Q>,
}

impl<'a, D, const N: usize, const SLOTS: usize, const Q: usize> EioLog<'a, D, N, SLOTS, Q>
where
    D: Read + Write + Seek,
{
    /// Opens the log in `storage`: recovers it, handing what it finds to `replay` (records in LSN
    /// order), deletes the segments recovery says to discard, and resumes it; on empty storage,
    /// creates a new log with `options.log_id`. `buf` is the pipeline's buffer (see
    /// [`Pipeline`]); recovery uses it as its decode window first. On return the recovered
    /// records are durable and appends can start. Also returns what recovery found.
    ///
    /// # Errors
    /// [`EioLogError`]; a torn tail is not an error (the report names the cut).
    pub fn open(
        storage: &'a mut EioStorage<D, N, Q>,
        buf: &'a mut [u8],
        options: Options,
        replay: &mut dyn FnMut(Replay<'_>),
    ) -> Result<(Self, RecoveryReport), EioLogError> {
        const {
            assert!(
                Q >= SLOTS + 2,
                "the completion queue needs SLOTS + 2 entries"
            );
        }
        let config = options.config;
        let first = SegmentHeader {
            core: options.core,
            log_id: options.log_id,
            sequence: SegmentId(0),
            nonce: mix(config.nonce_seed ^ options.log_id),
            first_lsn: Lsn::FIRST,
            epoch: 0,
            prev_nonce: 0,
        };
        // Check the configuration before anything is read or deleted.
        Pipeline::<SLOTS>::create(&mut *buf, config, first).map_err(EioLogError::Config)?;
        storage.scan().map_err(EioLogError::Storage)?;
        let partition_size = (0..N).map(|p| storage.partition_size(p)).min().unwrap_or(0);
        if config.segment_size > partition_size {
            return Err(EioLogError::SegmentTooLarge {
                segment_size: config.segment_size,
                partition_size,
            });
        }
        let mut ids = [SegmentId(0); N];
        let recovered = recover::recover(storage, &mut ids, &mut *buf, options.mode, replay)
            .map_err(EioLogError::Recover)?;
        if let Some(from) = recovered.report.discard_from {
            recover::discard(storage, &mut ids, from).map_err(EioLogError::Recover)?;
        }
        let pipeline = match recovered.resume {
            Some(resume) => Pipeline::resume(buf, config, resume),
            None => Pipeline::create(buf, config, first),
        }
        .map_err(EioLogError::Config)?;
        let mut log = EioLog { pipeline, storage };
        log.pump();
        log.check()?;
        Ok((log, recovered.report))
    }

    /// Runs every request the pipeline has to its end.
    fn pump(&mut self) {
        drive::pump_all(&mut self.pipeline, &mut *self.storage, &mut |_: Event| {});
    }

    fn check(&self) -> Result<(), EioLogError> {
        match self.pipeline.poisoned() {
            Some(poison) => Err(EioLogError::Poisoned {
                poison,
                cause: self.storage.last_error(),
            }),
            None => Ok(()),
        }
    }

    /// Appends a data record and returns its LSN; it is durable once [`Self::durable_lsn`]
    /// reaches it (at the latest after [`Self::sync`]). Writes the batch the policy cuts, if any.
    ///
    /// # Errors
    /// [`AppendError`]: `Poisoned` after a failed write (reopen), `TooLarge`, `Closed`; `Full`
    /// only if the record cannot fit even after everything before it was made durable.
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, AppendError> {
        let lsn = match self.pipeline.append(payload, 0) {
            Err(AppendError::Full) => {
                self.pipeline.flush();
                self.pump();
                self.pipeline.append(payload, 0)?
            }
            other => other?,
        };
        self.pump();
        Ok(lsn)
    }

    /// Writes everything appended, flushes, and returns the durable LSN: every record appended
    /// before the call is durable.
    ///
    /// # Errors
    /// [`EioLogError::Poisoned`] when a write or flush failed: nothing more is durable.
    pub fn sync(&mut self) -> Result<Lsn, EioLogError> {
        let target = self.pipeline.next_lsn().prev();
        // Pumped until durable: a roll takes a few rounds (seal, create, then the batch).
        while self.pipeline.durable_lsn() < target {
            self.pipeline.flush();
            let progressed = drive::pump(&mut self.pipeline, &mut *self.storage, &mut |_| {});
            self.check()?;
            if !progressed {
                return Err(EioLogError::Stalled {
                    durable: self.pipeline.durable_lsn(),
                    wanted: target,
                });
            }
        }
        Ok(self.pipeline.durable_lsn())
    }

    /// Closes the log: everything appended is made durable and a seal that vouches for it is
    /// written, so the next open continues in a new segment. Returns the seal's LSN.
    ///
    /// # Errors
    /// [`EioLogError::Poisoned`].
    pub fn close(mut self) -> Result<Lsn, EioLogError> {
        if self.pipeline.close().is_err() {
            // Only a poisoned pipeline refuses to close.
            self.check()?;
        }
        let mut closed = None;
        drive::pump_all(&mut self.pipeline, &mut *self.storage, &mut |e| {
            if let Event::Closed { last } = e {
                closed = Some(last);
            }
        });
        self.check()?;
        closed.ok_or(EioLogError::Stalled {
            durable: self.pipeline.durable_lsn(),
            wanted: self.pipeline.next_lsn().prev(),
        })
    }

    /// Every record up to this LSN is durable.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.pipeline.durable_lsn()
    }

    /// The LSN the next record takes.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.pipeline.next_lsn()
    }

    /// The failure that poisoned the log, if one did.
    #[must_use]
    pub fn poisoned(&self) -> Option<Poison> {
        self.pipeline.poisoned()
    }

    /// The header of the segment being appended to.
    #[must_use]
    pub fn segment(&self) -> &SegmentHeader {
        self.pipeline.segment()
    }

    /// The storage, to look at (which partition holds which segment, the last error).
    #[must_use]
    pub fn storage(&self) -> &EioStorage<D, N, Q> {
        self.storage
    }

    /// Deletes the segments that hold only records below `lsn` (clamped to what is durable),
    /// freeing their partitions: see [`EioStorage::delete_before`].
    ///
    /// # Errors
    /// [`EioLogError::Storage`].
    pub fn truncate_before(&mut self, lsn: Lsn) -> Result<usize, EioLogError> {
        let lsn = lsn.min(self.pipeline.durable_lsn().next());
        self.storage
            .delete_before(lsn)
            .map_err(EioLogError::Storage)
    }

    /// Reads the durable records from `from` on: see [`EioStorage::read_from`].
    ///
    /// # Errors
    /// As [`EioStorage::read_from`].
    pub fn read_from(
        &mut self,
        from: Lsn,
        window: &mut [u8],
        each: &mut dyn FnMut(&Record<'_>),
    ) -> Result<Lsn, RecoverError<EioError>> {
        let upto = self.pipeline.durable_lsn();
        self.storage.read_from(from, upto, window, each)
    }
}

/// SplitMix64's finaliser: the first segment's nonce from the caller's seed.
const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
