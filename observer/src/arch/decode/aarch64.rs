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
    match word_at(bytes) {
        Some(word) => convert(word, address, &Known::default()),
        None => invalid(address),
    }
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
            let Some(word) = word_at(bytes) else {
                return invalid(at);
            };
            let loaded = decode_word(word).and_then(|d| address_load(&d, at, &known));
            let instruction = convert(word, at, &known);
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

fn invalid(address: u64) -> Instruction {
    Instruction::invalid(address, LENGTH)
}

/// The registers an instruction may write, when not known: all.
pub(super) fn every_register() -> Vec<Reg> {
    (0..=SP).map(Reg).collect()
}

/// True for the encodings of branches, exceptions and system
/// instructions (bits 28:26 = 101), the only ones that transfer control.
fn in_branch_class(word: u32) -> bool {
    (word >> 26) & 0b111 == 0b101
}

fn convert(word: u32, address: u64, known: &Known) -> Instruction {
    let Some(decoded) = decode_word(word) else {
        // yaxpeax-arm does not know some newer extensions (SVE's `cntd`,
        // SME's `addsvl`, which static musl binaries contain); outside
        // the branch class they go on to the next instruction all the same.
        if in_branch_class(word) {
            return invalid(address);
        }
        return Instruction {
            flow: Flow::Next,
            native: Native::Aarch64Opaque,
            ..invalid(address)
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
    if in_branch_class(word) {
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

#[cfg(test)]
mod tests {
    use super::super::{Flow, Isa};
    use super::*;

    /// Encodings with what `aarch64-linux-gnu-objdump -d` (binutils 2.40)
    /// says they are, assembled from `-march=armv8.5-a+pauth` source at
    /// address 0: (word, objdump's text, flow, direct target).
    const OBJDUMP_SAYS: [(u32, &str, Flow, Option<u64>); 25] = [
        (0xd503233f, "paciasp", Flow::Next, None),
        (0xd503245f, "bti c", Flow::Next, None),
        (0xa9be7bfd, "stp x29, x30, [sp, #-32]!", Flow::Next, None),
        (0x910003fd, "mov x29, sp", Flow::Next, None),
        (0x90000010, "adrp x16, 0", Flow::Next, None),
        (0xf9400a11, "ldr x17, [x16, #16]", Flow::Next, None),
        (0x91004210, "add x16, x16, #0x10", Flow::Next, None),
        (0x10ffff23, "adr x3, 0", Flow::Next, None),
        (0x58000044, "ldr x4, 28", Flow::Next, None),
        (0xd63f0220, "blr x17", Flow::IndirectCall, None),
        (0xd61f0220, "br x17", Flow::IndirectBranch, None),
        (0x54fffea1, "b.ne 0", Flow::ConditionalBranch, Some(0)),
        (
            0x362ffe83,
            "tbz w3, #5, 0",
            Flow::ConditionalBranch,
            Some(0),
        ),
        (0xb5fffe62, "cbnz x2, 0", Flow::ConditionalBranch, Some(0)),
        (0x00000000, "udf #0", Flow::Trap, None),
        (0xd4207d00, "brk #0x3e8", Flow::Trap, None),
        (0xd50323bf, "autiasp", Flow::Next, None),
        (0xd65f0bff, "retaa", Flow::Return, None),
        (0xd65f0fff, "retab", Flow::Return, None),
        (0xd65f0060, "ret x3", Flow::Return, None),
        (0xd503201f, "nop", Flow::Next, None),
        (0x97ffffeb, "bl 0", Flow::Call, Some(0)),
        (0x17ffffea, "b 0", Flow::Branch, Some(0)),
        (0xa8c27bfd, "ldp x29, x30, [sp], #32", Flow::Next, None),
        (0xd73f0a11, "blraa x16, x17", Flow::IndirectCall, None),
    ];

    fn code() -> Vec<u8> {
        OBJDUMP_SAYS
            .iter()
            .flat_map(|(word, ..)| word.to_le_bytes())
            .collect()
    }

    #[test]
    fn flows_and_targets_agree_with_objdump() {
        let code = code();
        let decoded: Vec<_> = Isa::Aarch64.sweep(&code, 0).collect();
        assert_eq!(decoded.len(), OBJDUMP_SAYS.len());
        for (instruction, (word, text, flow, target)) in decoded.iter().zip(OBJDUMP_SAYS) {
            assert_eq!(instruction.length, 4);
            assert_eq!(
                (instruction.flow, instruction.target),
                (flow, target),
                "{word:#010x} {text}"
            );
        }
        assert!(decoded[20].padding, "nop");
    }

    #[test]
    fn an_adrp_pair_names_the_slot_a_call_goes_through() {
        let code = code();
        let decoded: Vec<_> = Isa::Aarch64.sweep(&code, 0).collect();
        // adrp x16, 0 ; ldr x17, [x16, #16] ; add x16, x16, #16
        assert_eq!(decoded[5].memory, Some(16));
        assert_eq!(decoded[6].referenced, Some(16));
        // adr x3, 0 ; ldr x4, 0x28 (a literal at 0x20 + 8)
        assert_eq!(decoded[7].referenced, Some(0));
        assert_eq!(decoded[8].memory, Some(0x28));
        // blr x17 calls through the slot x17 was loaded from.
        assert_eq!(decoded[9].register, Some(Reg(17)));
        assert_eq!(decoded[9].memory, Some(16));
        // A lone `blr` knows nothing.
        assert_eq!(
            Isa::Aarch64.decode(&0xd63f0220u32.to_le_bytes(), 0).memory,
            None
        );
        // A call clobbers x0-x18 and x30, not x19.
        let written = decoded[21].written_registers();
        assert!(written.contains(&Reg(0)) && written.contains(&Reg(LR)));
        assert!(!written.contains(&Reg(19)));
        // ldp writes both registers and the base it writes back.
        let ldp = decoded[23].written_registers();
        assert!(ldp.contains(&Reg(FP)) && ldp.contains(&Reg(LR)) && ldp.contains(&Reg(SP)));
    }

    #[test]
    fn probe_sites_follow_the_kernels_decoder() {
        let class = |word: u32| execution_with(&decode_word(word).expect("decodes"), false);
        // Simulated: branches, calls, adr/adrp, plain ret/br/blr.
        for word in [
            0x97ffffeb, 0x17ffffea, 0x54fffea1, 0x362ffe83, 0xb5fffe62, 0x90000010, 0x10ffff23,
            0xd63f0220, 0xd61f0220, 0xd65f0060,
        ] {
            assert_eq!(class(word), Execution::Emulated, "{word:#x}");
        }
        // Single-stepped: the frame record push, PAC signing, bti, nop
        // (simulated only from 6.13), ordinary instructions.
        for word in [
            0xa9be7bfd, 0xd503233f, 0xd503245f, 0xd503201f, 0xf9400a11, 0x91004210,
        ] {
            assert_eq!(class(word), Execution::SingleStep, "{word:#x}");
        }
        // Refused: authenticated returns and calls, autiasp, brk, svc, a
        // literal load, an exclusive load.
        for word in [
            0xd65f0bff, 0xd73f0a11, 0xd50323bf, 0xd4207d00, 0xd4000001, 0x58000044, 0xc85f7c20,
        ] {
            assert_eq!(class(word), Execution::Refused, "{word:#x}");
        }
        // A kernel measured to emulate the push moves it.
        let stp = decode_word(0xa9be7bfd).expect("decodes");
        assert_eq!(execution_with(&stp, true), Execution::Emulated);
        assert_eq!(
            Isa::Aarch64.probe_site(&0xd503245fu32.to_le_bytes(), 0),
            Some(("bti c".into(), Execution::SingleStep))
        );
        assert_eq!(Isa::Aarch64.probe_site(&[0x1f, 0x20], 0), None);
    }

    #[test]
    fn text_names_branch_targets_as_addresses() {
        let listing = Isa::Aarch64.listing(&code(), 0x1000, 25);
        assert_eq!(listing[11], (0x102c, "b.ne 0x1000".to_string()));
        assert_eq!(listing[12], (0x1030, "tbz w3, #0x5, 0x1000".to_string()));
        assert_eq!(listing[21], (0x1054, "bl 0x1000".to_string()));
    }

    /// The flow and direct target objdump's mnemonic and operands give.
    fn objdump_reading(mnemonic: &str, operands: &str) -> (Flow, Option<u64>) {
        let flow = match mnemonic {
            "bl" => Flow::Call,
            "blr" | "blraa" | "blraaz" | "blrab" | "blrabz" => Flow::IndirectCall,
            "b" => Flow::Branch,
            "cbz" | "cbnz" | "tbz" | "tbnz" => Flow::ConditionalBranch,
            m if m.starts_with("b.") => Flow::ConditionalBranch,
            "br" | "braa" | "braaz" | "brab" | "brabz" => Flow::IndirectBranch,
            "ret" | "retaa" | "retab" => Flow::Return,
            "udf" | "brk" | "hlt" => Flow::Trap,
            "eret" | "eretaa" | "eretab" => Flow::Other,
            _ => Flow::Next,
        };
        // `bl 4005d0 <pool_get>`, `cbz x0, 4005e8 <main+0x18>`: the last
        // operand before the symbol.
        let target = matches!(flow, Flow::Call | Flow::Branch | Flow::ConditionalBranch)
            .then(|| {
                let operand = operands.split(" <").next()?.rsplit([',', ' ']).next()?;
                u64::from_str_radix(operand.trim(), 16).ok()
            })
            .flatten();
        (flow, target)
    }

    /// Every instruction of a whole program against `aarch64-linux-gnu-
    /// objdump -d` of it: `OBSERVER_ARM64_OBJDUMP=listing cargo test -p
    /// pool-observer --lib -- --ignored objdump_agrees` (docs/arm64.md).
    #[test]
    #[ignore = "needs an objdump listing of an arm64 program"]
    fn objdump_agrees_on_a_whole_program() {
        let path = std::env::var("OBSERVER_ARM64_OBJDUMP").expect("OBSERVER_ARM64_OBJDUMP");
        let listing = std::fs::read_to_string(path).expect("readable listing");
        let (mut compared, mut addresses, mut disagreements) = (0usize, 0usize, Vec::new());
        for line in listing.lines() {
            // "  4005d0:\td503233f \tpaciasp" or "...\tbl\t4005d0 <f>"
            let mut fields = line.split('\t');
            let (Some(address), Some(word), Some(mnemonic)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Some(address) = address.trim().strip_suffix(':') else {
                continue;
            };
            let (Ok(address), Ok(word)) = (
                u64::from_str_radix(address, 16),
                u32::from_str_radix(word.trim(), 16),
            ) else {
                continue;
            };
            let mnemonic = mnemonic.trim();
            if mnemonic == ".inst" || mnemonic.starts_with('.') {
                continue;
            }
            let operands = fields.next().unwrap_or("");
            let expected = objdump_reading(mnemonic, operands);
            let ours = Isa::Aarch64.decode(&word.to_le_bytes(), address);
            compared += 1;
            if (ours.flow, ours.target) != expected {
                disagreements.push(format!("{line} -> {:?} {:?}", ours.flow, ours.target));
            }
            // `adr x3, 4005d0 <f>` and literal loads `ldr x4, 4005f8 <f+0x28>`:
            // the address objdump prints.
            let printed = || {
                let operand = operands.split(" <").next()?.rsplit([',', ' ']).next()?;
                u64::from_str_radix(operand.trim(), 16).ok()
            };
            let computed = match mnemonic {
                "adr" => Some(ours.referenced),
                "ldr" | "ldrsw" if !operands.contains('[') => Some(ours.memory),
                _ => None,
            };
            if let Some(computed) = computed {
                addresses += 1;
                if computed != printed() {
                    disagreements.push(format!("{line} -> {computed:?}"));
                }
            }
        }
        eprintln!(
            "{compared} instructions ({addresses} adr or literal loads) compared, {} disagree",
            disagreements.len()
        );
        assert!(compared > 0);
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }
}
