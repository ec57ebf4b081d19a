//! C programs compiled for tests: the compilers are the independent
//! source of the ELF and DWARF the observer's readers are judged on.

use std::path::PathBuf;

/// Compiles the C `source` with `compiler` (`cc`, or a cross compiler)
/// and `flags` into `name` in a temporary directory; the directory
/// (removed when dropped) and the binary. Panics with the compiler's
/// message when it fails.
pub fn compile(
    compiler: &str,
    source: &str,
    name: &str,
    flags: &[&str],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_in(&dir, compiler, source, name, flags);
    (dir, binary)
}

/// [`compile`] into `dir`, which may hold other builds of the source.
pub fn compile_in(
    dir: &tempfile::TempDir,
    compiler: &str,
    source: &str,
    name: &str,
    flags: &[&str],
) -> PathBuf {
    let path = dir.path().join(format!("{name}.c"));
    std::fs::write(&path, source).unwrap();
    let binary = dir.path().join(name);
    // Flags after the source: libraries (`-lgcc_s`) must follow what
    // uses them.
    let output = std::process::Command::new(compiler)
        .arg("-o")
        .arg(&binary)
        .arg(&path)
        .args(flags)
        .output()
        .unwrap_or_else(|err| panic!("{compiler}: {err}"));
    assert!(
        output.status.success(),
        "{compiler} {flags:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}
