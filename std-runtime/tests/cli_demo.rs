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

fn lamina(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .output()
        .expect("run lamina")
}

/// A state store with a few checkpoints, written through the library.
fn store_with_checkpoints(dir: &std::path::Path) {
    use lamina::{Op, Options, StateStoreConfig, WalStateStore};
    let mut config = StateStoreConfig::default();
    config.incremental.buckets = 4;
    config.incremental.retain = 2;
    let mut store: WalStateStore<lamina::file_backend::FileStorage, 2> =
        WalStateStore::open_dir(dir, Options::default(), config).unwrap();
    for round in 0..3u32 {
        store
            .apply(
                (0..200u32).map(|i| Op::Put(format!("k{i}").into_bytes(), vec![round as u8; 40])),
            )
            .unwrap();
        store.checkpoint().unwrap();
    }
    store.close().unwrap();
}

fn flip(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn inspect_and_verify_read_a_state_store_and_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    store_with_checkpoints(dir.path());
    let checkpoints = dir.path().join("checkpoints");
    let out = lamina(&["inspect", checkpoints.to_str().unwrap(), "--records"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("manifest 3: epoch 3, parent 2"), "{text}");
    assert!(text.contains("kv-base"), "{text}");
    assert!(
        !text.contains("manifest 1:"),
        "only the kept manifests are left: {text}"
    );
    let out = lamina(&["verify", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("read and checked: clean"), "{text}");
    let out = lamina(&["inspect", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn verify_names_a_damaged_part_and_a_damaged_newest_manifest() {
    let dir = tempfile::tempdir().unwrap();
    store_with_checkpoints(dir.path());
    let checkpoints = dir.path().join("checkpoints");
    let part = std::fs::read_dir(checkpoints.join("parts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains("-b0"))
        .unwrap();
    flip(&part, 40);
    let out = lamina(&["verify", checkpoints.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&*part.file_name().unwrap().to_string_lossy()),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    store_with_checkpoints(dir.path());
    let newest = dir
        .path()
        .join("checkpoints/manifests/00000000000000000003.manifest");
    flip(&newest, 20);
    let out = lamina(&["verify", dir.path().join("checkpoints").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("manifest 3 is damaged (recovery falls back to manifest 2)"),
        "{stdout}"
    );
    // And the library does exactly that.
    let store: lamina::WalStateStore<lamina::file_backend::FileStorage, 2> =
        lamina::WalStateStore::open_dir(dir.path(), lamina::Options::default(), Default::default())
            .unwrap();
    assert_eq!(store.recovery().checkpoint.map(|c| c.id), Some(2));
    assert_eq!(store.len(), 200);
}
