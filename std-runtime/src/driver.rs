//! The I/O loop between the pipeline and the storage: `lamina_core::drive` plus the backend's
//! error text, kept for the `Poisoned` error (the pipeline itself only keeps the `Failure`).

use crate::Error;
use lamina_core::Lsn;
use lamina_core::commit::{AppendError, Event, IoRequest, Pipeline, Poison};
use lamina_core::drive;
use lamina_core::io::SegmentStorage;

/// What the loop remembers between rounds.
#[derive(Debug, Default)]
pub(crate) struct Driver {
    /// The first backend error, as text.
    pub(crate) cause: Option<String>,
    /// The final seal's LSN, once a close finished.
    pub(crate) closed: Option<Lsn>,
}

impl Driver {
    /// One round: submits every request, feeds back every completion, reads the events. Returns
    /// whether anything happened.
    pub(crate) fn round<S: SegmentStorage, const SLOTS: usize>(
        &mut self,
        pipeline: &mut Pipeline<'_, SLOTS>,
        storage: &mut S,
    ) -> bool {
        let submitted = self.submit(pipeline, storage);
        let completed = self.complete(pipeline, storage);
        let reported = self.events(pipeline);
        submitted + completed + reported > 0
    }

    /// Submits every request the pipeline asks for, noting the first refusal; returns how many.
    pub(crate) fn submit<S: SegmentStorage, const SLOTS: usize>(
        &mut self,
        pipeline: &mut Pipeline<'_, SLOTS>,
        storage: &mut S,
    ) -> usize {
        drive::submit_all_observed(pipeline, storage, &mut |request, e| {
            let what = match request {
                IoRequest::Create { segment, .. } => format!("create of segment {segment}"),
                IoRequest::SyncNamespace { .. } => "namespace sync".to_string(),
                IoRequest::Write { segment, .. } => format!("write to segment {segment}"),
                IoRequest::Sync { segment, .. } => format!("sync of segment {segment}"),
            };
            note(&mut self.cause, || format!("submitting the {what}: {e:?}"));
        })
    }

    /// Feeds every completion the storage reports back, noting the first failure; returns how
    /// many.
    pub(crate) fn complete<S: SegmentStorage, const SLOTS: usize>(
        &mut self,
        pipeline: &mut Pipeline<'_, SLOTS>,
        storage: &mut S,
    ) -> usize {
        drive::complete_observed(pipeline, storage, usize::MAX, &mut |token, e| {
            note(&mut self.cause, || {
                format!("operation {token} failed: {e:?}")
            });
        })
    }

    /// Reads the pipeline's events, keeping the close's LSN; returns how many.
    pub(crate) fn events<const SLOTS: usize>(
        &mut self,
        pipeline: &mut Pipeline<'_, SLOTS>,
    ) -> usize {
        let closed = &mut self.closed;
        drive::events(pipeline, &mut |event| {
            if let Event::Closed { last } = event {
                *closed = Some(last);
            }
        })
    }

    /// The error every call answers once the pipeline is poisoned.
    pub(crate) fn poisoned(&self, poison: Poison) -> Error {
        Error::Poisoned {
            poison,
            cause: self.cause.clone(),
        }
    }

    /// The error for an append the pipeline refused.
    pub(crate) fn append_error(&self, e: AppendError, max_payload: u32) -> Error {
        match e {
            AppendError::Poisoned(poison) => self.poisoned(poison),
            AppendError::TooLarge { len } => Error::TooLarge {
                len,
                max: max_payload,
            },
            AppendError::LsnExhausted => Error::LsnExhausted,
            // `Full` is retried by the caller; `Closed` and `SealKind` cannot happen on an open
            // log's data records.
            other => Error::Refused(other.to_string()),
        }
    }
}

/// The error for a backend that could not wait for a completion (its completion mechanism
/// failed): the operations in flight are neither done nor failed as far as the log can tell.
pub(crate) fn wait_error(e: &impl std::fmt::Debug) -> Error {
    Error::Storage {
        op: "waiting for the storage to complete an operation".into(),
        detail: format!("{e:?}"),
    }
}

/// Keeps the first cause only: later failures follow from it.
fn note(cause: &mut Option<String>, text: impl FnOnce() -> String) {
    if cause.is_none() {
        *cause = Some(text());
    }
}
