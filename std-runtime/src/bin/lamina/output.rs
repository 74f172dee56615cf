//! What every command prints through: human lines or JSON objects on stdout, the progress bar on
//! stderr, and the small formatters they share.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lamina::file_backend::names::segment_file_name;
use lamina::{Lsn, SegmentId};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Logs at least this large get a progress bar (when stderr is a terminal).
const LARGE: u64 = 64 * 1024 * 1024;

/// The flags every command takes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Style {
    /// One JSON object per line instead of human text.
    pub(crate) json: bool,
    /// No human text and no progress bar (JSON, when asked for, is still printed).
    pub(crate) quiet: bool,
}

/// Standard output. A reader that went away (`| head`) stops the printing, not the command: the
/// exit code still says what was found.
pub(crate) struct Out {
    style: Style,
    stdout: std::io::StdoutLock<'static>,
    closed: bool,
}

impl Out {
    /// Prints to stdout in `style`.
    pub(crate) fn new(style: Style) -> Self {
        Out {
            style,
            stdout: std::io::stdout().lock(),
            closed: false,
        }
    }

    /// The style it prints in.
    pub(crate) fn style(&self) -> Style {
        self.style
    }

    /// Prints a line of human text (not in `--json` or `--quiet`).
    pub(crate) fn human(&mut self, line: impl std::fmt::Display) {
        if !self.style.json && !self.style.quiet {
            self.write(&line.to_string());
        }
    }

    /// Prints one JSON object on a line (in `--json` only).
    pub(crate) fn json(&mut self, value: &serde_json::Value) {
        if self.style.json {
            self.write(&value.to_string());
        }
    }

    /// Whether stdout is gone: a long listing may stop.
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    fn write(&mut self, line: &str) {
        if !self.closed && writeln!(self.stdout, "{line}").is_err() {
            self.closed = true;
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        // Nothing is left to report a failed flush to: the reader is gone.
        let _ = self.stdout.flush();
    }
}

/// A progress bar over `total` bytes on stderr: shown only for a large log, when stderr is a
/// terminal and neither `--quiet` nor `--json` was given; otherwise hidden (it then costs
/// nothing).
pub(crate) fn progress(total: u64, style: Style) -> ProgressBar {
    if style.quiet || style.json || total < LARGE || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(s) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}")
    {
        bar.set_style(s);
    }
    bar
}

/// A path as text for JSON: a path that is not UTF-8 is shown with replacement characters
/// (JSON strings are UTF-8, and serializing such a path would fail).
pub(crate) fn text_of(path: &Path) -> String {
    path.display().to_string()
}

/// The path of segment `id`'s file in `dir`.
pub(crate) fn segment_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(segment_file_name(id))
}

/// An LSN range as text: `LSN 5`, `LSN 5 to 9`, or `no records`.
pub(crate) fn lsn_range(first: Option<Lsn>, last: Option<Lsn>) -> String {
    match (first, last) {
        (Some(a), Some(b)) if a == b => format!("LSN {a}"),
        (Some(a), Some(b)) => format!("LSN {a} to {b}"),
        _ => "no records".into(),
    }
}

/// An LSN for JSON: a number, or `null` for none.
pub(crate) fn lsn_json(lsn: Option<Lsn>) -> serde_json::Value {
    lsn.map_or(serde_json::Value::Null, |l| l.0.into())
}

/// Bytes as text with a binary unit.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = "KiB";
    for next in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// Lowercase hex of `data`.
pub(crate) fn hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A payload shown to a human: the first `limit` bytes (all of them with `None`), as quoted
/// UTF-8 when they are printable text and `hex` is off, else as hex; `...` marks a cut.
pub(crate) fn preview(payload: &[u8], limit: Option<usize>, hex_only: bool) -> String {
    let shown = limit.map_or(payload, |l| payload.get(..l).unwrap_or(payload));
    let cut = if shown.len() < payload.len() {
        "..."
    } else {
        ""
    };
    match text(shown) {
        Some(t) if !hex_only => format!("{:?}{cut}", t),
        _ => format!("{}{cut}", hex(shown)),
    }
}

/// `data` as text when it is UTF-8 (a character cut at the end of a preview allowed) without
/// control characters other than tab and line breaks.
pub(crate) fn text(data: &[u8]) -> Option<&str> {
    let valid = match std::str::from_utf8(data) {
        Ok(t) => t,
        // A preview may end inside a character: keep what is before it.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(data.get(..e.valid_up_to())?).ok()?
        }
        Err(_) => return None,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .then_some(valid)
}
