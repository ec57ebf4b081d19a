//! Command-line interface.

pub mod values;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::analyse::verdict::{Baseline, Gate, Suppressions};
use crate::attach::{AttachOptions, StackWalker};
use crate::cost::CostStatistics;
use crate::plan::extra_functions::{FunctionRequest, ReleaseRequest};
use crate::plan::presets::Preset;
use crate::plan::returns::ReturnChoice;
use crate::plan::{LocSpec, Location, ProbeRequest};
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

impl Cli {
    /// Parses this process's arguments. A mistake is printed as one line,
    /// `observer: error: …`, with exit status 2, like every other user
    /// error; `--help`, `--version` and a bare `observer` print as usual.
    pub fn parse_args() -> Self {
        Self::try_parse().unwrap_or_else(|err| {
            let shows_help = !err.use_stderr()
                || err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
            if shows_help {
                err.exit();
            }
            eprintln!("observer: error: {}", parse_error_line(&err));
            std::process::exit(2)
        })
    }
}

/// clap's message in one line: the error with its indented details, its
/// tips, and which `--help` to read (taken from its usage line).
pub fn parse_error_line(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let mut message: Vec<&str> = Vec::new();
    let mut tips: Vec<&str> = Vec::new();
    let mut help = None;
    for line in rendered.lines().map(str::trim) {
        if let Some(first) = line.strip_prefix("error: ") {
            message.push(first);
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            tips.push(tip);
        } else if let Some(usage) = line.strip_prefix("Usage: ") {
            let command: Vec<&str> = usage
                .split_whitespace()
                .take_while(|word| !word.starts_with(['-', '<', '[']))
                .collect();
            help = Some(format!("see '{} --help'", command.join(" ")));
        } else if !line.is_empty() && !line.starts_with("For more information") {
            message.push(line);
        }
    }
    let mut text = message.join(" ");
    for tip in tips {
        text.push_str(&format!(" ({tip})"));
    }
    if let Some(help) = help {
        text.push_str(&format!("; {help}"));
    }
    text
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a running process and report buffers that were allocated
    /// from its pool and never released, grouped by allocating stack.
    Attach(AttachArgs),
    /// Attach like `attach`, with a live view in the terminal: top sites by
    /// outstanding bytes with growth, totals, counters and the observer's
    /// cost, refreshed every --interval (keys: ↑/↓ select, enter expand, s
    /// sort, m mark, d diff since the mark, q quit and detach).
    Top(AttachArgs),
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
    /// What this kernel offers the observer: the features it needs or
    /// uses, found by asking the kernel.
    Doctor,
    /// The probe floor for benchmarks: empty programs on the uprobes
    /// `attach` would place, until SIGINT/SIGTERM.
    #[command(hide = true)]
    Floor(FloorArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The executable (or shared object).
    pub binary: PathBuf,
    /// Function paths, as for --alloc / --release.
    #[arg(required = true, value_parser = values::function_path)]
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
pub struct FloorArgs {
    /// Process to place the probes in.
    #[arg(short, long, value_parser = values::pid)]
    pub pid: u32,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process to attach to.
    #[arg(short, long, value_parser = values::pid, allow_negative_numbers = true)]
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
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = values::threshold, allow_negative_numbers = true)]
    pub max_bytes: u64,
    /// Outstanding buffers tolerated before it counts as a leak.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = values::threshold, allow_negative_numbers = true)]
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
    /// A known allocator's entry points with their locations, instead of
    /// --alloc/--release and their locations: `libc` (malloc, calloc,
    /// realloc, posix_memalign, aligned_alloc, memalign, free in the
    /// process's C library: glibc's, musl's, or a static executable's),
    /// `rust-global` (__rust_alloc, __rust_alloc_zeroed, __rust_realloc,
    /// __rust_dealloc), `jemalloc`, `mimalloc`.
    #[arg(long, value_enum, conflicts_with_all = ["alloc", "release", "size", "alloc_id", "release_id"])]
    pub preset: Option<Preset>,
    /// The pool's allocate function, by path without hash
    /// (e.g. `bufpool::BufPool::allocate`, `Pool<*>::get` for every copy of a generic);
    /// `OBJECT:FUNCTION` for a shared object the target maps or will load
    /// (`libfoo.so:pool_get`); `libc:FUNCTION` is in the process's C library.
    /// Repeatable: several allocate functions in one session, each with
    /// its own --size and --alloc-id (given in the same order) or sharing
    /// one.
    #[arg(long, value_name = "FUNCTION", value_parser = values::function_path, required_unless_present = "preset")]
    pub alloc: Vec<String>,
    /// Buffer size in bytes, evaluated when allocate returns (`argN` = value at
    /// entry); `auto` reads it off DWARF (needs types; first --alloc only).
    #[arg(long, value_name = "LOC", value_parser = LocSpec::parse, allow_negative_numbers = true, required_unless_present = "preset")]
    pub size: Vec<LocSpec>,
    /// Buffer identity, evaluated when allocate returns (`argN` = value at
    /// entry); `auto` reads it off DWARF (first --alloc only).
    #[arg(long, value_name = "LOC", value_parser = LocSpec::parse, allow_negative_numbers = true, required_unless_present = "preset")]
    pub alloc_id: Vec<LocSpec>,
    /// The pool's release function (in the same object as --alloc).
    /// Repeatable, like --alloc, with its own --release-id or a shared one.
    #[arg(long, value_name = "FUNCTION", value_parser = values::function_path, required_unless_present = "preset")]
    pub release: Vec<String>,
    /// Buffer identity at release's entry; `auto` reads it off DWARF
    /// (first --release only).
    #[arg(long, value_name = "LOC", value_parser = LocSpec::parse, allow_negative_numbers = true, required_unless_present = "preset")]
    pub release_id: Vec<LocSpec>,
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
    #[arg(long, value_parser = values::session_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Sample the per-site counts (and print a status line) this often
    /// (100ms to 24h).
    #[arg(long, value_parser = values::interval, default_value = "5s", allow_hyphen_values = true)]
    pub interval: Duration,
    /// Count only buffers outstanding for longer than this: younger ones are
    /// in flight, not leaked.
    #[arg(long, value_parser = values::age, value_name = "DURATION", allow_hyphen_values = true)]
    pub older_than: Option<Duration>,
    /// Control socket for mark/report/diff (default /run/observer/PID.sock).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve OpenMetrics at http://ADDR/metrics for Prometheus: `PORT`
    /// (on 127.0.0.1), `HOST:PORT` or `[V6]:PORT`.
    #[arg(long, value_name = "ADDR", value_parser = values::metrics_address)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Stop observing (final report, exit status 3) when the probes'
    /// programs use more than PCT percent of one CPU over an --interval.
    #[arg(long, value_name = "PCT", value_parser = values::overhead_percent, allow_negative_numbers = true)]
    pub max_overhead: Option<f64>,
    /// How the programs' CPU time is measured: `sampled` turns the
    /// kernel's statistics on for the last tenth of each --interval (at
    /// most 1 s) and estimates the rest from the calls at the measured
    /// cost per call; `always` times every run, which costs every eBPF
    /// program on the host two clock reads per run.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = CostStatistics::Sampled)]
    pub cost_statistics: CostStatistics,
    /// Capacity of the kernel's live-buffer table (1 to 16777216).
    #[arg(long, default_value_t = 1 << 20, value_parser = values::live_entries, allow_negative_numbers = true)]
    pub max_live: u32,
    /// Forward the eBPF programs' debug log to stderr (slow; debugging only).
    #[arg(long)]
    pub ebpf_log: bool,
    /// When the kernel refuses a program, write the verifier's whole log
    /// here (the error itself is one line).
    #[arg(long, value_name = "FILE")]
    pub verifier_log: Option<PathBuf>,
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
    #[arg(long, default_value_t = 10, value_parser = values::shown_sites, allow_negative_numbers = true)]
    pub top: usize,
    /// Frames shown per site in text reports.
    #[arg(long, default_value_t = 12, value_parser = values::shown_frames, allow_negative_numbers = true)]
    pub frames: usize,
    /// Stacks whose first N symbolized frames agree are one site (0: the
    /// whole stack must agree).
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = values::group_depth, allow_negative_numbers = true)]
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
    #[arg(long, short, value_parser = values::pid, allow_negative_numbers = true)]
    pub pid: Option<u32>,
    /// The session's control socket.
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    pub control: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MarkArgs {
    #[arg(value_parser = values::mark_name)]
    pub name: String,
    #[command(flatten)]
    pub target: ControlArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The profile as it was at this mark (`--format pprof` only): two of
    /// them make a `go tool pprof -diff_base`.
    #[arg(long, value_name = "NAME", value_parser = values::mark_name)]
    pub mark: Option<String>,
    /// Write the report to FILE (replaced atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: ControlArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier mark.
    #[arg(value_parser = values::mark_name)]
    pub from: String,
    /// The later mark (default: now).
    #[arg(value_parser = values::mark_name)]
    pub to: Option<String>,
    /// Divide every change by this number of cycles run between the marks.
    #[arg(long, value_name = "N", value_parser = values::cycles, allow_negative_numbers = true)]
    pub per: Option<u64>,
    /// `pprof`: a profile whose values are the changes (`--per` does not
    /// apply to it).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the diff to FILE (replaced atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: ControlArgs,
}

impl ProbeArgs {
    /// The functions to probe: a preset's, or those given, each paired
    /// with its locations.
    pub fn request(&self) -> anyhow::Result<ProbeRequest> {
        if let Some(preset) = self.preset {
            return Ok(preset.request(self.returns, self.accept_abort_on_panic));
        }
        let size = values::per_function("--size", &self.size, self.alloc.len(), "--alloc")?;
        let alloc_id =
            values::per_function("--alloc-id", &self.alloc_id, self.alloc.len(), "--alloc")?;
        let release_id = values::per_function(
            "--release-id",
            &self.release_id,
            self.release.len(),
            "--release",
        )?;
        let more_allocs = (1..self.alloc.len())
            .map(|i| {
                Ok(FunctionRequest {
                    function: self.alloc[i].clone(),
                    size: values::explicit("--size", &self.alloc[i], size[i])?,
                    count: Location::ONE,
                    id: values::explicit("--alloc-id", &self.alloc[i], alloc_id[i])?,
                    test: observer_ebpf::ReturnTest::ALWAYS,
                    realloc_old: None,
                    optional: false,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let more_releases = (1..self.release.len())
            .map(|i| {
                Ok(ReleaseRequest {
                    function: self.release[i].clone(),
                    id: values::explicit("--release-id", &self.release[i], release_id[i])?,
                    optional: false,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(ProbeRequest {
            alloc: self.alloc[0].clone(),
            release: self.release[0].clone(),
            size: size[0],
            alloc_id: alloc_id[0],
            release_id: release_id[0],
            returns: self.returns,
            accept_abort_on_panic: self.accept_abort_on_panic,
            success: None,
            more_allocs,
            more_releases,
            outermost: false,
            no_unwind: None,
        })
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
            max_overhead: self.max_overhead,
            cost_statistics: self.cost_statistics,
            tui: false,
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
        if self.format.is_binary() && self.output.is_none() {
            // Profiles written one after another on a stream cannot be
            // told apart by the tools that read them.
            return Err(crate::error::UserError::new(
                "--format pprof writes a binary profile with every report: give --output FILE, which each report replaces",
            )
            .into());
        }
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
    pub fn request(&self) -> anyhow::Result<Request> {
        if self.mark.is_some() && self.format != Format::Pprof {
            return Err(crate::error::UserError::new(
                "--mark gives the profile at a mark: use it with --format pprof (or `observer diff` for the other formats)",
            )
            .into());
        }
        Ok(Request::Report {
            format: self.format,
            mark: self.mark.clone(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn parse_error(args: &[&str]) -> String {
        let mut full = vec!["observer"];
        full.extend(args);
        let err = Cli::try_parse_from(full).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        parse_error_line(&err)
    }

    const SPEC: [&str; 10] = [
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
    ];

    #[test]
    fn parse_errors_are_one_line_that_says_where_to_read_more() {
        let line = parse_error(&["attach"]);
        assert!(
            line.starts_with("the following required arguments were not provided: --pid <PID> --alloc <FUNCTION>"),
            "{line}"
        );
        assert!(line.ends_with("; see 'observer attach --help'"), "{line}");
        let line = parse_error(&["attach", "--pid", "1", "--alocc", "x"]);
        assert!(
            line.contains(
                "unexpected argument '--alocc' found (a similar argument exists: '--alloc')"
            ),
            "{line}"
        );
        let line = parse_error(&["frob"]);
        assert_eq!(
            line,
            "unrecognized subcommand 'frob'; see 'observer --help'"
        );
        let line = parse_error(&["report", "--format", "xml"]);
        assert!(
            line.contains("'xml'") && line.contains("[possible values: text, json, folded, pprof]"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn negative_values_reach_the_value_parsers() {
        let mut args = vec!["attach", "--pid", "1", "--older-than", "-1s"];
        args.extend(SPEC);
        let line = parse_error(&args);
        assert!(line.contains("'-1s' must be positive"), "{line}");
        let mut args = vec!["attach", "--pid", "-1"];
        args.extend(SPEC);
        assert!(parse_error(&args).contains("'-1' is not a PID"));
        let mut args = vec!["attach", "--pid", "1", "--max-live", "-5"];
        args.extend(SPEC);
        assert!(parse_error(&args).contains("'-5' is not a whole number from 1 to 16777216"));
        let line = parse_error(&["diff", "a", "--per", "-3"]);
        assert!(line.contains("'-3' is not a whole number from 1"), "{line}");
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
