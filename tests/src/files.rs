//! A log's directory as files, for tests that look at or damage them: its segment files, and a
//! byte flipped in one.

use std::fs;
use std::path::{Path, PathBuf};

/// The segment files (`*.seg`) of `dir`, in order (their names are their sequence numbers in
/// fixed-width hex).
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// Flips the bits `mask` of the byte at `offset` of the file at `path`.
pub fn flip_bits(path: &Path, offset: usize, mask: u8) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset] ^= mask;
    fs::write(path, bytes).expect("write");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_files_lists_only_segments_in_order_and_flip_bits_flips_them() {
        let dir = std::env::temp_dir().join(format!("lamina-files-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        for name in [
            "0000000000000001.seg",
            "0000000000000000.seg",
            "LOCK",
            "x.seg.tmp",
        ] {
            fs::write(dir.join(name), [0u8; 4]).expect("write");
        }
        let files = segment_files(&dir);
        assert_eq!(
            files,
            [
                dir.join("0000000000000000.seg"),
                dir.join("0000000000000001.seg")
            ]
        );
        flip_bits(&files[1], 2, 0x41);
        assert_eq!(fs::read(&files[1]).expect("read"), [0, 0, 0x41, 0]);
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
