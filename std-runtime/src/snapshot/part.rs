//! The key-value snapshot part: the format is `lamina_core::part`'s (`core/FORMAT.md`,
//! "Key-value snapshot part"); this adds [`PartWriter`], which builds one in memory.

pub use lamina_core::part::{
    ALL_BUCKETS, EntryFault, HEADER_LEN, Header, Kind, PAD_BLOCK, PartError, bucket_of, padding,
    read,
};

use lamina_core::changelog::Entry;

/// Builds a part's bytes, entry by entry, in increasing key order.
#[derive(Debug)]
pub struct PartWriter {
    header: Header,
    bytes: Vec<u8>,
    /// Where the part starts in `bytes` (what was there before is kept).
    start: usize,
}

impl PartWriter {
    /// A part of `kind` for `core` whose state has `buckets` buckets; `bucket` is a base's
    /// bucket (a delta's is [`ALL_BUCKETS`] whatever is given).
    #[must_use]
    pub fn new(kind: Kind, core: u32, bucket: u32, buckets: u32) -> Self {
        Self::in_buffer(kind, core, bucket, buckets, Vec::with_capacity(4096))
    }

    /// As [`Self::new`], the part appended to `bytes` (whose memory is reused; the bytes it
    /// holds are kept, before the part).
    #[must_use]
    pub fn in_buffer(kind: Kind, core: u32, bucket: u32, buckets: u32, mut bytes: Vec<u8>) -> Self {
        let bucket = match kind {
            Kind::Base => bucket,
            Kind::Delta => ALL_BUCKETS,
        };
        let header = Header {
            kind,
            core,
            bucket,
            buckets,
            count: 0,
            padded: false,
        };
        let start = bytes.len();
        bytes.extend_from_slice(&header.emit());
        PartWriter {
            header,
            bytes,
            start,
        }
    }

    /// Reserves room for `additional` more bytes of entries.
    pub fn reserve(&mut self, additional: usize) {
        self.bytes.reserve(additional);
    }

    /// Appends a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.entry(&Entry::Put { key, value });
    }

    /// Appends a delete (deltas only: [`read`] refuses one in a base).
    pub fn delete(&mut self, key: &[u8]) {
        self.entry(&Entry::Delete { key });
    }

    fn entry(&mut self, entry: &Entry<'_>) {
        // A key or value too long for a changelog entry never reached the state: the queue
        // refuses it before it is applied.
        let len = entry
            .encoded_len()
            .and_then(|l| u32::try_from(l).ok())
            .unwrap_or(0);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        entry.emit_pieces(|piece| self.bytes.extend_from_slice(piece));
        self.header.count += 1;
    }

    /// Bytes of the part so far (header and entries).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Entries appended so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.header.count
    }

    /// The buffer: the bytes it held before, then the part's.
    #[must_use]
    pub fn finish(mut self) -> Vec<u8> {
        if let Some(head) = self.bytes.get_mut(self.start..self.start + HEADER_LEN) {
            head.copy_from_slice(&self.header.emit());
        }
        self.bytes
    }

    /// As [`Self::finish`], the part padded with zeros to a multiple of [`PAD_BLOCK`] bytes
    /// (its `padded` flag set): what a store writing with direct I/O writes whole.
    #[must_use]
    pub fn finish_padded(mut self) -> Vec<u8> {
        self.header.padded = true;
        let len = self.bytes.len() - self.start;
        self.bytes.resize(self.bytes.len() + padding(len), 0);
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A delta of `entries` (value `None`: a delete), as bytes, padded or not.
    fn delta(entries: &BTreeMap<Vec<u8>, Option<Vec<u8>>>, padded: bool) -> Vec<u8> {
        let mut w = PartWriter::new(Kind::Delta, 3, 0, 8);
        for (k, v) in entries {
            match v {
                Some(v) => w.put(k, v),
                None => w.delete(k),
            }
        }
        if padded {
            w.finish_padded()
        } else {
            w.finish()
        }
    }

    #[test]
    fn a_part_in_a_buffer_follows_the_bytes_already_there() {
        let mut alone = PartWriter::new(Kind::Base, 1, 2, 4);
        alone.put(b"k", b"v");
        let alone = alone.finish();
        let mut after = PartWriter::in_buffer(Kind::Base, 1, 2, 4, vec![9u8; 5]);
        after.put(b"k", b"v");
        let after = after.finish();
        assert_eq!(&after[..5], &[9u8; 5]);
        assert_eq!(&after[5..], &alone[..]);
    }

    /// Keys to values (`None`: a delete).
    type Entries = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

    fn read_all(bytes: &[u8]) -> Result<(Header, Entries), PartError> {
        let mut out = BTreeMap::new();
        let header = read(bytes, |e| match e {
            Entry::Put { key, value } => {
                out.insert(key.to_vec(), Some(value.to_vec()));
            }
            Entry::Delete { key } => {
                out.insert(key.to_vec(), None);
            }
            Entry::Barrier { .. } => {}
        })?;
        Ok((header, out))
    }

    fn arb_entries() -> impl Strategy<Value = BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
        proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 0..12),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn a_delta_round_trips(entries in arb_entries(), padded in any::<bool>()) {
            let bytes = delta(&entries, padded);
            let (header, back) = read_all(&bytes).unwrap();
            prop_assert_eq!(header.padded, padded);
            if padded {
                // The unpadded part's bytes (but the flags), then zeros to the next block.
                let plain = delta(&entries, false);
                prop_assert_eq!(bytes.len(), plain.len().next_multiple_of(PAD_BLOCK));
                prop_assert_eq!(&bytes[12..plain.len()], &plain[12..]);
                prop_assert!(bytes[plain.len()..].iter().all(|&b| b == 0));
            }
            prop_assert_eq!(header.kind, Kind::Delta);
            prop_assert_eq!(header.core, 3);
            prop_assert_eq!(header.count, entries.len() as u64);
            prop_assert_eq!(back, entries);
        }

        #[test]
        fn a_base_round_trips_and_holds_only_its_bucket(entries in arb_entries(), bucket in 0u32..4) {
            let mut w = PartWriter::new(Kind::Base, 0, bucket, 4);
            let mine: BTreeMap<_, _> = entries
                .iter()
                .filter(|(k, _)| bucket_of(k, 4) == bucket)
                .map(|(k, v)| (k.clone(), Some(v.clone().unwrap_or_default())))
                .collect();
            for (k, v) in &mine {
                w.put(k, v.as_deref().unwrap_or_default());
            }
            let (header, back) = read_all(&w.finish()).unwrap();
            prop_assert_eq!(header.bucket, bucket);
            prop_assert_eq!(back, mine);
        }

        /// A flipped bit is an error or decodes to another header or content (a key or value
        /// byte, the core field), never a panic and never the same part: the CRC32C the
        /// manifest keeps catches those, and recovery checks the header against the manifest.
        #[test]
        fn damage_is_an_error_or_other_content(entries in arb_entries(), padded in any::<bool>(), at in any::<usize>(), bit in 0u8..8) {
            let bytes = delta(&entries, padded);
            let mut damaged = bytes.clone();
            let at = at % damaged.len();
            damaged[at] ^= 1 << bit;
            let original = read_all(&bytes).unwrap();
            if let Ok(read) = read_all(&damaged) {
                prop_assert_ne!(read, original);
            }
        }

        #[test]
        fn any_prefix_of_a_part_is_refused(entries in arb_entries(), padded in any::<bool>(), cut in any::<usize>()) {
            prop_assume!(!entries.is_empty());
            let bytes = delta(&entries, padded);
            let cut = cut % bytes.len();
            prop_assert!(read_all(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn a_delete_in_a_base_and_keys_out_of_order_are_refused() {
        let mut w = PartWriter::new(Kind::Base, 0, 0, 1);
        w.delete(b"k");
        assert!(matches!(
            read_all(&w.finish()),
            Err(PartError::Entry {
                fault: EntryFault::DeleteInBase,
                ..
            })
        ));
        let mut w = PartWriter::new(Kind::Delta, 0, 0, 1);
        w.put(b"b", b"");
        w.put(b"a", b"");
        assert!(matches!(
            read_all(&w.finish()),
            Err(PartError::Entry {
                index: 1,
                fault: EntryFault::KeyOrder
            })
        ));
    }

    #[test]
    fn padding_must_be_zeros_to_the_next_block_and_only_where_flagged() {
        let mut w = PartWriter::new(Kind::Delta, 0, 0, 1);
        w.put(b"k", b"v");
        let padded = w.finish_padded();
        assert_eq!(padded.len(), PAD_BLOCK);
        assert!(read_all(&padded).is_ok());
        let entries = HEADER_LEN + 4 + 5 + 2;
        let due = PAD_BLOCK - entries;
        // A byte of the padding that is not zero.
        let mut dirty = padded.clone();
        dirty[PAD_BLOCK - 1] = 1;
        assert_eq!(
            read_all(&dirty),
            Err(PartError::BadPadding { left: due, due })
        );
        // A block of zeros more, or the padding cut short.
        let mut long = padded.clone();
        long.resize(2 * PAD_BLOCK, 0);
        assert!(matches!(read_all(&long), Err(PartError::BadPadding { .. })));
        assert!(matches!(
            read_all(&padded[..PAD_BLOCK - 1]),
            Err(PartError::BadPadding { .. })
        ));
        // The zeros without the flag are trailing bytes; the flag without them is short.
        let mut unflagged = padded.clone();
        unflagged[11] = 0;
        assert_eq!(
            read_all(&unflagged),
            Err(PartError::Trailing {
                count: 1,
                left: due
            })
        );
        assert!(matches!(
            read_all(&padded[..entries]),
            Err(PartError::BadPadding { left: 0, .. })
        ));
        // Any other flag is unknown.
        let mut other = padded;
        other[11] = 3;
        assert_eq!(
            read_all(&other),
            Err(PartError::BadKind { kind: 1, flags: 3 })
        );
    }

    #[test]
    fn a_part_ending_on_a_block_needs_no_padding() {
        // Header (32) + one entry of 4 (length) + 5 (op, key length) + key + value = 4096.
        let value = vec![7u8; PAD_BLOCK - HEADER_LEN - 4 - 5 - 1];
        let mut w = PartWriter::new(Kind::Delta, 0, 0, 1);
        w.put(b"k", &value);
        let mut plain = PartWriter::new(Kind::Delta, 0, 0, 1);
        plain.put(b"k", &value);
        let (padded, plain) = (w.finish_padded(), plain.finish());
        assert_eq!(padded.len(), PAD_BLOCK);
        assert_eq!(padded[HEADER_LEN..], plain[HEADER_LEN..]);
        assert!(read_all(&padded).is_ok_and(|(h, _)| h.padded));
    }

    #[test]
    fn the_worked_example_of_format_md_decodes() {
        // core/FORMAT.md, "Key-value snapshot part", worked example.
        let hex = "894c4b560d0a1a0a 0100 01 00 02000000 ffffffff 04000000 0200000000000000 \
                   0a000000 00020000006162 78797a 07000000 0102000000 6364";
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .collect::<String>()
            .as_bytes()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        let mut w = PartWriter::new(Kind::Delta, 2, 0, 4);
        w.put(b"ab", b"xyz");
        w.delete(b"cd");
        assert_eq!(w.finish(), bytes);
    }
}
