//! pprof profiles, judged by Go's own `go tool pprof` (Debian's
//! golang-go): the disconnect leak on top with exactly its bytes, the four
//! heap sample types, inlined frames, and `-diff_base` between two marks.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const LEAKED_PER_SESSION: i64 = 256;

/// `go tool pprof ARGS`: its stdout; panics unless it succeeds.
fn pprof(args: &[&str]) -> String {
    let output = Command::new(tool("go"))
        .args(["tool", "pprof"])
        .args(args)
        // Nothing to fetch or symbolize: the profile carries its names.
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "go tool pprof {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The rows of `-top` with `-unit=B`: (flat bytes, function).
fn top_rows(text: &str) -> Vec<(i64, String)> {
    text.lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let flat = fields.next()?.strip_suffix('B')?.parse().ok()?;
            let function = fields.nth(4)?.to_string();
            Some((flat, function))
        })
        .collect()
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

pub fn go_tool_pprof_reads_the_leak_with_its_exact_bytes() {
    let gateway = Gateway::start();
    let pid = gateway.pid();
    // Leaks before the attach are not the observer's to report.
    gateway.chat(30, 2);
    let mut observer = Observer::attach(pid, &[]);
    let cycles = 100;
    gateway.chat(cycles, 2);
    let dir = tempfile::tempdir().unwrap();
    let profile = file(dir.path(), "heap.pb.gz");
    observer.control(pid, &["report", "--format", "pprof", "--output", &profile]);
    let report = observer.report();

    // The default sample type is inuse_space; the leak is the top entry.
    let top = pprof(&["-top", "-unit=B", &profile]);
    assert!(top.contains("Type: inuse_space"), "{top}");
    let rows = top_rows(&top);
    assert_eq!(
        rows[0],
        (
            cycles as i64 * LEAKED_PER_SESSION,
            "leaky_gateway::codec::Encoder::encode".to_string()
        ),
        "{top}"
    );
    // The build id of the main mapping, and the observed period.
    let build_id = report["target"]["build_id"].as_str().unwrap();
    assert!(top.contains(&format!("Build ID: {build_id}")), "{top}");
    assert!(top.contains("Duration: "), "{top}");

    // The traces holding the bytes (one per kernel stack: the scheduler
    // reaches the task from several places) all go through say_goodbye,
    // inlined into send's caller, down to the thread's start.
    let traces = pprof(&["-traces", "-unit=B", &profile]);
    let holding: Vec<(i64, &str)> = traces
        .split("-----------+-------------------------------------------------------")
        .skip(1)
        .filter_map(|trace| {
            let value = trace.split_whitespace().next()?.strip_suffix('B')?;
            Some((value.parse().ok()?, trace))
        })
        .filter(|&(value, _)| value > 0)
        .collect();
    let held: i64 = holding.iter().map(|&(value, _)| value).sum();
    assert_eq!(held, cycles as i64 * LEAKED_PER_SESSION, "{traces}");
    for (_, trace) in &holding {
        let first = trace.lines().find(|l| !l.trim().is_empty()).unwrap();
        assert!(
            first.ends_with("leaky_gateway::codec::Encoder::encode"),
            "{trace}"
        );
        for function in [
            "leaky_gateway::session::Session::send::{{closure}}",
            "leaky_gateway::session::Session::say_goodbye::{{closure}} (inline)",
            "start_thread",
        ] {
            assert!(trace.contains(function), "{function} not in\n{trace}");
        }
        assert!(!trace.contains("converse"), "{trace}");
    }

    // -raw: file:line of the allocating call, and all four sample types
    // with the report's exact totals.
    let raw = pprof(&["-raw", &profile]);
    assert!(
        raw.contains(
            "alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes[dflt]"
        ),
        "{raw}"
    );
    let line = source_line("tests/leaky-gateway/src/codec.rs", ".allocate(");
    assert!(
        raw.contains(&format!("tests/leaky-gateway/src/codec.rs:{line}")),
        "{raw}"
    );
    let total = |index: &str| -> i64 {
        let text = pprof(&[
            "-top",
            "-unit=B",
            &format!("-sample_index={index}"),
            &profile,
        ]);
        let rows = top_rows(&text);
        rows.iter().map(|(flat, _)| flat).sum()
    };
    let allocated: i64 = sites(&report).iter().map(|s| int(&s["total_bytes"])).sum();
    assert_eq!(total("alloc_space"), allocated);
    assert_eq!(total("inuse_space"), int(&report["outstanding"]["bytes"]));
    let inuse_objects = pprof(&["-top", "-sample_index=inuse_objects", &profile]);
    assert!(
        inuse_objects.contains(&format!("{cycles}   100%")),
        "{inuse_objects}"
    );
    let (status, _) = observer.stop();
    assert!(status.success());
}

pub fn diff_base_between_two_marks_shows_the_growth_per_cycle() {
    let gateway = Gateway::start();
    let pid = gateway.pid();
    let observer = Observer::attach(pid, &[]);
    gateway.chat(20, 2);
    observer.control(pid, &["mark", "before"]);
    let cycles = 50;
    gateway.chat(cycles, 2);
    observer.control(pid, &["mark", "after"]);
    // Sessions after the second mark must not show in its profile.
    gateway.chat(7, 1);
    let dir = tempfile::tempdir().unwrap();
    let (before, after, diff) = (
        file(dir.path(), "before.pb.gz"),
        file(dir.path(), "after.pb.gz"),
        file(dir.path(), "diff.pb.gz"),
    );
    for (mark, path) in [("before", &before), ("after", &after)] {
        observer.control(
            pid,
            &[
                "report", "--format", "pprof", "--mark", mark, "--output", path,
            ],
        );
    }
    let growth = pprof(&["-top", "-unit=B", "-diff_base", &before, &after]);
    let rows = top_rows(&growth);
    let expected = cycles as i64 * LEAKED_PER_SESSION;
    assert_eq!(
        rows[0],
        (
            expected,
            "leaky_gateway::codec::Encoder::encode".to_string()
        ),
        "{growth}"
    );
    assert_eq!(expected / cycles as i64, LEAKED_PER_SESSION, "per cycle");
    // The same change as one profile of the differences.
    observer.control(
        pid,
        &[
            "diff", "before", "after", "--format", "pprof", "--output", &diff,
        ],
    );
    let rows = top_rows(&pprof(&["-top", "-unit=B", &diff]));
    assert_eq!(rows[0].0, expected);
    let (code, _, stderr) = observer_command(&[
        "report",
        "--format",
        "json",
        "--mark",
        "before",
        "--pid",
        &pid.to_string(),
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--mark gives the profile at a mark"),
        "{stderr}"
    );
    let (status, _) = observer.stop();
    assert!(status.success());
}

/// `attach --format pprof` writes every report to --output, replacing it;
/// without --output it is refused before anything is attached.
pub fn attach_writes_each_profile_to_its_output() {
    let gateway = Gateway::start();
    let pid = gateway.pid().to_string();
    let (code, _, stderr) = observer_command(
        &[
            &["attach", "--pid", &pid][..],
            &SPEC,
            &["--format", "pprof"],
        ]
        .concat(),
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("give --output FILE"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let profile = file(dir.path(), "live.pb.gz");
    let mut child = observer()
        .args(["attach", "--pid", &pid])
        .args(SPEC)
        .args(["--format", "pprof", "--output", &profile])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let child = Guarded(child);
    while !stderr
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("observer attaches")
        .starts_with("observer: attached")
    {}
    gateway.chat(10, 1);
    signal(child.0.id(), libc::SIGUSR1);
    eventually("the profile is written", || Path::new(&profile).exists());
    let rows = top_rows(&pprof(&["-top", "-unit=B", &profile]));
    assert_eq!(rows[0].0, 10 * LEAKED_PER_SESSION);
    gateway.chat(5, 1);
    signal(child.0.id(), libc::SIGINT);
    let mut child = child;
    assert!(child.0.wait().unwrap().success());
    let rows = top_rows(&pprof(&["-top", "-unit=B", &profile]));
    assert_eq!(
        rows[0].0,
        15 * LEAKED_PER_SESSION,
        "the final report replaced it"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left");
}
