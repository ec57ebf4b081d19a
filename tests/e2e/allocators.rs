//! Allocators observed where they live: libc's malloc and free probed in
//! the shared object the target maps (`libc.so.6:malloc`), on a C program
//! (`tests/allocators/libc-leak.c`) that leaks a known number of sessions;
//! a pool in a library loaded with `dlopen` after attach
//! (`tests/allocators/dlopen-pool.c`, `libdlpool.c`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;

use serde_json::Value;

use crate::corpus::corpus_dir;
use crate::stalls;
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
    stdout: Receiver<String>,
}

impl CProgram {
    fn start() -> Self {
        Self::start_named("libc-leak")
    }

    fn start_named(name: &str) -> Self {
        let binary = corpus_dir().join("allocators").join(name);
        let mut child = Command::new(&binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{}: {err}", binary.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let mut program = Self {
            child: Guarded(child),
            stdin,
            stdout,
        };
        assert_eq!(program.answer(&format!("{name}'s ready")), "ready");
        program
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn serve(&mut self) {
        assert_eq!(self.round(), format!("done: {LEAKS} leaked"));
    }

    /// One round of work; what the program answered.
    fn round(&mut self) -> String {
        self.say("go")
    }

    /// Sends `line`; what the program answered.
    fn say(&mut self, line: &str) -> String {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.answer(&format!("the answer to {line}"))
    }

    /// The program's next line; the test fails with every thread's state
    /// when it does not come in [`TIMEOUT`].
    fn answer(&mut self, what: &str) -> String {
        self.stdout
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| stalls::stalled(what, TIMEOUT))
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

/// What `libc-mixed` leaks in its first round: 25 sessions calloc'd and
/// grown by realloc to 48 bytes (the realloc's buffer, at the realloc in
/// `open_session`), and 10 cache entries of 80 bytes from posix_memalign
/// (the pointer written through its first argument) in `fill_cache`.
const SESSIONS: i64 = 25;
const SESSION_BYTES: i64 = 48;
const CACHED: i64 = 10;
const CACHE_BYTES: i64 = 80;
/// Per round, `libc-mixed` makes 200 requests; each grows a buffer twice
/// with realloc and has a third realloc fail, and calls realloc(NULL, n)
/// (which glibc tail-calls malloc from) and realloc(p, 0) (which glibc
/// turns into free(p)) once.
const MIXED_REQUESTS: i64 = 200;
const MIXED: &str = "tests/allocators/libc-mixed.c";

/// `--preset libc` on a program using every libc allocate function: the
/// two leaks exactly, each at its function, through reallocs that move
/// buffers, fail, start from NULL and free; nothing unknown, nothing
/// counted twice.
pub fn preset_libc_gives_the_exact_leak_through_realloc_and_memalign() {
    let mut program = CProgram::start_named("libc-mixed");
    let mut observer = Observer::attach_with(program.pid(), &["--preset", "libc"], &[]);
    assert_eq!(program.round(), "done: 35 leaked");
    assert_eq!(program.round(), "done: 0 leaked");
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success());
    let c = &report["counters"];
    assert_accounting_balances(&report);
    for quiet in ["unknown_releases", "reallocated_ids", "in_flight"] {
        assert_eq!(int(&c[quiet]), 0, "{quiet}: {c:#}");
    }
    let rounds = 2;
    // Two growths and one realloc(p, 0) per request, one realloc per session.
    assert_eq!(
        int(&c["reallocs"]),
        rounds * MIXED_REQUESTS * 3 + SESSIONS,
        "{c:#}"
    );
    assert_eq!(int(&c["realloc_failed"]), rounds * MIXED_REQUESTS, "{c:#}");
    assert_eq!(int(&c["alloc_failed"]), rounds * MIXED_REQUESTS, "{c:#}");
    assert_eq!(int(&c["realloc_frees"]), rounds * MIXED_REQUESTS, "{c:#}");
    assert_eq!(
        int(&c["allocator_internal_allocs"]),
        rounds * MIXED_REQUESTS,
        "{c:#}"
    );
    assert_eq!(
        int(&c["allocator_internal_releases"]),
        rounds * MIXED_REQUESTS,
        "{c:#}"
    );
    assert_mixed_leaks(&report);
    let probed: Vec<&str> = report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["function"].as_str().unwrap())
        .collect();
    for function in ["malloc", "calloc", "realloc", "posix_memalign", "free"] {
        assert!(probed.contains(&function), "{probed:?}");
    }
}

/// `--preset libc` where the C library is not glibc's shared object: the
/// same program linked statically (glibc's allocator in the executable)
/// and against musl (`/usr/lib/x86_64-linux-musl/libc.so`, musl's C
/// library and dynamic linker in one): the two leaks exactly, nothing
/// unknown. musl's functions call each other differently from glibc's
/// (posix_memalign through aligned_alloc, …), so only what does not
/// depend on the allocator's insides is compared.
pub fn preset_libc_finds_the_c_library_when_static_or_musl() {
    for program in ["libc-mixed-static", "libc-mixed-musl"] {
        let mut target = CProgram::start_named(program);
        let mut observer = Observer::attach_with(target.pid(), &["--preset", "libc"], &[]);
        assert_eq!(target.round(), "done: 35 leaked", "{program}");
        assert_eq!(target.round(), "done: 0 leaked", "{program}");
        let report = observer.report();
        let (status, _) = observer.stop();
        assert!(status.success(), "{program}");
        assert_accounting_balances(&report);
        let c = &report["counters"];
        for quiet in ["unknown_releases", "reallocated_ids", "in_flight"] {
            assert_eq!(int(&c[quiet]), 0, "{program}: {quiet}: {c:#}");
        }
        assert_mixed_leaks(&report);
    }
}

/// `observer run --preset libc -- PROGRAM`: the C library found before
/// the program starts (among the libraries it needs, or in it when it is
/// static), its probes placed for the program to map: the two leaks
/// exactly, with every allocation seen from the first.
pub fn run_with_preset_libc_probes_the_c_library_from_the_start() {
    for program in ["libc-mixed", "libc-mixed-static", "libc-mixed-musl"] {
        let binary = corpus_dir().join("allocators").join(program);
        let directory = tempfile::tempdir().unwrap();
        let output = directory.path().join("report.json");
        let mut child = observer()
            .args(["run", "--preset", "libc", "--format", "json", "--output"])
            .arg(&output)
            .arg("--")
            .arg(&binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start observer run");
        child.stdin.take().unwrap().write_all(b"go\ngo\n").unwrap();
        let done = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&done.stdout);
        assert!(said.contains("done: 35 leaked"), "{program}: {said}");
        let stderr = String::from_utf8_lossy(&done.stderr);
        let report: Value = serde_json::from_slice(
            &std::fs::read(&output).unwrap_or_else(|err| panic!("{program}: {err}: {stderr}")),
        )
        .unwrap();
        assert_eq!(report["command"]["exit_code"], 0, "{program}: {stderr}");
        assert_accounting_balances(&report);
        let c = &report["counters"];
        for quiet in ["unknown_releases", "reallocated_ids"] {
            assert_eq!(int(&c[quiet]), 0, "{program}: {quiet}: {c:#}");
        }
        assert_mixed_sites(&report);
        // Seen from the start, the C library's own start-up allocations
        // it keeps for good (static glibc's `_dl_non_dynamic_init`) are
        // outstanding too: only sites outside the program's code.
        let program_code = |site: &&Value| {
            frames(site)
                .iter()
                .any(|f| f["file"].as_str().is_some_and(|file| file.ends_with(MIXED)))
        };
        let ours: i64 = sites(&report)
            .iter()
            .filter(program_code)
            .map(|site| int(&site["buffers"]))
            .sum();
        assert_eq!(ours, SESSIONS + CACHED, "{program}: {report:#}");
        let warnings = report["warnings"].to_string();
        assert!(
            !warnings.contains("has not been loaded"),
            "{program}: {warnings}"
        );
    }
}

/// libc-mixed's two leaks, exactly, each at its own line: the sessions
/// grown by realloc and the aligned cache entries.
fn assert_mixed_leaks(report: &Value) {
    let outstanding = &report["outstanding"];
    assert_eq!(
        int(&outstanding["buffers"]),
        SESSIONS + CACHED,
        "{report:#}"
    );
    assert_eq!(
        int(&outstanding["bytes"]),
        SESSIONS * SESSION_BYTES + CACHED * CACHE_BYTES
    );
    assert_mixed_sites(report);
}

/// The two leaking sites of libc-mixed, exactly, at their lines (what
/// else is outstanding is said by the caller).
fn assert_mixed_sites(report: &Value) {
    for (function, buffers, bytes, line) in [
        (
            "open_session",
            SESSIONS,
            SESSIONS * SESSION_BYTES,
            "sessions[i] = realloc(session, SESSION_BYTES);",
        ),
        (
            "fill_cache",
            CACHED,
            CACHED * CACHE_BYTES,
            "if (posix_memalign(&cache[i], 64, CACHE_BYTES) != 0) {",
        ),
    ] {
        // open_session's calloc is a site too, with nothing outstanding:
        // the realloc released its buffer.
        let holding: Vec<&Value> = sites(report)
            .iter()
            .filter(|s| has_frame(s, function) && int(&s["buffers"]) > 0)
            .collect();
        assert_eq!(holding.len(), 1, "{function}: {report:#}");
        let site = holding[0];
        assert_eq!(int(&site["buffers"]), buffers, "{site:#}");
        assert_eq!(int(&site["bytes"]), bytes, "{site:#}");
        // The allocator's own frames (`__libc_realloc`, `posix_memalign`)
        // are left out: the stack starts at the code that allocated.
        let frame = &frames(site)[0];
        assert_eq!(frame["function"], function, "{site:#}");
        assert_eq!(frame["line"], source_line(MIXED, line), "{site:#}");
    }
}

/// The gateway's planted leak: one 256-byte frame per session, from the
/// encoder, on the disconnect path.
const GATEWAY_FRAME: i64 = 256;

/// `--preset rust-global` on the gateway (the system allocator behind
/// Rust's global allocator shims): reallocs (vectors growing) are
/// releases and allocations, so no realloc's release is unknown and no id
/// is reallocated; the encoder's blocks outstanding are exactly the leaked
/// frames.
///
/// The allocator sees the pool's blocks, not its hand-outs: a frame the
/// disconnect path leaks was allocated wherever the pool last found its
/// free list empty (any `encode`). Each session leaks one frame, so the
/// free list of frames drains to empty once the load stops; after a
/// warm-up it is empty at attach too, and the frame blocks allocated
/// since are exactly the leaked frames.
pub fn preset_rust_global_on_the_gateway_counts_reallocs_and_the_exact_leak() {
    gateway_preset_reports_the_leak(Gateway::start(), "rust-global", "bufpool::allocate_block");
}

/// The gateway as services that switch allocators build it (the
/// `tikv-jemallocator` crate as its global allocator), observed through
/// jemalloc's own entry points: the same exact leak.
pub fn preset_jemalloc_on_a_jemalloc_gateway_gives_the_exact_leak() {
    let gateway = Gateway::spawn(Command::new(allocator_gateway("jemalloc")), |child| child);
    gateway_preset_reports_the_leak(gateway, "jemalloc", "bufpool::allocate_block");
}

/// The same with the `mimalloc` crate.
pub fn preset_mimalloc_on_a_mimalloc_gateway_gives_the_exact_leak() {
    let gateway = Gateway::spawn(Command::new(allocator_gateway("mimalloc")), |child| child);
    gateway_preset_reports_the_leak(gateway, "mimalloc", "bufpool::allocate_block");
}

/// The gateway built with `--features ALLOCATOR` (`cargo xtask targets
/// allocators`).
fn allocator_gateway(allocator: &str) -> PathBuf {
    corpus_dir().join(format!("gateway-{allocator}/release/leaky-gateway"))
}

/// 30 warm-up sessions, then 100 observed with `--preset PRESET`: exactly
/// the 100 leaked blocks at the encoder, stacks starting at `first_frame`
/// (the allocator's own frames left out), reallocs counted, none
/// unmatched.
fn gateway_preset_reports_the_leak(gateway: Gateway, preset: &str, first_frame: &str) {
    gateway.chat(30, 3);
    let mut observer = Observer::attach_with(gateway.pid(), &["--preset", preset], &[]);
    let sessions = 100;
    gateway.chat(sessions, 3);
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success(), "{preset}: {status}");
    let c = &report["counters"];
    assert_accounting_balances(&report);
    // Releases of what tokio allocated before attach (registrations of
    // the warm-up's connections, released later) are unknown, rightly;
    // none comes from a realloc, and no id is reallocated.
    for quiet in ["realloc_unknown_old", "reallocated_ids", "in_flight"] {
        assert_eq!(int(&c[quiet]), 0, "{preset}: {quiet}: {c:#}");
    }
    assert!(int(&c["reallocs"]) > 0, "{preset}: vectors grow: {c:#}");
    // Everything the encoder's blocks hold is the leak; the rest is what
    // tokio keeps live at any moment (a registration released later, the
    // list of registrations to release).
    let encoder: Vec<&Value> = sites(&report)
        .iter()
        .filter(|s| int(&s["buffers"]) > 0)
        .filter(|s| has_frame(s, "leaky_gateway::codec::Encoder::encode"))
        .collect();
    let buffers: i64 = encoder.iter().map(|s| int(&s["buffers"])).sum();
    let bytes: i64 = encoder.iter().map(|s| int(&s["bytes"])).sum();
    assert_eq!(buffers, sessions as i64, "{preset}: {report:#}");
    assert_eq!(
        bytes,
        sessions as i64 * GATEWAY_FRAME,
        "{preset}: {report:#}"
    );
    // The allocator's own frames (the shim, `alloc::alloc::alloc_zeroed`,
    // the allocator crate's `GlobalAlloc`) are left out: a stack starts at
    // the code that allocated.
    for site in &encoder {
        assert_eq!(
            frames(site)[0]["function"],
            first_frame,
            "{preset}: {site:#}"
        );
    }
    let goodbye = sites(&report)
        .iter()
        .filter(|s| has_frame(s, "say_goodbye"))
        .map(|s| int(&s["buffers"]))
        .sum::<i64>();
    assert!(goodbye > 0, "{preset}: {report:#}");
}

/// What `dlopen-pool`'s first round does: 20 connections of 64 bytes kept
/// (through the library's `session_open`) among 100 request buffers given
/// back to the pool.
const DL_LEAKS: i64 = 20;
const DL_LEAK_BYTES: i64 = 64;
const DL_REQUESTS: i64 = 100;
const DL_SOURCE: &str = "tests/allocators/dlopen-pool.c";

/// How long the test leaves the observer between the library's load and
/// the first call into it: the prompt refresh (woken by the dynamic
/// linker's `_dl_debug_state`) must have tabled the library by then. The
/// refresh took about 5 ms here (see README, Limits); the margin is for
/// a loaded machine.
const DL_LOAD_MARGIN: std::time::Duration = std::time::Duration::from_millis(300);

/// A pool in a library the program loads with `dlopen` after attach:
/// probes named `libdlpool.so:pool_get` wait for it (found through the
/// program's RUNPATH `$ORIGIN`), and once it is loaded the leak is exact,
/// with stacks through the library's own frame into the program. The
/// `--interval` tick is an hour and the load comes after the observer's
/// first second of frequent looks, so only the prompt refresh on the load
/// can have tabled the library: without it the stacks stop early in it.
pub fn a_library_loaded_after_attach_is_probed_and_walked() {
    let mut program = CProgram::start_named("dlopen-pool");
    let spec = [
        "--alloc",
        "libdlpool.so:pool_get",
        "--release",
        "libdlpool.so:pool_put",
        "--size",
        "arg0",
        "--alloc-id",
        "ret",
        "--release-id",
        "arg0",
    ];
    let mut observer = Observer::attach_with(program.pid(), &spec, &["--interval", "1h"]);
    // Said right after the line that says it is attached.
    eventually("the observer says the library is not loaded yet", || {
        observer
            .stderr()
            .iter()
            .any(|line| line.contains("libdlpool.so is not loaded yet; probes wait for it"))
    });
    let mapped = || std::fs::read_to_string(format!("/proc/{}/maps", program.pid())).unwrap();
    assert!(!mapped().contains("libdlpool.so"), "loaded too early");
    let waiting = |report: &Value| {
        report["warnings"].as_array().unwrap().iter().any(|w| {
            w.as_str()
                .unwrap()
                .contains("libdlpool.so has not been loaded")
        })
    };
    let before = observer.report();
    assert!(waiting(&before), "{:#}", before["warnings"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(program.say("load"), "loaded");
    std::thread::sleep(DL_LOAD_MARGIN);
    assert_eq!(program.round(), format!("done: {DL_LEAKS} leaked"));
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success());
    assert!(!waiting(&report), "{:#}", report["warnings"]);
    let c = &report["counters"];
    assert_eq!(int(&c["allocations"]), DL_LEAKS + DL_REQUESTS, "{c:#}");
    assert_eq!(int(&c["releases"]), DL_REQUESTS, "{c:#}");
    for quiet in ["unknown_releases", "reallocated_ids", "stacks_broken"] {
        assert_eq!(int(&c[quiet]), 0, "{quiet}: {c:#}");
    }
    assert_accounting_balances(&report);
    assert_eq!(
        int(&report["outstanding"]["buffers"]),
        DL_LEAKS,
        "{report:#}"
    );
    assert_eq!(
        int(&report["outstanding"]["bytes"]),
        DL_LEAKS * DL_LEAK_BYTES
    );
    let site = site_through(&report, "keep_connection");
    assert_eq!(int(&site["buffers"]), DL_LEAKS, "{site:#}");
    assert_eq!(int(&site["bytes"]), DL_LEAKS * DL_LEAK_BYTES, "{site:#}");
    let names: Vec<&str> = frames(site)
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        names[..4],
        ["pool_get", "session_open", "keep_connection", "main"],
        "{site:#}"
    );
    let keep = &frames(site)[2];
    assert_eq!(
        keep["line"],
        source_line(DL_SOURCE, "connections[i] = session_open(LEAK_BYTES);"),
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
            "and its dynamic linker would not find one to load",
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

/// The two pools of `c-pool.c`, each observed by `observer run` with every
/// location `auto`: a pool of raw buffers (`void *pool_get(size_t size)`,
/// `pool_put(void *buffer)`) and one of structs (`struct buf
/// *buf_get(size_t capacity)`, `buf_put(struct buf *b)`). C's pointer
/// types have no name in DWARF; the released pointer must be read as the
/// buffer's identity, not refused as a guard's address. Exact counts, the
/// leak at its C function.
pub fn c_pools_with_auto_locations_give_the_exact_leak() {
    const ROUNDS: i64 = 100;
    let pools = [
        // (allocate, release, leaking caller, leaks, bytes each)
        ("pool_get", "pool_put", "serve_raw", (ROUNDS + 6) / 7, 96),
        ("buf_get", "buf_put", "serve_buf", (ROUNDS + 4) / 5, 200),
    ];
    for (alloc, release, caller, leaks, size) in pools {
        let binary = corpus_dir().join("allocators").join("c-pool");
        let directory = tempfile::tempdir().unwrap();
        let output = directory.path().join("report.json");
        let done = observer()
            .arg("run")
            .args(auto_spec(alloc, release))
            .args(["--format", "json", "--output"])
            .arg(&output)
            .arg("--")
            .arg(&binary)
            .arg(ROUNDS.to_string())
            .output()
            .expect("run observer run");
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{alloc}: {stderr}");
        let report: Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
        let locations = &report["locations"];
        assert_eq!(locations["size"], "arg0", "{alloc}: {locations:#}");
        assert_eq!(locations["alloc_id"], "ret", "{alloc}: {locations:#}");
        assert_eq!(locations["release_id"], "arg0", "{alloc}: {locations:#}");
        assert_eq!(locations["inferred"].as_array().unwrap().len(), 3);
        assert_accounting_balances(&report);
        let c = &report["counters"];
        assert_eq!(int(&c["allocations"]), ROUNDS, "{alloc}: {c:#}");
        assert_eq!(int(&c["releases"]), ROUNDS - leaks, "{alloc}: {c:#}");
        assert_eq!(int(&c["unknown_releases"]), 0, "{alloc}: {c:#}");
        assert_eq!(int(&report["outstanding"]["buffers"]), leaks);
        assert_eq!(int(&report["outstanding"]["bytes"]), leaks * size);
        let site = site_through(&report, caller);
        assert_eq!(int(&site["buffers"]), leaks, "{site:#}");
        assert_eq!(frames(site)[0]["function"], alloc, "{site:#}");
    }
}
