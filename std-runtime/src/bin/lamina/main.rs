//! `lamina`, the command-line tool of the lamina write-ahead log: `inspect` a log's segments and
//! records, `verify` every checksum and the chain (exit 0 clean, 1 torn tail, 2 corruption, 3
//! unreadable or not a log), `repair` with a recovery mode (a dry run unless `--apply`), and
//! `bench` append, commit and scan against the raw limit of the same machine. It reads logs
//! written by any backend (the bytes are the same), through read-only views that take no lock;
//! only `repair --apply` and `bench` write.
#![deny(unsafe_code)]

mod bench;
mod checkpoints;
mod demo;
mod detect;
mod errors;
mod inspect;
mod logcheck;
mod output;
mod repair;
mod segfile;
mod verify;

use clap::{Parser, Subcommand, ValueEnum};
use errors::{CliError, Exit};
use lamina::{Lsn, Mode};
use output::{Out, Style};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Inspect, verify, repair and benchmark lamina write-ahead logs.
#[derive(Parser, Debug)]
#[command(name = "lamina", version)]
struct Cli {
    /// Print one JSON object per line instead of text (stable keys, for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Print no text and no progress bar; the exit code (and a one-line error on stderr) says
    /// what was found.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole pipeline on the file backend (Ring 0 threads, the drainer, per-core WALs,
    /// checkpoints), kill it with SIGKILL, recover, and check every acknowledged write.
    Demo {
        /// The store's directory (default: a temporary one, removed at the end).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Ring 0 threads (1 to 8).
        #[arg(long, value_name = "N", default_value_t = 2)]
        cores: usize,
        /// Seconds the engine runs before it is killed.
        #[arg(long, value_name = "S", default_value_t = 10.0)]
        seconds: f64,
        /// Seconds between checkpoints.
        #[arg(long, value_name = "S", default_value_t = 2.0)]
        checkpoint_every: f64,
        /// Run as the engine the demo kills (workload generation G).
        #[arg(long, value_name = "G", hide = true)]
        child: Option<u64>,
    },
    /// Show the segments of a log directory, a per-core log set or a segment file (and their
    /// records with --records). Read-only.
    Inspect {
        /// A log directory, a per-core set's directory, or a segment file.
        path: PathBuf,
        /// Print the records too.
        #[arg(long)]
        records: bool,
        /// Only records from this LSN on.
        #[arg(long, value_name = "LSN")]
        from_lsn: Option<u64>,
        /// Only records up to this LSN.
        #[arg(long, value_name = "LSN")]
        to_lsn: Option<u64>,
        /// Payload bytes shown per record.
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        preview: usize,
        /// Show whole payloads.
        #[arg(long, conflicts_with = "preview")]
        full: bool,
        /// Show payloads in hex even when they are text.
        #[arg(long)]
        hex: bool,
    },
    /// Check every checksum and the chain of segments as recovery would (Strict), read-only:
    /// exit 0 clean, 1 torn tail, 2 corruption, 3 unreadable or not a log.
    Verify {
        /// A log directory, a per-core set's directory, or a segment file.
        path: PathBuf,
    },
    /// Say what recovery in a mode would cut; with --apply, make that repair durably.
    Repair {
        /// A log directory or a per-core set's directory.
        path: PathBuf,
        /// The recovery mode.
        #[arg(long, value_enum, default_value_t = ModeArg::Strict)]
        mode: ModeArg,
        /// Make the repair (without it, nothing is changed).
        #[arg(long)]
        apply: bool,
    },
    /// Measure append, durable commit and recovery scan against raw pwrite + fdatasync and
    /// pread of the same bytes, in a scratch directory.
    Bench {
        /// The backend the log runs on.
        #[arg(long, value_enum, default_value_t = bench::BackendArg::File)]
        backend: bench::BackendArg,
        /// Payload bytes per record.
        #[arg(long, value_name = "BYTES", default_value_t = 256)]
        record_size: usize,
        /// Sync after every record, or after every --group-size records.
        #[arg(long, value_enum, default_value_t = bench::SyncArg::Every)]
        sync: bench::SyncArg,
        /// Records per sync with --sync group.
        #[arg(long, value_name = "N", default_value_t = 100)]
        group_size: u64,
        /// Records per test.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        records: u64,
        /// Where to make the scratch directory (removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// A recovery mode on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// A torn tail is cut; corruption is refused, nothing changed.
    Strict,
    /// The log ends just before the first damage: everything after it is cut.
    PointInTime,
    /// Damaged records are stepped over and reported; the log has gaps.
    SkipCorrupt,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Strict => Mode::Strict,
            ModeArg::PointInTime => Mode::PointInTime,
            ModeArg::SkipCorrupt => Mode::SkipCorrupt,
        }
    }
}

/// What a command found: the exit code, and (when it is not 0) the finding in one line.
#[derive(Debug)]
pub(crate) struct Finding {
    /// The exit code.
    pub(crate) exit: Exit,
    /// The one-line finding for stderr.
    pub(crate) problem: Option<String>,
    /// The human output on stdout says the finding too (so a terminal that shows both is not
    /// told twice).
    pub(crate) shown: bool,
}

impl Finding {
    /// Nothing to report.
    pub(crate) fn ok() -> Self {
        Finding {
            exit: Exit::Ok,
            problem: None,
            shown: false,
        }
    }

    /// A finding with exit code `exit`, said in `problem`.
    pub(crate) fn new(exit: Exit, problem: String) -> Self {
        Finding {
            exit,
            problem: Some(problem),
            shown: false,
        }
    }
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("lamina: internal error{at}: {}", errors::one_line(&what));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            // Help and version go to stdout; usage errors to stderr, with clap's hint.
            let _ = e.print();
            return ExitCode::from(code.code());
        }
    };
    // The demo's engine prints from many threads: it runs before `Out` takes stdout's lock.
    if let Command::Demo {
        dir: Some(dir),
        cores,
        checkpoint_every,
        child: Some(generation),
        ..
    } = &cli.command
    {
        return match demo::run_child(dir, *cores, *generation, *checkpoint_every) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lamina: {}", e.message);
                ExitCode::from(e.exit.code())
            }
        };
    }
    let style = Style {
        json: cli.json,
        quiet: cli.quiet,
    };
    let mut out = Out::new(style);
    let result = match &cli.command {
        Command::Demo {
            dir,
            cores,
            seconds,
            checkpoint_every,
            child,
        } => demo::run(
            &demo::Demo {
                dir: dir.clone(),
                cores: *cores,
                seconds: *seconds,
                checkpoint_every: *checkpoint_every,
                child: *child,
            },
            &mut out,
        ),
        Command::Inspect {
            path,
            records,
            from_lsn,
            to_lsn,
            preview,
            full,
            hex,
        } => inspect::run(
            path,
            &inspect::Show {
                records: *records,
                from: from_lsn.map_or(Lsn::ZERO, Lsn),
                to: to_lsn.map_or(Lsn::MAX, Lsn),
                preview: (!full).then_some(*preview),
                hex: *hex,
            },
            &mut out,
        ),
        Command::Verify { path } => verify::run(path, &mut out),
        Command::Repair { path, mode, apply } => {
            repair::run(path, (*mode).into(), *apply, &mut out)
        }
        Command::Bench {
            backend,
            record_size,
            sync,
            group_size,
            records,
            dir,
        } => bench::run(
            &bench::Bench {
                backend: *backend,
                record_size: *record_size,
                sync: *sync,
                group_size: *group_size,
                records: *records,
                dir: dir.clone(),
            },
            &mut out,
        ),
    };
    let finding = result.unwrap_or_else(|e: CliError| {
        out.json(&serde_json::json!({
            "status": "error",
            "exit_code": e.exit.code(),
            "error": e.message,
        }));
        Finding::new(e.exit, e.message)
    });
    drop(out);
    // The finding goes to stderr, for scripts, unless the same line was just printed on the
    // same terminal.
    let same_terminal = !style.json
        && !style.quiet
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal();
    if let Some(problem) = finding.problem
        && !(finding.shown && same_terminal)
    {
        eprintln!("lamina: {problem}");
    }
    ExitCode::from(finding.exit.code())
}
