//! What the running kernel offers the observer, found by asking it (tiny
//! programs it either loads or refuses, files it has or not), so that a
//! missing feature is named at start in one line instead of surfacing as a
//! verifier dump, and the report says what the observation relied on.

use std::os::fd::{FromRawFd as _, OwnedFd};

use serde::Serialize;

use crate::error::UserError;

/// BPF helper numbers (`enum bpf_func_id`).
const HELPER_GET_NS_CURRENT_PID_TGID: i32 = 120;
const HELPER_GET_ATTACH_COOKIE: i32 = 174;

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    /// `/sys/kernel/btf/vmlinux`.
    pub btf: bool,
    /// The uprobe PMU (`perf_event_open` uprobes, Linux 4.17).
    pub uprobe_pmu: bool,
    /// `bpf_get_attach_cookie` in kprobe-type programs (Linux 5.15): how
    /// the observer's probes tell their sites apart. Required.
    pub attach_cookies: bool,
    /// `bpf_get_ns_current_pid_tgid` (Linux 5.7): needed when the observer
    /// runs in a PID namespace other than the initial one.
    pub namespace_pids: bool,
    /// `bpf_probe_write_user` may be used (not under lockdown, with
    /// CAP_SYS_ADMIN): return addresses can be repaired for panics.
    pub write_user_memory: bool,
    /// Why not, when it may not.
    pub write_user_memory_refused: Option<String>,
    /// Whether a probed `push reg` (frame-pointer prologues) is emulated
    /// by the kernel rather than single-stepped out of line (Linux 4.17):
    /// found by probing one in a child ([`super::emulation`]); `None` when
    /// that could not be tried (no privileges).
    pub push_emulated: Option<bool>,
    /// Uretprobes return through the `uretprobe` system call instead of a
    /// trap (x86-64, Linux 6.11): a cheaper return probe.
    pub uretprobe_syscall: bool,
}

impl KernelFeatures {
    /// Asks this kernel.
    pub fn probe() -> Self {
        let refused = super::repair::ability(None).err();
        Self {
            release: kernel_release(),
            btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
            uprobe_pmu: std::path::Path::new("/sys/bus/event_source/devices/uprobe/type").exists(),
            attach_cookies: helper_loads(HELPER_GET_ATTACH_COOKIE),
            namespace_pids: namespace_pid_helper_loads(),
            write_user_memory: refused.is_none(),
            write_user_memory_refused: refused,
            push_emulated: super::emulation::kernel_emulates_push().ok(),
            uretprobe_syscall: crate::arch::URETPROBE_SYSCALL.is_some_and(kernel_has_symbol),
        }
        .recorded()
    }

    /// Tells the planner what this kernel does with a probed `push`, so
    /// that plans and `inspect` say what this kernel does.
    fn recorded(self) -> Self {
        if let Some(emulated) = self.push_emulated {
            crate::plan::site::set_kernel_emulates_push(emulated);
        }
        self
    }

    /// Fails, naming the missing feature and the first Linux version that
    /// has it, when the observer cannot work on this kernel.
    pub fn require(&self) -> Result<(), UserError> {
        if !self.uprobe_pmu {
            return Err(UserError::new(format!(
                "this kernel ({}) has no uprobe PMU (/sys/bus/event_source/devices/uprobe, \
                 CONFIG_UPROBES, Linux 4.17): the observer cannot place probes here",
                self.release
            )));
        }
        if !self.attach_cookies {
            return Err(UserError::new(format!(
                "this kernel ({}) has no BPF attach cookies for uprobes (bpf_get_attach_cookie, \
                 Linux 5.15), which the observer needs to tell its probes apart: use Linux 5.15 \
                 or later",
                self.release
            )));
        }
        Ok(())
    }

    /// One line per feature, for `observer doctor`.
    pub fn describe(&self) -> String {
        let mark = |found: bool| if found { "yes" } else { "NO " };
        let mut out = format!("kernel: Linux {}\n", self.release);
        let prologue = match self.push_emulated {
            None => format!(
                "`{}` emulated at a probe site: could not be tried (privileges)",
                crate::arch::PROLOGUE_INSTRUCTION
            ),
            Some(_) => format!(
                "`{}` emulated at a probe site (tried on a probe): frame-pointer \
                 prologues are probed without a single step",
                crate::arch::PROLOGUE_INSTRUCTION
            ),
        };
        let lines = [
            (
                self.uprobe_pmu,
                "uprobe PMU (Linux 4.17): required, to place probes",
            ),
            (
                self.attach_cookies,
                "BPF attach cookies for uprobes (Linux 5.15): required, to tell probes apart",
            ),
            (
                self.btf,
                "BTF (/sys/kernel/btf/vmlinux): not required by the observer",
            ),
            (
                self.namespace_pids,
                "namespace PIDs (bpf_get_ns_current_pid_tgid, Linux 5.7): to run inside a \
                 container's PID namespace",
            ),
            (
                self.write_user_memory,
                "writing user memory (bpf_probe_write_user; no lockdown, CAP_SYS_ADMIN): to \
                 repair return addresses for panics; without it, call-site return probes",
            ),
            (self.push_emulated == Some(true), prologue.as_str()),
            (
                self.uretprobe_syscall,
                "uretprobe system call (x86-64, Linux 6.11): return probes return without a trap",
            ),
        ];
        for (found, what) in lines {
            out.push_str(&format!("  {} {what}\n", mark(found)));
        }
        if let Some(why) = &self.write_user_memory_refused {
            out.push_str(&format!("      (writing user memory: {why})\n"));
        }
        out
    }

    /// One line for people: what this observation relies on.
    pub fn summary(&self) -> String {
        let yes_no = |found: bool| if found { "yes" } else { "no" };
        format!(
            "Linux {}; BTF {}, attach cookies {}, namespace PIDs {}, push emulated {}, \
             uretprobe syscall {}, writing user memory {}",
            self.release,
            yes_no(self.btf),
            yes_no(self.attach_cookies),
            yes_no(self.namespace_pids),
            self.push_emulated.map_or("untried", yes_no),
            yes_no(self.uretprobe_syscall),
            match &self.write_user_memory_refused {
                None => "allowed".to_string(),
                Some(why) => format!("refused ({why})"),
            }
        )
    }
}

/// Whether the kernel's symbol table names `symbol` (names are readable
/// without privileges; only addresses are hidden).
fn kernel_has_symbol(symbol: &str) -> bool {
    use std::io::BufRead as _;
    let Ok(file) = std::fs::File::open("/proc/kallsyms") else {
        return false;
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.split_ascii_whitespace().nth(2) == Some(symbol))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// True when a kprobe-type program that calls helper `helper` with its
/// context loads: the kernel knows the helper and allows it there.
fn helper_loads(helper: i32) -> bool {
    let call = helper.to_le_bytes();
    // call helper (r1 = ctx); r0 = 0; exit
    let program: [[u8; 8]; 3] = [
        [0x85, 0x00, 0, 0, call[0], call[1], call[2], call[3]],
        [0xb7, 0x00, 0, 0, 0, 0, 0, 0],
        [0x95, 0x00, 0, 0, 0, 0, 0, 0],
    ];
    load_kprobe_program(&program).is_ok()
}

/// True when `bpf_get_ns_current_pid_tgid(dev, ino, &info, 8)` loads.
fn namespace_pid_helper_loads() -> bool {
    let call = HELPER_GET_NS_CURRENT_PID_TGID.to_le_bytes();
    // r1 = 0; r2 = 0; r3 = r10; r3 += -8; r4 = 8; call; r0 = 0; exit
    let program: [[u8; 8]; 8] = [
        [0xb7, 0x01, 0, 0, 0, 0, 0, 0],
        [0xb7, 0x02, 0, 0, 0, 0, 0, 0],
        [0xbf, 0xa3, 0, 0, 0, 0, 0, 0],
        [0x07, 0x03, 0, 0, 0xf8, 0xff, 0xff, 0xff],
        [0xb7, 0x04, 0, 0, 8, 0, 0, 0],
        [0x85, 0x00, 0, 0, call[0], call[1], call[2], call[3]],
        [0xb7, 0x00, 0, 0, 0, 0, 0, 0],
        [0x95, 0x00, 0, 0, 0, 0, 0, 0],
    ];
    load_kprobe_program(&program).is_ok()
}

/// Loads (and at once unloads) a kprobe-type program.
pub(crate) fn load_kprobe_program(program: &[[u8; 8]]) -> Result<(), std::io::Error> {
    loaded_kprobe_program(program).map(drop)
}

/// A loaded kprobe-type program that does nothing (`r0 = 0; exit`).
pub(crate) fn load_empty_kprobe_program() -> Result<OwnedFd, std::io::Error> {
    loaded_kprobe_program(&[
        [0xb7, 0x00, 0, 0, 0, 0, 0, 0],
        [0x95, 0x00, 0, 0, 0, 0, 0, 0],
    ])
}

/// Loads a kprobe-type program; dropping the descriptor unloads it.
fn loaded_kprobe_program(program: &[[u8; 8]]) -> Result<OwnedFd, std::io::Error> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_KPROBE: u32 = 2;
    let license = c"GPL";
    // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns,
    // license, then fields left zero (no log, no name).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_KPROBE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(program.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(program.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: bpf(2) reads `attr.len()` bytes of a valid bpf_attr whose
    // pointers (instructions, license) outlive the call; it returns a new
    // fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_what_the_tests_run_on() {
        let features = KernelFeatures::probe();
        assert!(
            features.uprobe_pmu && features.attach_cookies,
            "{features:?}"
        );
        assert!(features.require().is_ok());
        assert!(features.summary().starts_with("Linux "));
        // Every kernel the observer supports emulates it (Linux 4.17);
        // the unit tests run as root, so it was tried.
        assert_eq!(features.push_emulated, Some(true), "{features:?}");
        // The uretprobe system call of 6.11 and later, on this 6.18.
        assert!(features.uretprobe_syscall, "{features:?}");
    }

    #[test]
    fn namespace_pids_are_known_to_this_kernel() {
        assert!(namespace_pid_helper_loads());
    }

    #[test]
    fn an_unknown_helper_is_refused() {
        assert!(!helper_loads(100_000));
    }

    #[test]
    fn a_kernel_without_cookies_is_named_in_one_line() {
        let old = KernelFeatures {
            release: "5.10.0-32-amd64".into(),
            btf: true,
            uprobe_pmu: true,
            attach_cookies: false,
            namespace_pids: true,
            write_user_memory: true,
            write_user_memory_refused: None,
            push_emulated: Some(true),
            uretprobe_syscall: false,
        };
        let err = old.require().unwrap_err().to_string();
        assert!(
            err.contains("5.10.0-32-amd64") && err.contains("Linux 5.15"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }
}
