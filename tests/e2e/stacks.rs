//! Stacks walked with the thread's cached walk are exact: frames are
//! taken from the previous walk only where every stack slot it read still
//! holds what it held, so call chains that share a stack pointer but not
//! their callers are never merged.

use std::time::Duration;

use crate::support::*;

/// Call chains, and buffers kept from each.
const CHAINS: u64 = 256;
const PER_CHAIN: u64 = 16;

/// `pool-bench --keep` allocates each buffer from one of [`CHAINS`] call
/// chains ten frames deep, a different chain from the last allocation's
/// every time, at the same stack pointers: in counting order the chains
/// differ near the allocation, in bit-reversed order far from it (the
/// frames near the allocation, where a walk joins the cached one, are
/// the same). Every chain must come out as its own stack with exactly its
/// buffers, with frames both reused and re-walked after a changed slot.
pub fn chains_that_share_stack_pointers_are_never_merged() {
    for order in ["counting", "bit-reversed"] {
        let report = keep_and_report(order);
        let counters = &report["counters"];
        assert_eq!(int(&counters["stacks_broken"]), 0, "{order}: {counters:#}");
        assert!(int(&counters["frames_reused"]) > 0, "{order}: {counters:#}");
        assert!(
            int(&counters["walk_cache_mismatches"]) > 0,
            "{order}: {counters:#}"
        );
        assert_eq!(
            int(&report["outstanding"]["buffers"]),
            (CHAINS * PER_CHAIN) as i64,
            "{order}"
        );
        let stacks: Vec<&serde_json::Value> = sites(&report)
            .iter()
            .flat_map(|site| site["stacks"].as_array().unwrap())
            .collect();
        assert_eq!(stacks.len() as u64, CHAINS, "{order}: {report:#}");
        for stack in stacks {
            assert_eq!(int(&stack["buffers"]), PER_CHAIN as i64, "{order}: {stack}");
            assert_eq!(stack["ending"], "complete", "{order}: {stack}");
        }
    }
}

/// Runs `pool-bench --keep` in `order` under the observer and returns the
/// report taken while every buffer is kept.
fn keep_and_report(order: &str) -> serde_json::Value {
    let (kept, chains) = ((CHAINS * PER_CHAIN).to_string(), CHAINS.to_string());
    let mut bench = PoolBench::start(&["--keep", &kept, "--stacks", &chains, "--order", order]);
    let mut observer = Observer::attach(bench.pid(), &[]);
    bench.go();
    let done = bench.stdout.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(done, format!("kept {kept}"));
    let report = observer.report();
    let _ = observer.stop();
    report
}
