//! Direct I/O (`O_DIRECT`): writes go out as whole aligned blocks. Each write is composed as
//! [the earlier bytes of its first block][its data][zeros to the end of its last block]; the
//! backend keeps the last, partly written block of each segment for the next write to start
//! from.

use crate::error::{Op, UringError};
use rustix::fs::{AtFlags, StatxFlags, statx};
use std::path::Path;

/// The block size when the file system does not say (`STATX_DIOALIGN` needs Linux 6.1).
pub(crate) const DEFAULT_BLOCK: usize = 4096;

/// The offset and memory alignment direct I/O needs on the file system of `file`: from `statx`
/// with `STATX_DIOALIGN`, else [`DEFAULT_BLOCK`]. Both at least 512 and powers of two.
pub(crate) fn alignment(file: &Path) -> Result<(usize, usize), UringError> {
    let st = statx(
        rustix::fs::CWD,
        file,
        AtFlags::empty(),
        StatxFlags::DIOALIGN,
    )
    .map_err(|e| UringError::io(Op::Statx, file, None, e.into()))?;
    if StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::DIOALIGN) {
        if st.stx_dio_offset_align == 0 {
            // The file system answered, and its answer is "no direct I/O".
            return Err(UringError::DirectUnsupported {
                path: file.to_path_buf(),
                source: std::io::Error::from_raw_os_error(rustix::io::Errno::INVAL.raw_os_error()),
            });
        }
        let fit = |a: u32| (a as usize).max(512).next_power_of_two();
        return Ok((fit(st.stx_dio_offset_align), fit(st.stx_dio_mem_align)));
    }
    Ok((DEFAULT_BLOCK, DEFAULT_BLOCK))
}

/// The last block a segment's writes reached, as it will be on disk: its index and all its
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(crate) index: u64,
    pub(crate) bytes: Box<[u8]>,
}

/// Where a composed write goes: from `start` (a block boundary), `len` bytes (whole blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) len: usize,
}

impl Span {
    /// The whole blocks that hold `data_len` bytes at `offset`.
    pub(crate) fn of(block: usize, offset: u64, data_len: usize) -> Option<Span> {
        let b = block as u64;
        let start = offset / b * b;
        let end = offset
            .checked_add(data_len as u64)?
            .checked_next_multiple_of(b)?;
        Some(Span {
            start,
            len: usize::try_from(end - start).ok()?,
        })
    }

    /// Whether the two spans share a byte.
    pub(crate) fn overlaps(&self, other: &Span) -> bool {
        let end = |s: &Span| s.start.saturating_add(s.len as u64);
        self.start < end(other) && other.start < end(self)
    }
}

/// Composes the write of `data` at `offset` into `out` (at least [`Span::of`]'s length):
/// `first` is the current content of the write's first block (needed only when `offset` is not
/// on a block boundary). Returns the span, and the index of the block the write ends inside
/// (the last of the span: the segment's tail after it), `None` when it ends on a boundary.
pub(crate) fn compose(
    block: usize,
    offset: u64,
    data: &[u8],
    first: Option<&[u8]>,
    out: &mut [u8],
) -> Option<(Span, Option<u64>)> {
    let span = Span::of(block, offset, data.len())?;
    let out = out.get_mut(..span.len)?;
    let lead = usize::try_from(offset - span.start).ok()?;
    let (head, rest) = out.split_at_mut(lead);
    if lead > 0 {
        head.copy_from_slice(first?.get(..lead)?);
    }
    let (body, pad) = rest.split_at_mut(data.len());
    body.copy_from_slice(data);
    pad.fill(0);
    let end = offset + data.len() as u64;
    let tail = (!end.is_multiple_of(block as u64)).then_some(end / block as u64);
    Some((span, tail))
}

impl Tail {
    /// Keeps `last` (a span's last block, `index`) as the tail `kept` of a segment, in the
    /// buffer it already has when it has one (so a write allocates nothing).
    pub(crate) fn keep(kept: Option<&mut Tail>, index: u64, last: &[u8]) -> Option<Tail> {
        match kept {
            Some(t) if t.bytes.len() == last.len() => {
                t.index = index;
                t.bytes.copy_from_slice(last);
                None
            }
            _ => Some(Tail {
                index,
                bytes: last.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_inside_one_block_keeps_its_earlier_bytes_and_pads_with_zeros() {
        let first = [7u8; 16];
        let mut out = [0xffu8; 32];
        let (span, tail) = compose(16, 20, &[1, 2, 3], Some(&first), &mut out).unwrap();
        assert_eq!(span, Span { start: 16, len: 16 });
        let mut want = [7u8; 16];
        want[4..7].copy_from_slice(&[1, 2, 3]);
        want[7..].fill(0);
        assert_eq!(&out[..16], &want);
        assert_eq!(tail, Some(1));
    }

    #[test]
    fn a_kept_tail_reuses_its_buffer() {
        let mut tail = Tail {
            index: 1,
            bytes: vec![1u8; 8].into(),
        };
        let at = tail.bytes.as_ptr();
        assert!(Tail::keep(Some(&mut tail), 3, &[2; 8]).is_none());
        assert_eq!((tail.index, &*tail.bytes), (3, &[2u8; 8][..]));
        assert_eq!(tail.bytes.as_ptr(), at);
        let new = Tail::keep(None, 4, &[5; 8]).unwrap();
        assert_eq!((new.index, &*new.bytes), (4, &[5u8; 8][..]));
    }

    #[test]
    fn a_write_across_blocks_ending_on_a_boundary_leaves_no_tail() {
        let first = [9u8; 8];
        let mut out = [0xffu8; 24];
        let data = [5u8; 20];
        let (span, tail) = compose(8, 4, &data, Some(&first), &mut out).unwrap();
        assert_eq!(span, Span { start: 0, len: 24 });
        assert_eq!(&out[..4], &[9; 4]);
        assert_eq!(&out[4..24], &data);
        assert_eq!(tail, None);
    }

    #[test]
    fn an_aligned_write_needs_no_earlier_bytes() {
        let mut out = [0xffu8; 16];
        let (span, tail) = compose(8, 8, &[1; 9], None, &mut out).unwrap();
        assert_eq!(span, Span { start: 8, len: 16 });
        assert_eq!(&out[..9], &[1; 9]);
        assert_eq!(&out[9..], &[0; 7]);
        assert_eq!(tail, Some(2));
    }

    #[test]
    fn an_unaligned_write_without_its_block_or_room_is_refused() {
        let mut out = [0u8; 16];
        assert_eq!(compose(8, 4, &[1; 2], None, &mut out), None);
        assert_eq!(compose(8, 4, &[1; 20], Some(&[0; 8]), &mut out), None);
    }

    #[test]
    fn spans_overlap_only_when_they_share_a_block() {
        let a = Span::of(4096, 100, 200).unwrap();
        let b = Span::of(4096, 300, 10).unwrap();
        let c = Span::of(4096, 4096, 10).unwrap();
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
        // Buffered I/O is direct I/O with one-byte blocks: adjacent writes never overlap.
        let d = Span::of(1, 100, 200).unwrap();
        let e = Span::of(1, 300, 10).unwrap();
        assert!(!d.overlaps(&e));
        assert!(d.overlaps(&Span::of(1, 299, 1).unwrap()));
    }

    #[test]
    fn the_file_system_here_reports_a_usable_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("probe");
        std::fs::write(&file, b"x").unwrap();
        let (offset, memory) = alignment(&file).unwrap();
        assert!(offset.is_power_of_two() && offset >= 512, "{offset}");
        assert!(memory.is_power_of_two() && memory >= 512, "{memory}");
    }
}
