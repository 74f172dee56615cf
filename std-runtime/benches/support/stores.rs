//! The backends the fsync groups run lamina on: the file backend always, and with the `io-uring`
//! feature io_uring buffered and io_uring with `O_DIRECT` (registered buffers and files). Each
//! log is a [`DirLog`], so every variant runs the same code above the storage.

use lamina::file_backend::{self, FileStorage};
use lamina::{DirLog, DirStorage, Options, WriteAheadLog};
use std::path::Path;

/// One backend of lamina.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    /// `lamina-file`: pwrite and fdatasync on the log's thread.
    File,
    /// `lamina-uring`, buffered, default options.
    #[cfg(feature = "io-uring")]
    Uring,
    /// `lamina-uring` with `O_DIRECT`, registered buffers and registered files.
    #[cfg(feature = "io-uring")]
    UringDirect,
}

/// Every backend compiled in, the file backend first (the one the others are compared with).
pub(crate) const STORES: &[Store] = &[
    Store::File,
    #[cfg(feature = "io-uring")]
    Store::Uring,
    #[cfg(feature = "io-uring")]
    Store::UringDirect,
];

impl Store {
    /// Its name in the printed lines and benchmark ids.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Store::File => "file",
            #[cfg(feature = "io-uring")]
            Store::Uring => "uring",
            #[cfg(feature = "io-uring")]
            Store::UringDirect => "uring_direct",
        }
    }

    /// A log in `dir` on this backend, its segments pre-zeroed to `options`' segment size (so
    /// no commit grows a file); opened (the segment created) before it is returned.
    pub(crate) fn open(self, dir: &Path, options: Options) -> DirLog {
        let prepare = options.config.segment_size;
        let storage: DirStorage = match self {
            Store::File => {
                FileStorage::open(dir, file_backend::Options::new().prepare_size(prepare))
                    .expect("open file storage")
                    .into()
            }
            #[cfg(feature = "io-uring")]
            Store::Uring => uring(
                dir,
                lamina::uring_backend::Options::new().prepare_size(prepare),
            ),
            #[cfg(feature = "io-uring")]
            Store::UringDirect => uring(
                dir,
                lamina::uring_backend::Options::new()
                    .prepare_size(prepare)
                    .direct(true)
                    .fixed_buffers(true)
                    .fixed_files(true),
            ),
        };
        WriteAheadLog::open_with(storage, options).expect("open").0
    }
}

#[cfg(feature = "io-uring")]
fn uring(dir: &Path, options: lamina::uring_backend::Options) -> DirStorage {
    lamina::uring_backend::UringStorage::open(dir, options)
        .expect("open io_uring storage")
        .into()
}
