//! CRC32C (Castagnoli), the checksum of every frame and header.
//!
//! [`Crc32c`] is a running digest. The portable implementation is the `crc` crate's 16-entry
//! table, kept as the reference ([`update_reference`]); where the target has a CRC32C instruction
//! enabled at compile time (x86_64 SSE4.2, aarch64 CRC), [`Crc32c::update`] uses it instead
//! ([`HARDWARE`] tells which one this build has). Tests cross-check the two.
//!
//! # The hardware path
//!
//! One `crc32` instruction folds 8 bytes into the register with a latency of 3 cycles but a
//! throughput of one per cycle, so a single dependency chain runs at a third of the instruction's
//! speed. Inputs of at least 192 bytes are therefore cut into chunks of three equal
//! blocks, each block is checksummed from a zero register in a chain of its own, and the chains
//! are combined. The register is linear over GF(2), so with `n` the bits in one block:
//!
//! ```text
//! crc(s, A ++ B ++ C) = s·x^3n + crc(0, A)·x^2n + crc(0, B)·x^n + crc(0, C)   (mod P)
//! ```
//!
//! Multiplying a register by `x^k mod P` is one carry-less multiply (`pclmulqdq`, `pmull`) by the
//! constant `x^(k-33) mod P`, then one `crc32` of the 64-bit product, which reduces it and brings
//! the missing `x^33` (`x^32` from the instruction, `x` from the product of two bit-reflected
//! values). Where the target has no carry-less multiply, a portable one does the same in a few
//! dozen instructions, paid once per chunk. The register shifted in is not an input of the
//! chains, so the combine of one chunk overlaps the chains of the next.
//!
//! The constants are computed by `const fn` from the polynomial of the `crc` crate's catalogue,
//! at compile time: there is no table of magic numbers to mistype, and changing a block size
//! changes its constants with it. Shorter inputs (record headers, small payloads) take the single
//! chain, which has no combine to pay for.

use crc::{CRC_32_ISCSI, Crc, Table};

/// The reference implementation: CRC-32/ISCSI with a 16-entry table (no std, no alloc).
static REFERENCE: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

/// `true` when [`Crc32c::update`] runs on a CRC32C instruction in this build (x86_64 with
/// `sse4.2`, aarch64 with `crc`, enabled at compile time), `false` when it runs the reference.
pub const HARDWARE: bool = cfg!(any(
    all(target_arch = "x86_64", target_feature = "sse4.2"),
    all(target_arch = "aarch64", target_feature = "crc"),
));

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

    /// Feeds `data` to the digest: on the CRC32C instruction where the build enables it (see
    /// [`HARDWARE`]), on the reference table otherwise.
    #[must_use]
    #[inline]
    pub fn update(self, data: &[u8]) -> Self {
        #[cfg(any(
            all(target_arch = "x86_64", target_feature = "sse4.2"),
            all(target_arch = "aarch64", target_feature = "crc"),
        ))]
        let state = hardware::update(self.state, data);
        #[cfg(not(any(
            all(target_arch = "x86_64", target_feature = "sse4.2"),
            all(target_arch = "aarch64", target_feature = "crc"),
        )))]
        let state = update_reference(self.state, data);
        Self { state }
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

/// Continues the raw register `state` over `data` with the `crc` crate's table: the reference
/// that the hardware path is tested against.
#[must_use]
#[inline]
pub fn update_reference(state: u32, data: &[u8]) -> u32 {
    // `crc` reflects the initial value it is given for a reflected algorithm, and applies the
    // final xor in `finalize`: undo both so the register carries over exactly.
    let mut digest = REFERENCE.digest_with_initial(state.reverse_bits());
    digest.update(data);
    !digest.finalize()
}

/// The CRC32C instruction, its three-chain loop and the arithmetic that combines the chains.
#[cfg(any(
    all(target_arch = "x86_64", target_feature = "sse4.2"),
    all(target_arch = "aarch64", target_feature = "crc"),
))]
mod hardware {
    use arch::{clmul, crc_u8, crc_u16, crc_u32, crc_u64};

    /// The shortest input split into three interleaved chains; shorter inputs take one chain.
    /// Three times the smallest block of the three-chain loop.
    const THREE_WAY_MIN: usize = 3 * 64;

    /// The SSE4.2 `crc32` instruction (and `pclmulqdq` when enabled). The features are enabled
    /// for the whole build, but an intrinsic is a safe call only inside a function that names
    /// them in `#[target_feature]`, hence the `unsafe` blocks.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    mod arch {
        use core::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64};

        /// Folds 8 bytes, read little-endian, into the register.
        #[inline(always)]
        pub(super) fn crc_u64(state: u32, word: u64) -> u32 {
            // The instruction zero-extends its 32-bit result to 64 bits: nothing is lost.
            // SAFETY: `sse4.2` is enabled at compile time (the `cfg` of `hardware`): every CPU this
            // build runs on has the instruction.
            unsafe { _mm_crc32_u64(u64::from(state), word) as u32 }
        }

        /// Folds 4 bytes, read little-endian, into the register.
        #[inline(always)]
        pub(super) fn crc_u32(state: u32, word: u32) -> u32 {
            // SAFETY: `sse4.2` is enabled at compile time (the `cfg` of `hardware`): every CPU this
            // build runs on has the instruction.
            unsafe { _mm_crc32_u32(state, word) }
        }

        /// Folds 2 bytes, read little-endian, into the register.
        #[inline(always)]
        pub(super) fn crc_u16(state: u32, word: u16) -> u32 {
            // SAFETY: `sse4.2` is enabled at compile time (the `cfg` of `hardware`): every CPU this
            // build runs on has the instruction.
            unsafe { _mm_crc32_u16(state, word) }
        }

        /// Folds one byte into the register.
        #[inline(always)]
        pub(super) fn crc_u8(state: u32, byte: u8) -> u32 {
            // SAFETY: `sse4.2` is enabled at compile time (the `cfg` of `hardware`): every CPU this
            // build runs on has the instruction.
            unsafe { _mm_crc32_u8(state, byte) }
        }

        /// The carry-less product of `a` and `b`.
        #[cfg(target_feature = "pclmulqdq")]
        #[inline(always)]
        pub(super) fn clmul(a: u32, b: u32) -> u64 {
            use core::arch::x86_64::{_mm_clmulepi64_si128, _mm_cvtsi32_si128, _mm_cvtsi128_si64};
            // SAFETY: `sse2` is part of x86_64 and `pclmulqdq` is enabled at compile time (the
            // `cfg` above): every CPU this build runs on has the instructions.
            let product = unsafe {
                let a = _mm_cvtsi32_si128(a.cast_signed());
                let b = _mm_cvtsi32_si128(b.cast_signed());
                _mm_cvtsi128_si64(_mm_clmulepi64_si128::<0x00>(a, b))
            };
            product.cast_unsigned()
        }

        /// The carry-less product of `a` and `b`.
        #[cfg(not(target_feature = "pclmulqdq"))]
        #[inline(always)]
        pub(super) fn clmul(a: u32, b: u32) -> u64 {
            super::clmul_portable(a, b)
        }
    }

    /// The ARMv8 CRC32C instructions (and `pmull` when `aes` is enabled). The features are
    /// enabled for the whole build, but an intrinsic is a safe call only inside a function that
    /// names them in `#[target_feature]`, hence the `unsafe` blocks.
    #[cfg(target_arch = "aarch64")]
    #[allow(unsafe_code)]
    mod arch {
        use core::arch::aarch64::{__crc32cb, __crc32cd, __crc32ch, __crc32cw};

        /// Folds 8 bytes, read little-endian, into the register.
        #[inline(always)]
        pub(super) fn crc_u64(state: u32, word: u64) -> u32 {
            // SAFETY: `crc` is enabled at compile time (the `cfg` of `hardware`): every CPU this build
            // runs on has the instruction.
            unsafe { __crc32cd(state, word) }
        }

        /// Folds 4 bytes, read little-endian, into the register.
        #[inline(always)]
        pub(super) fn crc_u32(state: u32, word: u32) -> u32 {
            // SAFETY: `crc` is enabled at compile time (the `cfg` of `hardware`): every CPU this build
            // runs on has the instruction.
            unsafe { __crc32cw(state, word) }
        }

        /// Folds 2 bytes, read little-endian, into the register.
        #[inline(always)]
        pub(super) fn crc_u16(state: u32, word: u16) -> u32 {
            // SAFETY: `crc` is enabled at compile time (the `cfg` of `hardware`): every CPU this build
            // runs on has the instruction.
            unsafe { __crc32ch(state, word) }
        }

        /// Folds one byte into the register.
        #[inline(always)]
        pub(super) fn crc_u8(state: u32, byte: u8) -> u32 {
            // SAFETY: `crc` is enabled at compile time (the `cfg` of `hardware`): every CPU this build
            // runs on has the instruction.
            unsafe { __crc32cb(state, byte) }
        }

        /// The carry-less product of `a` and `b`. (Miri does not know `pmull`: it runs the
        /// portable one.)
        #[cfg(all(target_feature = "aes", not(miri)))]
        #[inline(always)]
        pub(super) fn clmul(a: u32, b: u32) -> u64 {
            // SAFETY: `neon` is part of aarch64 and `aes` is enabled at compile time (the `cfg`
            // above): every CPU this build runs on has `pmull`.
            let product = unsafe { core::arch::aarch64::vmull_p64(u64::from(a), u64::from(b)) };
            // The product of two 32-bit polynomials has at most 63 bits.
            product as u64
        }

        /// The carry-less product of `a` and `b`.
        #[cfg(any(not(target_feature = "aes"), miri))]
        #[inline(always)]
        pub(super) fn clmul(a: u32, b: u32) -> u64 {
            super::clmul_portable(a, b)
        }
    }

    /// The CRC32C polynomial without its `x^32` term, bit-reflected like the register: bit 31
    /// holds the coefficient of `x^0`, bit 0 that of `x^31`.
    const POLY: u32 = crc::CRC_32_ISCSI.poly.reverse_bits();

    /// `a·x mod P`.
    const fn mul_x(a: u32) -> u32 {
        if a & 1 == 1 { (a >> 1) ^ POLY } else { a >> 1 }
    }

    /// `a·b mod P`.
    const fn mul_mod(a: u32, b: u32) -> u32 {
        let mut product = 0;
        // `b·x^k`, added in for each term `x^k` of `a` (bit `31 - k`).
        let mut term = b;
        let mut k = 0;
        while k < 32 {
            if a & (1 << (31 - k)) != 0 {
                product ^= term;
            }
            term = mul_x(term);
            k += 1;
        }
        product
    }

    /// `x^e mod P`, by square and multiply.
    const fn x_pow(mut e: u64) -> u32 {
        let mut result = 1 << 31; // x^0
        let mut base = 1 << 30; // x^1
        while e > 0 {
            if e & 1 == 1 {
                result = mul_mod(result, base);
            }
            base = mul_mod(base, base);
            e >>= 1;
        }
        result
    }

    /// The constant that `shift` multiplies by to move a register past `len` bytes:
    /// `x^(8·len - 33) mod P`.
    pub(super) const fn shift_constant(len: usize) -> u32 {
        assert!(len >= 5, "the reduction already shifts by 33 bits");
        x_pow(8 * len as u64 - 33)
    }

    /// The register `state` moved past `len` bytes of zeros (`state·x^(8·len) mod P`), with
    /// `constant = shift_constant(len)`.
    #[cfg(test)]
    pub(super) fn shift(state: u32, constant: u32) -> u32 {
        crc_u64(0, clmul(state, constant))
    }

    /// The carry-less product of `a` and `b`, for targets without the instruction.
    #[cfg(any(
        test,
        not(any(
            all(target_arch = "x86_64", target_feature = "pclmulqdq"),
            all(target_arch = "aarch64", target_feature = "aes", not(miri)),
        ))
    ))]
    pub(super) const fn clmul_portable(a: u32, b: u32) -> u64 {
        let mut product = 0;
        let mut i = 0;
        while i < 32 {
            if (a >> i) & 1 == 1 {
                product ^= (b as u64) << i;
            }
            i += 1;
        }
        product
    }

    /// A block size of the three-chain loop, with the constants that shift the incoming register
    /// past the whole chunk, chain A past blocks B and C, and chain B past block C.
    struct Tier {
        /// Bytes per chain, a multiple of 8.
        block: usize,
        /// [`shift_constant`] of 3 blocks: the incoming register past the chunk.
        by_three: u32,
        /// [`shift_constant`] of 2 blocks: chain A past blocks B and C.
        by_two: u32,
        /// [`shift_constant`] of 1 block: chain B past block C.
        by_one: u32,
    }

    impl Tier {
        const fn new(block: usize) -> Self {
            assert!(block.is_multiple_of(8), "the chains fold 8 bytes at a time");
            Self {
                block,
                by_three: shift_constant(3 * block),
                by_two: shift_constant(2 * block),
                by_one: shift_constant(block),
            }
        }
    }

    /// Largest first: the big block keeps the combine rare on long inputs, the smaller ones take
    /// what is left, down to [`THREE_WAY_MIN`], before the single chain finishes the tail.
    const TIERS: [Tier; 4] = [
        Tier::new(4096),
        Tier::new(1024),
        Tier::new(256),
        Tier::new(THREE_WAY_MIN / 3),
    ];

    /// Continues the raw register `state` over `data`.
    #[inline]
    pub(super) fn update(mut state: u32, mut data: &[u8]) -> u32 {
        if data.len() >= THREE_WAY_MIN {
            for tier in &TIERS {
                while let Some((a, rest)) = data.split_at_checked(tier.block)
                    && let Some((b, rest)) = rest.split_at_checked(tier.block)
                    && let Some((c, rest)) = rest.split_at_checked(tier.block)
                {
                    state = three_chains(state, [a, b, c], tier);
                    data = rest;
                }
            }
        }
        single_chain(state, data)
    }

    /// `state` continued over `a ++ b ++ c`, three blocks of `tier.block` bytes.
    #[inline]
    fn three_chains(state: u32, [a, b, c]: [&[u8]; 3], tier: &Tier) -> u32 {
        let (a, _) = a.as_chunks::<8>();
        let (b, _) = b.as_chunks::<8>();
        let (c, _) = c.as_chunks::<8>();
        let (mut crc_a, mut crc_b, mut crc_c) = (0, 0, 0);
        for ((a, b), c) in a.iter().zip(b).zip(c) {
            crc_a = crc_u64(crc_a, u64::from_le_bytes(*a));
            crc_b = crc_u64(crc_b, u64::from_le_bytes(*b));
            crc_c = crc_u64(crc_c, u64::from_le_bytes(*c));
        }
        // The reduction is linear too: one `crc32` reduces the sum of the three products.
        let shifted =
            clmul(state, tier.by_three) ^ clmul(crc_a, tier.by_two) ^ clmul(crc_b, tier.by_one);
        crc_u64(0, shifted) ^ crc_c
    }

    /// `state` continued over `data` in one chain: 8 bytes at a time, then 4, 2 and 1.
    #[inline]
    pub(super) fn single_chain(mut state: u32, data: &[u8]) -> u32 {
        let (words, mut tail) = data.as_chunks::<8>();
        for word in words {
            state = crc_u64(state, u64::from_le_bytes(*word));
        }
        if let Some((word, rest)) = tail.split_first_chunk::<4>() {
            state = crc_u32(state, u32::from_le_bytes(*word));
            tail = rest;
        }
        if let Some((word, rest)) = tail.split_first_chunk::<2>() {
            state = crc_u16(state, u16::from_le_bytes(*word));
            tail = rest;
        }
        if let Some(byte) = tail.first() {
            state = crc_u8(state, *byte);
        }
        state
    }

    #[cfg(test)]
    mod tests {
        use super::super::update_reference;
        use super::*;

        #[test]
        fn shift_constants_equal_feeding_zeros() {
            let zeros = [0u8; 600];
            for len in [5, 8, 9, 64, 100, 128, 192, 256, 512, 599] {
                for state in [1, 0x8000_0000, 0xDEAD_BEEF, !0] {
                    assert_eq!(
                        shift(state, shift_constant(len)),
                        update_reference(state, &zeros[..len]),
                        "len {len}, state {state:#x}"
                    );
                }
            }
        }

        #[test]
        fn instruction_clmul_matches_the_portable_one() {
            let mut x: u32 = 0x1234_5678;
            for _ in 0..1000 {
                // xorshift32
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let y = x.rotate_left(11) ^ 0x9E37_79B9;
                assert_eq!(clmul(x, y), clmul_portable(x, y), "{x:#x} * {y:#x}");
            }
            assert_eq!(clmul_portable(!0, !0), 0x5555_5555_5555_5555);
            assert_eq!(clmul_portable(1 << 31, 1 << 31), 1 << 62);
        }

        #[test]
        fn single_chain_matches_the_reference_at_every_tail_length() {
            let data: [u8; 40] = core::array::from_fn(|i| (i * 37 + 11) as u8);
            for len in 0..=data.len() {
                assert_eq!(
                    single_chain(!0, &data[..len]),
                    update_reference(!0, &data[..len]),
                    "len {len}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// `len` deterministic pseudo-random bytes (xorshift64).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    /// Miri interprets every instruction: it checks a sample of what the native run checks in
    /// full (every `STRIDE`th length, split or start).
    const STRIDE: usize = if cfg!(miri) { 37 } else { 1 };

    /// The raw register after `Crc32c::update`, to compare with [`update_reference`].
    fn update_dispatched(state: u32, data: &[u8]) -> u32 {
        Crc32c { state }.update(data).state
    }

    #[test]
    fn check_value_matches_the_catalogue() {
        // CRC-32/ISCSI check value over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(!update_reference(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    // Not under `cfg(loom)`: the loom runs set RUSTFLAGS, which replaces the config's.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
    #[expect(
        clippy::assertions_on_constants,
        reason = "a failing test names the cause; a const assert would stop every test from building"
    )]
    fn x86_64_linux_builds_use_the_instruction() {
        assert!(
            HARDWARE,
            "the hardware path is not compiled in: .cargo/config.toml enables sse4.2, but \
             RUSTFLAGS in the environment replaces it"
        );
    }

    #[test]
    fn hardware_matches_reference_for_every_length_up_to_1024() {
        let data = noise(1024, 1);
        for len in (0..=data.len()).step_by(STRIDE) {
            let bytes = &data[..len];
            for state in [!0, 0, 0x1357_9BDF] {
                assert_eq!(
                    update_dispatched(state, bytes),
                    update_reference(state, bytes),
                    "len {len}, state {state:#x}"
                );
            }
        }
    }

    #[test]
    fn hardware_matches_reference_on_large_and_odd_sizes() {
        // Every tier, then a tail of 7: the 4-, 2- and 1-byte steps.
        let every_tier = 3 * 4096 * 6 + 3 * 1024 + 3 * 256 + 3 * 64 + 7;
        let data = noise(every_tier + 8, 2);
        let sizes = [
            1025,
            3 * 4096,
            3 * 4096 - 1,
            3 * 4096 + 1,
            4096,
            4097,
            65_535,
            65_536,
            65_537,
            every_tier,
        ];
        for len in sizes.into_iter().step_by(STRIDE.min(3)) {
            // Starts that put the 8-byte words at every alignment.
            for start in (0..8).step_by(STRIDE.min(3)) {
                let Some(bytes) = data.get(start..start + len) else {
                    continue;
                };
                assert_eq!(
                    update_dispatched(!0, bytes),
                    update_reference(!0, bytes),
                    "len {len}, start {start}"
                );
            }
        }
    }

    #[test]
    fn chained_updates_equal_one_update() {
        // Long enough for several tiers of the three-chain loop on either side of a split.
        let data = noise(3 * 1024 + 3 * 256 + 3 * 64 + 100, 3);
        let whole = crc32c(&data);
        assert_eq!(whole, !update_reference(!0, &data));
        for split in (0..=data.len()).step_by(STRIDE) {
            let (a, b) = data.split_at(split);
            assert_eq!(
                Crc32c::new().update(a).update(b).finish(),
                whole,
                "split {split}"
            );
        }
    }

    #[test]
    fn chained_reference_updates_equal_one_update() {
        let data = noise(300, 4);
        let whole = update_reference(!0, &data);
        for split in 0..=data.len() {
            let (a, b) = data.split_at(split);
            assert_eq!(
                update_reference(update_reference(!0, a), b),
                whole,
                "split {split}"
            );
        }
    }

    proptest! {
        #[test]
        // Proptest reads the working directory, which Miri's isolation forbids; and Miri is too
        // slow for 256 cases of 10 KB.
        #[cfg_attr(miri, ignore)]
        fn any_bytes_any_split_agree(
            data in proptest::collection::vec(any::<u8>(), 0..20_000),
            split in any::<prop::sample::Index>(),
        ) {
            let split = split.index(data.len() + 1);
            let (a, b) = data.split_at(split);
            let reference = update_reference(update_reference(!0, a), b);
            prop_assert_eq!(!crc32c(&data), reference);
            prop_assert_eq!(!Crc32c::new().update(a).update(b).finish(), reference);
            prop_assert_eq!(update_reference(!0, &data), reference);
        }
    }
}
