//! The instruction a uprobe replaces, and what it costs.
//!
//! The kernel puts an `int3` over the first byte of the probed instruction.
//! After the handler runs it must execute the original instruction: a few
//! (relative jumps and calls, `nop`, and since Linux 4.17 `push reg`) it
//! emulates in the kernel; every other instruction is copied to a page in
//! the process and single-stepped there, about ten times slower on this
//! project's machines (≈12 µs vs ≈1 µs per hit). A few it refuses
//! outright (`perf_event_open` fails with ENOTSUPP, 524): instructions with
//! a `lock` prefix or a legacy segment prefix (es, cs, ss, ds); see
//! `is_prefix_bad` in the kernel's arch/x86/kernel/uprobes.c.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use iced_x86::{Decoder, DecoderOptions, Formatter as _, IntelFormatter, Mnemonic};

/// Whether the running kernel emulates a probed `push reg`: every kernel
/// the observer supports does (Linux 4.17), and the kernel's own answer
/// replaces this when [`crate::attach::features`] could try it.
static KERNEL_EMULATES_PUSH: AtomicBool = AtomicBool::new(true);

/// Records what the running kernel does with a probed `push reg`.
pub fn set_kernel_emulates_push(emulated: bool) {
    KERNEL_EMULATES_PUSH.store(emulated, Ordering::Relaxed);
}

/// How the kernel executes the probed instruction after the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Execution {
    /// Emulated in the kernel: cheap.
    Emulated,
    /// Single-stepped out of line: about 10× the cost of an emulated probe.
    SingleStep,
    /// The kernel refuses to probe it (a `lock` or segment prefix).
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
            Execution::Refused => "refused by the kernel: it cannot probe an instruction with a lock or segment prefix",
            Execution::Unknown => "not decodable",
        };
        write!(f, "{} ({how})", self.text)
    }
}

/// Decodes the instruction at the start of `bytes`, which sit at `address`.
pub fn decode_first(bytes: &[u8], address: u64) -> ProbedInstruction {
    let mut decoder = Decoder::with_ip(64, bytes, address, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return ProbedInstruction {
            text: "(invalid)".into(),
            execution: Execution::Unknown,
        };
    }
    let mut text = String::new();
    IntelFormatter::new().format(&instruction, &mut text);
    if has_refused_prefix(&instruction) {
        return ProbedInstruction {
            text,
            execution: Execution::Refused,
        };
    }
    let emulated = match instruction.mnemonic() {
        Mnemonic::Nop | Mnemonic::Call | Mnemonic::Jmp => {
            !instruction.is_call_near_indirect() && !instruction.is_jmp_near_indirect()
        }
        Mnemonic::Push => {
            instruction.op0_kind() == iced_x86::OpKind::Register
                && KERNEL_EMULATES_PUSH.load(Ordering::Relaxed)
        }
        _ => instruction.is_jcc_short_or_near(),
    };
    ProbedInstruction {
        text,
        execution: if emulated {
            Execution::Emulated
        } else {
            Execution::SingleStep
        },
    }
}

/// The prefixes the kernel refuses to single-step or emulate.
fn has_refused_prefix(instruction: &iced_x86::Instruction) -> bool {
    use iced_x86::Register;
    instruction.has_lock_prefix()
        || matches!(
            instruction.segment_prefix(),
            Register::ES | Register::CS | Register::SS | Register::DS
        )
}

/// Up to `count` instructions from the start of `bytes`, as (address, text).
pub fn decode_several(bytes: &[u8], address: u64, count: usize) -> Vec<(u64, String)> {
    let mut decoder = Decoder::with_ip(64, bytes, address, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut out = Vec::new();
    while decoder.can_decode() && out.len() < count {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            break;
        }
        let mut text = String::new();
        formatter.format(&instruction, &mut text);
        out.push((instruction.ip(), text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_common_prologues() {
        let push = decode_first(&[0x55, 0x48, 0x89, 0xe5], 0x1000);
        assert_eq!(push.text, "push rbp");
        assert_eq!(push.execution, Execution::Emulated);
        let push_r15 = decode_first(&[0x41, 0x57], 0x1000);
        assert_eq!(push_r15.execution, Execution::Emulated);
        let sub = decode_first(&[0x48, 0x83, 0xec, 0x18], 0x1000);
        assert_eq!(sub.text, "sub rsp,18h");
        assert_eq!(sub.execution, Execution::SingleStep);
        let nop5 = decode_first(&[0x0f, 0x1f, 0x44, 0x00, 0x00], 0x1000);
        assert_eq!(nop5.execution, Execution::Emulated);
        let call = decode_first(&[0xe8, 0, 0, 0, 0], 0x1000);
        assert_eq!(call.execution, Execution::Emulated);
        let indirect = decode_first(&[0xff, 0xd0], 0x1000);
        assert_eq!(indirect.execution, Execution::SingleStep);
        assert_eq!(decode_first(&[], 0).execution, Execution::Unknown);
        // lock dec qword ptr [rdi]
        let locked = decode_first(&[0xf0, 0x48, 0xff, 0x0f], 0x1000);
        assert_eq!(locked.execution, Execution::Refused);
        assert!(
            locked.to_string().contains("refused by the kernel"),
            "{locked}"
        );
    }
}
