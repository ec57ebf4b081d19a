//! x86-64 (System V ABI).

/// The machine of the programs this build observes.
pub const ELF_ARCHITECTURE: object::Architecture = object::Architecture::X86_64;

/// The processor's name in messages.
pub const NAME: &str = "x86-64";

/// General registers by DWARF number.
pub const REGISTER_NAMES: &[&str] = &[
    "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// DWARF numbers of the argument registers, in order: rdi rsi rdx rcx r8 r9.
pub const ARGUMENT_REGISTERS: [u16; 6] = [5, 4, 1, 2, 8, 9];

/// Whether a uretprobe's replaced return address can be put back when a
/// panic unwinds through the call: yes, it is in the slot `call` pushed.
pub const RETURN_ADDRESS_REPAIR: Result<(), &str> = Ok(());

// A function whose first instruction is `push rbp`, whatever the compiler
// does with Rust code; hidden, so it is this binary's own.
core::arch::global_asm!(
    ".pushsection .text.pool_observer_push_site,\"ax\",@progbits",
    ".p2align 4",
    ".globl pool_observer_push_site",
    ".hidden pool_observer_push_site",
    ".type pool_observer_push_site,@function",
    "pool_observer_push_site:",
    "push rbp",
    "pop rbp",
    "ret",
    ".size pool_observer_push_site, .-pool_observer_push_site",
    ".popsection",
);

// The same with an instruction no kernel emulates first, to show that the
// method tells them apart (tests only).
#[cfg(test)]
core::arch::global_asm!(
    ".pushsection .text.pool_observer_step_site,\"ax\",@progbits",
    ".p2align 4",
    ".globl pool_observer_step_site",
    ".hidden pool_observer_step_site",
    ".type pool_observer_step_site,@function",
    "pool_observer_step_site:",
    "sub rsp, 8",
    "add rsp, 8",
    "ret",
    ".size pool_observer_step_site, .-pool_observer_step_site",
    ".popsection",
);

unsafe extern "C" {
    /// Pushes and pops `rbp`; touches nothing else.
    fn pool_observer_push_site();
    /// Moves rsp down and back; touches nothing else.
    #[cfg(test)]
    fn pool_observer_step_site();
}

/// A function of the observer's own whose first instruction is the one a
/// frame-pointer prologue starts with (`push rbp`), for
/// `attach::emulation` to probe.
pub const PROLOGUE_SITE: unsafe extern "C" fn() = pool_observer_push_site;

/// The same, starting with an instruction no kernel emulates
/// (`sub rsp, 8`).
#[cfg(test)]
pub const STEPPED_SITE: unsafe extern "C" fn() = pool_observer_step_site;

#[cfg(test)]
mod tests {
    #[test]
    fn the_prologue_site_starts_with_push_rbp() {
        // SAFETY: reading the first byte of a function of this binary.
        let first = unsafe { *(super::PROLOGUE_SITE as *const () as *const u8) };
        assert_eq!(first, 0x55, "push rbp");
    }
}
