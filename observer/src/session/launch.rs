//! Launching a command with the probes in place before it runs any of its
//! own code (`observer run`): fork a child that waits on a pipe, attach to
//! the child's PID (the uprobes are registered on the command's file and
//! installed by the kernel when the child maps it at `exec`), then let the
//! child `exec`.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::analyse::CommandOutcome;
use crate::attach::Attachment;
use crate::error::UserError;
use crate::resolve::process::Process;

/// How long the command may take from `exec` to its entry point.
const GATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Polls until `pid` is stopped by a signal (state `T`), or `timeout`.
fn wait_until_stopped(pid: u32, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].trim_start().chars().next());
        match state {
            Some('T') => return true,
            Some('Z' | 'X') | None => return false,
            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
    false
}

/// A forked child, paused before `exec` until [`Launched::release`].
pub struct Launched {
    pub pid: u32,
    pub argv: Vec<String>,
    /// The resolved executable the child will run.
    pub program: PathBuf,
    gate: Option<OwnedFd>,
    exec_errors: Option<OwnedFd>,
    /// The stop signal we forwarded, so the child dying of it is expected.
    forwarded: Option<i32>,
    reaped: bool,
}

/// Resolves `argv[0]` like a shell would: as a path if it has a slash,
/// else through `PATH`.
pub fn resolve_program(name: &str) -> Result<PathBuf> {
    let is_executable = |path: &Path| {
        path.metadata().is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if is_executable(&path) {
            Ok(std::fs::canonicalize(&path)?)
        } else {
            Err(UserError::new(format!("cannot run '{name}': no such executable file")).into())
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .map(|found| std::fs::canonicalize(&found).unwrap_or(found))
        .ok_or_else(|| UserError::new(format!("cannot run '{name}': not found in PATH")).into())
}

/// Forks a child that will `exec` `argv` once released.
pub fn spawn_paused(argv: &[String]) -> Result<Launched> {
    let first = argv
        .first()
        .ok_or_else(|| UserError::new("observer run needs a command after --"))?;
    let program = resolve_program(first)?;
    let c_program = CString::new(program.as_os_str().as_bytes()).context("NUL in program path")?;
    let c_args = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).context("NUL in an argument"))
        .collect::<Result<Vec<_>>>()?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());
    let (gate_read, gate_write) = pipe()?;
    let (errors_read, errors_write) = pipe()?;
    // SAFETY: fork has no preconditions; the child below only calls
    // async-signal-safe functions (read, write, execv, _exit) on memory
    // prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: see above; every pointer was built before fork and is
        // valid in the child's copy of the address space.
        unsafe {
            child_wait_then_exec(
                gate_read.as_raw_fd(),
                errors_write.as_raw_fd(),
                &c_program,
                &c_argv,
            )
        }
    }
    drop(gate_read);
    drop(errors_write);
    Ok(Launched {
        pid: pid as u32,
        argv: argv.to_vec(),
        program,
        gate: Some(gate_write),
        exec_errors: Some(errors_read),
        forwarded: None,
        reaped: false,
    })
}

/// # Safety
/// Only for the child right after `fork`: async-signal-safe calls only.
unsafe fn child_wait_then_exec(
    gate: libc::c_int,
    errors: libc::c_int,
    program: &CString,
    argv: &[*const libc::c_char],
) -> ! {
    let mut byte = 0u8;
    // SAFETY: reading one byte into a local; a closed gate (the observer
    // died before releasing us) reads 0 bytes and we leave without running.
    let got = unsafe { libc::read(gate, (&raw mut byte).cast(), 1) };
    if got == 1 {
        // SAFETY: program and argv are NUL-terminated C strings and a
        // NULL-terminated array, built before fork.
        unsafe { libc::execv(program.as_ptr(), argv.as_ptr()) };
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let bytes = errno.to_ne_bytes();
        // SAFETY: writing 4 bytes from a local to a pipe we own.
        unsafe { libc::write(errors, bytes.as_ptr().cast(), bytes.len()) };
    }
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(127) }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Launched {
    /// Lets the child `exec` and waits until it did (or failed to).
    pub fn release(&mut self) -> Result<()> {
        let gate = self.gate.take().context("already released")?;
        let go = [1u8];
        // SAFETY: writing one byte from a local buffer to our pipe.
        if unsafe { libc::write(gate.as_raw_fd(), go.as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error()).context("releasing the child");
        }
        let errors = self.exec_errors.take().context("already released")?;
        let mut errno = [0u8; 4];
        // SAFETY: reading up to 4 bytes into a local; EOF (0) means the
        // close-on-exec pipe was closed by a successful exec.
        let got = unsafe { libc::read(errors.as_raw_fd(), errno.as_mut_ptr().cast(), errno.len()) };
        if got == 4 {
            let error = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            return Err(
                UserError::new(format!("cannot run {}: {error}", self.program.display())).into(),
            );
        }
        Ok(())
    }

    /// The file offset of the program's entry point, where the start gate
    /// goes (whatever object the probes are in); `None` if its ELF header
    /// does not give one.
    pub fn program_entry_point(&self) -> Option<u64> {
        let elf = crate::resolve::elf::ElfInfo::read(&self.program).ok()?;
        elf.entry_point().and_then(|entry| elf.file_offset(entry))
    }

    /// Releases the child through the start gate: it runs until its
    /// program's entry point, where the gate stops it; then every object
    /// the dynamic loader mapped is tabled, `at_gate` runs (what must see
    /// the process alive: a short command may be gone soon after), the
    /// gate is removed and the command continues. Without a gate (no entry
    /// point known), or if it does not stop in time, the command is simply
    /// let run, and `at_gate` runs at once.
    pub fn release_through_gate<T>(
        &mut self,
        attachment: &mut Attachment,
        entry_point: Option<u64>,
        at_gate: impl FnOnce(&mut Attachment, &Process) -> T,
    ) -> Result<(Process, T)> {
        if let Some(entry) = entry_point {
            attachment.arm_start_gate(&self.program, entry, self.pid)?;
        }
        self.release()?;
        let process = Process::launched_child(self.pid, &self.program);
        if entry_point.is_none() {
            let done = at_gate(attachment, &process);
            return Ok((process, done));
        }
        let stopped = wait_until_stopped(self.pid, GATE_TIMEOUT);
        if !stopped {
            eprintln!(
                "observer: the command did not reach its entry point within {GATE_TIMEOUT:?}; \
                 allocations made before its libraries are tabled may have short stacks"
            );
        }
        let tabled = attachment.refresh_tables(&process);
        // `at_gate` only while the gate holds the command: otherwise the
        // command may reach the gate meanwhile, and the gate must go first.
        if stopped {
            let done = at_gate(attachment, &process);
            self.open_gate(attachment, tabled)?;
            Ok((process, done))
        } else {
            self.open_gate(attachment, tabled)?;
            let done = at_gate(attachment, &process);
            Ok((process, done))
        }
    }

    /// Removes the start gate and continues the command; `tabled` is how
    /// tabling its objects went.
    fn open_gate(&self, attachment: &mut Attachment, tabled: Result<()>) -> Result<()> {
        let removed = attachment.remove_start_gate();
        // SAFETY: kill has no memory-safety preconditions; the pid is
        // our child, stopped by the gate (or running: SIGCONT is then
        // without effect).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGCONT) };
        tabled?;
        removed
    }

    /// Passes a stop signal on to the child.
    pub fn forward(&mut self, signal: i32) {
        self.forwarded = Some(signal);
        // SAFETY: kill has no memory-safety preconditions; the pid is our child.
        unsafe { libc::kill(self.pid as libc::pid_t, signal) };
    }

    /// Ends a command that is still running (the session failed): SIGTERM,
    /// then SIGKILL if it is still there after `grace`; then reaps it.
    pub fn terminate(&mut self, grace: std::time::Duration) -> Result<CommandOutcome> {
        self.forward(libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while !self.has_exited()? {
            if std::time::Instant::now() >= deadline {
                self.forward(libc::SIGKILL);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.wait()
    }

    /// True once the child has exited (it stays a zombie until reaped).
    fn has_exited(&self) -> Result<bool> {
        // SAFETY: siginfo_t is plain data, for which all zeroes is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a valid siginfo pointer;
        // WNOWAIT leaves it to be reaped by `wait`.
        let waited = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if waited < 0 {
            return Err(std::io::Error::last_os_error()).context("waitid");
        }
        // SAFETY: waitid filled `info` (or left it zeroed: no child exited).
        Ok(unsafe { info.si_pid() } != 0)
    }

    /// Reaps the child (it has exited) and says how it ended.
    pub fn wait(&mut self) -> Result<CommandOutcome> {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let waited = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, 0) };
        if waited < 0 {
            return Err(std::io::Error::last_os_error()).context("waitpid");
        }
        self.reaped = true;
        let (exit_code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else {
            (
                None,
                libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            )
        };
        let succeeded = exit_code == Some(0) || (signal.is_some() && signal == self.forwarded);
        Ok(CommandOutcome {
            argv: self.argv.clone(),
            exit_code,
            signal,
            succeeded,
        })
    }
}

impl Drop for Launched {
    /// A child that never got to `exec` is a copy of the observer waiting on
    /// a pipe: kill and reap it. A released command is left to run.
    fn drop(&mut self) {
        if self.gate.is_some() && !self.reaped {
            // SAFETY: signalling and reaping our own, never-released child.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid as libc::pid_t, &mut status, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn resolves_through_path_and_rejects_missing() {
        let sh = resolve_program("sh").unwrap();
        assert!(sh.is_absolute());
        let err = resolve_program("no-such-command-xyz").unwrap_err();
        assert!(err.to_string().contains("not found in PATH"));
        let err = resolve_program("./no/such/file").unwrap_err();
        assert!(err.to_string().contains("no such executable file"));
    }

    #[test]
    fn child_runs_only_when_released() {
        let argv = vec!["sh".to_string(), "-c".to_string(), "exit 7".to_string()];
        let mut child = spawn_paused(&argv).unwrap();
        child.release().unwrap();
        let outcome = child.wait().unwrap();
        assert_eq!(outcome.exit_code, Some(7));
        assert!(!outcome.succeeded);
    }

    #[test]
    fn forwarded_signal_death_is_success() {
        let argv = vec!["sleep".to_string(), "30".to_string()];
        let mut child = spawn_paused(&argv).unwrap();
        child.release().unwrap();
        child.forward(libc::SIGTERM);
        let outcome = child.wait().unwrap();
        assert_eq!(outcome.signal, Some(libc::SIGTERM));
        assert!(outcome.succeeded);
    }

    #[test]
    fn a_running_command_is_terminated_then_killed() {
        let argv = vec!["sleep".to_string(), "30".to_string()];
        let mut child = spawn_paused(&argv).unwrap();
        child.release().unwrap();
        let outcome = child.terminate(Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.signal, Some(libc::SIGTERM));

        let argv = ["sh", "-c", "trap '' TERM; exec sleep 30"].map(String::from);
        let mut child = spawn_paused(&argv).unwrap();
        child.release().unwrap();
        let ignores_term = || {
            std::fs::read_to_string(format!("/proc/{}/status", child.pid))
                .unwrap_or_default()
                .lines()
                .find_map(|line| line.strip_prefix("SigIgn:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .is_some_and(|ignored| ignored & (1 << (libc::SIGTERM - 1)) != 0)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ignores_term() {
            assert!(
                std::time::Instant::now() < deadline,
                "the trap was never set"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let outcome = child.terminate(Duration::from_millis(200)).unwrap();
        assert_eq!(outcome.signal, Some(libc::SIGKILL));
    }

    #[test]
    fn unreleased_child_is_killed_on_drop() {
        let argv = vec!["sleep".to_string(), "30".to_string()];
        let child = spawn_paused(&argv).unwrap();
        let pid = child.pid;
        drop(child);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
