//! File names and name constants of a log directory, in one place.

use lamina_core::SegmentId;

/// The suffix of a segment file: `{sequence:016x}.seg`.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// Hex digits of a segment file's sequence number.
const SEGMENT_DIGITS: usize = 16;

/// The lock file in a log directory; it holds the pid of the process that holds the lock.
pub const LOCK_FILE: &str = "LOCK";

/// The subdirectory of a log directory where [`crate::FileStorage::open_objects`] keeps objects.
pub const OBJECTS_DIR: &str = "objects";

/// The prefix of an object being published; such files are never listed as objects.
pub const TEMP_PREFIX: &str = ".tmp-";

/// The prefix of a spare segment file: a file zero-filled ahead of need or kept from a deleted
/// segment, waiting to become a segment. Never a segment's name, so recovery never reads one.
pub const SPARE_PREFIX: &str = "spare-";

/// The suffix of a spare segment file: `spare-{number:016x}.tmp`.
pub const SPARE_SUFFIX: &str = ".tmp";

/// The file name of spare file number `n`.
#[must_use]
pub fn spare_file_name(n: u64) -> String {
    format!("{SPARE_PREFIX}{n:016x}{SPARE_SUFFIX}")
}

/// Whether `name` is a spare file's name (`spare-`, 16 lowercase hex digits, `.tmp`).
#[must_use]
pub fn is_spare_file_name(name: &str) -> bool {
    name.strip_prefix(SPARE_PREFIX)
        .and_then(|rest| rest.strip_suffix(SPARE_SUFFIX))
        .is_some_and(is_sequence_hex)
}

/// Whether `hex` is 16 lowercase hex digits.
fn is_sequence_hex(hex: &str) -> bool {
    hex.len() == SEGMENT_DIGITS && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The file name of segment `id`.
#[must_use]
pub fn segment_file_name(id: SegmentId) -> String {
    format!("{:016x}{SEGMENT_SUFFIX}", id.0)
}

/// The segment a file name stands for, if it is a segment file name (16 lowercase hex digits and
/// `.seg`); `None` for any other file.
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let hex = name.strip_suffix(SEGMENT_SUFFIX)?;
    if !is_sequence_hex(hex) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(SegmentId)
}

/// Whether `name` may name an object: not empty, not `.` or `..`, no `/` or NUL, and not a
/// temporary file's name.
#[must_use]
pub fn is_valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && !name.starts_with(TEMP_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_others_are_ignored() {
        for id in [0, 3, 0xdead_beef, u64::MAX] {
            let name = segment_file_name(SegmentId(id));
            assert_eq!(name.len(), 20);
            assert_eq!(parse_segment_file_name(&name), Some(SegmentId(id)));
        }
        for other in [
            "LOCK",
            "objects",
            "0000000000000003.seg.tmp",
            "000000000000003.seg",
            "00000000000000003.seg",
            "000000000000000A.seg",
            "+000000000000003.seg",
            ".seg",
        ] {
            assert_eq!(parse_segment_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn spare_names_are_never_segment_names() {
        for n in [0, 7, u64::MAX] {
            let name = spare_file_name(n);
            assert!(is_spare_file_name(&name), "{name}");
            assert_eq!(parse_segment_file_name(&name), None, "{name}");
        }
        for other in [
            "spare-0000000000000003",
            "spare-000000000000003.tmp",
            "spare-000000000000000A.tmp",
            "0000000000000003.seg",
            "0000000000000003.seg.tmp",
            ".tmp-1-2",
        ] {
            assert!(!is_spare_file_name(other), "{other}");
        }
    }

    #[test]
    fn object_names_exclude_paths_and_temporaries() {
        assert!(is_valid_object_name("manifest-0001"));
        for bad in ["", ".", "..", "a/b", "a\0", ".tmp-1-2"] {
            assert!(!is_valid_object_name(bad), "{bad:?}");
        }
    }
}
