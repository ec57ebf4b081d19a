//! Can return addresses be repaired for this target? The repair writes
//! into the target's stack from eBPF (`bpf_probe_write_user`), which the
//! kernel allows only to CAP_SYS_ADMIN, refuses under lockdown (integrity
//! or confidentiality, e.g. with Secure Boot or
//! CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY), and which would break a
//! target that keeps a shadow stack of return addresses. Lockdown is not
//! always visible (securityfs may not be mounted), so the kernel is
//! asked directly: it loads a program using the helper, or it does not.

use std::path::Path;

use crate::plan::returns::RepairAbility;

/// Decides whether return addresses may be repaired in the target `pid`
/// (or any target, without one).
pub fn ability(pid: Option<u32>) -> RepairAbility {
    if !super::has_sys_admin() {
        return Err(
            "repairing return addresses needs CAP_SYS_ADMIN (bpf_probe_write_user), which this \
             process lacks"
                .into(),
        );
    }
    if let Some(mode) = lockdown_mode(Path::new("/sys/kernel/security/lockdown")) {
        return Err(format!(
            "the kernel is locked down ({mode}), which forbids bpf_probe_write_user"
        ));
    }
    if let Err(errno) = load_probe_write_user_program() {
        return Err(format!(
            "this kernel refuses programs that write user memory (bpf_probe_write_user: {errno}; \
             kernel lockdown, or a security module)"
        ));
    }
    if let Some(pid) = pid {
        if uses_shadow_stack(pid) {
            return Err(
                "the target keeps a shadow stack, which a repaired return address would not match"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Asks the kernel to load a minimal kprobe program that calls
/// `bpf_probe_write_user`; it refuses when the helper is not allowed.
fn load_probe_write_user_program() -> Result<(), std::io::Error> {
    // r1 = 0; *(u64 *)(r10 - 8) = r1; r2 = r10; r2 += -8; r3 = 8;
    // call bpf_probe_write_user; r0 = 0; exit
    const PROGRAM: [[u8; 8]; 8] = [
        [0xb7, 0x01, 0, 0, 0, 0, 0, 0],
        [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0],
        [0xbf, 0xa2, 0, 0, 0, 0, 0, 0],
        [0x07, 0x02, 0, 0, 0xf8, 0xff, 0xff, 0xff],
        [0xb7, 0x03, 0, 0, 8, 0, 0, 0],
        [0x85, 0x00, 0, 0, 36, 0, 0, 0],
        [0xb7, 0x00, 0, 0, 0, 0, 0, 0],
        [0x95, 0x00, 0, 0, 0, 0, 0, 0],
    ];
    super::features::load_kprobe_program(&PROGRAM)
}

/// The active lockdown mode, if it is not `none`.
fn lockdown_mode(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    active_lockdown(&text)
}

/// Parses `none [integrity] confidentiality`: the bracketed word.
fn active_lockdown(text: &str) -> Option<String> {
    let active = text
        .split_whitespace()
        .find(|word| word.starts_with('['))?
        .trim_matches(|c| c == '[' || c == ']');
    (active != "none").then(|| active.to_string())
}

/// True when the process's main thread has the x86 user shadow stack on.
fn uses_shadow_stack(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("x86_Thread_features:") && line.contains("shstk"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_modes_are_read_from_the_bracketed_word() {
        assert_eq!(active_lockdown("[none] integrity confidentiality"), None);
        assert_eq!(
            active_lockdown("none [integrity] confidentiality\n"),
            Some("integrity".into())
        );
        assert_eq!(active_lockdown(""), None);
    }

    #[test]
    fn the_kernel_answers_whether_it_allows_writing_user_memory() {
        // Either answer is a real one; what must not happen is a crash or
        // an error other than a refusal.
        match load_probe_write_user_program() {
            Ok(()) => {}
            Err(err) => assert!(
                matches!(
                    err.raw_os_error(),
                    Some(libc::EINVAL | libc::EPERM | libc::EACCES)
                ),
                "{err}"
            ),
        }
    }

    #[test]
    fn this_process_has_no_shadow_stack() {
        assert!(!uses_shadow_stack(std::process::id()));
    }
}
