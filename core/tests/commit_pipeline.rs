//! The group-commit pipeline driven against a simulated disk with a virtual clock.
//!
//! The disk keeps, per segment, a "written" image (what completed writes put there) and a
//! "durable" image (what a completed sync proved): a sync copies into the durable image exactly
//! the writes of its segment that had completed before it was issued, a linked write makes its
//! segment's completed writes durable when it completes, a namespace sync makes the creates that
//! had completed before it durable. After every step the harness decodes the durable images with
//! [`SegmentDecoder`] and checks that the pipeline never claims more than they hold, and it
//! compares the pipeline's durable LSN with the durability rule computed here, independently:
//! the highest LSN such that every write at or below it completed before some completed sync of
//! its segment was issued.

use lamina_core::commit::{
    AppendError, Config, ConfigError, Event, IoRequest, OpKind, Pipeline, Poison, Resume,
    ResumeTail, SEAL_LEN, SyncPolicy, UnknownCompletion,
};
use lamina_core::decode::{Decoded, End, Mode, SegmentDecoder, min_window};
use lamina_core::io::Failure;
use lamina_core::record::{self, HeaderCheck, Kind, RecordHeader, Seed};
use lamina_core::segment::{self, SegmentHeader};
use lamina_core::{Lsn, SegmentId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;

// ------------------------------------------------------------------------------------------------
// The simulated disk and the driver
// ------------------------------------------------------------------------------------------------

const LOG_ID: u64 = 0x1a_2b3c_4d5e;
const HEADER: u64 = segment::HEADER_LEN as u64;

/// The header of a new log's first segment.
fn first_header() -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id: LOG_ID,
        sequence: SegmentId(0),
        nonce: 0x5eed_0001,
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    }
}

/// Small payloads and big segments unless a test says otherwise.
fn config(policy: SyncPolicy) -> Config {
    Config {
        policy,
        max_writes_in_flight: 4,
        linked: false,
        segment_size: 64 * 1024,
        max_payload: 64,
        nonce_seed: 0x1234_5678,
    }
}

/// A batch policy that never cuts on its own (only `flush` or a test's own trigger does).
const NEVER: SyncPolicy = SyncPolicy::Batch {
    max_records: u32::MAX,
    max_bytes: u32::MAX,
    max_delay: u64::MAX,
};

/// A payload that says which record it is.
fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (i.wrapping_mul(31) as u8) ^ (k as u8).wrapping_mul(7))
        .collect()
}

/// A small deterministic generator (SplitMix64), so seeded runs need no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A submitted request, as the simulated disk keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Create {
        seg: u64,
    },
    SyncNamespace,
    Write {
        seg: u64,
        offset: u64,
        range: Range<usize>,
        /// The bytes as they were at submission: they must be the same at completion.
        data: Vec<u8>,
        sync: bool,
    },
    Sync {
        seg: u64,
    },
}

impl Op {
    fn kind(&self) -> OpKind {
        match self {
            Op::Create { .. } => OpKind::Create,
            Op::SyncNamespace => OpKind::SyncNamespace,
            Op::Write { .. } => OpKind::Write,
            Op::Sync { .. } => OpKind::Sync,
        }
    }
}

#[derive(Clone, Debug)]
struct Flight {
    token: u64,
    op: Op,
    /// The disk tick at submission.
    issued: u64,
}

/// What happened, in order, for tests that check the order of requests.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hist {
    Issued { token: u64, kind: OpKind, seg: u64 },
    Done { token: u64, kind: OpKind, ok: bool },
}

/// How a segment's durable image decodes.
#[derive(Clone, Debug)]
struct Decode {
    header: Option<SegmentHeader>,
    /// The last record decoded, if any.
    last: Option<Lsn>,
    end: End,
}

#[derive(Default)]
struct Seg {
    /// Known from the create request (or the recovered segment).
    header: Option<SegmentHeader>,
    /// The tick its create completed.
    created: Option<u64>,
    /// A namespace sync issued after its create completed has completed.
    named: bool,
    written: Vec<u8>,
    durable: Vec<u8>,
    /// Completed writes not yet durable: (completion tick, offset, bytes), by completion.
    pending: VecDeque<(u64, u64, Vec<u8>)>,
    /// Byte ranges of every write issued to it (writes never overlap).
    extents: Vec<Range<u64>>,
    decoded: Option<Decode>,
}

fn put(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    if image.len() < start + data.len() {
        image.resize(start + data.len(), 0);
    }
    image[start..start + data.len()].copy_from_slice(data);
}

/// The rule, computed independently of the pipeline: a write is durable once it completed before
/// a completed sync of its segment was issued (or, linked, once it completed); the durable LSN is
/// the end of the prefix of durable writes.
#[derive(Default)]
struct Oracle {
    durable: Lsn,
    writes: Vec<OWrite>,
    /// Per segment, the latest issue tick of a sync that completed successfully.
    synced_before: BTreeMap<u64, u64>,
}

struct OWrite {
    token: u64,
    seg: u64,
    first: Lsn,
    last: Lsn,
    done: Option<u64>,
    linked: bool,
}

impl Oracle {
    fn advance(&mut self) {
        while let Some(i) = self
            .writes
            .iter()
            .position(|w| w.first == self.durable.next())
        {
            let w = &self.writes[i];
            let durable = w.done.is_some_and(|t| {
                w.linked || self.synced_before.get(&w.seg).is_some_and(|s| t < *s)
            });
            if !durable {
                return;
            }
            self.durable = w.last;
            self.writes.swap_remove(i);
        }
    }
}

/// A recovered segment for `Pipeline::resume`.
struct Recovered {
    header: SegmentHeader,
    /// Header, records, and whatever a crash left after them.
    bytes: Vec<u8>,
    /// Where the records end.
    cut: u64,
    payloads: Vec<Vec<u8>>,
}

/// `n` records (LSN 1..=n) in segment 0; with `torn`, a frame for LSN n+1 whose end never made it
/// to disk follows them.
fn recovered(n: u64, torn: bool) -> Recovered {
    let header = SegmentHeader {
        nonce: 0xabc,
        ..first_header()
    };
    let seed = header.seed();
    let mut bytes = header.emit().to_vec();
    let mut payloads = Vec::new();
    for lsn in 1..=n {
        let p = payload(lsn + 1000, (lsn as usize * 5) % 40);
        let mut frame = vec![0u8; record::frame_len(p.len())];
        record::encode(&mut frame, &seed, Lsn(lsn), Lsn(lsn - 1), Kind::Data, &p).unwrap();
        bytes.extend_from_slice(&frame);
        payloads.push(p);
    }
    let cut = bytes.len() as u64;
    if torn {
        let p = payload(77, 40);
        let mut frame = vec![0u8; record::frame_len(p.len())];
        record::encode(&mut frame, &seed, Lsn(n + 1), Lsn(n), Kind::Data, &p).unwrap();
        let keep = frame.len() - 16;
        bytes.extend_from_slice(&frame[..keep]);
        bytes.extend_from_slice(&[0; 64]);
    }
    Recovered {
        header,
        bytes,
        cut,
        payloads,
    }
}

/// The pipeline, the disk it drives, and the bookkeeping that checks it after every step.
struct Sim<'b, const S: usize> {
    p: Pipeline<'b, S>,
    cfg: Config,
    segs: BTreeMap<u64, Seg>,
    first_seg: u64,
    /// The LSN below the log's first segment.
    base: Lsn,
    inflight: Vec<Flight>,
    tokens: BTreeSet<u64>,
    /// Orders submissions and completions.
    tick: u64,
    /// The virtual clock, in nanoseconds.
    now: u64,
    /// What each LSN must hold: every record appended (and recovered); seals are not in it.
    model: BTreeMap<u64, (Kind, Vec<u8>)>,
    oracle: Oracle,
    /// The frames of each write request, by token.
    frames: BTreeMap<u64, Vec<RecordHeader>>,
    history: Vec<Hist>,
    events: Vec<Event>,
    reported: Lsn,
    /// The durable LSN when the poisoning failure was handled.
    poisoned_at: Option<Lsn>,
    poison_seen: bool,
    closed: Option<Lsn>,
    /// How often a write started below the previous one in the buffer.
    wraps: usize,
    last_range_start: usize,
    proven: Option<Lsn>,
    window: Vec<u8>,
}

impl<'b, const S: usize> Sim<'b, S> {
    /// A new log over `buf`, first segment [`first_header`].
    fn create(buf: &'b mut [u8], cfg: Config) -> Self {
        let p = match Pipeline::create(buf, cfg, first_header()) {
            Ok(p) => p,
            Err(e) => panic!("config refused: {e}"),
        };
        let mut sim = Sim::new(p, cfg, 0, Lsn::ZERO);
        sim.check();
        sim
    }

    /// A log resumed over `rec` (segment 0, records 1..=n), which exists and is named but of which
    /// nothing is known durable.
    fn resume(buf: &'b mut [u8], cfg: Config, rec: &Recovered, seal_at_cut: bool) -> Self {
        let n = rec.payloads.len() as u64;
        let resume = Resume {
            header: rec.header,
            offset: rec.cut,
            next_lsn: Lsn(n + 1),
            epoch: 0,
            tail: if seal_at_cut {
                ResumeTail::Torn
            } else {
                ResumeTail::Open
            },
        };
        let p = match Pipeline::resume(buf, cfg, resume) {
            Ok(p) => p,
            Err(e) => panic!("resume refused: {e}"),
        };
        let mut sim = Sim::new(p, cfg, 0, Lsn::ZERO);
        let mut seg = Seg {
            header: Some(rec.header),
            created: Some(0),
            named: true,
            written: rec.bytes.clone(),
            ..Seg::default()
        };
        // Everything a crash left is on the device but not known durable: any sync covers it.
        seg.pending.push_back((0, 0, rec.bytes.clone()));
        seg.extents.push(HEADER..rec.cut);
        sim.segs.insert(0, seg);
        for (i, p) in rec.payloads.iter().enumerate() {
            sim.model.insert(i as u64 + 1, (Kind::Data, p.clone()));
        }
        if n > 0 {
            sim.oracle.writes.push(OWrite {
                token: 0,
                seg: 0,
                first: Lsn(1),
                last: Lsn(n),
                done: Some(0),
                linked: false,
            });
        }
        sim.check();
        sim
    }

    fn new(p: Pipeline<'b, S>, cfg: Config, first_seg: u64, base: Lsn) -> Self {
        Sim {
            p,
            cfg,
            segs: BTreeMap::new(),
            first_seg,
            base,
            inflight: Vec::new(),
            tokens: BTreeSet::new(),
            tick: 0,
            now: 0,
            model: BTreeMap::new(),
            oracle: Oracle {
                durable: base,
                ..Oracle::default()
            },
            frames: BTreeMap::new(),
            history: Vec::new(),
            events: Vec::new(),
            reported: base,
            poisoned_at: None,
            poison_seen: false,
            closed: None,
            wraps: 0,
            last_range_start: 0,
            proven: None,
            window: vec![0u8; min_window(cfg.max_payload as usize)],
        }
    }

    // --- told things ---------------------------------------------------------------------------

    fn append(&mut self, data: &[u8]) -> Result<Lsn, AppendError> {
        self.append_kind(Kind::Data, data)
    }

    fn append_kind(&mut self, kind: Kind, data: &[u8]) -> Result<Lsn, AppendError> {
        let expect = self.p.next_lsn();
        let r = self.p.append_kind(kind, data, self.now);
        match r {
            Ok(lsn) => {
                // A roll may have framed a seal first.
                assert!(
                    lsn == expect || lsn == expect.next(),
                    "{lsn} after {expect}"
                );
                assert_eq!(self.p.next_lsn(), lsn.next());
                assert!(self.model.insert(lsn.0, (kind, data.to_vec())).is_none());
            }
            Err(AppendError::Poisoned(p)) => assert_eq!(self.p.poisoned(), Some(p)),
            Err(AppendError::TooLarge { len }) => {
                assert_eq!(len, data.len());
                assert!(len > self.cfg.max_payload as usize);
                assert_eq!(self.p.next_lsn(), expect, "TooLarge framed something");
            }
            Err(_) => {}
        }
        if self.p.poisoned().is_some() {
            assert!(matches!(r, Err(AppendError::Poisoned(_))), "{r:?}");
        }
        self.check();
        r
    }

    fn append_epoch(&mut self, epoch: u64) -> Result<Lsn, AppendError> {
        let r = self.p.append_epoch(epoch, self.now);
        if let Ok(lsn) = r {
            self.model
                .insert(lsn.0, (Kind::Epoch, epoch.to_le_bytes().to_vec()));
        }
        self.check();
        r
    }

    fn flush(&mut self) {
        self.p.flush();
        self.check();
    }

    fn close(&mut self) -> Result<(), AppendError> {
        let r = self.p.close();
        self.check();
        r
    }

    /// Moves the virtual clock and tells the pipeline when its timer is due.
    fn advance(&mut self, ns: u64) {
        self.now += ns;
        if self.p.poll_timeout().is_some_and(|d| d <= self.now) {
            self.p.handle_timeout(self.now);
        }
        self.check();
    }

    /// Completes the request `token` on the disk and reports it to the pipeline.
    fn complete(&mut self, token: u64, result: Result<(), Failure>) {
        let i = self
            .inflight
            .iter()
            .position(|f| f.token == token)
            .unwrap_or_else(|| panic!("token {token} is not in flight"));
        let f = self.inflight.remove(i);
        self.tick += 1;
        let now = self.tick;
        if let Op::Write { range, data, .. } = &f.op {
            assert_eq!(
                self.p.bytes(range.clone()),
                &data[..],
                "the bytes of write {token} changed while it was in flight"
            );
        }
        if result.is_ok() {
            match &f.op {
                Op::Create { seg } => {
                    let s = self.segs.get_mut(seg).unwrap();
                    let header = s.header.unwrap().emit();
                    s.created = Some(now);
                    put(&mut s.written, 0, &header);
                    s.pending.push_back((now, 0, header.to_vec()));
                }
                Op::SyncNamespace => {
                    for s in self.segs.values_mut() {
                        if s.created.is_some_and(|c| c < f.issued) {
                            s.named = true;
                        }
                    }
                }
                Op::Write {
                    seg,
                    offset,
                    data,
                    sync,
                    ..
                } => {
                    let s = self.segs.get_mut(seg).unwrap();
                    put(&mut s.written, *offset, data);
                    s.pending.push_back((now, *offset, data.clone()));
                    if *sync {
                        self.make_durable(*seg, now + 1);
                    }
                    let w = self.oracle.writes.iter_mut().find(|w| w.token == token);
                    w.unwrap().done = Some(now);
                }
                Op::Sync { seg } => {
                    self.make_durable(*seg, f.issued);
                    let s = self.oracle.synced_before.entry(*seg).or_default();
                    *s = (*s).max(f.issued);
                }
            }
            self.oracle.advance();
        }
        self.history.push(Hist::Done {
            token,
            kind: f.op.kind(),
            ok: result.is_ok(),
        });
        let before = self.p.durable_lsn();
        let was_poisoned = self.p.poisoned().is_some();
        assert_eq!(self.p.handle_completion(token, result), Ok(()));
        if let Err(failure) = result {
            let poison = self.p.poisoned().expect("a failure poisons");
            if !was_poisoned {
                self.poisoned_at = Some(before);
                assert_eq!(
                    poison,
                    Poison {
                        op: f.op.kind(),
                        segment: SegmentId(op_segment(&f.op, poison.segment.0)),
                        failure,
                    }
                );
            }
        }
        self.check();
    }

    /// Copies into `seg`'s durable image the writes that completed before tick `before`.
    fn make_durable(&mut self, seg: u64, before: u64) {
        let s = self.segs.get_mut(&seg).unwrap();
        while s.pending.front().is_some_and(|(t, _, _)| *t < before) {
            let (_, offset, data) = s.pending.pop_front().unwrap();
            put(&mut s.durable, offset, &data);
            s.decoded = None;
            self.proven = None;
        }
    }

    // --- asked things --------------------------------------------------------------------------

    /// Submits every request the pipeline has; returns them.
    fn pump(&mut self) -> Vec<Flight> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let Some(req) = self.p.poll_io() else {
                self.check();
                return out;
            };
            let f = self.issue(req);
            out.push(f);
            self.check();
        }
        panic!("poll_io never answered None");
    }

    fn issue(&mut self, req: IoRequest) -> Flight {
        assert!(
            self.poisoned_at.is_none() && self.p.poisoned().is_none(),
            "request after poisoning: {req:?}"
        );
        self.tick += 1;
        let token = req.token();
        assert!(self.tokens.insert(token), "token {token} reused");
        let op = match req {
            IoRequest::Create {
                segment, header, ..
            } => self.issue_create(segment, &header),
            IoRequest::SyncNamespace { .. } => Op::SyncNamespace,
            IoRequest::Write {
                segment,
                offset,
                range,
                sync,
                ..
            } => self.issue_write(token, segment.0, offset, range, sync),
            IoRequest::Sync { segment, .. } => {
                let s = self
                    .segs
                    .get(&segment.0)
                    .expect("sync of an unknown segment");
                assert!(
                    s.created.is_some(),
                    "sync of segment {segment} before its create"
                );
                Op::Sync { seg: segment.0 }
            }
        };
        let seg = match &op {
            Op::Create { seg } | Op::Write { seg, .. } | Op::Sync { seg } => *seg,
            Op::SyncNamespace => u64::MAX,
        };
        self.history.push(Hist::Issued {
            token,
            kind: op.kind(),
            seg,
        });
        let f = Flight {
            token,
            op,
            issued: self.tick,
        };
        self.inflight.push(f.clone());
        f
    }

    fn issue_create(&mut self, segment: SegmentId, header: &[u8]) -> Op {
        let h = SegmentHeader::parse(header).expect("the create's header parses");
        let seg = segment.0;
        assert_eq!(h.sequence, segment);
        assert_eq!(h.log_id, LOG_ID);
        assert!(!self.segs.contains_key(&seg), "segment {seg} created twice");
        if seg != self.first_seg {
            let pred_header = self
                .segs
                .get(&(seg - 1))
                .and_then(|s| s.header)
                .expect("the predecessor exists");
            match self.decoded(seg - 1).end {
                End::Sealed { last_lsn, .. } => assert_eq!(h.first_lsn, last_lsn.next()),
                other => panic!(
                    "segment {seg} created before segment {}'s seal was durable: {other:?}",
                    seg - 1
                ),
            }
            assert_eq!(h.prev_nonce, pred_header.nonce, "the new header links back");
            assert_ne!(h.nonce, pred_header.nonce);
        }
        self.segs.insert(
            seg,
            Seg {
                header: Some(h),
                ..Seg::default()
            },
        );
        Op::Create { seg }
    }

    fn issue_write(
        &mut self,
        token: u64,
        seg: u64,
        offset: u64,
        range: Range<usize>,
        sync: bool,
    ) -> Op {
        let data = self.p.bytes(range.clone()).to_vec();
        assert_eq!(data.len(), range.len(), "range outside the buffer");
        assert!(!data.is_empty(), "empty write");
        assert_eq!(sync, self.cfg.linked, "linked flag");
        let s = self
            .segs
            .get_mut(&seg)
            .unwrap_or_else(|| panic!("write to segment {seg}, which was never created"));
        assert!(
            s.created.is_some(),
            "write to segment {seg} before its create completed"
        );
        assert!(
            s.named,
            "write to segment {seg} before a namespace sync made its create durable"
        );
        let ext = offset..offset + data.len() as u64;
        assert!(offset >= HEADER && offset.is_multiple_of(record::ALIGN as u64));
        assert!(ext.end <= self.cfg.segment_size, "write beyond the segment");
        for e in &s.extents {
            assert!(
                e.end <= ext.start || ext.end <= e.start,
                "write {ext:?} overlaps {e:?} in segment {seg}"
            );
        }
        s.extents.push(ext);
        let seed = s.header.unwrap().seed();
        let frames = frames_of(&seed, &data);
        // Each frame's watermark claims records durable: they must be.
        let proven = self.proven();
        for h in &frames {
            assert!(
                h.watermark <= proven,
                "frame {} claims {} durable, the disk holds {proven}",
                h.lsn,
                h.watermark
            );
        }
        let (first, last) = (frames[0].lsn, frames[frames.len() - 1].lsn);
        self.oracle.writes.push(OWrite {
            token,
            seg,
            first,
            last,
            done: None,
            linked: sync,
        });
        self.frames.insert(token, frames);
        if range.start < self.last_range_start {
            self.wraps += 1;
        }
        self.last_range_start = range.start;
        Op::Write {
            seg,
            offset,
            range,
            data,
            sync,
        }
    }

    /// How the durable image of `seg` decodes (cached until it changes).
    fn decoded(&mut self, seg: u64) -> Decode {
        if let Some(d) = &self.segs[&seg].decoded {
            return d.clone();
        }
        let s = &self.segs[&seg];
        let mut dec = SegmentDecoder::new(&mut self.window, Mode::Strict);
        let mut rest = &s.durable[..];
        let mut header = None;
        let mut last = None;
        let end = loop {
            match dec.poll() {
                Decoded::NeedMore => {
                    if rest.is_empty() {
                        dec.finish();
                    } else {
                        let n = dec.feed(rest);
                        rest = &rest[n..];
                    }
                }
                Decoded::Header(h) => {
                    assert_eq!(Some(h), s.header, "durable header of segment {seg}");
                    header = Some(h);
                }
                Decoded::Record(r) => {
                    let lsn = r.header.lsn;
                    match self.model.get(&lsn.0) {
                        Some((kind, data)) => {
                            assert_eq!(r.header.kind, *kind, "kind of record {lsn}");
                            assert_eq!(r.payload, &data[..], "payload of record {lsn}");
                        }
                        None => {
                            assert_eq!(r.header.kind, Kind::Seal, "record {lsn} never appended");
                            assert!(r.payload.is_empty());
                        }
                    }
                    last = Some(lsn);
                }
                Decoded::Skipped(s) => panic!("strict mode skipped {s:?}"),
                Decoded::End(end) => break end,
                Decoded::Error(e) => panic!("segment {seg}: {e}"),
            }
        };
        let d = Decode { header, last, end };
        self.segs.get_mut(&seg).unwrap().decoded = Some(d.clone());
        d
    }

    /// The highest LSN the durable images prove: records from the log's start, segment after
    /// segment (each named, each but the last ending in a durable seal), with nothing missing.
    fn proven(&mut self) -> Lsn {
        if let Some(p) = self.proven {
            return p;
        }
        let mut next = self.base.next();
        let mut prev_nonce = None;
        let ids: Vec<u64> = self.segs.keys().copied().collect();
        for (k, id) in ids.into_iter().enumerate() {
            assert_eq!(id, self.first_seg + k as u64, "segments are consecutive");
            if !self.segs[&id].named {
                break;
            }
            let d = self.decoded(id);
            let Some(h) = d.header else { break };
            assert_eq!(h.first_lsn, next, "segment {id} continues the LSNs");
            if let Some(n) = prev_nonce {
                assert_eq!(h.prev_nonce, n, "segment {id} links to its predecessor");
            }
            if let Some(last) = d.last {
                next = last.next();
            }
            match d.end {
                End::Sealed { .. } => prev_nonce = Some(h.nonce),
                _ => break,
            }
        }
        let p = next.prev();
        self.proven = Some(p);
        p
    }

    /// The invariants, checked after every step.
    fn check(&mut self) {
        while let Some(e) = self.p.poll_event() {
            self.on_event(e);
        }
        let d = self.p.durable_lsn();
        let proven = self.proven();
        assert!(
            d <= proven,
            "durable_lsn {d}, but the durable images hold the records only up to {proven}"
        );
        assert!(
            d <= self.oracle.durable,
            "durable_lsn {d} beyond the rule's {}",
            self.oracle.durable
        );
        match self.poisoned_at {
            Some(at) => assert_eq!(d, at, "the durable LSN moved after the poisoning failure"),
            None => assert_eq!(d, self.oracle.durable, "durable_lsn differs from the rule"),
        }
        assert!(self.reported <= d);
        for f in &self.inflight {
            if let Op::Write { range, data, .. } = &f.op {
                assert_eq!(
                    self.p.bytes(range.clone()),
                    &data[..],
                    "bytes of write {} in flight overwritten",
                    f.token
                );
            }
        }
        if self.p.poisoned().is_some() {
            assert!(self.p.poll_io().is_none(), "a request after poisoning");
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Durable { upto } => {
                assert!(!self.poison_seen, "{e:?} after Poisoned");
                assert!(upto > self.reported, "{e:?} does not move forward");
                assert!(upto <= self.p.durable_lsn());
                assert!(upto <= self.proven(), "{e:?} beyond the durable images");
                self.reported = upto;
            }
            Event::Poisoned(p) => {
                assert!(!self.poison_seen, "Poisoned twice");
                assert_eq!(self.p.poisoned(), Some(p));
                self.poison_seen = true;
            }
            Event::Rolled { from, to } => {
                assert!(!self.poison_seen, "{e:?} after Poisoned");
                assert_eq!(to, from.next());
                assert!(
                    self.segs[&to.0].named,
                    "{e:?} before the new segment is named"
                );
                assert!(matches!(self.decoded(from.0).end, End::Sealed { .. }));
            }
            Event::Closed { last } => {
                assert!(!self.poison_seen, "{e:?} after Poisoned");
                assert!(self.closed.is_none(), "Closed twice");
                assert_eq!(last, self.p.durable_lsn());
                let seg = *self.segs.keys().last().unwrap();
                assert_eq!(
                    self.decoded(seg).end,
                    End::Sealed {
                        last_lsn: last,
                        offset: self.segs[&seg].durable.len() as u64
                    }
                );
                self.closed = Some(last);
            }
        }
        self.events.push(e);
    }

    // --- conveniences --------------------------------------------------------------------------

    /// The oldest in-flight request of `kind`.
    fn oldest(&self, kind: OpKind) -> Option<u64> {
        self.inflight
            .iter()
            .find(|f| f.op.kind() == kind)
            .map(|f| f.token)
    }

    fn tokens_of(&self, kind: OpKind) -> Vec<u64> {
        self.inflight
            .iter()
            .filter(|f| f.op.kind() == kind)
            .map(|f| f.token)
            .collect()
    }

    /// Drives I/O until the segment being appended to is created and named.
    fn ready(&mut self) {
        for _ in 0..100 {
            self.pump();
            let seg = self.p.segment().sequence.0;
            if self.segs.get(&seg).is_some_and(|s| s.named) {
                return;
            }
            let t = self
                .oldest(OpKind::Create)
                .or_else(|| self.oldest(OpKind::SyncNamespace))
                .or_else(|| self.inflight.first().map(|f| f.token))
                .expect("nothing in flight while waiting for the segment");
            self.complete(t, Ok(()));
        }
        panic!("the segment never became ready");
    }

    /// Completes everything, oldest first, until nothing is in flight or asked for.
    fn settle(&mut self) {
        for _ in 0..1_000_000 {
            self.pump();
            let Some(f) = self.inflight.first() else {
                return;
            };
            self.complete(f.token, Ok(()));
        }
        panic!("the pipeline never settled");
    }

    fn durable_events(&self) -> Vec<Lsn> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Durable { upto } => Some(*upto),
                _ => None,
            })
            .collect()
    }

    fn issued_kinds(&self) -> Vec<(OpKind, u64)> {
        self.history
            .iter()
            .filter_map(|h| match h {
                Hist::Issued { kind, seg, .. } => Some((*kind, *seg)),
                Hist::Done { .. } => None,
            })
            .collect()
    }
}

fn op_segment(op: &Op, otherwise: u64) -> u64 {
    match op {
        Op::Create { seg } | Op::Write { seg, .. } | Op::Sync { seg } => *seg,
        Op::SyncNamespace => otherwise,
    }
}

/// The frames of a write's bytes: every one validates, LSNs consecutive.
fn frames_of(seed: &Seed, data: &[u8]) -> Vec<RecordHeader> {
    let mut out: Vec<RecordHeader> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let bytes: &[u8; record::HEADER_LEN] =
            data[pos..pos + record::HEADER_LEN].try_into().unwrap();
        let HeaderCheck::Valid(h) = record::check_header(seed, bytes) else {
            panic!("a write holds a frame that does not validate at {pos}");
        };
        let len = h.frame_len();
        assert!(record::check_body(seed, &data[pos..pos + len]));
        if let Some(prev) = out.last() {
            assert_eq!(h.lsn, prev.lsn.next(), "LSNs in a write are consecutive");
        }
        out.push(h);
        pos += len;
    }
    assert_eq!(pos, data.len(), "a write ends at a frame's end");
    out
}

// ------------------------------------------------------------------------------------------------
// 1. A sync covers only the writes completed when it was issued
// ------------------------------------------------------------------------------------------------

#[test]
fn write_in_flight_at_sync_issue_is_not_durable_when_that_sync_completes() {
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
    sim.ready();
    let a = sim.append(b"first").unwrap();
    let b = sim.append(b"second").unwrap();
    let issued = sim.pump();
    let writes: Vec<u64> = issued.iter().map(|f| f.token).collect();
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert!(issued.iter().all(|f| f.op.kind() == OpKind::Write));
    let (w1, w2) = (writes[0], writes[1]);
    assert_eq!(sim.frames[&w1][0].lsn, a);
    assert_eq!(sim.frames[&w2][0].lsn, b);

    // W2 completes first; the sync issued now covers W2 only.
    sim.complete(w2, Ok(()));
    let sync = sim.pump();
    assert_eq!(sync.len(), 1);
    assert_eq!(sync[0].op, Op::Sync { seg: 0 });
    sim.complete(sync[0].token, Ok(()));
    // W2's bytes are durable, but W1 (LSN a) is not: nothing may be reported.
    assert_eq!(sim.p.durable_lsn(), Lsn::ZERO);
    assert!(sim.durable_events().is_empty());
    assert!(sim.pump().is_empty(), "no completed write is left unsynced");

    // W1 completes; the next sync reaches both.
    sim.complete(w1, Ok(()));
    let sync = sim.pump();
    assert_eq!(sync.len(), 1);
    assert_eq!(sim.p.durable_lsn(), Lsn::ZERO);
    sim.complete(sync[0].token, Ok(()));
    assert_eq!(sim.p.durable_lsn(), b);
    assert_eq!(sim.durable_events(), vec![b]);
}

#[test]
fn write_completing_while_a_sync_is_in_flight_waits_for_the_next_sync() {
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
    sim.ready();
    let a = sim.append(b"first").unwrap();
    let b = sim.append(b"second").unwrap();
    sim.pump();
    let w = sim.tokens_of(OpKind::Write);
    sim.complete(w[0], Ok(()));
    let s1 = sim.pump()[0].token;
    // W2 completes after S1 was issued: fdatasync does not cover it.
    sim.complete(w[1], Ok(()));
    assert!(sim.pump().is_empty(), "one sync at a time");
    sim.complete(s1, Ok(()));
    assert_eq!(sim.p.durable_lsn(), a);
    let s2 = sim.pump();
    assert_eq!(s2.len(), 1);
    assert_eq!(s2[0].op, Op::Sync { seg: 0 });
    sim.complete(s2[0].token, Ok(()));
    assert_eq!(sim.p.durable_lsn(), b);
    assert_eq!(sim.durable_events(), vec![a, b]);
}

// ------------------------------------------------------------------------------------------------
// 2. Every completion order follows the rule
// ------------------------------------------------------------------------------------------------

/// Runs `writes` single-record writes in flight, completing at each step the in-flight request
/// `choices[i]` (by token order); the harness compares the durable LSN with the rule after every
/// step. Returns how many requests are in flight after the last choice.
fn replay_interleaving(writes: usize, choices: &[usize]) -> usize {
    let mut buf = vec![0u8; 4096];
    let mut cfg = config(SyncPolicy::EveryRecord);
    cfg.max_writes_in_flight = writes;
    let mut sim = Sim::<8>::create(&mut buf, cfg);
    sim.ready();
    for i in 0..writes as u64 {
        sim.append(&payload(i, 8 + i as usize)).unwrap();
    }
    assert_eq!(sim.pump().len(), writes);
    for &c in choices {
        let mut tokens: Vec<u64> = sim.inflight.iter().map(|f| f.token).collect();
        tokens.sort_unstable();
        sim.complete(tokens[c], Ok(()));
        sim.pump();
    }
    if sim.inflight.is_empty() {
        assert_eq!(sim.p.durable_lsn(), Lsn(writes as u64));
    }
    sim.inflight.len()
}

#[test]
fn completions_in_every_order_follow_the_durability_rule() {
    for writes in 1..=4 {
        let mut leaves = 0;
        let mut stack = vec![Vec::new()];
        while let Some(prefix) = stack.pop() {
            let n = replay_interleaving(writes, &prefix);
            if n == 0 {
                leaves += 1;
            }
            for c in 0..n {
                let mut next = prefix.clone();
                next.push(c);
                stack.push(next);
            }
        }
        assert!(
            leaves >= (1..=writes).product::<usize>(),
            "{writes}: {leaves}"
        );
    }
}

#[test]
fn seeded_random_interleavings_follow_the_durability_rule() {
    for seed in 0..2_000u64 {
        let mut rng = Rng(seed);
        let mut buf = vec![0u8; 2048];
        let mut cfg = config(if rng.below(2) == 0 {
            SyncPolicy::EveryRecord
        } else {
            SyncPolicy::Batch {
                max_records: 1 + rng.below(3) as u32,
                max_bytes: 1 << 20,
                max_delay: 1 << 40,
            }
        });
        cfg.max_writes_in_flight = 1 + rng.below(6) as usize;
        let mut sim = Sim::<6>::create(&mut buf, cfg);
        sim.ready();
        let mut i = 0;
        for _ in 0..60 {
            match rng.below(5) {
                0 | 1 => {
                    let _ = sim.append(&payload(i, rng.below(40) as usize));
                    i += 1;
                }
                2 => sim.flush(),
                _ => {
                    if !sim.inflight.is_empty() {
                        let k = rng.below(sim.inflight.len() as u64) as usize;
                        sim.complete(sim.inflight[k].token, Ok(()));
                    }
                }
            }
            sim.pump();
        }
        sim.flush();
        sim.settle();
        assert_eq!(sim.p.durable_lsn(), sim.p.next_lsn().prev(), "seed {seed}");
    }
}

// ------------------------------------------------------------------------------------------------
// 3. Sync policies
// ------------------------------------------------------------------------------------------------

/// The LSNs of each write issued so far, in issue order.
fn write_lsns<const S: usize>(sim: &Sim<'_, S>) -> Vec<Vec<u64>> {
    sim.history
        .iter()
        .filter_map(|h| match h {
            Hist::Issued {
                token,
                kind: OpKind::Write,
                ..
            } => Some(sim.frames[token].iter().map(|f| f.lsn.0).collect()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_record_policy_cuts_each_record() {
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
    sim.ready();
    for i in 0..3 {
        sim.append(&payload(i, 10)).unwrap();
        let issued = sim.pump();
        assert_eq!(issued.len(), 1, "each append is written at once");
    }
    assert_eq!(write_lsns(&sim), vec![vec![1], vec![2], vec![3]]);
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(3));
}

#[test]
fn batch_policy_cuts_at_max_records() {
    let mut buf = vec![0u8; 4096];
    let policy = SyncPolicy::Batch {
        max_records: 3,
        max_bytes: 1 << 20,
        max_delay: 1 << 40,
    };
    let mut sim = Sim::<8>::create(&mut buf, config(policy));
    sim.ready();
    for round in 0..2u64 {
        for i in 0..2 {
            sim.append(&payload(i, 10)).unwrap();
            assert!(sim.pump().is_empty(), "cut before max_records");
        }
        sim.append(b"third").unwrap();
        let issued = sim.pump();
        assert_eq!(issued.len(), 1);
        let first = round * 3 + 1;
        assert_eq!(sim.frames[&issued[0].token].len(), 3);
        assert_eq!(sim.frames[&issued[0].token][0].lsn, Lsn(first));
    }
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(6));
}

#[test]
fn batch_policy_cuts_at_max_bytes() {
    let mut buf = vec![0u8; 4096];
    // Frames of an 8-byte payload take 40 bytes: the third reaches 120 >= 96.
    let policy = SyncPolicy::Batch {
        max_records: u32::MAX,
        max_bytes: 96,
        max_delay: 1 << 40,
    };
    let mut sim = Sim::<8>::create(&mut buf, config(policy));
    sim.ready();
    sim.append(&[1; 8]).unwrap();
    sim.append(&[2; 8]).unwrap();
    assert!(sim.pump().is_empty(), "80 bytes stay open");
    sim.append(&[3; 8]).unwrap();
    let issued = sim.pump();
    assert_eq!(issued.len(), 1);
    let Op::Write { range, .. } = &issued[0].op else {
        panic!("{issued:?}")
    };
    // The batch is cut by the frame that reaches max_bytes: it may exceed it by less than a frame.
    assert_eq!(range.len(), 120);
    // One frame of max_bytes (a 64-byte payload) is a batch on its own.
    sim.append(&[4; 64]).unwrap();
    let issued = sim.pump();
    assert_eq!(issued.len(), 1);
    assert_eq!(sim.frames[&issued[0].token].len(), 1);
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(4));
}

#[test]
fn batch_policy_cuts_at_max_delay_with_the_virtual_clock() {
    let mut buf = vec![0u8; 4096];
    let policy = SyncPolicy::Batch {
        max_records: 100,
        max_bytes: 1 << 20,
        max_delay: 1_000,
    };
    let mut sim = Sim::<8>::create(&mut buf, config(policy));
    sim.ready();
    sim.advance(5_000);
    assert_eq!(sim.p.poll_timeout(), None, "no batch, no timer");
    sim.append(b"a").unwrap();
    assert_eq!(sim.p.poll_timeout(), Some(6_000));
    sim.advance(500);
    // A later record does not push the deadline back.
    sim.append(b"b").unwrap();
    assert_eq!(sim.p.poll_timeout(), Some(6_000));
    sim.advance(499);
    assert!(sim.pump().is_empty(), "cut before the delay passed");
    // Told an earlier time than the deadline: nothing happens.
    sim.p.handle_timeout(5_999);
    assert!(sim.pump().is_empty());
    sim.advance(1);
    let issued = sim.pump();
    assert_eq!(issued.len(), 1);
    assert_eq!(sim.frames[&issued[0].token].len(), 2);
    assert_eq!(sim.p.poll_timeout(), None);
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(2));
    // The next batch gets its own deadline from its first record.
    sim.append(b"c").unwrap();
    assert_eq!(sim.p.poll_timeout(), Some(sim.now + 1_000));
    sim.advance(1_000);
    assert_eq!(sim.pump().len(), 1);
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(3));
}

#[test]
fn batch_delay_that_passes_with_every_slot_busy_cuts_when_a_slot_frees() {
    let mut buf = vec![0u8; 4096];
    let policy = SyncPolicy::Batch {
        max_records: 1,
        max_bytes: 1 << 20,
        max_delay: 1_000,
    };
    let mut cfg = config(policy);
    cfg.max_writes_in_flight = 2;
    let mut sim = Sim::<2>::create(&mut buf, cfg);
    sim.ready();
    sim.append(b"a").unwrap();
    sim.append(b"b").unwrap();
    assert_eq!(sim.pump().len(), 2);
    // Both slots busy: the third record waits in the open batch, its delay passes.
    sim.append(b"c").unwrap();
    sim.advance(2_000);
    assert_eq!(sim.p.poll_timeout(), None);
    assert!(sim.pump().is_empty());
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(3));
}

#[test]
fn manual_policy_cuts_only_on_flush() {
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::Manual));
    sim.ready();
    for i in 0..20 {
        sim.append(&payload(i, 30)).unwrap();
        sim.advance(1_000_000_000);
        assert!(sim.pump().is_empty());
    }
    assert_eq!(sim.p.poll_timeout(), None);
    sim.flush();
    let issued = sim.pump();
    assert_eq!(issued.len(), 1);
    assert_eq!(sim.frames[&issued[0].token].len(), 20);
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(20));
    // A flush with nothing open does nothing.
    sim.flush();
    assert!(sim.pump().is_empty());
}

// ------------------------------------------------------------------------------------------------
// 4. Linked mode
// ------------------------------------------------------------------------------------------------

#[test]
fn linked_writes_carry_their_own_sync_and_are_durable_on_completion() {
    let mut buf = vec![0u8; 4096];
    let mut cfg = config(SyncPolicy::EveryRecord);
    cfg.linked = true;
    cfg.segment_size = 1024;
    let mut sim = Sim::<8>::create(&mut buf, cfg);
    sim.ready();
    sim.append(b"one").unwrap();
    sim.append(b"two").unwrap();
    let w = sim.pump();
    assert_eq!(w.len(), 2);
    assert!(
        w.iter()
            .all(|f| matches!(f.op, Op::Write { sync: true, .. }))
    );
    // The second completes first: durable on the disk, but LSN 1 is not yet.
    sim.complete(w[1].token, Ok(()));
    assert!(sim.pump().is_empty(), "no separate sync in linked mode");
    assert_eq!(sim.p.durable_lsn(), Lsn::ZERO);
    sim.complete(w[0].token, Ok(()));
    assert_eq!(sim.p.durable_lsn(), Lsn(2));
    assert!(sim.pump().is_empty());
    // Many more, across several roll-overs.
    for i in 0..60 {
        sim.append(&payload(i, (i as usize * 7) % 60)).unwrap();
        sim.pump();
        if i % 3 == 0 {
            sim.settle();
        }
    }
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), sim.p.next_lsn().prev());
    assert!(sim.segs.len() > 3, "rolled over");
    assert!(
        sim.issued_kinds().iter().all(|(k, _)| *k != OpKind::Sync),
        "no Sync request in linked mode"
    );
}

#[test]
fn failed_linked_write_poisons() {
    for failure in [Failure::Io, Failure::NoSpace, Failure::Cancelled] {
        let mut buf = vec![0u8; 4096];
        let mut cfg = config(SyncPolicy::EveryRecord);
        cfg.linked = true;
        let mut sim = Sim::<8>::create(&mut buf, cfg);
        sim.ready();
        for i in 0..3 {
            sim.append(&payload(i, 5)).unwrap();
        }
        let w = sim.pump();
        assert_eq!(w.len(), 3);
        sim.complete(w[0].token, Ok(()));
        assert_eq!(sim.p.durable_lsn(), Lsn(1));
        sim.complete(w[1].token, Err(failure));
        sim.complete(w[2].token, Ok(()));
        assert_eq!(sim.p.durable_lsn(), Lsn(1));
        assert_eq!(
            sim.events.last(),
            Some(&Event::Poisoned(Poison {
                op: OpKind::Write,
                segment: SegmentId(0),
                failure
            }))
        );
        assert!(matches!(sim.append(b"x"), Err(AppendError::Poisoned(_))));
        assert_eq!(sim.durable_events(), vec![Lsn(1)]);
    }
}

// ------------------------------------------------------------------------------------------------
// 5. Poisoning
// ------------------------------------------------------------------------------------------------

/// After the poisoning failure: the event, refused appends and close, no request, and nothing
/// more durable whatever completes.
fn assert_poisoned<const S: usize>(
    sim: &mut Sim<'_, S>,
    op: OpKind,
    segment: u64,
    failure: Failure,
) {
    let poison = Poison {
        op,
        segment: SegmentId(segment),
        failure,
    };
    assert_eq!(sim.p.poisoned(), Some(poison));
    assert!(sim.events.contains(&Event::Poisoned(poison)));
    let durable = sim.p.durable_lsn();
    let reported = sim.durable_events().len();
    assert_eq!(sim.append(b"after"), Err(AppendError::Poisoned(poison)));
    assert_eq!(sim.close(), Err(AppendError::Poisoned(poison)));
    sim.flush();
    sim.advance(1 << 40);
    assert!(sim.pump().is_empty());
    // Everything else in flight completes successfully: still nothing.
    sim.settle();
    assert!(sim.p.poll_io().is_none());
    assert_eq!(sim.p.durable_lsn(), durable);
    assert_eq!(sim.durable_events().len(), reported);
    assert_eq!(sim.p.poll_event(), None);
}

const FAILURES: [Failure; 2] = [Failure::Io, Failure::NoSpace];

#[test]
fn failed_write_poisons_and_nothing_after_it_is_durable() {
    for failure in FAILURES {
        let mut buf = vec![0u8; 4096];
        let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
        sim.ready();
        sim.append(b"durable before").unwrap();
        sim.settle();
        assert_eq!(sim.p.durable_lsn(), Lsn(1));
        for i in 0..3 {
            sim.append(&payload(i, 9)).unwrap();
        }
        let w = sim.pump();
        assert_eq!(w.len(), 3);
        // W2 completes and a sync covering it goes out; W3 fails.
        sim.complete(w[0].token, Ok(()));
        let s = sim.pump();
        assert_eq!(s.len(), 1);
        sim.complete(w[1].token, Err(failure));
        // The sync covered LSN 2 on the disk; it must not be reported after the failure.
        sim.complete(s[0].token, Ok(()));
        assert!(sim.proven() >= Lsn(2));
        sim.complete(w[2].token, Ok(()));
        assert_eq!(sim.p.durable_lsn(), Lsn(1));
        assert_poisoned(&mut sim, OpKind::Write, 0, failure);
    }
}

#[test]
fn failed_sync_poisons_and_nothing_after_it_is_durable() {
    for failure in FAILURES {
        let mut buf = vec![0u8; 4096];
        let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
        sim.ready();
        sim.append(b"durable before").unwrap();
        sim.settle();
        sim.append(b"b").unwrap();
        sim.append(b"c").unwrap();
        let w = sim.pump();
        sim.complete(w[0].token, Ok(()));
        let s = sim.pump();
        assert_eq!(s[0].op, Op::Sync { seg: 0 });
        sim.complete(s[0].token, Err(failure));
        sim.complete(w[1].token, Ok(()));
        assert_eq!(sim.p.durable_lsn(), Lsn(1));
        assert_poisoned(&mut sim, OpKind::Sync, 0, failure);
    }
}

#[test]
fn failed_create_poisons() {
    for failure in FAILURES {
        let mut buf = vec![0u8; 4096];
        let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
        let c = sim.pump();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].op, Op::Create { seg: 0 });
        sim.append(b"waits for the segment").unwrap();
        assert!(sim.pump().is_empty());
        sim.complete(c[0].token, Err(failure));
        assert_eq!(sim.p.durable_lsn(), Lsn::ZERO);
        assert_poisoned(&mut sim, OpKind::Create, 0, failure);
    }
}

#[test]
fn failed_create_of_a_rolled_segment_poisons() {
    for failure in FAILURES {
        let mut buf = vec![0u8; 256];
        let mut cfg = config(SyncPolicy::EveryRecord);
        cfg.segment_size = 512;
        let mut sim = Sim::<8>::create(&mut buf, cfg);
        sim.ready();
        let mut i = 0;
        while sim.oldest(OpKind::Create).is_none() {
            sim.append(&payload(i, 40)).unwrap();
            i += 1;
            for _ in 0..4 {
                sim.pump();
                if sim.oldest(OpKind::Create).is_some() {
                    break;
                }
                if let Some(f) = sim.inflight.first() {
                    sim.complete(f.token, Ok(()));
                }
            }
        }
        let durable = sim.p.durable_lsn();
        let c = sim.oldest(OpKind::Create).unwrap();
        sim.append(b"into the new segment").unwrap();
        sim.complete(c, Err(failure));
        assert_eq!(sim.p.durable_lsn(), durable);
        assert_poisoned(&mut sim, OpKind::Create, 1, failure);
    }
}

#[test]
fn failed_namespace_sync_poisons() {
    for failure in FAILURES {
        let mut buf = vec![0u8; 4096];
        let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
        let c = sim.pump()[0].token;
        sim.complete(c, Ok(()));
        let n = sim.pump();
        assert_eq!(n[0].op, Op::SyncNamespace);
        sim.append(b"a").unwrap();
        sim.complete(n[0].token, Err(failure));
        assert_poisoned(&mut sim, OpKind::SyncNamespace, 0, failure);
    }
}

// ------------------------------------------------------------------------------------------------
// 6. Roll-over
// ------------------------------------------------------------------------------------------------

/// 512-byte segments: five 72-byte frames, then the seal (at 432..464); the buffer is smaller
/// than a segment's record space (see `roll_while_the_first_segment_is_being_created_keeps_its_create`).
fn small_segments(policy: SyncPolicy) -> Config {
    Config {
        segment_size: 512,
        ..config(policy)
    }
}

#[test]
fn roll_over_seals_the_old_segment_and_links_the_new_one() {
    let mut buf = vec![0u8; 300];
    let mut sim = Sim::<8>::create(&mut buf, small_segments(SyncPolicy::EveryRecord));
    sim.ready();
    let mut lsns = Vec::new();
    for i in 0..12 {
        lsns.push(sim.append(&payload(i, 40)).unwrap());
        sim.settle();
    }
    // LSN 6 is segment 0's seal, 12 segment 1's; LSNs continue across segments.
    assert_eq!(
        lsns,
        [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 13, 14].map(Lsn).to_vec()
    );
    assert_eq!(sim.p.durable_lsn(), Lsn(14));
    assert_eq!(
        sim.decoded(0).end,
        End::Sealed {
            last_lsn: Lsn(6),
            offset: 464
        }
    );
    let h0 = sim.segs[&0].header.unwrap();
    let h1 = sim.decoded(1).header.unwrap();
    assert_eq!(h1.sequence, SegmentId(1));
    assert_eq!(h1.first_lsn, Lsn(7));
    assert_eq!(h1.prev_nonce, h0.nonce);
    assert_eq!(h1.log_id, h0.log_id);
    assert_eq!(
        sim.decoded(1).end,
        End::Sealed {
            last_lsn: Lsn(12),
            offset: 464
        }
    );
    assert_eq!(sim.decoded(2).header.unwrap().prev_nonce, h1.nonce);
    assert_eq!(sim.p.segment().sequence, SegmentId(2));
    let rolled: Vec<Event> = sim
        .events
        .iter()
        .filter(|e| matches!(e, Event::Rolled { .. }))
        .copied()
        .collect();
    assert_eq!(
        rolled,
        vec![
            Event::Rolled {
                from: SegmentId(0),
                to: SegmentId(1)
            },
            Event::Rolled {
                from: SegmentId(1),
                to: SegmentId(2)
            }
        ]
    );
}

#[test]
fn new_segment_waits_for_the_durable_seal_and_its_namespace_sync() {
    let mut buf = vec![0u8; 300];
    let mut sim = Sim::<8>::create(&mut buf, small_segments(SyncPolicy::EveryRecord));
    sim.ready();
    for i in 0..5 {
        sim.append(&payload(i, 40)).unwrap();
        sim.settle();
    }
    // The sixth does not fit: the seal is framed, the record goes to segment 1.
    assert_eq!(sim.append(&payload(5, 40)), Ok(Lsn(7)));
    assert_eq!(sim.p.segment().sequence, SegmentId(1));
    let issued = sim.pump();
    assert_eq!(issued.len(), 1, "{issued:?}");
    let seal = issued[0].token;
    assert_eq!(sim.frames[&seal].len(), 1);
    assert_eq!(sim.frames[&seal][0].kind, Kind::Seal);
    assert_eq!(sim.frames[&seal][0].lsn, Lsn(6));
    sim.append(b"more").unwrap();
    assert!(
        sim.pump().is_empty(),
        "nothing for segment 1 while the seal is in flight"
    );
    sim.complete(seal, Ok(()));
    let sync = sim.pump();
    assert_eq!(sync.len(), 1);
    assert_eq!(sync[0].op, Op::Sync { seg: 0 });
    assert!(
        sim.oldest(OpKind::Create).is_none(),
        "create before the seal is durable"
    );
    sim.complete(sync[0].token, Ok(()));
    assert_eq!(sim.p.durable_lsn(), Lsn(6));
    let create = sim.pump();
    assert_eq!(create.len(), 1, "only the create: {create:?}");
    assert_eq!(create[0].op, Op::Create { seg: 1 });
    sim.complete(create[0].token, Ok(()));
    let ns = sim.pump();
    assert_eq!(ns.len(), 1, "only the namespace sync: {ns:?}");
    assert_eq!(ns[0].op, Op::SyncNamespace);
    assert!(!sim.events.iter().any(|e| matches!(e, Event::Rolled { .. })));
    sim.complete(ns[0].token, Ok(()));
    assert!(sim.events.contains(&Event::Rolled {
        from: SegmentId(0),
        to: SegmentId(1)
    }));
    let writes = sim.pump();
    assert!(!writes.is_empty());
    assert!(
        writes
            .iter()
            .all(|f| matches!(f.op, Op::Write { seg: 1, .. }))
    );
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(8));
    let order = sim.issued_kinds();
    let create = order
        .iter()
        .position(|r| *r == (OpKind::Create, 1))
        .unwrap();
    assert!(order[..create].iter().all(|(_, seg)| *seg != 1));
    assert_eq!(order[create + 1], (OpKind::SyncNamespace, u64::MAX));
    assert_eq!(order[create + 2], (OpKind::Write, 1));
}

#[test]
fn roll_while_the_first_segment_is_being_created_keeps_its_create() {
    // A buffer larger than a segment's record space lets appends fill segment 0 before it exists.
    let mut buf = vec![0u8; 1024];
    let mut sim = Sim::<8>::create(&mut buf, small_segments(SyncPolicy::EveryRecord));
    let create = sim.pump();
    assert_eq!(create[0].op, Op::Create { seg: 0 });
    for i in 0..6 {
        // The sixth needs a roll; refusing it (Full) until segment 0 is ready is fine.
        let _ = sim.append(&payload(i, 40));
    }
    // No write may go to segment 0 before its create and namespace sync completed (the harness
    // checks), and the create's completion must still be recognised.
    sim.pump();
    assert_eq!(
        sim.p.handle_completion(create[0].token, Ok(())),
        Ok(()),
        "the create's completion is no longer recognised"
    );
}

#[test]
fn second_roll_before_the_new_segment_is_created_waits() {
    let mut buf = vec![0u8; 1024];
    let mut sim = Sim::<8>::create(&mut buf, small_segments(NEVER));
    sim.ready();
    for i in 0..5 {
        sim.append(&payload(i, 40)).unwrap();
    }
    sim.flush();
    sim.settle();
    // Nothing completes: segment 1 (roll on the first append) fills up in the buffer and a second
    // roll seals it before it was ever created.
    for i in 0..12 {
        let _ = sim.append(&payload(i, 8));
    }
    sim.pump();
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), sim.p.next_lsn().prev());
}

// ------------------------------------------------------------------------------------------------
// 7. Back-pressure and the ring
// ------------------------------------------------------------------------------------------------

#[test]
fn full_buffer_refuses_appends_and_never_touches_bytes_in_flight() {
    let mut buf = vec![0u8; 300];
    let mut cfg = config(SyncPolicy::EveryRecord);
    cfg.max_writes_in_flight = 2;
    let mut sim = Sim::<4>::create(&mut buf, cfg);
    sim.ready();
    let mut appended = 0;
    loop {
        match sim.append(&payload(appended, 40)) {
            Ok(_) => appended += 1,
            Err(AppendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        sim.pump();
        assert!(appended < 10, "the buffer never filled");
    }
    assert_eq!(appended, 4, "four 72-byte frames fill 300 bytes");
    assert_eq!(
        sim.tokens_of(OpKind::Write).len(),
        2,
        "max_writes_in_flight"
    );
    let next = sim.p.next_lsn();
    assert_eq!(sim.append(b"x"), Err(AppendError::Full));
    assert_eq!(sim.p.next_lsn(), next, "nothing framed");
    // Complete one request at a time; the first append that fits wraps to the buffer's start
    // while later writes are still in flight (the harness checks their bytes at every step).
    let mut steps = 0;
    loop {
        let t = sim.inflight[0].token;
        sim.complete(t, Ok(()));
        sim.pump();
        steps += 1;
        if sim.append(&payload(appended, 40)).is_ok() {
            break;
        }
        assert!(steps < 20);
    }
    assert!(
        !sim.inflight.is_empty(),
        "room came back before everything was durable"
    );
    sim.pump();
    let last = sim
        .history
        .iter()
        .rev()
        .find_map(|h| match h {
            Hist::Issued {
                token,
                kind: OpKind::Write,
                ..
            } => Some(*token),
            _ => None,
        })
        .unwrap();
    assert_eq!(sim.wraps, 1, "the new frame went to the buffer's start");
    assert_eq!(sim.frames[&last][0].lsn, Lsn(5));
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(5));
}

#[test]
fn ring_wraps_many_times_and_every_record_reaches_the_durable_image() {
    for seed in 0..3u64 {
        let mut rng = Rng(seed ^ 0xfeed);
        let policy = match seed {
            0 => SyncPolicy::EveryRecord,
            1 => SyncPolicy::Batch {
                max_records: 3,
                max_bytes: 160,
                max_delay: 5_000,
            },
            _ => SyncPolicy::Manual,
        };
        let mut cfg = config(policy);
        cfg.segment_size = 8 * 1024;
        cfg.max_writes_in_flight = 3;
        let mut buf = vec![0u8; 400];
        let mut sim = Sim::<6>::create(&mut buf, cfg);
        let mut appended = 0u64;
        let mut full = 0;
        while appended < 2_000 {
            sim.pump();
            match rng.below(8) {
                0..=3 => match sim.append(&payload(appended, rng.below(65) as usize)) {
                    Ok(_) => appended += 1,
                    Err(AppendError::Full) => {
                        full += 1;
                        sim.flush();
                    }
                    Err(e) => panic!("{e}"),
                },
                4 => sim.advance(rng.below(3_000)),
                5 if policy == SyncPolicy::Manual => sim.flush(),
                _ => {
                    if !sim.inflight.is_empty() {
                        let k = rng.below(sim.inflight.len() as u64) as usize;
                        sim.complete(sim.inflight[k].token, Ok(()));
                    }
                }
            }
        }
        sim.flush();
        sim.settle();
        let last = sim.p.next_lsn().prev();
        assert_eq!(sim.p.durable_lsn(), last);
        assert_eq!(
            sim.proven(),
            last,
            "every record, intact, in the durable images"
        );
        assert!(sim.wraps >= 100, "seed {seed}: only {} wraps", sim.wraps);
        assert!(full > 0, "seed {seed}: the buffer never filled");
        assert!(
            sim.segs.len() > 10,
            "seed {seed}: rolled {} times",
            sim.segs.len()
        );
    }
}

#[test]
fn manual_policy_full_buffer_cuts_the_open_batch() {
    let mut buf = vec![0u8; 512];
    let mut sim = Sim::<4>::create(&mut buf, config(SyncPolicy::Manual));
    sim.ready();
    let mut appended = 0;
    while sim.append(&payload(appended, 40)).is_ok() {
        appended += 1;
        sim.pump();
    }
    assert_eq!(appended, 7);
    // Nothing is in flight and nothing will be: unless the full buffer cuts its batch (as the
    // policy's documentation says), no completion can ever make room.
    let issued = sim.pump();
    assert!(
        !issued.is_empty(),
        "Full with nothing in flight: a deadlock without flush()"
    );
    sim.settle();
    assert!(sim.append(b"fits again").is_ok());
}

// ------------------------------------------------------------------------------------------------
// 8. Resume and close
// ------------------------------------------------------------------------------------------------

#[test]
fn resume_syncs_the_recovered_segment_before_reporting_anything_durable() {
    let rec = recovered(5, false);
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::resume(&mut buf, config(SyncPolicy::EveryRecord), &rec, false);
    assert_eq!(sim.p.durable_lsn(), Lsn::ZERO);
    assert_eq!(sim.p.next_lsn(), Lsn(6));
    let first = sim.pump();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].op, Op::Sync { seg: 0 });
    // Appends are framed but nothing is written before the recovery sync completes.
    assert_eq!(sim.append(b"six"), Ok(Lsn(6)));
    assert!(sim.pump().is_empty());
    assert_eq!(sim.p.durable_lsn(), Lsn::ZERO);
    assert!(sim.events.is_empty());
    assert!(!sim.p.is_idle());
    sim.complete(first[0].token, Ok(()));
    assert_eq!(sim.durable_events(), vec![Lsn(5)]);
    let w = sim.pump();
    assert_eq!(w.len(), 1);
    let Op::Write { seg: 0, offset, .. } = w[0].op else {
        panic!("{w:?}")
    };
    assert_eq!(offset, rec.cut, "appends continue where the records end");
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(6));
    assert!(sim.p.is_idle());
}

#[test]
fn resume_with_seal_at_cut_seals_the_torn_tail_and_continues_in_a_new_segment() {
    let rec = recovered(4, true);
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::resume(&mut buf, config(SyncPolicy::EveryRecord), &rec, true);
    let first = sim.pump();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].op, Op::Sync { seg: 0 });
    // The seal takes LSN 5; the next append LSN 6 in segment 1.
    assert_eq!(sim.append(b"after the cut"), Ok(Lsn(6)));
    assert!(
        sim.pump().is_empty(),
        "the seal waits for the recovery sync"
    );
    assert_eq!(sim.p.durable_lsn(), Lsn::ZERO);
    sim.complete(first[0].token, Ok(()));
    assert_eq!(sim.p.durable_lsn(), Lsn(4));
    // The recovered image still ends in the torn frame.
    assert!(matches!(sim.decoded(0).end, End::Torn { offset, .. } if offset == rec.cut));
    let seal = sim.pump();
    assert_eq!(seal.len(), 1, "{seal:?}");
    let Op::Write {
        seg: 0,
        offset,
        ref data,
        ..
    } = seal[0].op
    else {
        panic!("{seal:?}")
    };
    assert_eq!((offset, data.len()), (rec.cut, SEAL_LEN));
    assert_eq!(sim.frames[&seal[0].token][0].kind, Kind::Seal);
    assert_eq!(sim.frames[&seal[0].token][0].watermark, Lsn(4));
    sim.complete(seal[0].token, Ok(()));
    let sync = sim.pump();
    assert_eq!(sync[0].op, Op::Sync { seg: 0 });
    sim.complete(sync[0].token, Ok(()));
    assert_eq!(
        sim.decoded(0).end,
        End::Sealed {
            last_lsn: Lsn(5),
            offset: rec.cut + SEAL_LEN as u64
        }
    );
    let create = sim.pump();
    assert_eq!(create[0].op, Op::Create { seg: 1 });
    sim.settle();
    let h1 = sim.segs[&1].header.unwrap();
    assert_eq!((h1.first_lsn, h1.prev_nonce), (Lsn(6), rec.header.nonce));
    assert!(sim.events.contains(&Event::Rolled {
        from: SegmentId(0),
        to: SegmentId(1)
    }));
    assert_eq!(sim.p.durable_lsn(), Lsn(6));
}

#[test]
fn failed_recovery_sync_does_not_make_recovered_records_durable() {
    for seal_at_cut in [false, true] {
        let rec = recovered(5, seal_at_cut);
        let mut buf = vec![0u8; 4096];
        let mut sim =
            Sim::<8>::resume(&mut buf, config(SyncPolicy::EveryRecord), &rec, seal_at_cut);
        let sync = sim.pump();
        // The harness checks that durable_lsn() stays at 0: the recovered records were never
        // proven durable.
        sim.complete(sync[0].token, Err(Failure::Io));
        assert_eq!(sim.p.durable_lsn(), Lsn::ZERO);
    }
}

#[test]
fn close_writes_a_final_seal_once_everything_is_durable() {
    let mut buf = vec![0u8; 4096];
    let policy = SyncPolicy::Batch {
        max_records: 10,
        max_bytes: 1 << 20,
        max_delay: 1 << 40,
    };
    let mut sim = Sim::<8>::create(&mut buf, config(policy));
    sim.ready();
    sim.append(b"a").unwrap();
    sim.append(b"b").unwrap();
    assert_eq!(sim.close(), Ok(()));
    assert_eq!(sim.append(b"c"), Err(AppendError::Closed));
    assert_eq!(sim.close(), Ok(()), "closing twice is harmless");
    // The open batch is cut at once; the seal is not in it.
    let w = sim.pump();
    assert_eq!(w.len(), 1);
    assert!(sim.frames[&w[0].token].iter().all(|f| f.kind == Kind::Data));
    sim.complete(w[0].token, Ok(()));
    let s = sim.pump();
    assert_eq!(s[0].op, Op::Sync { seg: 0 });
    sim.complete(s[0].token, Ok(()));
    assert_eq!(sim.p.durable_lsn(), Lsn(2));
    // Only now the seal, vouching for both.
    let seal = sim.pump();
    assert_eq!(seal.len(), 1);
    let frames = &sim.frames[&seal[0].token];
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (frames[0].kind, frames[0].lsn, frames[0].watermark),
        (Kind::Seal, Lsn(3), Lsn(2))
    );
    assert!(!sim.events.iter().any(|e| matches!(e, Event::Closed { .. })));
    sim.settle();
    assert_eq!(sim.closed, Some(Lsn(3)));
    assert_eq!(sim.events.last(), Some(&Event::Closed { last: Lsn(3) }));
    assert_eq!(
        sim.decoded(0).end,
        End::Sealed {
            last_lsn: Lsn(3),
            offset: HEADER + 2 * 40 + SEAL_LEN as u64
        }
    );
    assert!(sim.p.is_idle());
    assert!(sim.pump().is_empty());
}

#[test]
fn close_of_a_new_log_and_close_during_a_roll() {
    // Nothing appended: the log is created and holds only its seal.
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
    sim.close().unwrap();
    sim.settle();
    assert_eq!(sim.closed, Some(Lsn(1)));
    // Closed while the new segment waits for the old one's seal.
    let mut buf = vec![0u8; 300];
    let mut sim = Sim::<8>::create(&mut buf, small_segments(SyncPolicy::EveryRecord));
    sim.ready();
    for i in 0..5 {
        sim.append(&payload(i, 40)).unwrap();
        sim.settle();
    }
    sim.append(&payload(5, 40)).unwrap();
    sim.close().unwrap();
    sim.settle();
    assert_eq!(sim.closed, Some(Lsn(8)));
    assert_eq!(
        sim.decoded(1).end,
        End::Sealed {
            last_lsn: Lsn(8),
            offset: HEADER + 72 + 32
        }
    );
}

#[test]
fn close_right_after_resume_seals_only_once_the_recovered_records_are_durable() {
    let rec = recovered(3, false);
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::resume(&mut buf, config(SyncPolicy::EveryRecord), &rec, false);
    sim.close().unwrap();
    let sync = sim.pump();
    assert_eq!(sync.len(), 1);
    sim.complete(sync[0].token, Ok(()));
    let seal = sim.pump();
    assert_eq!(seal.len(), 1);
    let frames = &sim.frames[&seal[0].token];
    assert_eq!(
        (frames[0].kind, frames[0].lsn, frames[0].watermark),
        (Kind::Seal, Lsn(4), Lsn(3)),
        "the final seal vouches for every record before it"
    );
    sim.settle();
    assert_eq!(sim.closed, Some(Lsn(4)));
}

// ------------------------------------------------------------------------------------------------
// 9. Misuse
// ------------------------------------------------------------------------------------------------

/// What a driver can observe of the pipeline without changing it.
fn observable<const S: usize>(sim: &Sim<'_, S>) -> (Lsn, Lsn, Option<Poison>, bool, Option<u64>) {
    (
        sim.p.durable_lsn(),
        sim.p.next_lsn(),
        sim.p.poisoned(),
        sim.p.is_idle(),
        sim.p.poll_timeout(),
    )
}

/// Reports a completion the pipeline must refuse, and checks that nothing changed.
fn refuse<const S: usize>(sim: &mut Sim<'_, S>, token: u64, result: Result<(), Failure>) {
    let before = observable(sim);
    assert_eq!(
        sim.p.handle_completion(token, result),
        Err(UnknownCompletion { token })
    );
    assert_eq!(
        observable(sim),
        before,
        "an unknown completion changed the pipeline"
    );
    assert_eq!(sim.p.poll_event(), None);
}

#[test]
fn unknown_completion_tokens_are_refused_and_change_nothing() {
    let mut buf = vec![0u8; 4096];
    let mut cfg = config(SyncPolicy::EveryRecord);
    cfg.max_writes_in_flight = 1;
    let mut sim = Sim::<8>::create(&mut buf, cfg);
    refuse(&mut sim, 0, Ok(()));
    refuse(&mut sim, 12_345, Err(Failure::Io));
    let create = sim.pump()[0].token;
    sim.complete(create, Ok(()));
    refuse(&mut sim, create, Ok(()));
    let ns = sim.pump()[0].token;
    sim.complete(ns, Ok(()));
    refuse(&mut sim, ns, Err(Failure::Io));
    sim.append(b"a").unwrap();
    sim.append(b"b").unwrap();
    let w1 = sim.pump();
    assert_eq!(w1.len(), 1, "one write in flight at most");
    let w1 = w1[0].token;
    // The second batch is cut (its token taken) but not issued: not in flight.
    let queued = w1 + 1;
    refuse(&mut sim, queued, Ok(()));
    refuse(&mut sim, queued, Err(Failure::NoSpace));
    sim.complete(w1, Ok(()));
    refuse(&mut sim, w1, Ok(()));
    let next = sim.pump();
    let sync = next
        .iter()
        .find(|f| f.op.kind() == OpKind::Sync)
        .unwrap()
        .token;
    let w2 = next
        .iter()
        .find(|f| f.op.kind() == OpKind::Write)
        .unwrap()
        .token;
    assert_eq!(w2, queued, "the refused token was that of the queued write");
    sim.complete(sync, Ok(()));
    refuse(&mut sim, sync, Ok(()));
    refuse(&mut sim, sync, Err(Failure::Io));
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(2));
    assert!(sim.p.poisoned().is_none());
    refuse(&mut sim, u64::MAX, Ok(()));
}

#[test]
fn duplicate_completion_of_a_failed_create_is_unknown() {
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
    let create = sim.pump()[0].token;
    sim.complete(create, Err(Failure::Io));
    refuse(&mut sim, create, Ok(()));
}

#[test]
fn impossible_configs_are_refused() {
    fn refused<const S: usize>(buf_len: usize, cfg: Config) -> Option<ConfigError> {
        let mut buf = vec![0u8; buf_len];
        Pipeline::<S>::create(&mut buf, cfg, first_header()).err()
    }
    let ok = config(SyncPolicy::EveryRecord);
    // max_payload 64: the largest frame is 96 bytes.
    let needed = 2 * record::frame_len(64) + 2 * SEAL_LEN;
    assert_eq!(needed, 256);
    assert_eq!(refused::<4>(needed, ok), None);
    assert_eq!(
        refused::<4>(needed - 1, ok),
        Some(ConfigError::BufferTooSmall { needed })
    );
    assert_eq!(
        refused::<4>(
            4096,
            Config {
                max_writes_in_flight: 0,
                ..ok
            }
        ),
        Some(ConfigError::WritesInFlight)
    );
    assert_eq!(
        refused::<4>(
            4096,
            Config {
                max_writes_in_flight: 5,
                ..ok
            }
        ),
        Some(ConfigError::WritesInFlight)
    );
    assert_eq!(
        refused::<4>(
            4096,
            Config {
                max_writes_in_flight: 4,
                ..ok
            }
        ),
        None
    );
    let seg_needed = (segment::HEADER_LEN + record::frame_len(64) + SEAL_LEN) as u64;
    assert_eq!(
        refused::<4>(
            4096,
            Config {
                segment_size: seg_needed - 1,
                ..ok
            }
        ),
        Some(ConfigError::SegmentTooSmall { needed: seg_needed })
    );
    assert_eq!(
        refused::<4>(
            4096,
            Config {
                segment_size: seg_needed,
                ..ok
            }
        ),
        None
    );
    assert_eq!(
        refused::<4>(
            4096,
            Config {
                max_payload: record::MAX_PAYLOAD + 1,
                ..ok
            }
        ),
        Some(ConfigError::PayloadLimit)
    );
    // The format's limit itself is allowed; it only needs a buffer for it.
    assert!(matches!(
        refused::<4>(
            4096,
            Config {
                max_payload: record::MAX_PAYLOAD,
                ..ok
            }
        ),
        Some(ConfigError::BufferTooSmall { .. })
    ));
    assert_eq!(
        refused::<4>(
            4096,
            config(SyncPolicy::Batch {
                max_records: 0,
                max_bytes: 1,
                max_delay: 1
            })
        ),
        Some(ConfigError::Policy)
    );
    // Resume positions inside the header or off the frame alignment. (An offset past this
    // config's segment size is accepted: a segment written with larger segments rolls at once.)
    let rec = recovered(2, false);
    for offset in [0, HEADER - 8, rec.cut + 1] {
        let mut buf = vec![0u8; 4096];
        let resume = Resume {
            header: rec.header,
            offset,
            next_lsn: Lsn(3),
            epoch: 0,
            tail: ResumeTail::Open,
        };
        assert_eq!(
            Pipeline::<4>::resume(&mut buf, ok, resume).err(),
            Some(ConfigError::ResumePosition),
            "offset {offset}"
        );
    }
}

#[test]
fn oversized_payload_is_refused_with_nothing_framed() {
    let mut buf = vec![0u8; 4096];
    let mut sim = Sim::<8>::create(&mut buf, config(SyncPolicy::EveryRecord));
    sim.ready();
    assert_eq!(sim.append(&[7; 65]), Err(AppendError::TooLarge { len: 65 }));
    assert_eq!(sim.p.next_lsn(), Lsn(1));
    assert!(sim.pump().is_empty());
    assert_eq!(sim.append_kind(Kind::Seal, b""), Err(AppendError::SealKind));
    assert!(sim.pump().is_empty());
    assert_eq!(sim.append(&[7; 64]), Ok(Lsn(1)));
    assert_eq!(
        sim.append_kind(Kind::Checkpoint, &9u64.to_le_bytes()),
        Ok(Lsn(2))
    );
    assert_eq!(sim.append_epoch(3), Ok(Lsn(3)));
    sim.settle();
    assert_eq!(sim.p.durable_lsn(), Lsn(3));
}

// ------------------------------------------------------------------------------------------------
// 10. Random operation sequences
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Action {
    /// Append a data record of this many bytes (over 64 is refused as too large).
    Append(usize),
    Epoch(u64),
    Flush,
    /// Complete the in-flight request `pick % in_flight`, failing it if the case injects failures.
    Complete {
        pick: usize,
        fail: Option<Failure>,
    },
    Advance(u64),
}

#[derive(Clone, Debug)]
struct Case {
    cfg: Config,
    buf_len: usize,
    actions: Vec<Action>,
    /// Whether `Complete { fail: Some(_) }` fails (else it succeeds).
    inject: bool,
    /// Close before this action.
    close_at: Option<usize>,
    /// Start from a recovered segment of this many records (torn tail: sealed at the cut).
    resume: Option<(u64, bool)>,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        10 => (0usize..=70).prop_map(Action::Append),
        1 => (0u64..100).prop_map(Action::Epoch),
        2 => Just(Action::Flush),
        12 => any::<usize>().prop_map(|pick| Action::Complete { pick, fail: None }),
        1 => (any::<usize>(), prop_oneof![Just(Failure::Io), Just(Failure::NoSpace)])
            .prop_map(|(pick, f)| Action::Complete { pick, fail: Some(f) }),
        3 => (0u64..3_000).prop_map(Action::Advance),
    ]
}

/// Random configs; the buffer stays within a segment's record space unless `big_buffer` (the
/// condition under which `roll_while_the_first_segment_is_being_created_keeps_its_create` fails).
fn case(big_buffer: bool) -> impl Strategy<Value = Case> {
    let cfg = (
        0u8..4,
        1u32..5,
        32u32..400,
        100u64..5_000,
        any::<bool>(),
        1usize..=4,
        456u64..2_048,
        any::<u64>(),
    )
        .prop_map(
            move |(pol, max_records, max_bytes, max_delay, linked, w, seg, r)| {
                let policy = match pol {
                    0 => SyncPolicy::EveryRecord,
                    3 => SyncPolicy::Manual,
                    _ => SyncPolicy::Batch {
                        max_records,
                        max_bytes,
                        max_delay,
                    },
                };
                let cfg = Config {
                    policy,
                    max_writes_in_flight: w,
                    linked,
                    segment_size: seg,
                    max_payload: 64,
                    nonce_seed: r | 1,
                };
                let min = 2 * record::frame_len(64) + 2 * SEAL_LEN;
                let max = if big_buffer {
                    4096
                } else {
                    seg as usize - segment::HEADER_LEN - record::frame_len(64) - SEAL_LEN
                };
                (cfg, min + (r >> 8) as usize % (max - min + 1))
            },
        );
    (
        cfg,
        prop::collection::vec(action(), 1..150),
        any::<bool>(),
        prop::option::of(0usize..200),
        prop::option::weighted(0.3, (0u64..=3, any::<bool>())),
    )
        .prop_map(|((cfg, buf_len), actions, inject, close_at, resume)| Case {
            cfg,
            buf_len,
            actions,
            inject,
            close_at,
            resume,
        })
}

/// Runs a case like a driver: after every action, submit everything `poll_io` asks for. The
/// harness checks every invariant after every step; at the end everything must become durable
/// (or, poisoned, nothing more).
fn run_case(case: &Case) {
    let mut buf = vec![0u8; case.buf_len];
    let rec = case.resume.map(|(n, torn)| (recovered(n, torn), torn));
    let mut sim = match &rec {
        None => Sim::<4>::create(&mut buf, case.cfg),
        Some((rec, torn)) => Sim::<4>::resume(&mut buf, case.cfg, rec, *torn),
    };
    // The recovery sync is never failed here: see
    // `failed_recovery_sync_does_not_make_recovered_records_durable`.
    let recovery_sync = rec.as_ref().map(|_| sim.pump()[0].token);
    sim.pump();
    let mut closing = false;
    for (k, a) in case.actions.iter().enumerate() {
        if case.close_at == Some(k) {
            let poisoned = sim.p.poisoned();
            match sim.close() {
                Ok(()) => closing = true,
                Err(e) => assert_eq!(Some(e), poisoned.map(AppendError::Poisoned)),
            }
        }
        match a {
            Action::Append(len) => {
                let r = sim.append(&payload(k as u64, *len));
                if let Err(e) = r {
                    let expected = if let Some(p) = sim.p.poisoned() {
                        AppendError::Poisoned(p)
                    } else if closing {
                        AppendError::Closed
                    } else if *len > 64 {
                        AppendError::TooLarge { len: *len }
                    } else {
                        AppendError::Full
                    };
                    assert_eq!(e, expected);
                } else {
                    assert!(*len <= 64 && !closing);
                }
            }
            Action::Epoch(e) => {
                let _ = sim.append_epoch(*e);
            }
            Action::Flush => sim.flush(),
            Action::Complete { pick, fail } => {
                if !sim.inflight.is_empty() {
                    let token = sim.inflight[pick % sim.inflight.len()].token;
                    let result = match fail {
                        Some(f) if case.inject && Some(token) != recovery_sync => Err(*f),
                        _ => Ok(()),
                    };
                    sim.complete(token, result);
                }
            }
            Action::Advance(ns) => sim.advance(*ns),
        }
        sim.pump();
    }
    sim.flush();
    sim.settle();
    if sim.p.poisoned().is_none() {
        let last = sim.p.next_lsn().prev();
        assert_eq!(
            sim.p.durable_lsn(),
            last,
            "everything appended becomes durable"
        );
        assert_eq!(sim.proven(), last);
        assert!(sim.p.is_idle());
        if closing {
            assert_eq!(sim.closed, Some(last));
        }
    } else {
        assert!(sim.poison_seen);
        assert!(sim.closed.is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_operation_sequences_keep_every_invariant(case in case(false)) {
        run_case(&case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_operation_sequences_with_a_buffer_larger_than_a_segment(case in case(true)) {
        run_case(&case);
    }
}
