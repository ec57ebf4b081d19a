//! PID namespaces: how the kernel side recognises the target's threads,
//! and what PID a containerised target has in its own namespace.
//!
//! The PID the user gives, `/proc/PID`, `pidfd_open` and the PID given to
//! `perf_event_open` for the uprobes all count in the observer's own PID
//! namespace. The eBPF programs compare the current thread's process ID
//! with the target's:
//!
//! - when the observer runs in the initial PID namespace (a host, or a
//!   container with `hostPID`), the kernel's own IDs
//!   (`bpf_get_current_pid_tgid`) are the PIDs it sees: nothing else is
//!   needed, and nothing is added to the probes' work;
//! - otherwise (the observer in a container), those IDs are not the ones
//!   it knows, so the programs ask for the current thread's IDs in the
//!   target's own PID namespace (`bpf_get_ns_current_pid_tgid`, Linux ≥
//!   5.7), named by the device and inode of `/proc/PID/ns/pid`. The
//!   helper answers only for a thread whose own (innermost) namespace is
//!   the one named, so the target's is named, not the observer's: when both
//!   share a namespace they are the same, and a target in a namespace
//!   nested in the observer's is still recognised.

use std::fs;
use std::os::unix::fs::MetadataExt as _;

use anyhow::{Context as _, Result};

use crate::error::UserError;

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO` in the
/// kernel's `include/linux/proc_ns.h`): fixed, unlike every other
/// namespace's.
const INITIAL_PID_NAMESPACE_INODE: u64 = 0xEFFF_FFFC;

/// A PID namespace, as the kernel's `bpf_get_ns_current_pid_tgid` wants
/// it named: the device and inode of its `/proc/PID/ns/pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceId {
    /// The namespace file system's device number in the kernel's own
    /// encoding (`MKDEV`: major << 20 | minor), which the helper compares
    /// with, not `stat`'s.
    pub device: u64,
    pub inode: u64,
}

/// What the eBPF programs compare to tell the target's threads apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelTarget {
    /// The target's process ID, counted in `namespace`.
    pub tgid: u32,
    /// The target's own PID namespace, or `None` for the kernel's own
    /// (initial namespace) IDs.
    pub namespace: Option<NamespaceId>,
}

impl KernelTarget {
    /// How the kernel side recognises process `pid` (a PID of the
    /// observer's namespace). Fails when `/proc` is not the observer's
    /// namespace's, where no PID could be trusted.
    pub fn of(pid: u32) -> Result<Self> {
        if ObserverNamespace::current()?.is_initial {
            return Ok(Self {
                tgid: pid,
                namespace: None,
            });
        }
        let ids = namespace_tgids(pid)?;
        let tgid = *ids
            .last()
            .with_context(|| format!("no NStgid in /proc/{pid}/status"))?;
        Ok(Self {
            tgid,
            namespace: Some(namespace_of(&format!("/proc/{pid}/ns/pid"))?),
        })
    }
}

/// The observer's own PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserverNamespace {
    pub is_initial: bool,
}

impl ObserverNamespace {
    /// Reads it, after checking that `/proc` shows this namespace's PIDs
    /// (a container that shares the host's `/proc` but not its PID
    /// namespace would make every PID mean another process).
    pub fn current() -> Result<Self> {
        proc_is_ours()?;
        let own = namespace_of("/proc/self/ns/pid")?;
        Ok(Self {
            is_initial: own.inode == INITIAL_PID_NAMESPACE_INODE,
        })
    }
}

/// Fails with a [`UserError`] unless `/proc/self` is this process as its
/// own PID namespace counts it.
fn proc_is_ours() -> Result<()> {
    // SAFETY: getpid has no preconditions.
    let own = unsafe { libc::getpid() };
    let shown = fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str()?.parse::<i32>().ok());
    if shown == Some(own) {
        return Ok(());
    }
    let shown = shown.map_or("no process".to_string(), |pid| format!("PID {pid}"));
    Err(UserError::new(format!(
        "/proc belongs to another PID namespace (it shows this process as {shown}, its own \
         namespace counts it as PID {own}), so PIDs cannot be trusted: mount a /proc of this \
         namespace (`unshare --pid --fork --mount-proc`, or the container's own /proc)"
    ))
    .into())
}

/// The device and inode of a namespace file such as `/proc/PID/ns/pid`.
fn namespace_of(path: &str) -> Result<NamespaceId> {
    let metadata = fs::metadata(path).with_context(|| format!("cannot stat {path}"))?;
    Ok(NamespaceId {
        device: kernel_device(metadata.dev()),
        inode: metadata.ino(),
    })
}

/// `stat`'s device number (glibc's and musl's encoding) in the kernel's
/// internal one. The two agree for minors below 256 with major 0, which
/// is what the namespace file system usually gets, but not always.
fn kernel_device(dev: u64) -> u64 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major << 20) | minor
}

/// The process's IDs in each PID namespace `/proc` can see, from the one
/// `/proc` belongs to down to its own (`NStgid` in `/proc/PID/status`).
pub fn namespace_tgids(pid: u32) -> Result<Vec<u32>> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_namespace_ids(&status, "NStgid:").with_context(|| format!("no NStgid line in {path}"))
}

/// The PID `pid` has in its own PID namespace, when that namespace is not
/// the observer's (a process in a container, seen from the host): what
/// the people who run the container know it by.
pub fn own_namespace_pid(pid: u32) -> Option<u32> {
    let ids = namespace_tgids(pid).ok()?;
    (ids.len() > 1).then(|| ids.last().copied()).flatten()
}

/// The numbers of the `label` line of a `/proc/PID/status` text.
fn parse_namespace_ids(status: &str, label: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|line| line.strip_prefix(label))?;
    line.split_ascii_whitespace()
        .map(|id| id.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ids_of_every_namespace_innermost_last() {
        let status =
            "Name:\tgw\nTgid:\t4242\nNgid:\t0\nPid:\t4242\nNStgid:\t4242\t1\nNSpid:\t4242\t1\n";
        assert_eq!(parse_namespace_ids(status, "NStgid:"), Some(vec![4242, 1]));
        assert_eq!(parse_namespace_ids("Pid:\t7\n", "NStgid:"), None);
        assert_eq!(parse_namespace_ids("NStgid:\tx\n", "NStgid:"), None);
    }

    #[test]
    fn device_numbers_are_given_in_the_kernels_encoding() {
        // major 0, minor 4 (nsfs at boot): the same in both encodings.
        assert_eq!(kernel_device(4), 4);
        // major 8, minor 1 (sda1): 0x801 for stat, 8 << 20 | 1 inside.
        assert_eq!(kernel_device(0x801), (8 << 20) | 1);
        // major 0, minor 300: the minor's high bits move.
        assert_eq!(kernel_device(libc::makedev(0, 300)), 300);
    }

    #[test]
    fn on_the_host_the_kernel_compares_the_pid_itself() {
        let namespace = ObserverNamespace::current().unwrap();
        let me = std::process::id();
        let target = KernelTarget::of(me).unwrap();
        if namespace.is_initial {
            assert_eq!(
                target,
                KernelTarget {
                    tgid: me,
                    namespace: None
                }
            );
        } else {
            // Tests run inside a container: our own namespace, our own PID.
            assert_eq!(target.tgid, me);
            assert_eq!(
                target.namespace,
                Some(namespace_of("/proc/self/ns/pid").unwrap())
            );
        }
        assert_eq!(own_namespace_pid(me), None, "we are in our own namespace");
    }
}
