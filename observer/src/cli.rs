//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::analyse::verdict::{Baseline, Gate, Suppressions};
use crate::attach::{AttachOptions, StackWalker};
use crate::plan::returns::ReturnChoice;
use crate::plan::{LocSpec, ProbeRequest};
use crate::render::{Format, Reporter};
use crate::resolve::debuginfo::DebugOptions;
use crate::session::control::Request;
use crate::session::SessionOptions;

/// Finds leaking buffer pools in live Rust processes with eBPF uprobes.
#[derive(Debug, Parser)]
#[command(name = "observer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a running process and report buffers that were allocated
    /// from its pool and never released, grouped by allocating stack.
    Attach(AttachArgs),
    /// Launch a command with the probes in place before it runs, and report
    /// (and with --fail-on-leak, fail on) what it left outstanding at exit.
    Run(RunArgs),
    /// Remember the per-site counts of a running session under NAME.
    Mark(MarkArgs),
    /// Print a report from a running session without detaching it.
    Report(ReportArgs),
    /// What changed between two marks of a running session (or a mark and now).
    Diff(DiffArgs),
    /// Everything the observer knows about functions of a binary before
    /// probing them: copies, inlined instances, DWARF signature, inferred
    /// locations, and the instructions a probe would replace.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The executable (or shared object).
    pub binary: PathBuf,
    /// Function paths, as for --alloc / --release.
    #[arg(required = true)]
    pub functions: Vec<String>,
    /// See `attach --debug-dir`.
    #[arg(long, value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,
    /// See `attach --debug-file`.
    #[arg(long, value_name = "FILE")]
    pub debug_file: Vec<PathBuf>,
}

impl InspectArgs {
    /// See [`DebugOptions::new`]: given debug files are checked.
    pub fn debug_options(&self) -> anyhow::Result<DebugOptions> {
        DebugOptions::new(&self.debug_dir, &self.debug_file)
    }
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process to attach to.
    #[arg(short, long)]
    pub pid: u32,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub gate: GateArgs,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// What makes `observer run` fail.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// Exit with status 1 when outstanding buffers exceed the thresholds.
    #[arg(long)]
    pub fail_on_leak: bool,
    /// Outstanding bytes tolerated before it counts as a leak.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_bytes: u64,
    /// Outstanding buffers tolerated before it counts as a leak.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_buffers: u64,
    /// A previous JSON report: only growth over it counts.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Accepted sites, one `leak:PATTERN` per line (LeakSanitizer style).
    #[arg(long, value_name = "FILE")]
    pub suppressions: Option<PathBuf>,
}

/// Which functions to probe and where their values are.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The pool's allocate function, by path without hash
    /// (e.g. `bufpool::BufPool::allocate`, `Pool<*>::get` for every copy of a generic).
    #[arg(long, value_name = "FUNCTION")]
    pub alloc: String,
    /// Buffer size in bytes, evaluated when allocate returns (`argN` = value at
    /// entry); `auto` reads it off DWARF (needs types).
    #[arg(long, value_name = "LOC", value_parser = LocSpec::parse)]
    pub size: LocSpec,
    /// Buffer identity, evaluated when allocate returns (`argN` = value at
    /// entry); `auto` reads it off DWARF.
    #[arg(long, value_name = "LOC", value_parser = LocSpec::parse)]
    pub alloc_id: LocSpec,
    /// The pool's release function.
    #[arg(long, value_name = "FUNCTION")]
    pub release: String,
    /// Buffer identity at release's entry; `auto` reads it off DWARF.
    #[arg(long, value_name = "LOC", value_parser = LocSpec::parse)]
    pub release_id: LocSpec,
    /// How allocate's returns are observed: `auto` picks the cheapest way a
    /// panic cannot turn into an abort of the target (uretprobes where no
    /// panic can unwind through allocate; uretprobes repaired on unwind,
    /// which needs CAP_SYS_ADMIN; else probes after each call of allocate).
    #[arg(long, value_enum, default_value_t = ReturnChoice::Auto)]
    pub returns: ReturnChoice,
    /// Use plain uretprobes even where a panic unwinding through allocate
    /// would abort the target (it would, while attached).
    #[arg(long)]
    pub accept_abort_on_panic: bool,
}

/// How the session runs.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Stop after this long (e.g. 30s, 5m, 1h); default: until SIGINT/SIGTERM
    /// (`run`: then the command is sent SIGINT).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Sample the per-site counts (and print a status line) this often.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub interval: Duration,
    /// Count only buffers outstanding for longer than this: younger ones are
    /// in flight, not leaked.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub older_than: Option<Duration>,
    /// Control socket for mark/report/diff (default /run/observer/PID.sock).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Capacity of the kernel's live-buffer table.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_live: u32,
    /// Forward the eBPF programs' debug log to stderr (slow; debugging only).
    #[arg(long)]
    pub ebpf_log: bool,
    /// How allocating stacks are walked: `dwarf` works on any build (unwind
    /// tables from .eh_frame), `frame-pointers` needs -C force-frame-pointers=yes.
    #[arg(long, value_enum, default_value_t = StackWalker::Dwarf)]
    pub stack_walker: StackWalker,
    /// Root of a debug-file tree (`DIR/.build-id/xx/rest.debug`, debug
    /// links), searched before /usr/lib/debug; repeatable.
    #[arg(long, value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,
    /// A separate debug file; it serves the mapped object with the same
    /// build id. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub debug_file: Vec<PathBuf>,
}

/// How reports look and where they go.
#[derive(Debug, Args)]
pub struct OutputArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write each report to this file (replacing it) instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Sites shown in text reports.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Frames shown per site in text reports.
    #[arg(long, default_value_t = 12)]
    pub frames: usize,
    /// Stacks whose first N symbolized frames agree are one site (0: the
    /// whole stack must agree).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub group_depth: usize,
    /// Also write outstanding bytes over time (total and top sites) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// Also write a flame graph of outstanding bytes by stack as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,
}

/// Which running session to talk to.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The PID the session observes (its socket is /run/observer/PID.sock).
    #[arg(long, short)]
    pub pid: Option<u32>,
    /// The session's control socket.
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    pub control: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MarkArgs {
    pub name: String,
    #[command(flatten)]
    pub target: ControlArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub target: ControlArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier mark.
    pub from: String,
    /// The later mark (default: now).
    pub to: Option<String>,
    /// Divide every change by this number of cycles run between the marks.
    #[arg(long, value_name = "N")]
    pub per: Option<u64>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub target: ControlArgs,
}

impl ProbeArgs {
    pub fn request(&self) -> ProbeRequest {
        ProbeRequest {
            alloc: self.alloc.clone(),
            release: self.release.clone(),
            size: self.size,
            alloc_id: self.alloc_id,
            release_id: self.release_id,
            returns: self.returns,
            accept_abort_on_panic: self.accept_abort_on_panic,
        }
    }
}

impl SessionArgs {
    /// See [`DebugOptions::new`]: given debug files are checked.
    pub fn debug_options(&self) -> anyhow::Result<DebugOptions> {
        DebugOptions::new(&self.debug_dir, &self.debug_file)
    }

    pub fn attach_options(&self) -> AttachOptions {
        AttachOptions {
            max_live: self.max_live,
            ebpf_log: self.ebpf_log,
            walker: self.stack_walker,
        }
    }

    /// Session options; `gate` is set for `observer run`.
    pub fn session_options(&self, output: &OutputArgs, gate: Option<Gate>) -> SessionOptions {
        SessionOptions {
            duration: self.duration,
            interval: self.interval,
            group_depth: output.group_depth,
            older_than: self.older_than,
            reporter: Reporter {
                format: output.format,
                output: output.output.clone(),
                top: output.top,
                frames: output.frames,
            },
            chart: output.chart.clone(),
            flamegraph: output.flamegraph.clone(),
            gate,
            walker: self.stack_walker,
        }
    }
}

impl OutputArgs {
    /// Checks `--output`, `--chart` and `--flamegraph` before anything is
    /// attached, so a report is never lost at the end of a session.
    pub fn check_destinations(&self) -> anyhow::Result<()> {
        crate::render::check_destinations(&[
            ("--output", self.output.as_deref()),
            ("--chart", self.chart.as_deref()),
            ("--flamegraph", self.flamegraph.as_deref()),
        ])
    }
}

impl GateArgs {
    /// Loads the baseline and suppressions (bad files are user errors).
    pub fn gate(&self, group_depth: usize) -> anyhow::Result<Gate> {
        Ok(Gate {
            fail_on_leak: self.fail_on_leak,
            max_bytes: self.max_bytes,
            max_buffers: self.max_buffers,
            baseline: self.baseline.as_deref().map(Baseline::load).transpose()?,
            suppressions: self
                .suppressions
                .as_deref()
                .map(Suppressions::load)
                .transpose()?
                .unwrap_or_default(),
            depth: group_depth,
        })
    }
}

impl MarkArgs {
    pub fn request(&self) -> Request {
        Request::Mark {
            name: self.name.clone(),
        }
    }
}

impl ReportArgs {
    pub fn request(&self) -> Request {
        Request::Report {
            format: self.format,
        }
    }
}

impl DiffArgs {
    pub fn request(&self) -> Request {
        Request::Diff {
            from: self.from.clone(),
            to: self.to.clone(),
            per: self.per,
            format: self.format,
        }
    }
}

/// `500ms`, `30s`, `5m`, `2h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: write e.g. 30s, 5m, 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}': use ms, s, m or h"
            ))
        }
    };
    if seconds <= 0.0 {
        return Err(format!("'{text}' must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn bad_location_is_rejected_by_the_parser() {
        let err = Cli::try_parse_from([
            "observer",
            "attach",
            "--pid",
            "1",
            "--alloc",
            "a",
            "--size",
            "argx",
            "--alloc-id",
            "ret",
            "--release",
            "r",
            "--release-id",
            "arg1",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("bad location 'argx'"), "{err}");
    }

    #[test]
    fn run_takes_the_command_after_a_double_dash() {
        let cli = Cli::try_parse_from([
            "observer",
            "run",
            "--alloc",
            "a",
            "--size",
            "arg2",
            "--alloc-id",
            "*arg0",
            "--release",
            "r",
            "--release-id",
            "*arg1",
            "--fail-on-leak",
            "--",
            "server",
            "--port",
            "1",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run");
        };
        assert_eq!(run.command, ["server", "--port", "1"]);
        assert!(run.gate.fail_on_leak);
    }
}
