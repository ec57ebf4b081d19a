//! The instruction a uprobe replaces, and what it costs.
//!
//! The kernel puts a breakpoint over the probed instruction. After the
//! handler runs it must execute the original instruction: a few (relative
//! jumps and calls, on x86-64 `nop` and `push reg`) it emulates in the
//! kernel; every other instruction is copied to a page in the process and
//! single-stepped there, about ten times slower on this project's machines
//! (≈12 µs vs ≈1 µs per hit). A few it refuses outright. Which are which
//! depends on the processor: see the decoders in [`crate::arch::decode`].

use std::fmt;

use crate::arch::decode::Isa;

/// Records what the running kernel does with a probed frame-pointer
/// prologue's first instruction (`push rbp`, `stp x29, x30, [sp, #-16]!`).
pub fn set_kernel_emulates_push(emulated: bool) {
    crate::arch::decode::set_prologue_emulated(emulated);
}

/// How the kernel executes the probed instruction after the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Execution {
    /// Emulated in the kernel: cheap.
    Emulated,
    /// Single-stepped out of line: about 10× the cost of an emulated probe.
    SingleStep,
    /// The kernel refuses to probe it (x86-64: a `lock` or segment prefix;
    /// arm64: see [`crate::arch::decode`]).
    Refused,
    /// Could not be decoded.
    Unknown,
}

/// The first instruction at a probe address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedInstruction {
    pub text: String,
    pub execution: Execution,
}

impl fmt::Display for ProbedInstruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.execution {
            Execution::Emulated => "emulated by the kernel",
            Execution::SingleStep => "single-stepped, ~10x the cost of an emulated probe",
            Execution::Refused => "refused by the kernel: it cannot probe this instruction",
            Execution::Unknown => "not decodable",
        };
        write!(f, "{} ({how})", self.text)
    }
}

/// Decodes the instruction at the start of `bytes`, which sit at `address`,
/// as the observer's own processor's.
pub fn decode_first(bytes: &[u8], address: u64) -> ProbedInstruction {
    decode_first_as(crate::arch::ISA, bytes, address)
}

/// The same, for the instruction set `isa`.
pub fn decode_first_as(isa: Isa, bytes: &[u8], address: u64) -> ProbedInstruction {
    match isa.probe_site(bytes, address) {
        Some((text, execution)) => ProbedInstruction { text, execution },
        None => ProbedInstruction {
            text: "(invalid)".into(),
            execution: Execution::Unknown,
        },
    }
}

/// Up to `count` instructions from the start of `bytes`, as (address, text).
pub fn decode_several(bytes: &[u8], address: u64, count: usize) -> Vec<(u64, String)> {
    crate::arch::ISA.listing(bytes, address, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_common_prologues() {
        let x86 = |bytes: &[u8]| decode_first_as(Isa::X86_64, bytes, 0x1000);
        let push = x86(&[0x55, 0x48, 0x89, 0xe5]);
        assert_eq!(push.text, "push rbp");
        assert_eq!(push.execution, Execution::Emulated);
        assert_eq!(x86(&[]).execution, Execution::Unknown);
        // lock dec qword ptr [rdi]
        let locked = x86(&[0xf0, 0x48, 0xff, 0x0f]);
        assert!(
            locked.to_string().contains("refused by the kernel"),
            "{locked}"
        );
        let arm = |word: u32| decode_first_as(Isa::Aarch64, &word.to_le_bytes(), 0x1000);
        // bl: simulated
        assert_eq!(arm(0x9400_0010).execution, Execution::Emulated);
        assert_eq!(arm(0x9400_0010).text, "bl 0x1040");
    }
}
