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
