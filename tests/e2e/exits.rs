//! Every way out: a session that fails while attached still gives its
//! final report (or, when even that cannot be written, its counters)
//! before its one error line; and a stop signal at any moment of the start
//! ends the observer at once with nothing left in the target.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// A fresh directory under the system's temporary one, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("observer-e2e-exits-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The chart's directory disappears while attached: the on-demand report
/// that follows cannot draw it, which ends the session, and the final
/// report still comes, with the buffers leaked while attached, before the
/// error line.
pub fn an_error_while_attached_still_gives_the_final_report() {
    let scratch = Scratch::new("chart");
    let charts = scratch.0.join("charts");
    std::fs::create_dir(&charts).unwrap();
    let chart = charts.join("chart.svg");
    let gateway = Gateway::start();
    let probed = ProbedBytes::of(gateway.pid());
    let mut observer = Observer::attach(gateway.pid(), &["--chart", chart.to_str().unwrap()]);
    gateway.chat(5, 1);
    std::fs::remove_dir_all(&charts).unwrap();
    let on_demand = observer.report();
    assert_eq!(on_demand["reason"], "signal");

    let (status, report, stderr) = observer.exit_with_report();
    assert_eq!(status.code(), Some(2), "{stderr:?}");
    assert_eq!(report["reason"], "error", "{report:#}");
    assert_eq!(int(&report["outstanding"]["buffers"]), 5, "{report:#}");
    site_through(&report, "say_goodbye");
    assert!(
        stderr
            .iter()
            .any(|line| line.starts_with("observer: detached from pid")),
        "{stderr:?}"
    );
    let last = stderr.last().unwrap();
    assert!(
        last.starts_with("observer: error: ") && last.contains("chart.svg"),
        "the error is the last line: {stderr:?}"
    );
    probed.assert_unchanged("after the failed session");
    assert_eq!(gateway.stop(), 5, "the gateway served throughout");
}

/// `observer run`: the same failure while the command runs ends the
/// command (SIGTERM, as a stop would) instead of waiting for it forever, and
/// the final report still comes.
pub fn a_failed_run_ends_its_command_and_still_reports() {
    let scratch = Scratch::new("run");
    let charts = scratch.0.join("charts");
    std::fs::create_dir(&charts).unwrap();
    let chart = charts.join("chart.svg");
    let gateway = targets_dir().join("leaky-gateway");
    let mut child = observer()
        .arg("run")
        .args(SPEC)
        .args(["--format", "json", "--chart", chart.to_str().unwrap()])
        .args(["--", gateway.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start observer run");
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let mut child = Guarded(child);
    let wait = Duration::from_secs(30);
    // The command shares the observer's stdout: its first line is its address.
    let first = stdout.recv_timeout(wait).expect("the command's address");
    let address = first.strip_prefix("listening on ").expect("address line");
    let chat = Command::new(targets_dir().join("chat-load"))
        .args(["--addr", address, "--sessions", "3", "--messages", "1"])
        .output()
        .unwrap();
    assert!(chat.status.success(), "{chat:?}");
    std::fs::remove_dir_all(&charts).unwrap();
    signal(child.0.id(), libc::SIGUSR1);

    let reports: Vec<Value> = stdout
        .iter()
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect();
    let status = child.0.wait().unwrap();
    let stderr: Vec<String> = stderr.iter().collect();
    assert_eq!(status.code(), Some(2), "{stderr:?}");
    let report = reports
        .last()
        .unwrap_or_else(|| panic!("no report: {stderr:?}"));
    assert_eq!(report["reason"], "error", "{report:#}");
    assert_eq!(int(&report["outstanding"]["buffers"]), 3, "{report:#}");
    // The gateway takes SIGTERM as a request to stop and exits with 0.
    assert_eq!(report["command"]["succeeded"], true, "{report:#}");
    let command_pid = report["target"]["pid"].as_u64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{command_pid}")).exists(),
        "the command was ended and reaped"
    );
    let last = stderr.last().unwrap();
    assert!(
        last.starts_with("observer: error: ") && last.contains("chart.svg"),
        "the error is the last line: {stderr:?}"
    );
}

/// The report file's directory disappears while attached: neither the
/// on-demand report nor the final one can be written, and the counters of
/// what was seen are still said before the error line.
pub fn a_report_that_cannot_be_written_still_leaves_the_counters() {
    let scratch = Scratch::new("output");
    let reports = scratch.0.join("reports");
    std::fs::create_dir(&reports).unwrap();
    let output = reports.join("report.json");
    let gateway = Gateway::start();
    let probed = ProbedBytes::of(gateway.pid());
    let observer = Observer::attach(gateway.pid(), &["--output", output.to_str().unwrap()]);
    gateway.chat(3, 1);
    std::fs::remove_dir_all(&reports).unwrap();
    signal(observer.pid(), libc::SIGUSR1);

    let (status, stderr) = observer.exit_without_report();
    assert_eq!(status.code(), Some(2), "{stderr:?}");
    let counters = stderr
        .iter()
        .find(|line| line.starts_with("observer: the final report could not be written"))
        .unwrap_or_else(|| panic!("no counters: {stderr:?}"));
    assert!(
        counters.contains("outstanding 3 buffers / 768 B") && counters.contains("allocations "),
        "{counters}"
    );
    let last = stderr.last().unwrap();
    assert!(
        last.starts_with("observer: error: ") && last.contains("report.json"),
        "the error is the last line: {stderr:?}"
    );
    probed.assert_unchanged("after the failed session");
    assert_eq!(gateway.stop(), 3);
}

/// SIGINT after a range of delays from the observer's start: whichever
/// moment it lands in, the observer ends at once, and nothing stays in the
/// target. Before its handlers are installed SIGINT kills it (nothing has
/// been done yet); from then until the session starts it exits with
/// status 2 and one line naming the step it interrupted; once attached it
/// gives its final report and exits with 0.
pub fn sigint_at_any_moment_of_the_start_leaves_nothing_behind() {
    let gateway = Gateway::start();
    let probed = ProbedBytes::of(gateway.pid());
    let delays_ms = [0, 1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 800, 1200, 2000];
    let mut interrupted_steps = Vec::new();
    for delay in delays_ms {
        let mut child = observer()
            .args(["attach", "--pid", &gateway.pid().to_string()])
            .args(SPEC)
            .args(["--format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start observer");
        let stderr = child.stderr.take().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        signal(child.id(), libc::SIGINT);
        let sent = Instant::now();
        let status = child.wait().unwrap();
        let took = sent.elapsed();
        let lines: Vec<String> = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        assert!(
            took < Duration::from_secs(10),
            "{delay} ms: took {took:?} to stop: {lines:?}"
        );
        let context = format!("SIGINT after {delay} ms: {status}, {lines:?}");
        let attached = lines
            .iter()
            .any(|line| line.starts_with("observer: attached"));
        match status.code() {
            None => {
                use std::os::unix::process::ExitStatusExt as _;
                assert_eq!(status.signal(), Some(libc::SIGINT), "{context}");
                assert!(lines.is_empty(), "{context}");
            }
            Some(2) => {
                assert_eq!(lines.len(), 1, "{context}");
                let step = lines[0]
                    .strip_prefix("observer: error: interrupted by SIGINT while ")
                    .and_then(|rest| rest.strip_suffix("; nothing was left attached"))
                    .unwrap_or_else(|| panic!("{context}"));
                interrupted_steps.push(step.to_string());
            }
            Some(0) => assert!(attached, "{context}"),
            _ => panic!("{context}"),
        }
        probed.assert_unchanged(&context);
    }
    assert!(
        !interrupted_steps.is_empty(),
        "no delay landed between the handlers and the session"
    );
    gateway.chat(2, 1);
    assert_eq!(gateway.stop(), 2, "nothing attached, the gateway served");
}

/// SIGINT while the uprobe registrar (a child of the observer, see
/// `attach/registrar.rs`) is placing the probes: the observer waits for it,
/// so when it has exited — saying nothing was left attached — no
/// breakpoint is left in the target, at once, not eventually; and no
/// descriptor of a probe is closed by a thread of the dying observer,
/// where the kernel gives up removing the probe and leaks it. The signal
/// is sent the moment the child is seen, a window of a few tens of
/// milliseconds that fixed delays rarely hit.
pub fn sigint_while_the_probes_are_placed_leaves_nothing_behind() {
    let gateway = Gateway::start();
    let probed = ProbedBytes::of(gateway.pid());
    let leaked_before = crate::detach::leaked_uprobes_logged();
    let mut caught = 0;
    for _ in 0..20 {
        let mut child = observer()
            .args(["attach", "--pid", &gateway.pid().to_string()])
            .args(SPEC)
            .args(["--format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start observer");
        let stderr = child.stderr.take().unwrap();
        let seen = wait_for_a_registrar_of(child.id(), &mut child);
        signal(child.id(), libc::SIGINT);
        let status = child.wait().unwrap();
        let lines: Vec<String> = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        let context = format!("{status}, {lines:?}");
        probed.assert_unchanged(&context);
        if seen && status.code() == Some(2) {
            assert_eq!(
                lines,
                ["observer: error: interrupted by SIGINT while loading and attaching the eBPF programs; nothing was left attached"],
                "{context}"
            );
            caught += 1;
            if caught == 3 {
                break;
            }
        }
    }
    assert!(
        caught > 0,
        "the signal never landed while probes were placed"
    );
    assert_eq!(
        crate::detach::leaked_uprobes_logged(),
        leaked_before,
        "the kernel logged 'failed to unregister, leaking uprobe'"
    );
    gateway.chat(2, 1);
    assert_eq!(gateway.stop(), 2, "nothing attached, the gateway served");
}

/// Polls `/proc` until a registrar child of `parent` placing the session's
/// probes exists (true), or `observer` has exited or attached (false: too
/// late).
fn wait_for_a_registrar_of(parent: u32, observer: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if observer.try_wait().unwrap().is_some() {
            return false;
        }
        if has_a_registrar_child(parent) {
            return true;
        }
    }
    false
}

/// A child of `parent` that shares its descriptor table (the registrar,
/// `CLONE_FILES`) when that table holds BPF maps: the session's programs
/// are loaded, so the child places the session's probes — not the probe
/// the observer places on itself at start to learn whether this kernel
/// emulates `push` (no maps then).
fn has_a_registrar_child(parent: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // The parent PID is the second field after the command's ")".
        let child_of_parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok())
            == Some(parent);
        child_of_parent && holds_a_bpf_map(&entry.path())
    })
}

fn holds_a_bpf_map(process: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(process.join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-map")
    })
}
