//! The processor the observer is built for, which is the processor of the
//! programs it can observe (uprobes and the eBPF programs run in the
//! observer's own kernel): its ELF machine, and how the location language
//! and signatures name its registers.
//!
//! Chosen once, by the build's `target_arch`; each module provides the
//! same items:
//!
//! | item | meaning |
//! |---|---|
//! | `ELF_ARCHITECTURE` | the machine a target's ELF file must be built for |
//! | `NAME` | the processor's name in messages |
//! | `REGISTER_NAMES` | general registers by DWARF number, as locations spell them |
//! | `ARGUMENT_REGISTERS` | DWARF numbers of the registers `arg0`… read |
//! | `RETURN_ADDRESS_REPAIR` | whether a uretprobe's return address can be put back for a panic, or why not |
//! | `PROLOGUE_SITE` | an own function starting with a frame-pointer prologue's first instruction (probe-cost measurement) |
//! | `ISA` | the instruction set the planner decodes ([`decode`]) |
//! | `ELF_MACHINE`, `LIBRARY_DIRS`, `LD_CACHE_ARCH` | how the dynamic linker's search is followed |
//! | `URETPROBE_SYSCALL`, `PROLOGUE_INSTRUCTION` | what `doctor` looks for and names |
//! | `RETURN_REGISTERS`, `HIDDEN_RESULT`, `HIDDEN_RESULT_REGISTER`, `ARGUMENT_LIMIT` | the calling convention as locations and messages say it |
//! | `CALL_PRESERVED_REGISTERS`, `STACK_POINTER` | DWARF numbers: what survives a call |
//!
//! The eBPF programs have the kernel side of the same seam
//! (`observer-ebpf/src/arch/`).

pub mod decode;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the observer supports x86-64 and arm64");

use std::path::Path;

/// Refuses an ELF file built for another processor than the observer's,
/// in one line that says which build of the observer it needs.
pub fn check_machine(path: &Path, architecture: object::Architecture) -> anyhow::Result<()> {
    if architecture == ELF_ARCHITECTURE {
        return Ok(());
    }
    let needed = match architecture {
        object::Architecture::X86_64 => "the x86-64 build of the observer",
        object::Architecture::Aarch64 => "the arm64 build of the observer",
        _ => "a processor this observer does not support",
    };
    anyhow::bail!(
        "{} is built for {architecture:?}; this observer is built for {NAME} and observes {NAME} programs only ({needed} is needed)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observers_own_machine_is_accepted_and_a_foreign_one_refused() {
        let path = Path::new("/bin/target");
        assert!(check_machine(path, ELF_ARCHITECTURE).is_ok());
        let foreign = if ELF_ARCHITECTURE == object::Architecture::X86_64 {
            object::Architecture::Aarch64
        } else {
            object::Architecture::X86_64
        };
        let refused = check_machine(path, foreign).unwrap_err().to_string();
        assert!(refused.contains(&format!("built for {NAME}")), "{refused}");
        assert!(!refused.contains('\n'), "{refused}");
    }

    #[test]
    fn argument_registers_have_names() {
        for number in ARGUMENT_REGISTERS {
            assert!(usize::from(number) < REGISTER_NAMES.len());
        }
    }
}
