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
    /// [`Store::Uring`] with linked writes (`Config::linked`): each write goes out with its
    /// fsync as one `IOSQE_IO_LINK` pair, the mode for single latency-critical commits.
    #[cfg(feature = "io-uring")]
    UringLinked,
    /// [`Store::UringDirect`] with linked writes.
    #[cfg(feature = "io-uring")]
    UringDirectLinked,
}

/// Every backend compiled in, the file backend first (the one the others are compared with).
pub(crate) const STORES: &[Store] = &[
    Store::File,
    #[cfg(feature = "io-uring")]
    Store::Uring,
    #[cfg(feature = "io-uring")]
    Store::UringDirect,
];

/// [`STORES`] and, for single commits, the linked-write modes of io_uring.
pub(crate) const COMMIT_STORES: &[Store] = &[
    Store::File,
    #[cfg(feature = "io-uring")]
    Store::Uring,
    #[cfg(feature = "io-uring")]
    Store::UringDirect,
    #[cfg(feature = "io-uring")]
    Store::UringLinked,
    #[cfg(feature = "io-uring")]
    Store::UringDirectLinked,
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
            #[cfg(feature = "io-uring")]
            Store::UringLinked => "uring_linked",
            #[cfg(feature = "io-uring")]
            Store::UringDirectLinked => "uring_direct_linked",
        }
    }

    /// A log in `dir` on this backend, its segments pre-zeroed to `options`' segment size (so
    /// no commit grows a file); opened (the segment created) before it is returned.
    pub(crate) fn open(self, dir: &Path, options: Options) -> DirLog {
        let prepare = options.config.segment_size;
        #[cfg(feature = "io-uring")]
        let (mut options, uring) = (
            options,
            lamina::uring_backend::Options::new().prepare_size(prepare),
        );
        #[cfg(feature = "io-uring")]
        let direct = uring.direct(true).fixed_buffers(true).fixed_files(true);
        let storage: DirStorage = match self {
            Store::File => {
                FileStorage::open(dir, file_backend::Options::new().prepare_size(prepare))
                    .expect("open file storage")
                    .into()
            }
            #[cfg(feature = "io-uring")]
            Store::Uring => open_uring(dir, uring),
            #[cfg(feature = "io-uring")]
            Store::UringDirect => open_uring(dir, direct),
            #[cfg(feature = "io-uring")]
            Store::UringLinked => {
                options.config.linked = true;
                open_uring(dir, uring)
            }
            #[cfg(feature = "io-uring")]
            Store::UringDirectLinked => {
                options.config.linked = true;
                open_uring(dir, direct)
            }
        };
        WriteAheadLog::open_with(storage, options).expect("open").0
    }
}

#[cfg(feature = "io-uring")]
fn open_uring(dir: &Path, options: lamina::uring_backend::Options) -> DirStorage {
    lamina::uring_backend::UringStorage::open(dir, options)
        .expect("open io_uring storage")
        .into()
}
