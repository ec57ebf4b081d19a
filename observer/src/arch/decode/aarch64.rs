//! arm64 (A64), decoded by yaxpeax-arm: every instruction is four bytes,
//! so decoding never loses its place; what the planner needs beyond the
//! crate's opcode and operands (control flow, the addresses `adrp` pairs
//! build, what the kernel does at a probe) is worked out here.
//!
//! What the kernel does with a probed instruction
//! (arch/arm64/kernel/probes/decode-insn.c, `arm_probe_decode_insn`, which
//! `arch_uprobe_analyze_insn` calls): it *simulates* (no single step)
//! `b`, `bl`, `b.cond`, `cbz`/`cbnz`, `tbz`/`tbnz`, `adr`/`adrp`, `br`,
//! `blr` and `ret`, and from Linux 6.13 `nop`. It single-steps out of line
//! everything else that is "steppable", which includes `stp x29, x30,
//! [sp, #-N]!` (a patch to simulate it was discussed in 2024, not merged)
//! and the hints `paciasp`/`pacibsp`/`bti`/`xpaclri`/`nop`. It *refuses*
//! (the probe fails with EINVAL) the rest: the authenticated branches
//! (`retaa`, `blraa`, `braa`...), exception generation (`svc`, `brk`,
//! `hlt`...), `eret`, `msr`, `mrs` of DAIF, the other hints (`autiasp`
//! among them), literal loads (`ldr x0, label`: only kprobes simulate
//! those) and exclusive loads and stores (`ldxr`, `stxr`...).

use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Opcode, Operand, SizeCode};

use super::{Flow, Instruction, Native, Reg};
use crate::plan::site::Execution;

/// Every A64 instruction is this long.
const LENGTH: u8 = 4;
/// The stack pointer's (or zero register's) number in an encoding.
const SP: u16 = 31;
/// The frame pointer.
const FP: u16 = 29;
/// The link register.
const LR: u16 = 30;
/// `nop`.
const NOP: u32 = 0xd503_201f;

/// One decoded instruction: its encoding and the crate's reading of it.
#[derive(Debug, Clone)]
pub(super) struct Decoded {
    word: u32,
    instruction: yaxpeax_arm::armv8::a64::Instruction,
}

fn word_at(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

fn decode_word(word: u32) -> Option<Decoded> {
    let bytes = word.to_le_bytes();
    let instruction = InstDecoder::default()
        .decode(&mut U8Reader::new(&bytes))
        .ok()?;
    Some(Decoded { word, instruction })
}

/// The instruction at the start of `bytes`.
pub(super) fn decode(bytes: &[u8], address: u64) -> Instruction {
    let decoded = word_at(bytes).and_then(decode_word);
    convert(decoded, address, &Known::default())
}

/// Register values known from `adrp`/`adr`/`add` in straight-line code,
/// so that `adrp x16, page; ldr x17, [x16, #off]` reads a known address;
/// and which registers were loaded from a known address, so that the
/// `blr x17` after it calls through that slot (a GOT entry).
#[derive(Default)]
struct Known {
    values: [Option<u64>; 32],
    loaded_from: [Option<u64>; 32],
}

impl Known {
    fn get(&self, register: u16) -> Option<u64> {
        self.values.get(usize::from(register)).copied().flatten()
    }

    fn set(&mut self, register: u16, value: Option<u64>) {
        if let Some(slot) = self.values.get_mut(usize::from(register)) {
            *slot = value;
        }
    }

    fn slot_of(&self, register: u16) -> Option<u64> {
        self.loaded_from
            .get(usize::from(register))
            .copied()
            .flatten()
    }

    fn set_slot(&mut self, register: u16, slot: Option<u64>) {
        if let Some(entry) = self.loaded_from.get_mut(usize::from(register)) {
            *entry = slot;
        }
    }

    /// What `instruction` leaves known: a new value, or nothing where it
    /// wrote; nothing at all after a jump (the next instruction is reached
    /// from elsewhere).
    fn update(&mut self, instruction: &Instruction, loaded: Option<(u16, u64)>) {
        if matches!(
            instruction.flow,
            Flow::Branch | Flow::IndirectBranch | Flow::Return | Flow::Trap | Flow::Other
        ) {
            *self = Known::default();
            return;
        }
        for Reg(written) in instruction.written_registers() {
            self.set(written, None);
            self.set_slot(written, None);
        }
        if let Some((register, value)) = loaded {
            self.set(register, Some(value));
        }
        if let (Some(slot), Some(Reg(register)), Flow::Next) =
            (instruction.memory, instruction.register, instruction.flow)
        {
            self.set_slot(register, Some(slot));
        }
    }
}

/// Every instruction of `code`, in order, following `adrp` pairs.
pub(super) fn sweep(code: &[u8], address: u64) -> impl Iterator<Item = Instruction> + '_ {
    let mut known = Known::default();
    code.chunks_exact(usize::from(LENGTH))
        .enumerate()
        .map(move |(index, bytes)| {
            let at = address + index as u64 * u64::from(LENGTH);
            let decoded = word_at(bytes).and_then(decode_word);
            let loaded = decoded.as_ref().and_then(|d| address_load(d, at, &known));
            let instruction = convert(decoded, at, &known);
            known.update(&instruction, loaded);
            instruction
        })
}

/// A register an instruction fills with an address: `adrp`'s page,
/// `adr`'s address, or `add` of an offset to a known one.
fn address_load(decoded: &Decoded, at: u64, known: &Known) -> Option<(u16, u64)> {
    let operands = &decoded.instruction.operands;
    match (decoded.instruction.opcode, operands[0]) {
        (Opcode::ADRP | Opcode::ADR, Operand::Register(SizeCode::X, register)) => {
            Some((register, pc_relative(decoded, at)?))
        }
        (Opcode::ADD, Operand::RegisterOrSP(SizeCode::X, register)) => {
            Some((register, added_address(decoded, known)?))
        }
        _ => None,
    }
}

/// `add xd, xn, #imm` with xn known: the address it makes.
fn added_address(decoded: &Decoded, known: &Known) -> Option<u64> {
    let operands = &decoded.instruction.operands;
    let Operand::RegisterOrSP(SizeCode::X, base) = operands[1] else {
        return None;
    };
    let offset = match operands[2] {
        Operand::Immediate(immediate) => u64::from(immediate),
        Operand::ImmShift(immediate, shift) => u64::from(immediate) << shift,
        _ => return None,
    };
    Some(known.get(base)?.wrapping_add(offset))
}

/// The address a pc-relative operand names (`adrp`: its 4 KiB page).
fn pc_relative(decoded: &Decoded, at: u64) -> Option<u64> {
    decoded
        .instruction
        .operands
        .iter()
        .find_map(|operand| match operand {
            Operand::PCOffset(offset) if decoded.instruction.opcode == Opcode::ADRP => {
                Some((at & !0xfff).wrapping_add_signed(*offset))
            }
            Operand::PCOffset(offset) => Some(at.wrapping_add_signed(*offset)),
            _ => None,
        })
}

fn convert(decoded: Option<Decoded>, address: u64, known: &Known) -> Instruction {
    let Some(decoded) = decoded else {
        return Instruction {
            address,
            length: LENGTH,
            flow: Flow::Invalid,
            target: None,
            padding: false,
            memory: None,
            referenced: None,
            register: None,
            native: Native::Invalid,
        };
    };
    let flow = flow(decoded.instruction.opcode);
    let target = matches!(flow, Flow::Call | Flow::Branch | Flow::ConditionalBranch)
        .then(|| pc_relative(&decoded, address))
        .flatten();
    Instruction {
        address,
        length: LENGTH,
        flow,
        target,
        padding: decoded.word == NOP,
        memory: memory_address(&decoded, address, known),
        referenced: referenced_address(&decoded, address, known),
        register: first_register(&decoded).map(Reg),
        native: Native::Aarch64(decoded),
    }
}

fn flow(opcode: Opcode) -> Flow {
    match opcode {
        Opcode::BL => Flow::Call,
        Opcode::BLR | Opcode::BLRAA | Opcode::BLRAAZ | Opcode::BLRAB | Opcode::BLRABZ => {
            Flow::IndirectCall
        }
        Opcode::B => Flow::Branch,
        Opcode::Bcc(_) | Opcode::CBZ | Opcode::CBNZ | Opcode::TBZ | Opcode::TBNZ => {
            Flow::ConditionalBranch
        }
        Opcode::BR | Opcode::BRAA | Opcode::BRAAZ | Opcode::BRAB | Opcode::BRABZ => {
            Flow::IndirectBranch
        }
        Opcode::RET | Opcode::RETAA | Opcode::RETAB => Flow::Return,
        Opcode::UDF | Opcode::BRK | Opcode::HLT => Flow::Trap,
        Opcode::ERET | Opcode::ERETAA | Opcode::ERETAB => Flow::Other,
        _ => Flow::Next,
    }
}

/// A literal load's address, or a load's from a known base (`adrp`); for
/// a call or jump through a register, the slot the register was loaded
/// from.
fn memory_address(decoded: &Decoded, at: u64, known: &Known) -> Option<u64> {
    if matches!(
        flow(decoded.instruction.opcode),
        Flow::IndirectCall | Flow::IndirectBranch
    ) {
        return known.slot_of(first_register(decoded)?);
    }
    if !is_load(decoded.instruction.opcode) {
        return None;
    }
    match decoded.instruction.operands[1] {
        Operand::PCOffset(offset) => Some(at.wrapping_add_signed(offset)),
        Operand::RegPreIndex(base, offset, false) => {
            Some(known.get(base)?.wrapping_add_signed(i64::from(offset)))
        }
        _ => None,
    }
}

/// An address put in a register: `adr`, or `add` to an `adrp` page.
fn referenced_address(decoded: &Decoded, at: u64, known: &Known) -> Option<u64> {
    match decoded.instruction.opcode {
        Opcode::ADR => pc_relative(decoded, at),
        Opcode::ADD => added_address(decoded, known),
        _ => None,
    }
}

fn is_load(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::LDR | Opcode::LDUR | Opcode::LDRSW | Opcode::LDAR | Opcode::LDAPR
    )
}

fn is_store(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::STR
            | Opcode::STRB
            | Opcode::STRH
            | Opcode::STUR
            | Opcode::STURB
            | Opcode::STURH
            | Opcode::STP
            | Opcode::STNP
            | Opcode::STLR
            | Opcode::STLRB
            | Opcode::STLRH
    )
}

/// The general register of the first operand.
fn first_register(decoded: &Decoded) -> Option<u16> {
    match decoded.instruction.operands[0] {
        Operand::Register(_, register) | Operand::RegisterOrSP(_, register) => Some(register),
        _ => None,
    }
}

/// The registers an instruction writes: its destination (the first
/// operand, for every instruction but stores, branches and compares that
/// read it), a load pair's second, a written-back base; a call also
/// clobbers x0–x18 and the link register (AAPCS64).
pub(super) fn written_registers(decoded: &Decoded) -> Vec<Reg> {
    let opcode = decoded.instruction.opcode;
    let operands = &decoded.instruction.operands;
    let mut written = Vec::new();
    // Stores, and branches through or testing a register, read it.
    let reads_first = is_store(opcode) || flow(opcode) != Flow::Next;
    if !reads_first {
        written.extend(first_register(decoded));
    }
    if matches!(
        opcode,
        Opcode::LDP | Opcode::LDPSW | Opcode::LDNP | Opcode::LDXP | Opcode::LDAXP
    ) {
        if let Operand::Register(_, second) = operands[1] {
            written.push(second);
        }
    }
    for operand in operands {
        match *operand {
            Operand::RegPreIndex(base, _, true) | Operand::RegPostIndex(base, _) => {
                written.push(base);
            }
            _ => {}
        }
    }
    if matches!(flow(opcode), Flow::Call | Flow::IndirectCall) {
        written.extend(0..=18);
        written.push(LR);
    }
    written.into_iter().map(Reg).collect()
}

/// True when it writes neither sp, x0 nor x1 (a returned value), nor
/// memory addressed through sp or x29.
pub(super) fn leaves_return_state(decoded: &Decoded) -> bool {
    let writes_return_state = written_registers(decoded)
        .iter()
        .any(|Reg(register)| matches!(*register, 0 | 1 | SP));
    let stack_based = decoded.instruction.operands.iter().any(|operand| {
        matches!(
            *operand,
            Operand::RegPreIndex(SP | FP, _, _) | Operand::RegPostIndex(SP | FP, _)
        )
    });
    let writes_stack = is_store(decoded.instruction.opcode) && stack_based;
    !writes_return_state && !writes_stack
}

/// How the kernel executes an instruction under a uprobe (see the
/// module's documentation).
fn execution(decoded: &Decoded) -> Execution {
    execution_with(decoded, super::prologue_emulated_or(false))
}

/// The same, given whether the kernel emulates a frame-record push (no
/// kernel seen so far does).
fn execution_with(decoded: &Decoded, push_emulated: bool) -> Execution {
    let word = decoded.word;
    if is_simulated(word) {
        return Execution::Emulated;
    }
    if is_frame_record_push(decoded) {
        return if push_emulated {
            Execution::Emulated
        } else {
            Execution::SingleStep
        };
    }
    if is_steppable(word) {
        Execution::SingleStep
    } else {
        Execution::Refused
    }
}

/// `b`, `bl`, `b.cond`, `cbz`/`cbnz`, `tbz`/`tbnz`, `adr`/`adrp`, `br`,
/// `blr`, `ret` (plain forms only: the authenticated ones are refused).
fn is_simulated(word: u32) -> bool {
    let masked = |mask: u32, value: u32| word & mask == value;
    masked(0xff00_0010, 0x5400_0000) // b.cond
        || masked(0x7e00_0000, 0x3400_0000) // cbz, cbnz
        || masked(0x7e00_0000, 0x3600_0000) // tbz, tbnz
        || masked(0x1f00_0000, 0x1000_0000) // adr, adrp
        || masked(0x7c00_0000, 0x1400_0000) // b, bl
        || masked(0xffff_fc1f, 0xd61f_0000) // br
        || masked(0xffff_fc1f, 0xd63f_0000) // blr
        || masked(0xffff_fc1f, 0xd65f_0000) // ret
}

/// `stp x29, x30, [sp, #-N]!`: a frame-pointer prologue's first store.
fn is_frame_record_push(decoded: &Decoded) -> bool {
    decoded.instruction.opcode == Opcode::STP
        && matches!(
            decoded.instruction.operands[..3],
            [
                Operand::Register(SizeCode::X, FP),
                Operand::Register(SizeCode::X, LR),
                Operand::RegPreIndex(SP, offset, true),
            ] if offset < 0
        )
}

/// The kernel's `aarch64_insn_is_steppable`: what it may run out of line.
fn is_steppable(word: u32) -> bool {
    let masked = |mask: u32, value: u32| word & mask == value;
    let branch_or_system = (word >> 26) & 0b111 == 0b101;
    if branch_or_system {
        // The immediate branches are simulated, so not asked about here.
        let refused = masked(0xfe00_0000, 0xd600_0000) // br, blr, ret, eret and their authenticated forms
            || masked(0xff00_0000, 0xd400_0000) // svc, hvc, smc, brk, hlt, dcps
            || masked(0xfff8_f01f, 0xd500_401f) // msr (immediate)
            || masked(0xfff0_0000, 0xd510_0000) // msr (register)
            || masked(0xffff_ffe0, 0xd53b_4220); // mrs xN, daif
        if refused {
            return false;
        }
        if masked(0xffff_f01f, 0xd503_201f) {
            return is_steppable_hint(word);
        }
        return true;
    }
    let literal_load = masked(0x3b00_0000, 0x1800_0000);
    let exclusive = masked(0x3f80_0000, 0x0800_0000);
    !literal_load && !exclusive
}

/// The hints the kernel single-steps: `nop`, `xpaclri`, the PAC-signing
/// ones (`paciasp`...) and `bti`; not the authenticating ones.
fn is_steppable_hint(word: u32) -> bool {
    matches!(
        word & 0xfe0,
        0x000
            | 0x0e0
            | 0x100
            | 0x140
            | 0x300
            | 0x320
            | 0x340
            | 0x360
            | 0x400
            | 0x440
            | 0x480
            | 0x4c0
    )
}

/// The first instruction's text and how the kernel executes it.
pub(super) fn probe_site(bytes: &[u8], address: u64) -> Option<(String, Execution)> {
    let decoded = decode_word(word_at(bytes)?)?;
    Some((text(&decoded, address), execution(&decoded)))
}

/// Up to `count` instructions, as (address, text).
pub(super) fn listing(bytes: &[u8], address: u64, count: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for (index, chunk) in bytes
        .chunks_exact(usize::from(LENGTH))
        .take(count)
        .enumerate()
    {
        let Some(decoded) = word_at(chunk).and_then(decode_word) else {
            break;
        };
        let at = address + index as u64 * u64::from(LENGTH);
        out.push((at, text(&decoded, at)));
    }
    out
}

/// The instruction as the crate prints it, with branch targets as
/// addresses (`bl 0x4005d0`, not `bl $+0x40`) and `bti` by its name.
fn text(decoded: &Decoded, at: u64) -> String {
    if decoded.word & 0xffff_ff3f == 0xd503_241f {
        let target = ["", " c", " j", " jc"][((decoded.word >> 6) & 0b11) as usize];
        return format!("bti{target}");
    }
    let text = decoded.instruction.to_string();
    let Some(address) = pc_relative(decoded, at) else {
        return text;
    };
    match text.find('$') {
        Some(start) => {
            let end = text[start..]
                .find([',', ' '])
                .map_or(text.len(), |e| start + e);
            format!("{}{address:#x}{}", &text[..start], &text[end..])
        }
        None => text,
    }
}
