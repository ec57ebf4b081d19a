//! Registering and removing uprobes where a signal to the observer cannot
//! interrupt the kernel halfway.
//!
//! Registering a uprobe writes a breakpoint into the target's pages, and
//! removing one writes the original bytes back; both go through the
//! kernel's `get_user_pages`, which gives up when the calling task has a
//! fatal signal pending. An observer killed (SIGKILL) while it registers
//! makes the kernel abandon the registration *and* its own undo: it logs
//! `failed to unregister, leaking uprobe`, and the uprobe stays in the
//! kernel (seen here, about 0.3 s into attaching).
//!
//! So the observer does not make those calls itself. A short-lived child,
//! cloned to share the observer's memory and file-descriptor table
//! (`CLONE_VM | CLONE_FILES`, not a thread of it), makes them, with every
//! signal blocked; the descriptors it creates are the observer's own.
//! Killing the observer does not kill the child: it finishes its calls
//! and exits, and when the last holder of the descriptor table is gone,
//! the kernel closes the descriptors and removes the probes in a task
//! with no fatal signal pending.
//!
//! Removing has the same hazard: the last close of a probe's perf event
//! removes its breakpoints, and from a thread of an observer that another
//! thread is taking down (`exit_group` queued SIGKILL to it) the kernel
//! gives up and leaks the uprobe, its breakpoint left in the target (seen
//! here: SIGINT while attaching, the abandoned attach thread cleaning up).
//! So every close of a probe's descriptor — detach, a failed attach, a
//! probe dropped — goes through a child the same way, and once the
//! observer is stopping ([`stop_registering`]) none is closed before exit:
//! the kernel closes them then, in a task whose SIGKILL is already taken.
//!
//! Requires Linux ≥ 5.15 (attach cookies through `BPF_LINK_CREATE` on
//! perf events).

use std::ffi::CString;
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context as _, Result};

/// One uprobe to register.
pub struct UprobeRequest {
    /// The loaded program to run there.
    pub program: RawFd,
    /// The file to probe (the kernel opens it).
    pub path: CString,
    pub file_offset: u64,
    /// Only this process: a PID of the observer's namespace, which is the
    /// one `perf_event_open` counts in (the registrar shares it).
    pub pid: u32,
    pub retprobe: bool,
    pub cookie: u64,
    /// What is probed, for error messages.
    pub what: String,
}

/// Where a uprobe goes: a file and an offset in it.
pub struct Place<'a> {
    pub path: &'a Path,
    pub file_offset: u64,
    /// What is there, for error messages.
    pub what: &'a str,
}

impl UprobeRequest {
    pub fn new(
        program: RawFd,
        place: Place<'_>,
        pid: u32,
        retprobe: bool,
        cookie: u64,
    ) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt as _;
        Ok(Self {
            program,
            path: CString::new(place.path.as_os_str().as_bytes()).context("NUL in a path")?,
            file_offset: place.file_offset,
            pid,
            retprobe,
            cookie,
            what: place.what.to_string(),
        })
    }
}

/// A registered uprobe: its perf event and the BPF link that runs the
/// program on it. Dropping it (or [`release`]) removes the probe, always
/// from a child (see [`close_from_child`]).
#[derive(Debug)]
pub struct Registered {
    perf_event: RawFd,
    link: RawFd,
}

impl Drop for Registered {
    fn drop(&mut self) {
        close_from_child(vec![self.link, self.perf_event]);
    }
}

/// `perf_event_attr` for a uprobe of the uprobe PMU, as far as the kernel
/// reads it (the rest stays zero).
#[repr(C)]
#[derive(Clone, Copy)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    /// `uprobe_path`.
    config1: u64,
    /// `probe_offset`.
    config2: u64,
    rest: [u64; 8],
}

/// `union bpf_attr` for `BPF_LINK_CREATE` on a perf event.
#[repr(C)]
#[derive(Clone, Copy)]
struct LinkCreateAttr {
    program: u32,
    target: u32,
    attach_type: u32,
    flags: u32,
    cookie: u64,
    rest: [u64; 8],
}

/// What the child needs for one request, prepared before the clone: it
/// may not allocate.
struct Prepared {
    perf: PerfEventAttr,
    link: LinkCreateAttr,
    pid: i32,
    /// Filled by the child: the perf event fd, or -errno.
    perf_result: i64,
    /// Filled by the child: the link fd, or -errno.
    link_result: i64,
}

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PERF_EVENT: u32 = 41;
const CHILD_STACK: usize = 256 * 1024;

/// Whether the observer is stopping (no registrar child may start), held
/// for as long as a registrar child runs: [`stop_registering`] takes it
/// to wait for that child.
static STOPPING: Mutex<bool> = Mutex::new(false);

/// Lets a registrar child in progress finish and starts no other one.
///
/// A stop signal abandons the thread that loads and attaches; without
/// this, the observer could exit while its registrar child still runs,
/// and the child, which holds the shared descriptor table, would keep
/// the probes in the target until it ends, after the observer said that
/// nothing was left attached. After this returns, every probe registered
/// so far has a descriptor in this process's table, which the kernel
/// closes when the process exits. Blocks for at most one child (well
/// under a second).
pub fn stop_registering() {
    *STOPPING.lock().unwrap_or_else(PoisonError::into_inner) = true;
}

/// True once [`stop_registering`] was called: a registration that fails
/// now failed because the observer is stopping, which is said once, by
/// whoever stops it.
pub fn is_stopping() -> bool {
    *STOPPING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers every request, in order, from a child that a signal to the
/// observer cannot interrupt. On any failure the probes registered so far
/// are removed and the error names the request.
pub fn register(requests: &[UprobeRequest]) -> Result<Vec<Registered>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let stopping = STOPPING.lock().unwrap_or_else(PoisonError::into_inner);
    if *stopping {
        bail!("the observer is stopping: no uprobe is registered");
    }
    let kind = uprobe_pmu_type()?;
    let retprobe_bit = retprobe_bit()?;
    let mut prepared: Vec<Prepared> = requests
        .iter()
        .map(|request| prepare(request, kind, retprobe_bit))
        .collect();
    let ran = run_in_child(&mut prepared, register_all);
    drop(stopping);
    ran?;
    collect(requests, &prepared)
}

/// Removes probes by closing their descriptors from a child (see the
/// module documentation).
pub fn release(registered: Vec<Registered>) {
    let fds = registered
        .into_iter()
        .flat_map(|probe| {
            let fds = [probe.link, probe.perf_event];
            // Their descriptors are closed just below instead.
            std::mem::forget(probe);
            fds
        })
        .collect();
    close_from_child(fds);
}

/// Closes descriptors of uprobes (perf events, links) from a child.
///
/// The last close of a uprobe's perf event removes its breakpoints from
/// the target, through the same `get_user_pages` as registering; from a
/// thread of the observer that is being killed (another thread called
/// `exit_group`, and this one has not yet taken its SIGKILL), that fails
/// and the kernel leaks the uprobe. A child outside our thread group is
/// not killed with it. Once the observer is stopping, no child is
/// started and the descriptors are left in the table: the kernel closes
/// them at exit, in a task whose SIGKILL has already been taken.
fn close_from_child(fds: Vec<RawFd>) {
    if fds.is_empty() {
        return;
    }
    let stopping = STOPPING.lock().unwrap_or_else(PoisonError::into_inner);
    if *stopping {
        return;
    }
    let mut items: Vec<Prepared> = fds
        .into_iter()
        .map(|fd| Prepared {
            perf: zeroed_perf_attr(),
            link: zeroed_link_attr(),
            pid: fd,
            perf_result: 0,
            link_result: 0,
        })
        .collect();
    if run_in_child(&mut items, close_all).is_err() {
        // No child (clone failed): close them here, in a thread of an
        // observer that is not stopping.
        for item in items {
            // SAFETY: each fd was given up by its owner to this function
            // and nothing else closed it (the child did not run).
            drop(unsafe { OwnedFd::from_raw_fd(item.pid) });
        }
    }
    drop(stopping);
}

fn prepare(request: &UprobeRequest, kind: u32, retprobe_bit: u32) -> Prepared {
    let mut perf = zeroed_perf_attr();
    perf.kind = kind;
    perf.size = size_of::<PerfEventAttr>() as u32;
    perf.config = if request.retprobe {
        1 << retprobe_bit
    } else {
        0
    };
    perf.config1 = request.path.as_ptr() as u64;
    perf.config2 = request.file_offset;
    let mut link = zeroed_link_attr();
    link.program = request.program as u32;
    link.attach_type = BPF_PERF_EVENT;
    link.cookie = request.cookie;
    Prepared {
        perf,
        link,
        pid: request.pid as i32,
        perf_result: NOT_RUN,
        link_result: NOT_RUN,
    }
}

/// The result of a call the child did not make (it stopped at an earlier
/// failure, or never ran): no descriptor, never mistaken for descriptor 0.
const NOT_RUN: i64 = -(libc::ECHILD as i64);

fn zeroed_perf_attr() -> PerfEventAttr {
    PerfEventAttr {
        kind: 0,
        size: 0,
        config: 0,
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        flags: 0,
        wakeup_events: 0,
        bp_type: 0,
        config1: 0,
        config2: 0,
        rest: [0; 8],
    }
}

fn zeroed_link_attr() -> LinkCreateAttr {
    LinkCreateAttr {
        program: 0,
        target: 0,
        attach_type: 0,
        flags: 0,
        cookie: 0,
        rest: [0; 8],
    }
}

/// Turns the child's results into descriptors; on a failure, removes the
/// ones that worked and reports the first that did not.
fn collect(requests: &[UprobeRequest], prepared: &[Prepared]) -> Result<Vec<Registered>> {
    let mut registered = Vec::new();
    let mut orphans = Vec::new();
    let mut failure = None;
    for (index, done) in prepared.iter().enumerate() {
        // Non-negative results are fds the child created in the
        // descriptor table we share, owned by nobody else.
        match (done.perf_result, done.link_result) {
            (perf, link) if perf >= 0 && link >= 0 => registered.push(Registered {
                perf_event: perf as RawFd,
                link: link as RawFd,
            }),
            (perf, link) => {
                if perf >= 0 {
                    orphans.push(perf as RawFd);
                }
                if failure.is_none() {
                    failure = Some(if perf == NOT_RUN {
                        (index, "the registrar ended before perf_event_open", -perf)
                    } else if perf < 0 {
                        (index, "perf_event_open", -perf)
                    } else {
                        (index, "BPF_LINK_CREATE", -link)
                    });
                }
            }
        }
    }
    close_from_child(orphans);
    match failure {
        None => Ok(registered),
        Some((index, call, errno)) => {
            release(registered);
            let request = &requests[index];
            bail!(
                "cannot place the uprobe on {} (offset {:#x} of {}): {call} failed: {}",
                request.what,
                request.file_offset,
                request.path.to_string_lossy(),
                std::io::Error::from_raw_os_error(errno as i32)
            )
        }
    }
}

/// The child's work: one perf event and one link per request, stopping
/// at the first failure. Raw system calls only: no allocation, no locks.
extern "C" fn register_all(argument: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `argument` is the (pointer, length) pair run_in_child built
    // from a live slice; with CLONE_VM this is the same memory, and the
    // parent does not touch the slice until this child has exited.
    let prepared = unsafe { work_slice(argument) };
    for item in prepared.iter_mut() {
        // SAFETY: perf_event_open with a valid attr (its path pointer is a
        // CString the parent keeps alive until we exit).
        let perf = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &item.perf as *const PerfEventAttr,
                item.pid,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if perf < 0 {
            item.perf_result = -errno();
            item.link_result = -1;
            break;
        }
        item.perf_result = perf;
        item.link.target = perf as u32;
        // SAFETY: bpf(BPF_LINK_CREATE) with a valid attr of the size given.
        let link = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_LINK_CREATE,
                &item.link as *const LinkCreateAttr,
                size_of::<LinkCreateAttr>() as libc::c_uint,
            )
        };
        if link < 0 {
            item.link_result = -errno();
            break;
        }
        item.link_result = link;
    }
    0
}

/// The child's work at detach: close each descriptor (held in `pid`).
extern "C" fn close_all(argument: *mut libc::c_void) -> libc::c_int {
    // SAFETY: as in register_all.
    let prepared = unsafe { work_slice(argument) };
    for item in prepared.iter() {
        // SAFETY: closing a descriptor the parent gave up ownership of.
        unsafe { libc::close(item.pid) };
    }
    0
}

/// # Safety
/// `argument` must point at a `(*mut Prepared, usize)` describing a live
/// slice no one else uses while the child runs.
unsafe fn work_slice<'a>(argument: *mut libc::c_void) -> &'a mut [Prepared] {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let (pointer, length) = *(argument as *const (*mut Prepared, usize));
        std::slice::from_raw_parts_mut(pointer, length)
    }
}

fn errno() -> i64 {
    i64::from(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// Runs `work` over `items` in a child sharing our memory and descriptor
/// table, with every signal blocked, and waits for it.
fn run_in_child(
    items: &mut [Prepared],
    work: extern "C" fn(*mut libc::c_void) -> libc::c_int,
) -> Result<()> {
    let mut stack = vec![0u8; CHILD_STACK];
    let mut argument = (items.as_mut_ptr(), items.len());
    // The child inherits the signal mask: block everything (SIGKILL and
    // SIGSTOP cannot be, and only a kill aimed at its own PID sends them).
    let previous = block_all_signals()?;
    // SAFETY: clone with CLONE_VM runs `work` on `stack` (16-byte aligned
    // top) in a new process sharing our memory and fds; `argument` and
    // `items` outlive the child because we wait for it below before
    // returning, and `work` only makes raw system calls.
    let child = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK);
        let top = top.sub(top as usize % 16);
        libc::clone(
            work,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
            (&raw mut argument).cast(),
        )
    };
    let clone_error = std::io::Error::last_os_error();
    restore_signals(&previous);
    if child < 0 {
        return Err(clone_error).context("cannot start the uprobe registrar");
    }
    wait_for(child)
}

fn wait_for(child: libc::pid_t) -> Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let waited = unsafe { libc::waitpid(child, &mut status, libc::__WALL) };
        if waited == child {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("waiting for the uprobe registrar");
        }
    }
}

fn block_all_signals() -> Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigfillset initializes it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to sigset_t values we own.
    let failed = unsafe {
        libc::sigfillset(&mut all) != 0
            || libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous) != 0
    };
    if failed {
        bail!("cannot block signals for the uprobe registrar");
    }
    Ok(previous)
}

fn restore_signals(previous: &libc::sigset_t) {
    // SAFETY: restoring a mask pthread_sigmask gave us.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, previous, std::ptr::null_mut()) };
}

/// The uprobe PMU's type number (Linux ≥ 4.17).
fn uprobe_pmu_type() -> Result<u32> {
    let text = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
        .context("this kernel has no uprobe PMU (/sys/bus/event_source/devices/uprobe/type)")?;
    text.trim()
        .parse()
        .context("unreadable /sys/bus/event_source/devices/uprobe/type")
}

/// Which `config` bit asks the uprobe PMU for a return probe.
fn retprobe_bit() -> Result<u32> {
    let text = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/format/retprobe")
        .context("cannot read the uprobe PMU's retprobe format")?;
    text.trim()
        .strip_prefix("config:")
        .and_then(|bit| bit.parse().ok())
        .context("unexpected uprobe PMU retprobe format")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd as _;

    #[test]
    fn the_kernel_structures_have_the_sizes_it_reads() {
        assert_eq!(size_of::<PerfEventAttr>(), 136);
        assert_eq!(std::mem::offset_of!(PerfEventAttr, config1), 56);
        assert_eq!(std::mem::offset_of!(PerfEventAttr, config2), 64);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, cookie), 16);
    }

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: fcntl on a number that may or may not be an fd.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    fn made(perf_result: i64, link_result: i64) -> Prepared {
        Prepared {
            perf: zeroed_perf_attr(),
            link: zeroed_link_attr(),
            pid: 1,
            perf_result,
            link_result,
        }
    }

    #[test]
    fn a_failure_midway_closes_what_was_made_and_nothing_else() {
        let fd = || std::io::pipe().unwrap().0.into_raw_fd() as i64;
        let (perf, link, orphan) = (fd(), fd(), fd());
        let prepared = [
            made(perf, link),
            made(orphan, -i64::from(libc::EPERM)),
            made(NOT_RUN, NOT_RUN),
        ];
        let place = Place {
            path: Path::new("/bin/true"),
            file_offset: 0x10,
            what: "f",
        };
        let request = || UprobeRequest::new(0, Place { ..place }, 1, false, 0).unwrap();
        let stdin_was_open = is_open(0);
        let err = collect(&[request(), request(), request()], &prepared).unwrap_err();
        assert!(err.to_string().contains("BPF_LINK_CREATE failed"), "{err}");
        for fd in [perf, link, orphan] {
            assert!(!is_open(fd as RawFd), "{fd} closed");
        }
        assert_eq!(is_open(0), stdin_was_open, "descriptor 0 untouched");
    }

    #[test]
    fn a_child_shares_our_descriptor_table_and_closes_in_it() {
        let (read, write) = std::io::pipe().unwrap();
        let fd = read.into_raw_fd();
        let mut items = vec![Prepared {
            perf: zeroed_perf_attr(),
            link: zeroed_link_attr(),
            pid: fd,
            perf_result: 0,
            link_result: 0,
        }];
        run_in_child(&mut items, close_all).unwrap();
        // SAFETY: fcntl on a number that may or may not be an fd.
        let still_open = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
        assert!(!still_open, "the child closed it in our table");
        drop(write);
    }
}
