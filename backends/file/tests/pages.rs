//! Writes padded to the end of their last page (`Options::pad_to_page`): only the furthest write
//! into a segment is padded, never past the file's length, and never over bytes written since
//! the file was opened.

mod common;

use common::*;
use lamina_core::SegmentId;
use lamina_core::io::SegmentOp;
use lamina_file::{FileStorage, Options};
use std::fs;

const PAGE: usize = 4096;

fn write(s: &mut FileStorage, offset: u64, data: &[u8]) {
    let op = SegmentOp::Write {
        segment: SegmentId(0),
        offset,
        data,
        sync: true,
    };
    run(s, op).expect("write");
}

fn bytes(s: &FileStorage) -> Vec<u8> {
    fs::read(s.segment_path(SegmentId(0))).unwrap()
}

/// A segment of `len` bytes: the header, then 0xee (old bytes, as in a recycled file).
fn segment_with_old_bytes(dir: &std::path::Path, len: usize) {
    let mut s = FileStorage::open(dir, Options::new()).unwrap();
    let segment = SegmentId(0);
    create(&mut s, segment).unwrap();
    write(&mut s, 72, &vec![0xee; len - 72]);
}

#[test]
fn the_furthest_write_is_padded_with_zeros_to_its_page_end() {
    let dir = tempfile::tempdir().unwrap();
    segment_with_old_bytes(dir.path(), 3 * PAGE);
    let mut s = FileStorage::open(dir.path(), Options::new().pad_to_page(true)).unwrap();
    write(&mut s, 72, &[0xaa; 100]);
    let b = bytes(&s);
    assert!(b[72..172].iter().all(|x| *x == 0xaa));
    assert!(
        b[172..PAGE].iter().all(|x| *x == 0),
        "zeros to the page end"
    );
    assert!(
        b[PAGE..].iter().all(|x| *x == 0xee),
        "nothing after the page"
    );
    assert_eq!(s.stats().padded_writes, 1);

    // One across a page boundary: padded to the end of its last page.
    write(&mut s, 172, &[0xbb; PAGE]);
    let b = bytes(&s);
    assert!(b[172..172 + PAGE].iter().all(|x| *x == 0xbb));
    assert!(b[172 + PAGE..2 * PAGE].iter().all(|x| *x == 0));
    assert!(b[2 * PAGE..].iter().all(|x| *x == 0xee));
    assert_eq!(b.len(), 3 * PAGE);
    assert_eq!(s.stats().padded_writes, 2);
}

#[test]
fn a_write_behind_the_furthest_is_not_padded() {
    let dir = tempfile::tempdir().unwrap();
    segment_with_old_bytes(dir.path(), 2 * PAGE);
    let mut s = FileStorage::open(dir.path(), Options::new().pad_to_page(true)).unwrap();
    // The later bytes are written first (writes in flight may be submitted in any order).
    write(&mut s, 200, &[0xcc; 100]);
    write(&mut s, 72, &[0xaa; 100]);
    let b = bytes(&s);
    assert!(b[72..172].iter().all(|x| *x == 0xaa));
    assert!(b[172..200].iter().all(|x| *x == 0xee), "not padded over");
    assert!(
        b[200..300].iter().all(|x| *x == 0xcc),
        "the later write survives"
    );
    assert!(b[300..PAGE].iter().all(|x| *x == 0));
    assert_eq!(s.stats().padded_writes, 1);
}

#[test]
fn padding_never_grows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), Options::new().pad_to_page(true)).unwrap();
    let segment = SegmentId(0);
    create(&mut s, segment).unwrap();
    write(&mut s, 72, &[0xaa; 100]);
    assert_eq!(bytes(&s).len(), 172, "a file that grows is not padded");
    assert_eq!(s.stats().padded_writes, 0);
    drop(s);

    // Within a prepared file, only up to its length.
    let dir = tempfile::tempdir().unwrap();
    let options = Options::new()
        .prepare_size(PAGE as u64 + 100)
        .pad_to_page(true);
    let mut s = FileStorage::open(dir.path(), options).unwrap();
    create(&mut s, segment).unwrap();
    write(&mut s, PAGE as u64 + 8, &[0xaa; 40]);
    let b = bytes(&s);
    assert_eq!(b.len(), PAGE + 100);
    assert!(b[PAGE + 8..PAGE + 48].iter().all(|x| *x == 0xaa));
    assert_eq!(s.stats().padded_writes, 1);
}

#[test]
fn without_the_option_nothing_is_padded() {
    let dir = tempfile::tempdir().unwrap();
    segment_with_old_bytes(dir.path(), 2 * PAGE);
    let mut s = FileStorage::open(dir.path(), Options::new()).unwrap();
    write(&mut s, 72, &[0xaa; 100]);
    let b = bytes(&s);
    assert!(b[172..].iter().all(|x| *x == 0xee));
    assert_eq!(s.stats().padded_writes, 0);
}
