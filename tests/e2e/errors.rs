//! Bad input and bad conditions, as a table. Each row runs the observer once
//! against a fresh gateway, in a fresh working directory, and asserts: exit
//! status 2; exactly one line on stderr, `observer: error: …`, containing
//! the row's text; nothing attached (the probed functions' first bytes are
//! what they were, no int3, and the gateway still serves); no control
//! socket left; no file changed in the working directory but the row's own;
//! no process of the run left behind.
//!
//! To add a case, append a row to [`CASES`]; it runs as `errors::NAME`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use libtest_mimic::Trial;

use crate::harness::{self, Needs};
use crate::support::*;

/// One bad input or condition.
pub struct Case {
    /// The test's name, `errors::NAME`.
    pub name: &'static str,
    /// The observer's arguments. Placeholders: `{spec}` is the gateway's
    /// probe options less any option the row gives itself; `{pid}` the
    /// gateway's PID, `{tid}` one of its threads, `{dir}` the working
    /// directory, `{targets}` the built target programs, `{long-path}` a
    /// 5000-character function path.
    pub args: &'static [&'static str],
    /// Who runs it.
    pub runs_as: RunsAs,
    /// What the one line must contain (same placeholders).
    pub line: &'static str,
    /// A stop signal sent while the observer starts.
    pub interrupt: Option<Interrupt>,
    /// A file in the working directory the case may write.
    pub writes: Option<&'static str>,
    /// What this machine must be like for the case to mean anything; the
    /// reason it is not is reported as the test's skip reason.
    pub requires: Option<fn() -> Result<(), String>>,
}

/// The privileges the observer runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsAs {
    Root,
    /// A plain user with every capability dropped (setpriv).
    Nobody,
}

/// A stop signal and the moment it is sent.
#[derive(Debug, Clone, Copy)]
pub struct Interrupt {
    pub signal: libc::c_int,
    pub at: Moment,
}

/// Moments of the observer's start that can be seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Its stop-signal handlers are installed (`/proc/PID/status` SigCgt):
    /// from then on a stop signal must end it with status 2.
    HandlersInstalled,
    /// It holds eBPF maps: the programs are being loaded and attached.
    Loading,
}

const DEFAULT: Case = Case {
    name: "",
    args: &[],
    runs_as: RunsAs::Root,
    line: "",
    interrupt: None,
    writes: None,
    requires: None,
};

pub const CASES: &[Case] = &[
    // Presets and several functions per session.
    Case {
        name: "preset_with_functions_of_its_own",
        args: &["attach", "--pid", "{pid}", "--preset", "libc", "--alloc", "malloc"],
        line: "the argument '--preset <PRESET>' cannot be used with '--alloc <FUNCTION>'",
        ..DEFAULT
    },
    Case {
        name: "preset_unknown",
        args: &["attach", "--pid", "{pid}", "--preset", "glibc"],
        line: "invalid value 'glibc' for '--preset <PRESET>' [possible values: libc, rust-global, jemalloc, mimalloc]",
        ..DEFAULT
    },
    Case {
        name: "locations_do_not_pair_with_functions",
        args: &[
            "attach", "--pid", "{pid}",
            "--alloc", "bufpool::BufPool::allocate", "--alloc", "bufpool::TypedPool<*>::take",
            "--size", "arg1", "--size", "arg1", "--size", "arg1", "--alloc-id", "ret",
            "--release", "bufpool::BufPool::release", "--release-id", "arg1",
        ],
        line: "3 --size for 2 --alloc: give one --size for all of them, or one per --alloc in the same order",
        ..DEFAULT
    },
    Case {
        name: "auto_for_a_second_function",
        args: &[
            "attach", "--pid", "{pid}",
            "--alloc", "bufpool::BufPool::allocate", "--alloc", "bufpool::TypedPool<*>::take",
            "--size", "auto", "--alloc-id", "ret",
            "--release", "bufpool::BufPool::release", "--release-id", "arg1",
        ],
        line: "--size auto for bufpool::TypedPool<*>::take: `auto` applies to the first function only",
        ..DEFAULT
    },
    // The target.
    Case {
        name: "pid_that_does_not_exist",
        args: &["attach", "--pid", "4194304", "{spec}"],
        line: "no process with PID 4194304",
        ..DEFAULT
    },
    Case {
        name: "pid_zero",
        args: &["attach", "--pid", "0", "{spec}"],
        line: "invalid value '0' for '--pid <PID>': '0' is not a PID",
        ..DEFAULT
    },
    Case {
        name: "pid_beyond_pid_t",
        args: &["attach", "--pid", "4294967295", "{spec}"],
        line: "'4294967295' is not a PID",
        ..DEFAULT
    },
    Case {
        name: "pid_negative",
        args: &["attach", "--pid", "-1", "{spec}"],
        line: "'-1' is not a PID",
        ..DEFAULT
    },
    Case {
        name: "pid_not_a_number",
        args: &["attach", "--pid", "gateway", "{spec}"],
        line: "'gateway' is not a PID: give the number of a running process",
        ..DEFAULT
    },
    Case {
        name: "pid_protected_even_from_root",
        args: &["attach", "--pid", "1", "{spec}"],
        line: "the kernel refuses access to PID 1 even though this observer runs with CAP_SYS_PTRACE",
        requires: Some(pid_1_refuses_root),
        ..DEFAULT
    },
    Case {
        name: "pid_of_a_kernel_thread",
        args: &["attach", "--pid", "2", "{spec}"],
        line: "PID 2 has no executable (a kernel thread or a zombie)",
        requires: Some(pid_2_is_kthreadd),
        ..DEFAULT
    },
    Case {
        name: "pid_of_a_thread",
        args: &["attach", "--pid", "{tid}", "{spec}"],
        line: "{tid} is a thread of process {pid}, not a process: attach to --pid {pid}",
        ..DEFAULT
    },
    Case {
        name: "no_privileges",
        args: &["attach", "--pid", "{pid}", "{spec}"],
        runs_as: RunsAs::Nobody,
        line: "needs root, or CAP_BPF and CAP_PERFMON",
        ..DEFAULT
    },
    // The functions.
    Case {
        name: "alloc_that_does_not_exist",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alloc", "nope::Pool::allocate"],
        line: "no function 'nope::Pool::allocate'",
        ..DEFAULT
    },
    Case {
        name: "alloc_misspelled",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alloc", "BufPool::alocate"],
        line: "did you mean bufpool::BufPool::allocate",
        ..DEFAULT
    },
    Case {
        name: "alloc_ambiguous",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alloc", "allocate"],
        line: "'allocate' is ambiguous",
        ..DEFAULT
    },
    Case {
        name: "alloc_inlined_everywhere",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alloc", "leaky_gateway::protocol::parse_header"],
        line: "inlined at",
        ..DEFAULT
    },
    Case {
        name: "alloc_empty",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alloc", " "],
        line: "the function path is empty",
        ..DEFAULT
    },
    Case {
        name: "alloc_with_control_characters",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alloc", "bufpool::\u{1b}[2JBufPool"],
        line: "contains control characters",
        ..DEFAULT
    },
    Case {
        name: "alloc_path_too_long",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alloc", "{long-path}"],
        line: "the function path is 5000 bytes long, at most 4096 are accepted",
        ..DEFAULT
    },
    Case {
        name: "library_that_exists_nowhere",
        args: &[
            "attach", "--pid", "{pid}", "{spec}",
            "--alloc", "libnothere.so:pool_get", "--release", "libnothere.so:pool_put",
        ],
        line: "process {pid} maps no executable object named \"libnothere.so\" (see /proc/{pid}/maps), and its dynamic linker would not find one to load",
        ..DEFAULT
    },
    // The locations.
    Case {
        name: "release_id_reads_a_return_value",
        args: &["attach", "--pid", "{pid}", "{spec}", "--release-id", "ret"],
        line: "reads ret",
        ..DEFAULT
    },
    Case {
        name: "release_id_reads_the_second_return_register",
        args: &["attach", "--pid", "{pid}", "{spec}", "--release-id", "*(ret.1+8)"],
        line: "reads ret",
        ..DEFAULT
    },
    Case {
        name: "alloc_id_names_a_third_return_register",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alloc-id", "ret.2"],
        line: "bad location 'ret.2': ret.N: only ret.0 (rax) and ret.1 (rdx) hold a returned value",
        ..DEFAULT
    },
    Case {
        name: "size_in_a_register_that_is_no_argument",
        args: &["attach", "--pid", "{pid}", "{spec}", "--size", "*(arg9+8)"],
        line: "bad location '*(arg9+8)'",
        ..DEFAULT
    },
    Case {
        name: "size_dereferenced_too_deep",
        args: &["attach", "--pid", "{pid}", "{spec}", "--size", "*****arg0"],
        line: "more than 4 dereferences, at most 4 are supported",
        ..DEFAULT
    },
    Case {
        name: "size_negative_number",
        args: &["attach", "--pid", "{pid}", "{spec}", "--size", "-8"],
        line: "bad location '-8'",
        ..DEFAULT
    },
    Case {
        name: "auto_locations_without_full_dwarf",
        args: &["attach", "--pid", "{pid}", "{spec}", "--size", "auto"],
        line: "`auto` locations need DWARF with types",
        ..DEFAULT
    },
    // The session's numbers.
    Case {
        name: "interval_rounding_to_nothing",
        args: &["attach", "--pid", "{pid}", "{spec}", "--interval", "0.0000000001"],
        line: "'0.0000000001' is too short: at least 100ms",
        ..DEFAULT
    },
    Case {
        name: "interval_zero",
        args: &["attach", "--pid", "{pid}", "{spec}", "--interval", "0s"],
        line: "'0s' must be positive",
        ..DEFAULT
    },
    Case {
        name: "duration_beyond_any_clock",
        args: &["attach", "--pid", "{pid}", "{spec}", "--duration", "99999999999999999999999"],
        line: "'99999999999999999999999' is too long: at most 8760h",
        ..DEFAULT
    },
    Case {
        name: "duration_in_days",
        args: &["attach", "--pid", "{pid}", "{spec}", "--duration", "2d"],
        line: "unknown unit 'd' in '2d': use ms, s, m or h",
        ..DEFAULT
    },
    Case {
        name: "duration_not_a_duration",
        args: &["attach", "--pid", "{pid}", "{spec}", "--duration", "NaN"],
        line: "'NaN' is not a duration",
        ..DEFAULT
    },
    Case {
        name: "older_than_negative",
        args: &["attach", "--pid", "{pid}", "{spec}", "--older-than", "-1s"],
        line: "'-1s' must be positive",
        ..DEFAULT
    },
    Case {
        name: "max_live_zero",
        args: &["attach", "--pid", "{pid}", "{spec}", "--max-live", "0"],
        line: "'0' is not a whole number from 1 to 16777216",
        ..DEFAULT
    },
    Case {
        name: "max_live_absurd",
        args: &["attach", "--pid", "{pid}", "{spec}", "--max-live", "4294967295"],
        line: "'4294967295' is not a whole number from 1 to 16777216",
        ..DEFAULT
    },
    Case {
        name: "top_zero",
        args: &["attach", "--pid", "{pid}", "{spec}", "--top", "0"],
        line: "'0' is not a whole number from 1 to",
        ..DEFAULT
    },
    Case {
        name: "frames_beyond_any_integer",
        args: &["attach", "--pid", "{pid}", "{spec}", "--frames", "99999999999999999999999"],
        line: "'99999999999999999999999' is not a whole number from 1 to",
        ..DEFAULT
    },
    Case {
        name: "group_depth_negative",
        args: &["attach", "--pid", "{pid}", "{spec}", "--group-depth", "-1"],
        line: "'-1' is not a whole number from 0 to",
        ..DEFAULT
    },
    Case {
        name: "format_unknown",
        args: &["attach", "--pid", "{pid}", "{spec}", "--format", "xml"],
        line: "invalid value 'xml' for '--format <FORMAT>' [possible values: text, json, folded, pprof]",
        ..DEFAULT
    },
    Case {
        name: "pprof_without_output",
        args: &["attach", "--pid", "{pid}", "{spec}", "--format", "pprof"],
        line: "--format pprof writes a binary profile with every report: give --output FILE, which each report replaces",
        ..DEFAULT
    },
    Case {
        name: "metrics_address_bad",
        args: &["attach", "--pid", "{pid}", "{spec}", "--metrics", "localhost:9464"],
        line: "invalid value 'localhost:9464' for '--metrics <ADDR>': 'localhost:9464' is not an address to serve metrics on: give a port (e.g. 9464, served on 127.0.0.1), HOST:PORT or [IPV6]:PORT",
        ..DEFAULT
    },
    Case {
        name: "max_overhead_zero",
        args: &["attach", "--pid", "{pid}", "{spec}", "--max-overhead", "0"],
        line: "invalid value '0' for '--max-overhead <PCT>': '0' is out of range: a percentage of one CPU above 0 and at most 10000",
        ..DEFAULT
    },
    // The command line itself.
    Case {
        name: "option_misspelled",
        args: &["attach", "--pid", "{pid}", "{spec}", "--alocc", "x"],
        line: "unexpected argument '--alocc' found (a similar argument exists: '--alloc'); see 'observer attach --help'",
        ..DEFAULT
    },
    Case {
        name: "subcommand_unknown",
        args: &["detach", "--pid", "{pid}"],
        line: "unrecognized subcommand 'detach' (a similar subcommand exists: 'attach'); see 'observer --help'",
        ..DEFAULT
    },
    Case {
        name: "required_options_missing",
        args: &["attach", "--pid", "{pid}"],
        line: "the following required arguments were not provided: --alloc <FUNCTION> --size <LOC>",
        ..DEFAULT
    },
    Case {
        name: "option_given_twice",
        args: &["attach", "--pid", "{pid}", "--pid", "{pid}", "{spec}"],
        line: "the argument '--pid <PID>' cannot be used multiple times",
        ..DEFAULT
    },
    // Talking to a session.
    Case {
        name: "mark_without_a_session",
        args: &["mark", "before", "--control", "{dir}/none.sock"],
        line: "cannot reach the observer session at {dir}/none.sock",
        ..DEFAULT
    },
    Case {
        name: "report_without_a_session",
        args: &["report", "--pid", "{pid}"],
        line: "cannot reach the observer session at /run/observer/{pid}.sock",
        ..DEFAULT
    },
    Case {
        name: "diff_without_a_session",
        args: &["diff", "before", "after", "--pid", "{pid}"],
        line: "cannot reach the observer session at /run/observer/{pid}.sock",
        ..DEFAULT
    },
    Case {
        name: "diff_per_zero_cycles",
        args: &["diff", "before", "--per", "0", "--pid", "{pid}"],
        line: "'0' is not a whole number from 1 to",
        ..DEFAULT
    },
    Case {
        name: "mark_with_an_empty_name",
        args: &["mark", "", "--pid", "{pid}"],
        line: "the mark name is empty",
        ..DEFAULT
    },
    Case {
        name: "mark_with_a_terminal_escape",
        args: &["mark", "\u{1b}[31mred", "--pid", "{pid}"],
        line: "contains control characters",
        ..DEFAULT
    },
    Case {
        name: "mark_name_too_long",
        args: &["mark", "a-mark-name-that-goes-on-and-on-far-longer-than-anyone-would-type-it", "--pid", "{pid}"],
        line: "the mark name is too long",
        ..DEFAULT
    },
    Case {
        name: "mark_and_control_both_given",
        args: &["mark", "before", "--pid", "{pid}", "--control", "{dir}/s.sock"],
        line: "the argument '--pid <PID>' cannot be used with '--control <PATH>'",
        ..DEFAULT
    },
    // observer run.
    Case {
        name: "run_without_a_command",
        args: &["run", "{spec}"],
        line: "the following required arguments were not provided: <CMD>...",
        ..DEFAULT
    },
    Case {
        name: "run_a_command_that_does_not_exist",
        args: &["run", "{spec}", "--", "no-such-command-xyz"],
        line: "cannot run 'no-such-command-xyz': not found in PATH",
        ..DEFAULT
    },
    Case {
        name: "run_with_a_missing_baseline",
        args: &["run", "{spec}", "--baseline", "{dir}/missing.json", "--", "{targets}/leaky-gateway"],
        line: "cannot read baseline {dir}/missing.json",
        ..DEFAULT
    },
    Case {
        name: "run_with_a_threshold_beyond_i64",
        args: &["run", "{spec}", "--max-bytes", "9223372036854775808", "--", "{targets}/leaky-gateway"],
        line: "'9223372036854775808' is not a whole number from 0 to 9223372036854775807",
        ..DEFAULT
    },
    Case {
        name: "run_with_a_negative_threshold",
        args: &["run", "{spec}", "--max-buffers", "-1", "--", "{targets}/leaky-gateway"],
        line: "'-1' is not a whole number from 0 to",
        ..DEFAULT
    },
    // observer inspect.
    Case {
        name: "inspect_a_missing_binary",
        args: &["inspect", "{dir}/missing", "BufPool::allocate"],
        line: "cannot read {dir}/missing",
        ..DEFAULT
    },
    Case {
        name: "inspect_without_functions",
        args: &["inspect", "{targets}/leaky-gateway"],
        line: "the following required arguments were not provided: <FUNCTIONS>...",
        ..DEFAULT
    },
    // Stop signals before the session starts.
    Case {
        name: "sigint_while_planning",
        args: &["attach", "--pid", "{pid}", "{spec}"],
        interrupt: Some(Interrupt {
            signal: libc::SIGINT,
            at: Moment::HandlersInstalled,
        }),
        line: "interrupted by SIGINT while reading the target's symbols and planning the probes; nothing was left attached",
        ..DEFAULT
    },
    Case {
        name: "sigterm_while_planning",
        args: &["attach", "--pid", "{pid}", "{spec}"],
        interrupt: Some(Interrupt {
            signal: libc::SIGTERM,
            at: Moment::HandlersInstalled,
        }),
        line: "interrupted by SIGTERM while reading the target's symbols and planning the probes; nothing was left attached",
        ..DEFAULT
    },
    Case {
        name: "sighup_while_planning",
        args: &["attach", "--pid", "{pid}", "{spec}"],
        interrupt: Some(Interrupt {
            signal: libc::SIGHUP,
            at: Moment::HandlersInstalled,
        }),
        line: "interrupted by SIGHUP while reading the target's symbols and planning the probes; nothing was left attached",
        ..DEFAULT
    },
    Case {
        name: "sigint_while_loading_and_attaching",
        args: &["attach", "--pid", "{pid}", "{spec}"],
        interrupt: Some(Interrupt {
            signal: libc::SIGINT,
            at: Moment::Loading,
        }),
        line: "interrupted by SIGINT while loading and attaching the eBPF programs; nothing was left attached",
        ..DEFAULT
    },
    Case {
        name: "sigterm_while_loading_and_attaching",
        args: &["attach", "--pid", "{pid}", "{spec}"],
        interrupt: Some(Interrupt {
            signal: libc::SIGTERM,
            at: Moment::Loading,
        }),
        line: "interrupted by SIGTERM while loading and attaching the eBPF programs; nothing was left attached",
        ..DEFAULT
    },
    Case {
        // The command is forked and waits for the probes: it must never run.
        name: "run_sigint_while_planning",
        args: &["run", "{spec}", "--", "{targets}/leaky-gateway", "--listen", "127.0.0.1:0"],
        interrupt: Some(Interrupt {
            signal: libc::SIGINT,
            at: Moment::HandlersInstalled,
        }),
        line: "interrupted by SIGINT while reading the target's symbols and planning the probes; nothing was left attached",
        ..DEFAULT
    },
    Case {
        name: "run_sigint_while_loading_and_attaching",
        args: &["run", "{spec}", "--", "{targets}/leaky-gateway", "--listen", "127.0.0.1:0"],
        interrupt: Some(Interrupt {
            signal: libc::SIGINT,
            at: Moment::Loading,
        }),
        line: "interrupted by SIGINT while loading and attaching the eBPF programs; nothing was left attached",
        ..DEFAULT
    },
];

/// One test per row.
pub fn trials() -> Vec<Trial> {
    CASES
        .iter()
        .map(|case| {
            let name = format!("errors::{}", case.name);
            harness::conditional_trial(&name, Needs::Ebpf, case.requires, move || run_case(case))
        })
        .collect()
}

fn pid_1_refuses_root() -> Result<(), String> {
    match std::fs::read_link("/proc/1/exe") {
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        other => Err(format!(
            "PID 1 is not protected from root on this machine (readlink /proc/1/exe: {other:?})"
        )),
    }
}

fn pid_2_is_kthreadd() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/2/status").unwrap_or_default();
    if status.lines().next() == Some("Name:\tkthreadd") {
        Ok(())
    } else {
        Err("PID 2 is not the kernel's kthreadd here (a PID namespace?)".into())
    }
}

/// How many times a moment of the start is aimed at before giving up: the
/// observer may get past it between the test seeing it and the signal
/// arriving, and then the attempt says nothing.
const ATTEMPTS: usize = 5;

fn run_case(case: &Case) {
    let gateway = Gateway::start();
    let probed = ProbedBytes::of(gateway.pid());
    // A killed observer of an earlier target with this PID may have left
    // one; a refused run must neither create nor touch it.
    let socket_before = socket_identity(&format!("/run/observer/{}.sock", gateway.pid()));
    let dir = CaseDir::new(case.name);
    let context = Context::of(&gateway, &dir);
    let args = context.arguments(case.args);
    let before = dir.listing();
    let mut attempt = 0;
    let run = loop {
        attempt += 1;
        let run = ObserverRun::start(&args, case, &dir).finish(case.interrupt);
        if run.started_a_session() && attempt < ATTEMPTS {
            // Missed the moment: the session started before the signal.
            // That is fine behaviour, just not this case's.
            assert_eq!(run.status.code(), Some(0), "{:?}", run.stderr);
            continue;
        }
        break run;
    };

    let expected = context.fill(case.line);
    assert_eq!(
        run.status.code(),
        Some(2),
        "{}: {:?}",
        case.name,
        run.stderr
    );
    assert_eq!(
        run.stderr.len(),
        1,
        "{}: one line: {:?}",
        case.name,
        run.stderr
    );
    let line = &run.stderr[0];
    assert!(
        line.starts_with("observer: error: "),
        "{}: {line}",
        case.name
    );
    assert!(
        line.contains(&expected),
        "{}: expected '{expected}' in '{line}'",
        case.name
    );
    assert!(
        run.left_behind.is_empty(),
        "{}: processes of the run still alive: {:?}",
        case.name,
        run.left_behind
    );
    probed.assert_unchanged(case.name);
    let socket = format!("/run/observer/{}.sock", gateway.pid());
    assert_eq!(
        socket_identity(&socket),
        socket_before,
        "{}: {socket} left or changed",
        case.name
    );
    let after = dir.listing();
    assert_eq!(
        without(before, case.writes),
        without(after, case.writes),
        "{}: files changed in {}",
        case.name,
        dir.path.display()
    );
    gateway.chat(2, 1);
    assert_eq!(
        gateway.stop(),
        2,
        "{}: nothing attached, the gateway served as before",
        case.name
    );
}

/// The inode of the file at `path`, if any.
fn socket_identity(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// What the placeholders of a row stand for.
struct Context {
    pid: String,
    tid: String,
    dir: String,
    targets: String,
}

impl Context {
    fn of(gateway: &Gateway, dir: &CaseDir) -> Self {
        Self {
            pid: gateway.pid().to_string(),
            tid: a_thread_of(gateway.pid()).to_string(),
            dir: dir.path.display().to_string(),
            targets: targets_dir().display().to_string(),
        }
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{pid}", &self.pid)
            .replace("{tid}", &self.tid)
            .replace("{dir}", &self.dir)
            .replace("{targets}", &self.targets)
    }

    /// The row's arguments with `{spec}` expanded (without the options the
    /// row gives itself) and every placeholder filled.
    fn arguments(&self, row: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for &arg in row {
            match arg {
                "{spec}" => {
                    for pair in SPEC.chunks(2) {
                        if !row.contains(&pair[0]) {
                            out.extend(pair.iter().map(|s| s.to_string()));
                        }
                    }
                }
                "{long-path}" => out.push(format!("a::{}", "b".repeat(4997))),
                _ => out.push(self.fill(arg)),
            }
        }
        out
    }
}

/// A thread of `pid` other than its main thread (the gateway runs a tokio
/// runtime with workers).
fn a_thread_of(pid: u32) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .find(|&tid| tid != pid)
        .expect("the gateway has threads")
}

/// A fresh working directory for one case, removed afterwards.
struct CaseDir {
    path: PathBuf,
}

impl CaseDir {
    fn new(case: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("observer-e2e-errors-{}-{case}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        // Something to notice if it is changed or removed.
        std::fs::write(path.join("existing.txt"), "left alone\n").unwrap();
        Self { path }
    }

    /// Every entry under the directory: size and modification time.
    fn listing(&self) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
        let mut listing = BTreeMap::new();
        let mut pending = vec![self.path.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
                let metadata = entry.metadata().unwrap();
                if metadata.is_dir() {
                    pending.push(entry.path());
                }
                let relative = entry.path().strip_prefix(&self.path).unwrap().to_path_buf();
                listing.insert(relative, (metadata.len(), metadata.modified().ok()));
            }
        }
        listing
    }
}

impl Drop for CaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn without(
    mut listing: BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
    writes: Option<&str>,
) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    if let Some(file) = writes {
        listing.remove(Path::new(file));
    }
    listing
}

/// One run of the observer for a case.
struct ObserverRun {
    child: Guarded,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
    /// Set in the environment of the observer and so of everything it
    /// starts, to find what it left running.
    marker: String,
}

/// How a run ended.
struct Ended {
    status: ExitStatus,
    stderr: Vec<String>,
    /// Processes that carry the run's marker after it exited.
    left_behind: Vec<u32>,
}

impl Ended {
    fn started_a_session(&self) -> bool {
        self.stderr
            .iter()
            .any(|line| line.starts_with("observer: attached"))
    }
}

/// A run that hangs is a failure, but machines are slow: generous.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// A stop signal must end the observer at once; generous all the same.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl ObserverRun {
    fn start(args: &[String], case: &Case, dir: &CaseDir) -> Self {
        let marker = format!(
            "{}-{}-{}",
            case.name,
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let mut command = match case.runs_as {
            RunsAs::Root => observer(),
            RunsAs::Nobody => {
                let mut setpriv = Command::new("setpriv");
                setpriv
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .args(["--inh-caps=-all", "--bounding-set=-all"])
                    .arg(observer_path());
                setpriv
            }
        };
        let mut child = command
            .args(args)
            .current_dir(&dir.path)
            .env("OBSERVER_E2E_RUN", &marker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start observer");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child: Guarded(child),
            stderr,
            reader,
            marker,
        }
    }

    /// Sends the interrupt at its moment, if any, and waits for the end.
    fn finish(mut self, interrupt: Option<Interrupt>) -> Ended {
        let timeout = match interrupt {
            Some(interrupt) => {
                if wait_for(&mut self.child.0, interrupt.at) {
                    signal(self.child.0.id(), interrupt.signal);
                }
                STOP_TIMEOUT
            }
            None => RUN_TIMEOUT,
        };
        let status = wait_with_timeout(&mut self.child.0, timeout).unwrap_or_else(|| {
            panic!(
                "observer still running after {timeout:?}: {:?}",
                self.stderr.lock().unwrap()
            )
        });
        self.reader.join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        Ended {
            status,
            stderr,
            left_behind: processes_marked(&self.marker),
        }
    }
}

/// Polls until `moment` is reached; false if the observer exited first.
fn wait_for(child: &mut Child, moment: Moment) -> bool {
    let pid = child.id();
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let reached = match moment {
            Moment::HandlersInstalled => catches_stop_signals(pid),
            Moment::Loading => holds_bpf_maps(pid),
        };
        if reached {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "the observer never reached {moment:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Whether `pid` has handlers for SIGINT, SIGTERM, SIGHUP and SIGUSR1
/// (installed together, SIGUSR1 last).
fn catches_stop_signals(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let caught = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1]
        .iter()
        .all(|&signal| caught & (1 << (signal - 1)) != 0)
}

/// Whether `pid` holds an eBPF map: it is loading the programs.
fn holds_bpf_maps(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-map")
    })
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Processes whose environment carries `OBSERVER_E2E_RUN=marker`.
fn processes_marked(marker: &str) -> Vec<u32> {
    let needle = format!("OBSERVER_E2E_RUN={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&byte| byte == 0)
                    .any(|variable| variable == needle.as_bytes())
            })
        })
        .collect()
}
