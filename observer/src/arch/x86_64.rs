//! x86-64 (System V ABI).

/// The machine of the programs this build observes.
pub const ELF_ARCHITECTURE: object::Architecture = object::Architecture::X86_64;

/// The instruction set of the programs this build observes.
pub const ISA: super::decode::Isa = super::decode::Isa::X86_64;

/// Its ELF `e_machine`, as library headers are checked.
pub const ELF_MACHINE: u16 = object::elf::EM_X86_64;

/// Directories the dynamic linker searches after the program's own paths,
/// as glibc's default configuration does on x86-64 Debian/Ubuntu/Fedora.
pub const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// The architecture bits (`flags & 0xff00`) of its entries in glibc's
/// `ld.so.cache` (`FLAG_X8664_LIB64`).
pub const LD_CACHE_ARCH: u32 = 0x0300;

/// The kernel symbol of the `uretprobe` system call, through which return
/// probes return without a trap (x86-64 only, Linux 6.11).
pub const URETPROBE_SYSCALL: Option<&str> = Some("__x64_sys_uretprobe");

/// The instruction a frame-pointer prologue starts with, for people.
pub const PROLOGUE_INSTRUCTION: &str = "push rbp";

/// The registers a result of up to 16 bytes comes back in: `ret` (`ret.0`)
/// and `ret.1`.
pub const RETURN_REGISTERS: [&str; 2] = ["rax", "rdx"];

/// Where a larger result's hidden return slot is, as a location: rdi, the
/// first argument, holds its address at entry.
pub const HIDDEN_RESULT: &str = "arg0";

/// The register holding that address, for people.
pub const HIDDEN_RESULT_REGISTER: &str = "rdi (arg0)";

/// Why `argN` stops at the number of [`ARGUMENT_REGISTERS`].
pub const ARGUMENT_LIMIT: &str = "only arg0..arg5 are passed in registers";

/// DWARF numbers of the registers a call preserves (System V: rbx, rbp,
/// r12–r15).
pub const CALL_PRESERVED_REGISTERS: &[u16] = &[3, 6, 12, 13, 14, 15];

/// DWARF number of the stack pointer (rsp).
pub const STACK_POINTER: u16 = 7;

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
