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
/// the caller's stack pointer at the `bl`, which [`entry_call_slot`]
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
    (fp.wrapping_add(8), fp, observer_ebpf::UNKNOWN_SP)
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
