//! x86-64's frame rules: `call` pushes the return address just below the
//! caller's stack pointer; `push rbp; mov rbp, rsp` makes the frame record.
//!
//! A call is identified by the stack slot its `call` instruction pushed
//! the return address into: at the callee's first instruction that is
//! `rsp`.

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
/// CFA: the slot just below it, which the eBPF programs' `arch::entry_call_slot` recorded.
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
