//! `--max-overhead`: the probes' CPU time, measured by the kernel, over a
//! tiny budget on a target that allocates as fast as it can: the session
//! stops with a final report, a clear message and exit status 3, and
//! nothing stays in the target.

use crate::support::*;

pub fn max_overhead_stops_the_session_with_a_final_report() {
    let mut bench = PoolBench::start(&["--pairs", "2000000000", "--depth", "16"]);
    let pid = bench.pid();
    let probed = ProbedBytes::of(pid);
    let observer = Observer::attach(
        pid,
        &[
            "--max-overhead",
            "0.5",
            "--interval",
            "500ms",
            // pool-bench's allocate could panic (its Vec can): observed
            // from its call sites, the cheapest safe way here.
        ],
    );
    bench.go();
    let (status, report, stderr) = observer.exit_with_report();
    assert_eq!(status.code(), Some(3), "{stderr:?}");
    assert_eq!(report["reason"], "overhead");
    let cost = &report["cost"];
    assert_eq!(cost["source"], "kernel", "{cost:#}");
    let percent = cost["cpu_percent"].as_f64().unwrap();
    assert!(percent > 0.5, "{cost:#}");
    assert!(cost["probe_hits"].as_u64().unwrap() > 0);
    let enter = cost["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["program"] == "pool_alloc_enter")
        .expect("the entry probe's statistics");
    let counters = &report["counters"];
    let alloc_calls = counters["alloc_calls"].as_u64().unwrap();
    assert!(alloc_calls > 0);
    // The cost is the final report's own, not an earlier interval's: it
    // covers every probe hit the report counts (the programs' statistics
    // are read after the counters, while the target still runs).
    assert_eq!(
        cost["probe_hits"].as_u64().unwrap(),
        2 * alloc_calls + counters["release_calls"].as_u64().unwrap(),
        "{cost:#}"
    );
    assert!(enter["runs"].as_u64().unwrap() >= alloc_calls, "{cost:#}");
    // What the maps and programs hold in the kernel, as the kernel charges
    // it (issue 10's bound: at most the 28.8 MB the observer held before
    // its per-thread tables were allocated as threads come).
    let memory = cost["kernel_memory_bytes"].as_u64().unwrap();
    assert!((1 << 20..=28_800_000).contains(&memory), "{cost:#}");
    let stopping = stderr
        .iter()
        .find(|l| l.contains("above --max-overhead 0.5%; stopping"))
        .unwrap_or_else(|| panic!("no stop message: {stderr:?}"));
    assert!(
        stopping.contains("% of one CPU over the last"),
        "{stopping}"
    );
    let last = stderr.last().unwrap();
    assert!(
        last.starts_with("observer: stopped by --max-overhead: "),
        "{last}"
    );
    eprintln!("measured: {stopping}; {}", cost);
    // The target goes on without probes.
    probed.assert_unchanged("after --max-overhead");
    assert!(bench.pid() == pid);
}
