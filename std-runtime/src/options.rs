//! How a log is opened.

use lamina_core::commit::Config;
use lamina_core::decode::Mode;

/// How [`crate::WriteAheadLog::open_with`] opens a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The commit pipeline's settings: batch policy, writes in flight, segment size, largest
    /// payload. `nonce_seed` is ignored: every open draws fresh randomness. `max_delay` of a
    /// batch policy is not applied (the log runs no timer): batches are cut by records, bytes, a
    /// full buffer and [`crate::WriteAheadLog::sync`]. `max_writes_in_flight` is at most 16.
    pub config: Config,
    /// How recovery treats damage (default [`Mode::Strict`]).
    pub mode: Mode,
    /// Bytes of the pipeline's buffer, where records are framed until written. It must hold two
    /// of the largest frames.
    pub buffer_size: usize,
    /// The core id written into the headers of a new log.
    pub core: u32,
    /// The log id of a new log; `None` draws a random one. An existing log keeps its own.
    pub log_id: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: Config::default(),
            mode: Mode::Strict,
            buffer_size: 4 * 1024 * 1024,
            core: 0,
            log_id: None,
        }
    }
}
