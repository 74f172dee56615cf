//! Short writes from the kernel, provoked for real: a file-size limit (`RLIMIT_FSIZE`) cuts a
//! write at the limit, the backend resubmits the rest, and the rest fails with `EFBIG`. The
//! limit is the whole process's, so this is the only test of its binary.

mod common;

use common::*;
use lamina_core::SegmentId;
use lamina_core::io::{Error as _, Failure, SegmentOp, SegmentStorage};
use lamina_core::segment::HEADER_LEN;
use lamina_uring::{Op, UringError};

/// Sets the process's file-size limit to `bytes`, with `SIGXFSZ` ignored so that passing it is
/// an `EFBIG` error rather than the end of the process.
fn limit_file_size(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `signal` with `SIG_IGN` installs no handler code; `setrlimit` reads a valid
    // `rlimit` on the stack.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

#[test]
fn a_write_cut_short_by_the_file_size_limit_is_resubmitted_and_fails_with_efbig() {
    for (mode, options) in modes() {
        for linked in [false, true] {
            let dir = tempdir();
            let mut s = open(dir.path(), options);
            let id = SegmentId(0);
            let create = SegmentOp::Create {
                segment: id,
                header: &[1; HEADER_LEN],
            };
            s.submit(1, create).unwrap();
            assert!(s.poll_completion().unwrap().1.is_ok());
            // The limit falls inside the write, on a block boundary (direct I/O writes whole
            // blocks).
            limit_file_size(8192);
            let data: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
            let write = SegmentOp::Write {
                segment: id,
                offset: 4096,
                data: &data,
                sync: linked,
            };
            s.submit(2, write).unwrap();
            let mut done = None;
            while done.is_none() {
                s.wait().unwrap();
                done = s.poll_completion();
            }
            limit_file_size(libc::RLIM_INFINITY);
            let (token, result) = done.unwrap();
            assert_eq!(token, 2);
            let e = result.expect_err("the rest is past the limit");
            assert!(
                matches!(e, UringError::Io { op: Op::Write, .. }),
                "{mode}, linked {linked}: {e:?}"
            );
            assert_eq!(
                e.io_error().and_then(|e| e.raw_os_error()),
                Some(libc::EFBIG)
            );
            assert_eq!(e.failure(), Failure::Other);
            assert!(
                s.resubmissions() >= 1,
                "{mode}, linked {linked}: the rest was resubmitted"
            );
            // What the kernel took is there.
            let mut back = vec![0u8; 4096];
            assert_eq!(s.read_at(id, 4096, &mut back).unwrap(), 4096);
            assert_eq!(back, data[..4096], "{mode}, linked {linked}");
        }
    }
}
