//! eBPF programs of the pool observer.
//!
//! Programs that follow a buffer pool inside one process:
//! - `pool_alloc_enter` (uprobe at allocate's entry): saves the argument
//!   registers and a timestamp for this thread, then walks the user stack
//!   (tail-calling `pool_walk_stack`) and interns it in `STACKS`;
//! - `pool_walk_stack` (never attached; reached by tail call): unwinds a
//!   few frames per call with the `.eh_frame`-derived tables userspace put
//!   in `UNWIND_*`, falling back to frame pointers where no row covers an
//!   address;
//! - `pool_alloc_return` (uretprobe on allocate): evaluates the buffer's id
//!   and size (`argN` = the registers saved at entry, so a return slot passed
//!   in a register is readable once filled), records the buffer in `LIVE`
//!   and adds it to its site's aggregates in `SITES`;
//! - `pool_release_enter` (uprobe at release's entry): removes the buffer
//!   from `LIVE` and subtracts it from its site.
//!
//! Userspace only ever reads aggregates; nothing here sends per-event data.
//! Requires Linux ≥ 5.15 (attach cookies, atomic fetch-add on map values,
//! bounded loops, mmapable arrays); written and tested on 6.18.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's `fetch_add` is not
// available; the intrinsic lowers to BPF's native atomic add.
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Map helpers take `impl Borrow<V>`: passing a value instead of a reference
// would copy records of over a kilobyte onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{
        pt_regs, BPF_ANY, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_NOEXIST,
    },
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_stack, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user,
    },
    macros::{map, uprobe, uretprobe},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext as _, Global,
};
use aya_log_ebpf::debug;
use observer_ebpf::{
    counter, row_kind, stack_flags, walker, LiveBuf, LiveKey, Loc, MappingEntry, PageKey, PageRows,
    Pending, SiteKey, SiteStats, StackRecord, UnwindRow, WalkState, LOC_BASE_ARG_COUNT,
    LOC_BASE_CONST, LOC_BASE_REGISTER, LOC_BASE_RET, MAX_FRAMES, MAX_LOC_STEPS,
    MAX_MAPPING_PREFIXES, NO_STACK, PAGE_SHIFT,
};

/// The process being observed; every program ignores other processes.
#[unsafe(no_mangle)]
static TARGET_TGID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static SIZE_LOC: Global<Loc> = Global::new(Loc::ZERO);
#[unsafe(no_mangle)]
static ALLOC_ID_LOC: Global<Loc> = Global::new(Loc::ZERO);
/// [`walker`] constant: how stacks are walked.
#[unsafe(no_mangle)]
static WALKER: Global<u32> = Global::new(walker::DWARF);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

// Sizes below are defaults; userspace resizes LIVE (--max-live) and
// UNWIND_ROWS (to the tables it built).
#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(2048, 0);

#[map]
static LIVE: HashMap<LiveKey, LiveBuf> = HashMap::with_max_entries(1 << 20, BPF_F_NO_PREALLOC);

#[map]
static SITES: HashMap<SiteKey, SiteStats> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

#[map]
static STACKS: HashMap<u64, StackRecord> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// Unwind rows of every tabled object, each object's sorted by address;
/// written by userspace through mmap.
#[map]
static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map]
static UNWIND_PAGES: HashMap<PageKey, PageRows> = HashMap::with_max_entries(1 << 16, 0);

/// The target's executable mappings by address prefix (big-endian).
#[map]
static UNWIND_MAPPINGS: LpmTrie<[u8; 8], MappingEntry> =
    LpmTrie::with_max_entries(MAX_MAPPING_PREFIXES, BPF_F_NO_PREALLOC);

/// Where each release probe finds the buffer's identity, by attach cookie
/// (one entry per probe; the loader sizes it). Per probe because an
/// inlined release keeps the value in a register its caller chose.
#[map]
static RELEASE_LOCS: Array<Loc> = Array::with_max_entries(1, 0);

/// Slot 0: `pool_walk_stack`, which tail-calls itself.
#[map]
static WALKERS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Frames unwound per tail call, and tail calls per stack: 8 × 24 = 192
/// frames, within the kernel's limit of 33 tail calls. Eight frames per
/// program keep the verifier's work small (~45k instructions).
const FRAMES_PER_CALL: usize = 8;
const MAX_TAIL_CALLS: u32 = (MAX_FRAMES / FRAMES_PER_CALL) as u32;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const EEXIST: i32 = -17;

/// A zeroed record to create `PENDING` entries from: it does not fit on
/// the 512-byte BPF stack.
static EMPTY_PENDING: Pending = Pending {
    args: [0; LOC_BASE_ARG_COUNT as usize],
    entered_ns: 0,
    site: SiteKey {
        stack_id: 0,
        probe: 0,
        _pad: 0,
    },
    walk: WalkState {
        pc: 0,
        sp: 0,
        bp: 0,
        hash: 0,
        tail_calls: 0,
        done: 0,
    },
    stack: StackRecord {
        len: 0,
        flags: 0,
        frames: [0; MAX_FRAMES],
    },
};

#[uprobe]
pub fn pool_alloc_enter(ctx: ProbeContext) -> u32 {
    on_alloc_enter(&ctx);
    0
}

#[uretprobe]
pub fn pool_alloc_return(ctx: RetProbeContext) -> u32 {
    on_alloc_return(&ctx);
    0
}

#[uprobe]
pub fn pool_release_enter(ctx: ProbeContext) -> u32 {
    on_release_enter(&ctx);
    0
}

#[uprobe]
pub fn pool_walk_stack(ctx: ProbeContext) -> u32 {
    walk_stack(&ctx);
    0
}

/// Returns the current `pid_tgid` when the current process is the target.
#[inline(always)]
fn target_thread() -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32 == TARGET_TGID.load()).then_some(pid_tgid)
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so
        // it points at this CPU's u64 for `index`; programs do not migrate
        // CPUs while running, so nothing else writes it concurrently.
        unsafe { *slot += 1 };
    }
}

fn on_alloc_enter(ctx: &ProbeContext) {
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    count(counter::ALLOC_CALLS);
    if PENDING
        .insert(pid_tgid, &EMPTY_PENDING, BPF_NOEXIST as u64)
        .is_err()
    {
        count(counter::ENTRIES_WITHOUT_RETURN);
        if PENDING
            .insert(pid_tgid, &EMPTY_PENDING, BPF_ANY as u64)
            .is_err()
        {
            return;
        }
    }
    let Some(pending) = PENDING.get_ptr_mut(pid_tgid) else {
        return;
    };
    // SAFETY: `pending` points at this thread's own PENDING element, which
    // only this thread's probes touch, and the regs pointer is the probe's
    // context.
    unsafe {
        (*pending).args = entry_args(ctx);
        (*pending).entered_ns = bpf_ktime_get_ns();
        (*pending).site.probe = attach_cookie(ctx) as u32;
        let regs = &*ctx.regs;
        (*pending).walk.pc = regs.rip;
        (*pending).walk.sp = regs.rsp;
        (*pending).walk.bp = regs.rbp;
        (*pending).walk.hash = FNV_OFFSET;
    }
    if WALKER.load() == walker::FRAME_POINTERS {
        kernel_frame_pointer_walk(ctx, pending);
    } else {
        // SAFETY: WALKERS holds pool_walk_stack, a program of the same type;
        // on success control does not come back.
        unsafe { WALKERS.tail_call(ctx, 0) };
        // SAFETY: as above; only reached if the tail call failed.
        unsafe { (*pending).stack.flags |= stack_flags::BROKEN };
    }
    finish_walk(pending);
}

/// Unwinds up to [`FRAMES_PER_CALL`] frames, then tail-calls itself until
/// the stack ends, or finishes it.
fn walk_stack(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING.get_ptr_mut(pid_tgid) else {
        return;
    };
    for _ in 0..FRAMES_PER_CALL {
        // SAFETY: this thread's own PENDING element (see on_alloc_enter).
        if unsafe { (*pending).walk.done } != 0 {
            break;
        }
        // SAFETY: as above.
        unsafe { unwind_one(&mut (*pending).walk, &mut (*pending).stack) };
    }
    // SAFETY: as above.
    unsafe {
        if (*pending).walk.done == 0 && (*pending).walk.tail_calls < MAX_TAIL_CALLS {
            (*pending).walk.tail_calls += 1;
            WALKERS.tail_call(ctx, 0);
        }
        if (*pending).walk.done == 0 {
            (*pending).stack.flags |= stack_flags::TRUNCATED;
        }
    }
    finish_walk(pending);
}

/// Records the frame at `walk.pc`, then moves `walk` to the caller.
fn unwind_one(walk: &mut WalkState, stack: &mut StackRecord) {
    let len = stack.len as usize;
    let Some(slot) = stack.frames.get_mut(len) else {
        stack.flags |= stack_flags::TRUNCATED;
        walk.done = 1;
        return;
    };
    *slot = walk.pc;
    stack.len += 1;
    walk.hash = (walk.hash ^ walk.pc).wrapping_mul(FNV_PRIME);
    // A return address points after the call; look up the call itself.
    let lookup = if len == 0 {
        walk.pc
    } else {
        walk.pc.wrapping_sub(1)
    };
    let outcome = match find_row(lookup) {
        Some(row) => caller_by_row(walk, &row),
        None => Step::NoRow,
    };
    let outcome = match outcome {
        Step::NoRow => {
            stack.flags |= stack_flags::USED_FRAME_POINTERS;
            caller_by_frame_pointer(walk, len == 0)
        }
        other => other,
    };
    match outcome {
        Step::Moved { dwarf } => {
            count(if dwarf {
                counter::FRAMES_UNWOUND
            } else {
                counter::FRAMES_BY_FRAME_POINTER
            });
            if walk.pc == 0 {
                stack.flags |= stack_flags::COMPLETE;
                walk.done = 1;
            }
        }
        Step::End => {
            stack.flags |= stack_flags::COMPLETE;
            walk.done = 1;
        }
        Step::Broken | Step::NoRow => {
            stack.flags |= stack_flags::BROKEN;
            walk.done = 1;
        }
    }
}

enum Step {
    Moved { dwarf: bool },
    End,
    NoRow,
    Broken,
}

fn caller_by_row(walk: &mut WalkState, row: &UnwindRow) -> Step {
    let offset = row.cfa_offset as i64 as u64;
    let cfa = match row.kind {
        row_kind::END => return Step::End,
        row_kind::CFA_RSP => walk.sp.wrapping_add(offset),
        row_kind::CFA_RBP => walk.bp.wrapping_add(offset),
        row_kind::PLT_11 | row_kind::PLT_10 => {
            let threshold = if row.kind == row_kind::PLT_11 { 11 } else { 10 };
            let extra = if walk.pc & 15 >= threshold { 8 } else { 0 };
            walk.sp.wrapping_add(8 + extra)
        }
        _ => return Step::NoRow,
    };
    // Callers' frames are above ours; anything else is a corrupt walk.
    if cfa <= walk.sp {
        return Step::Broken;
    }
    let Some(return_address) = read_user(cfa.wrapping_sub(8)) else {
        return Step::Broken;
    };
    if row.rbp_offset_words != 0 {
        let saved = cfa.wrapping_add((row.rbp_offset_words as i64 * 8) as u64);
        match read_user(saved) {
            Some(bp) => walk.bp = bp,
            None => return Step::Broken,
        }
    }
    walk.sp = cfa;
    walk.pc = return_address;
    Step::Moved { dwarf: true }
}

/// Without a row: at the probed function's first instruction the return
/// address is at rsp; further up, the frame-pointer chain.
fn caller_by_frame_pointer(walk: &mut WalkState, at_entry: bool) -> Step {
    if at_entry {
        let Some(return_address) = read_user(walk.sp) else {
            return Step::Broken;
        };
        walk.sp = walk.sp.wrapping_add(8);
        walk.pc = return_address;
        return Step::Moved { dwarf: false };
    }
    if walk.bp == 0 || walk.bp < walk.sp {
        return Step::Broken;
    }
    let (Some(return_address), Some(bp)) = (read_user(walk.bp.wrapping_add(8)), read_user(walk.bp))
    else {
        return Step::Broken;
    };
    walk.sp = walk.bp.wrapping_add(16);
    walk.bp = bp;
    walk.pc = return_address;
    Step::Moved { dwarf: false }
}

/// The unwind row in effect at `pc`, if a tabled object maps it.
fn find_row(pc: u64) -> Option<UnwindRow> {
    let mapping = find_mapping(pc)?;
    if mapping.tabled == 0 {
        return None;
    }
    let vaddr = pc.wrapping_sub(mapping.bias);
    if vaddr > u32::MAX as u64 {
        return None;
    }
    let vaddr = vaddr as u32;
    let key = PageKey {
        object: mapping.object,
        page: vaddr >> PAGE_SHIFT,
    };
    // SAFETY: the value is copied out at once.
    let rows = unsafe { UNWIND_PAGES.get(key) }.copied()?;
    let (mut low, mut high) = (rows.first, rows.first.wrapping_add(rows.count));
    // Last row with row.pc <= vaddr; a page holds at most 2^17 rows. No
    // early exit: once high = low + 1 the steps change nothing, and fewer
    // branches keep the verifier's work linear.
    for _ in 0..17 {
        let middle = low + (high - low) / 2;
        let row = UNWIND_ROWS.get(middle)?;
        if row.pc <= vaddr {
            low = middle;
        } else {
            high = middle;
        }
    }
    let row = *UNWIND_ROWS.get(low)?;
    (row.pc <= vaddr).then_some(row)
}

/// The mapping containing `pc`: one longest-prefix lookup.
fn find_mapping(pc: u64) -> Option<MappingEntry> {
    let mapping = *UNWIND_MAPPINGS.get(Key::new(64, pc.to_be_bytes()))?;
    (mapping.start <= pc && pc < mapping.end).then_some(mapping)
}

/// The kernel's frame-pointer walk into the record (the comparison path).
fn kernel_frame_pointer_walk(ctx: &ProbeContext, pending: *mut Pending) {
    // SAFETY: the buffer is this thread's PENDING element's frame array,
    // MAX_FRAMES u64s long; bpf_get_stack writes at most `size` bytes.
    unsafe {
        let frames = &raw mut (*pending).stack.frames;
        let size = (MAX_FRAMES * 8) as u32;
        let written = bpf_get_stack(ctx.as_ptr(), frames.cast(), size, BPF_F_USER_STACK as u64);
        if written < 0 {
            (*pending).stack.flags |= stack_flags::BROKEN;
            return;
        }
        let len = (written as usize / 8).min(MAX_FRAMES);
        (*pending).stack.len = len as u32;
        let mut hash = FNV_OFFSET;
        for index in 0..MAX_FRAMES {
            if index >= len {
                break;
            }
            hash = (hash ^ (*pending).stack.frames[index]).wrapping_mul(FNV_PRIME);
        }
        (*pending).walk.hash = hash;
        (*pending).stack.flags |= if len == MAX_FRAMES {
            stack_flags::TRUNCATED
        } else {
            stack_flags::COMPLETE
        };
    }
}

/// Interns the walked stack and names the site after it.
fn finish_walk(pending: *mut Pending) {
    // SAFETY: this thread's own PENDING element (see on_alloc_enter); the
    // stack record is passed to the map by pointer, never copied to the
    // BPF stack.
    unsafe {
        let flags = (*pending).stack.flags;
        count(if flags & stack_flags::BROKEN != 0 {
            counter::STACKS_BROKEN
        } else if flags & stack_flags::TRUNCATED != 0 {
            counter::STACKS_TRUNCATED
        } else {
            counter::STACKS_COMPLETE
        });
        let mut id = (*pending).walk.hash;
        if id == NO_STACK {
            id -= 1;
        }
        let stack = &raw const (*pending).stack;
        match STACKS.insert(id, &*stack, BPF_NOEXIST as u64) {
            Ok(()) | Err(EEXIST) => (*pending).site.stack_id = id,
            Err(_) => {
                count(counter::STACK_ERRORS);
                (*pending).site.stack_id = NO_STACK;
            }
        }
    }
}

#[inline(always)]
fn read_user(address: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user copies from user memory and returns an
    // error instead of faulting on a bad address.
    unsafe { bpf_probe_read_user(address as *const u64) }.ok()
}

fn on_alloc_return(ctx: &RetProbeContext) {
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    let Some(pending) = PENDING.get_ptr(pid_tgid) else {
        count(counter::RETURNS_WITHOUT_ENTRY);
        return;
    };
    // SAFETY: this thread's own PENDING element; only the small fields are
    // copied (the record is too large for the BPF stack).
    let (args, entered_ns, site) =
        unsafe { ((*pending).args, (*pending).entered_ns, (*pending).site) };
    let _ = PENDING.remove(pid_tgid);
    let ret: u64 = ctx.ret();
    let Ok(id) = evaluate(&ALLOC_ID_LOC.load(), &args, ret, None) else {
        count(counter::ALLOC_ID_READ_ERRORS);
        debug!(ctx, "alloc id unreadable (ret {:x})", ret);
        return;
    };
    let size = evaluate_size(&SIZE_LOC.load(), &args, ret);
    let key = LiveKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        id,
    };
    forget_stale(&key);
    let buf = LiveBuf {
        size,
        allocated_ns: entered_ns,
        site,
    };
    if LIVE.insert(key, buf, BPF_ANY as u64).is_err() {
        count(counter::LIVE_MAP_FULL);
        return;
    }
    add_to_site(&site, 1, size as i64);
    count(counter::ALLOCATIONS);
}

fn on_release_enter(ctx: &ProbeContext) {
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    count(counter::RELEASE_CALLS);
    let args = entry_args(ctx);
    let cookie = attach_cookie(ctx) as u32;
    // SAFETY: the probe's own register snapshot.
    let regs = unsafe { &*ctx.regs };
    let id = RELEASE_LOCS
        .get(cookie)
        .ok_or(())
        .and_then(|loc| evaluate(loc, &args, 0, Some(regs)));
    let Ok(id) = id else {
        count(counter::RELEASE_ID_READ_ERRORS);
        return;
    };
    let key = LiveKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        id,
    };
    match take_live(&key) {
        Some(buf) => {
            add_to_site(&buf.site, -1, -(buf.size as i64));
            count(counter::RELEASES);
        }
        None => count(counter::UNKNOWN_RELEASES),
    }
}

/// An allocation returned an id that is still live: the release of the
/// previous buffer with this id was never seen. Drop the old record so the
/// site that owned it is not blamed forever, and count it.
#[inline(always)]
fn forget_stale(key: &LiveKey) {
    if let Some(old) = take_live(key) {
        add_to_site(&old.site, -1, -(old.size as i64));
        count(counter::REALLOCATED_IDS);
    }
}

/// Removes `key` from LIVE and returns its record, only if this call is the
/// one whose delete succeeded (two racing releases cannot both subtract).
#[inline(always)]
fn take_live(key: &LiveKey) -> Option<LiveBuf> {
    // SAFETY: LIVE is BPF_F_NO_PREALLOC, so an element found here stays
    // readable (RCU) for the rest of this program even if another CPU deletes
    // it; the value is copied before the delete.
    let buf = unsafe { LIVE.get(key) }.copied()?;
    LIVE.remove(key).ok().map(|()| buf)
}

#[inline(always)]
fn add_to_site(site: &SiteKey, buffers: i64, bytes: i64) {
    let stats = match SITES.get_ptr_mut(site) {
        Some(stats) => stats,
        None => {
            // A racing CPU may create it first; either way look it up again.
            let _ = SITES.insert(site, SiteStats::default(), BPF_NOEXIST as u64);
            match SITES.get_ptr_mut(site) {
                Some(stats) => stats,
                None => {
                    count(counter::SITE_MAP_FULL);
                    return;
                }
            }
        }
    };
    // SAFETY: `stats` points into a live SITES element (no-prealloc map, RCU
    // protected for the program's duration); the fields are 8-byte aligned
    // i64/u64 and every writer uses atomic adds, so concurrent updates from
    // other CPUs are not lost.
    unsafe {
        atomic_add(&raw mut (*stats).outstanding_buffers, buffers);
        atomic_add(&raw mut (*stats).outstanding_bytes, bytes);
        if buffers > 0 {
            atomic_add((&raw mut (*stats).total_allocations).cast(), buffers);
            atomic_add((&raw mut (*stats).total_bytes).cast(), bytes);
        }
    }
}

/// # Safety
/// `target` must be a valid, 8-byte aligned pointer into map memory.
#[inline(always)]
unsafe fn atomic_add(target: *mut i64, delta: i64) {
    // SAFETY: guaranteed by the caller. Unsigned fields are passed cast to
    // i64: two's-complement addition gives the same bits.
    unsafe { atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(target, delta) };
}

#[inline(always)]
fn entry_args(ctx: &ProbeContext) -> [u64; LOC_BASE_ARG_COUNT as usize] {
    [
        ctx.arg(0).unwrap_or(0),
        ctx.arg(1).unwrap_or(0),
        ctx.arg(2).unwrap_or(0),
        ctx.arg(3).unwrap_or(0),
        ctx.arg(4).unwrap_or(0),
        ctx.arg(5).unwrap_or(0),
    ]
}

#[inline(always)]
fn attach_cookie<C: aya_ebpf::EbpfContext>(ctx: &C) -> u64 {
    // SAFETY: the context pointer is the program's own context.
    unsafe { aya_ebpf::helpers::generated::bpf_get_attach_cookie(ctx.as_ptr()) }
}

#[inline(always)]
fn evaluate_size(loc: &Loc, args: &[u64; LOC_BASE_ARG_COUNT as usize], ret: u64) -> u64 {
    match evaluate(loc, args, ret, None) {
        Ok(size) => size,
        Err(()) => {
            count(counter::SIZE_READ_ERRORS);
            0
        }
    }
}

/// Evaluates a compiled location (see [`Loc`]).
#[inline(always)]
fn evaluate(
    loc: &Loc,
    args: &[u64; LOC_BASE_ARG_COUNT as usize],
    ret: u64,
    regs: Option<&pt_regs>,
) -> Result<u64, ()> {
    let mut value = match (loc.base, regs) {
        (LOC_BASE_RET, _) => ret,
        (LOC_BASE_CONST, _) => 0,
        (base, _) if base < LOC_BASE_ARG_COUNT => args[base as usize],
        (base, Some(regs)) if base >= LOC_BASE_REGISTER => {
            register(regs, base - LOC_BASE_REGISTER)?
        }
        _ => return Err(()),
    };
    let mut step = 0;
    while step < MAX_LOC_STEPS {
        if step >= loc.steps as usize {
            break;
        }
        let address = value.wrapping_add(loc.offsets[step] as u64);
        // SAFETY: bpf_probe_read_user copies from user memory and returns an
        // error instead of faulting on a bad address.
        value = unsafe { bpf_probe_read_user(address as *const u64) }.map_err(|_| ())?;
        step += 1;
    }
    Ok(value.wrapping_add(loc.final_offset as u64))
}

/// General register `number` (DWARF numbering) from a probe's registers.
///
/// Read with a helper rather than a field load: the verifier forbids
/// loads through a context pointer moved by a variable offset, which is
/// what a field chosen at run time compiles to.
#[inline(always)]
fn register(regs: &pt_regs, number: u8) -> Result<u64, ()> {
    // pt_regs slot (in u64s) of each DWARF register, 0 rax … 15 r15.
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
    let base = regs as *const pt_regs as *const u64;
    // SAFETY: `slot` is below pt_regs' 21 u64 fields, so the address is
    // inside the probe's register snapshot; the helper checks the read.
    unsafe { bpf_probe_read_kernel(base.add(slot)) }.map_err(|_| ())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
