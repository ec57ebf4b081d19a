//! Whether this kernel emulates the first instruction of a frame-pointer
//! prologue (x86-64 `push rbp`, arm64 `stp x29, x30, [sp, #-16]!`) at a
//! probe site or steps it out of line, found by trying it.
//!
//! After the handler of a uprobe, the kernel must still execute the probed
//! instruction. Some it emulates; every other one it copies into a page it
//! maps into the process (`[uprobes]`, the "execute out of line" area) and
//! single-steps there, about ten times the cost. Frame-pointer prologues
//! start with `push rbp`, so whether `push` is emulated decides what most
//! entry probes cost. Linux has emulated it since 4.17, but a kernel's own
//! answer is worth more than a version number: a child process runs a
//! `push rbp` of the observer's own with a uprobe on it, and the kernel
//! emulated it if the child still has no `[uprobes]` mapping afterwards
//! (the area is mapped on the first out-of-line step, and a plain entry
//! probe needs it for nothing else). The instructions tried are the
//! processor's ([`crate::arch::PROLOGUE_SITE`]).

use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::registrar::{self, Place, UprobeRequest};

/// How long the child may take to run the probed function.
const CHILD_TIMEOUT: Duration = Duration::from_secs(5);

/// True when the kernel emulated a probed `push rbp`, false when it
/// stepped it out of line. Needs the privileges of `attach` (it places a
/// uprobe, on a child of the observer).
pub fn kernel_emulates_push() -> Result<bool> {
    emulated(crate::arch::PROLOGUE_SITE)
}

/// Whether the kernel emulated the first instruction of `function`, a
/// function of this binary, when probed.
fn emulated(function: unsafe extern "C" fn()) -> Result<bool> {
    let file_offset = own_file_offset(function as *const () as u64)?;
    let program = super::features::load_empty_kprobe_program()
        .context("cannot load an empty eBPF program")?;
    let child = Child::fork(function)?;
    let request = UprobeRequest::new(
        program.as_raw_fd(),
        Place {
            path: Path::new("/proc/self/exe"),
            file_offset,
            what: "an instruction of the observer's own",
        },
        child.pid as u32,
        false,
        0,
    )?;
    let probe = registrar::register(&[request])?;
    child.run_probed_function()?;
    let stepped = child.has_out_of_line_area()?;
    drop(probe);
    Ok(!stepped)
}

/// The offset in the observer's executable of its code at `address`.
fn own_file_offset(address: u64) -> Result<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("cannot read /proc/self/maps")?;
    maps.lines()
        .filter_map(crate::resolve::process::Mapping::parse)
        .find(|mapping| mapping.start <= address && address < mapping.end)
        .map(|mapping| address - mapping.start + mapping.file_offset)
        .context("the observer's own code is in no mapping of /proc/self/maps")
}

/// A forked copy of the observer that runs the probed function when told,
/// then waits until it is killed (on drop) or the observer is gone: its
/// end of the `go` pipe reads end-of-file when no observer holds the other
/// end, so a killed observer leaves no child behind.
struct Child {
    pid: libc::pid_t,
    go: std::io::PipeWriter,
    done: std::io::PipeReader,
}

impl Child {
    fn fork(function: unsafe extern "C" fn()) -> Result<Self> {
        let (go_read, go_write) = std::io::pipe().context("cannot make a pipe")?;
        let (done_read, done_write) = std::io::pipe().context("cannot make a pipe")?;
        // SAFETY: the child only makes async-signal-safe calls (read,
        // write, _exit) and runs a function of plain instructions, as a
        // child of a multi-threaded process must.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot fork");
        }
        if pid == 0 {
            let mut byte = [0u8];
            // SAFETY: raw reads and writes on descriptors this process
            // owns, into a live one-byte buffer; the probed functions
            // leave every register as they found it; _exit never returns.
            unsafe {
                drop(go_write);
                if libc::read(go_read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) == 1 {
                    function();
                    libc::write(done_write.as_raw_fd(), byte.as_ptr().cast(), 1);
                    // Until killed, or end-of-file: the observer is gone.
                    while libc::read(go_read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) > 0 {}
                }
                libc::_exit(0);
            }
        }
        drop((go_read, done_write));
        Ok(Self {
            pid,
            go: go_write,
            done: done_read,
        })
    }

    /// Tells the child to run the probed function and waits until it has.
    fn run_probed_function(&self) -> Result<()> {
        (&self.go)
            .write_all(&[1])
            .context("cannot start the child")?;
        let mut poll = libc::pollfd {
            fd: self.done.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, CHILD_TIMEOUT.as_millis() as libc::c_int) };
        if ready != 1 {
            bail!("the child did not run the probed function");
        }
        let mut byte = [0u8];
        (&self.done)
            .read_exact(&mut byte)
            .context("the child ended before running the probed function")
    }

    /// Whether the kernel mapped its out-of-line area into the child.
    fn has_out_of_line_area(&self) -> Result<bool> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid))
            .context("cannot read the child's maps")?;
        Ok(maps.lines().any(|line| line.ends_with("[uprobes]")))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_site_is_in_the_observers_own_code() {
        assert!(own_file_offset(crate::arch::PROLOGUE_SITE as *const () as u64).is_ok());
    }

    // The unit tests run as root (`cargo xtask test`).
    #[test]
    fn a_probed_prologue_is_emulated_and_a_probed_sub_is_stepped() {
        assert!(emulated(crate::arch::PROLOGUE_SITE).unwrap(), "prologue");
        assert!(!emulated(crate::arch::STEPPED_SITE).unwrap(), "stack sub");
    }
}
