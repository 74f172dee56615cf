//! Named objects: atomic replace, create-only publish as a fence, reads, sorted listing, delete.

use lamina_core::io::{Error as _, Failure, ObjectOp, ObjectStorage, Publish};
use lamina_file::{FileError, FileObjects, FileStorage, Options, WholeObject};
use lamina_tests::hang::{mkfifo, within};
use std::fs;
use std::time::Duration;

fn run(o: &mut FileObjects, op: ObjectOp<'_>) -> Result<(), FileError> {
    o.submit(4, op)?;
    let (token, result) = o.poll_completion().expect("completed at once");
    assert_eq!(token, 4);
    assert!(o.poll_completion().is_none());
    result
}

fn publish(o: &mut FileObjects, name: &str, data: &[u8], mode: Publish) -> Result<(), FileError> {
    run(o, ObjectOp::Publish { name, data, mode })
}

fn read(o: &mut FileObjects, name: &str) -> Result<Vec<u8>, FileError> {
    let mut buf = vec![0u8; 1024];
    let n = o.read_at(name, 0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn list(o: &mut FileObjects, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    o.list(prefix, &mut |n| names.push(n.to_owned())).unwrap();
    names
}

#[test]
fn replace_publishes_and_overwrites_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    publish(&mut o, "manifest", b"first version", Publish::Replace).unwrap();
    assert_eq!(read(&mut o, "manifest").unwrap(), b"first version");
    publish(&mut o, "manifest", b"second", Publish::Replace).unwrap();
    assert_eq!(read(&mut o, "manifest").unwrap(), b"second");
    // Only the object remains: no temporary file is left behind.
    let files: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn if_absent_on_an_existing_object_is_already_exists_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    publish(&mut o, "manifest-0002", b"winner", Publish::IfAbsent).unwrap();
    let e = publish(&mut o, "manifest-0002", b"zombie", Publish::IfAbsent).unwrap_err();
    assert_eq!(e.failure(), Failure::AlreadyExists);
    assert_eq!(e.path(), dir.path().join("manifest-0002"));
    assert!(e.to_string().starts_with("link of "), "{e}");
    assert_eq!(read(&mut o, "manifest-0002").unwrap(), b"winner");
    assert_eq!(
        list(&mut o, ""),
        ["manifest-0002"],
        "the loser's temp is gone"
    );
}

#[test]
fn read_at_offsets_and_missing_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    publish(&mut o, "part", b"0123456789", Publish::IfAbsent).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(o.read_at("part", 3, &mut buf).unwrap(), 4);
    assert_eq!(&buf, b"3456");
    assert_eq!(o.read_at("part", 8, &mut buf).unwrap(), 2);
    assert_eq!(o.read_at("part", 10, &mut buf).unwrap(), 0);
    let e = o.read_at("absent", 0, &mut buf).unwrap_err();
    assert_eq!(e.failure(), Failure::NotFound);
    assert!(e.to_string().contains("absent"), "{e}");
}

#[test]
fn list_is_sorted_filtered_by_prefix_and_skips_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    for name in [
        "part-b",
        "manifest-0002",
        "part-a",
        "manifest-0001",
        "other",
    ] {
        publish(&mut o, name, name.as_bytes(), Publish::Replace).unwrap();
    }
    // A publish a crash interrupted.
    fs::write(dir.path().join(".tmp-1-0"), b"partial").unwrap();
    assert_eq!(
        list(&mut o, "manifest-"),
        ["manifest-0001", "manifest-0002"]
    );
    assert_eq!(list(&mut o, "part"), ["part-a", "part-b"]);
    assert_eq!(
        list(&mut o, ""),
        [
            "manifest-0001",
            "manifest-0002",
            "other",
            "part-a",
            "part-b"
        ]
    );
    assert!(list(&mut o, "zzz").is_empty());
}

#[test]
fn delete_removes_and_an_absent_object_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    publish(&mut o, "part", b"x", Publish::Replace).unwrap();
    run(&mut o, ObjectOp::Delete { name: "part" }).unwrap();
    assert!(list(&mut o, "").is_empty());
    assert_eq!(
        read(&mut o, "part").unwrap_err().failure(),
        Failure::NotFound
    );
    run(&mut o, ObjectOp::Delete { name: "part" }).unwrap();
    // Deleted, it can be published create-only again.
    publish(&mut o, "part", b"y", Publish::IfAbsent).unwrap();
}

#[test]
fn names_that_are_not_file_names_are_refused_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    for name in ["", "..", "a/b", ".tmp-9-9"] {
        let op = ObjectOp::Publish {
            name,
            data: b"x",
            mode: Publish::Replace,
        };
        match o.submit(1, op) {
            Err(FileError::InvalidName { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name:?}: {other:?}"),
        }
        assert!(
            o.poll_completion().is_none(),
            "no completion for a refused op"
        );
    }
    assert!(o.read_at("../x", 0, &mut [0; 4]).is_err());
}

#[test]
fn a_log_keeps_its_objects_in_a_subdirectory() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path(), Options::new()).unwrap();
    let mut o = storage.open_objects().unwrap();
    assert_eq!(o.dir(), dir.path().join("objects"));
    publish(&mut o, "manifest-0001", b"m", Publish::IfAbsent).unwrap();
    // The segment listing does not see the object directory.
    let mut ids = [lamina_core::SegmentId(0); 4];
    assert_eq!(
        lamina_core::io::SegmentStorage::list(&mut storage, &mut ids).unwrap(),
        0
    );
}

#[test]
fn opening_a_file_as_the_object_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects");
    fs::write(&file, b"").unwrap();
    let e = FileObjects::open(&file).unwrap_err();
    assert_eq!(e.path(), file);
    assert!(e.to_string().contains("Not a directory"), "{e}");
}

#[test]
fn a_fifo_under_an_object_name_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::open(dir.path(), Options::new()).unwrap();
    let mut objects = storage.open_objects().unwrap();
    let fifo = dir.path().join("objects").join("manifest-1");
    mkfifo(&fifo);
    let result = within(Duration::from_secs(10), move || {
        let mut buf = [0u8; 16];
        objects.read_at("manifest-1", 0, &mut buf).map(|_| ())
    })
    .expect("reading a FIFO object hung");
    let e = result.expect_err("a FIFO is not an object");
    assert!(e.to_string().contains("manifest-1"), "{e}");
}

#[test]
fn read_whole_returns_every_byte_up_to_the_limit() {
    use lamina_file::WholeObject;
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    publish(&mut o, "part", b"0123456789", Publish::Replace).unwrap();
    assert_eq!(
        o.read_whole("part", 10).unwrap(),
        WholeObject::Bytes(b"0123456789".to_vec())
    );
    assert_eq!(
        o.read_whole("part", u64::MAX).unwrap(),
        WholeObject::Bytes(b"0123456789".to_vec())
    );
    assert_eq!(
        o.read_whole("part", 9).unwrap(),
        WholeObject::TooLong { len: 10 }
    );
    let e = o.read_whole("absent", 10).unwrap_err();
    assert_eq!(e.failure(), Failure::NotFound);
    assert!(matches!(
        o.read_whole("a/b", 10).unwrap_err(),
        FileError::InvalidName { .. }
    ));
}

#[test]
fn read_whole_of_a_huge_sparse_file_reads_nothing() {
    use lamina_file::WholeObject;
    let dir = tempfile::tempdir().unwrap();
    let o = FileObjects::open(dir.path()).unwrap();
    let huge = 64u64 << 30;
    fs::File::create(dir.path().join("big"))
        .unwrap()
        .set_len(huge)
        .unwrap();
    assert_eq!(
        o.read_whole("big", 1 << 20).unwrap(),
        WholeObject::TooLong { len: huge }
    );
}

#[test]
fn read_whole_refuses_a_directory_or_fifo_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let o = FileObjects::open(dir.path()).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    for name in ["sub", "fifo"] {
        let e = o.read_whole(name, 100).unwrap_err();
        assert!(
            matches!(&e, FileError::NotRegularFile { path } if path == &dir.path().join(name)),
            "{e:?}"
        );
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}

#[test]
fn staged_objects_are_invisible_until_committed_and_then_all_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    publish(&mut o, "b", b"old", Publish::Replace).unwrap();
    let staged: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| o.stage(name, format!("new {name}").as_bytes()).unwrap())
        .collect();
    // Staged: not listed, and `b` still reads its old bytes.
    assert_eq!(list(&mut o, ""), vec!["b".to_string()]);
    assert_eq!(read(&mut o, "b").unwrap(), b"old");
    o.commit_staged(staged).unwrap();
    assert_eq!(list(&mut o, ""), vec!["a", "b", "c"]);
    for name in ["a", "b", "c"] {
        assert_eq!(
            read(&mut o, name).unwrap(),
            format!("new {name}").as_bytes()
        );
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// How many temporary files are in `dir`.
fn temporaries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp-"))
        .count()
}

#[test]
fn staged_objects_synced_early_commit_and_dropped_ones_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    let kept = o.stage("kept", b"kept").unwrap().sync().unwrap();
    let dropped = o.stage("dropped", b"dropped").unwrap();
    let discarded = o.stage("discarded", b"discarded").unwrap().sync().unwrap();
    assert_eq!(temporaries(dir.path()), 3);
    drop(dropped);
    discarded.discard();
    assert_eq!(temporaries(dir.path()), 1);
    o.commit_staged(vec![kept]).unwrap();
    assert_eq!(temporaries(dir.path()), 0);
    assert_eq!(list(&mut o, ""), vec!["kept".to_string()]);
    assert_eq!(read(&mut o, "kept").unwrap(), b"kept");
}

#[test]
fn a_staged_object_published_on_its_own_is_create_only_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    // Unsynced and synced early, each published.
    let first = o.stage("m1", b"first").unwrap();
    o.publish_staged(first, Publish::IfAbsent).unwrap();
    let second = o.stage("m2", b"second").unwrap().sync().unwrap();
    o.publish_staged(second, Publish::IfAbsent).unwrap();
    // A second writer of a taken name loses, and the winner's bytes stay.
    let zombie = o.stage("m1", b"zombie").unwrap();
    let e = o.publish_staged(zombie, Publish::IfAbsent).unwrap_err();
    assert_eq!(e.failure(), Failure::AlreadyExists);
    assert_eq!(e.path(), dir.path().join("m1"));
    assert_eq!(read(&mut o, "m1").unwrap(), b"first");
    // Replace overwrites whole.
    let newer = o.stage("m2", b"replaced").unwrap();
    o.publish_staged(newer, Publish::Replace).unwrap();
    assert_eq!(read(&mut o, "m2").unwrap(), b"replaced");
    assert_eq!(list(&mut o, ""), ["m1", "m2"]);
    assert_eq!(temporaries(dir.path()), 0);
}

/// Bytes of `len` that differ at every offset, so a shifted or padded read-back shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 % 251) as u8).collect()
}

#[test]
fn staged_objects_of_every_length_around_a_block_read_back_whole_with_and_without_direct_io() {
    // Lengths around 512- and 4096-byte blocks and a 1 MiB chunk: a direct write pads the last
    // block and cuts the file back, which must not show.
    let lengths = [
        0,
        1,
        511,
        512,
        513,
        4095,
        4096,
        4097,
        (1 << 20) - 1,
        (1 << 20) + 4097,
    ];
    for direct in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let o = FileObjects::open(dir.path())
            .unwrap()
            .with_direct_io(direct);
        let staged: Vec<_> = lengths
            .iter()
            .map(|&len| o.stage(&format!("o{len}"), &pattern(len)).unwrap())
            .collect();
        o.commit_staged(staged).unwrap();
        for len in lengths {
            let Ok(WholeObject::Bytes(back)) = o.read_whole(&format!("o{len}"), 1 << 21) else {
                panic!("o{len} does not read back whole");
            };
            assert_eq!(back.len(), len, "length {len}, direct I/O {direct}");
            assert!(
                back == pattern(len),
                "bytes of length {len}, direct I/O {direct}"
            );
        }
    }
}

#[test]
fn deleting_many_objects_at_once_deletes_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
    for name in &names {
        publish(&mut o, name, b"x", Publish::Replace).unwrap();
    }
    let doomed: Vec<&str> = names.iter().step_by(2).map(String::as_str).collect();
    o.delete_many(&doomed).unwrap();
    let kept: Vec<String> = names.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(list(&mut o, ""), kept);
}

#[test]
fn delete_many_removes_each_and_missing_ones_are_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileObjects::open(dir.path()).unwrap();
    for name in ["a", "b", "c"] {
        publish(&mut o, name, b"x", Publish::Replace).unwrap();
    }
    o.delete_many(&["a", "c", "gone"]).unwrap();
    assert_eq!(list(&mut o, ""), vec!["b".to_string()]);
    assert!(o.delete_many(&["../escape"]).is_err());
}
