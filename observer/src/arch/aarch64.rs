//! arm64 (AAPCS64).

/// The machine of the programs this build observes.
pub const ELF_ARCHITECTURE: object::Architecture = object::Architecture::Aarch64;

/// The instruction set of the programs this build observes.
pub const ISA: super::decode::Isa = super::decode::Isa::Aarch64;

/// Its ELF `e_machine`, as library headers are checked.
pub const ELF_MACHINE: u16 = object::elf::EM_AARCH64;

/// Directories the dynamic linker searches after the program's own paths:
/// glibc's multiarch directories on Debian/Ubuntu, Fedora's lib64, then
/// the directories musl's loader (`/lib/ld-musl-aarch64.so.1`) searches
/// by default (`/lib`, `/usr/local/lib`, `/usr/lib`).
pub const LIBRARY_DIRS: &[&str] = &[
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/local/lib",
    "/usr/lib",
];

/// The architecture bits (`flags & 0xff00`) of its entries in glibc's
/// `ld.so.cache` (`FLAG_AARCH64_LIB64`).
pub const LD_CACHE_ARCH: u32 = 0x0a00;

/// The kernel symbol of the `uretprobe` system call: none, it is x86-64's
/// (Linux 6.11); arm64's return probes return through a `brk` trap.
pub const URETPROBE_SYSCALL: Option<&str> = None;

/// The instruction a frame-pointer prologue starts with, for people.
pub const PROLOGUE_INSTRUCTION: &str = "stp x29, x30, [sp, #-16]!";

/// The registers a result of up to 16 bytes comes back in: `ret` (`ret.0`)
/// and `ret.1` (AAPCS64: x0, x1).
pub const RETURN_REGISTERS: [&str; 2] = ["x0", "x1"];

/// Where a larger result's hidden return slot is, as a location: AAPCS64
/// passes its address in x8, the indirect-result register, not an
/// argument. The entry saves x8 (`observer_ebpf::LOC_BASE_RESULT_SLOT`),
/// and the location names that saved value: at the return x8 itself may
/// hold anything.
pub const HIDDEN_RESULT: &str = "x8@entry";

/// The register holding that address, for people.
pub const HIDDEN_RESULT_REGISTER: &str = "x8";

/// Why `argN` stops at the number of [`ARGUMENT_REGISTERS`].
pub const ARGUMENT_LIMIT: &str = "only arg0..arg7 are passed in registers (x0-x7)";

/// DWARF numbers of the registers a call preserves (AAPCS64: x19–x28, and
/// x29, the frame pointer).
pub const CALL_PRESERVED_REGISTERS: &[u16] = &[19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29];

/// DWARF number of the stack pointer (sp).
pub const STACK_POINTER: u16 = 31;

/// The processor's name in messages.
pub const NAME: &str = "arm64";

/// General registers by DWARF number: x0–x30 (x29 the frame pointer, x30
/// the link register), then sp (31).
pub const REGISTER_NAMES: &[&str] = &[
    "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14",
    "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
    "x28", "x29", "x30", "sp",
];

/// DWARF numbers of the argument registers `arg0`…`arg7` read: x0–x7.
pub const ARGUMENT_REGISTERS: [u16; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

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
