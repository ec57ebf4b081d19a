//! Pools Rust servers really use, from crates.io, used the normal way
//! (`tests/real-crates/`): generic, instantiated and inlined in the
//! server's crate, their buffers given back by a guard's `Drop`. And the
//! demo gateway built with fat LTO, which inlines across crates.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;

use serde_json::Value;

use super::{assert_planted, auto_spec, Planted};
use crate::corpus::corpus_dir;
use crate::support::*;

const POOL_SERVER: &str = "tests/real-crates/pool-server/src/main.rs";
/// `object-pool`: allocate inlined into the server, release inlined into
/// the guard's drop glue, both named as in the source.
const GUARD_SPEC: [&str; 10] = [
    "--alloc",
    "object_pool::Pool<*>::pull",
    "--size",
    "auto",
    "--alloc-id",
    "auto",
    "--release",
    "object_pool::Reusable<*>::drop",
    "--release-id",
    "auto",
];
const SLAB_SERVER: &str = "tests/real-crates/slab-server/src/main.rs";
/// `slab`: `insert` and `remove` inlined into the server, named as in the
/// source with `auto` locations: the identity is the slab's integer key
/// where each inlined instance leaves it and where remove's `key` is, both
/// scoped to the pool's type (DWARF keeps no `self` for the inlined insert).
fn slab_spec() -> [&'static str; 10] {
    auto_spec("slab::Slab<*>::insert", "slab::Slab<*>::remove")
}
/// The DWARF size of `slab_server::Job`, what the slab stores per key.
const JOB_SIZE: i64 = 32;

/// What every request buffer holds (`BUFFER_CAPACITY`).
const BUFFER: i64 = 4096;
const REQUESTS: usize = 400;
const BAD_REQUESTS: usize = 40;

/// `pool-server` of one build (`full`: debug = 2; `stock`: none; `split`:
/// the full build stripped, its DWARF in `real-crates-split/debug`).
fn pool_server(build: &str) -> PathBuf {
    real_crate_server("pool-server", build)
}

fn real_crate_server(name: &str, build: &str) -> PathBuf {
    corpus_dir().join(format!("real-crates-{build}/release/{name}"))
}

/// A running server, listening on a loopback port.
struct Server {
    child: Guarded,
    address: String,
    _stdout: Receiver<String>,
}

impl Server {
    fn start(program: PathBuf) -> Self {
        let mut child = Command::new(&program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("{}: {err}", program.display()));
        let stdout = lines_of(child.stdout.take().unwrap());
        let first = stdout
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the server announces its address");
        let address = first
            .strip_prefix("listening on ")
            .expect(&first)
            .to_string();
        Self {
            child: Guarded(child),
            address,
            _stdout: stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// One client sends `requests` requests, `bad` of them malformed
    /// (spread evenly), reading every reply; returns the error replies.
    fn serve(&self, requests: usize, bad: usize) -> usize {
        self.send(
            requests,
            bad,
            |i| format!("SET key{i} value{i}\n"),
            |i| format!("FETCH key{i}\n"),
        )
    }

    /// Sends `requests` requests made by `good` and, `bad` of them spread
    /// evenly, by `malformed`; returns the error replies.
    fn send(
        &self,
        requests: usize,
        bad: usize,
        good: impl Fn(usize) -> String,
        malformed: impl Fn(usize) -> String,
    ) -> usize {
        let stream = TcpStream::connect(&self.address).expect("connect");
        let mut replies = BufReader::new(stream.try_clone().unwrap()).lines();
        let mut writer = stream;
        let every = requests / bad.max(1);
        let mut errors = 0;
        for i in 0..requests {
            let request = if bad > 0 && i % every == 0 && i / every < bad {
                malformed(i)
            } else {
                good(i)
            };
            writer.write_all(request.as_bytes()).unwrap();
            let reply = replies.next().expect("a reply").unwrap();
            errors += usize::from(reply.starts_with("ERR"));
        }
        // Close, and wait for the server to close its side: it has then
        // dropped the buffer it pulled for a next request (its guard goes
        // before the connection does), so a report taken now sees the
        // connection's end, not a moment of it.
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(replies.next().is_none(), "the server said more");
        errors
    }
}

/// The server's bad requests keep their pooled buffers; every other
/// buffer goes back to the pool when its guard drops. Both pool functions
/// are inlined (`pull` into the server, `Reusable::drop` into the glue
/// that drops guards), named as in the source, with `auto` locations.
pub fn object_pool_guard_leak_is_reported_where_the_inlined_pull_runs() {
    guard_leak_is_reported(pool_server("full"), &[]);
}

/// The same, from a stripped binary whose DWARF is in a debug file found
/// by build id, as distributions ship.
pub fn object_pool_guard_leak_is_followed_through_a_debug_file() {
    let debug_dir = corpus_dir().join("real-crates-split/debug");
    guard_leak_is_reported(
        pool_server("split"),
        &["--debug-dir", debug_dir.to_str().unwrap()],
    );
}

fn guard_leak_is_reported(program: PathBuf, extra: &[&str]) {
    let server = Server::start(program);
    let mut observer = Observer::attach_with(server.pid(), &GUARD_SPEC, extra);
    let errors = server.serve(REQUESTS, BAD_REQUESTS);
    assert_eq!(errors, BAD_REQUESTS);
    let report = observer.report();
    assert_guard_leak(&report);
    let stderr = observer.stderr().join("\n");
    assert!(
        stderr.contains("inlined in pool_server::Server::serve, leaving at"),
        "{stderr}"
    );
    let (status, _) = observer.stop();
    assert!(status.success(), "{status}");
}

/// The release named by its drop glue, with the type argument: only the
/// guard's glue copies are probed, and `auto` reads the buffer inside the
/// guard, not the guard's address.
pub fn drop_in_place_of_the_guard_selects_only_its_glue() {
    let server = Server::start(pool_server("full"));
    let mut spec = GUARD_SPEC;
    spec[7] = "drop_in_place<object_pool::Reusable<*>>";
    let mut observer = Observer::attach_with(server.pid(), &spec, &[]);
    server.serve(REQUESTS, BAD_REQUESTS);
    let report = observer.report();
    assert_guard_leak(&report);
    let release = report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "release")
        .expect("a release probe");
    let copies = release["copies"].as_array().unwrap();
    assert!(!copies.is_empty(), "{release:#}");
    for copy in copies {
        assert!(
            copy["symbol"]
                .as_str()
                .unwrap()
                .contains("object_pool..Reusable"),
            "only the guard's glue is probed: {release:#}"
        );
    }
    assert_eq!(release["inlined"], false, "{release:#}");
    let (status, _) = observer.stop();
    assert!(status.success(), "{status}");
}

fn assert_guard_leak(report: &Value) {
    // Every request pulled a buffer (and the last read, at the end of
    // the connection, one more); every good one gave it back.
    assert_planted(
        report,
        &Planted {
            function: "pool_server::Server::serve",
            source: POOL_SERVER,
            line_text: "self.buffers.pull(",
            buffers: BAD_REQUESTS as i64,
            bytes_each: BUFFER,
            allocations: REQUESTS as i64 + 1,
            releases: (REQUESTS - BAD_REQUESTS) as i64 + 1,
        },
    );
}

/// A stock build has no DWARF: the inlined pull cannot be found, and the
/// error says what build setting would make it followable.
pub fn object_pool_stock_build_says_which_build_setting_is_needed() {
    let server = Server::start(pool_server("stock"));
    let pid = server.pid().to_string();
    let mut args = vec!["attach", "--pid", &pid];
    args.extend(GUARD_SPEC);
    let (code, stdout, stderr) = observer_command(&args);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    let program = pool_server("stock");
    assert_eq!(
        stderr.trim(),
        format!(
            "observer: error: no function 'object_pool::Pool<*>::pull' in {}; if it exists in \
             the source it was probably inlined into its callers; the binary has no DWARF to \
             confirm it, and inlined functions are followed only with full DWARF: build with \
             debug = 2, or give its debug file with --debug-file",
            program.display()
        )
    );
}

/// The gateway's pool under fat LTO. LLVM sees every caller of
/// `release(&self, buf: PooledBuf)` and passes the buffer's fields in
/// registers instead of by reference (`mov %rsi,%rbx` keeps the pointer,
/// `lock sub %rdx,…` subtracts the capacity), and its DWARF then has no
/// location for `buf`: the identity is `arg1` itself, as the disassembly
/// shows. `allocate` keeps its hidden return slot.
const LTO_SPEC: [&str; 10] = [
    "--alloc",
    "bufpool::BufPool::allocate",
    "--size",
    "*(arg0+8)",
    "--alloc-id",
    "*arg0",
    "--release",
    "bufpool::BufPool::release",
    "--release-id",
    "arg1",
];

/// The demo gateway built with `lto = "fat"`, `codegen-units = 1` and full
/// debug info reports the demo's leak exactly.
pub fn lto_gateway_disconnect_leak_is_reported_exactly() {
    let program = corpus_dir().join("lto/release/leaky-gateway");
    let gateway = Gateway::spawn(Command::new(&program), |child| child);
    gateway.chat(30, 3);
    let mut observer = Observer::attach_with(gateway.pid(), &LTO_SPEC, &[]);
    let cycles = 100;
    gateway.chat(cycles, 3);
    let report = observer.report();
    let leak = site_through(&report, "say_goodbye");
    assert_eq!(leak["rank"], 1, "the leak is the top site: {report:#}");
    assert_eq!(int(&leak["buffers"]), cycles as i64, "{leak:#}");
    assert_eq!(int(&leak["bytes"]), cycles as i64 * 256, "{leak:#}");
    assert!(
        frames(leak)
            .iter()
            .any(|f| f["function"] == "leaky_gateway::codec::Encoder::encode"),
        "the leaking function is named: {leak:#}"
    );
    for site in sites(&report) {
        if !has_frame(site, "say_goodbye") {
            assert_eq!(
                int(&site["buffers"]),
                0,
                "healthy site holds buffers: {site:#}"
            );
        }
    }
    assert_eq!(int(&report["counters"]["unknown_releases"]), 0);
    assert_accounting_balances(&report);
    let (status, _) = observer.stop();
    assert!(status.success(), "{status}");
    assert_eq!(gateway.stop(), 30 + cycles as i64);
}

const LIFEGUARD_SERVER: &str = "tests/real-crates/lifeguard-server/src/main.rs";
/// `lifeguard`: `Pool::new` inlined into the relay, its `Recycled` smart
/// pointer returned to the pool by the drop glue, named as in the source.
/// `Pool::new` and the release as users name it: the smart pointer's drop
/// glue, or the `Drop` impl it runs (on the `RecycledInner` it wraps).
const RECYCLED_RELEASES: [&str; 2] = [
    "drop_in_place<lifeguard::Recycled<*>>",
    "lifeguard::RecycledInner<*>::drop",
];

/// What every message buffer holds (`BUFFER_CAPACITY`).
const MESSAGE_BUFFER: i64 = 2048;

/// The relay's messages without a channel go to a dead-letter queue that
/// nothing drains, each holding its recycled buffer; every other buffer
/// goes back to the pool when its `Recycled` drops.
pub fn lifeguard_dead_letters_are_reported_where_the_inlined_new_runs() {
    for release in RECYCLED_RELEASES {
        let server = Server::start(real_crate_server("lifeguard-server", "full"));
        let spec = auto_spec("lifeguard::Pool<*>::new", release);
        let mut observer = Observer::attach_with(server.pid(), &spec, &[]);
        let errors = server.send(
            REQUESTS,
            BAD_REQUESTS,
            |i| format!("MSG room{} hello {i}\n", i % 7),
            |i| format!("MSG hello{i}\n"),
        );
        assert_eq!(errors, BAD_REQUESTS);
        let report = observer.report();
        // One buffer per message, and the one pulled for the read that
        // found the connection closed.
        assert_planted(
            &report,
            &Planted {
                function: "lifeguard_server::Relay::serve",
                source: LIFEGUARD_SERVER,
                line_text: "let mut message = self.buffers.new();",
                buffers: BAD_REQUESTS as i64,
                bytes_each: MESSAGE_BUFFER,
                allocations: REQUESTS as i64 + 1,
                releases: (REQUESTS + 1 - BAD_REQUESTS) as i64,
            },
        );
        let (status, _) = observer.stop();
        assert!(status.success(), "{release}: {status}");
    }
}

/// The slab server's jobs with a bad weight return before their removal:
/// their keys stay in the slab. `insert` and `remove` are inlined.
pub fn slab_keys_left_in_flight_are_reported_where_the_inlined_insert_runs() {
    let server = Server::start(real_crate_server("slab-server", "full"));
    let mut observer = Observer::attach_with(server.pid(), &slab_spec(), &[]);
    let errors = server.send(
        REQUESTS,
        BAD_REQUESTS,
        |i| format!("JOB job{i} {i}\n"),
        |i| format!("JOB job{i} heavy\n"),
    );
    assert_eq!(errors, BAD_REQUESTS);
    let report = observer.report();
    let identity = report["locations"]["identity"].as_str().unwrap_or_default();
    assert!(
        identity.starts_with(
            "integer key (usize) scoped to the pool's type slab::Slab<slab_server::Job>"
        ),
        "{identity}"
    );
    assert_planted(
        &report,
        &Planted {
            function: "slab_server::Jobs::run",
            source: SLAB_SERVER,
            line_text: "self.lock().insert(",
            buffers: BAD_REQUESTS as i64,
            bytes_each: JOB_SIZE,
            allocations: REQUESTS as i64,
            releases: (REQUESTS - BAD_REQUESTS) as i64,
        },
    );
    let (status, _) = observer.stop();
    assert!(status.success(), "{status}");
}

/// Stock slab and lifeguard servers: nothing to find, and the message
/// says what would.
pub fn stock_builds_say_which_build_setting_is_needed() {
    for (name, alloc, crate_path) in [
        ("slab-server", "slab::Slab<*>::insert", "slab::"),
        ("lifeguard-server", "lifeguard::Pool<*>::new", "lifeguard::"),
    ] {
        let program = real_crate_server(name, "stock");
        let server = Server::start(program.clone());
        let pid = server.pid().to_string();
        let mut args = vec!["attach", "--pid", &pid];
        args.extend(auto_spec(alloc, "core::ptr::drop_in_place"));
        let (code, stdout, stderr) = observer_command(&args);
        assert_eq!(code, Some(2), "{stdout}{stderr}");
        // Then the standard library's functions of that name, as names
        // it has.
        let (message, suggestions) = stderr
            .trim()
            .split_once("; did you mean ")
            .unwrap_or((stderr.trim(), ""));
        assert!(
            suggestions.is_empty() || !suggestions.contains(crate_path),
            "{stderr}"
        );
        assert_eq!(
            message,
            format!(
                "observer: error: no function '{alloc}' in {}; if it exists in the source it \
                 was probably inlined into its callers; the binary has no DWARF to confirm it, \
                 and inlined functions are followed only with full DWARF: build with debug = 2, \
                 or give its debug file with --debug-file",
                program.display()
            )
        );
    }
}

/// With line tables only, an inlined function is named with where DWARF
/// shows it inlined and the build setting that would let it be followed.
pub fn line_tables_only_say_where_it_was_inlined_and_what_build_is_needed() {
    let binary = corpus_dir().join("corpus-line-tables/release/leak-corpus");
    let (code, stdout, stderr) =
        observer_command(&["inspect", binary.to_str().unwrap(), "FramePool<*>::put"]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "observer: error: no function 'FramePool<*>::put' in {}; DWARF shows a function named \
             'put<512>' (line tables only, so possibly another one) inlined at 2 call sites (e.g. \
             in leak_corpus::frames::run), with no out-of-line copy: its inlined instances are \
             followed (as --alloc and as --release, with auto locations) only with full DWARF: \
             build with debug = 2, or give its debug file with --debug-file",
            binary.display()
        )
    );
}

/// `inspect` on the guard's drop glue alone flags the guard's address as
/// no identity; with the allocate named first it reads the buffer inside.
pub fn inspect_follows_the_guard_to_its_buffer_or_says_why_not() {
    let binary = pool_server("full");
    let binary = binary.to_str().unwrap();
    let glue = "drop_in_place<object_pool::Reusable<*>>";
    let (code, alone, stderr) = observer_command(&["inspect", binary, glue]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        alone.contains(
            "as --release-id auto: arg0 — CANNOT BE AN IDENTITY: arg0 is parameter (unnamed) \
             (*mut object_pool::Reusable<alloc::vec::Vec<u8, alloc::alloc::Global>>), the \
             address where that value lives (a guard's stack slot, different at every drop)"
        ),
        "{alone}"
    );
    let (code, both, stderr) =
        observer_command(&["inspect", binary, "object_pool::Pool<*>::pull", glue]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(both.contains("as --release-id auto: *(arg0+8)"), "{both}");
    assert!(!both.contains("CANNOT BE AN IDENTITY"), "{both}");
    assert!(
        both.contains("--alloc-id auto = *(rsp+168), --size auto = *(rsp+160)"),
        "{both}"
    );
}

/// Locations written out cannot fit the places each caller keeps an
/// inlined allocate's result in, and nothing returns for `--returns` to
/// watch: one line, exit 2, nothing attached.
pub fn options_that_cannot_fit_an_inlined_allocate_are_refused() {
    let server = Server::start(pool_server("full"));
    let pid = server.pid().to_string();
    let program = pool_server("full");
    for (flag, value, advice) in [
        ("--alloc-id", "*arg0", ", or ret for the result itself"),
        ("--size", "arg1", " or a literal size"),
    ] {
        let mut spec = GUARD_SPEC;
        let at = spec.iter().position(|a| *a == flag).unwrap();
        spec[at + 1] = value;
        let mut args = vec!["attach", "--pid", &pid];
        args.extend(spec);
        let (code, stdout, stderr) = observer_command(&args);
        assert_eq!(code, Some(2), "{stdout}{stderr}");
        assert_eq!(
            stderr.trim(),
            format!(
                "observer: error: 'object_pool::Pool<*>::pull' has no out-of-line copy in {}: it \
                 is inlined at 1 place, each keeping its result where its caller chose, so one \
                 {flag} '{value}' cannot fit them all: use {flag} auto (needs DWARF with types, \
                 debug = 2){advice}",
                program.display()
            )
        );
    }
    let mut args = vec!["attach", "--pid", &pid];
    args.extend(GUARD_SPEC);
    args.extend(["--returns", "call-sites"]);
    let (code, stdout, stderr) = observer_command(&args);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim(),
        "observer: error: --returns call-sites does not apply: 'object_pool::Pool<*>::pull' is \
         inlined, so nothing returns; its results are read where control leaves each inlined \
         instance (leave out --returns)"
    );
    // Nothing was attached: the server still serves.
    assert_eq!(server.serve(10, 1), 1);
}
