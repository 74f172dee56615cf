//! Exit codes, and the one error the commands return: a message of one line and the code the
//! process exits with.

use std::fmt;
use std::io;
use std::path::Path;

/// What the process exits with (the README's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Exit {
    /// Clean, or done.
    Ok = 0,
    /// A torn tail (`verify`), or changes a repair would make (`repair` without `--apply`).
    Torn = 1,
    /// Corruption of acknowledged records, or a set or chain that does not hold together.
    Corrupt = 2,
    /// A path that cannot be read, is missing, or is not a log (foreign or garbage), or an
    /// operation that failed on the way (a lock held, a write refused).
    Unreadable = 3,
    /// The command line asks for something this build cannot do.
    Usage = 64,
}

impl Exit {
    /// The process exit code.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// A command's failure: one line for stderr, and the exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    /// The exit code.
    pub(crate) exit: Exit,
    /// What is wrong, naming the file.
    pub(crate) message: String,
}

impl CliError {
    /// A failure with exit code `exit`.
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: one_line(&message.into()),
        }
    }

    /// `path` cannot be read or used: `what` says why.
    pub(crate) fn unreadable(path: &Path, what: impl fmt::Display) -> Self {
        Self::new(Exit::Unreadable, format!("{}: {what}", path.display()))
    }

    /// `path` could not be read: the I/O error `e`.
    pub(crate) fn io(path: &Path, e: &io::Error) -> Self {
        Self::unreadable(path, io_text(e))
    }

    /// `path` is not something the command reads.
    pub(crate) fn not_a_log(path: &Path, why: impl fmt::Display) -> Self {
        Self::unreadable(
            path,
            format!("not a log directory, a per-core log set or a segment file: {why}"),
        )
    }

    /// A command line this build cannot carry out.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An I/O error in a few words (without the OS's error number).
pub(crate) fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `text` on one line: a message from below may hold line breaks.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
