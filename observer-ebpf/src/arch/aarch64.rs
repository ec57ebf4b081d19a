//! arm64: `user_pt_regs { regs[31], sp, pc, pstate }`, the AAPCS64
//! calling convention (x0–x7 arguments, x0:x1 returns, x8 indirect
//! result, x29 frame pointer, x30 link register), and `bl` leaving the
//! return address in x30 instead of pushing it.
//!
//! A call pushes nothing, so a call is identified by the stack pointer
//! its caller had at the call, which is the callee's at entry (its CFA)
//! and is the caller's again after the return. The kernel's uretprobe
//! replaces x30 at entry (after every entry handler ran), not a stack
//! slot; the callee then saves that (replaced) x30 wherever its prologue
//! puts it, signed with pointer authentication if built so. The unwind
//! rows say where that is; a walk's first frame reads the live x30 until
//! it is saved.
//!
//! Pointer authentication (`-mbranch-protection=pac-ret`): a function
//! signs x30 (`paciasp`) before saving it, putting a signature in the
//! address's unused upper bits, and authenticates it before returning.
//! BPF has no `xpaclri`, so return addresses are stripped by masking to
//! the user address bits ([`strip_return_address`]).

use aya_ebpf::bindings::pt_regs;

use observer_ebpf::LOC_BASE_SAVED_COUNT;

use super::{snapshot_slot, Returned};

// The frame rules are pure address arithmetic, shared with the host,
// which runs the walker's steps with them (`observer_ebpf::walk_step`).
pub use observer_ebpf::frame_rules::aarch64::*;

/// Number of `u64`s in `user_pt_regs`: x0–x30, sp, pc, pstate.
const SNAPSHOT_SLOTS: usize = 34;
/// `user_pt_regs` slot of sp (after x0–x30).
const SP_SLOT: usize = 31;
/// DWARF number of sp (x0–x30 are 0–30).
const DWARF_SP: u8 = 31;

/// The instruction pointer (pc).
#[inline(always)]
pub fn pc(regs: &pt_regs) -> u64 {
    regs.pc
}

/// The stack pointer (sp).
#[inline(always)]
pub fn sp(regs: &pt_regs) -> u64 {
    regs.sp
}

/// The frame pointer (x29).
#[inline(always)]
pub fn fp(regs: &pt_regs) -> u64 {
    regs.regs[29]
}

/// The link register (x30): the return address at a function's entry
/// and in a leaf function (possibly signed: see [`strip_return_address`]).
#[inline(always)]
pub fn link_register(regs: &pt_regs) -> Option<u64> {
    Some(regs.regs[30])
}

/// x0 and x1: `ret` and `ret.1`.
#[inline(always)]
pub fn returned(regs: &pt_regs) -> Returned {
    [regs.regs[0], regs.regs[1]]
}

/// The registers an entry saves for locations: x0–x7 (`arg0`…`arg7`) and
/// x8, the indirect-result register (a large result's hidden slot, which
/// only the entry sees: the callee may reuse x8).
#[inline(always)]
pub fn entry_registers(regs: &pt_regs) -> [u64; LOC_BASE_SAVED_COUNT as usize] {
    let r = &regs.regs;
    [r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]]
}

/// General register `number` in DWARF numbering (0–30 x0–x30, 31 sp);
/// `Err` for any other.
#[inline(always)]
pub fn register(regs: &pt_regs, number: u8) -> Result<u64, ()> {
    let slot = match number {
        0..=30 => usize::from(number),
        DWARF_SP => SP_SLOT,
        _ => return Err(()),
    };
    if slot >= SNAPSHOT_SLOTS {
        return Err(());
    }
    // SAFETY: `slot` is below user_pt_regs' 34 u64 fields (checked).
    unsafe { snapshot_slot(regs, slot) }
}

/// At a callee's first instruction: its caller's stack pointer (sp; `bl`
/// pushed nothing), which identifies the call: the callee's CFA.
#[inline(always)]
pub fn entry_call_slot(regs: &pt_regs) -> u64 {
    regs.sp
}

/// Before a `bl` executes (a call-site probe, an inlined instance's entry
/// or exit) or after its `ret`: the stack pointer, which a call does not
/// move ([`entry_call_slot`] of the same call).
#[inline(always)]
pub fn pending_call_slot(regs: &pt_regs) -> u64 {
    regs.sp
}

/// False: the uretprobe's trampoline is in x30 at entry, and then where
/// the callee's prologue saves it, signed with pac-ret (a key BPF cannot
/// sign with). Putting the original back would need that slot and, for
/// signed functions, a signature; the observer does not try: on arm64 a
/// function a panic may unwind through is observed at its call sites
/// (userspace refuses the repair method, `crate::arch` of the observer).
pub const REPAIRS_RETURN_ADDRESSES: bool = false;

/// Whether a call (`entry_sp`, its [`entry_call_slot`]) was made below a
/// frame whose stack pointer at its own call is `sp` (the frame that
/// catches a panic): at or below it, since a call made by that frame has
/// that very stack pointer as its identity.
#[inline(always)]
pub fn call_is_below(entry_sp: u64, sp: u64) -> bool {
    entry_sp <= sp
}
