//! The merged stream: every core's data records in (epoch, core, LSN) order, by a k-way merge
//! over one reader per core.
//!
//! A log is read by a push-style decoder, so each core's reader runs on its own scoped thread
//! and hands its records, copied, through a bounded channel of [`DEPTH`] records; the merge keeps
//! one head per core and hands on the smallest, then gives the payload's buffer back to the
//! reader to fill again. Memory is bounded by one read window and about 2 × [`DEPTH`] payload
//! buffers per core, whatever the size of the logs; each log is read once.

use super::manager::in_core;
use super::recovery::CoreRecord;
use crate::{Error, Lsn, SegmentStorage, WriteAheadLog};
use lamina_core::record::Kind;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{self, ScopedJoinHandle};

/// Records a core's reader may be ahead of the merge.
const DEPTH: usize = 16;

/// A record copied out of a reader's window.
struct Owned {
    epoch: u64,
    lsn: Lsn,
    payload: Vec<u8>,
}

type Reader<'scope> = ScopedJoinHandle<'scope, Result<(), Error>>;

/// Hands every durable data record of every log to `each`, sorted by (epoch, core, LSN), the
/// core being the log's index in `logs`.
///
/// # Errors
/// What reading a log returns ([`Error::Read`] for damage, [`Error::Poisoned`], ...), and
/// [`Error::Read`] when a core's epochs go backwards (its records cannot be merged in order).
/// The records handed over before the error are valid.
pub(crate) fn merged<S: SegmentStorage + Send>(
    logs: &mut [WriteAheadLog<S>],
    each: &mut dyn FnMut(CoreRecord<'_>),
) -> Result<(), Error> {
    thread::scope(|scope| {
        let mut receivers = Vec::with_capacity(logs.len());
        let mut recycle: Vec<SyncSender<Vec<u8>>> = Vec::with_capacity(logs.len());
        let mut readers: Vec<Option<Reader<'_>>> = Vec::with_capacity(logs.len());
        for log in logs.iter_mut() {
            let (tx, rx) = sync_channel::<Owned>(DEPTH);
            let (free_tx, free_rx) = sync_channel::<Vec<u8>>(DEPTH);
            receivers.push(rx);
            recycle.push(free_tx);
            readers.push(Some(scope.spawn(move || {
                let mut window = vec![0u8; log.read_window_len()];
                let upto = log.durable_lsn();
                let mut open = true;
                log.read_records(Lsn::FIRST, upto, &mut window, &mut |e| {
                    if open && e.kind == Kind::Data {
                        let mut payload = free_rx.try_recv().unwrap_or_default();
                        payload.clear();
                        payload.extend_from_slice(e.payload);
                        let owned = Owned {
                            epoch: e.epoch,
                            lsn: e.lsn,
                            payload,
                        };
                        // The merge stopped (an error elsewhere): nothing more to hand.
                        open = tx.send(owned).is_ok();
                    }
                })
            })));
        }
        let mut heads = Vec::with_capacity(receivers.len());
        for (core, rx) in receivers.iter().enumerate() {
            heads.push(next(core, rx, &mut readers)?);
        }
        loop {
            let mut best: Option<(usize, &Owned)> = None;
            for (core, head) in heads.iter().enumerate() {
                // The order is (epoch, core, LSN) and each core has one head: cores are visited
                // in order, so only a lower epoch displaces the best so far.
                if let Some(h) = head
                    && best.is_none_or(|(_, b)| h.epoch < b.epoch)
                {
                    best = Some((core, h));
                }
            }
            let Some((core, _)) = best else {
                return Ok(());
            };
            let (Some(rx), Some(slot)) = (receivers.get(core), heads.get_mut(core)) else {
                return Ok(());
            };
            let Some(record) = slot.take() else {
                return Ok(());
            };
            each(CoreRecord {
                core,
                epoch: record.epoch,
                lsn: record.lsn,
                payload: &record.payload,
            });
            let following = next(core, rx, &mut readers)?;
            if let Some(f) = &following
                && f.epoch < record.epoch
            {
                return Err(Error::Read {
                    from: f.lsn,
                    detail: format!(
                        "core {core}: the record at LSN {} is in epoch {}, after a record of \
                         epoch {}: epochs go backwards, the cores cannot be merged in order",
                        f.lsn, f.epoch, record.epoch
                    ),
                });
            }
            *slot = following;
            if let Some(free) = recycle.get(core) {
                // Back to the reader to fill again; a full or closed channel drops it instead.
                let _ = free.try_send(record.payload);
            }
        }
    })
}

/// The next record of `core`, or `None` when its reader finished; the reader's error when it
/// failed.
fn next(
    core: usize,
    rx: &Receiver<Owned>,
    readers: &mut [Option<Reader<'_>>],
) -> Result<Option<Owned>, Error> {
    if let Ok(record) = rx.recv() {
        return Ok(Some(record));
    }
    // The sender is gone: the reader returned. Join it to learn whether it failed.
    match readers.get_mut(core).and_then(Option::take) {
        Some(reader) => match reader.join() {
            Ok(result) => result.map(|()| None).map_err(|e| in_core(core, e)),
            Err(_) => Err(Error::Read {
                from: Lsn::FIRST,
                detail: format!("the reader of core {core} panicked"),
            }),
        },
        None => Ok(None),
    }
}
