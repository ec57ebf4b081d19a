//! x86-64, decoded by iced-x86.
//!
//! What the kernel does with a probed instruction (arch/x86/kernel/
//! uprobes.c): relative jumps and calls, `nop`, and since Linux 4.17
//! `push reg` it emulates; every other instruction is copied to a page in
//! the process and single-stepped there. It refuses instructions with a
//! `lock` prefix or a legacy segment prefix (es, cs, ss, ds): see
//! `is_prefix_bad`.

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Formatter as _, InstructionInfoFactory, IntelFormatter,
    Mnemonic, OpAccess, OpKind, Register,
};

use super::{Flow, Instruction, Native, Reg};
use crate::plan::site::Execution;

fn decoder(bytes: &[u8], address: u64) -> Decoder<'_> {
    Decoder::with_ip(64, bytes, address, DecoderOptions::NONE)
}

/// The instruction at the start of `bytes`.
pub(super) fn decode(bytes: &[u8], address: u64) -> Instruction {
    convert(decoder(bytes, address).decode())
}

/// Every instruction of `code`, in order.
pub(super) fn sweep(code: &[u8], address: u64) -> impl Iterator<Item = Instruction> + '_ {
    let mut decoder = decoder(code, address);
    std::iter::from_fn(move || decoder.can_decode().then(|| convert(decoder.decode())))
}

fn convert(native: iced_x86::Instruction) -> Instruction {
    if native.is_invalid() {
        return Instruction::invalid(native.ip(), native.len() as u8);
    }
    let flow = match native.flow_control() {
        FlowControl::Next => Flow::Next,
        FlowControl::Call => Flow::Call,
        FlowControl::IndirectCall => Flow::IndirectCall,
        FlowControl::UnconditionalBranch => Flow::Branch,
        FlowControl::ConditionalBranch => Flow::ConditionalBranch,
        FlowControl::IndirectBranch => Flow::IndirectBranch,
        FlowControl::Return => Flow::Return,
        FlowControl::Exception => Flow::Trap,
        FlowControl::Interrupt | FlowControl::XbeginXabortXend => Flow::Other,
    };
    let target = matches!(flow, Flow::Call | Flow::Branch | Flow::ConditionalBranch)
        .then(|| native.near_branch_target());
    Instruction {
        address: native.ip(),
        length: native.len() as u8,
        flow,
        target,
        padding: native.mnemonic() == Mnemonic::Nop,
        memory: (native.memory_base() == Register::RIP).then(|| native.ip_rel_memory_address()),
        referenced: referenced_address(&native),
        register: (native.op0_kind() == OpKind::Register)
            .then(|| reg(native.op0_register().full_register())),
        native: Native::X86(native),
    }
}

fn reg(register: Register) -> Reg {
    Reg(register as u16)
}

/// An address an instruction materializes (`lea r, [rip+X]`, or an
/// immediate in a non-PIE program).
fn referenced_address(instruction: &iced_x86::Instruction) -> Option<u64> {
    if instruction.memory_base() == Register::RIP && instruction.op_count() > 0 {
        return Some(instruction.ip_rel_memory_address());
    }
    (0..instruction.op_count()).find_map(|operand| match instruction.op_kind(operand) {
        OpKind::Immediate32to64 | OpKind::Immediate64 => Some(instruction.immediate64()),
        OpKind::Immediate32 => Some(u64::from(instruction.immediate32())),
        _ => None,
    })
}

/// The 64-bit registers an instruction writes (a call clobbers the
/// caller-saved ones too).
pub(super) fn written_registers(instruction: &iced_x86::Instruction) -> Vec<Reg> {
    let mut written: Vec<Reg> = InstructionInfoFactory::new()
        .info(instruction)
        .used_registers()
        .iter()
        .filter(|used| !matches!(used.access(), OpAccess::Read | OpAccess::CondRead))
        .map(|used| reg(used.register().full_register()))
        .collect();
    if matches!(
        instruction.flow_control(),
        FlowControl::Call | FlowControl::IndirectCall
    ) {
        written.extend(
            [
                Register::RAX,
                Register::RCX,
                Register::RDX,
                Register::RSI,
                Register::RDI,
                Register::R8,
                Register::R9,
                Register::R10,
                Register::R11,
            ]
            .map(reg),
        );
    }
    written
}

/// True when `instruction` writes neither rsp, rax nor rdx, nor memory
/// addressed through the stack or frame pointer.
pub(super) fn leaves_return_state(instruction: &iced_x86::Instruction) -> bool {
    let stack_based = matches!(
        instruction.memory_base(),
        Register::RSP | Register::RBP | Register::None
    );
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(instruction);
    let writes_return_state = info.used_registers().iter().any(|used| {
        matches!(
            used.register().full_register(),
            Register::RSP | Register::RAX | Register::RDX
        ) && !matches!(used.access(), OpAccess::Read | OpAccess::CondRead)
    });
    let writes_stack = info
        .used_memory()
        .iter()
        .any(|m| m.access() != OpAccess::Read && stack_based);
    !writes_return_state && !writes_stack
}

/// The first instruction's text, and how the kernel executes it.
pub(super) fn probe_site(bytes: &[u8], address: u64) -> Option<(String, Execution)> {
    let instruction = decoder(bytes, address).decode();
    if instruction.is_invalid() {
        return None;
    }
    let mut text = String::new();
    IntelFormatter::new().format(&instruction, &mut text);
    if has_refused_prefix(&instruction) {
        return Some((text, Execution::Refused));
    }
    let emulated = match instruction.mnemonic() {
        Mnemonic::Nop | Mnemonic::Call | Mnemonic::Jmp => {
            !instruction.is_call_near_indirect() && !instruction.is_jmp_near_indirect()
        }
        // Every kernel the observer supports emulates it (Linux 4.17),
        // unless the running kernel was seen not to.
        Mnemonic::Push => {
            instruction.op0_kind() == OpKind::Register && super::prologue_emulated_or(true)
        }
        _ => instruction.is_jcc_short_or_near(),
    };
    let execution = if emulated {
        Execution::Emulated
    } else {
        Execution::SingleStep
    };
    Some((text, execution))
}

/// The prefixes the kernel refuses to single-step or emulate.
fn has_refused_prefix(instruction: &iced_x86::Instruction) -> bool {
    instruction.has_lock_prefix()
        || matches!(
            instruction.segment_prefix(),
            Register::ES | Register::CS | Register::SS | Register::DS
        )
}

/// Up to `count` instructions, as (address, text).
pub(super) fn listing(bytes: &[u8], address: u64, count: usize) -> Vec<(u64, String)> {
    let mut decoder = decoder(bytes, address);
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
    use super::super::Isa;
    use super::*;

    #[test]
    fn classifies_common_prologues() {
        let site = |bytes: &[u8]| Isa::X86_64.probe_site(bytes, 0x1000);
        let push = site(&[0x55, 0x48, 0x89, 0xe5]).unwrap();
        assert_eq!(push, ("push rbp".into(), Execution::Emulated));
        assert_eq!(site(&[0x41, 0x57]).unwrap().1, Execution::Emulated);
        let sub = site(&[0x48, 0x83, 0xec, 0x18]).unwrap();
        assert_eq!(sub, ("sub rsp,18h".into(), Execution::SingleStep));
        let nop5 = site(&[0x0f, 0x1f, 0x44, 0x00, 0x00]).unwrap();
        assert_eq!(nop5.1, Execution::Emulated);
        assert_eq!(site(&[0xe8, 0, 0, 0, 0]).unwrap().1, Execution::Emulated);
        assert_eq!(site(&[0xff, 0xd0]).unwrap().1, Execution::SingleStep);
        assert_eq!(site(&[]), None);
        // lock dec qword ptr [rdi]
        let locked = site(&[0xf0, 0x48, 0xff, 0x0f]).unwrap();
        assert_eq!(locked.1, Execution::Refused);
    }

    #[test]
    fn calls_jumps_and_rip_relative_operands() {
        // call 0x2000 at 0x1000
        let call = Isa::X86_64.decode(&[0xe8, 0xfb, 0x0f, 0x00, 0x00], 0x1000);
        assert_eq!(
            (call.flow, call.target, call.length),
            (Flow::Call, Some(0x2000), 5)
        );
        // call [rip+0xff0] at 0x1000: through memory at 0x1000 + 6 + 0xff0
        let through = Isa::X86_64.decode(&[0xff, 0x15, 0xf0, 0x0f, 0x00, 0x00], 0x1000);
        assert_eq!(through.flow, Flow::IndirectCall);
        assert_eq!(through.memory, Some(0x1ff6));
        // ud2, ret
        assert_eq!(Isa::X86_64.decode(&[0x0f, 0x0b], 0).flow, Flow::Trap);
        assert_eq!(Isa::X86_64.decode(&[0xc3], 0).flow, Flow::Return);
        // call rbx writes the caller-saved registers, not rbx
        let call_rbx = Isa::X86_64.decode(&[0xff, 0xd3], 0);
        assert_eq!(call_rbx.register, Some(reg(Register::RBX)));
        let written = call_rbx.written_registers();
        assert!(written.contains(&reg(Register::RAX)) && !written.contains(&reg(Register::RBX)));
    }
}
