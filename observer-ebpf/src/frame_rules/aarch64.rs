//! arm64's frame rules: `bl` leaves the return address in x30 and pushes
//! nothing; a frame record `{ x29, x30 }` sits where the prologue puts it;
//! return addresses may be signed (pointer authentication).
//!
//! A call is identified by the stack pointer its caller had at the call,
//! which is the callee's at entry (its CFA).

/// Where the kernel maps its uretprobe trampoline: `__create_xol_area`
/// asks for the page just below `TASK_SIZE`, 2^48 with Debian's 48-bit
/// user address space (4 KiB pages; 0xffff_ffff_0000 with 64 KiB pages;
/// 2^52 with 52-bit addresses). The one actually used is read from
/// `/proc/PID/maps` (`[uprobes]`) as soon as it exists and stored in
/// `TRAMPOLINE`; these cover the moments before.
pub const TRAMPOLINE_HINTS: [u64; 2] = [0xffff_ffff_f000, 0x000f_ffff_ffff_f000];

/// The bits of a user code address: 48.
///
/// A signed return address keeps its signature in bits 63–56 and 54–VA
/// (Linux disables top-byte-ignore for instruction addresses when pointer
/// authentication is on, so the top byte is signature too); bit 55 is 0
/// for user addresses. VA is the kernel's user address size: 48 for
/// Debian's kernels (4 KiB pages, 4 levels); 52 on kernels built for it,
/// on CPUs with large addresses. Even there, mmap places nothing above
/// 2^48 (`DEFAULT_MAP_WINDOW`) unless a program asks for a higher address,
/// so code, and every return address into it, lies below 2^48: clearing
/// bits 63–48 is what `xpaclri` does to every return address into code
/// mapped in that window, signed or not (an unsigned one is unchanged).
/// Code a program maps above 2^48 on a 52-bit kernel would come out
/// wrong; nothing maps code there by default.
const USER_CODE_MASK: u64 = (1 << 48) - 1;

/// A return address as the walk records it: without its
/// pointer-authentication signature (see [`USER_CODE_MASK`]).
#[inline(always)]
pub fn strip_return_address(value: u64) -> u64 {
    value & USER_CODE_MASK
}

/// The call whose return address a frame saved, from the frame's CFA:
/// the caller's stack pointer at the `bl`, which the eBPF programs' `arch::entry_call_slot`
/// recorded.
#[inline(always)]
pub fn call_of_cfa(cfa: u64) -> u64 {
    cfa
}

/// Whether a caller's CFA computed from a row is plausible: above the
/// stack pointer, where x30 was saved; or, at the walk's first frame,
/// equal to it (a function's entry, a leaf that keeps x30 and moves no
/// stack).
#[inline(always)]
pub fn caller_is_above(cfa: u64, sp: u64, first: bool) -> bool {
    cfa > sp || (first && cfa == sp)
}

/// True: after a frame-pointer chain step the walk's `sp` is
/// `UNKNOWN_SP` (see [`frame_record`]).
pub const SP_MAY_BE_UNKNOWN: bool = true;

/// The frame-pointer chain's step from frame pointer `fp`: x29 points at
/// the frame record `{ saved x29, saved x30 }`, so the slots of the return
/// address and of the caller's saved frame pointer; the caller's stack
/// pointer is unknown (`UNKNOWN_SP`): the record can sit anywhere in the
/// frame (GCC puts it at the bottom, below the locals; LLVM usually at the
/// top of its register saves), so `fp + 16` is the caller's sp only
/// sometimes. The caller's CFA is then found from its row and x29 (which
/// points at the caller's own frame record, where its row says x29 was
/// saved), or by the chain again.
#[inline(always)]
pub fn frame_record(fp: u64) -> (u64, u64, u64) {
    (fp.wrapping_add(8), fp, crate::UNKNOWN_SP)
}

/// Whether a chain step from frame pointer `fp` to the saved `saved_fp`
/// may go on: frame records of callers are above their callees' (or the
/// chain ends with 0). Checked here, as the stack pointer that bounds the
/// next step on x86-64 is unknown.
#[inline(always)]
pub fn chain_goes_up(fp: u64, saved_fp: u64) -> bool {
    saved_fp == 0 || saved_fp > fp
}

/// Where a frame-pointer chain step read, from the caller's stack
/// pointer: nowhere known (it is `UNKNOWN_SP`), so the step is not
/// re-read from a cached walk (0, 0).
pub const CHAIN_STEP_OFFSETS: (i16, i16) = (0, 0);

/// At a callee's first instruction, where its return address is: in no
/// slot, but in x30 (`WalkState::lr`).
#[inline(always)]
pub fn return_address_slot_at_entry(_sp: u64) -> Option<u64> {
    None
}

/// The same, from the caller's stack pointer: 0, not in memory.
pub const ENTRY_RA_OFFSET: i16 = 0;

/// At a callee's first instruction (stack pointer `sp`), the caller's
/// stack pointer: the same, since `bl` pushes nothing.
#[inline(always)]
pub fn caller_sp_at_entry(sp: u64) -> u64 {
    sp
}
