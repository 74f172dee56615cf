//! [`List`]: a manifest's variable-length list without allocation.
//!
//! A list the caller builds borrows a slice of entries. A list decoded from a manifest borrows
//! the entries' encoded bytes and decodes one entry per step of its iterator: a manifest of any
//! size decodes into a fixed-size value, and nothing is copied. Decoding checked every entry
//! once already, so the iterator meets no error.

use core::fmt;
use serde::{Deserialize, Serialize, Serializer, ser::SerializeSeq};

/// A list of manifest entries: a borrowed slice, or the encoded entries of a decoded manifest.
///
/// Both forms iterate the same way ([`List::iter`]) and compare equal when their entries do.
#[derive(Clone, Copy)]
pub struct List<'a, T> {
    repr: Repr<'a, T>,
}

#[derive(Clone, Copy)]
enum Repr<'a, T> {
    Slice(&'a [T]),
    /// `len` postcard-encoded entries back to back, exactly filling `bytes`.
    Encoded {
        bytes: &'a [u8],
        len: usize,
    },
}

impl<'a, T> List<'a, T> {
    /// A list of the entries of `entries`.
    #[must_use]
    pub const fn new(entries: &'a [T]) -> Self {
        Self {
            repr: Repr::Slice(entries),
        }
    }

    /// The empty list.
    #[must_use]
    pub const fn empty() -> Self {
        Self::new(&[])
    }

    /// A list over `len` entries already encoded in `bytes`, which decoding checked.
    pub(super) const fn encoded(bytes: &'a [u8], len: usize) -> Self {
        Self {
            repr: Repr::Encoded { bytes, len },
        }
    }

    /// The number of entries.
    #[must_use]
    pub const fn len(&self) -> usize {
        match self.repr {
            Repr::Slice(s) => s.len(),
            Repr::Encoded { len, .. } => len,
        }
    }

    /// `true` when the list has no entries.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries as a slice, when the list was built from one (not for a decoded list).
    #[must_use]
    pub const fn as_slice(&self) -> Option<&'a [T]> {
        match self.repr {
            Repr::Slice(s) => Some(s),
            Repr::Encoded { .. } => None,
        }
    }
}

impl<'a, T: Copy + Deserialize<'a>> List<'a, T> {
    /// The entries, in order, by value (they are small and borrow the same buffers).
    #[must_use]
    pub fn iter(&self) -> Iter<'a, T> {
        Iter {
            repr: match self.repr {
                Repr::Slice(s) => IterRepr::Slice(s.iter()),
                Repr::Encoded { bytes, len } => IterRepr::Encoded { bytes, left: len },
            },
        }
    }
}

impl<T> Default for List<'_, T> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<'a, T> From<&'a [T]> for List<'a, T> {
    fn from(entries: &'a [T]) -> Self {
        Self::new(entries)
    }
}

impl<'a, T: Copy + Deserialize<'a>> IntoIterator for &List<'a, T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<'a, T: Copy + Deserialize<'a> + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: Copy + Deserialize<'a> + Eq> Eq for List<'a, T> {}

impl<'a, T: Copy + Deserialize<'a> + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A postcard sequence: the entry count as a varint, then the entries.
impl<'a, T: Copy + Deserialize<'a> + Serialize> Serialize for List<'a, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for entry in self.iter() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

/// The iterator of [`List::iter`].
#[derive(Clone)]
pub struct Iter<'a, T> {
    repr: IterRepr<'a, T>,
}

#[derive(Clone)]
enum IterRepr<'a, T> {
    Slice(core::slice::Iter<'a, T>),
    Encoded { bytes: &'a [u8], left: usize },
}

impl<'a, T: Copy + Deserialize<'a>> Iterator for Iter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            IterRepr::Slice(s) => s.next().copied(),
            IterRepr::Encoded { bytes, left } => {
                if *left == 0 {
                    return None;
                }
                // Decoding checked these bytes; an error here would mean they changed under a
                // shared borrow. Ending the list is the answer that cannot panic.
                let Ok((entry, rest)) = postcard::take_from_bytes::<T>(bytes) else {
                    *left = 0;
                    return None;
                };
                *bytes = rest;
                *left -= 1;
                Some(entry)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.repr {
            IterRepr::Slice(s) => s.len(),
            IterRepr::Encoded { left, .. } => *left,
        };
        (n, Some(n))
    }
}

impl<'a, T: Copy + Deserialize<'a>> ExactSizeIterator for Iter<'a, T> {}
