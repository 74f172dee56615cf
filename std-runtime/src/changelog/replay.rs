//! [`replay_core`]: a core's state rebuilt from its WAL alone.

use std::collections::BTreeMap;

use lamina_core::changelog::Entry;

use crate::{Error, Lsn, PerCoreWalManager, SegmentStorage};

/// What [`replay_core`] applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplayReport {
    /// Data records read (each one entry).
    pub records: u64,
    /// Of which puts.
    pub puts: u64,
    /// Of which deletes.
    pub deletes: u64,
    /// The LSN of the last record applied.
    pub last_lsn: Option<Lsn>,
}

/// Applies `core`'s durable changelog records from LSN `from` on to `state`, in LSN order: a put
/// inserts, a delete removes. Epoch markers (the barriers) are not data records and are passed
/// over; [`PerCoreWalManager::read_core`] gives each record's epoch to who needs it.
///
/// A payload is untrusted bytes: one that is not a put or a delete stops the replay with an
/// error naming its LSN, never a panic; the records before it have been applied.
///
/// # Errors
/// [`Error::Changelog`] for a record that is not a changelog put or delete; what
/// [`PerCoreWalManager::read_core`] returns.
pub fn replay_core<S: SegmentStorage>(
    manager: &mut PerCoreWalManager<S>,
    core: usize,
    from: Lsn,
    state: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<ReplayReport, Error> {
    let mut report = ReplayReport::default();
    let mut failed = None;
    manager.read_core(core, from, |record| {
        if failed.is_some() {
            return;
        }
        let bad = |detail: String| Error::Changelog {
            core,
            lsn: Some(record.lsn),
            detail,
        };
        match Entry::parse(record.payload) {
            Ok(Entry::Put { key, value }) => {
                state.insert(key.to_vec(), value.to_vec());
                report.puts += 1;
            }
            Ok(Entry::Delete { key }) => {
                state.remove(key);
                report.deletes += 1;
            }
            Ok(Entry::Barrier { epoch }) => {
                failed = Some(bad(format!(
                    "a barrier (epoch {epoch}) in a data record: barriers are epoch markers"
                )));
                return;
            }
            Err(e) => {
                failed = Some(bad(e.to_string()));
                return;
            }
        }
        report.records += 1;
        report.last_lsn = Some(record.lsn);
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
