//! The I/O loop between the pipeline and the storage: `lamina_core::drive` plus the backend's
//! error text, kept for the `Poisoned` error (the pipeline itself only keeps the `Failure`).

use lamina_core::Lsn;
use lamina_core::commit::{Event, IoRequest, Pipeline};
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
        let submitted = drive::submit_all_observed(pipeline, storage, &mut |request, e| {
            let what = match request {
                IoRequest::Create { segment, .. } => format!("create of segment {segment}"),
                IoRequest::SyncNamespace { .. } => "namespace sync".to_string(),
                IoRequest::Write { segment, .. } => format!("write to segment {segment}"),
                IoRequest::Sync { segment, .. } => format!("sync of segment {segment}"),
            };
            note(&mut self.cause, || format!("submitting the {what}: {e:?}"));
        });
        let completed = drive::complete_observed(pipeline, storage, usize::MAX, &mut |token, e| {
            note(&mut self.cause, || {
                format!("operation {token} failed: {e:?}")
            });
        });
        let closed = &mut self.closed;
        let reported = drive::events(pipeline, &mut |event| {
            if let Event::Closed { last } = event {
                *closed = Some(last);
            }
        });
        submitted + completed + reported > 0
    }
}

/// Keeps the first cause only: later failures follow from it.
fn note(cause: &mut Option<String>, text: impl FnOnce() -> String) {
    if cause.is_none() {
        *cause = Some(text());
    }
}
