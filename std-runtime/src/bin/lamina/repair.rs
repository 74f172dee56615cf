//! `lamina repair PATH [--mode M] [--apply]`: what recovery in mode `M` would cut from the log
//! (segments, offsets, LSNs, bytes), read without changing anything; with `--apply`, that repair
//! made, durably, by opening the log in that mode under its lock, and the same report.

use crate::Finding;
use crate::detect::{self, Target};
use crate::errors::{CliError, Exit};
use crate::logcheck::{self, LogCheck};
use crate::output::{Out, lsn_json, lsn_range, segment_path, text_of};
use crate::segfile::{self, used};
use crate::verify::cut_lsns;
use indicatif::ProgressBar;
use lamina::file_backend::{self, FileStorage};
use lamina::{Lsn, Mode, Options, PerCoreDescription, RecoveryReport, SegmentId, WriteAheadLog};
use lamina_core::decode::min_window;
use lamina_core::recover::RecoverError;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One change a repair makes.
#[derive(Clone, Debug)]
struct Change {
    /// `cut`, `delete`, `skip` or `skip-segment`.
    action: &'static str,
    /// The segment.
    segment: SegmentId,
    /// Its file.
    file: PathBuf,
    /// Where in it (0 for a whole segment).
    offset: u64,
    /// Bytes cut, deleted or stepped over.
    bytes: u64,
    /// The first LSN lost.
    first_lsn: Option<Lsn>,
    /// The last LSN lost, when known.
    last_lsn: Option<Lsn>,
    /// What it is, in words.
    why: String,
}

impl Change {
    fn line(&self) -> String {
        let verb = match self.action {
            "cut" => format!("cut {} at offset {}", self.file.display(), self.offset),
            "delete" => format!("delete {}", self.file.display()),
            "skip" => format!(
                "step over {} at offset {}",
                self.file.display(),
                self.offset
            ),
            _ => format!("leave {} unread", self.file.display()),
        };
        format!(
            "{verb}: {} bytes, {} ({})",
            self.bytes,
            lsn_range(self.first_lsn, self.last_lsn.or(self.first_lsn)),
            self.why
        )
    }

    fn json(&self) -> Value {
        json!({
            "action": self.action,
            "segment": self.segment.0,
            "file": text_of(&self.file),
            "offset": self.offset,
            "bytes": self.bytes,
            "first_lsn": lsn_json(self.first_lsn),
            "last_lsn": lsn_json(self.last_lsn.or(self.first_lsn)),
            "why": self.why,
        })
    }
}

/// What recovery in a mode would do to a log.
enum Plan {
    /// These changes (none: the log needs no repair), and the damage that caused them.
    Changes {
        changes: Vec<Change>,
        damage: Option<String>,
        report: Box<RecoveryReport>,
    },
    /// Corruption the mode does not cut (`Strict`).
    Refused(String),
}

/// Runs `repair` on `path`.
///
/// # Errors
/// A path that cannot be read, is not a log, or is a segment file (a repair works on the whole
/// log); a lock held by another process or a failed write with `--apply`.
pub(crate) fn run(
    path: &Path,
    mode: Mode,
    apply: bool,
    out: &mut Out,
) -> Result<Finding, CliError> {
    match detect::detect(path)? {
        Target::Log(dir) => {
            let (finding, json) = repair_log(&dir, mode, apply, None, out)?;
            out.json(&json);
            Ok(finding)
        }
        Target::Set { dir, description } => {
            out.human(format!(
                "{}: per-core log set {:016x}, {} cores",
                dir.display(),
                description.set_id,
                description.cores
            ));
            let mut worst = Finding::ok();
            let mut cores = Vec::new();
            for core in 0..description.cores as usize {
                let core_dir = PerCoreDescription::core_dir(&dir, core);
                if !core_dir.is_dir() {
                    return Err(CliError::new(
                        Exit::Corrupt,
                        format!(
                            "{}: the set's description lists core {core}, but {} is missing: \
                             a repair does not make up a core's log",
                            dir.display(),
                            core_dir.display()
                        ),
                    ));
                }
                let (finding, mut json) = repair_log(&core_dir, mode, apply, Some(core), out)?;
                json["core_index"] = core.into();
                cores.push(json);
                if finding.exit > worst.exit {
                    worst = Finding {
                        problem: finding.problem.map(|p| format!("core {core}: {p}")),
                        ..finding
                    };
                }
            }
            out.json(&json!({
                "kind": "per-core",
                "path": text_of(&dir),
                "mode": mode_name(mode),
                "applied": apply,
                "exit_code": worst.exit.code(),
                "cores": cores,
            }));
            Ok(worst)
        }
        Target::Segment(file) => Err(CliError::usage(format!(
            "{}: a segment file: a repair works on the whole log, give the directory that holds it",
            file.display()
        ))),
        // A state store's WALs are repaired as a per-core set; checkpoints are never repaired
        // (recovery falls back past a damaged manifest by itself).
        Target::Store(dir) => run(&dir.join("wal"), mode, apply, out),
        Target::Checkpoints(dir) => Err(CliError::usage(format!(
            "{}: a checkpoint store: repair works on logs; recovery falls back past a damaged \
             manifest by itself (see `lamina verify`)",
            dir.display()
        ))),
    }
}

/// The mode's name on the command line.
pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Strict => "strict",
        Mode::PointInTime => "point-in-time",
        Mode::SkipCorrupt => "skip-corrupt",
    }
}

/// Reports (and with `apply` makes) the repair of the log in `dir`.
fn repair_log(
    dir: &Path,
    mode: Mode,
    apply: bool,
    core: Option<usize>,
    out: &mut Out,
) -> Result<(Finding, Value), CliError> {
    let prefix = core.map_or_else(String::new, |c| format!("core {c}: "));
    let name = mode_name(mode);
    let reader = file_backend::FileReader::open(dir).map_err(|e| CliError::unreadable(dir, e))?;
    let mut check = logcheck::check(dir, reader, mode, &ProgressBar::hidden())?;
    let mut planned = plan(&check)?;
    // With --apply, and something to change, the log's lock is taken and the log read again
    // under it, so that the log read is the log repaired. Nothing else takes the lock: it
    // writes the holder's pid into the lock file.
    let mut storage = None;
    if apply && matches!(&planned, Plan::Changes { changes, .. } if !changes.is_empty()) {
        let locked = FileStorage::open(dir, file_backend::Options::new())
            .map_err(|e| CliError::unreadable(dir, e))?;
        let reader = locked.reader().map_err(|e| CliError::unreadable(dir, e))?;
        check = logcheck::check(dir, reader, mode, &ProgressBar::hidden())?;
        planned = plan(&check)?;
        storage = Some(locked);
    }
    let mut json = json!({
        "kind": "log",
        "path": text_of(dir),
        "mode": name,
        "applied": false,
        "changes": [],
        "damage": Value::Null,
        "continues_at": Value::Null,
    });
    let (changes, damage, planned) = match planned {
        Plan::Refused(text) => {
            out.human(format!("{prefix}{text}"));
            out.human(format!(
                "{prefix}nothing changed: --mode point-in-time ends the log before the damage, \
                 --mode skip-corrupt steps over it"
            ));
            json["status"] = "refused".into();
            json["exit_code"] = Exit::Corrupt.code().into();
            json["damage"] = text.clone().into();
            return Ok((
                Finding {
                    shown: true,
                    ..Finding::new(Exit::Corrupt, text)
                },
                json,
            ));
        }
        Plan::Changes {
            changes,
            damage,
            report,
        } => (changes, damage, report),
    };
    json["changes"] = changes.iter().map(Change::json).collect::<Vec<_>>().into();
    json["damage"] = damage.clone().into();
    if let Some(d) = &damage {
        out.human(format!("{prefix}{d}"));
    }
    if changes.is_empty() {
        out.human(format!(
            "{prefix}{}: nothing to repair in {name} mode; nothing changed",
            dir.display()
        ));
        json["status"] = "clean".into();
        json["exit_code"] = Exit::Ok.code().into();
        return Ok((Finding::ok(), json));
    }
    let Some(storage) = storage else {
        out.human(format!(
            "{prefix}{}: a repair in {name} mode would:",
            dir.display()
        ));
        for change in &changes {
            out.human(format!("  {}", change.line()));
        }
        out.human(format!(
            "{prefix}nothing changed; run again with --apply to make these changes"
        ));
        json["status"] = "pending".into();
        json["exit_code"] = Exit::Torn.code().into();
        let more = match changes.len() {
            1 => String::new(),
            2 => ", and 1 more change".into(),
            n => format!(", and {} more changes", n - 1),
        };
        let first = changes.first().map(Change::line).unwrap_or_default();
        let problem = format!(
            "{}: a repair in {name} mode would {first}{more}; nothing changed (--apply makes it)",
            dir.display(),
        );
        // The listing above says it too.
        let finding = Finding {
            shown: true,
            ..Finding::new(Exit::Torn, problem)
        };
        return Ok((finding, json));
    };
    let (log, report) = WriteAheadLog::open_with(storage, options(mode, check.max_payload))
        .map_err(|e| CliError::unreadable(dir, format!("the repair failed: {e}")))?;
    if (report.cut, report.discard_from, report.damage)
        != (planned.cut, planned.discard_from, planned.damage)
    {
        return Err(CliError::unreadable(
            dir,
            "the log changed while it was repaired: run verify, then repair again",
        ));
    }
    let at = (log.segment().sequence, log.next_lsn());
    // Not closed: the repair is durable once the open returns, and a close would only start
    // another segment.
    drop(log);
    out.human(format!(
        "{prefix}{}: repaired in {name} mode:",
        dir.display()
    ));
    for change in &changes {
        out.human(format!("  {}", change.line()));
    }
    out.human(format!(
        "{prefix}the log continues in segment {} at LSN {}",
        at.0, at.1
    ));
    if changes.iter().any(|c| c.action.starts_with("skip")) {
        out.human(format!(
            "{prefix}the damaged bytes stay where they are: the log opens in skip-corrupt mode \
             (which steps over them), and verify still reports them"
        ));
    }
    json["applied"] = true.into();
    json["status"] = "repaired".into();
    json["exit_code"] = Exit::Ok.code().into();
    json["continues_at"] = json!({"segment": at.0.0, "lsn": at.1.0});
    Ok((Finding::ok(), json))
}

/// Options that open the log in `mode` and can hold its largest record (`max_payload` bytes).
fn options(mode: Mode, max_payload: usize) -> Options {
    let mut options = Options {
        mode,
        ..Options::default()
    };
    let largest = u32::try_from(max_payload).unwrap_or(u32::MAX);
    options.config.max_payload = options.config.max_payload.max(largest);
    options.buffer_size = options
        .buffer_size
        .max(2 * min_window(options.config.max_payload as usize) + 4096);
    options
}

/// What recovery in the check's mode would change.
fn plan(check: &LogCheck) -> Result<Plan, CliError> {
    let recovered = match &check.outcome {
        Ok(r) => r,
        Err(RecoverError::Corrupt(_)) if check.foreign() => {
            return Err(CliError::not_a_log(
                &check.dir,
                "no file named like a segment is a lamina segment",
            ));
        }
        Err(RecoverError::Corrupt(d)) => {
            return Ok(Plan::Refused(format!(
                "corruption in {}: {d}",
                check.file(d.segment).display()
            )));
        }
        Err(e) => return Err(CliError::new(Exit::Unreadable, check.error_text(e))),
    };
    let report = recovered.report;
    let mut changes = Vec::new();
    let mut window = None;
    if let Some(cut) = report.cut {
        let (first, mut last) = cut_lsns(&cut);
        let mut end = cut.extent;
        let at_damage = report
            .damage
            .is_some_and(|d| d.segment == cut.segment && d.offset == cut.offset);
        if at_damage {
            // The look past corruption stops at the frame that proves it: the rest of the
            // segment, cut too, is found by reading on past the damage.
            let window = window.get_or_insert_with(segfile::window);
            let file = check.file(cut.segment);
            if let Ok(scan) = segfile::scan(&file, window, Mode::SkipCorrupt, &mut |_| true) {
                last = last.max(scan.last_lsn.unwrap_or(last));
                end = end.max(used(&scan.end).unwrap_or(end));
            }
        }
        changes.push(Change {
            action: "cut",
            segment: cut.segment,
            file: check.file(cut.segment),
            offset: cut.offset,
            bytes: end.saturating_sub(cut.offset),
            first_lsn: Some(first),
            last_lsn: Some(last),
            why: if at_damage {
                "the log ends before the damage: the rest of the segment is cut".into()
            } else {
                "torn tail".into()
            },
        });
    }
    for (segment, s) in &check.skipped {
        changes.push(Change {
            action: "skip",
            segment: *segment,
            file: check.file(*segment),
            offset: s.offset,
            bytes: s.len,
            first_lsn: Some(s.first_lost),
            last_lsn: Some(s.resumed.prev().max(s.first_lost)),
            why: "damaged records stepped over, lost".into(),
        });
    }
    let read: BTreeSet<SegmentId> = check.headers.iter().map(|h| h.sequence).collect();
    let discard = report.discard_from;
    for &id in &check.ids {
        let deleted = discard.is_some_and(|from| id >= from);
        if !deleted && read.contains(&id) {
            continue;
        }
        let file = segment_path(&check.dir, id);
        let window = window.get_or_insert_with(segfile::window);
        let scan = segfile::scan(&file, window, Mode::Strict, &mut |_| true).ok();
        let (word, detail) = scan.as_ref().map_or(("unreadable", String::new()), |s| {
            segfile::describe_end(&s.end)
        });
        let why = if deleted && word == "blank" {
            "blank: prepared, never started".to_string()
        } else if deleted {
            "after the end of the log".to_string()
        } else {
            format!("skipped whole: {detail}")
        };
        changes.push(Change {
            action: if deleted { "delete" } else { "skip-segment" },
            segment: id,
            file,
            offset: 0,
            bytes: scan.as_ref().map_or(0, |s| s.size),
            first_lsn: scan.as_ref().and_then(|s| s.first_lsn),
            last_lsn: scan.as_ref().and_then(|s| s.last_lsn),
            why,
        });
    }
    let damage = report
        .damage
        .map(|d| format!("damage in {}: {d}", check.file(d.segment).display()));
    Ok(Plan::Changes {
        changes,
        damage,
        report: Box::new(report),
    })
}
