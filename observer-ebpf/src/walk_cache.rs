//! The verified incremental walk: each thread's last complete stack walk,
//! and the tests that decide when its frames stand for the new walk's.
//!
//! A walk is a chain of states `(pc, sp, bp)`, innermost first. The step
//! from one state to its caller depends only on the state, the unwind
//! table row at `pc` and the values it reads from the stack: the return
//! address (at `CFA − 8` on x86-64, where arm64's row says x30 was saved)
//! and, where the row says the frame pointer was saved, the saved frame
//! pointer. (A step that takes the return address from a register, arm64's
//! x30 at a walk's first frame, depends on more than the state: it is
//! never joined.) So when a new walk stands where a cached frame stood (same `pc`,
//! same `sp`, and same `bp` if anything further down uses it before it
//! is restored), and every slot the cached walk read from there on still
//! holds what it held, the rest of the walk is the cached one, frame for
//! frame. The slots are re-read, one user-memory read each, instead of
//! being stepped through (a page lookup, a 17-step search of the rows);
//! the first slot that differs ends the reuse, and the walk steps on
//! from there. The kernel side (`src/main.rs`) does the reading and the
//! map work; the decisions are the functions here, tested on the host.

use crate::MAX_FRAMES;

/// Entries of a [`WalkCache`]: every frame of the deepest walk, plus the
/// state after its last step when that read a zero return address.
pub const CACHED_FRAMES: usize = MAX_FRAMES + 1;

/// [`CachedFrame::step`] values: what the walk did from this state.
pub mod cached_step {
    /// Stepped to its caller (the next entry towards the stack's bottom).
    pub const STEP: u8 = 0;
    /// Its row said the stack ends here (return address undefined).
    pub const END: u8 = 1;
    /// Not a frame: the state after the last step, whose return address
    /// was 0 (the stack ends; that 0 is re-read like any other slot).
    pub const TERMINAL: u8 = 2;
}

/// [`CachedFrame::flags`] bits.
pub mod cached_flags {
    /// The walk's frame 0: looked up at `pc` itself (not `pc − 1`) and, with
    /// no row, unwound from the return address at `sp`: joined only by a
    /// walk's frame 0, which steps the same way.
    pub const FIRST: u8 = 1;
    /// The step used frame pointers (no row covered `pc`).
    pub const BY_FRAME_POINTER: u8 = 2;
    /// The step computed the caller's frame from `bp` (a CFA = frame
    /// pointer + offset row, the frame-pointer chain, or arm64's CFA from
    /// the frame record after a chain step).
    pub const STEP_USES_BP: u8 = 4;
    /// The walk from here on depends on this state's `bp`: this step or a
    /// later one uses it before it is restored from a saved slot.
    pub const DEPENDS_ON_BP: u8 = 8;
}

/// One state of a cached walk and what its step read (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedFrame {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    /// The step read the caller's frame pointer at `caller.sp + this`
    /// (bytes; the caller's CFA is its `sp`); 0: it was not restored.
    pub fp_offset: i16,
    /// The step read the return address at `caller.sp + this` (bytes);
    /// 0: from no slot there (arm64: the link register at a walk's first
    /// frame, or a frame record whose caller's sp is unknown): it cannot
    /// be re-read, and the state is never joined.
    pub ra_offset: i16,
    /// [`cached_step`].
    pub step: u8,
    /// [`cached_flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<CachedFrame>() == 32);
const _: () = assert!(core::mem::offset_of!(CachedFrame, fp_offset) == 24);
const _: () = assert!(core::mem::offset_of!(CachedFrame, ra_offset) == 26);
const _: () = assert!(core::mem::offset_of!(CachedFrame, step) == 28);

/// A thread's last complete walk, outermost state first
/// (`frames[len - 1]` is the innermost frame), so a new walk that joins it
/// keeps `frames[..=join]` in place and only writes its own newer frames
/// after them. `generation` is the unwind tables' when it was walked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WalkCache {
    pub len: u32,
    pub _pad: u32,
    pub generation: u64,
    /// The id of the last stack this thread interned in `STACKS` (whose
    /// entries are never removed): the same id again needs no insert.
    /// [`crate::NO_STACK`] before the first.
    pub stack_id: u64,
    pub frames: [CachedFrame; CACHED_FRAMES],
}

/// Binary-search steps that find any `sp` among [`CACHED_FRAMES`] entries.
pub const SEEK_STEPS: u32 = usize::BITS - (CACHED_FRAMES - 1).leading_zeros();

impl CachedFrame {
    /// True when a walk standing at `(pc, sp, bp)` (at its own first
    /// frame when `first`) would step from here exactly as the cached walk
    /// did, given the same stack contents.
    #[inline(always)]
    pub fn joins(&self, pc: u64, sp: u64, bp: u64, first: bool) -> bool {
        self.step != cached_step::TERMINAL
            && (self.step == cached_step::END || self.ra_offset != 0)
            && (self.flags & cached_flags::FIRST != 0) == first
            && self.pc == pc
            && self.sp == sp
            && (self.flags & cached_flags::DEPENDS_ON_BP == 0 || self.bp == bp)
    }

    /// Where the step from this state to `caller` read the return address,
    /// if it read it from memory there.
    #[inline(always)]
    pub fn return_address_slot(&self, caller: &CachedFrame) -> Option<u64> {
        (self.ra_offset != 0).then(|| caller.sp.wrapping_add(self.ra_offset as i64 as u64))
    }

    /// Where the step to `caller` read the saved frame pointer, if it did.
    #[inline(always)]
    pub fn saved_bp_slot(&self, caller: &CachedFrame) -> Option<u64> {
        (self.fp_offset != 0).then(|| caller.sp.wrapping_add(self.fp_offset as i64 as u64))
    }

    /// Whether the step from this state to `caller` reads the same values
    /// now: `read` reads a word of user memory, `original` turns a return
    /// address read at a slot into the one the walk records, or `None`
    /// where that depends on more than the slot (a uretprobe's
    /// trampoline: the walk looks up the call it replaced). An unreadable
    /// slot, or one `original` cannot tell, is a difference: the walk
    /// steps from here itself.
    #[inline(always)]
    pub fn still_steps_to(
        &self,
        caller: &CachedFrame,
        mut read: impl FnMut(u64) -> Option<u64>,
        original: impl FnOnce(u64, u64) -> Option<u64>,
    ) -> bool {
        if self.step != cached_step::STEP {
            return false;
        }
        let Some(slot) = self.return_address_slot(caller) else {
            return false;
        };
        match read(slot) {
            Some(value) if original(slot, value) == Some(caller.pc) => {}
            _ => return false,
        }
        match self.saved_bp_slot(caller) {
            Some(slot) => read(slot) == Some(caller.bp),
            None => true,
        }
    }

    /// [`cached_flags::DEPENDS_ON_BP`] for this state, given its caller's
    /// (`None` at the bottom of the stack): the step uses `bp`, or leaves
    /// it unrestored for a caller whose walk depends on it.
    #[inline(always)]
    pub fn depends_on_bp(&self, caller_depends: bool) -> bool {
        self.flags & cached_flags::STEP_USES_BP != 0
            || (self.step == cached_step::STEP && self.fp_offset == 0 && caller_depends)
    }
}

/// Bottom-up index of the entry of `frames[..len]` whose `sp` is `sp`, if
/// any: entries are sorted by decreasing `sp` (a caller's frame is above
/// its callee's). `frame(i)` reads entry `i` (`None` out of bounds).
///
/// The search's bounds live in `bounds` (map memory in the kernel), read
/// and written as volatile: the verifier then sees each step's bounds as
/// values loaded from memory, not as one value per path taken so far, so
/// its work grows with the steps, not with 2^steps. There is no early exit
/// for the same reason: once the bounds meet, a step changes nothing.
#[inline(always)]
pub fn seek_sp<'a>(
    len: u32,
    sp: u64,
    bounds: &mut [u32; 2],
    frame: impl Fn(u32) -> Option<&'a CachedFrame>,
) -> Option<u32> {
    if len == 0 {
        return None;
    }
    // Invariant: the entry sought, if any, is in [low, high); the last
    // entry whose sp >= the one sought is `low` once they meet.
    set(&mut bounds[0], 0);
    set(&mut bounds[1], len);
    for _ in 0..SEEK_STEPS {
        let (low, high) = (get(&bounds[0]), get(&bounds[1]));
        let middle = low.wrapping_add(high.wrapping_sub(low) / 2);
        if frame(middle)?.sp >= sp {
            set(&mut bounds[0], middle);
        } else {
            set(&mut bounds[1], middle);
        }
    }
    let low = get(&bounds[0]);
    (frame(low)?.sp == sp).then_some(low)
}

#[inline(always)]
fn get(cell: &u32) -> u32 {
    // SAFETY: a reference is valid for reads.
    unsafe { core::ptr::read_volatile(cell) }
}

#[inline(always)]
fn set(cell: &mut u32, value: u32) {
    // SAFETY: a mutable reference is valid for writes.
    unsafe { core::ptr::write_volatile(cell, value) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    use super::*;

    fn frame(pc: u64, sp: u64, bp: u64, fp_offset: i16, flags: u8) -> CachedFrame {
        CachedFrame {
            pc,
            sp,
            bp,
            fp_offset,
            ra_offset: -8,
            step: cached_step::STEP,
            flags,
            _pad: [0; 2],
        }
    }

    /// A stack of three frames (innermost 0x1000 at sp 0x7000) ending in
    /// a zero return address, outermost first, and the memory it was
    /// walked from.
    fn walked() -> (Vec<CachedFrame>, BTreeMap<u64, u64>) {
        let frames = std::vec![
            CachedFrame {
                step: cached_step::TERMINAL,
                ..frame(0, 0x7100, 0x55, 0, 0)
            },
            frame(0x3000, 0x7080, 0x55, -16, 0),
            frame(0x2000, 0x7040, 0x11, 0, 0),
            frame(0x1000, 0x7000, 0x11, 0, cached_flags::FIRST),
        ];
        let memory = BTreeMap::from([
            (0x7040 - 8, 0x2000),
            (0x7080 - 8, 0x3000),
            (0x7100 - 8, 0),
            (0x7100 - 16, 0x55),
        ]);
        (frames, memory)
    }

    fn reader(memory: &BTreeMap<u64, u64>) -> impl Fn(u64) -> Option<u64> + '_ {
        |address| memory.get(&address).copied()
    }

    fn as_read(_slot: u64, value: u64) -> Option<u64> {
        Some(value)
    }

    #[test]
    fn unchanged_slots_verify() {
        let (frames, memory) = walked();
        for at in 1..frames.len() {
            let (caller, callee) = (&frames[at - 1], &frames[at]);
            assert!(callee.still_steps_to(caller, reader(&memory), as_read));
        }
    }

    /// The stack was reused at the same stack pointers with other callers:
    /// every changed slot is caught, the return address and the saved rbp.
    #[test]
    fn a_reused_stack_with_other_content_does_not_verify() {
        let (frames, memory) = walked();
        for (slot, other) in [
            (0x7040 - 8, 0x2100),
            (0x7100 - 8, 0x4000),
            (0x7100 - 16, 0x56),
        ] {
            let mut changed = memory.clone();
            changed.insert(slot, other);
            let verified = (1..frames.len())
                .all(|at| frames[at].still_steps_to(&frames[at - 1], reader(&changed), as_read));
            assert!(
                !verified,
                "slot {slot:#x} changed to {other:#x} went unnoticed"
            );
        }
        // Unreadable memory is a difference too.
        let empty = BTreeMap::new();
        assert!(!frames[2].still_steps_to(&frames[1], reader(&empty), as_read));
    }

    /// A slot a uretprobe hijacked holds the trampoline: what counts is
    /// the return address the walk would record, not the raw value.
    #[test]
    fn return_addresses_are_compared_as_the_walk_records_them() {
        let (frames, mut memory) = walked();
        let trampoline = 0x7fff_ffff_e000;
        memory.insert(0x7040 - 8, trampoline);
        let undo = |slot: u64, value: u64| {
            Some(if slot == 0x7040 - 8 && value == trampoline {
                0x2000
            } else {
                value
            })
        };
        assert!(frames[3].still_steps_to(&frames[2], reader(&memory), undo));
        assert!(!frames[3].still_steps_to(&frames[2], reader(&memory), as_read));
        // Where the value cannot be told from the slot alone, the walk steps.
        let unknown = |_slot: u64, value: u64| (value != trampoline).then_some(value);
        assert!(!frames[3].still_steps_to(&frames[2], reader(&memory), unknown));
    }

    /// arm64: a frame record at the bottom of a 48-byte frame (GCC's
    /// `stp x29, x30, [sp, #-48]!`) is re-read where it is, below the
    /// caller's stack pointer by the row's offsets.
    #[test]
    fn slots_are_where_the_row_said() {
        let caller = frame(0x2000, 0x7030, 0x55, 0, 0);
        let callee = CachedFrame {
            ra_offset: -40,
            ..frame(0x1000, 0x7000, 0x7000, -48, cached_flags::FIRST)
        };
        let memory = BTreeMap::from([(0x7030 - 40, 0x2000), (0x7030 - 48, 0x55)]);
        assert!(callee.still_steps_to(&caller, reader(&memory), as_read));
        // The x86-64 slot (CFA − 8) is not where this step read.
        let x86 = BTreeMap::from([(0x7030 - 8, 0x2000), (0x7030 - 16, 0x55)]);
        assert!(!callee.still_steps_to(&caller, reader(&x86), as_read));
    }

    /// arm64: a step that took the return address from x30 (a walk's first
    /// frame before its prologue saved it) or from a frame record whose
    /// caller's stack pointer is unknown read no slot relative to the
    /// caller: it is never joined nor re-read.
    #[test]
    fn a_step_from_a_register_is_never_reused() {
        let caller = frame(0x2000, 0x7000, 0x55, 0, 0);
        let from_x30 = CachedFrame {
            ra_offset: 0,
            ..frame(0x1000, 0x7000, 0x55, 0, cached_flags::FIRST)
        };
        assert!(!from_x30.joins(0x1000, 0x7000, 0x55, true));
        let everything = |_| Some(0x2000);
        assert!(!from_x30.still_steps_to(&caller, everything, as_read));
        // The same frame with its return address saved is joined.
        let saved = CachedFrame {
            ra_offset: -8,
            ..from_x30
        };
        assert!(saved.joins(0x1000, 0x7000, 0x55, true));
    }

    #[test]
    fn an_end_or_terminal_state_does_not_step() {
        let (frames, memory) = walked();
        let end = CachedFrame {
            step: cached_step::END,
            ..frames[1]
        };
        assert!(!end.still_steps_to(&frames[0], reader(&memory), as_read));
        assert!(!frames[0].still_steps_to(&frames[0], reader(&memory), as_read));
    }

    #[test]
    fn joins_need_pc_sp_and_bp_only_where_used() {
        let (frames, _) = walked();
        let middle = frames[2];
        assert!(middle.joins(0x2000, 0x7040, 0x11, false));
        assert!(
            middle.joins(0x2000, 0x7040, 0x99, false),
            "bp is not used below"
        );
        assert!(!middle.joins(0x2001, 0x7040, 0x11, false));
        assert!(!middle.joins(0x2000, 0x7048, 0x11, false));
        let depends = CachedFrame {
            flags: cached_flags::DEPENDS_ON_BP,
            ..middle
        };
        assert!(!depends.joins(0x2000, 0x7040, 0x99, false));
        assert!(depends.joins(0x2000, 0x7040, 0x11, false));
        // A walk's first frame steps differently from the others: it joins
        // only another walk's first frame. The terminal is no frame.
        assert!(!middle.joins(0x2000, 0x7040, 0x11, true));
        assert!(!frames[3].joins(0x1000, 0x7000, 0x11, false));
        assert!(frames[3].joins(0x1000, 0x7000, 0x11, true));
        assert!(!frames[0].joins(0, 0x7100, 0x55, false));
    }

    #[test]
    fn bp_dependence_stops_where_rbp_is_restored() {
        let uses = frame(1, 0x100, 0, 0, cached_flags::STEP_USES_BP);
        let restores = frame(1, 0x100, 0, -16, 0);
        let passes = frame(1, 0x100, 0, 0, 0);
        assert!(uses.depends_on_bp(false));
        assert!(!restores.depends_on_bp(true));
        assert!(passes.depends_on_bp(true));
        assert!(!passes.depends_on_bp(false));
    }

    #[test]
    fn seek_finds_exactly_the_same_sp() {
        let sps: Vec<u64> = (0..CACHED_FRAMES as u64)
            .rev()
            .map(|i| 0x1000 + i * 16)
            .collect();
        let frames: Vec<CachedFrame> = sps.iter().map(|&sp| frame(0, sp, 0, 0, 0)).collect();
        for len in [0u32, 1, 2, 7, CACHED_FRAMES as u32] {
            let get = |i: u32| frames.get(i as usize).filter(|_| i < len);
            let mut bounds = [0; 2];
            for (index, &sp) in sps.iter().enumerate().take(len as usize) {
                assert_eq!(
                    seek_sp(len, sp, &mut bounds, get),
                    Some(index as u32),
                    "len {len}"
                );
                assert_eq!(seek_sp(len, sp + 8, &mut bounds, get), None);
            }
            assert_eq!(seek_sp(len, 0x10, &mut bounds, get), None);
            assert_eq!(seek_sp(len, u64::MAX, &mut bounds, get), None);
        }
    }
}
