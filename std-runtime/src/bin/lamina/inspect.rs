//! `lamina inspect PATH`: the segments of a log directory, of every core of a per-core set, or
//! one segment file, each read on its own (id, LSNs, epoch, size, how it ends), and with
//! `--records` the records themselves. Read-only: no lock, no repair.

use crate::Finding;
use crate::detect::{self, Target};
use crate::errors::CliError;
use crate::output::{Out, hex, lsn_json, lsn_range, preview, segment_path, text, text_of};
use crate::segfile::{self, SegmentScan, describe_end, used};
use lamina::file_backend::names::parse_segment_file_name;
use lamina::{Lsn, Mode, PerCoreDescription, SegmentId};
use lamina_core::decode::{End, Record};
use lamina_core::record::Kind;
use lamina_core::segment::{HEADER_LEN, SegmentHeader};
use serde_json::{Value, json};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What `inspect` shows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Show {
    /// Print the records.
    pub(crate) records: bool,
    /// Only records from this LSN on.
    pub(crate) from: Lsn,
    /// Only records up to this LSN.
    pub(crate) to: Lsn,
    /// Payload bytes shown per record (`None`: all of them).
    pub(crate) preview: Option<usize>,
    /// Payloads in hex even when they are text.
    pub(crate) hex: bool,
}

/// Runs `inspect` on `path`.
///
/// # Errors
/// A path that cannot be read or is not a log.
pub(crate) fn run(path: &Path, show: &Show, out: &mut Out) -> Result<Finding, CliError> {
    let mut window = segfile::window();
    match detect::detect(path)? {
        Target::Log(dir) => inspect_dir(&dir, None, show, &mut window, out),
        Target::Set { dir, description } => {
            out.human(format!(
                "{}: per-core log set {:016x}, {} cores",
                dir.display(),
                description.set_id,
                description.cores
            ));
            out.json(&json!({
                "type": "set",
                "path": text_of(&dir),
                "set_id": format!("{:016x}", description.set_id),
                "cores": description.cores,
            }));
            let mut worst = Finding::ok();
            for core in 0..description.cores as usize {
                let core_dir = PerCoreDescription::core_dir(&dir, core);
                out.human("");
                let found = inspect_dir(&core_dir, Some(core), show, &mut window, out)
                    .unwrap_or_else(Finding::from);
                worst = worst.max(found);
            }
            Ok(worst)
        }
        Target::Checkpoints(dir) => crate::checkpoints::inspect(&dir, show.records, out),
        Target::Store(dir) => {
            let wal = run(&dir.join("wal"), show, out)?;
            out.human("");
            let checkpoints =
                crate::checkpoints::inspect(&dir.join("checkpoints"), show.records, out)?;
            Ok(wal.max(checkpoints))
        }
        Target::Segment(file) => {
            let mut rows = Vec::new();
            let scan = inspect_segment(&file, None, show, &mut window, out)?;
            rows.push(scan);
            table(&rows, true, out);
            Ok(Finding::ok())
        }
    }
}

/// Inspects the log in `dir` (core `core` of a set, when it is one).
fn inspect_dir(
    dir: &Path,
    core: Option<usize>,
    show: &Show,
    window: &mut [u8],
    out: &mut Out,
) -> Result<Finding, CliError> {
    let ids = list(dir)?;
    let headers: Vec<Option<SegmentHeader>> = ids
        .iter()
        .map(|id| header(&segment_path(dir, *id)))
        .collect();
    let first = headers.iter().flatten().next();
    let prefix = core.map_or_else(String::new, |c| format!("core {c}: "));
    out.human(format!(
        "{prefix}{}: log directory, {} segments{}",
        dir.display(),
        ids.len(),
        first.map_or_else(String::new, |h| format!(
            ", log {:016x}, core {}",
            h.log_id, h.core
        ))
    ));
    out.json(&json!({
        "type": "log",
        "path": text_of(dir),
        "core_index": core,
        "segments": ids.len(),
        "log_id": first.map(|h| format!("{:016x}", h.log_id)),
        "core": first.map(|h| h.core),
    }));
    let mut rows = Vec::new();
    // Whether every segment is shown (not only those in the LSN range).
    let mut every = true;
    for (i, id) in ids.iter().enumerate() {
        if out.closed() {
            break;
        }
        let file = segment_path(dir, *id);
        if show.records && !overlaps(&headers, i, show) {
            every = false;
            continue;
        }
        match inspect_segment(&file, core, show, window, out) {
            Ok(scan) => rows.push(scan),
            Err(e) => {
                // The rows read so far are still shown.
                table(&rows, false, out);
                return Err(e);
            }
        }
    }
    table(&rows, every, out);
    Ok(Finding::ok())
}

/// Whether segment `i`, by the first LSNs of its header and its successor's, may hold records
/// in the range `show` asks for (a segment whose header does not validate may hold anything).
fn overlaps(headers: &[Option<SegmentHeader>], i: usize, show: &Show) -> bool {
    let Some(Some(h)) = headers.get(i) else {
        return true;
    };
    if h.first_lsn > show.to {
        return false;
    }
    match headers.get(i + 1) {
        Some(Some(next)) if next.sequence == h.sequence.next() => next.first_lsn > show.from,
        _ => true,
    }
}

/// The segment ids of the files in `dir`, ascending.
fn list(dir: &Path) -> Result<Vec<SegmentId>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::io(dir, &e))?;
    let mut ids: Vec<SegmentId> = entries
        .flatten()
        .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The header of the segment file at `path`, if it has one that validates.
fn header(path: &Path) -> Option<SegmentHeader> {
    let file = segfile::open(path).ok()?;
    let mut bytes = [0u8; HEADER_LEN];
    file.read_exact_at(&mut bytes, 0).ok()?;
    SegmentHeader::parse(&bytes).ok()
}

/// Reads one segment file, printing its records when asked to.
fn inspect_segment(
    file: &Path,
    core: Option<usize>,
    show: &Show,
    window: &mut [u8],
    out: &mut Out,
) -> Result<SegmentScan, CliError> {
    if show.records {
        out.human(format!("segment {}", file.display()));
    }
    let segment = header(file).map(|h| h.sequence);
    // The segment is read to its end even past the range, so that its row says how it ends.
    let scan = segfile::scan(file, window, Mode::Strict, &mut |r| {
        let lsn = r.header.lsn;
        if show.records && lsn >= show.from && lsn <= show.to {
            record(file, segment, r, show, out);
        }
        !out.closed()
    })?;
    if show.records {
        out.human(format!("  end: {}", describe_end(&scan.end).1));
    }
    out.json(&segment_json(&scan, core));
    Ok(scan)
}

/// Prints one record.
fn record(file: &Path, segment: Option<SegmentId>, r: &Record<'_>, show: &Show, out: &mut Out) {
    let h = r.header;
    let marker = match h.kind {
        Kind::Epoch | Kind::Checkpoint => <[u8; 8]>::try_from(r.payload)
            .ok()
            .map(|b| u64::from_le_bytes(b).to_string()),
        _ => None,
    };
    let shown = match (h.kind, &marker) {
        (Kind::Data, _) => preview(r.payload, show.preview, show.hex),
        (_, Some(value)) => value.clone(),
        _ => String::new(),
    };
    out.human(format!(
        "  LSN {:<8} {:<10} {:>8} B  offset {:<8} watermark {:<8} {shown}",
        h.lsn.0,
        h.kind.to_string(),
        h.len,
        r.offset,
        h.watermark.0
    ));
    if out.style().json {
        let limit = show.preview.unwrap_or(r.payload.len());
        let bytes = r.payload.get(..limit).unwrap_or(r.payload);
        out.json(&json!({
            "type": "record",
            "file": text_of(file),
            "segment": segment.map(|s| s.0),
            "offset": r.offset,
            "lsn": h.lsn.0,
            "kind": h.kind.to_string(),
            "watermark": h.watermark.0,
            "len": h.len,
            "payload_hex": hex(bytes),
            "payload_text": text(bytes),
            "truncated": bytes.len() < r.payload.len(),
        }));
    }
}

fn segment_json(scan: &SegmentScan, core: Option<usize>) -> Value {
    let h = scan.header;
    let (word, detail) = describe_end(&scan.end);
    json!({
        "type": "segment",
        "file": text_of(&scan.path),
        "core_index": core,
        "segment": h.map(|h| h.sequence.0),
        "log_id": h.map(|h| format!("{:016x}", h.log_id)),
        "core": h.map(|h| h.core),
        "epoch": h.map(|h| h.epoch),
        "nonce": h.map(|h| format!("{:016x}", h.nonce)),
        "prev_nonce": h.map(|h| format!("{:016x}", h.prev_nonce)),
        "header_first_lsn": h.map(|h| h.first_lsn.0),
        "first_lsn": lsn_json(scan.first_lsn),
        "last_lsn": lsn_json(scan.last_lsn),
        "records": scan.records,
        "size": scan.size,
        "used": used(&scan.end),
        "sealed": matches!(scan.end, Ok(End::Sealed { .. })),
        "end": word,
        "detail": detail,
        "complete": !scan.stopped,
    })
}

/// The table of segments, then a line for each that does not end sealed or open, then (when
/// `every` segment is in it) the LSNs they hold.
fn table(rows: &[SegmentScan], every: bool, out: &mut Out) {
    if rows.is_empty() {
        return;
    }
    out.human(format!(
        "{:<16}  {:>10}  {:>10}  {:>6}  {:>8}  {:>10}  {:>10}  end",
        "segment", "first LSN", "last LSN", "epoch", "records", "used", "size"
    ));
    let mut notes = Vec::new();
    for scan in rows {
        let (word, detail) = describe_end(&scan.end);
        let id = scan
            .header
            .map_or_else(|| name(&scan.path), |h| h.sequence.to_string());
        let (first, last) = if scan.stopped {
            (String::from("-"), String::from("-"))
        } else {
            (
                scan.first_lsn.map_or("-".into(), |l| l.to_string()),
                scan.last_lsn.map_or("-".into(), |l| l.to_string()),
            )
        };
        out.human(format!(
            "{id:<16}  {first:>10}  {last:>10}  {:>6}  {:>8}  {:>10}  {:>10}  {word}",
            scan.header.map_or("-".into(), |h| h.epoch.to_string()),
            scan.records,
            used(&scan.end).map_or("-".into(), |u| u.to_string()),
            scan.size,
        ));
        if !matches!(word, "sealed" | "open") {
            notes.push(format!("{}: {detail}", scan.path.display()));
        }
    }
    for note in notes {
        out.human(note);
    }
    let first = rows.iter().find_map(|r| r.first_lsn);
    let last = rows.iter().rev().find_map(|r| r.last_lsn);
    if every && rows.iter().all(|r| !r.stopped) {
        out.human(format!("records: {}", lsn_range(first, last)));
    }
}

/// A file's name, for a row without a header.
fn name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

impl Finding {
    pub(crate) fn max(self, other: Finding) -> Finding {
        if other.exit > self.exit { other } else { self }
    }
}

impl From<CliError> for Finding {
    fn from(e: CliError) -> Self {
        Finding::new(e.exit, e.message)
    }
}
