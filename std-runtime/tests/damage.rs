//! Damage done to a log's directory between runs, on real files: each case gets a clear error
//! naming the file, or the documented behaviour of the chosen recovery mode; never a panic.
//! A bit flipped in a middle segment, in each mode, is the conformance suite's case, run on every
//! backend (`tests/tests/conformance/log.rs`:
//! `bit_flip_in_a_middle_segment_is_corruption_naming_the_file_in_strict`,
//! `bit_flip_in_a_middle_segment_stops_there_in_point_in_time`,
//! `bit_flip_in_a_middle_segment_is_skipped_and_reported_in_skip_corrupt`).

mod common;

use lamina::{Damage, Error, Lsn, Mode, Options, WriteAheadLog};
use lamina_tests::files::segment_files;
use std::fs;
use std::path::Path;

const RECORDS: u32 = 1_500;

fn options(mode: Mode) -> Options {
    Options {
        mode,
        ..common::batched_options(32 * 1024)
    }
}

fn payload(i: u32) -> Vec<u8> {
    format!("record {i:05} ")
        .repeat(1 + (i % 13) as usize)
        .into_bytes()
}

/// A closed log of `RECORDS` records over several segments; returns the LSNs with payloads.
fn write_log(dir: &Path) -> Vec<(Lsn, Vec<u8>)> {
    let (mut log, _) = WriteAheadLog::open(dir, options(Mode::Strict)).unwrap();
    let mut appended = Vec::new();
    for i in 0..RECORDS {
        let p = payload(i);
        appended.push((log.append(&p).unwrap(), p));
    }
    log.close().unwrap();
    appended
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn read_all(log: &mut WriteAheadLog<lamina::file_backend::FileStorage>) -> Vec<(Lsn, Vec<u8>)> {
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| read.push((lsn, p.to_vec())))
        .unwrap();
    read
}

fn open_error(dir: &Path, mode: Mode) -> Error {
    match WriteAheadLog::open(dir, options(mode)) {
        Ok((_, report)) => panic!("opened a damaged log: {report:?}"),
        Err(e) => e,
    }
}

/// Asserts a recovery error that names `file` (by its file name) and returns its damage.
fn assert_names_file(e: &Error, file: &Path) -> Option<Damage> {
    let text = e.to_string();
    assert!(
        text.contains(&file_name(file)),
        "the error should name {}: {text}",
        file.display()
    );
    match e {
        Error::Recover { damage, .. } => damage.as_ref().map(|d| d.damage),
        other => panic!("expected a recovery error, got {other:?}"),
    }
}

#[test]
fn deleted_middle_segment_is_an_error_naming_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let files = segment_files(dir.path());
    fs::remove_file(&files[1]).unwrap();
    let e = open_error(dir.path(), Mode::Strict);
    // The segment after the gap is the one that does not link.
    assert_names_file(&e, &files[2]);
}

#[test]
fn segment_of_another_log_copied_in_is_foreign() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    write_log(ours.path());
    write_log(theirs.path());
    let files = segment_files(ours.path());
    let foreign = segment_files(theirs.path());
    fs::copy(&foreign[1], &files[1]).unwrap();
    let e = open_error(ours.path(), Mode::Strict);
    let damage = assert_names_file(&e, &files[1]);
    assert!(
        matches!(damage, Some(Damage::Foreign { .. })),
        "foreign: {e}"
    );
}

#[test]
fn segment_of_another_log_added_at_the_end_is_foreign() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    write_log(ours.path());
    write_log(theirs.path());
    let files = segment_files(ours.path());
    let next = ours.path().join(format!("{:016x}.seg", files.len() + 5));
    fs::copy(&segment_files(theirs.path())[0], &next).unwrap();
    let e = open_error(ours.path(), Mode::Strict);
    assert_names_file(&e, &next);
}

#[test]
fn truncated_header_of_a_middle_segment_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let files = segment_files(dir.path());
    fs::OpenOptions::new()
        .write(true)
        .open(&files[2])
        .unwrap()
        .set_len(40)
        .unwrap();
    let e = open_error(dir.path(), Mode::Strict);
    assert_names_file(&e, &files[2]);
}

#[test]
fn truncated_header_of_the_last_segment_is_a_create_cut_by_a_crash() {
    // A segment's header is written and synced at its creation, before any record: a last
    // segment without a whole header holds nothing acknowledged, so recovery discards it.
    let dir = tempfile::tempdir().unwrap();
    let appended = write_log(dir.path());
    let files = segment_files(dir.path());
    let last = files.last().unwrap();
    let next = dir.path().join(format!("{:016x}.seg", files.len()));
    let header = fs::read(last).unwrap();
    fs::write(&next, &header[..30]).unwrap();
    let (mut log, _report) = WriteAheadLog::open(dir.path(), options(Mode::Strict)).unwrap();
    assert_eq!(read_all(&mut log), appended);
}

#[test]
fn garbage_files_in_the_directory_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let appended = write_log(dir.path());
    fs::write(dir.path().join("notes.txt"), b"not a segment").unwrap();
    fs::write(dir.path().join("zzzz.seg"), b"not a segment either").unwrap();
    fs::write(dir.path().join("0000000000000001.seg.bak"), b"a backup").unwrap();
    let (mut log, report) = WriteAheadLog::open(dir.path(), options(Mode::Strict)).unwrap();
    assert_eq!((report.damage, report.cut), (None, None), "{report:?}");
    assert!(
        report.elapsed > std::time::Duration::ZERO,
        "recovery is timed"
    );
    assert_eq!(read_all(&mut log), appended);
}

#[test]
fn garbage_under_a_segment_name_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let files = segment_files(dir.path());
    fs::write(&files[1], vec![0x5a; 10_000]).unwrap();
    let e = open_error(dir.path(), Mode::Strict);
    assert_names_file(&e, &files[1]);
}

#[test]
fn future_version_segment_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let files = segment_files(dir.path());
    // The version is the u16 after the 8-byte magic (core/FORMAT.md).
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[8] = 0x7f;
    fs::write(&files[0], bytes).unwrap();
    let e = open_error(dir.path(), Mode::Strict);
    assert!(e.to_string().contains(&file_name(&files[0])), "{e}");
}

#[test]
fn a_directory_under_a_segment_name_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let odd = dir.path().join("00000000000000ff.seg");
    fs::create_dir(&odd).unwrap();
    let e = open_error(dir.path(), Mode::Strict);
    assert!(e.to_string().contains(&file_name(&odd)), "{e}");
}
