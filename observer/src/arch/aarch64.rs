//! arm64 (AAPCS64).

/// The machine of the programs this build observes.
pub const ELF_ARCHITECTURE: object::Architecture = object::Architecture::Aarch64;

/// The processor's name in messages.
pub const NAME: &str = "arm64";

/// General registers by DWARF number: x0–x30 (x29 the frame pointer, x30
/// the link register), then sp (31).
pub const REGISTER_NAMES: &[&str] = &[
    "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14",
    "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
    "x28", "x29", "x30", "sp",
];

/// DWARF numbers of the argument registers `arg0`…`arg5` read: x0–x5.
// arm64: not yet x6 and x7, the seventh and eighth arguments: the shared
// location encoding (`observer_ebpf::LOC_BASE_ARG_COUNT`) saves six.
pub const ARGUMENT_REGISTERS: [u16; 6] = [0, 1, 2, 3, 4, 5];

/// Whether a uretprobe's replaced return address can be put back when a
/// panic unwinds through the call: no. The kernel replaces x30 at entry;
/// the callee saves it wherever its prologue chooses, signed when built
/// with pac-ret (with a key the eBPF programs cannot sign with), so the
/// original cannot be put back where the unwinder reads it.
pub const RETURN_ADDRESS_REPAIR: Result<(), &str> = Err(
    "on arm64 the uretprobe replaces x30, which the function saves where its prologue chooses \
     (and signs, with pac-ret): the original return address cannot be put back",
);

// A function whose first instruction is the frame-record store a
// prologue starts with; hidden, so it is this binary's own.
core::arch::global_asm!(
    ".pushsection .text.pool_observer_push_site,\"ax\",@progbits",
    ".p2align 4",
    ".globl pool_observer_push_site",
    ".hidden pool_observer_push_site",
    ".type pool_observer_push_site,@function",
    "pool_observer_push_site:",
    "stp x29, x30, [sp, #-16]!",
    "ldp x29, x30, [sp], #16",
    "ret",
    ".size pool_observer_push_site, .-pool_observer_push_site",
    ".popsection",
);

// The same with an instruction no kernel emulates first (tests only).
#[cfg(test)]
core::arch::global_asm!(
    ".pushsection .text.pool_observer_step_site,\"ax\",@progbits",
    ".p2align 4",
    ".globl pool_observer_step_site",
    ".hidden pool_observer_step_site",
    ".type pool_observer_step_site,@function",
    "pool_observer_step_site:",
    "sub sp, sp, #16",
    "add sp, sp, #16",
    "ret",
    ".size pool_observer_step_site, .-pool_observer_step_site",
    ".popsection",
);

unsafe extern "C" {
    /// Stores and reloads the frame record (x29, x30); touches nothing else.
    fn pool_observer_push_site();
    /// Moves sp down and back; touches nothing else.
    #[cfg(test)]
    fn pool_observer_step_site();
}

/// A function of the observer's own whose first instruction is the one a
/// frame-pointer prologue starts with (`stp x29, x30, [sp, #-16]!`), for
/// `attach::emulation` to probe.
// arm64: not yet measured which kernels simulate it (the issue says:
// measure, do not assume); the report's wording still says `push`.
pub const PROLOGUE_SITE: unsafe extern "C" fn() = pool_observer_push_site;

/// The same, starting with an instruction no kernel emulates
/// (`sub sp, sp, #16`).
#[cfg(test)]
pub const STEPPED_SITE: unsafe extern "C" fn() = pool_observer_step_site;
