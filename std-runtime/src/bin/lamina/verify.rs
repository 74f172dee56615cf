//! `lamina verify PATH`: every segment read with every checksum checked, the chain between
//! segments followed, and the end classified as recovery in `Strict` mode would (torn tail or
//! corruption), without changing anything. Exit 0 when clean, 1 on a torn tail, 2 on
//! corruption, 3 when the path cannot be read or is not a log.

use crate::Finding;
use crate::detect::{self, Target};
use crate::errors::{CliError, Exit};
use crate::logcheck::{self, LogCheck};
use crate::output::{Out, bytes, lsn_json, lsn_range, progress, text_of};
use crate::segfile::{self, describe_end};
use lamina::file_backend::FileReader;
use lamina::{Lsn, Mode, PerCoreDescription, RecoveryReport};
use lamina_core::decode::End;
use lamina_core::recover::{Cut, RecoverError};
use lamina_core::segment::HeaderError;
use serde_json::{Value, json};
use std::path::Path;

/// What verifying one log (or segment) found.
pub(crate) struct Verdict {
    /// The exit code it calls for.
    pub(crate) exit: Exit,
    /// The finding in one line (naming the file), for anything but clean.
    pub(crate) problem: Option<String>,
    /// The human lines.
    pub(crate) lines: Vec<String>,
    /// The JSON summary.
    pub(crate) json: Value,
}

/// Runs `verify` on `path`.
///
/// # Errors
/// A path that cannot be read or is not a log.
pub(crate) fn run(path: &Path, out: &mut Out) -> Result<Finding, CliError> {
    let verdict = match detect::detect(path)? {
        Target::Checkpoints(dir) => return crate::checkpoints::verify(&dir, out),
        Target::Store(dir) => {
            let wal = run(&dir.join("wal"), out)?;
            let checkpoints = crate::checkpoints::verify(&dir.join("checkpoints"), out)?;
            return Ok(wal.max(checkpoints));
        }
        Target::Log(dir) => verify_log(&dir, out, None)?,
        Target::Set { dir, description } => verify_set(&dir, &description, out)?,
        Target::Segment(file) => verify_segment(&file)?,
    };
    for line in &verdict.lines {
        out.human(line);
    }
    out.json(&verdict.json);
    let shown = verdict
        .problem
        .as_ref()
        .is_some_and(|p| verdict.lines.contains(p));
    Ok(Finding {
        exit: verdict.exit,
        problem: verdict.problem,
        shown,
    })
}

/// Verifies the log in `dir`; for a core of a set, `core` is its index and the log id it must
/// have.
fn verify_log(dir: &Path, out: &Out, core: Option<(usize, u64)>) -> Result<Verdict, CliError> {
    let reader = FileReader::open(dir).map_err(|e| CliError::unreadable(dir, e))?;
    let bar = progress(logcheck::total_size(dir), out.style());
    let check = logcheck::check(dir, reader, Mode::Strict, &bar)?;
    bar.finish_and_clear();
    let mut verdict = log_verdict(&check);
    if let (Some((index, log_id)), Some(first)) = (core, check.headers.first())
        && (first.log_id != log_id || first.core as usize != index)
        && verdict.exit < Exit::Corrupt
    {
        let problem = format!(
            "{}: the log of core {index} belongs to another set or core (log id {:016x}, core \
             {}; this set's core {index} has log id {log_id:016x})",
            dir.display(),
            first.log_id,
            first.core
        );
        verdict = Verdict {
            exit: Exit::Corrupt,
            lines: vec![problem.clone()],
            json: json!({"path": text_of(dir), "status": "corrupt", "exit_code": Exit::Corrupt.code(),
                "error": problem}),
            problem: Some(problem),
        };
    }
    Ok(verdict)
}

/// The verdict on a log read in `Strict` mode.
pub(crate) fn log_verdict(check: &LogCheck) -> Verdict {
    let dir = &check.dir;
    let first = check.headers.first();
    let mut json = json!({
        "kind": "log",
        "path": text_of(dir),
        "log_id": first.map(|h| format!("{:016x}", h.log_id)),
        "core": first.map(|h| h.core),
        "listed_segments": check.ids.len(),
        "elapsed_ms": check.elapsed.as_secs_f64() * 1e3,
        "cut": Value::Null,
        "damage": Value::Null,
        "error": Value::Null,
    });
    let (exit, status, problem, mut lines) = match &check.outcome {
        Ok(recovered) => {
            let report = &recovered.report;
            add_report(&mut json, report);
            let mut lines = vec![summary(check, report)];
            match report.cut {
                Some(cut) => {
                    json["cut"] = cut_json(check, &cut);
                    let problem = torn_text(&check.file(cut.segment), &cut);
                    lines.push(problem.clone());
                    (Exit::Torn, "torn", Some(problem), lines)
                }
                None => {
                    lines.push("clean".into());
                    (Exit::Ok, "clean", None, lines)
                }
            }
        }
        Err(RecoverError::Corrupt(d)) if check.foreign() => {
            let problem = format!(
                "{}: not a log directory, a per-core log set or a segment file: no file named \
                 like a segment is a lamina segment ({}: {})",
                dir.display(),
                check.file(d.segment).display(),
                match d.damage {
                    lamina::Damage::Header(e) => e.to_string(),
                    _ => "damaged".into(),
                }
            );
            (
                Exit::Unreadable,
                "unreadable",
                Some(problem.clone()),
                vec![problem],
            )
        }
        Err(RecoverError::Corrupt(d)) => {
            json["damage"] = json!({
                "segment": d.segment.0,
                "file": text_of(&check.file(d.segment)),
                "offset": d.offset,
                "lsn": d.expected_lsn.0,
                "detail": d.to_string(),
            });
            let problem = format!("corruption in {}: {d}", check.file(d.segment).display());
            let read = format!(
                "{}: {}: {} segments, recovery stopped in segment {}",
                dir.display(),
                who(check),
                check.ids.len(),
                d.segment
            );
            (
                Exit::Corrupt,
                "corrupt",
                Some(problem.clone()),
                vec![read, problem],
            )
        }
        Err(e) => {
            let problem = check.error_text(e);
            (
                Exit::Unreadable,
                "unreadable",
                Some(problem.clone()),
                vec![problem],
            )
        }
    };
    if problem.is_some() && exit != Exit::Torn {
        json["error"] = problem.clone().into();
    }
    json["status"] = status.into();
    json["exit_code"] = exit.code().into();
    lines.retain(|l| !l.is_empty());
    Verdict {
        exit,
        problem,
        lines,
        json,
    }
}

/// Which log it is, by its first segment's header.
fn who(check: &LogCheck) -> String {
    match check.headers.first() {
        Some(h) => format!("log {:016x}, core {}", h.log_id, h.core),
        None => "no segment started".into(),
    }
}

/// The first line of a log's verdict: what it holds.
fn summary(check: &LogCheck, report: &RecoveryReport) -> String {
    let who = who(check);
    let blank = match report.blank_segments {
        0 => String::new(),
        n => format!(", {n} blank segments at the end (prepared, never started)"),
    };
    format!(
        "{}: {who}: {} segments, {} records ({}), {} read in {:.1?}{blank}",
        check.dir.display(),
        check.headers.len(),
        report.records,
        lsn_range(nonzero(report.first_lsn), nonzero(report.last_lsn)),
        bytes(report.bytes),
        check.elapsed,
    )
}

fn nonzero(lsn: Lsn) -> Option<Lsn> {
    (lsn != Lsn::ZERO).then_some(lsn)
}

fn add_report(json: &mut Value, report: &RecoveryReport) {
    json["segments"] = report.segments.into();
    json["records"] = report.records.into();
    json["bytes"] = report.bytes.into();
    json["first_lsn"] = lsn_json(nonzero(report.first_lsn));
    json["last_lsn"] = lsn_json(nonzero(report.last_lsn));
    json["blank_segments"] = report.blank_segments.into();
}

/// The LSNs a cut removes: the first cut one, through the last valid frame beyond it.
pub(crate) fn cut_lsns(cut: &Cut) -> (Lsn, Lsn) {
    (cut.next_lsn, cut.next_lsn.max(cut.beyond.last_lsn))
}

/// A torn tail in words.
pub(crate) fn torn_text(file: &Path, cut: &Cut) -> String {
    let (first, last) = cut_lsns(cut);
    let beyond = match cut.beyond.frames {
        0 => String::new(),
        n => format!(" ({n} valid frames beyond the damage that nothing vouches for)"),
    };
    format!(
        "torn tail in {} at offset {}: a repair would cut {} bytes, {}{beyond}",
        file.display(),
        cut.offset,
        cut.extent.saturating_sub(cut.offset),
        lsn_range(Some(first), Some(last)),
    )
}

/// A cut as JSON.
pub(crate) fn cut_json(check: &LogCheck, cut: &Cut) -> Value {
    let (first, last) = cut_lsns(cut);
    json!({
        "segment": cut.segment.0,
        "file": text_of(&check.file(cut.segment)),
        "offset": cut.offset,
        "extent": cut.extent,
        "bytes": cut.extent.saturating_sub(cut.offset),
        "first_lsn": first.0,
        "last_lsn": last.0,
        "frames_beyond": cut.beyond.frames,
    })
}

/// Verifies every core of the set in `dir`.
fn verify_set(
    dir: &Path,
    description: &PerCoreDescription,
    out: &Out,
) -> Result<Verdict, CliError> {
    let mut exit = Exit::Ok;
    let mut problem = None;
    let mut lines = vec![format!(
        "{}: per-core log set {:016x}, {} cores",
        dir.display(),
        description.set_id,
        description.cores
    )];
    let mut cores = Vec::new();
    for core in 0..description.cores as usize {
        let core_dir = PerCoreDescription::core_dir(dir, core);
        let verdict = if core_dir.is_dir() {
            match verify_log(&core_dir, out, Some((core, description.core_log_id(core)))) {
                Ok(v) => v,
                Err(e) => Verdict {
                    exit: e.exit,
                    lines: vec![e.message.clone()],
                    json: json!({"path": text_of(&core_dir), "status": "unreadable",
                        "exit_code": e.exit.code(), "error": e.message}),
                    problem: Some(e.message),
                },
            }
        } else {
            let text = format!(
                "{}: the set's description lists core {core}, but {} is missing",
                dir.display(),
                core_dir.display()
            );
            Verdict {
                exit: Exit::Corrupt,
                lines: vec![text.clone()],
                json: json!({"path": text_of(&core_dir), "status": "corrupt",
                    "exit_code": Exit::Corrupt.code(), "error": text}),
                problem: Some(text),
            }
        };
        lines.extend(verdict.lines.iter().map(|l| format!("core {core}: {l}")));
        let mut core_json = verdict.json;
        core_json["core_index"] = core.into();
        cores.push(core_json);
        if verdict.exit > exit {
            exit = verdict.exit;
            problem = verdict.problem.map(|p| format!("core {core}: {p}"));
        }
    }
    let status = status_of(exit);
    lines.push(match &problem {
        None => "clean".into(),
        Some(_) => format!("{status}: exit {}", exit.code()),
    });
    Ok(Verdict {
        exit,
        problem,
        lines,
        json: json!({
            "kind": "per-core",
            "path": text_of(dir),
            "set_id": format!("{:016x}", description.set_id),
            "status": status,
            "exit_code": exit.code(),
            "cores": cores,
        }),
    })
}

/// The status word of an exit code.
fn status_of(exit: Exit) -> &'static str {
    match exit {
        Exit::Ok => "clean",
        Exit::Torn => "torn",
        Exit::Corrupt => "corrupt",
        Exit::Unreadable | Exit::Usage => "unreadable",
    }
}

/// Verifies one segment file on its own (its chain to other segments is not checked).
fn verify_segment(file: &Path) -> Result<Verdict, CliError> {
    let mut window = segfile::window();
    let scan = segfile::scan(file, &mut window, Mode::Strict, &mut |_| true)?;
    let (word, detail) = describe_end(&scan.end);
    let (exit, problem) = match scan.end {
        Ok(End::Sealed { .. } | End::Clean { .. }) => (Exit::Ok, None),
        Ok(End::BadHeader {
            error: HeaderError::Blank,
            ..
        }) => (Exit::Ok, None),
        Ok(End::Torn {
            offset,
            next_lsn,
            beyond,
            extent,
        }) => {
            let cut = Cut {
                segment: scan.header.map_or(lamina::SegmentId(0), |h| h.sequence),
                offset,
                next_lsn,
                beyond,
                extent,
            };
            (Exit::Torn, Some(torn_text(file, &cut)))
        }
        Ok(End::Corrupt(_)) => (
            Exit::Corrupt,
            Some(format!("corruption in {}: {detail}", file.display())),
        ),
        Ok(End::BadHeader {
            error: HeaderError::UnsupportedVersion { .. },
            ..
        })
        | Err(_) => (
            Exit::Unreadable,
            Some(format!("{}: {detail}", file.display())),
        ),
        Ok(End::BadHeader { .. }) => (Exit::Corrupt, Some(format!("{}: {detail}", file.display()))),
    };
    let summary = format!(
        "{}: segment {}, {} bytes, {} records ({}); one segment on its own: its link to other \
         segments is not checked",
        file.display(),
        scan.header.map_or_else(
            || "without a valid header".into(),
            |h| h.sequence.to_string()
        ),
        scan.size,
        scan.records,
        lsn_range(scan.first_lsn, scan.last_lsn),
    );
    let mut lines = vec![summary];
    lines.push(
        problem
            .clone()
            .unwrap_or_else(|| format!("clean: {detail}")),
    );
    let json = json!({
        "kind": "segment",
        "path": text_of(file),
        "status": status_of(exit),
        "exit_code": exit.code(),
        "end": word,
        "detail": detail,
        "size": scan.size,
        "records": scan.records,
        "first_lsn": lsn_json(scan.first_lsn),
        "last_lsn": lsn_json(scan.last_lsn),
    });
    Ok(Verdict {
        exit,
        problem,
        lines,
        json,
    })
}
