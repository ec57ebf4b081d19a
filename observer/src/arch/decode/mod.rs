//! What the planner reads from machine code, behind one interface for
//! both processors: instruction lengths, calls and their callees,
//! branches and their targets, returns, traps, the addresses an
//! instruction computes from the program counter, the registers it writes,
//! and how the kernel executes it when a uprobe sits on it.
//!
//! Both decoders are always compiled (they are pure code, so the arm64
//! one's tests run on an x86-64 host); the one the observer uses is its
//! own processor's, [`crate::arch::ISA`], since it only observes programs
//! of that processor ([`crate::arch::check_machine`]).

mod aarch64;
mod x86_64;

use std::sync::atomic::{AtomicU8, Ordering};

use crate::plan::site::Execution;

/// An instruction set the observer can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64, decoded by iced-x86.
    X86_64,
    /// arm64 (A64), decoded by yaxpeax-arm.
    Aarch64,
}

/// How control leaves an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// To the next instruction.
    Next,
    /// A direct call ([`Instruction::target`]); returns to the next one.
    Call,
    /// A call through a register or memory.
    IndirectCall,
    /// A direct unconditional jump.
    Branch,
    /// A direct conditional jump: to the target or the next instruction.
    ConditionalBranch,
    /// A jump through a register or memory (jump tables, tail calls).
    IndirectBranch,
    /// A return.
    Return,
    /// An instruction that traps on purpose (`ud2`, `udf`, `brk`): code
    /// after a call that never returns.
    Trap,
    /// Anything else that does not simply go on (`int3`, `eret`, ...).
    Other,
    /// Not an instruction: the bytes do not decode.
    Invalid,
}

/// A register, by the decoder's own numbering: only compared, never
/// named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reg(pub u16);

/// One decoded instruction, with what the planner asks of it.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// Where it is.
    pub address: u64,
    /// Its length in bytes.
    pub length: u8,
    /// How control leaves it.
    pub flow: Flow,
    /// Where a direct call or jump goes.
    pub target: Option<u64>,
    /// An alignment `nop`.
    pub padding: bool,
    /// The address of the memory it reads or writes, when that address is
    /// computed from the program counter (x86-64's `[rip+X]`, arm64's
    /// literal loads and `ldr` from an `adrp` page): how a GOT slot is
    /// read.
    pub memory: Option<u64>,
    /// An address it materializes in a register (`lea r,[rip+X]`, an
    /// immediate, arm64's `adr` or `adrp` + `add`).
    pub referenced: Option<u64>,
    /// The register of its first operand: the one a call or jump goes
    /// through, or the one a load or address computation fills.
    pub register: Option<Reg>,
    native: Native,
}

/// The decoder's own view, for the questions asked rarely.
#[derive(Debug, Clone)]
enum Native {
    X86(iced_x86::Instruction),
    Aarch64(aarch64::Decoded),
    /// An arm64 word the decoder does not know (SVE, SME) outside the
    /// branch and system encodings: it cannot transfer control, but what
    /// it writes is not known.
    Aarch64Opaque,
    Invalid,
}

impl Instruction {
    /// Bytes at `address` that do not decode, `length` of them.
    fn invalid(address: u64, length: u8) -> Instruction {
        Instruction {
            address,
            length,
            flow: Flow::Invalid,
            target: None,
            padding: false,
            memory: None,
            referenced: None,
            register: None,
            native: Native::Invalid,
        }
    }

    /// The address after it.
    pub fn next(&self) -> u64 {
        self.address + u64::from(self.length)
    }

    /// The registers it writes; a call also clobbers the caller-saved
    /// ones.
    pub fn written_registers(&self) -> Vec<Reg> {
        match &self.native {
            Native::X86(native) => x86_64::written_registers(native),
            Native::Aarch64(native) => aarch64::written_registers(native),
            Native::Aarch64Opaque => aarch64::every_register(),
            Native::Invalid => Vec::new(),
        }
    }

    /// True when it goes on to the next instruction writing neither the
    /// stack pointer, the return registers, nor memory addressed through
    /// the stack or frame pointer (where a returned value may sit).
    pub fn leaves_return_state(&self) -> bool {
        if self.flow != Flow::Next {
            return false;
        }
        match &self.native {
            Native::X86(native) => x86_64::leaves_return_state(native),
            Native::Aarch64(native) => aarch64::leaves_return_state(native),
            Native::Aarch64Opaque | Native::Invalid => false,
        }
    }
}

impl Isa {
    /// The instruction at the start of `bytes`, which sit at `address`;
    /// [`Flow::Invalid`] when they do not decode.
    pub fn decode(self, bytes: &[u8], address: u64) -> Instruction {
        match self {
            Isa::X86_64 => x86_64::decode(bytes, address),
            Isa::Aarch64 => aarch64::decode(bytes, address),
        }
    }

    /// The instruction at `address` in `code` (which starts at
    /// `code_address`), when it is inside and decodes.
    pub fn decode_at(self, code: &[u8], code_address: u64, address: u64) -> Option<Instruction> {
        let offset = usize::try_from(address.checked_sub(code_address)?).ok()?;
        let instruction = self.decode(code.get(offset..)?, address);
        (instruction.flow != Flow::Invalid).then_some(instruction)
    }

    /// Every instruction of `code` (at `address`) in address order,
    /// undecodable bytes included as [`Flow::Invalid`]. Addresses loaded
    /// in two instructions (arm64's `adrp`) are followed along the way.
    pub fn sweep(self, code: &[u8], address: u64) -> Box<dyn Iterator<Item = Instruction> + '_> {
        match self {
            Isa::X86_64 => Box::new(x86_64::sweep(code, address)),
            Isa::Aarch64 => Box::new(aarch64::sweep(code, address)),
        }
    }

    /// The first instruction of `bytes` as text, and how the kernel
    /// executes it under a uprobe; `None` when it does not decode.
    pub fn probe_site(self, bytes: &[u8], address: u64) -> Option<(String, Execution)> {
        match self {
            Isa::X86_64 => x86_64::probe_site(bytes, address),
            Isa::Aarch64 => aarch64::probe_site(bytes, address),
        }
    }

    /// Up to `count` instructions from the start of `bytes`, as (address,
    /// text), stopping at the first that does not decode.
    pub fn listing(self, bytes: &[u8], address: u64, count: usize) -> Vec<(u64, String)> {
        match self {
            Isa::X86_64 => x86_64::listing(bytes, address, count),
            Isa::Aarch64 => aarch64::listing(bytes, address, count),
        }
    }
}

/// What the running kernel does with a probed frame-pointer prologue's
/// first instruction (`push rbp`, `stp x29, x30, [sp, #-16]!`), when
/// measured: unknown, emulated, single-stepped.
static PROLOGUE_EMULATED: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const EMULATED: u8 = 1;
const STEPPED: u8 = 2;

/// Records what the running kernel does with a probed prologue
/// instruction (see [`crate::attach::features`]).
pub fn set_prologue_emulated(emulated: bool) {
    let value = if emulated { EMULATED } else { STEPPED };
    PROLOGUE_EMULATED.store(value, Ordering::Relaxed);
}

/// Whether the running kernel emulates the prologue instruction: as
/// measured, or `default` (what the decoder knows of supported kernels)
/// before any measurement.
fn prologue_emulated_or(default: bool) -> bool {
    match PROLOGUE_EMULATED.load(Ordering::Relaxed) {
        EMULATED => true,
        STEPPED => false,
        _ => default,
    }
}
