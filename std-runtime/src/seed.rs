//! Fresh randomness without a dependency: `RandomState` (seeded by the OS once per process, then
//! varied per instance) hashing the time, the process id and a counter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A random non-zero `u64`, different on every call.
pub(crate) fn random_u64() -> u64 {
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.write_u64(count);
    h.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::random_u64;

    #[test]
    fn draws_differ_and_are_never_zero() {
        let a = random_u64();
        let b = random_u64();
        assert_ne!(a, b);
        assert_ne!(a, 0);
        assert_ne!(b, 0);
    }
}
