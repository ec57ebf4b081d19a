//! The kernel-side end-to-end tests of the x86-64 matrix
//! ([`crate::kernels::KERNEL_SIDE`]) in the arm64 VMs: the e2e test binary
//! cross-built as the static arm64 observer is
//! ([`crate::kernels::e2e_binary`]), run one test at a time with
//! `OBSERVER_BIN` the static arm64 observer and the arm64 builds of the
//! target programs. Each test's exit code is a line of `results.txt`.

use std::path::Path;

use crate::arch::Arch;
use crate::kernels::KERNEL_SIDE;
use crate::targets::{corpus_dir_for, targets_dir_for, Variant};

use super::findings::result_line;

/// Kernel-side tests not run on arm64, and why.
pub const LEFT_OUT: &[(&str, &str)] = &[(
    "panics::repaired_uretprobes_let_panics_unwind",
    "the uretprobe repair rewrites x86-64's return-address slot (entry_sp); arm64's \
     return address is in x30 or where the callee saved it, not ported yet (docs/arm64.md)",
)];

/// The kernel-side tests run on arm64: all but [`LEFT_OUT`].
pub fn tests() -> impl Iterator<Item = &'static str> {
    KERNEL_SIDE
        .iter()
        .copied()
        .filter(|test| !LEFT_OUT.iter().any(|(left_out, _)| left_out == test))
}

/// Longest one test may take in the VM (emulated: a test takes 13–87 s)
/// before `timeout` stops it (exit 124): a hung test must not use up the
/// whole VM's time. The tests' own waits end sooner (120 s), with every
/// thread's state in the test's log.
const TEST_TIMEOUT_SECS: u32 = 300;

/// How the runner's summary of one test that ran and passed ends.
const RAN_AND_PASSED: &str = "; 1 passed; 0 failed; 0 ignored";

/// When, before its timeout, a test still running gets every thread's
/// state written down: tests have hung in the VMs, waiting without a time
/// limit for a target's answer, and a log with the test's name alone
/// cannot tell a starved VM (threads runnable, their CPU times moving)
/// from a target stuck in the kernel (its wchan and kernel stack) or
/// deadlocked (sleeping in user space).
const WATCHDOG_SECS: u32 = TEST_TIMEOUT_SECS - 15;

/// A shell function writing each thread's `stat` (state, CPU times),
/// `wchan` and kernel `stack` (the guest runs as root) from /proc, newest
/// process first: the test's own, started last, must be written before
/// the timeout stops the watchdog (once, in /proc's order, it reached only
/// the `timeout` process in 15 s). Shell built-ins only: a `cat` per file
/// costs a fork and exec, a good part of a second under emulation, and
/// Debian's minbase has no `ps`.
const THREADS_FUNCTION: &str = "threads() { for p in $(ls /proc | sort -rn); do \
case $p in *[!0-9]*) continue;; esac; for t in /proc/$p/task/*; do s=; w=; \
read -r s < $t/stat; read -r w < $t/wchan; echo \"== $t $s\"; echo \"wchan $w\"; \
while read -r l; do echo \"  $l\"; done < $t/stack; done 2>/dev/null; done; }\n";

/// The script lines running every test with `e2e` (the guest's path of the
/// cross-built binary) and `observer` as the observer under test.
pub fn script(e2e: &Path, observer: &str) -> String {
    let arch = Arch::Aarch64;
    let mut script = format!(
        "export OBSERVER_BIN={observer} OBSERVER_TARGETS_DIR={targets} \
         OBSERVER_FIXED_TARGETS_DIR={fixed} OBSERVER_CORPUS_DIR={corpus}\n",
        targets = targets_dir_for(Variant::Leaky, arch).display(),
        fixed = targets_dir_for(Variant::Fixed, arch).display(),
        corpus = corpus_dir_for(arch).display(),
    );
    script.push_str(THREADS_FUNCTION);
    for test in tests() {
        let log = log_name(test);
        let threads = threads_name(test);
        script.push_str(&format!(
            "started=$(date +%s)\n\
             (sleep {WATCHDOG_SECS}; threads > {threads} 2>&1) &\n\
             watchdog=$!\n\
             timeout -k 10 {TEST_TIMEOUT_SECS} {e2e} --exact {test} > {log} 2>&1\n\
             status=$?\n\
             kill $watchdog 2>/dev/null; wait $watchdog 2>/dev/null\n\
             echo \"test {test}: exit $status in $(( $(date +%s) - started )) s; \
             $(grep -o '[0-9]* passed; [0-9]* failed; [0-9]* ignored' {log})\" >> results.txt\n",
            e2e = e2e.display(),
        ));
    }
    script
}

/// Every thread's state shortly before a test's timeout, when it ran that
/// long ([`WATCHDOG_SECS`]).
fn threads_name(test: &str) -> String {
    format!("e2e-{}.threads", test.replace("::", "-"))
}

/// The log of one test in the output directory.
fn log_name(test: &str) -> String {
    format!("e2e-{}.log", test.replace("::", "-"))
}

/// Whether every test run exited 0; one line per test (with the first
/// panic of a failed one, from its log in `out`) and per test left out.
pub fn judge(out: &Path, results: &str) -> (bool, Vec<String>) {
    let mut passed = true;
    let mut lines = Vec::new();
    for test in tests() {
        let exit = result_line(results, &format!("test {test}:")).unwrap_or("did not run");
        // Exit 0 alone is not a pass: a test skipped at run time, or a
        // name matching none, exits 0 too.
        let ok = exit.starts_with("exit 0 ") && exit.ends_with(RAN_AND_PASSED);
        passed &= ok;
        let why = if ok {
            String::new()
        } else {
            let threads = threads_name(test);
            let dumped = if out.join(&threads).exists() {
                format!("; every thread's state before the timeout in {threads}")
            } else {
                String::new()
            };
            format!("; {}{dumped}", first_failure(&out.join(log_name(test))))
        };
        lines.push(format!(
            "e2e {test}: {} ({exit}){why}",
            if ok { "pass" } else { "FAIL" }
        ));
    }
    for (test, why) in LEFT_OUT {
        lines.push(format!("e2e {test}: not run on arm64: {why}"));
    }
    (passed, lines)
}

/// The first line of a failed test's log saying why (its panic message).
fn first_failure(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines = text.lines();
    let found = lines
        .by_ref()
        .find(|line| line.contains("panicked at"))
        .and_then(|_| lines.next());
    match found {
        Some(message) => {
            let message: String = message.chars().take(300).collect();
            format!("{message} (see {})", log_file_name(log))
        }
        None => format!("no panic message (see {})", log_file_name(log)),
    }
}

fn log_file_name(log: &Path) -> String {
    log.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_left_out_test_is_a_kernel_side_test() {
        for (test, _) in LEFT_OUT {
            assert!(KERNEL_SIDE.contains(test), "{test}");
        }
        assert_eq!(tests().count(), KERNEL_SIDE.len() - LEFT_OUT.len());
    }

    #[test]
    fn a_test_passes_only_with_exit_zero() {
        let out = Path::new("/nonexistent");
        let all: Vec<String> = tests()
            .map(|test| format!("test {test}: exit 0 in 3 s; 1 passed; 0 failed; 0 ignored"))
            .collect();
        assert!(judge(out, &all.join("\n")).0);
        let one_failed = all.join("\n").replacen("exit 0 in", "exit 101 in", 1);
        let (passed, lines) = judge(out, &one_failed);
        assert!(!passed);
        assert!(lines[0].contains("FAIL"), "{lines:?}");
        assert!(!judge(out, "").0, "tests that did not run fail");
        let skipped = all
            .join("\n")
            .replacen("0 failed; 0 ignored", "0 failed; 1 ignored", 1);
        let skipped = skipped.replacen("; 1 passed;", "; 0 passed;", 1);
        assert!(!judge(out, &skipped).0, "a skipped test fails");
    }

    #[test]
    fn a_timed_out_test_points_at_its_threads_and_a_finished_one_stops_the_watchdog() {
        let dir = tempfile::tempdir().unwrap();
        let test = tests().next().unwrap();
        std::fs::write(dir.path().join(threads_name(test)), "== /proc/1/task/1").unwrap();
        let results = format!("test {test}: exit 124 in 300 s; ");
        let (passed, lines) = judge(dir.path(), &results);
        assert!(!passed);
        assert!(lines[0].contains(&threads_name(test)), "{lines:?}");
        let script = script(Path::new("/out/bin/e2e"), "/out/bin/observer");
        assert!(script.starts_with("export ") && script.contains("threads() {"));
        for test in tests() {
            let watchdog = format!("(sleep {WATCHDOG_SECS}; threads > {}", threads_name(test));
            let run = format!("--exact {test} >");
            let (watchdog, run) = (script.find(&watchdog), script.find(&run));
            assert!(watchdog.is_some() && watchdog < run, "{test}: {script}");
        }
        assert_eq!(script.matches("kill $watchdog").count(), tests().count());
    }
}
