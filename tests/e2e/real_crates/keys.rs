//! Servers built on the pool crates real services use
//! (`tests/real-crates/`), whose allocate returns a key or an enum rather
//! than a pointer, observed with the functions named as in the source and
//! `auto` locations, on a `debug = 2` build and on a stock release build.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{ChildStdin, Command, Stdio};

use serde_json::Value;

use super::{assert_planted, auto_spec, Planted};
use crate::corpus::corpus_dir;
use crate::support::*;

/// Sessions `sharded-slab-server` leaks on failed handshakes, and the
/// connections its full session table turns away.
const SESSION_LEAKS: i64 = 40;
const REFUSED: i64 = 10;
/// The DWARF size of `sharded_slab_server::Session`.
const SESSION_BYTES: i64 = 32;
const SERVER_SOURCE: &str = "tests/real-crates/sharded-slab-server/src/main.rs";

fn sharded_slab_auto() -> [&'static str; 10] {
    auto_spec(
        "sharded_slab::Slab<*>::insert",
        "sharded_slab::Slab<*>::remove",
    )
}

/// A running server of `tests/real-crates/`, waiting for the word to
/// serve one round of traffic.
struct Server {
    child: Guarded,
    stdin: ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Server {
    /// `build` is `full` (debug = 2) or `stock` (cargo's release default).
    fn start(build: &str, name: &str) -> Self {
        let binary = corpus_dir().join(format!("real-crates-{build}/release/{name}"));
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

    /// Serves one round and returns its `done: …` line.
    fn serve(&mut self) -> String {
        self.stdin.write_all(b"go\n").unwrap();
        let done = self.stdout.next().unwrap().unwrap();
        assert!(done.starts_with("done"), "{done}");
        done
    }
}

/// Observes one round of the full build of `sharded-slab-server`.
fn observe_sharded_slab(spec: &[&str]) -> Value {
    let mut server = Server::start("full", "sharded-slab-server");
    let mut observer = Observer::attach_with(server.pid(), spec, &[]);
    let done = server.serve();
    assert_eq!(
        done,
        format!("done: {SESSION_LEAKS} handshakes failed, {REFUSED} refused")
    );
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success());
    report
}

/// `Slab::insert` returns `Option<usize>`: the key is in rdx, a `None`
/// (the table is full) is no allocation, and the two listeners' tables
/// hand out the same keys, told apart by the pool they belong to.
pub fn sharded_slab_keys_are_followed_with_auto_locations() {
    let report = observe_sharded_slab(&sharded_slab_auto());
    let locations = &report["locations"];
    assert_eq!(locations["alloc_id"], "ret.1", "{locations:#}");
    assert_eq!(locations["release_id"], "arg1", "{locations:#}");
    assert_eq!(locations["size"], SESSION_BYTES.to_string());
    assert_eq!(
        locations["identity"],
        "integer key (usize) scoped to the pool at arg0"
    );
    assert_eq!(
        locations["allocations_when"],
        "only Some returns are allocations: the 8-byte discriminant at offset 0 of Option<usize> is 1"
    );
    let inferred: Vec<&str> = locations["inferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        inferred
            .iter()
            .any(|i| i.starts_with("--size auto = 32: ") && i.contains("parameter `value`")),
        "{inferred:?}"
    );
    assert!(
        inferred
            .iter()
            .any(|i| i.starts_with("release scope = arg0")),
        "{inferred:?}"
    );

    let counters = &report["counters"];
    assert_eq!(int(&counters["alloc_failed"]), REFUSED, "{counters:#}");
    assert_eq!(int(&counters["reallocated_ids"]), 0, "{counters:#}");
    assert_eq!(int(&counters["unknown_releases"]), 0, "{counters:#}");
    assert_counters_add_up(&report);
    assert_eq!(int(&report["outstanding"]["buffers"]), SESSION_LEAKS);
    let site = &sites(&report)[0];
    assert_eq!(int(&site["buffers"]), SESSION_LEAKS, "{report:#}");
    assert_eq!(int(&site["bytes"]), SESSION_LEAKS * SESSION_BYTES);
    // The leaking function, at the line that accepted the session.
    let serve = frames(site)
        .iter()
        .find(|f| f["function"] == "sharded_slab_server::Listener::serve")
        .unwrap_or_else(|| panic!("no Listener::serve frame: {site:#}"));
    assert_eq!(
        serve["line"],
        source_line(
            SERVER_SOURCE,
            "let Some(key) = self.accept(connection) else"
        ),
        "{site:#}"
    );
    assert!(
        !has_frame(site, "sharded_slab_server::Listener::burst"),
        "{site:#}"
    );
}

/// The same locations written out without the pool's scope or the
/// success test miscount: keys of the two tables collide and `None`
/// returns become allocations. What `auto` adds is what makes it exact.
pub fn sharded_slab_keys_without_their_pool_collide() {
    let spec = [
        "--alloc",
        "sharded_slab::Slab<*>::insert",
        "--release",
        "sharded_slab::Slab<*>::remove",
        "--size",
        "32",
        "--alloc-id",
        "ret.1",
        "--release-id",
        "arg1",
    ];
    let report = observe_sharded_slab(&spec);
    assert_eq!(
        report["locations"]["identity"],
        "the value at ret.1, as given"
    );
    let counters = &report["counters"];
    assert_eq!(int(&counters["alloc_failed"]), 0, "{counters:#}");
    assert_eq!(
        int(&counters["allocations"]),
        int(&counters["alloc_calls"]),
        "every return counted, None included: {counters:#}"
    );
    assert!(int(&counters["reallocated_ids"]) > 0, "{counters:#}");
}

/// Cargo's release default carries no DWARF: `auto` says what to build
/// with, in one line, and nothing is attached.
pub fn sharded_slab_stock_build_says_what_auto_needs() {
    let server = Server::start("stock", "sharded-slab-server");
    let pid = server.pid().to_string();
    let mut args = vec!["attach", "--pid", pid.as_str()];
    args.extend(sharded_slab_auto());
    let (code, _, stderr) = observer_command(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "observer: error: `auto` locations need DWARF with types for sharded_slab::Slab<T,C>::insert, \
         and the binary has no DWARF: build with debug = 2 (or give its debug file with --debug-file), \
         or write the locations out\n"
    );
}

const SLOTMAP_SOURCE: &str = "tests/real-crates/slotmap-server/src/main.rs";
fn slotmap_auto() -> [&'static str; 10] {
    auto_spec(
        "slotmap::basic::SlotMap<*>::insert",
        "slotmap::basic::SlotMap<*>::remove",
    )
}
/// Requests `slotmap-server` serves in a round, and those whose body
/// fails to parse, left in the map.
const SLOTMAP_REQUESTS: i64 = 200;
const SLOTMAP_LEAKS: i64 = 40;
/// The DWARF size of `slotmap_server::Request`.
const REQUEST_BYTES: i64 = 32;

/// `SlotMap::insert` is `#[inline(always)]` and its `DefaultKey` (two
/// `u32`s) lives split over two registers where the inlined insert ends
/// and where the inlined `remove` starts: both are read as `low:high`
/// halves, scoped to the map's type.
pub fn slotmap_keys_left_in_the_map_are_reported_with_auto_locations() {
    let mut server = Server::start("full", "slotmap-server");
    let mut observer = Observer::attach_with(server.pid(), &slotmap_auto(), &[]);
    let done = server.serve();
    assert!(
        done.starts_with(&format!("done: {SLOTMAP_LEAKS} bad requests")),
        "{done}"
    );
    let report = observer.report();
    let locations = &report["locations"];
    assert_eq!(locations["alloc_id"], "rsi:rcx", "{locations:#}");
    let identity = locations["identity"].as_str().unwrap_or_default();
    assert!(
        identity.starts_with("integer key (DefaultKey) scoped to the pool's type slotmap::"),
        "{identity}"
    );
    assert_planted(
        &report,
        &Planted {
            function: "slotmap_server::Server::receive",
            source: SLOTMAP_SOURCE,
            line_text: "self.in_flight.insert(Request {",
            buffers: SLOTMAP_LEAKS,
            bytes_each: REQUEST_BYTES,
            allocations: SLOTMAP_REQUESTS,
            releases: SLOTMAP_REQUESTS - SLOTMAP_LEAKS,
        },
    );
    let (status, _) = observer.stop();
    assert!(status.success(), "{status}");
}

/// A stock slotmap server: the message says what build setting would let
/// the inlined insert be followed.
pub fn slotmap_stock_build_says_which_build_setting_is_needed() {
    let server = Server::start("stock", "slotmap-server");
    let pid = server.pid().to_string();
    let mut args = vec!["attach", "--pid", pid.as_str()];
    args.extend(slotmap_auto());
    let (code, _, stderr) = observer_command(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "the binary has no DWARF to confirm it, and inlined functions are followed only \
             with full DWARF: build with debug = 2"
        ),
        "{stderr}"
    );
}

/// `inspect` shows what the key is and why the release's `bool` result
/// cannot be an identity, before anything is attached.
pub fn inspect_says_what_the_key_is_and_what_is_no_identity() {
    let binary = corpus_dir().join("real-crates-full/release/sharded-slab-server");
    let (code, stdout, stderr) = observer_command(&[
        "inspect",
        binary.to_str().unwrap(),
        "sharded_slab::Slab<*>::insert",
        "sharded_slab::Slab<*>::remove",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "as --alloc-id auto: ret.1 (Option<usize> (16 bytes) returns the integer key (usize) in Some in rdx"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("the id is an integer key (usize) scoped to the pool at arg0"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("pool (`self`) at entry: arg0, what an integer key")
            .count(),
        2,
        "insert's and remove's: {stdout}"
    );
    assert!(
        stdout.contains(
            "as --alloc-id auto: not inferable: bool has two values, so it cannot tell buffers apart"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "as --release-id auto: arg1 (parameter `idx` (usize) is an integer key, in arg1)"
        ),
        "{stdout}"
    );
}

/// `attach` refuses an inferred id that cannot tell buffers apart, with
/// the reason, before anything is attached: here the pool's `remove`
/// named as allocate returns a `bool`.
pub fn attach_refuses_an_inferred_id_that_is_no_identity() {
    let server = Server::start("full", "sharded-slab-server");
    let pid = server.pid().to_string();
    let (code, _, stderr) = observer_command(&[
        "attach",
        "--pid",
        pid.as_str(),
        "--alloc",
        "sharded_slab::Slab<*>::remove",
        "--release",
        "sharded_slab::Slab<*>::insert",
        "--size",
        "8",
        "--alloc-id",
        "auto",
        "--release-id",
        "arg1",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "observer: error: --alloc-id auto: bool has two values, so it cannot tell buffers apart; \
         it is not a buffer's identity: write it explicitly\n"
    );
}
