//! A blocking driver: the loop that connects a [`Pipeline`] to a [`SegmentStorage`].
//!
//! It submits every request the pipeline asks for, feeds every completion the backend reports
//! back, and hands events to the caller: the quinn `ConnectionDriver` loop without an async
//! runtime. A submit that fails is reported to the pipeline as that request's failure.

use crate::commit::{Event, IoRequest, Pipeline};
use crate::io::{Error as _, SegmentOp, SegmentStorage};

/// Submits every request the pipeline asks for; returns how many.
pub fn submit_all<S: SegmentStorage, const SLOTS: usize>(
    pipeline: &mut Pipeline<'_, SLOTS>,
    storage: &mut S,
) -> usize {
    submit_all_observed(pipeline, storage, &mut |_, _| {})
}

/// [`submit_all`], telling `on_error` about each request the backend refused to start (the
/// pipeline only keeps the [`crate::io::Failure`] kind; a runtime may want the error itself).
pub fn submit_all_observed<S: SegmentStorage, const SLOTS: usize>(
    pipeline: &mut Pipeline<'_, SLOTS>,
    storage: &mut S,
    on_error: &mut dyn FnMut(&IoRequest, &S::Error),
) -> usize {
    let mut n = 0;
    while let Some(request) = pipeline.poll_io() {
        n += 1;
        let token = request.token();
        let submitted = match &request {
            IoRequest::Create {
                segment, header, ..
            } => storage.submit(
                token,
                SegmentOp::Create {
                    segment: *segment,
                    header,
                },
            ),
            IoRequest::SyncNamespace { .. } => storage.submit(token, SegmentOp::SyncNamespace),
            IoRequest::Write {
                segment,
                offset,
                range,
                sync,
                ..
            } => storage.submit(
                token,
                SegmentOp::Write {
                    segment: *segment,
                    offset: *offset,
                    data: pipeline.bytes(range.clone()),
                    sync: *sync,
                },
            ),
            IoRequest::Sync { segment, .. } => {
                storage.submit(token, SegmentOp::Sync { segment: *segment })
            }
        };
        if let Err(e) = submitted {
            on_error(&request, &e);
            // The request never started: it failed. The token was just issued, so it is known.
            let _ = pipeline.handle_completion(token, Err(e.failure()));
        }
    }
    n
}

/// Feeds up to `max` completions from the backend to the pipeline; returns how many.
pub fn complete<S: SegmentStorage, const SLOTS: usize>(
    pipeline: &mut Pipeline<'_, SLOTS>,
    storage: &mut S,
    max: usize,
) -> usize {
    complete_observed(pipeline, storage, max, &mut |_, _| {})
}

/// [`complete`], telling `on_error` about each operation that failed (its token and error).
pub fn complete_observed<S: SegmentStorage, const SLOTS: usize>(
    pipeline: &mut Pipeline<'_, SLOTS>,
    storage: &mut S,
    max: usize,
    on_error: &mut dyn FnMut(u64, &S::Error),
) -> usize {
    let mut n = 0;
    while n < max {
        let Some((token, result)) = storage.poll_completion() else {
            break;
        };
        n += 1;
        let result = result.map_err(|e| {
            on_error(token, &e);
            e.failure()
        });
        // A token the backend invents is the backend's bug; the pipeline ignores it.
        let _ = pipeline.handle_completion(token, result);
    }
    n
}

/// Hands every pending event to `on_event`; returns how many.
pub fn events<const SLOTS: usize>(
    pipeline: &mut Pipeline<'_, SLOTS>,
    on_event: &mut dyn FnMut(Event),
) -> usize {
    let mut n = 0;
    while let Some(event) = pipeline.poll_event() {
        n += 1;
        on_event(event);
    }
    n
}

/// Runs one round of the loop: submits what the pipeline asks for, feeds back what has
/// completed, forwards events. Returns whether anything happened (call again until it returns
/// `false`, or wait for the backend while requests are in flight).
pub fn pump<S: SegmentStorage, const SLOTS: usize>(
    pipeline: &mut Pipeline<'_, SLOTS>,
    storage: &mut S,
    on_event: &mut dyn FnMut(Event),
) -> bool {
    let submitted = submit_all(pipeline, storage);
    let completed = complete(pipeline, storage, usize::MAX);
    let reported = events(pipeline, on_event);
    submitted + completed + reported > 0
}

/// Pumps until nothing more happens: with a backend that completes at once, until every
/// request has completed.
pub fn pump_all<S: SegmentStorage, const SLOTS: usize>(
    pipeline: &mut Pipeline<'_, SLOTS>,
    storage: &mut S,
    on_event: &mut dyn FnMut(Event),
) {
    while pump(pipeline, storage, on_event) {}
}
