//! The I/O loop between the pipeline and the storage: `lamina_core::drive` plus the backend's
//! error text, kept for the `Poisoned` error (the pipeline itself only keeps the `Failure`).

use lamina_core::Lsn;
use lamina_core::commit::{Event, IoRequest, Pipeline};
use lamina_core::io::{Error as _, SegmentOp, SegmentStorage};

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
        let mut progressed = false;
        while let Some(request) = pipeline.poll_io() {
            progressed = true;
            let token = request.token();
            let (what, submitted) = match request {
                IoRequest::Create {
                    segment, header, ..
                } => (
                    ("create", segment),
                    storage.submit(
                        token,
                        SegmentOp::Create {
                            segment,
                            header: &header,
                        },
                    ),
                ),
                IoRequest::SyncNamespace { .. } => (
                    ("sync the namespace after", pipeline.segment().sequence),
                    storage.submit(token, SegmentOp::SyncNamespace),
                ),
                IoRequest::Write {
                    segment,
                    offset,
                    range,
                    sync,
                    ..
                } => (
                    ("write", segment),
                    storage.submit(
                        token,
                        SegmentOp::Write {
                            segment,
                            offset,
                            data: pipeline.bytes(range),
                            sync,
                        },
                    ),
                ),
                IoRequest::Sync { segment, .. } => (
                    ("sync", segment),
                    storage.submit(token, SegmentOp::Sync { segment }),
                ),
            };
            if let Err(e) = submitted {
                self.note(|| format!("submitting {} of segment {}: {e:?}", what.0, what.1));
                // The request never started: it failed. Its token was just issued, so it is known.
                let _ = pipeline.handle_completion(token, Err(e.failure()));
            }
        }
        while let Some((token, result)) = storage.poll_completion() {
            progressed = true;
            let result = result.map_err(|e| {
                self.note(|| format!("operation {token} failed: {e:?}"));
                e.failure()
            });
            // A token the backend invents is the backend's bug; the pipeline ignores it.
            let _ = pipeline.handle_completion(token, result);
        }
        while let Some(event) = pipeline.poll_event() {
            progressed = true;
            if let Event::Closed { last } = event {
                self.closed = Some(last);
            }
        }
        progressed
    }

    fn note(&mut self, text: impl FnOnce() -> String) {
        if self.cause.is_none() {
            self.cause = Some(text());
        }
    }
}
