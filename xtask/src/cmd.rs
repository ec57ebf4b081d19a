//! Running commands, with the environment every task needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use anyhow::{bail, Context as _, Result};

/// The repository root (the workspace this xtask belongs to).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// `$CARGO_HOME`, where cargo installs binaries and we keep the LLVM shim.
pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// A command whose PATH starts with `$CARGO_HOME/bin`, so tools installed by
/// `setup` are found even when the caller's PATH lacks it.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    let mut path = std::ffi::OsString::from(cargo_home().join("bin"));
    if let Some(existing) = std::env::var_os("PATH") {
        path.push(":");
        path.push(existing);
    }
    command.env("PATH", path).current_dir(root());
    command
}

/// `cargo` from the toolchain running this xtask.
pub fn cargo() -> Command {
    command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs to completion, inheriting stdio; fails on a non-zero exit.
pub fn checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Runs to completion and captures its output, whatever the exit status.
pub fn output(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {command:?}"))
}

/// A child process that is killed if still running when dropped, so a
/// failing task leaves nothing behind.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends `signal` to a child.
pub fn signal(child: &Child, signal: libc::c_int) -> Result<()> {
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill");
    }
    Ok(())
}

/// Replaces what README.md holds between the markers
/// `<!-- {section}: begin -->` and `<!-- {section}: end -->` with
/// `content`: the tables a command generates.
pub fn replace_readme_section(section: &str, content: &str) -> anyhow::Result<()> {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path)?;
    let begin_marker = format!("<!-- {section}: begin -->");
    let end_marker = format!("<!-- {section}: end -->");
    let (Some(begin), Some(end)) = (readme.find(&begin_marker), readme.find(&end_marker)) else {
        anyhow::bail!("README.md has no {begin_marker} … {end_marker} section");
    };
    let updated = format!(
        "{}{begin_marker}\n\n{}\n{}",
        &readme[..begin],
        content.trim_end_matches('\n').to_string() + "\n",
        &readme[end..]
    );
    std::fs::write(&path, updated)?;
    Ok(())
}
