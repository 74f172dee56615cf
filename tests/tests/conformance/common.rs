//! What the scenarios share: the backend under test, opening a log on it, payloads, reading back.

use lamina::{
    Backend, BackendKind, DirError, DirLog, DirStorage, Error, Lsn, Options, RecoveryReport,
    SegmentStorage, SyncPolicy, WriteAheadLog,
};
use lamina_core::io::Completion;
pub(crate) use lamina_tests::files::segment_files;
use std::path::Path;
use std::time::{Duration, Instant};

/// A backend of the suite: its name in the list, and how to open a directory on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Under {
    pub(crate) name: &'static str,
    pub(crate) backend: Backend,
}

impl Under {
    /// The backend the opens must report: the one asked for, never a silent fall-back.
    pub(crate) fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::File => BackendKind::File,
            #[cfg(feature = "io-uring")]
            Backend::Uring(_) | Backend::UringOrFile(_) => BackendKind::Uring,
            _ => unreachable!("a backend the suite does not know"),
        }
    }

    /// Whether it writes whole blocks with `O_DIRECT`.
    pub(crate) fn direct(&self) -> bool {
        match self.backend {
            #[cfg(feature = "io-uring")]
            Backend::Uring(options) | Backend::UringOrFile(options) => options.direct,
            _ => false,
        }
    }

    /// Opens `dir` on this backend with `options`, checking that it runs on it.
    pub(crate) fn open(&self, dir: &Path, options: Options) -> (DirLog, RecoveryReport) {
        let (log, report, selected) =
            unlocked(|| WriteAheadLog::open_dir(dir, options, self.backend))
                .unwrap_or_else(|e| panic!("{}: opening {}: {e}", self.name, dir.display()));
        assert_eq!(selected.backend, self.kind(), "{}: {selected:?}", self.name);
        assert_eq!(selected.fallback, None, "{}", self.name);
        assert_eq!(log.storage().kind(), self.kind());
        (log, report)
    }

    /// The storage alone, for a wrapper or the backend contract itself.
    pub(crate) fn storage(&self, dir: &Path) -> DirStorage {
        let storage = unlocked(|| DirStorage::open(dir, self.backend))
            .unwrap_or_else(|e| panic!("{}: opening {}: {e}", self.name, dir.display()));
        assert_eq!(storage.kind(), self.kind());
        storage
    }
}

/// `open()`, again while the directory's lock is held by a child process that another scenario
/// (the SIGKILL one) is starting: between fork and exec a child holds a copy of every open file
/// of this process, the lock file of a log just closed included, for a moment. A lock still held
/// after 5 s is the error.
pub(crate) fn unlocked<T>(mut open: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let began = Instant::now();
    loop {
        match open() {
            Err(Error::Storage { detail, .. })
                if detail.contains("is locked by") && began.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// A directory on the disk the build runs on.
pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

/// Small segments and batches cut by the appends themselves, so scenarios roll over and keep
/// several writes in flight.
pub(crate) fn options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 32 * 1024;
    options.config.max_payload = 4096;
    options.config.policy = SyncPolicy::Batch {
        max_records: 16,
        max_bytes: 8 * 1024,
        max_delay: 0,
    };
    options.buffer_size = 256 * 1024;
    options
}

/// Payload `i`: 14 to 182 bytes, naming its index.
pub(crate) fn payload(i: u32) -> Vec<u8> {
    format!("record {i:05} ")
        .repeat(1 + (i % 13) as usize)
        .into_bytes()
}

pub(crate) type Records = Vec<(Lsn, Vec<u8>)>;

/// Appends payloads `range`, returning each LSN with its payload.
pub(crate) fn append_range<S: SegmentStorage>(
    log: &mut WriteAheadLog<S>,
    range: std::ops::Range<u32>,
) -> Records {
    range
        .map(|i| {
            let p = payload(i);
            (log.append(&p).expect("append"), p)
        })
        .collect()
}

/// Every durable data record.
pub(crate) fn read_all<S: SegmentStorage>(log: &mut WriteAheadLog<S>) -> Records {
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| read.push((lsn, p.to_vec())))
        .expect("read");
    read
}

/// The completions of `n` operations submitted to `s`, waiting in the backend between polls.
pub(crate) fn completions(s: &mut DirStorage, n: usize) -> Vec<Completion<DirError>> {
    let mut out = Vec::new();
    while out.len() < n {
        match s.poll_completion() {
            Some(c) => out.push(c),
            None => s.wait_for_completion().expect("wait"),
        }
    }
    out
}
