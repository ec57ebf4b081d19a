//! Allocators observed where they live: libc's malloc and free probed in
//! the shared object the target maps (`libc.so.6:malloc`), on a C program
//! (`tests/allocators/libc-leak.c`) that leaks a known number of sessions.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{ChildStdin, Command, Stdio};

use serde_json::Value;

use crate::corpus::corpus_dir;
use crate::support::*;

/// What one round of `libc-leak` leaks: 25 sessions of 48 bytes, at
/// `open_session`, among 200 request buffers it releases.
const LEAKS: i64 = 25;
const LEAK_BYTES: i64 = 48;
const REQUESTS: i64 = 200;
const SOURCE: &str = "tests/allocators/libc-leak.c";

const LIBC_MALLOC: [&str; 10] = [
    "--alloc",
    "libc.so.6:malloc",
    "--release",
    "libc.so.6:free",
    "--size",
    "arg0",
    "--alloc-id",
    "ret",
    "--release-id",
    "arg0",
];

/// The running C program, waiting for `go` to serve one round.
struct CProgram {
    child: Guarded,
    stdin: ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl CProgram {
    fn start() -> Self {
        let binary = corpus_dir().join("allocators/libc-leak");
        let mut child = Command::new(&binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{}: {err}", binary.display()));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(stdout.next().unwrap().unwrap(), "ready");
        Self {
            child: Guarded(child),
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn serve(&mut self) {
        self.stdin.write_all(b"go\n").unwrap();
        let done = self.stdout.next().unwrap().unwrap();
        assert_eq!(done, format!("done: {LEAKS} leaked"));
    }
}

fn observe_round(spec: &[&str]) -> Value {
    let mut program = CProgram::start();
    let mut observer = Observer::attach_with(program.pid(), spec, &[]);
    program.serve();
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success());
    report
}

/// malloc and free probed in libc.so.6: the leaked sessions exactly, at
/// the C function that opened them, every request buffer released.
pub fn libc_malloc_in_the_shared_object_gives_the_exact_leak() {
    let report = observe_round(&LIBC_MALLOC);
    let counters = &report["counters"];
    assert_eq!(
        int(&counters["allocations"]),
        LEAKS + REQUESTS,
        "{counters:#}"
    );
    assert_eq!(int(&counters["releases"]), REQUESTS, "{counters:#}");
    assert_eq!(int(&counters["unknown_releases"]), 0, "{counters:#}");
    assert_eq!(int(&counters["reallocated_ids"]), 0, "{counters:#}");
    assert_accounting_balances(&report);
    assert_eq!(int(&report["outstanding"]["buffers"]), LEAKS, "{report:#}");
    assert_eq!(int(&report["outstanding"]["bytes"]), LEAKS * LEAK_BYTES);
    let site = site_through(&report, "open_session");
    assert_eq!(int(&site["buffers"]), LEAKS, "{site:#}");
    assert_eq!(int(&site["bytes"]), LEAKS * LEAK_BYTES, "{site:#}");
    let open = frames(site)
        .iter()
        .find(|f| f["function"] == "open_session")
        .unwrap();
    assert_eq!(
        open["line"],
        source_line(SOURCE, "sessions[i] = malloc(LEAK_BYTES);"),
        "{site:#}"
    );
}

/// An object the target does not map, and functions in two different
/// objects: one line, exit 2, nothing attached.
pub fn shared_object_mistakes_are_one_line_errors() {
    let program = CProgram::start();
    let pid = program.pid().to_string();
    let cases: [(&str, &str, &str); 2] = [
        (
            "libnothere.so:malloc",
            "libnothere.so:free",
            "maps no executable object named \"libnothere.so\"",
        ),
        (
            "libc.so.6:malloc",
            "free",
            "--alloc is in libc.so.6 and --release in the executable: both functions must be in the same object",
        ),
    ];
    for (alloc, release, message) in cases {
        let args = [
            "attach",
            "--pid",
            &pid,
            "--alloc",
            alloc,
            "--release",
            release,
            "--size",
            "arg0",
            "--alloc-id",
            "ret",
            "--release-id",
            "arg0",
        ];
        let (code, _, stderr) = observer_command(&args);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("observer: error: "), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
    }
}
