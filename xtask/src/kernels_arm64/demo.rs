//! README's demo in the arm64 VMs, as `cargo xtask demo` runs it (same
//! arguments, from [`crate::demo`]): the arm64 leaky gateway, 50 sessions
//! before the static observer attaches by PID, 200 while attached, then
//! SIGINT; its report in `demo.txt`. Exact means what README shows: the top
//! site holds 200 buffers of 256 B (51,200 B), allocated by the pool from
//! the encoder, its stack complete to the thread's start, named (glibc's
//! from the root file system's libc6-dbg).

use std::path::Path;

use crate::arch::Arch;
use crate::demo::{chat_args, observer_args, SESSIONS, WARM_UP_SESSIONS};
use crate::targets::{targets_dir_for, Variant};

use super::findings::result_line;

/// The gateway's frame buffer: every leaked buffer is one.
const FRAME_BUFFER: usize = 256;

/// The report's file in the output directory.
const REPORT: &str = "demo.txt";

/// The script lines running the demo with `observer`.
pub fn script(observer: &str) -> String {
    let targets = targets_dir_for(Variant::Leaky, Arch::Aarch64);
    let chat = |sessions| {
        format!(
            "{} {} > /dev/null 2>&1",
            targets.join("chat-load").display(),
            chat_args("$address", sessions).join(" ")
        )
    };
    let observer_args: Vec<String> = observer_args(Arch::Aarch64)
        .iter()
        .map(|arg| format!("'{arg}'"))
        .collect();
    format!(
        "started=$(date +%s)\n\
         {gateway} --listen 127.0.0.1:0 > demo-gateway.txt 2>&1 &\n\
         gateway=$!\n\
         {wait_gateway}\n\
         address=$(sed -n 's/^listening on //p' demo-gateway.txt | head -n 1)\n\
         {warm_up}\n\
         {observer} attach --pid $gateway {observer_args} > {REPORT} 2>&1 &\n\
         observer=$!\n\
         {wait_observer}\n\
         {attached}\n\
         sleep 1.2\n\
         kill -INT $observer; wait $observer\n\
         echo \"demo: exit $? in $(( $(date +%s) - started )) s\" >> results.txt\n\
         kill -INT $gateway; wait $gateway\n",
        gateway = targets.join("leaky-gateway").display(),
        wait_gateway = wait_for("demo-gateway.txt", "^listening on "),
        warm_up = chat(WARM_UP_SESSIONS),
        wait_observer = wait_for(REPORT, "^observer: attached"),
        attached = chat(SESSIONS),
        observer_args = observer_args.join(" "),
    )
}

/// Waits up to 120 s (emulated) for a line matching `pattern` in `file`.
fn wait_for(file: &str, pattern: &str) -> String {
    format!(
        "for i in $(seq 1 1200); do grep -q '{pattern}' {file} 2>/dev/null && break; sleep 0.1; done"
    )
}

/// Whether the demo's report is README's: exit 0, the top site 200
/// buffers / 51,200 B, its frames from the pool's allocate through the
/// encoder to the thread's start. One line for people.
pub fn judge(out: &Path, results: &str) -> (bool, String) {
    let exit = result_line(results, "demo:").unwrap_or("did not run");
    let report = std::fs::read_to_string(out.join(REPORT)).unwrap_or_default();
    let top = top_site(&report);
    let expected = format!("{SESSIONS} buffers {} B", SESSIONS * FRAME_BUFFER);
    let counts = top.first().map(|line| counts(line)).unwrap_or_default();
    let exact = counts == expected;
    let frames = frames(&top);
    let names: Vec<&str> = frames.iter().map(|frame| frame.function).collect();
    let stack = names.first() == Some(&"bufpool::BufPool::allocate")
        && names.contains(&"leaky_gateway::codec::Encoder::encode")
        && frames.last().is_some_and(Frame::starts_threads_in_glibc);
    let passed = exit.starts_with("exit 0 ") && exact && stack;
    (
        passed,
        format!(
            "demo: {} ({exit}); top site {} ({}, expected {expected}); its stack {}: [{}]",
            if passed { "pass" } else { "FAIL" },
            if exact { "exact" } else { "WRONG" },
            if counts.is_empty() { "none" } else { &counts },
            if stack {
                "allocate <- encoder <- … <- glibc's clone"
            } else {
                "WRONG"
            },
            names.join(" <- ")
        ),
    )
}

/// The lines of the report's site `#1`, its heading first.
fn top_site(report: &str) -> Vec<&str> {
    let mut lines = report.lines().skip_while(|line| !line.starts_with("#1 "));
    let Some(heading) = lines.next() else {
        return Vec::new();
    };
    std::iter::once(heading)
        .chain(lines.take_while(|line| !line.starts_with('#')))
        .collect()
}

/// `N buffers M B` of a site's heading (`#1   200 buffers  51200 B …`).
fn counts(heading: &str) -> String {
    heading
        .split_whitespace()
        .skip(1)
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One frame line of a report's site.
struct Frame<'a> {
    /// Its function (or its address, when it has no name).
    function: &'a str,
    /// What follows the function: `file:line`, if anything.
    place: &'a str,
}

impl Frame<'_> {
    /// Whether this is glibc's code that starts a thread, named: a
    /// function named for clone (x86-64's `clone3`: clone3.S's
    /// thread-start code has no symbol of its own), or a function of
    /// glibc's clone.S or clone3.S (Debian 12's arm64 glibc, 2.36, starts
    /// threads through clone.S's local `thread_start`, named by libc6-dbg).
    /// An address is not a name.
    fn starts_threads_in_glibc(&self) -> bool {
        let file = self.place.split(':').next().unwrap_or_default();
        let file_name = file.rsplit('/').next().unwrap_or_default();
        !self.function.starts_with("0x")
            && (self.function.contains("clone") || matches!(file_name, "clone.S" | "clone3.S"))
    }
}

/// Each frame line of a site, innermost first: frame lines are indented
/// and start with a name, a file or an address follows.
fn frames<'a>(site: &[&'a str]) -> Vec<Frame<'a>> {
    site.iter()
        .skip(1)
        .filter(|line| line.starts_with("      "))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let function = words.next()?;
            let place = words.next().unwrap_or_default();
            Some(Frame { function, place })
        })
        .filter(|frame| frame.function != "…" && !frame.function.ends_with(':'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README's demo report, shortened.
    const README: &str = "\
#1   200 buffers  51200 B (50.0 KiB)  outstanding   (200 allocated since attach, 51200 B (50.0 KiB))  oldest 1.2s  newest 1.2s
     growth: steady growth, +10404.4 buffers/min, +2663519 B (2.5 MiB)/min over 1.2s (3 samples)
      bufpool::BufPool::allocate                                 tests/bufpool/src/lib.rs:144
      leaky_gateway::codec::Encoder::encode                      tests/leaky-gateway/src/codec.rs:58
      …
      … 3 stacks share the frames above and differ below; the largest continues:
        start_thread                                               ./nptl/pthread_create.c:442
        clone3                                                     ./misc/../sysdeps/unix/sysv/linux/x86_64/clone3.S:81


#2   0 buffers  0 B  outstanding   (1000 allocated since attach, 256000 B (250.0 KiB))
      bufpool::BufPool::allocate                                 tests/bufpool/src/lib.rs:144
";

    fn judged(report: &str, results: &str) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REPORT), report).unwrap();
        judge(dir.path(), results)
    }

    #[test]
    fn readmes_report_is_exact() {
        let (passed, line) = judged(README, "demo: exit 0 in 90 s");
        assert!(passed, "{line}");
    }

    /// The outermost frames of the demo in the arm64 VM (6.12, 2026-11-30),
    /// glibc's named by Debian's libc6-dbg.
    #[test]
    fn arm64_glibcs_thread_start_in_clone_s_is_the_threads_start() {
        let arm64 = README.replace(
            "        clone3                                                     ./misc/../sysdeps/unix/sysv/linux/x86_64/clone3.S:81",
            "        thread_start                                               ./misc/../sysdeps/unix/sysv/linux/aarch64/clone.S:79",
        );
        assert!(arm64.contains("aarch64/clone.S:79"));
        let (passed, line) = judged(&arm64, "demo: exit 0 in 59 s");
        assert!(passed, "{line}");
        let elsewhere = arm64.replace("aarch64/clone.S:79", "aarch64/start.S:79");
        assert!(!judged(&elsewhere, "demo: exit 0 in 59 s").0);
    }

    #[test]
    fn wrong_counts_a_broken_stack_or_a_failed_run_fail() {
        let fewer = README.replacen("#1   200 buffers  51200 B", "#1   199 buffers  50944 B", 1);
        assert!(!judged(&fewer, "demo: exit 0 in 90 s").0);
        let broken = README.replace("clone3", "0xffffd0a0");
        assert!(!judged(&broken, "demo: exit 0 in 90 s").0);
        let unnamed = README.replace(
            "clone3                                                     ./misc",
            "0xffffa1b2c3d4                                             ./misc",
        );
        assert!(!judged(&unnamed, "demo: exit 0 in 90 s").0);
        assert!(!judged(README, "demo: exit 1 in 90 s").0);
        assert!(!judged("", "demo: exit 0 in 90 s").0);
    }
}
