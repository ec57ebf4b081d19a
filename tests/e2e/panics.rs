//! A panic that unwinds through a probed allocate must behave exactly as
//! it would unobserved: caught, and the target goes on. The corpus's
//! `budget` modes run a pool whose `allocate` panics for requests it
//! cannot serve, 2000 times, caught by `catch_unwind` or by tokio tasks,
//! on a stock release build; 25 malformed requests leak their buffer.

use serde_json::Value;

use crate::corpus::Corpus;
use crate::support::*;

const BUDGET: [&str; 10] = [
    "--alloc",
    "BudgetPool::allocate",
    "--size",
    "512",
    "--alloc-id",
    RESULT_ID,
    "--release",
    "BudgetPool::release",
    "--release-id",
    "*arg1",
];
const LEAKS: i64 = 25;
const PANICS: i64 = 2000;
/// Requests that allocate and give back, between the panicking ones.
const SERVED: i64 = 250;

/// Observes one run of a `budget` mode until the target exits on its own.
fn observe_until_exit(mode: &str, extra: &[&str]) -> (Value, std::process::ExitStatus) {
    let mut corpus = Corpus::start("stock", mode);
    let mut observer = Observer::attach_with(corpus.pid(), &BUDGET, extra);
    corpus.run();
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success(), "{:?}", observer_stderr_hint());
    (report, corpus.finish())
}

fn observer_stderr_hint() -> &'static str {
    "the observer's stderr is in the test output above"
}

fn assert_survived_exactly(mode: &str) {
    let (report, target) = observe_until_exit(mode, &[]);
    assert!(
        target.success(),
        "the target must end as it would unobserved: {target}"
    );
    let c = &report["counters"];
    assert_eq!(int(&c["alloc_unwound"]), PANICS, "{c:#}");
    assert_eq!(int(&c["allocations"]), SERVED + LEAKS, "{c:#}");
    assert_eq!(int(&c["alloc_calls"]), PANICS + SERVED + LEAKS, "{c:#}");
    assert_eq!(int(&c["releases"]), SERVED, "{c:#}");
    assert_accounting_balances(&report);
    assert_eq!(int(&report["outstanding"]["buffers"]), LEAKS);
    let site = &sites(&report)[0];
    assert_eq!(int(&site["buffers"]), LEAKS, "{report:#}");
    assert_eq!(int(&site["bytes"]), LEAKS * 512);
    assert!(has_frame(site, "BudgetPool::allocate"), "{site:#}");
    // Never the plain uretprobe, which would have aborted the target.
    let method = report["returns"]["method"].as_str().unwrap();
    assert_ne!(method, "uretprobe-unprotected");
    assert_ne!(method, "uretprobe");
}

pub fn panics_caught_by_catch_unwind_leave_the_target_running() {
    assert_survived_exactly("budget");
}

pub fn panics_in_tokio_tasks_leave_the_target_running() {
    assert_survived_exactly("budget-tokio");
}

/// The pool's release starts with a `lock`ed increment, which the kernel
/// refuses to probe: its direct call sites are probed instead.
pub fn a_release_the_kernel_cannot_probe_is_followed_at_its_call_sites() {
    let (report, _) = observe_until_exit("budget", &[]);
    let release = &report["probes"][1];
    assert_eq!(release["role"], "release");
    let copies = release["copies"].as_array().unwrap();
    assert!(!copies.is_empty());
    for copy in copies {
        assert!(
            copy["label"].as_str().unwrap().contains("called from"),
            "{copy:#}"
        );
    }
    assert_eq!(int(&report["counters"]["release_calls"]), SERVED);
}

/// Plain uretprobes where a panic can unwind through allocate are refused
/// with the reason and the flag that takes the risk; nothing attaches.
pub fn plain_uretprobes_are_refused_where_a_panic_would_abort_the_target() {
    let corpus = Corpus::start("stock", "budget");
    let pid = corpus.pid().to_string();
    let mut args = vec!["attach", "--pid", &pid];
    args.extend(BUDGET);
    args.extend(["--returns", "uretprobe", "--duration", "1s"]);
    let (code, _, stderr) = observer_command(&args);
    assert_eq!(code, Some(2), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains("a panic can unwind through") && line.contains("--accept-abort-on-panic"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let _ = corpus.finish();
}

/// `inspect` says whether a panic can unwind through a function and how
/// its returns would be observed.
pub fn inspect_tells_whether_panics_unwind_and_how_returns_are_seen() {
    let binary = crate::corpus::corpus_dir().join("corpus-stock/release/leak-corpus");
    let (code, stdout, stderr) = observer_command(&[
        "inspect",
        binary.to_str().unwrap(),
        "BudgetPool::allocate",
        "WaitingPool::give",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "panic unwinding: can pass through it (bufpool::budget::BudgetPool::allocate"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("as --alloc, returns observed by: "),
        "{stdout}"
    );
    assert!(stdout.contains("panic unwinding: "), "{stdout}");
}

/// Threads still inside allocate when the program ends are counted as
/// such; every call is accounted for.
pub fn calls_in_flight_when_their_thread_exits_are_counted() {
    let mut corpus = Corpus::start("stock", "exit-while-waiting");
    let spec = [
        "--alloc",
        "WaitingPool::take",
        "--size",
        "256",
        "--alloc-id",
        RESULT_ID,
        "--release",
        "WaitingPool::give",
        "--release-id",
        "*arg1",
    ];
    let observer = Observer::attach_with(corpus.pid(), &spec, &[]);
    corpus.run();
    let _ = corpus.finish();
    let (status, report) = observer.wait_exit();
    assert_eq!(status.code(), Some(2), "the target exited while attached");
    let c = &report["counters"];
    assert_eq!(int(&c["exited_in_allocate"]), 3, "{c:#}");
    assert_eq!(int(&c["allocations"]), LEAKS + 1, "{c:#}");
    assert_counters_add_up(&report);
    assert_eq!(int(&report["outstanding"]["buffers"]), LEAKS);
    assert!(
        report["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("in flight when their thread exited")),
        "{report:#}"
    );
}

/// A target that starts processes and replaces its program says so.
pub fn forks_and_execs_of_the_target_are_reported() {
    let mut corpus = Corpus::start("stock", "spawn");
    let spec = [
        "--alloc",
        "BufPool::allocate",
        "--size",
        RESULT_SIZE,
        "--alloc-id",
        RESULT_ID,
        "--release",
        "BufPool::release",
        "--release-id",
        "*arg1",
    ];
    let observer = Observer::attach_with(corpus.pid(), &spec, &[]);
    corpus.run();
    let _ = corpus.finish();
    let (_, report) = observer.wait_exit();
    let c = &report["counters"];
    assert_eq!(int(&c["forks"]), 2, "{c:#}");
    assert_eq!(int(&c["execs"]), 1, "{c:#}");
    assert_eq!(int(&report["outstanding"]["buffers"]), LEAKS);
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("started 2 processes")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("with exec 1 times")),
        "{warnings:?}"
    );
}

/// A program built with `panic = "abort"` cannot unwind at all: plain
/// uretprobes, the cheapest return probes, are proven safe.
pub fn a_program_that_cannot_unwind_gets_plain_uretprobes() {
    let mut corpus = Corpus::start("panic-abort", "deep");
    let spec = [
        "--alloc",
        "bufpool::BufPool::allocate",
        "--size",
        RESULT_SIZE,
        "--alloc-id",
        RESULT_ID,
        "--release",
        "bufpool::BufPool::release",
        "--release-id",
        "*arg1",
    ];
    let mut observer = Observer::attach_with(corpus.pid(), &spec, &[]);
    corpus.run();
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success());
    assert_eq!(
        report["returns"]["method"], "uretprobe",
        "{:#}",
        report["returns"]
    );
    assert!(
        report["returns"]["description"]
            .as_str()
            .unwrap()
            .contains("panic = \"abort\""),
        "{:#}",
        report["returns"]
    );
    assert_eq!(int(&report["outstanding"]["buffers"]), LEAKS);
    assert_accounting_balances(&report);
    let _ = corpus.finish();
}

/// Where the kernel lets the observer write the target's stack (not a
/// locked-down kernel), uretprobes are repaired when a panic unwinds:
/// every one of the 2000 panics had its return address put back, and the
/// target goes on.
pub fn repaired_uretprobes_let_panics_unwind() {
    let (report, target) = observe_until_exit("budget", &["--returns", "repair"]);
    assert!(target.success(), "{target}");
    assert_eq!(report["returns"]["method"], "uretprobe-with-repair");
    let c = &report["counters"];
    assert_eq!(int(&c["unwind_repairs"]), PANICS, "{c:#}");
    assert_eq!(int(&c["unwind_repair_failures"]), 0, "{c:#}");
    assert_eq!(int(&c["alloc_unwound"]), PANICS, "{c:#}");
    assert_eq!(int(&c["allocations"]), SERVED + LEAKS, "{c:#}");
    assert_accounting_balances(&report);
}

/// Requirement of [`repaired_uretprobes_let_panics_unwind`].
pub fn repair_is_allowed() -> Result<(), String> {
    observer::attach::repair::ability(None)
}
