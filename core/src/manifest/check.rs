//! The content rules of a manifest, and the body parser that applies them while it reads.
//!
//! Lists must be in strictly increasing order of their identifying field (core; operator then
//! partition; connector name): then a repeat is always next to its twin, and both rules cost one
//! comparison per entry, with no memory, whatever the list's length.

use super::{DecodeError, Invalid, List, Manifest, Part, SourceOffset, WalPosition, validate_key};
use core::cmp::Ordering;
use serde::Deserialize;

/// The rules, fed one entry at a time, remembering the previous entry of each list.
pub(super) struct Rules<'a> {
    id: u64,
    last_core: Option<u32>,
    last_part: Option<(&'a str, u32)>,
    last_connector: Option<&'a str>,
}

impl<'a> Rules<'a> {
    /// Checks the parent against the id and starts the list checks.
    pub(super) fn new(id: u64, parent: Option<u64>) -> Result<Self, Invalid> {
        if let Some(parent) = parent
            && parent >= id
        {
            return Err(Invalid::ParentNotBefore { id, parent });
        }
        Ok(Rules {
            id,
            last_core: None,
            last_part: None,
            last_connector: None,
        })
    }

    pub(super) fn wal(&mut self, index: usize, w: &WalPosition) -> Result<(), Invalid> {
        order(self.last_core.map(|c| c.cmp(&w.core))).map_err(|same| {
            if same {
                Invalid::DuplicateCore {
                    index,
                    core: w.core,
                }
            } else {
                Invalid::CoresOutOfOrder { index }
            }
        })?;
        self.last_core = Some(w.core);
        Ok(())
    }

    pub(super) fn part(&mut self, index: usize, p: &Part<'a>) -> Result<(), Invalid> {
        validate_key(p.key).map_err(|error| Invalid::BadKey { index, error })?;
        if p.written_by > self.id {
            return Err(Invalid::PartFromLaterCheckpoint {
                index,
                written_by: p.written_by,
                id: self.id,
            });
        }
        let this = (p.operator, p.partition);
        order(self.last_part.map(|last| last.cmp(&this))).map_err(|same| {
            if same {
                Invalid::DuplicatePart { index }
            } else {
                Invalid::PartsOutOfOrder { index }
            }
        })?;
        self.last_part = Some(this);
        Ok(())
    }

    pub(super) fn offset(&mut self, index: usize, o: &SourceOffset<'a>) -> Result<(), Invalid> {
        order(self.last_connector.map(|last| last.cmp(o.connector))).map_err(|same| {
            if same {
                Invalid::DuplicateConnector { index }
            } else {
                Invalid::ConnectorsOutOfOrder { index }
            }
        })?;
        self.last_connector = Some(o.connector);
        Ok(())
    }
}

/// `Ok` when the previous entry is below this one (or there is none); `Err(true)` when equal,
/// `Err(false)` when above.
fn order(previous_vs_this: Option<Ordering>) -> Result<(), bool> {
    match previous_vs_this {
        None | Some(Ordering::Less) => Ok(()),
        Some(Ordering::Equal) => Err(true),
        Some(Ordering::Greater) => Err(false),
    }
}

/// Reads postcard values from a body, remembering where it is for error reports.
struct Reader<'a> {
    body: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn at(&self) -> usize {
        self.body.len() - self.rest.len()
    }

    fn take<T: Deserialize<'a>>(&mut self) -> Result<T, DecodeError> {
        match postcard::take_from_bytes::<T>(self.rest) {
            Ok((value, rest)) => {
                self.rest = rest;
                Ok(value)
            }
            Err(error) => Err(DecodeError::Malformed {
                at: self.at(),
                error,
            }),
        }
    }

    /// A postcard sequence: a varint count, then that many entries, each passed to `check`.
    /// Every entry takes at least one byte, so the loop ends within the body whatever the count.
    fn list<T: Copy + Deserialize<'a>>(
        &mut self,
        mut check: impl FnMut(usize, &T) -> Result<(), Invalid>,
    ) -> Result<List<'a, T>, DecodeError> {
        // Postcard writes a sequence's length as a varint `usize`; a `u32` varint reads the same
        // bytes, and no body within MAX_BODY_LEN holds more entries.
        let len = self.take::<u32>()? as usize;
        let start = self.rest;
        for index in 0..len {
            let entry = self.take::<T>()?;
            check(index, &entry)?;
        }
        let used = start.len() - self.rest.len();
        Ok(List::encoded(start.get(..used).unwrap_or(&[]), len))
    }
}

/// Parses a body whose checksum matched into a manifest, applying every content rule.
pub(super) fn body(body: &[u8]) -> Result<Manifest<'_>, DecodeError> {
    let mut r = Reader { body, rest: body };
    let id = r.take::<u64>()?;
    let epoch = r.take::<u64>()?;
    let parent = r.take::<Option<u64>>()?;
    let timestamp = r.take::<u64>()?;
    let watermark = r.take::<i64>()?;
    let mut rules = Rules::new(id, parent)?;
    let wal = r.list(|i, w| rules.wal(i, w))?;
    let parts = r.list(|i, p| rules.part(i, p))?;
    let offsets = r.list(|i, o| rules.offset(i, o))?;
    if !r.rest.is_empty() {
        return Err(DecodeError::TrailingBody {
            unused: r.rest.len(),
        });
    }
    Ok(Manifest {
        id,
        epoch,
        parent,
        timestamp,
        watermark,
        wal,
        parts,
        offsets,
    })
}
