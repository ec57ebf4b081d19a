//! The test runner's side of the end-to-end tests (libtest-mimic, so that a
//! test skipped at run time is reported as ignored, with its reason, in the
//! runner's lines and summary, rather than as passed).
//!
//! A test that loads eBPF programs needs root (or CAP_BPF + CAP_PERFMON +
//! CAP_SYS_PTRACE) and a kernel with uprobes, and fails when either is
//! missing, unless `OBSERVER_SKIP_EBPF_TESTS=1` says to skip it.

use std::path::Path;

use libtest_mimic::{Completion, Failed, Trial};

/// The variable that opts out of the tests that need eBPF (CI never sets it).
pub const SKIP_VARIABLE: &str = "OBSERVER_SKIP_EBPF_TESTS";

/// What a test needs from this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Loads eBPF programs into this kernel.
    Ebpf,
    /// Only runs the observer on files (`observer inspect`), no privileges.
    Files,
}

/// A check of this machine: `Err` says why a test means nothing here.
pub type Requirement = fn() -> Result<(), String>;

/// A test run by name, `module::function` (what `cargo test -- FILTER`
/// matches).
pub fn trial(name: &str, needs: Needs, test: impl FnOnce() + Send + 'static) -> Trial {
    conditional_trial(name, needs, None, test)
}

/// A test that is skipped, with the requirement's reason, on a machine
/// that does not meet `requires`.
pub fn conditional_trial(
    name: &str,
    needs: Needs,
    requires: Option<Requirement>,
    test: impl FnOnce() + Send + 'static,
) -> Trial {
    Trial::ignorable_test(name, move || {
        if needs == Needs::Ebpf {
            if let Some(reason) = skip_reason() {
                return Ok(Completion::ignored_with(reason));
            }
            ebpf_usable()?;
        }
        if let Some(Err(reason)) = requires.map(|requirement| requirement()) {
            return Ok(Completion::ignored_with(reason));
        }
        // A failed assertion panics; the runner reports the panic as the
        // test's failure.
        test();
        Ok(Completion::Completed)
    })
}

/// With its own main, the runner knows only the tests listed there: a
/// function with the test attribute in these files would silently never run.
pub fn every_test_is_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e");
    let mut files = 0;
    for file in source_files(&dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        let attribute = concat!("#[", "test]");
        assert!(
            !text.contains(attribute),
            "{} has a {attribute} function: list it in tests/e2e/main.rs instead (it would never run)",
            file.display()
        );
        files += 1;
    }
    assert!(
        files > 10,
        "only {files} test sources found under {}",
        dir.display()
    );
}

/// The `.rs` files under `dir`, subdirectories (modules) included.
fn source_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            files.extend(source_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Why tests that need eBPF are skipped, if they are.
fn skip_reason() -> Option<String> {
    (std::env::var(SKIP_VARIABLE).as_deref() == Ok("1")).then(|| {
        format!("{SKIP_VARIABLE}=1: needs eBPF (root and uprobes), not run on this machine")
    })
}

/// Fails, saying what is missing and how to opt out, unless this process
/// can load eBPF programs and attach uprobes.
fn ebpf_usable() -> Result<(), Failed> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "end-to-end tests load eBPF programs and need root; set {SKIP_VARIABLE}=1 to skip them"
        )
        .into());
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        return Err(format!(
            "this kernel has no uprobe PMU (CONFIG_UPROBES); set {SKIP_VARIABLE}=1 to skip"
        )
        .into());
    }
    Ok(())
}
