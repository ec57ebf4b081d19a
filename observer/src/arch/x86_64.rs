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
