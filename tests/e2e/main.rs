//! End-to-end tests: the real observer, real uprobes in this kernel, the
//! real leaky gateway driven by real TCP sessions.
//!
//! They need root (or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE) and a kernel
//! with uprobes, and fail when either is missing. Set
//! `OBSERVER_SKIP_EBPF_TESTS=1` to skip them explicitly on a machine without
//! eBPF (CI never sets it). `OBSERVER_TARGETS_DIR` must name the directory
//! of the built target programs; `cargo xtask test` sets it. Run them one at
//! a time (`--test-threads=1`): some check that no program of ours stays
//! loaded after an observer exits.

mod ci_gate;
mod corpus;
mod detach;
mod errors;
mod growth_and_diff;
mod hostile_input;
mod leak_report;
mod support;
