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

// The frame rules are pure address arithmetic, shared with the host,
// which runs the walker's steps with them (`observer_ebpf::walk_step`).
pub use observer_ebpf::frame_rules::x86_64::*;

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
