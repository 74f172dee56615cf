//! How a core's snapshot is laid out in parts, and how a manifest names those parts.
//!
//! Each core's state is split into buckets by key hash ([`super::part::bucket_of`]). A bucket has a
//! *base* part (every key of the bucket, written by some checkpoint), and the core has a chain
//! of *delta* parts (the keys changed between two checkpoints, of any bucket). A bucket's state
//! is its base plus, in checkpoint order, the entries of the deltas written after the base that
//! fall in the bucket. A delta is kept (referenced) as long as it holds keys of a bucket whose
//! base is older than it.
//!
//! In a manifest, a base is the part of operator [`BASE_OPERATOR`], partition
//! `core << 16 | bucket`; a delta is the part of operator [`DELTA_OPERATOR`], partition
//! `core << 16 | position` (its position in the core's chain, oldest first). Each part's
//! `written_by` is the checkpoint that wrote it.

use lamina_core::manifest::Part;

use crate::Error;

/// The operator name of base parts.
pub const BASE_OPERATOR: &str = "kv-base";
/// The operator name of delta parts.
pub const DELTA_OPERATOR: &str = "kv-delta";
/// The most buckets a core's state may be split into (a bucket number takes 16 bits of a
/// partition).
pub const MAX_BUCKETS: u32 = 1 << 16;

/// A stored part, as a manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartRef {
    /// Its key in the checkpoint store.
    pub key: String,
    /// Its length in bytes.
    pub size: u64,
    /// CRC32C of its bytes.
    pub crc: u32,
    /// The checkpoint that wrote it.
    pub written_by: u64,
}

/// A delta part and how many bytes of entries it holds per bucket (0: none of that bucket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaRef {
    /// The part.
    pub part: PartRef,
    /// Entry bytes per bucket.
    pub bucket_bytes: Vec<u64>,
}

/// One core's parts in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreLayout {
    /// Per bucket, its base (`None` before the bucket's first base was written).
    pub bases: Vec<Option<PartRef>>,
    /// The delta chain, oldest first.
    pub deltas: Vec<DeltaRef>,
}

impl CoreLayout {
    /// A layout of `buckets` buckets and no parts.
    #[must_use]
    pub fn empty(buckets: u32) -> Self {
        CoreLayout {
            bases: vec![None; buckets as usize],
            deltas: Vec::new(),
        }
    }

    /// The checkpoint that wrote `bucket`'s base (0 when it has none).
    #[must_use]
    pub fn base_written_by(&self, bucket: usize) -> u64 {
        self.bases
            .get(bucket)
            .and_then(Option::as_ref)
            .map_or(0, |p| p.written_by)
    }

    /// Entry bytes of `bucket` in the deltas written after its base.
    #[must_use]
    pub fn delta_bytes(&self, bucket: usize) -> u64 {
        let since = self.base_written_by(bucket);
        self.deltas
            .iter()
            .filter(|d| d.part.written_by > since)
            .map(|d| d.bucket_bytes.get(bucket).copied().unwrap_or(0))
            .sum()
    }

    /// The checkpoints whose deltas this layout holds (a checkpoint may write several deltas,
    /// each with keys of its own).
    #[must_use]
    pub fn delta_checkpoints(&self) -> usize {
        let mut ids: Vec<u64> = self.deltas.iter().map(|d| d.part.written_by).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Drops the deltas no bucket needs any more: those whose every entry is in a bucket with a
    /// newer base.
    pub fn prune(&mut self) {
        let bases: Vec<u64> = (0..self.bases.len())
            .map(|b| self.base_written_by(b))
            .collect();
        self.deltas.retain(|d| {
            d.bucket_bytes
                .iter()
                .zip(&bases)
                .any(|(&bytes, &base)| bytes > 0 && base < d.part.written_by)
        });
    }

    /// Every part of the layout.
    pub fn parts(&self) -> impl Iterator<Item = &PartRef> {
        self.bases
            .iter()
            .flatten()
            .chain(self.deltas.iter().map(|d| &d.part))
    }
}

/// One entry of a manifest's part list, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedPart {
    /// [`BASE_OPERATOR`] or [`DELTA_OPERATOR`].
    pub operator: &'static str,
    /// `core << 16 | bucket` or `core << 16 | position`.
    pub partition: u32,
    /// The part.
    pub part: PartRef,
}

impl OwnedPart {
    /// The manifest entry.
    #[must_use]
    pub fn as_part(&self) -> Part<'_> {
        Part {
            operator: self.operator,
            partition: self.partition,
            key: &self.part.key,
            size: self.part.size,
            crc: self.part.crc,
            written_by: self.part.written_by,
        }
    }
}

/// The part list of a manifest over `layouts` (core `i` is `layouts[i]`), in the manifest's
/// order: bases, then deltas, each by partition.
///
/// # Errors
/// [`Error::Refused`] when a core, bucket or chain position does not fit its 16 bits.
pub fn manifest_parts(layouts: &[CoreLayout]) -> Result<Vec<OwnedPart>, Error> {
    let partition = |core: usize, index: usize| -> Result<u32, Error> {
        if core >= 1 << 16 || index >= 1 << 16 {
            return Err(Error::Refused(format!(
                "core {core}, bucket or delta {index}: a manifest partition holds 16 bits of each"
            )));
        }
        Ok(((core as u32) << 16) | index as u32)
    };
    let mut parts = Vec::new();
    for (core, layout) in layouts.iter().enumerate() {
        for (bucket, base) in layout.bases.iter().enumerate() {
            if let Some(base) = base {
                parts.push(OwnedPart {
                    operator: BASE_OPERATOR,
                    partition: partition(core, bucket)?,
                    part: base.clone(),
                });
            }
        }
    }
    for (core, layout) in layouts.iter().enumerate() {
        for (position, delta) in layout.deltas.iter().enumerate() {
            parts.push(OwnedPart {
                operator: DELTA_OPERATOR,
                partition: partition(core, position)?,
                part: delta.part.clone(),
            });
        }
    }
    Ok(parts)
}

/// Where a manifest part belongs: `(core, base bucket)` or `(core, delta position)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A base of `bucket` in `core`.
    Base {
        /// The core.
        core: usize,
        /// The bucket.
        bucket: usize,
    },
    /// A delta at `position` in `core`'s chain.
    Delta {
        /// The core.
        core: usize,
        /// Its position.
        position: usize,
    },
}

/// Where `part` of a manifest belongs, or `None` for an operator this layout does not use.
#[must_use]
pub fn placement(part: &Part<'_>) -> Option<Placement> {
    let core = (part.partition >> 16) as usize;
    let index = (part.partition & 0xffff) as usize;
    match part.operator {
        BASE_OPERATOR => Some(Placement::Base {
            core,
            bucket: index,
        }),
        DELTA_OPERATOR => Some(Placement::Delta {
            core,
            position: index,
        }),
        _ => None,
    }
}
