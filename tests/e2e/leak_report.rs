//! The leak story, end to end: which stack holds the buffers that the
//! disconnect path never gives back.

use serde_json::Value;

use crate::support::*;

const CODEC: &str = "tests/leaky-gateway/src/codec.rs";
const SESSION: &str = "tests/leaky-gateway/src/session.rs";
const FRAME_BUFFER: i64 = 256;

pub fn disconnect_leak_is_reported_by_allocating_stack() {
    let gateway = Gateway::start();
    let before_attach = 30;
    gateway.chat(before_attach, 3);

    let mut observer = Observer::attach(gateway.pid(), &[]);
    let cycles = 100;
    gateway.chat(cycles, 3);
    let report = observer.report();

    assert_eq!(report["reason"], "signal");
    assert_eq!(report["target"]["pid"], gateway.pid());
    let leak = site_through(&report, "say_goodbye");
    assert_eq!(leak["rank"], 1, "the leak is the top site");
    assert_eq!(int(&leak["buffers"]), cycles as i64);
    assert_eq!(int(&leak["bytes"]), cycles as i64 * FRAME_BUFFER);
    assert!(leak["oldest_secs"].as_f64().unwrap() >= leak["newest_secs"].as_f64().unwrap());
    let encoder = frames(leak)
        .iter()
        .find(|f| f["function"] == "leaky_gateway::codec::Encoder::encode")
        .unwrap_or_else(|| panic!("no encoder frame: {leak:#}"));
    assert!(
        encoder["file"].as_str().unwrap().ends_with(CODEC),
        "{encoder}"
    );
    assert_eq!(encoder["line"], source_line(CODEC, ".allocate("));
    let allocate = &frames(leak)[0];
    assert_eq!(allocate["function"], ALLOC);
    // A stock release build (no frame pointers): the unwind tables carry
    // the walk to the thread's start.
    for stack in leak["stacks"].as_array().unwrap() {
        assert_eq!(stack["ending"], "complete", "{leak:#}");
    }
    assert_eq!(report["counters"]["stacks_broken"], 0);
    // A tokio worker thread: the walk ends at the thread's start in libc.
    // When the grouped stacks differ below the frames shown, the rest of
    // the largest one is in largest_stack_rest.
    let rest = leak["largest_stack_rest"].as_array().unwrap();
    let outermost = rest.last().unwrap_or_else(|| frames(leak).last().unwrap());
    assert!(
        starts_threads_in_glibc(outermost),
        "outermost frame {outermost}: {leak:#}"
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
    let healthy = sites(&report)
        .iter()
        .filter(|s| has_frame(s, "converse"))
        .count();
    assert!(
        healthy >= 2,
        "welcome and ack paths are sites too: {report:#}"
    );
    assert_eq!(int(&report["counters"]["unknown_releases"]), 0);
    assert_accounting_balances(&report);

    let (status, last) = observer.stop();
    assert!(status.success(), "{status}");
    assert_eq!(last["reason"], "stop");
    assert_eq!(last["target"]["exited"], false);
    let seen = int(&last["outstanding"]["buffers"]);
    // The pool's own private counter agrees, minus what leaked before attach.
    assert_eq!(gateway.stop(), before_attach as i64 + seen);
}

/// Whether `frame` is glibc's code that starts a thread, named: a
/// function named for clone (x86-64's `clone3`: the thread-start code of
/// clone3.S has no symbol of its own), or one of glibc's clone.S and
/// clone3.S (arm64's glibc 2.36, Debian 12's, starts threads through
/// clone.S, whose thread-start code is the local symbol `thread_start`,
/// named from Debian's libc6-dbg). A frame without a name is not.
fn starts_threads_in_glibc(frame: &Value) -> bool {
    let Some(function) = frame["function"].as_str() else {
        return false;
    };
    let file = frame["file"].as_str().unwrap_or_default();
    let file_name = file.rsplit('/').next().unwrap_or_default();
    function.contains("clone") || matches!(file_name, "clone.S" | "clone3.S")
}

pub fn buffers_outstanding_at_attach_are_not_misattributed() {
    let gateway = Gateway::start();
    let held = 12;
    // Each held session owns its inbox buffer from before the attach.
    let sessions = gateway.hold(held);

    let mut observer = Observer::attach(gateway.pid(), &[]);
    sessions.release();
    gateway.chat(5, 2);
    let report = observer.report();

    let counters = &report["counters"];
    assert_eq!(
        int(&counters["unknown_releases"]),
        held as i64,
        "{counters:#}"
    );
    let leak = site_through(&report, "say_goodbye");
    assert_eq!(int(&leak["buffers"]), held as i64 + 5);
    let inbox_line = source_line(SESSION, "self.pool.allocate(INBOX_SIZE)");
    for site in sites(&report) {
        let allocates_inbox = frames(site).iter().any(|f| f["line"] == inbox_line);
        if allocates_inbox {
            assert_eq!(int(&site["buffers"]), 0, "inbox site: {site:#}");
            assert_eq!(
                int(&site["total_allocations"]),
                5,
                "only inboxes allocated after attach"
            );
        }
    }
    assert_accounting_balances(&report);
    let (status, _) = observer.stop();
    assert!(status.success());
}

pub fn target_exiting_while_attached_still_gets_a_report() {
    let mut gateway = Gateway::start();
    let observer = Observer::attach(gateway.pid(), &[]);
    gateway.chat(10, 1);
    gateway.kill();

    let stderr_of = |o: &Observer| o.stderr();
    let stderr_snapshot = stderr_of(&observer);
    let (status, report) = observer.wait_exit();
    assert_eq!(status.code(), Some(2), "stderr so far: {stderr_snapshot:?}");
    assert_eq!(report["reason"], "target-exited");
    assert_eq!(report["target"]["exited"], true);
    let leak = site_through(&report, "say_goodbye");
    assert_eq!(int(&leak["buffers"]), 10);
    // Symbolized from the mappings cached while the process was alive.
    assert!(has_frame(leak, "leaky_gateway::codec::Encoder::encode"));
}
