//! The demo's workload: per core, a deterministic sequence of puts and deletes over keys that
//! `WalStateStore` places on that core, so the parent can recompute what was acknowledged.

use lamina::WalStateStore;

/// Keys per core.
const KEYS: usize = 20_000;

/// One core's ops of one generation (one run of the child).
pub(crate) struct Workload {
    keys: Vec<Vec<u8>>,
    generation: u64,
    seq: u64,
    rng: u64,
    key: usize,
    value: Option<Vec<u8>>,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Workload {
    /// Core `core`'s ops in `generation`.
    pub(crate) fn new<const CORES: usize>(core: usize, generation: u64) -> Self {
        let keys = (0u64..)
            .map(|i| format!("account:{i:08}").into_bytes())
            .filter(|k| {
                WalStateStore::<lamina::file_backend::FileStorage, CORES>::core_of(k) == core
            })
            .take(KEYS)
            .collect();
        let mut w = Workload {
            keys,
            generation,
            seq: 0,
            rng: mix(generation ^ (core as u64).wrapping_mul(0x1000_0000_01b3)),
            key: 0,
            value: None,
        };
        w.draw();
        w
    }

    fn draw(&mut self) {
        self.rng = mix(self.rng);
        self.key = (self.rng % KEYS as u64) as usize;
        let next = self.seq + 1;
        self.value = (!self.rng.is_multiple_of(10)).then(|| {
            let mut v = format!("g{:016x}-s{next}-", self.generation).into_bytes();
            v.resize(64 + (self.rng >> 40) as usize % 192, b'.');
            v
        });
    }

    /// The next op: its seq (1-based), key and value (`None`: a delete).
    pub(crate) fn peek(&self) -> (u64, &[u8], Option<Vec<u8>>) {
        let key = self.keys.get(self.key).map_or(&[][..], Vec::as_slice);
        (self.seq + 1, key, self.value.clone())
    }

    /// Moves past the op [`Self::peek`] showed.
    pub(crate) fn advance(&mut self) {
        self.seq += 1;
        self.draw();
    }

    /// Ops done.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}
