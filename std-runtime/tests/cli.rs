//! The `lamina` command-line tool, run as a process on real logs made here with the library:
//! clean logs, a torn tail, a bit flip in a middle segment, foreign and garbage directories, a
//! missing path, a FIFO, a segment file given on its own, a per-core set; `--json` read back;
//! `repair` without `--apply` changing no byte, and with it making a log that verifies clean.
#![cfg(feature = "cli")]

mod common;

use lamina::{Lsn, Options, PerCoreWalManager, WriteAheadLog};
use lamina_tests::files::{flip_bits, segment_files};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Small segments so that a few hundred records span several of them.
fn options() -> Options {
    common::small_options(4 * 1024, 256)
}

fn payload(i: u32) -> Vec<u8> {
    format!("record {i:05} of the cli test").into_bytes()
}

/// A log of `n` records in `dir`, closed (sealed) or left as after a crash once synced.
fn write_log(dir: &Path, n: u32, close: bool) -> Vec<(Lsn, Vec<u8>)> {
    let (mut log, _) = WriteAheadLog::open(dir, options()).expect("open");
    let mut appended = Vec::new();
    for i in 0..n {
        let p = payload(i);
        appended.push((log.append(&p).expect("append"), p));
    }
    if close {
        log.close().expect("close");
    } else {
        log.sync().expect("sync");
        drop(log);
    }
    appended
}

/// Runs `lamina args...`; fails the test if it runs longer than 60 s (a FIFO must never block
/// it).
fn lamina<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lamina");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("lamina {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("output")
}

fn run<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> (i32, String, String) {
    let out = lamina(args);
    let code = out.status.code().expect("exit code (not a signal)");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "lamina {args:?} panicked: {stderr}"
    );
    (code, stdout, stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every JSON object printed, one a line.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The one JSON object printed.
fn json_one(stdout: &str) -> Value {
    let mut lines = json_lines(stdout);
    assert_eq!(lines.len(), 1, "one JSON object expected: {stdout}");
    lines.remove(0)
}

/// Every file under `dir` with its length and a hash of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (usize, u64)> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).expect("list") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = fs::read(&p).expect("read");
                let mut hasher = DefaultHasher::new();
                bytes.hash(&mut hasher);
                files.insert(p.clone(), (bytes.len(), hasher.finish()));
            }
        }
    }
    files
}

/// The offset of `needle` in the file at `path`.
fn find(path: &Path, needle: &[u8]) -> usize {
    let bytes = fs::read(path).expect("read");
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {}", path.display()))
}

/// The segment file that holds `needle`.
fn file_holding(dir: &Path, needle: &[u8]) -> PathBuf {
    segment_files(dir)
        .into_iter()
        .find(|f| {
            fs::read(f)
                .expect("read")
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .expect("a segment holds it")
}

fn one_line(stderr: &str) {
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
}

#[test]
fn clean_log_verifies_with_exit_0_and_json_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = write_log(dir.path(), 300, true);
    assert!(segment_files(dir.path()).len() >= 3, "several segments");

    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.trim_end().ends_with("clean"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");

    let (code, stdout, _) = run(&["verify", "--json", path(dir.path())]);
    assert_eq!(code, 0);
    let v = json_one(&stdout);
    assert_eq!(v["status"], "clean");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["kind"], "log");
    assert!(v["cut"].is_null() && v["damage"].is_null());
    // Every data record, plus a seal per segment.
    assert!(v["records"].as_u64().expect("records") > appended.len() as u64);
    assert_eq!(v["first_lsn"], 1);

    let (code, stdout, _) = run(&["verify", "--quiet", path(dir.path())]);
    assert_eq!((code, stdout.as_str()), (0, ""));
}

#[test]
fn inspect_lists_segments_and_records_in_an_lsn_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = write_log(dir.path(), 120, true);
    let files = segment_files(dir.path());

    let (code, stdout, stderr) = run(&["inspect", path(dir.path())]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("log directory"), "{stdout}");
    for i in 0..files.len() {
        assert!(
            stdout.contains(&format!("{i:016x}")),
            "segment {i}: {stdout}"
        );
    }
    assert!(stdout.contains("sealed"), "{stdout}");

    let (from, to) = (appended[10].0, appended[12].0);
    let (code, stdout, _) = run(&[
        "inspect",
        "--json",
        "--records",
        "--from-lsn",
        &from.0.to_string(),
        "--to-lsn",
        &to.0.to_string(),
        path(dir.path()),
    ]);
    assert_eq!(code, 0);
    let lines = json_lines(&stdout);
    assert_eq!(lines[0]["type"], "log");
    let records: Vec<&Value> = lines.iter().filter(|l| l["type"] == "record").collect();
    let lsns: Vec<u64> = records
        .iter()
        .map(|r| r["lsn"].as_u64().expect("lsn"))
        .collect();
    assert!(lsns.iter().all(|l| (from.0..=to.0).contains(l)), "{lsns:?}");
    for (lsn, p) in &appended[10..=12] {
        let r = records
            .iter()
            .find(|r| r["lsn"] == lsn.0)
            .unwrap_or_else(|| panic!("record {lsn} missing: {stdout}"));
        assert_eq!(r["kind"], "data");
        assert_eq!(r["payload_text"], std::str::from_utf8(p).expect("text"));
        assert_eq!(r["len"], p.len() as u64);
    }
    let segments: Vec<&Value> = lines.iter().filter(|l| l["type"] == "segment").collect();
    assert!(
        !segments.is_empty() && segments.len() < files.len(),
        "only the segments in range"
    );
    assert!(segments.iter().all(|s| s["sealed"] == true));

    let (code, stdout, _) = run(&["inspect", "--records", "--hex", path(dir.path())]);
    assert_eq!(code, 0);
    let hex: String = payload(0).iter().map(|b| format!("{b:02x}")).collect();
    assert!(stdout.contains(&hex), "hex payload of record 0: {stdout}");
}

#[test]
fn torn_tail_exits_1_and_repair_apply_then_verify_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = write_log(dir.path(), 150, false);
    let (last_lsn, last) = appended.last().expect("records").clone();
    // The last record's body damaged: no later frame vouches for it, so a crash explains it.
    let file = file_holding(dir.path(), &last);
    flip_bits(&file, find(&file, &last) + 3, 0x10);
    let name = file
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();

    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    one_line(&stderr);
    assert!(
        stderr.contains("torn tail") && stderr.contains(&name),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("LSN {last_lsn}")), "{stderr}");
    assert!(stderr.contains("bytes"), "{stderr}");

    let (code, stdout, _) = run(&["verify", "--json", path(dir.path())]);
    assert_eq!(code, 1);
    let v = json_one(&stdout);
    assert_eq!(v["status"], "torn");
    assert_eq!(v["cut"]["first_lsn"], last_lsn.0);
    assert!(v["cut"]["bytes"].as_u64().expect("bytes") > 0);
    assert_eq!(v["cut"]["file"], path(&file));

    let before = snapshot(dir.path());
    for mode in ["strict", "point-in-time", "skip-corrupt"] {
        let (code, stdout, _) = run(&["repair", "--mode", mode, path(dir.path())]);
        assert_eq!(code, 1, "{mode}: {stdout}");
        assert!(
            stdout.contains("would") && stdout.contains(&name),
            "{stdout}"
        );
        assert_eq!(
            snapshot(dir.path()),
            before,
            "repair --mode {mode} without --apply"
        );
    }
    let (code, stdout, _) = run(&["repair", "--json", path(dir.path())]);
    assert_eq!(code, 1);
    let v = json_one(&stdout);
    assert_eq!(
        (v["status"].as_str(), v["applied"].as_bool()),
        (Some("pending"), Some(false))
    );
    assert_eq!(v["changes"][0]["action"], "cut");
    assert_eq!(v["changes"][0]["first_lsn"], last_lsn.0);
    assert_eq!(snapshot(dir.path()), before);

    let (code, stdout, stderr) = run(&["repair", "--apply", path(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("repaired"), "{stdout}");
    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // The repaired log holds every record but the torn one.
    let (mut log, report) = WriteAheadLog::open(dir.path(), options()).expect("reopen");
    assert!(report.cut.is_none());
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| read.push((lsn, p.to_vec())))
        .expect("read");
    assert_eq!(read, appended[..appended.len() - 1]);
}

#[test]
fn bit_flip_in_a_middle_segment_exits_2_naming_the_segment_and_lsn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let appended = write_log(dir.path(), 300, true);
    let files = segment_files(dir.path());
    let middle = &files[1];
    let (lsn, p) = appended
        .iter()
        .find(|(_, p)| {
            fs::read(middle)
                .expect("read")
                .windows(p.len())
                .any(|w| w == p)
        })
        .expect("a record in the middle segment")
        .clone();
    flip_bits(middle, find(middle, &p) + 2, 0x01);

    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    one_line(&stderr);
    assert!(
        stderr.contains("corruption") && stderr.contains("0000000000000001.seg"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("LSN {lsn}")), "{stderr}");

    let (code, stdout, _) = run(&["verify", "--json", path(dir.path())]);
    assert_eq!(code, 2);
    let v = json_one(&stdout);
    assert_eq!(v["status"], "corrupt");
    assert_eq!(v["damage"]["segment"], 1);
    assert_eq!(v["damage"]["lsn"], lsn.0);

    // Strict refuses to cut corruption; point-in-time ends the log before it.
    let before = snapshot(dir.path());
    let (code, _, stderr) = run(&["repair", "--apply", path(dir.path())]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused repair changes nothing"
    );
    let (code, stdout, _) = run(&["repair", "--mode", "point-in-time", path(dir.path())]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("delete") && stdout.contains(&format!("LSN {lsn}")),
        "{stdout}"
    );
    assert_eq!(snapshot(dir.path()), before);
    let (code, stdout, stderr) = run(&[
        "repair",
        "--mode",
        "point-in-time",
        "--apply",
        path(dir.path()),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (mut log, _) = WriteAheadLog::open(dir.path(), options()).expect("reopen");
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |l, p| read.push((l, p.to_vec())))
        .expect("read");
    let kept: Vec<_> = appended.iter().filter(|(l, _)| *l < lsn).cloned().collect();
    assert_eq!(read, kept, "the log ends just before the damaged record");
}

#[test]
fn foreign_garbage_and_empty_directories_exit_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("notes.txt"), b"not a log").expect("write");
    fs::write(dir.path().join("data.bin"), [0x5au8; 300]).expect("write");
    for command in ["verify", "inspect", "repair"] {
        let (code, _, stderr) = run(&[command, path(dir.path())]);
        assert_eq!(code, 3, "{command}: {stderr}");
        one_line(&stderr);
        assert!(stderr.contains("not a log directory"), "{stderr}");
        assert!(stderr.contains(path(dir.path())), "{stderr}");
    }

    // Files named like segments that are not segments at all.
    let garbage = tempfile::tempdir().expect("tempdir");
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(garbage.path().join("0000000000000000.seg"), &noise).expect("write");
    fs::write(garbage.path().join("0000000000000001.seg"), &noise[7..]).expect("write");
    let (code, stdout, stderr) = run(&["verify", "--json", path(garbage.path())]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("not a lamina segment") || stderr.contains("not a log"),
        "{stderr}"
    );
    assert_eq!(json_one(&stdout)["exit_code"], 3);

    let empty = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = run(&["verify", path(empty.path())]);
    assert_eq!(code, 3);
    assert!(stderr.contains("empty"), "{stderr}");
    assert!(
        fs::read_dir(empty.path()).expect("list").next().is_none(),
        "nothing created"
    );
}

#[test]
fn missing_path_exits_3_with_one_line_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-log");
    for args in [
        vec!["verify", path(&missing)],
        vec!["inspect", "--records", path(&missing)],
        vec!["repair", "--apply", path(&missing)],
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 3, "{args:?}: {stderr}");
        one_line(&stderr);
        assert!(
            stderr.contains("no-such-log") && stderr.contains("no such file"),
            "{stderr}"
        );
    }
    assert!(!missing.exists(), "no command creates the path");
}

#[test]
fn segment_file_given_directly_is_inspected_and_verified_on_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 60, true);
    let file = segment_files(dir.path())[0].clone();

    let (code, stdout, stderr) = run(&["inspect", "--records", path(&file)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("record 00000 of the cli test"), "{stdout}");
    assert!(stdout.contains("sealed"), "{stdout}");
    let (code, stdout, _) = run(&["verify", "--json", path(&file)]);
    assert_eq!(code, 0);
    let v = json_one(&stdout);
    assert_eq!(
        (v["kind"].as_str(), v["end"].as_str()),
        (Some("segment"), Some("sealed"))
    );

    // A copy cut inside its header is damaged; random bytes are not a segment at all.
    let cut = dir.path().join("cut.seg");
    fs::write(&cut, &fs::read(&file).expect("read")[..40]).expect("write");
    let (code, _, stderr) = run(&["verify", path(&cut)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cut.seg") && stderr.contains("truncated"),
        "{stderr}"
    );
    let noise = dir.path().join("noise.seg");
    fs::write(&noise, [0xc3u8; 500]).expect("write");
    let (code, _, stderr) = run(&["inspect", path(&noise)]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("segment magic"), "{stderr}");

    // A repair works on a whole log, not one of its files.
    let (code, _, stderr) = run(&["repair", path(&file)]);
    assert_eq!(code, 64, "{stderr}");
}

#[test]
fn fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let (code, _, stderr) = run(&["verify", path(&fifo)]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");

    // A FIFO under a segment's name inside a log.
    let log = dir.path().join("log");
    write_log(&log, 40, true);
    let next = segment_files(&log).len();
    let name = log.join(format!("{next:016x}.seg"));
    let made = Command::new("mkfifo").arg(&name).status().expect("mkfifo");
    assert!(made.success());
    for command in ["verify", "inspect"] {
        let (code, _, stderr) = run(&[command, path(&log)]);
        assert_eq!(code, 3, "{command}: {stderr}");
        one_line(&stderr);
        assert!(stderr.contains(&format!("{next:016x}.seg")), "{stderr}");
    }
}

#[test]
fn per_core_set_is_verified_core_by_core_and_a_missing_core_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (set, _) = PerCoreWalManager::open(dir.path(), 2, options()).expect("open set");
    for mut writer in set.writers() {
        for i in 0..50 {
            writer.append(&payload(i)).expect("append");
        }
        writer.begin_epoch(1).expect("epoch");
        writer.close().expect("close");
    }
    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("per-core log set") && stdout.contains("core 1:"),
        "{stdout}"
    );

    let (code, stdout, _) = run(&["inspect", "--json", path(dir.path())]);
    assert_eq!(code, 0);
    let lines = json_lines(&stdout);
    assert_eq!(lines[0]["type"], "set");
    assert_eq!(lines[0]["cores"], 2);
    let logs: Vec<&Value> = lines.iter().filter(|l| l["type"] == "log").collect();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[1]["core"], 1);

    let (code, stdout, _) = run(&["verify", "--json", path(dir.path())]);
    assert_eq!(code, 0);
    let v = json_one(&stdout);
    assert_eq!(v["kind"], "per-core");
    assert_eq!(v["cores"].as_array().expect("cores").len(), 2);

    // Core 1's log replaced by core 1's log of another set.
    let other = tempfile::tempdir().expect("tempdir");
    let (set, _) = PerCoreWalManager::open(other.path(), 2, options()).expect("open other");
    drop(set);
    let core1 = dir.path().join("core-001");
    let kept = dir.path().join("kept-core-001");
    fs::rename(&core1, &kept).expect("move aside");
    fs::rename(other.path().join("core-001"), &core1).expect("move in");
    let (code, _, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("core 1") && stderr.contains("another set"),
        "{stderr}"
    );

    fs::remove_dir_all(&core1).expect("remove");
    let (code, _, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("core-001") && stderr.contains("missing"),
        "{stderr}"
    );
}

#[test]
fn bench_runs_small_and_reports_ratios_in_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = run(&[
        "bench",
        "--json",
        "--records",
        "40",
        "--sync",
        "group",
        "--group-size",
        "10",
        "--record-size",
        "100",
        "--dir",
        path(dir.path()),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = json_one(&stdout);
    assert_eq!(v["records"], 40);
    assert_eq!(v["commit"]["syncs"], 4);
    for test in ["append", "commit", "scan"] {
        let ratio = v[test]["ratio"].as_f64().expect("ratio");
        assert!(ratio.is_finite() && ratio > 0.0, "{test}: {ratio}");
    }
    assert!(
        fs::read_dir(dir.path()).expect("list").next().is_none(),
        "the scratch directory is removed"
    );
}

#[cfg(not(feature = "io-uring"))]
#[test]
fn bench_on_io_uring_without_the_feature_says_so() {
    let (code, _, stderr) = run(&["bench", "--backend", "io-uring"]);
    assert_eq!(code, 64);
    one_line(&stderr);
    assert!(
        stderr.contains("io-uring") && stderr.contains("feature"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_64_not_a_verdict_code() {
    let (code, _, stderr) = run(&["verify"]);
    assert_eq!(code, 64, "{stderr}");
    let (code, _, _) = run(&["repair", "--mode", "whatever", "x"]);
    assert_eq!(code, 64);
}

/// A log written through io_uring is the same bytes: the tool reads it, finds its torn tail, and
/// repairs it (on a kernel that refuses io_uring, the open falls back to the file backend).
#[cfg(feature = "io-uring")]
#[test]
fn log_written_by_io_uring_is_verified_and_repaired() {
    use lamina::Backend;
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::UringOrFile(lamina::uring_backend::Options::new());
    let (mut log, _, selected) =
        WriteAheadLog::open_dir(dir.path(), options(), backend).expect("open");
    eprintln!("written on {:?}", selected.backend);
    let mut appended = Vec::new();
    for i in 0..150 {
        appended.push(log.append(&payload(i)).expect("append"));
    }
    log.sync().expect("sync");
    drop(log);
    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let last = payload(149);
    let file = file_holding(dir.path(), &last);
    flip_bits(&file, find(&file, &last), 0x40);
    let (code, _, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("LSN {}", appended[149])),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["repair", "--apply", path(dir.path())]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn verify_reads_a_log_whose_writer_holds_the_lock_and_repair_apply_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = WriteAheadLog::open(dir.path(), options()).expect("open");
    for i in 0..50 {
        log.append(&payload(i)).expect("append");
    }
    log.sync().expect("sync");
    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // The last record damaged under the writer's feet: something to repair, and the lock held.
    let last = payload(49);
    let file = file_holding(dir.path(), &last);
    flip_bits(&file, find(&file, &last), 0x02);
    let (code, _, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 1, "{stderr}");
    let before = snapshot(dir.path());
    let (code, _, stderr) = run(&["repair", "--apply", path(dir.path())]);
    assert_eq!(code, 3, "{stderr}");
    one_line(&stderr);
    assert!(stderr.contains("locked by another process"), "{stderr}");
    assert_eq!(snapshot(dir.path()), before, "nothing changed");
    drop(log);
}

#[test]
fn a_path_that_is_not_utf8_is_shown_lossily_in_json() {
    use std::os::unix::ffi::OsStrExt;
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join(std::ffi::OsStr::from_bytes(b"log-\xff"));
    write_log(&dir, 20, true);
    let (code, stdout, stderr) = run(&[
        std::ffi::OsStr::new("verify"),
        std::ffi::OsStr::new("--json"),
        dir.as_os_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = json_one(&stdout);
    assert!(
        v["path"].as_str().expect("path").contains("log-\u{fffd}"),
        "{v}"
    );
}

/// Runs `lamina args...` as a user the permission bits apply to: as `nobody` through `setpriv`
/// when the tests run as root (root reads anything), else as the current user.
fn run_unprivileged(args: &[&str]) -> (i32, String, String) {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().expect("probe");
    let root = probe.as_file().metadata().expect("metadata").uid() == 0;
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_lamina"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_lamina"))
    };
    let out = command.args(args).output().expect("run lamina");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8"),
        stderr,
    )
}

#[test]
fn permission_denied_on_a_directory_or_a_segment_exits_3_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("tempdir");
    let mode =
        |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).expect("chmod");
    mode(root.path(), 0o755);
    let log = root.path().join("log");
    write_log(&log, 200, true);
    mode(&log, 0o755);
    let files = segment_files(&log);
    for f in &files {
        mode(f, 0o644);
    }
    let (code, stdout, stderr) = run_unprivileged(&["verify", path(&log)]);
    assert_eq!(code, 0, "readable by others: {stdout}{stderr}");

    mode(&files[1], 0o000);
    for command in ["verify", "inspect"] {
        let (code, _, stderr) = run_unprivileged(&[command, path(&log)]);
        assert_eq!(code, 3, "{command}: {stderr}");
        one_line(&stderr);
        assert!(stderr.contains("0000000000000001.seg"), "{stderr}");
        assert!(
            stderr.to_lowercase().contains("permission denied"),
            "{stderr}"
        );
    }
    mode(&files[1], 0o644);

    mode(&log, 0o000);
    let (code, _, stderr) = run_unprivileged(&["verify", path(&log)]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("permission denied") && stderr.contains(path(&log)),
        "{stderr}"
    );
    mode(&log, 0o755);
}

#[test]
fn per_core_set_with_a_torn_tail_in_one_core_is_repaired_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (set, _) = PerCoreWalManager::open(dir.path(), 2, options()).expect("open set");
    for mut writer in set.writers() {
        for i in 0..40 {
            writer.append(&payload(i)).expect("append");
        }
        writer.sync().expect("sync");
    }
    let core1 = dir.path().join("core-001");
    let last = payload(39);
    let file = file_holding(&core1, &last);
    flip_bits(&file, find(&file, &last) + 1, 0x08);

    let (code, stdout, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("core 1: torn tail"), "{stderr}");
    let (code, stdout, _) = run(&["repair", "--json", path(dir.path())]);
    assert_eq!(code, 1);
    let v = json_one(&stdout);
    assert_eq!(v["cores"][0]["status"], "clean");
    assert_eq!(v["cores"][1]["status"], "pending");

    let (code, _, stderr) = run(&["repair", "--apply", path(dir.path())]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(&["verify", path(dir.path())]);
    assert_eq!(code, 0, "{stderr}");
    let (_, recovery) = PerCoreWalManager::open(dir.path(), 2, options()).expect("reopen the set");
    assert_eq!(recovery.cores.len(), 2);
}
