//! The corpus: `leak-corpus` built the ways binaries ship (no debug info,
//! line tables, split and stripped), leaking from known lines, observed
//! with the in-kernel unwinder (no frame pointers anywhere).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};

use serde_json::Value;

use crate::support::*;

const DEEP: [&str; 10] = [
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
const GENERIC: [&str; 10] = [
    "--alloc",
    "TypedPool<*>::take",
    "--size",
    "1",
    "--alloc-id",
    "ret",
    "--release",
    "TypedPool<*>::give_back",
    "--release-id",
    "arg1",
];
const INLINED: [&str; 10] = [
    "--alloc",
    "FramePool<*>::get",
    "--size",
    "512",
    "--alloc-id",
    "auto",
    "--release",
    "FramePool<*>::put",
    "--release-id",
    "auto",
];
const PARSER: &str = "tests/leak-corpus/src/parser.rs";
const FRAMES: &str = "tests/leak-corpus/src/frames.rs";
const LEAKS: i64 = 25;

pub fn corpus_dir() -> PathBuf {
    std::env::var_os("OBSERVER_CORPUS_DIR")
        .map(PathBuf::from)
        .expect("OBSERVER_CORPUS_DIR is not set: run the tests with `cargo xtask test`")
}

/// A running `leak-corpus MODE`, waiting for the word to start.
pub struct Corpus {
    child: Guarded,
    stdin: ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Corpus {
    pub fn start(build: &str, mode: &str) -> Self {
        let binary = corpus_dir().join(format!("corpus-{build}/release/leak-corpus"));
        let mut child = Command::new(&binary)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
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

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Lets it work and waits until it is done (it stays alive).
    pub fn run(&mut self) {
        self.stdin.write_all(b"go\n").unwrap();
        let done = self.stdout.next().unwrap().unwrap();
        assert!(done.starts_with("done"), "{done}");
    }

    /// Tells it to end (closes its input) and returns how it ended.
    pub fn finish(self) -> std::process::ExitStatus {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        child.0.wait().unwrap()
    }
}

/// Observes one run of `mode` in `build` and returns the report.
fn observe(build: &str, mode: &str, spec: &[&str]) -> Value {
    let mut corpus = Corpus::start(build, mode);
    let debug_dir = corpus_dir().join("corpus-split/debug");
    let extra = ["--debug-dir", debug_dir.to_str().unwrap()];
    let mut observer = Observer::attach_with(corpus.pid(), spec, &extra);
    corpus.run();
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success());
    report
}

fn functions(site: &Value) -> Vec<String> {
    frames(site)
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The leak's site: the one holding buffers.
fn leak(report: &Value) -> &Value {
    let site = &sites(report)[0];
    assert_eq!(int(&site["buffers"]), LEAKS, "{report:#}");
    site
}

/// Walked to the process's entry: `main` is on the stack and every walk
/// ended at an entry point.
fn assert_reaches_main(site: &Value) {
    let names = functions(site);
    assert!(names.iter().any(|n| n == "leak_corpus::main"), "{names:?}");
    for stack in site["stacks"].as_array().unwrap() {
        assert_eq!(stack["ending"], "complete", "{site:#}");
    }
}

/// The frame of the inlined `parse_number` at its `allocate` call: named
/// by its bare name with line tables only, by its path with full DWARF.
fn allocating_parse_number(site: &Value) -> &Value {
    let call = frames(site)
        .iter()
        .find(|f| {
            f["function"]
                .as_str()
                .is_some_and(|n| n.ends_with("parse_number"))
        })
        .unwrap_or_else(|| panic!("no parse_number frame: {site:#}"));
    assert_eq!(call["inlined"], true);
    assert!(call["file"].as_str().unwrap().ends_with(PARSER));
    assert_eq!(call["line"], source_line(PARSER, "self.pool.allocate(32)"));
    call
}

/// 40 levels of nested lists, one physical `parse_value` frame each.
fn assert_deep(site: &Value) {
    let names = functions(site);
    let levels = names.iter().filter(|n| n.ends_with("parse_value")).count();
    assert!(levels >= 40, "{levels} parse_value frames in {names:?}");
    assert!(names.len() >= 45, "{} frames", names.len());
}

pub fn stock_build_without_debug_info() {
    let report = observe("stock", "deep", &DEEP);
    let site = leak(&report);
    // No DWARF: the inlined parse_number is not visible; the out-of-line
    // function it was inlined into is, by its symbol.
    assert_eq!(
        frames(site)[1]["function"],
        "leak_corpus::parser::Parser::parse_value"
    );
    let ours = frames(site).iter().filter(|f| {
        f["module"]
            .as_str()
            .is_some_and(|m| m.ends_with("leak-corpus"))
    });
    assert!(ours.clone().count() > 40);
    assert!(
        ours.into_iter().all(|f| f["line"].is_null()),
        "no line tables: {site:#}"
    );
    assert_deep(site);
    assert_reaches_main(site);
    let debug: Vec<&Value> = report["debug_info"].as_array().unwrap().iter().collect();
    assert!(debug.iter().any(|d| d["module"]
        .as_str()
        .unwrap()
        .ends_with("corpus-stock/release/leak-corpus")
        && d["source"] == "none"));
}

pub fn line_tables_give_file_and_line() {
    let report = observe("line-tables", "deep", &DEEP);
    let site = leak(&report);
    assert_eq!(allocating_parse_number(site)["function"], "parse_number");
    assert_deep(site);
    assert_reaches_main(site);
}

pub fn split_debug_file_found_by_build_id_for_a_stripped_binary() {
    let report = observe("split", "deep", &DEEP);
    let site = leak(&report);
    assert_eq!(
        allocating_parse_number(site)["function"],
        "leak_corpus::parser::Parser::parse_number"
    );
    assert_deep(site);
    assert_reaches_main(site);
    let exe = report["debug_info"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["module"]
                .as_str()
                .unwrap()
                .ends_with("corpus-split/release/leak-corpus")
        })
        .expect("the executable's debug info");
    assert_eq!(exe["source"], "build-id");
    assert!(exe["file"].as_str().unwrap().contains("/.build-id/"));
}

pub fn generic_pool_copies_are_all_probed_and_told_apart() {
    let report = observe("split", "generic", &GENERIC);
    let copies = report["probes"][0]["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "one copy per message type");
    let labels: Vec<&str> = copies
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert!(labels.iter().any(|l| l.contains("Chat")), "{labels:?}");
    assert!(labels.iter().any(|l| l.contains("Presence")), "{labels:?}");
    let site = leak(&report);
    let copy = int(&site["stacks"][0]["copy"]) as usize;
    assert!(
        labels[copy].contains("Chat"),
        "leaked envelopes are chats: {labels:?}"
    );
    assert!(functions(site).iter().any(|n| n.ends_with("Router::chat")));
    assert_reaches_main(site);
    // Without DWARF the copies are still told apart, by address.
    let report = observe("stock", "generic", &GENERIC);
    let labels: Vec<String> = report["probes"][0]["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap().to_string())
        .collect();
    assert!(
        labels.iter().all(|l| l.starts_with("copy at 0x")),
        "{labels:?}"
    );
    assert_ne!(labels[0], labels[1]);
    assert_eq!(int(&leak(&report)["buffers"]), LEAKS);
}

pub fn auto_locations_from_full_dwarf() {
    let spec = [
        "--alloc",
        "bufpool::BufPool::allocate",
        "--size",
        "auto",
        "--alloc-id",
        "auto",
        "--release",
        "bufpool::BufPool::release",
        "--release-id",
        "auto",
    ];
    let report = observe("split", "deep", &spec);
    let locations = &report["locations"];
    assert_eq!(locations["alloc_id"], RESULT_ID);
    assert_eq!(locations["size"], RESULT_SIZE);
    assert_eq!(locations["release_id"], "*arg1");
    assert_eq!(locations["inferred"].as_array().unwrap().len(), 3);
    assert_eq!(
        int(&leak(&report)["bytes"]),
        LEAKS * 64,
        "32 bytes asked, the 64-byte class given"
    );

    // Without types (line tables only) `auto` is refused with the reason.
    let mut corpus = Corpus::start("line-tables", "deep");
    let pid = corpus.pid().to_string();
    let mut args = vec!["attach", "--pid", pid.as_str()];
    args.extend(spec);
    let (code, _, stderr) = observer_command(&args);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`auto` locations need DWARF with types"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    corpus.run();
}

pub fn release_inlined_everywhere_is_probed_where_control_enters_each_instance() {
    let report = observe("split", "inlined", &INLINED);
    let release = &report["probes"][1];
    assert_eq!(release["inlined"], true, "{release:#}");
    let labels: Vec<&str> = release["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    for caller in ["Reassembler::fragment", "Reassembler::keep_alive"] {
        assert!(labels.iter().any(|l| l.contains(caller)), "{labels:?}");
    }
    // Every release was seen, once, with the right id: all but the leaked
    // frames matched, none unknown, no id handed out twice.
    let counters = &report["counters"];
    assert_eq!(
        int(&counters["releases"]),
        int(&counters["allocations"]) - LEAKS,
        "{counters:#}"
    );
    assert_eq!(int(&counters["release_calls"]), int(&counters["releases"]));
    assert_eq!(int(&counters["unknown_releases"]), 0);
    assert_eq!(int(&counters["reallocated_ids"]), 0);
    assert!(report["locations"]["release_id"]
        .as_str()
        .unwrap()
        .starts_with("per inlined instance"));
    let site = leak(&report);
    assert_eq!(int(&site["bytes"]), LEAKS * 512);
    let names = functions(site);
    assert_eq!(names[0], "bufpool::FramePool<_>::get", "{names:?}");
    let fragment = frames(site)
        .iter()
        .find(|f| f["function"] == "leak_corpus::frames::Reassembler::fragment")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(fragment["line"], source_line(FRAMES, "self.pool.get()"));
    assert_reaches_main(site);
}

pub fn inlined_release_needs_auto_and_full_dwarf() {
    let pid_of = |corpus: &Corpus| corpus.pid().to_string();
    let mut given = INLINED;
    given[9] = "r13";
    let mut corpus = Corpus::start("split", "inlined");
    let debug_dir = corpus_dir().join("corpus-split/debug");
    let pid = pid_of(&corpus);
    let mut args = vec!["attach", "--pid", pid.as_str()];
    args.extend(given);
    args.extend(["--debug-dir", debug_dir.to_str().unwrap()]);
    let (code, _, stderr) = observer_command(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("use --release-id auto"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    corpus.run();

    // Line tables name the instances but not where the frame is.
    let mut corpus = Corpus::start("line-tables", "inlined");
    let pid = pid_of(&corpus);
    let mut args = vec!["attach", "--pid", pid.as_str()];
    let mut explicit_alloc = INLINED;
    explicit_alloc[5] = "ret";
    args.extend(explicit_alloc);
    let (code, _, stderr) = observer_command(&args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("inlined at"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    corpus.run();
}

/// `observer inspect` on the split build, with its debug directory.
fn inspect_split(patterns: &[&str]) -> (Option<i32>, String, String) {
    let binary = corpus_dir().join("corpus-split/release/leak-corpus");
    let debug_dir = corpus_dir().join("corpus-split/debug");
    let mut args = vec!["inspect", binary.to_str().unwrap()];
    args.extend(patterns);
    args.extend(["--debug-dir", debug_dir.to_str().unwrap()]);
    observer_command(&args)
}

pub fn inspect_lists_inlined_instances_and_their_entries() {
    let (code, stdout, stderr) = inspect_split(&["FramePool<*>::put"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("no out-of-line copy; inlined at 2 places"),
        "{stdout}"
    );
    assert!(
        stdout.contains("in leak_corpus::frames::Reassembler::fragment"),
        "{stdout}"
    );
    assert!(stdout.contains("entered at 0x"), "{stdout}");
    assert!(stdout.contains("as --release-id auto: r"), "{stdout}");
}

pub fn inspect_shows_copies_signatures_and_probe_points() {
    let (code, stdout, stderr) = inspect_split(&["BufPool::allocate", "TypedPool<*>::take"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("DWARF from") && stdout.contains("/.build-id/"),
        "{stdout}"
    );
    assert!(stdout.contains("as --alloc-id auto: *arg0"), "{stdout}");
    assert!(
        stdout.contains("take<leak_corpus::router::Chat>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("take<leak_corpus::router::Presence>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("probe point: push rbp (emulated by the kernel)"),
        "{stdout}"
    );
    let stock = corpus_dir().join("corpus-stock/release/leak-corpus");
    let (code, _, stderr) =
        observer_command(&["inspect", stock.to_str().unwrap(), "Parser::parse_number"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("probably inlined into its callers"),
        "{stderr}"
    );
}

/// Runs `leak-corpus deep` (line tables) from a copy the observer cannot
/// open by its path: `deleted` removes the file once it runs; `namespace`
/// runs it from a tmpfs only its own mount namespace has.
fn hidden_corpus(
    how: &str,
) -> (
    Guarded,
    ChildStdin,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let source = corpus_dir().join("corpus-line-tables/release/leak-corpus");
    let dir = std::env::temp_dir().join(format!("observer-hidden-{}-{how}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("leak-corpus");
    let mut command = if how == "deleted" {
        std::fs::copy(&source, &copy).unwrap();
        let mut command = Command::new(&copy);
        command.arg("deep");
        command
    } else {
        let script = format!(
            "mount -t tmpfs none {0} && cp {1} {0}/leak-corpus && exec {0}/leak-corpus deep",
            dir.display(),
            source.display()
        );
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        command
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(stdout.next().unwrap().unwrap(), "ready");
    if how == "deleted" {
        std::fs::remove_file(&copy).unwrap();
    }
    assert!(
        !copy.exists(),
        "{how}: the observer must not find it by path"
    );
    (Guarded(child), stdin, stdout)
}

pub fn deleted_binaries_and_other_mount_namespaces_are_symbolized() {
    for how in ["deleted", "namespace"] {
        let (child, mut stdin, mut stdout) = hidden_corpus(how);
        let mut observer = Observer::attach_with(child.0.id(), &DEEP, &[]);
        stdin.write_all(b"go\n").unwrap();
        assert!(stdout.next().unwrap().unwrap().starts_with("done"));
        let report = observer.report();
        let site = leak(&report);
        allocating_parse_number(site);
        assert_reaches_main(site);
        let (status, _) = observer.stop();
        assert!(status.success(), "{how}");
    }
}
