//! `lamina demo`: the whole pipeline, killed with SIGKILL and recovered, run as a user would.

use std::process::Command;

fn demo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
        .arg("demo")
        .args(args)
        .output()
        .expect("run lamina")
}

#[test]
fn demo_recovers_every_acknowledged_write_and_says_so_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let out = demo(&[
        "--dir",
        path,
        "--cores",
        "2",
        "--seconds",
        "1.5",
        "--checkpoint-every",
        "0.4",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["match"], true);
    assert!(summary["acknowledged"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["checkpoints"].as_u64().unwrap() > 0, "{summary}");
    // A second run continues the same store: what the first left is its starting state.
    let out = demo(&[
        "--dir",
        path,
        "--cores",
        "2",
        "--seconds",
        "1",
        "--checkpoint-every",
        "0.3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("every acknowledged write was recovered"),
        "{stdout}"
    );
    assert!(stdout.contains("recovered in"), "{stdout}");
}

#[test]
fn demo_with_another_core_count_on_the_same_store_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let out = demo(&["--dir", path, "--cores", "1", "--seconds", "0.3", "--quiet"]);
    assert_eq!(out.status.code(), Some(0));
    let out = demo(&["--dir", path, "--cores", "2", "--seconds", "0.3"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cores"), "{stderr}");
}

#[test]
fn demo_refuses_bad_flags_with_a_usage_error() {
    for args in [
        &["--cores", "9"][..],
        &["--seconds", "0"],
        &["--checkpoint-every", "-1"],
    ] {
        let out = demo(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
    }
}
