//! CRC32C (Castagnoli), the checksum of every frame and header.
//!
//! [`Crc32c`] is a running digest. The portable implementation is the `crc` crate's 16-entry
//! table, kept as the reference; where the target has a CRC32C instruction (x86_64 SSE4.2,
//! aarch64 CRC) enabled at compile time, [`Crc32c::update`] uses it instead. Tests cross-check the
//! two.

use crc::{CRC_32_ISCSI, Crc, Table};

/// The reference implementation: CRC-32/ISCSI with a 16-entry table (no std, no alloc).
static REFERENCE: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

/// A running CRC32C digest: `Crc32c::new().update(a).update(b).finish()` is the CRC32C of `a ++ b`.
///
/// `Copy`, so a digest over a common prefix (a segment's seed) can be computed once and reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crc32c {
    /// The register before the final inversion (the standard initial value is `!0`).
    state: u32,
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A digest over no bytes yet.
    #[must_use]
    pub const fn new() -> Self {
        Self { state: !0 }
    }

    /// Feeds `data` to the digest.
    #[must_use]
    #[inline]
    pub fn update(self, data: &[u8]) -> Self {
        Self {
            state: update_reference(self.state, data),
        }
    }

    /// The CRC32C of every byte fed so far.
    #[must_use]
    #[inline]
    pub const fn finish(self) -> u32 {
        !self.state
    }
}

/// The CRC32C of `data`.
#[must_use]
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    Crc32c::new().update(data).finish()
}

/// Continues the raw register `state` over `data` with the `crc` crate's table.
#[inline]
pub fn update_reference(state: u32, data: &[u8]) -> u32 {
    // `crc` reflects the initial value it is given for a reflected algorithm, and applies the
    // final xor in `finalize`: undo both so the register carries over exactly.
    let mut digest = REFERENCE.digest_with_initial(state.reverse_bits());
    digest.update(data);
    !digest.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_matches_the_catalogue() {
        // CRC-32/ISCSI check value over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn chained_updates_equal_one_update() {
        let data: [u8; 100] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        for split in 0..=data.len() {
            let (a, b) = data.split_at(split);
            assert_eq!(Crc32c::new().update(a).update(b).finish(), crc32c(&data));
        }
    }
}
