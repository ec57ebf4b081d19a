//! One step of the stack walk, and the search of an object's unwind rows:
//! the logic the eBPF walker runs frame by frame (`unwind_one` in
//! `src/main.rs`), here so that the host runs the very same code on
//! either processor's rules and rows and judges it against gimli's
//! unwinding (the observer's `plan/unwind/judge.rs`) and against the C
//! library's unwinder on captured stacks (`plan/unwind/captured.rs`).
//!
//! Everything is `#[inline(always)]` and generic over where memory comes
//! from ([`Memory`]) and the processor ([`FrameRules`]): the programs
//! compile it to what they ran before it moved here, one instance each.

use crate::frame_rules::FrameRules;
use crate::loc_eval::ReadUser;
use crate::{row_kind, InFlight, Row, WalkState, MAX_NESTED_ALLOCS, UNKNOWN_SP};

/// The binary search's steps: a page holds at most 2^17 rows.
pub const ROW_SEARCH_STEPS: u32 = 17;

/// What a step reads besides the rows: the target's memory, and which
/// return addresses are the kernel's uretprobe trampoline.
pub trait Memory: ReadUser {
    /// Whether `value` (stripped) is the uretprobe trampoline's address.
    fn is_trampoline(&self, value: u64) -> bool;
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The walk moved to the caller (by a row: `dwarf`; else by the
    /// frame-pointer rules).
    Moved { dwarf: bool },
    /// The row says the return address is undefined: the stack ends.
    End,
    /// No row applies: the frame-pointer rules may go on.
    NoRow,
    /// The step cannot be made (unreadable memory, an implausible CFA, a
    /// return address nothing says where it is).
    Broken,
}

/// The last row at or before `vaddr` among `count` rows from `first`
/// (sorted by address), read through `row_at`; `None` when the search
/// cannot read a row or every row starts after `vaddr`.
///
/// No early exit: once `high = low + 1` the steps change nothing, and
/// fewer branches keep the verifier's work linear.
#[inline(always)]
pub fn search_rows<R: Row>(
    first: u32,
    count: u32,
    vaddr: u32,
    row_at: impl Fn(u32) -> Option<R>,
) -> Option<R> {
    let (mut low, mut high) = (first, first.wrapping_add(count));
    for _ in 0..ROW_SEARCH_STEPS {
        let middle = low + (high - low) / 2;
        if row_at(middle)?.pc() <= vaddr {
            low = middle;
        } else {
            high = middle;
        }
    }
    let row = row_at(low)?;
    (row.pc() <= vaddr).then_some(row)
}

/// True when a CFA = sp + offset row must find the CFA from the frame
/// pointer instead: the walk's stack pointer is unknown (after an arm64
/// frame-record step), and the row says where the frame saved x29, which
/// is where x29 points in a frame that keeps a frame record. Never on
/// x86-64.
#[inline(always)]
pub fn cfa_from_frame_record<F: FrameRules, R: Row>(walk: &WalkState, row: &R) -> bool {
    F::SP_MAY_BE_UNKNOWN
        && walk.sp == UNKNOWN_SP
        && row.kind() == row_kind::CFA_SP
        && row.fp_offset() != 0
}

/// The caller by the row in effect at the walk's frame (its first frame
/// when `first`): its CFA, the return address (saved where the row says,
/// or, at the first frame, still in the link register) and the frame
/// pointer if the row says it was saved. `frames` are the allocate calls
/// in flight, whose original return addresses replace the trampoline.
#[inline(always)]
pub fn caller_by_row<F: FrameRules, R: Row, M: Memory>(
    walk: &mut WalkState,
    row: &R,
    first: bool,
    frames: &[InFlight; MAX_NESTED_ALLOCS],
    memory: &M,
) -> Step {
    let offset = row.cfa_offset() as i64 as u64;
    let cfa = match row.kind() {
        row_kind::END => return Step::End,
        row_kind::CFA_SP if cfa_from_frame_record::<F, R>(walk, row) => {
            walk.bp.wrapping_sub(row.fp_offset() as i64 as u64)
        }
        // The stack pointer is unknown and the row does not tell where the
        // frame record is: the chain goes on.
        row_kind::CFA_SP if F::SP_MAY_BE_UNKNOWN && walk.sp == UNKNOWN_SP => return Step::NoRow,
        row_kind::CFA_SP => walk.sp.wrapping_add(offset),
        row_kind::CFA_FP => walk.bp.wrapping_add(offset),
        row_kind::PLT_11 | row_kind::PLT_10 => {
            let threshold = if row.kind() == row_kind::PLT_11 {
                11
            } else {
                10
            };
            let extra = if walk.pc & 15 >= threshold { 8 } else { 0 };
            walk.sp.wrapping_add(8 + extra)
        }
        _ => return Step::NoRow,
    };
    // Callers' frames are above ours; anything else is a corrupt walk.
    if !F::caller_is_above(cfa, walk.sp, first) {
        return Step::Broken;
    }
    let call = F::call_of_cfa(cfa);
    let ra_offset = row.ra_offset();
    let return_address = if ra_offset != 0 {
        read_return_address::<F, M>(
            cfa.wrapping_add(ra_offset as i64 as u64),
            call,
            frames,
            memory,
        )
    } else if first {
        // Not saved yet: still in the link register.
        Some(recorded_return_address::<F, M>(
            walk.lr, call, frames, memory,
        ))
    } else {
        // A caller's frame that did not save its return address (it made
        // a call, which overwrote it): nothing tells where it returns.
        None
    };
    let Some(return_address) = return_address else {
        return Step::Broken;
    };
    let fp_offset = row.fp_offset();
    if fp_offset != 0 {
        let saved = cfa.wrapping_add(fp_offset as i64 as u64);
        match memory.read_u64(saved) {
            Some(bp) => walk.bp = bp,
            None => return Step::Broken,
        }
    }
    walk.sp = cfa;
    walk.pc = return_address;
    Step::Moved { dwarf: true }
}

/// Without a row: at the probed function's first instruction the return
/// address is where the call left it (x86-64: the slot at sp; arm64: x30);
/// further up, the frame-pointer chain ([`FrameRules::frame_record`]).
#[inline(always)]
pub fn caller_by_frame_pointer<F: FrameRules, M: Memory>(
    walk: &mut WalkState,
    at_entry: bool,
    frames: &[InFlight; MAX_NESTED_ALLOCS],
    memory: &M,
) -> Step {
    if at_entry {
        let caller_sp = F::caller_sp_at_entry(walk.sp);
        let call = F::call_of_cfa(caller_sp);
        let return_address = match F::return_address_slot_at_entry(walk.sp) {
            Some(slot) => read_return_address::<F, M>(slot, call, frames, memory),
            None => Some(recorded_return_address::<F, M>(
                walk.lr, call, frames, memory,
            )),
        };
        let Some(return_address) = return_address else {
            return Step::Broken;
        };
        walk.sp = caller_sp;
        walk.pc = return_address;
        return Step::Moved { dwarf: false };
    }
    if walk.bp == 0 || walk.bp < walk.sp {
        return Step::Broken;
    }
    let (return_address_slot, saved_bp_slot, caller_sp) = F::frame_record(walk.bp);
    let (Some(return_address), Some(bp)) = (
        read_return_address::<F, M>(
            return_address_slot,
            F::call_of_cfa(caller_sp),
            frames,
            memory,
        ),
        memory.read_u64(saved_bp_slot),
    ) else {
        return Step::Broken;
    };
    if !F::chain_goes_up(walk.bp, bp) {
        return Step::Broken;
    }
    walk.sp = caller_sp;
    walk.bp = bp;
    walk.pc = return_address;
    Step::Moved { dwarf: false }
}

/// The return address stored at `slot`, as the walk records it (see
/// [`recorded_return_address`]; `call` identifies the call that stored it).
#[inline(always)]
pub fn read_return_address<F: FrameRules, M: Memory>(
    slot: u64,
    call: u64,
    frames: &[InFlight; MAX_NESTED_ALLOCS],
    memory: &M,
) -> Option<u64> {
    Some(recorded_return_address::<F, M>(
        memory.read_u64(slot)?,
        call,
        frames,
        memory,
    ))
}

/// A return address as the walk records it: without pointer-authentication
/// bits; where a uretprobe replaced it with its trampoline (an outer
/// allocate call in flight, identified by `call`, its entry's call slot),
/// the original.
#[inline(always)]
pub fn recorded_return_address<F: FrameRules, M: Memory>(
    value: u64,
    call: u64,
    frames: &[InFlight; MAX_NESTED_ALLOCS],
    memory: &M,
) -> u64 {
    let value = F::strip_return_address(value);
    if !memory.is_trampoline(value) {
        return value;
    }
    for frame in frames {
        if frame.entry_sp == call {
            return frame.return_address;
        }
    }
    value
}
