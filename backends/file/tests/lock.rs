//! The directory lock: one opener at a time, and a clear error naming the holder.

use lamina_file::{FileError, FileStorage, Options};

#[test]
fn second_open_is_locked_naming_the_pid_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStorage::open(dir.path(), Options::new()).unwrap();
    let lock = std::fs::read_to_string(dir.path().join("LOCK")).unwrap();
    assert_eq!(lock.trim(), std::process::id().to_string());
    match FileStorage::open(dir.path(), Options::new()) {
        Err(e @ FileError::Locked { .. }) => {
            let FileError::Locked { pid, ref path } = e else {
                unreachable!()
            };
            assert_eq!(pid, Some(std::process::id()));
            assert_eq!(path, &dir.path().join("LOCK"));
            let text = e.to_string();
            assert!(
                text.ends_with(&format!(
                    "locked by another process (pid {})",
                    std::process::id()
                )),
                "{text}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    let again = FileStorage::open(dir.path(), Options::new()).expect("free after drop");
    drop(again);
}

#[test]
fn open_creates_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a").join("b");
    let s = FileStorage::open(&log, Options::new()).unwrap();
    assert!(log.is_dir());
    assert_eq!(s.dir(), log);
}

/// Set in the child process of [`another_process_is_told_our_pid`]: the directory to open.
const CHILD_ENV: &str = "LAMINA_FILE_LOCK_CHILD";

#[test]
fn another_process_is_told_our_pid() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        // The child: report what opening the held directory says.
        match FileStorage::open(&dir, Options::new()) {
            Err(FileError::Locked { pid, .. }) => println!("LOCKED {}", pid.unwrap_or(0)),
            other => println!("NOT LOCKED {other:?}"),
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let held = FileStorage::open(dir.path(), Options::new()).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "another_process_is_told_our_pid", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("LOCKED {}", std::process::id())),
        "{stdout}"
    );
    drop(held);
}
