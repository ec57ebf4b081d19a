//! `observer run` as a CI gate: the script in tests/ci launches the gateway
//! under the observer, drives connect/disconnect cycles and stops it; the
//! observer's exit status is the verdict.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

pub const CYCLES: usize = 40;

pub struct Run {
    pub code: Option<i32>,
    pub stderr: String,
    pub report: Value,
}

fn leak_check(bin: &Path, extra: &[&str]) -> Run {
    leak_check_with(&observer_path(), bin, extra)
}

/// The CI script run with the observer binary `observer`.
pub fn leak_check_with(observer: &Path, bin: &Path, extra: &[&str]) -> Run {
    leak_check_in(&[], observer, bin, extra)
}

/// The CI script run by the command `wrapper` (none: directly).
pub fn leak_check_in(wrapper: &[&str], observer: &Path, bin: &Path, extra: &[&str]) -> Run {
    let dir = scratch();
    let report_path = dir.join("report.json");
    let script = repo_file("tests/ci/gateway-leak-check.sh");
    let mut command = match wrapper {
        [] => Command::new(&script),
        [program, arguments @ ..] => {
            let mut command = Command::new(program);
            command.args(arguments).arg(&script);
            command
        }
    };
    let output = command
        .arg(observer)
        .arg(bin)
        .arg(CYCLES.to_string())
        .arg(&report_path)
        .args(extra)
        .output()
        .expect("run the CI script");
    let text = std::fs::read_to_string(&report_path).unwrap_or_default();
    Run {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

fn scratch() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("observer-e2e-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn leaky_gateway_fails_the_run_with_the_disconnect_site() {
    let dir = scratch();
    let chart = dir.join("chart.svg");
    let flamegraph = dir.join("flame.svg");
    let run = leak_check(
        &targets_dir(),
        &[
            "--chart",
            chart.to_str().unwrap(),
            "--flamegraph",
            flamegraph.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(1), "leak found means exit 1: {}", run.stderr);
    assert!(
        run.stderr.contains("leak found: 40 buffers"),
        "{}",
        run.stderr
    );
    let verdict = &run.report["verdict"];
    assert_eq!(verdict["leak_found"], true);
    assert_eq!(int(&verdict["counted_buffers"]), CYCLES as i64);
    assert_eq!(int(&verdict["counted_bytes"]), CYCLES as i64 * 256);
    assert_eq!(
        run.report["command"]["exit_code"], 0,
        "the gateway stopped gracefully"
    );
    // Tables for the program and its libraries were ready before it ran.
    assert_eq!(run.report["counters"]["stacks_broken"], 0);
    let leak = site_through(&run.report, "say_goodbye");
    assert_eq!(int(&leak["judgement"]["counted_buffers"]), CYCLES as i64);
    for svg in [&chart, &flamegraph] {
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(
            text.starts_with("<svg") || text.starts_with("<?xml"),
            "{}",
            svg.display()
        );
    }
    assert!(std::fs::read_to_string(&flamegraph)
        .unwrap()
        .contains("say_goodbye"));

    // The same run as a baseline: no growth over it, no failure.
    let baseline = scratch().join("baseline.json");
    std::fs::write(&baseline, serde_json::to_string(&run.report).unwrap()).unwrap();
    let again = leak_check(&targets_dir(), &["--baseline", baseline.to_str().unwrap()]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(int(&again.report["verdict"]["counted_buffers"]), 0);
}

pub fn suppressed_leak_passes() {
    let suppressions = scratch().join("suppressions.txt");
    std::fs::write(
        &suppressions,
        "# known, accepted until the fix ships\nleak:say_goodbye\n",
    )
    .unwrap();
    let run = leak_check(
        &targets_dir(),
        &["--suppressions", suppressions.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let verdict = &run.report["verdict"];
    assert_eq!(verdict["leak_found"], false);
    assert_eq!(verdict["suppressed_sites"], 1);
    let leak = site_through(&run.report, "say_goodbye");
    assert_eq!(
        int(&leak["buffers"]),
        CYCLES as i64,
        "still reported, just not counted"
    );
    assert_eq!(leak["judgement"]["suppressed_by"], "say_goodbye");
}

pub fn fixed_gateway_passes_without_suppressions() {
    let run = leak_check(&fixed_targets_dir(), &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(int(&run.report["outstanding"]["buffers"]), 0);
    assert_eq!(run.report["verdict"]["leak_found"], false);
    assert!(int(&run.report["counters"]["allocations"]) >= CYCLES as i64 * 4);
}

pub fn failing_command_and_bad_gate_files_are_errors() {
    let gateway = targets_dir().join("leaky-gateway");
    let mut args: Vec<&str> = vec!["run"];
    args.extend(SPEC);
    args.extend(["--", gateway.to_str().unwrap(), "--no-such-flag"]);
    let (code, stdout, stderr) = observer_command(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("exited with status 2"), "{stderr}");
    assert!(
        stdout.contains("command: "),
        "the report is still printed: {stdout}"
    );

    let bad = scratch().join("bad.txt");
    std::fs::write(&bad, "leek:typo\n").unwrap();
    let mut args: Vec<&str> = vec!["run", "--suppressions", bad.to_str().unwrap()];
    args.extend(SPEC);
    args.extend(["--", gateway.to_str().unwrap()]);
    let (code, _, stderr) = observer_command(&args);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("line 1: expected 'leak:PATTERN'"),
        "{stderr}"
    );

    let (code, _, stderr) = observer_command(&[
        "run",
        "--alloc",
        "a",
        "--size",
        "1",
        "--alloc-id",
        "arg0",
        "--release",
        "r",
        "--release-id",
        "arg1",
        "--",
        "/no/such/server",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot run '/no/such/server'"), "{stderr}");
}
