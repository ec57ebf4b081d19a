//! Targets and observers in containers' PID namespaces (made here with
//! util-linux's `unshare` and `nsenter`): the exact leak either way, the
//! target's PIDs as each side knows them, nothing left in the target.

use std::process::Command;

use crate::ci_gate::leak_check_in;
use crate::support::*;

const FRAME_BUFFER: i64 = 256;
const CYCLES: usize = 40;

/// The gateway as the first process (PID 1) of a new PID and mount
/// namespace with its own `/proc`, as a container runs its server.
fn gateway_in_new_pid_namespace() -> Gateway {
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .arg(gateway_program())
        .args(["--listen", "127.0.0.1:0"]);
    let gateway = Gateway::spawn(command, only_child_of);
    assert_eq!(
        namespace_pids(gateway.pid()).last(),
        Some(&1),
        "the gateway is its namespace's first process"
    );
    gateway
}

/// The gateway as PID 1 of a PID namespace nested in another new one
/// (a container inside a container); returns it and the namespace files
/// an observer joins to run in the outer one: the outer namespace's first
/// process's PID namespace, and the outer `unshare`'s mount namespace,
/// whose `/proc` is the outer namespace's (the inner `unshare` has moved
/// on to the inner one's).
fn gateway_in_nested_pid_namespace() -> (Gateway, [String; 2]) {
    let new_namespace = ["--pid", "--fork", "--mount-proc", "--kill-child", "--"];
    let mut command = Command::new("unshare");
    command
        .args(new_namespace)
        .arg("unshare")
        .args(new_namespace)
        .arg(gateway_program())
        .args(["--listen", "127.0.0.1:0"]);
    let mut outer = [String::new(), String::new()];
    let gateway = Gateway::spawn(command, |unshare| {
        let outer_first = only_child_of(unshare);
        outer = [
            format!("--pid=/proc/{outer_first}/ns/pid"),
            format!("--mount=/proc/{unshare}/ns/mnt"),
        ];
        only_child_of(outer_first)
    });
    assert_eq!(namespace_pids(gateway.pid()).len(), 3);
    (gateway, outer)
}

/// `NStgid` of `/proc/PID/status`: the process's IDs from this
/// namespace's down to its own.
fn namespace_pids(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("NStgid:"))
        .expect("NStgid line")
        .split_ascii_whitespace()
        .map(|id| id.parse().unwrap())
        .collect()
}

/// The exact leak of [`CYCLES`] disconnects, in a report whose target
/// PID is `pid` (and `namespace_pid`), with the books balanced.
fn assert_exact_leak(report: &serde_json::Value, pid: u32, namespace_pid: Option<u32>) {
    assert_eq!(report["target"]["pid"], pid, "{:#}", report["target"]);
    assert_eq!(
        report["target"]["namespace_pid"],
        serde_json::json!(namespace_pid),
        "{:#}",
        report["target"]
    );
    let leak = site_through(report, "say_goodbye");
    assert_eq!(leak["rank"], 1, "the leak is the top site");
    assert_eq!(int(&leak["buffers"]), CYCLES as i64);
    assert_eq!(int(&leak["bytes"]), CYCLES as i64 * FRAME_BUFFER);
    assert_eq!(frames(leak)[0]["function"], ALLOC);
    assert!(has_frame(leak, "leaky_gateway::codec::Encoder::encode"));
    for site in sites(report) {
        if !has_frame(site, "say_goodbye") {
            assert_eq!(int(&site["buffers"]), 0, "healthy site: {site:#}");
        }
    }
    assert_eq!(int(&report["counters"]["unknown_releases"]), 0);
    assert_accounting_balances(report);
}

/// `kubectl debug --target` / a pod sharing its process namespace: the
/// observer joins the container's PID (and mount) namespace and is given
/// the gateway's PID there, 1. The programs then compare PIDs in that
/// namespace (`bpf_get_ns_current_pid_tgid`).
pub fn observer_inside_the_targets_pid_namespace() {
    let gateway = gateway_in_new_pid_namespace();
    let probed = ProbedBytes::of(gateway.pid());
    let mut command = Command::new("nsenter");
    command
        .args(["--target", &gateway.pid().to_string(), "--pid", "--mount"])
        .arg("--")
        .arg(observer_path())
        .args(attach_arguments(1, &SPEC, &[]));
    let mut observer = Observer::spawn(command, only_child_of);
    assert_eq!(
        namespace_pids(observer.pid()).len(),
        2,
        "the observer runs in the gateway's namespace, below this one"
    );

    gateway.chat(CYCLES, 3);
    let report = observer.report();
    assert_eq!(report["reason"], "signal");
    // Both in one namespace: the PID it was given is the target's own.
    assert_exact_leak(&report, 1, None);

    let (status, last) = observer.stop();
    assert!(status.success(), "{status}");
    assert_eq!(int(&last["outstanding"]["buffers"]), CYCLES as i64);
    probed.assert_unchanged("after the observer in the namespace detached");
    assert_eq!(gateway.stop(), CYCLES as i64);
}

/// The observer in one container, the gateway in a container nested in
/// it: the observer is given the gateway's PID in its own namespace (2);
/// the programs compare the gateway's PID in the gateway's namespace (1),
/// the only one the kernel helper answers for.
pub fn observer_in_a_namespace_target_in_a_nested_one() {
    let (gateway, outer) = gateway_in_nested_pid_namespace();
    let probed = ProbedBytes::of(gateway.pid());
    let ids = namespace_pids(gateway.pid());
    let (outer_pid, own_pid) = (ids[1], ids[2]);
    assert_eq!(own_pid, 1);
    let mut command = Command::new("nsenter");
    command
        .args(&outer)
        .arg("--")
        .arg(observer_path())
        .args(attach_arguments(outer_pid, &SPEC, &[]));
    let mut observer = Observer::spawn(command, only_child_of);

    gateway.chat(CYCLES, 3);
    let report = observer.report();
    assert_exact_leak(&report, outer_pid, Some(own_pid));

    let (status, _) = observer.stop();
    assert!(status.success(), "{status}");
    probed.assert_unchanged("after the observer in the outer namespace detached");
    assert_eq!(gateway.stop(), CYCLES as i64);
}

/// The observer on the host, the gateway in a container: the host PID is
/// the one given (and compared, with the kernel's own IDs); the report
/// also names the PID the container knows it by.
pub fn observer_on_the_host_target_in_a_container() {
    let gateway = gateway_in_new_pid_namespace();
    let probed = ProbedBytes::of(gateway.pid());
    let before_attach = 10;
    gateway.chat(before_attach, 2);
    let mut observer = Observer::attach(gateway.pid(), &[]);
    let attached = observer
        .stderr()
        .into_iter()
        .find(|line| line.starts_with("observer: attached"))
        .unwrap();
    let expected = format!(
        "observer: attached to pid {}, 1 in its PID namespace (",
        gateway.pid()
    );
    assert!(attached.starts_with(&expected), "{attached}");

    gateway.chat(CYCLES, 3);
    let report = observer.report();
    assert_exact_leak(&report, gateway.pid(), Some(1));
    let text = observer.control(gateway.pid(), &["report", "--format", "text"]);
    let header = format!(
        "pool leak report: pid {}, 1 in its PID namespace (",
        gateway.pid()
    );
    assert!(text.starts_with(&header), "{text}");

    let (status, _) = observer.stop();
    assert!(status.success(), "{status}");
    probed.assert_unchanged("after the host's observer detached");
    assert_eq!(gateway.stop(), (before_attach + CYCLES) as i64);
}

/// An observer in a new PID namespace that still sees the host's `/proc`
/// (no `--mount-proc`): PIDs there name other processes than the kernel
/// calls would, so it refuses before anything is attached.
pub fn a_proc_of_another_namespace_is_refused() {
    let gateway = Gateway::start();
    let probed = ProbedBytes::of(gateway.pid());
    let output = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--"])
        .arg(observer_path())
        .args(attach_arguments(gateway.pid(), &SPEC, &[]))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "observer: error: /proc belongs to another PID namespace (it shows this process as PID "
        ),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    probed.assert_unchanged("after the refusal");
    gateway.chat(3, 1);
    assert_eq!(gateway.stop(), 3);
}

/// `observer run` as a container's entry point: docs/ci.md's script, the
/// observer and the gateway it launches all in a new PID namespace (the
/// script is its first process). The command's PID is one of that
/// namespace, the one the programs compare in: the run fails with exactly
/// the disconnect leak.
pub fn observer_run_inside_a_pid_namespace_gates_the_leak() {
    let new_namespace = [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
    ];
    let run = leak_check_in(&new_namespace, &observer_path(), &targets_dir(), &[]);
    assert_eq!(run.code, Some(1), "leak found means exit 1: {}", run.stderr);
    let verdict = &run.report["verdict"];
    assert_eq!(
        int(&verdict["counted_buffers"]),
        crate::ci_gate::CYCLES as i64
    );
    assert_eq!(
        int(&verdict["counted_bytes"]),
        crate::ci_gate::CYCLES as i64 * FRAME_BUFFER
    );
    assert_eq!(run.report["command"]["exit_code"], 0);
    assert_eq!(
        run.report["target"]["namespace_pid"],
        serde_json::Value::Null
    );
    let pid = int(&run.report["target"]["pid"]);
    assert!(pid < 100, "a PID of the new namespace: {pid}");
    let leak = site_through(&run.report, "say_goodbye");
    assert_eq!(
        int(&leak["judgement"]["counted_buffers"]),
        crate::ci_gate::CYCLES as i64
    );
    assert_counters_add_up(&run.report);
}
