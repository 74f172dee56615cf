//! Manifest names: `{id:020}.manifest`, zero-padded so that names sort as ids do.

/// The suffix of a manifest's name.
pub const MANIFEST_SUFFIX: &str = ".manifest";

/// Decimal digits of the id in a manifest's name: enough for every `u64`.
const ID_DIGITS: usize = 20;

/// The name manifest `id` is stored under.
#[must_use]
pub fn manifest_file_name(id: u64) -> String {
    format!("{id:020}{MANIFEST_SUFFIX}")
}

/// The id a manifest name stands for: exactly 20 ASCII digits (a value that fits a `u64`) and
/// `.manifest`; `None` for any other name, which is not a manifest.
#[must_use]
pub fn parse_manifest_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(MANIFEST_SUFFIX)?;
    if digits.len() != ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_round_trip_and_sort_as_ids() {
        for id in [0, 1, 9, 10, 12345, u64::MAX] {
            let name = manifest_file_name(id);
            assert_eq!(name.len(), 20 + MANIFEST_SUFFIX.len());
            assert_eq!(parse_manifest_file_name(&name), Some(id));
        }
        assert!(manifest_file_name(9) < manifest_file_name(10));
    }

    #[test]
    fn other_names_are_not_manifests() {
        for other in [
            "",
            ".manifest",
            "1.manifest",
            "0000000000000000001.manifest",
            "000000000000000000001.manifest",
            "18446744073709551616.manifest",
            "99999999999999999999.manifest",
            "+0000000000000000001.manifest",
            "0000000000000000001a.manifest",
            "00000000000000000001.manifest.tmp",
            "00000000000000000001.MANIFEST",
            ".tmp-12-3",
            "00000000000000000001",
        ] {
            assert_eq!(parse_manifest_file_name(other), None, "{other:?}");
        }
    }
}
