//! arm64: `user_pt_regs { regs[31], sp, pc, pstate }`, the AAPCS64
//! calling convention (x0–x7 arguments, x0:x1 returns, x8 indirect
//! result, x29 frame pointer, x30 link register), and `bl` leaving the
//! return address in x30 instead of pushing it.
//!
//! A call pushes nothing, so a call is identified by the stack pointer
//! its caller had at the call, which is the callee's at entry and is the
//! caller's again after the return. The kernel's uretprobe replaces x30 at
//! entry, not a stack slot; the callee then saves that (replaced) x30
//! wherever its prologue puts it.

use aya_ebpf::bindings::pt_regs;

use observer_ebpf::LOC_BASE_SAVED_COUNT;

use super::{snapshot_slot, Returned};

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
/// and in a leaf function.
// arm64: not yet stripped of pointer-authentication bits (a binary built
// with branch protection signs x30 before saving it).
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

/// Saved register `base` (below `LOC_BASE_SAVED_COUNT`), by constant
/// indices: the verifier is spared a variable offset into the stack.
#[inline(always)]
pub fn saved_register(saved: &[u64; LOC_BASE_SAVED_COUNT as usize], base: u8) -> Result<u64, ()> {
    Ok(match base {
        0 => saved[0],
        1 => saved[1],
        2 => saved[2],
        3 => saved[3],
        4 => saved[4],
        5 => saved[5],
        6 => saved[6],
        7 => saved[7],
        8 => saved[8],
        _ => return Err(()),
    })
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
/// pushed nothing), which identifies the call.
// arm64: not yet a slot holding the return address: the panic repair
// (`on_unwind_start`, `rearm_live_calls`) writes the original return
// address at this address, which is right on x86-64 only; on arm64 it
// must write where the callee's prologue saved x30 (from its unwind row).
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

/// Where a frame's return address is, given its CFA.
// arm64: not yet right in general: x30 is saved where the prologue puts
// it (`stp x29, x30, [sp, #-N]!` leaves it at CFA − N + 8); CFA − 8 holds
// only for a frame record at the top of the frame (LLVM's usual layout).
// The unwind rows must carry x30's offset, and frame 0 at entry or in a
// leaf uses the live x30.
#[inline(always)]
pub fn return_address_slot(cfa: u64) -> u64 {
    cfa.wrapping_sub(8)
}

/// The frame-pointer chain's step from frame pointer `fp` (x29 points at
/// the frame record `{ saved x29, saved x30 }`): the slot of the return
/// address, the slot of the caller's saved frame pointer, and the
/// caller's stack pointer.
// arm64: not yet right for the caller's stack pointer: the frame record
// can sit anywhere in the frame (GCC puts it at the bottom), so fp + 16 is
// the caller's sp only when the record is at the frame's top.
#[inline(always)]
pub fn frame_record(fp: u64) -> (u64, u64, u64) {
    (fp.wrapping_add(8), fp, fp.wrapping_add(16))
}

/// At a callee's first instruction (stack pointer `sp`), where its
/// return address is.
// arm64: not yet right: the return address is in x30, in no slot; the
// frame-pointer fallback at frame 0 reads this slot, so the walk state
// must carry the live x30 for frame 0 instead.
#[inline(always)]
pub fn return_address_slot_at_entry(sp: u64) -> u64 {
    sp
}

/// At a callee's first instruction (stack pointer `sp`), the caller's
/// stack pointer: the same, since `bl` pushes nothing.
#[inline(always)]
pub fn caller_sp_at_entry(sp: u64) -> u64 {
    sp
}
