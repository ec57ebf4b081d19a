//! x86-64: `pt_regs` as the kernel saves it, the System V calling
//! convention, and `call` pushing the return address.
//!
//! A call is identified by the stack slot its `call` instruction pushed
//! the return address into: at the callee's first instruction that is
//! `rsp`; before the `call` executes and after `ret` popped it, it is
//! `rsp − 8`. A uretprobe replaces the address in that slot.

use aya_ebpf::bindings::pt_regs;

use observer_ebpf::LOC_BASE_SAVED_COUNT;

use super::{snapshot_slot, Returned};

/// The instruction pointer (rip).
#[inline(always)]
pub fn pc(regs: &pt_regs) -> u64 {
    regs.rip
}

/// The stack pointer (rsp).
#[inline(always)]
pub fn sp(regs: &pt_regs) -> u64 {
    regs.rsp
}

/// The frame pointer (rbp).
#[inline(always)]
pub fn fp(regs: &pt_regs) -> u64 {
    regs.rbp
}

/// None: a call pushes its return address; there is no link register.
#[inline(always)]
pub fn link_register(_regs: &pt_regs) -> Option<u64> {
    None
}

/// rax and rdx: `ret` and `ret.1`.
#[inline(always)]
pub fn returned(regs: &pt_regs) -> Returned {
    [regs.rax, regs.rdx]
}

/// The registers an entry saves for locations: the six argument registers
/// rdi rsi rdx rcx r8 r9 (`arg0`…`arg5`; rdi is also a large result's
/// hidden slot).
#[inline(always)]
pub fn entry_registers(regs: &pt_regs) -> [u64; LOC_BASE_SAVED_COUNT as usize] {
    [regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9]
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
        _ => return Err(()),
    })
}

/// General register `number` in DWARF numbering (0 rax, 1 rdx, 2 rcx,
/// 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8–15 r8–r15); `Err` for any other.
#[inline(always)]
pub fn register(regs: &pt_regs, number: u8) -> Result<u64, ()> {
    // pt_regs slot (in u64s) of each DWARF register.
    let slot: usize = match number {
        0 => 10,
        1 => 12,
        2 => 11,
        3 => 5,
        4 => 13,
        5 => 14,
        6 => 4,
        7 => 19,
        8 => 9,
        9 => 8,
        10 => 7,
        11 => 6,
        12 => 3,
        13 => 2,
        14 => 1,
        15 => 0,
        _ => return Err(()),
    };
    // SAFETY: every slot above is below pt_regs' 21 u64 fields.
    unsafe { snapshot_slot(regs, slot) }
}

/// At a callee's first instruction: the slot holding its return address
/// (rsp), which identifies the call.
#[inline(always)]
pub fn entry_call_slot(regs: &pt_regs) -> u64 {
    regs.rsp
}

/// Before a `call` executes (a call-site probe, an inlined instance's
/// entry or exit) or after its `ret`: the slot the call pushes, or pushed,
/// its return address into (rsp − 8).
#[inline(always)]
pub fn pending_call_slot(regs: &pt_regs) -> u64 {
    regs.rsp.wrapping_sub(8)
}

/// Addresses the kernel maps its uretprobe trampoline at: the page just
/// below the top of the user address space (4- and 5-level paging), where
/// `__create_xol_area` asks for it. The one actually used is read from
/// `/proc/PID/maps` (`[uprobes]`) as soon as it exists and stored in
/// `TRAMPOLINE`; these cover the moments before.
pub const TRAMPOLINE_HINTS: [u64; 2] = [0x7fff_ffff_e000, 0x00ff_ffff_ffff_e000];

/// A return address as read: x86-64's carry no signature.
#[inline(always)]
pub fn strip_return_address(value: u64) -> u64 {
    value
}

/// The call whose return address a frame's slot holds, from the frame's
/// CFA: the slot just below it, which [`entry_call_slot`] recorded.
#[inline(always)]
pub fn call_of_cfa(cfa: u64) -> u64 {
    cfa.wrapping_sub(8)
}

/// Whether a caller's CFA computed from a row is plausible: above the
/// stack pointer (a call pushed at least the return address).
#[inline(always)]
pub fn caller_is_above(cfa: u64, sp: u64, _first: bool) -> bool {
    cfa > sp
}

/// False: a frame-pointer chain step always tells the caller's stack
/// pointer (see [`frame_record`]), so the walk's `sp` is never
/// `UNKNOWN_SP`.
pub const SP_MAY_BE_UNKNOWN: bool = false;

/// The frame-pointer chain's step from frame pointer `fp` (after
/// `push rbp; mov rbp, rsp`): the slot of the return address, the slot of
/// the caller's saved frame pointer, and the caller's stack pointer.
#[inline(always)]
pub fn frame_record(fp: u64) -> (u64, u64, u64) {
    (fp.wrapping_add(8), fp, fp.wrapping_add(16))
}

/// Whether a chain step from frame pointer `fp` to the saved `saved_fp`
/// may go on: always here; the next step's own check (the frame pointer
/// not below the stack pointer, which is `fp + 16`) keeps the walk going up.
#[inline(always)]
pub fn chain_goes_up(_fp: u64, _saved_fp: u64) -> bool {
    true
}

/// Where a frame-pointer chain step read, from the caller's stack pointer
/// (`fp + 16`): the saved frame pointer 16 below it, the return address 8
/// below it (`CachedFrame::fp_offset`, `ra_offset`).
pub const CHAIN_STEP_OFFSETS: (i16, i16) = (-16, -8);

/// At a callee's first instruction (stack pointer `sp`), where its
/// return address is: the slot at `sp`.
#[inline(always)]
pub fn return_address_slot_at_entry(sp: u64) -> Option<u64> {
    Some(sp)
}

/// The same, from the caller's stack pointer (`CachedFrame::ra_offset`).
pub const ENTRY_RA_OFFSET: i16 = -8;

/// At a callee's first instruction (stack pointer `sp`), the caller's
/// stack pointer: above the pushed return address.
#[inline(always)]
pub fn caller_sp_at_entry(sp: u64) -> u64 {
    sp.wrapping_add(8)
}

/// True: a uretprobe's trampoline sits in the slot [`entry_call_slot`]
/// names, where the panic repair puts the original return address back
/// (`on_unwind_start`, `rearm_live_calls`).
pub const REPAIRS_RETURN_ADDRESSES: bool = true;

/// Whether a call (`entry_sp`, its [`entry_call_slot`]) was made below a
/// frame whose stack pointer at its own call is `sp` (the frame that
/// catches a panic): its slot is below that stack pointer.
#[inline(always)]
pub fn call_is_below(entry_sp: u64, sp: u64) -> bool {
    entry_sp < sp
}
