//! eBPF programs of the pool observer.
//!
//! Programs that follow a buffer pool inside one process:
//! - `pool_alloc_enter` (uprobe at allocate's entry, or at a `call` of it
//!   when its first instruction cannot be probed): pushes the call on the
//!   thread's in-flight list (argument registers, return-address slot,
//!   timestamp), then walks the user stack (tail-calling
//!   `pool_walk_stack`) and interns it in `STACKS`;
//! - `pool_walk_stack` (never attached; reached by tail call): unwinds a
//!   few frames per call with the `.eh_frame`-derived tables userspace put
//!   in `UNWIND_*`, falling back to frame pointers where no row covers an
//!   address;
//! - `pool_alloc_return` (uretprobe on allocate) and `pool_alloc_return_site`
//!   (uprobe on the instruction after each call of allocate): pop the call
//!   whose return-address slot is just below the stack pointer, evaluate
//!   the buffer's id and size (`argN` = the registers saved at entry),
//!   record the buffer in `LIVE` and add it to its site in `SITES`;
//! - `pool_release_enter` (uprobe at release's entry, its inlined
//!   instances, or its call sites): removes the buffer from `LIVE` and
//!   subtracts it from its site;
//! - `pool_unwind_start` (uprobe on `_Unwind_RaiseException` and
//!   `_Unwind_ForcedUnwind`): a panic is about to unwind; every in-flight
//!   allocate whose return address a uretprobe replaced gets the original
//!   back, so the unwinder can pass through its frame (the target would
//!   abort otherwise);
//! - `pool_unwind_caught` (uprobe on Rust's `__rust_panic_cleanup`, where
//!   a panic is caught): the calls the panic unwound are counted and
//!   dropped; one caught inside allocate gets its uretprobe back;
//! - `pool_start_gate` (`observer run` only, uprobe at the program's entry
//!   point): stops the command once so userspace can place the unwind
//!   tables of every library before the program's own code runs;
//! - `pool_loads_changed` (uprobe on the dynamic linker's
//!   `_dl_debug_state`, which it calls before and after every change to
//!   the list of loaded objects, `dlopen` and `dlclose`): wakes userspace
//!   through `LOADS` so that a library just mapped gets its unwind table
//!   at once, not at the next tick;
//! - `pool_thread_exit`, `pool_new_task`, `pool_exec` (raw tracepoints):
//!   calls in flight in an exiting thread are counted, forks and execs of
//!   the target are counted for the report.
//!
//! Userspace only ever reads aggregates; nothing here sends per-event data
//! but the dynamic linker's rare announcements (a wake-up, no content).
//! The target's threads are told apart by their process ID: the kernel's
//! own, or, when the observer runs in a container's PID namespace, the one
//! in the target's namespace (`bpf_get_ns_current_pid_tgid`, Linux ≥ 5.7).
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

mod arch;

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{
        bpf_pidns_info, pt_regs, BPF_ANY, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_F_USER_STACK,
        BPF_NOEXIST,
    },
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_stack, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_write_user,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, ProgramArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
    EbpfContext as _, Global,
};
use aya_log_ebpf::debug;
use observer_ebpf::loc_eval::{self, field, NotEvaluable, ReadUser, Registers};
use observer_ebpf::walk_step::{
    caller_by_frame_pointer, caller_by_row, cfa_from_frame_record, search_rows, Memory, Step,
};
use observer_ebpf::{
    alloc_flags, alloc_kind, cached_flags, cached_step, counter, entry_kind, row_kind, seek_sp,
    stack_flags, test_op, walk_mode, walker, walker_slot, AllocLocs, CachedFrame, EntrySite,
    ExitLocs, InFlight, LiveBuf, LiveKey, Loc, MappingEntry, PageKey, PageRows, ReleaseLocs,
    ReturnTest, Row as _, SiteKey, SiteStats, StackRecord, ThreadState, UnwindRow, WalkCache,
    WalkState, CACHED_FRAMES, LOC_BASE_SAVED_COUNT, MAX_FRAMES, MAX_MAPPING_PREFIXES,
    MAX_NESTED_ALLOCS, NO_STACK, PAGE_SHIFT,
};

use arch::Frames;

/// The process being observed; every program ignores other processes.
/// Counted in the PID namespace below, or by the kernel's own IDs.
#[unsafe(no_mangle)]
static TARGET_TGID: Global<u32> = Global::new(0);
/// The target's PID namespace (device in the kernel's encoding, inode of
/// its `/proc/PID/ns/pid`) when the observer does not run in the initial
/// one; inode 0: compare the kernel's own IDs.
#[unsafe(no_mangle)]
static TARGET_PID_NS_DEV: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
static TARGET_PID_NS_INO: Global<u64> = Global::new(0);
/// [`walker`] constant: how stacks are walked.
#[unsafe(no_mangle)]
static WALKER: Global<u32> = Global::new(walker::DWARF);
/// 1 when an allocate function is an allocator's entry point
/// ([`alloc_flags::OUTERMOST`]): only then can a release be the
/// allocator's own, which costs a look at the thread's calls in flight,
/// and is a null id a release of nothing (`free(NULL)`; a pool's integer
/// key 0 is a key). Read-only, so without allocator entry points the
/// verifier drops both from every release.
#[unsafe(no_mangle)]
static ALLOCATOR_ENTRY_POINTS: Global<u32> = Global::new(0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Wake-ups for userspace: one record (no content) each time the
/// target's dynamic linker announces a change to its loaded objects. One
/// page: a record that finds it full is not needed, since userspace has
/// not yet read the ones before it and refreshes once for all of them.
#[map]
static LOADS: RingBuf = RingBuf::with_byte_size(4096, 0);

// Sizes below are defaults; userspace resizes LIVE (--max-live),
// UNWIND_ROWS (to the tables it built) and the per-probe arrays.

/// Per-thread in-flight calls and walk scratch; an entry lives as long as
/// its thread (removed by `pool_thread_exit`). Allocated as threads first
/// call allocate (Linux ≥ 6.1 allocates map elements safely in any
/// context): the kernel memory follows the threads that allocate, not the
/// table's capacity (preallocated, 2048 threads held 4.4 MB).
#[map]
static PENDING: HashMap<u64, ThreadState> = HashMap::with_max_entries(2048, BPF_F_NO_PREALLOC);

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
static UNWIND_PAGES: HashMap<PageKey, PageRows> =
    HashMap::with_max_entries(1 << 16, BPF_F_NO_PREALLOC);

/// The target's executable mappings by address prefix (big-endian).
#[map]
static UNWIND_MAPPINGS: LpmTrie<[u8; 8], MappingEntry> =
    LpmTrie::with_max_entries(MAX_MAPPING_PREFIXES, BPF_F_NO_PREALLOC);

/// Where each release probe finds the buffer's identity and its scope, by
/// attach cookie (one entry per probe; the loader sizes it). Per probe
/// because an inlined release keeps the values in registers its caller
/// chose.
#[map]
static RELEASE_LOCS: Array<ReleaseLocs> = Array::with_max_entries(1, 0);

/// What each allocate function's return evaluates (id, size, scope, which
/// returns allocate, a realloc's old buffer), by the attach cookie of its
/// entry probe (one entry per entry probe; the loader sizes it). Per probe
/// because a session probes several functions (malloc, calloc, realloc).
#[map]
static ALLOC_LOCS: Array<AllocLocs> = Array::with_max_entries(1, 0);

/// How each allocate entry probe is placed, by attach cookie.
#[map]
static ENTRY_SITES: Array<EntrySite> = Array::with_max_entries(1, 0);

/// Where each inlined allocate's exit probe finds the result, by attach
/// cookie (one entry per exit; the loader sizes it).
#[map]
static ALLOC_EXITS: Array<ExitLocs> = Array::with_max_entries(1, 0);

/// Slot 0: the address of the target's uretprobe trampoline, once
/// userspace has seen it in `/proc/PID/maps` (0 before).
#[map]
static TRAMPOLINE: Array<u64> = Array::with_max_entries(1, 0);

/// `walker_slot::STEP`: `pool_walk_stack`, which tail-calls itself;
/// `walker_slot::CACHED`: `pool_walk_cached`, which re-reads a cached walk.
#[map]
static WALKERS: ProgramArray = ProgramArray::with_max_entries(walker_slot::COUNT, 0);

/// Each thread's last complete walk ([`WalkCache`], 6 KiB): up to 512
/// threads, allocated as they first walk (like `PENDING`). Not LRU: an
/// element is removed only when its thread exits (`pool_thread_exit`), so
/// a walk never reads an element another thread is rewriting; threads
/// beyond the table walk uncached (counted).
#[map]
static WALK_CACHES: HashMap<u64, WalkCache> = HashMap::with_max_entries(512, BPF_F_NO_PREALLOC);

/// The frames of the walk in progress, innermost first, until they are
/// merged into the thread's cache. Per CPU: a walk runs start to end on
/// one CPU, without preemption (uprobe programs run with it disabled).
#[map]
static WALK_SCRATCH: PerCpuArray<WalkCache> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: the unwind tables' generation, bumped by userspace whenever it
/// changes them (a library mapped or unmapped); a cached walk from other
/// tables is not used.
#[map]
static UNWIND_GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// Bytes of stack copied at once when re-reading a cached walk's slots:
/// one helper call for the slots of many frames instead of one per slot.
const WINDOW_BYTES: u64 = 4096;

/// A copy of a stretch of the walked thread's stack.
#[repr(C)]
pub struct StackWindow {
    words: [u64; WINDOW_BYTES as usize / 8],
}

/// Per CPU, like the walk scratch.
#[map]
static STACK_WINDOW: PerCpuArray<StackWindow> = PerCpuArray::with_max_entries(1, 0);

/// Frames unwound per tail call. Eight frames per program keep the
/// verifier's work small (~45k instructions).
const FRAMES_PER_CALL: usize = 8;
/// Cached frames re-read per tail call: a re-read is one or two loads.
const FRAMES_REUSED_PER_CALL: usize = 16;
/// Tail calls per walk, within the kernel's limit of 33 (the entry
/// probe's first one and the last one, to `pool_walk_remember`, included). The walk stops at [`MAX_FRAMES`] first:
/// frames cost a stepping program (8 frames) at least as much as a
/// re-reading one (16), so at most 25 programs and the two switches
/// between them.
const MAX_TAIL_CALLS: u32 = 31;
/// `MAX_NESTED_ALLOCS - 1`, a mask that keeps frame indices in bounds in
/// a way every verifier tracks.
const NESTED_MASK: usize = MAX_NESTED_ALLOCS - 1;
const _: () = assert!(MAX_NESTED_ALLOCS.is_power_of_two());

/// `frames[index]`, or `None` past the end. The bound is checked on the
/// very register that addresses the slot: verifiers before 6.4 do not carry
/// a bound from one register to a copy spilled to the stack before the
/// check (6.1 refuses the plain `get_mut`).
#[inline(always)]
fn frame_slot(frames: &mut [u64; MAX_FRAMES], index: usize) -> Option<&mut u64> {
    let offset = core::hint::black_box(index.wrapping_mul(8));
    if offset > (MAX_FRAMES - 1) * 8 {
        return None;
    }
    // SAFETY: `offset` is a multiple of 8 below the array's size in bytes,
    // so the pointer is to one of its elements.
    Some(unsafe { &mut *frames.as_mut_ptr().cast::<u8>().add(offset).cast::<u64>() })
}

/// `index` masked into `frames`, in a way the optimizer cannot fold into
/// an earlier comparison: verifiers bound the register the mask is
/// applied to, not one a bound was checked on earlier.
#[inline(always)]
fn frame_index(index: usize) -> usize {
    core::hint::black_box(index) & NESTED_MASK
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const EEXIST: i32 = -17;
/// `_Unwind_Exception::private_2`: where the unwinder notes the frame that
/// will catch the exception, after its search phase: the stack pointer of
/// that frame (the CFA of the frame it called), in libgcc and in LLVM's
/// libunwind alike. A call made below it was unwound; one above it is
/// alive ([`arch::call_is_below`]: on x86-64 a call's slot below that stack
/// pointer, on arm64 a call identified by that stack pointer or one below).
const EXCEPTION_HANDLER_OFFSET: u64 = 24;
const CLONE_THREAD: u64 = 0x0001_0000;
const SIGSTOP: u32 = 19;

/// A cached state, as a call site's callee is recorded: a first frame,
/// its return address where it is at a function's first instruction.
const EMPTY_CACHED_FRAME: CachedFrame = CachedFrame {
    pc: 0,
    sp: 0,
    bp: 0,
    fp_offset: 0,
    ra_offset: arch::ENTRY_RA_OFFSET,
    step: cached_step::STEP,
    flags: 0,
    _pad: [0; 2],
};

/// An empty cache to create `WALK_CACHES` entries from (too large for
/// the BPF stack).
static EMPTY_CACHE: WalkCache = WalkCache {
    len: 0,
    _pad: 0,
    generation: 0,
    stack_id: NO_STACK,
    frames: [EMPTY_CACHED_FRAME; CACHED_FRAMES],
};

const EMPTY_IN_FLIGHT: InFlight = InFlight {
    entry_sp: 0,
    return_address: 0,
    trampoline: 0,
    entered_ns: 0,
    args: [0; LOC_BASE_SAVED_COUNT as usize],
    site: SiteKey {
        stack_id: 0,
        probe: 0,
        _pad: 0,
    },
    internal: 0,
    flags: 0,
};

/// A zeroed state to create `PENDING` entries from: it does not fit on
/// the 512-byte BPF stack.
static EMPTY_STATE: ThreadState = ThreadState {
    depth: 0,
    walking: 0,
    frames: [EMPTY_IN_FLIGHT; MAX_NESTED_ALLOCS],
    walk: WalkState {
        pc: 0,
        sp: 0,
        bp: 0,
        lr: 0,
        hash: 0,
        tail_calls: 0,
        done: 0,
        mapping: NO_MAPPING,
        generation: 0,
        mode: walk_mode::UNCACHED,
        cached_len: 0,
        cached_at: 0,
        joined_at: 0,
        joined_entry: 0,
        entries: 0,
        reused: 0,
        seek_bounds: [0; 2],
        _pad: 0,
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
    // SAFETY: the probe's own register snapshot.
    on_alloc_return(unsafe { &*ctx.regs });
    0
}

#[uprobe]
pub fn pool_alloc_return_site(ctx: ProbeContext) -> u32 {
    // SAFETY: the probe's own register snapshot.
    on_alloc_return(unsafe { &*ctx.regs });
    0
}

#[uprobe]
pub fn pool_alloc_inlined_exit(ctx: ProbeContext) -> u32 {
    on_alloc_inlined_exit(&ctx);
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

#[uprobe]
pub fn pool_walk_cached(ctx: ProbeContext) -> u32 {
    walk_cached(&ctx);
    0
}

#[uprobe]
pub fn pool_walk_remember(_ctx: ProbeContext) -> u32 {
    remember_thread_walk();
    0
}

#[uprobe]
pub fn pool_unwind_start(ctx: ProbeContext) -> u32 {
    on_unwind_start(&ctx);
    0
}

#[uprobe]
pub fn pool_unwind_caught(ctx: ProbeContext) -> u32 {
    on_unwind_caught(&ctx);
    0
}

#[uprobe]
pub fn pool_panic_caught(ctx: ProbeContext) -> u32 {
    // Without uretprobes no return address was ever replaced: only count
    // and drop the calls the panic unwound (no user-memory writes, so this
    // loads on locked-down kernels).
    if let Some(state) = thread_with_calls() {
        drop_unwound_calls(&ctx, state);
    }
    0
}

/// `observer run`: on the program's entry point, where the dynamic loader
/// has mapped every library it needs, stop the command so its unwind
/// tables can be placed before any of its own code runs. The observer
/// continues it at once (and detaches this probe first).
#[uprobe]
pub fn pool_start_gate(_ctx: ProbeContext) -> u32 {
    if target_thread().is_some() {
        // SAFETY: sends SIGSTOP to the current (target) process; the
        // helper has no memory-safety preconditions.
        unsafe { aya_ebpf::helpers::generated::bpf_send_signal(SIGSTOP) };
    }
    0
}

/// On the dynamic linker's `_dl_debug_state` (its `r_brk`): the target's
/// list of loaded objects is about to change or just changed; wake
/// userspace, which tables what is newly mapped. Needs Linux ≥ 5.8
/// (`bpf_ringbuf_output`).
#[uprobe]
pub fn pool_loads_changed(_ctx: ProbeContext) -> u32 {
    if target_thread().is_some() {
        // A full ring means userspace has unread wake-ups already.
        let _ = LOADS.output::<u64>(0, 0);
    }
    0
}

/// The probe floor (`cargo xtask bench`): attached where the observer's
/// probes would be, it costs what the kernel's trap costs and nothing of
/// ours.
#[uprobe]
pub fn pool_empty(_ctx: ProbeContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn pool_thread_exit(_ctx: RawTracePointContext) -> i32 {
    on_thread_exit();
    0
}

#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn pool_new_task(ctx: RawTracePointContext) -> i32 {
    // task_newtask(struct task_struct *task, unsigned long clone_flags)
    let flags: u64 = ctx.arg(1);
    if target_thread().is_some() && flags & CLONE_THREAD == 0 {
        count(counter::FORKS);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn pool_exec(_ctx: RawTracePointContext) -> i32 {
    if target_thread().is_some() {
        count(counter::EXECS);
    }
    0
}

/// Returns the current `pid_tgid` when the current process is the target.
#[inline(always)]
fn target_thread() -> Option<u64> {
    let pid_tgid = current_pid_tgid()?;
    ((pid_tgid >> 32) as u32 == TARGET_TGID.load()).then_some(pid_tgid)
}

/// The current thread's `tgid << 32 | pid`, counted as `TARGET_TGID` is:
/// by the kernel's own IDs, or in the target's PID namespace (`None` for
/// a thread of another namespace). The namespace globals are read-only,
/// so the verifier drops the branch not taken: with no namespace, this is
/// `bpf_get_current_pid_tgid` alone, as before namespaces were handled.
#[inline(always)]
fn current_pid_tgid() -> Option<u64> {
    let inode = TARGET_PID_NS_INO.load();
    if inode == 0 {
        return Some(bpf_get_current_pid_tgid());
    }
    let mut ids = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `ids` is a writable bpf_pidns_info on this program's stack,
    // and its size is the one passed.
    let failed = unsafe {
        aya_ebpf::helpers::generated::bpf_get_ns_current_pid_tgid(
            TARGET_PID_NS_DEV.load(),
            inode,
            &mut ids,
            core::mem::size_of::<bpf_pidns_info>() as u32,
        )
    } != 0;
    (!failed).then_some((u64::from(ids.tgid) << 32) | u64::from(ids.pid))
}

#[inline(always)]
fn count(index: u32) {
    count_by(index, 1);
}

#[inline(always)]
fn count_by(index: u32, delta: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so
        // it points at this CPU's u64 for `index`; programs do not migrate
        // CPUs while running, so nothing else writes it concurrently.
        unsafe { *slot += delta };
    }
}

/// This thread's state, created on its first allocate call.
#[inline(always)]
fn thread_state(pid_tgid: u64) -> Option<*mut ThreadState> {
    if let Some(state) = PENDING.get_ptr_mut(pid_tgid) {
        return Some(state);
    }
    // A full table refuses the insert; the lookup below then fails too.
    let _ = PENDING.insert(pid_tgid, &EMPTY_STATE, BPF_NOEXIST as u64);
    PENDING.get_ptr_mut(pid_tgid)
}

fn on_alloc_enter(ctx: &ProbeContext) {
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    count(counter::ALLOC_CALLS);
    // SAFETY: the probe's own register snapshot.
    let regs = unsafe { &*ctx.regs };
    let cookie = attach_cookie(ctx) as u32;
    let site = ENTRY_SITES.get(cookie).copied().unwrap_or_default();
    let at_call = site.kind == entry_kind::CALL_SITE;
    // At a call site the callee has not been entered: the call will be
    // identified by its pending slot, its return address is the
    // instruction after the call.
    let (entry_sp, return_address) = if at_call {
        (
            arch::pending_call_slot(regs),
            arch::pc(regs).wrapping_add(u64::from(site.call_length)),
        )
    } else if site.kind == entry_kind::INLINED {
        // No call, no return address: the slot a call would have used,
        // which the exit probe computes from the same stack pointer.
        (arch::pending_call_slot(regs), 0)
    } else {
        (
            arch::entry_call_slot(regs),
            arch::return_address_at_entry(regs),
        )
    };
    let Some(state) = thread_state(pid_tgid) else {
        count(counter::THREADS_FULL);
        return;
    };
    // SAFETY: `state` is this thread's own PENDING element, which only
    // this thread's probes touch, and the map keeps it in place.
    unsafe {
        // A new call at or above an older one's slot means that one's
        // frame is gone; but an allocator entry point that jumps to
        // another (glibc's realloc(NULL, n) tail-calls malloc) shares its
        // slot, and both return probes fire there, the inner one first.
        if !tail_called_by_allocator(state, entry_sp) {
            drop_gone_calls(state, entry_sp, true);
        }
        let depth = (*state).depth as usize;
        if depth >= MAX_NESTED_ALLOCS {
            count(counter::NESTED_TOO_DEEP);
            return;
        }
        // Inside an allocator entry point (malloc called by realloc) the
        // call is the allocator's own: its return is only taken off, so
        // its stack is not walked.
        let internal = depth > 0
            && (*state).frames[frame_index(depth - 1)].flags & alloc_flags::OUTERMOST != 0;
        let index = frame_index(depth);
        let frame = &mut (*state).frames[index];
        frame.entry_sp = entry_sp;
        frame.return_address = return_address;
        frame.trampoline = 0;
        frame.entered_ns = bpf_ktime_get_ns();
        frame.args = entry_args(ctx);
        frame.site = SiteKey {
            stack_id: NO_STACK,
            probe: cookie,
            _pad: 0,
        };
        frame.internal = u32::from(internal);
        frame.flags = ALLOC_LOCS.get(cookie).map_or(0, |locs| field(&locs.flags));
        (*state).depth = depth as u32 + 1;
        if internal {
            return;
        }
        (*state).walking = index as u32;
    }
    // SAFETY: as above.
    unsafe {
        start_walk(
            state,
            regs,
            at_call.then(|| arch::pc(regs).wrapping_add(site.callee_delta as u64)),
            return_address,
        )
    };
    if WALKER.load() == walker::FRAME_POINTERS {
        kernel_frame_pointer_walk(ctx, state, at_call, return_address);
    } else {
        // SAFETY: as above; the cache is this thread's own element.
        unsafe {
            if let Some(cache) = use_cache(state, pid_tgid) {
                if try_join(&mut *state, &*cache) {
                    // SAFETY: WALKERS holds programs of the same type; on
                    // success control does not come back.
                    WALKERS.tail_call(ctx, walker_slot::CACHED);
                    (*state).walk.mode = walk_mode::UNCACHED;
                }
            }
        }
        // SAFETY: as above.
        unsafe { WALKERS.tail_call(ctx, walker_slot::STEP) };
        // SAFETY: as above; only reached if the tail call failed.
        unsafe { (*state).stack.flags |= stack_flags::BROKEN };
    }
    let _ = finish_walk(ctx, state, pid_tgid);
}

/// Lets the walk join the thread's cached walk if it was walked with the
/// same unwind tables (and returns it); creates the thread's cache on its
/// first walk.
///
/// # Safety
/// `state` must be this thread's own PENDING element.
#[inline(always)]
unsafe fn use_cache(state: *mut ThreadState, pid_tgid: u64) -> Option<*const WalkCache> {
    let cache = match WALK_CACHES.get_ptr(pid_tgid) {
        Some(cache) => cache,
        None => {
            // A full table refuses the insert; the lookup below then fails.
            let _ = WALK_CACHES.insert(pid_tgid, &EMPTY_CACHE, BPF_NOEXIST as u64);
            match WALK_CACHES.get_ptr(pid_tgid) {
                Some(cache) => cache,
                None => {
                    count(counter::WALK_CACHES_FULL);
                    return None;
                }
            }
        }
    };
    // SAFETY: this thread's own WALK_CACHES element (only its probes
    // touch it) and PENDING element (guaranteed by the caller).
    unsafe {
        let len = (*cache).len;
        if len > 0 && (*cache).generation == (*state).walk.generation {
            (*state).walk.mode = walk_mode::SEEKING;
            (*state).walk.cached_len = len;
            (*state).walk.cached_at = len;
            return Some(cache);
        }
    }
    None
}

/// True when the innermost call in flight is an allocator entry point
/// ([`alloc_flags::OUTERMOST`]) whose return-address slot is `entry_sp`:
/// the new call is its tail call.
///
/// # Safety
/// `state` must be this thread's own PENDING element.
#[inline(always)]
unsafe fn tail_called_by_allocator(state: *mut ThreadState, entry_sp: u64) -> bool {
    // SAFETY: guaranteed by the caller; the index is masked.
    unsafe {
        let depth = (*state).depth as usize;
        if depth == 0 {
            return false;
        }
        let top = &(*state).frames[frame_index(depth - 1)];
        top.flags & alloc_flags::OUTERMOST != 0 && top.entry_sp == entry_sp
    }
}

/// Resets the walk scratch to start at the probe. At a call site the
/// callee is recorded as frame 0 and the walk goes on from the return
/// address, as if the call had happened.
///
/// # Safety
/// `state` must be this thread's own PENDING element.
#[inline(always)]
unsafe fn start_walk(
    state: *mut ThreadState,
    regs: &pt_regs,
    callee: Option<u64>,
    return_address: u64,
) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*state).stack.len = 0;
        (*state).stack.flags = 0;
        (*state).walk = WalkState {
            pc: arch::pc(regs),
            sp: arch::sp(regs),
            bp: arch::fp(regs),
            lr: arch::link_register(regs).unwrap_or(0),
            hash: FNV_OFFSET,
            tail_calls: 0,
            done: 0,
            mapping: NO_MAPPING,
            generation: UNWIND_GENERATION.get(0).copied().unwrap_or(0),
            mode: walk_mode::UNCACHED,
            cached_len: 0,
            cached_at: 0,
            joined_at: 0,
            joined_entry: 0,
            entries: 0,
            reused: 0,
            seek_bounds: [0; 2],
            _pad: 0,
        };
        if let Some(callee) = callee {
            (*state).stack.frames[0] = callee;
            (*state).stack.len = 1;
            (*state).walk.hash = (FNV_OFFSET ^ callee).wrapping_mul(FNV_PRIME);
            (*state).walk.pc = return_address;
            // The callee's place in the walk's cache: a first frame, never
            // joined, at the slot the call will push.
            if let Some(scratch) = WALK_SCRATCH.get_ptr_mut(0) {
                note_entry(
                    &mut *scratch,
                    0,
                    &CachedFrame {
                        pc: callee,
                        sp: arch::pending_call_slot(regs),
                        bp: arch::fp(regs),
                        flags: cached_flags::FIRST,
                        ..EMPTY_CACHED_FRAME
                    },
                );
                (*state).walk.entries = 1;
            }
        }
    }
}

/// Drops the in-flight calls whose frames are gone: those whose slot is
/// below `boundary` (or at it, when `inclusive`). A call a panic unwound
/// (its return address was put back) is counted as unwound; any other as
/// a call whose return was never seen.
///
/// # Safety
/// `state` must be this thread's own PENDING element.
#[inline(always)]
unsafe fn drop_gone_calls(state: *mut ThreadState, boundary: u64, inclusive: bool) {
    for _ in 0..MAX_NESTED_ALLOCS {
        // SAFETY: guaranteed by the caller.
        let depth = unsafe { (*state).depth } as usize;
        if depth == 0 {
            break;
        }
        // SAFETY: as above; the index is masked into the array.
        let top = unsafe { &(*state).frames[frame_index(depth - 1)] };
        let gone = if inclusive {
            top.entry_sp <= boundary
        } else {
            top.entry_sp < boundary
        };
        if !gone {
            break;
        }
        count(if top.trampoline != 0 {
            counter::ALLOC_UNWOUND
        } else {
            counter::ENTRIES_WITHOUT_RETURN
        });
        // SAFETY: as above.
        unsafe { (*state).depth = depth as u32 - 1 };
    }
}

/// Unwinds up to [`FRAMES_PER_CALL`] frames, then tail-calls itself until
/// the stack ends, or finishes it. Before each frame it looks for the
/// same state in the thread's cached walk; where it finds it, the rest is
/// `pool_walk_cached`'s.
fn walk_stack(ctx: &ProbeContext) {
    // The key the entry probe used (it only tail-calls for the target).
    let Some(pid_tgid) = current_pid_tgid() else {
        return;
    };
    let Some(state) = PENDING.get_ptr_mut(pid_tgid) else {
        return;
    };
    let Some(scratch) = WALK_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this thread's own PENDING element (see on_alloc_enter).
    let cache = if unsafe { (*state).walk.mode } == walk_mode::SEEKING {
        WALK_CACHES.get_ptr(pid_tgid)
    } else {
        None
    };
    for _ in 0..FRAMES_PER_CALL {
        // SAFETY: as above.
        if unsafe { (*state).walk.done } != 0 {
            break;
        }
        if let Some(cache) = cache {
            // SAFETY: as above; the cache is this thread's own element.
            if unsafe { try_join(&mut *state, &*cache) } {
                // SAFETY: WALKERS holds programs of the same type; on
                // success control does not come back.
                unsafe {
                    (*state).walk.tail_calls += 1;
                    WALKERS.tail_call(ctx, walker_slot::CACHED);
                    // Only reached if the tail call failed: step on.
                    (*state).walk.mode = walk_mode::UNCACHED;
                }
            }
        }
        // SAFETY: as above; the scratch is this CPU's.
        unsafe { unwind_one(&mut *state, &mut *scratch) };
    }
    // SAFETY: as above.
    unsafe {
        if (*state).walk.done == 0 && (*state).walk.tail_calls < MAX_TAIL_CALLS {
            (*state).walk.tail_calls += 1;
            WALKERS.tail_call(ctx, walker_slot::STEP);
        }
        if (*state).walk.done == 0 {
            (*state).stack.flags |= stack_flags::TRUNCATED;
        }
    }
    let _ = finish_walk(ctx, state, pid_tgid);
}

/// True (and the walk switched to re-reading) when the walk stands where
/// its thread's cached walk stood, below where it last left it, and the
/// walk could still be finished by stepping if a slot differs: a walk
/// never runs out of tail calls before [`MAX_FRAMES`] because it joined.
fn try_join(state: &mut ThreadState, cache: &WalkCache) -> bool {
    let walk = &mut state.walk;
    if walk.mode != walk_mode::SEEKING {
        return false;
    }
    let steps_left = (MAX_FRAMES as u32).saturating_sub(state.stack.len);
    let programs_left = steps_left.div_ceil(FRAMES_PER_CALL as u32);
    if walk.tail_calls + 2 + programs_left > MAX_TAIL_CALLS {
        return false;
    }
    let Some(at) = seek_sp(walk.cached_len, walk.sp, &mut walk.seek_bounds, |index| {
        cached_entry(&cache.frames, index)
    }) else {
        return false;
    };
    let Some(entry) = cached_entry(&cache.frames, at) else {
        return false;
    };
    if at >= walk.cached_at || !entry.joins(walk.pc, walk.sp, walk.bp, state.stack.len == 0) {
        return false;
    }
    walk.mode = walk_mode::VERIFYING;
    walk.joined_at = state.stack.len;
    walk.joined_entry = at;
    walk.cached_at = at;
    true
}

/// Re-reads the slots of the thread's cached walk from where the walk
/// joined it, up to [`FRAMES_REUSED_PER_CALL`] frames per call; hands the
/// walk back to `pool_walk_stack` at the first slot that changed.
fn walk_cached(ctx: &ProbeContext) {
    let Some(pid_tgid) = current_pid_tgid() else {
        return;
    };
    let Some(state) = PENDING.get_ptr_mut(pid_tgid) else {
        return;
    };
    let Some(scratch) = WALK_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let Some(copy) = STACK_WINDOW.get_ptr_mut(0) else {
        return;
    };
    match WALK_CACHES.get_ptr(pid_tgid) {
        Some(cache) => {
            // The slots this call's frames read are between the walk's
            // stack pointer and that of the last frame it can reach.
            // SAFETY: this thread's own PENDING and WALK_CACHES elements;
            // the copy is this CPU's.
            let window = unsafe {
                let last = (*state)
                    .walk
                    .cached_at
                    .saturating_sub(FRAMES_REUSED_PER_CALL as u32);
                let end = cached_entry(&(*cache).frames, last).map_or(0, |last| last.sp);
                WindowAt::fill(&mut *copy, (*state).walk.sp, end)
            };
            let learned = TRAMPOLINE.get(0).copied().unwrap_or(0);
            for _ in 0..FRAMES_REUSED_PER_CALL {
                // SAFETY: as above; the scratch is this CPU's.
                let more = unsafe {
                    reuse_one(
                        &mut *state,
                        &*cache,
                        &mut *scratch,
                        &window,
                        &*copy,
                        learned,
                    )
                };
                if !more {
                    break;
                }
            }
        }
        // SAFETY: as above.
        None => unsafe { (*state).walk.mode = walk_mode::UNCACHED },
    }
    // SAFETY: as above.
    unsafe {
        if (*state).walk.done == 0 && (*state).walk.tail_calls < MAX_TAIL_CALLS {
            (*state).walk.tail_calls += 1;
            let slot = if (*state).walk.mode == walk_mode::VERIFYING {
                walker_slot::CACHED
            } else {
                walker_slot::STEP
            };
            WALKERS.tail_call(ctx, slot);
        }
        if (*state).walk.done == 0 {
            (*state).stack.flags |= stack_flags::TRUNCATED;
        }
    }
    let _ = finish_walk(ctx, state, pid_tgid);
}

/// Where [`STACK_WINDOW`]'s copy came from: `[start, start + size)` of the
/// thread's stack (size 0: no copy).
struct WindowAt {
    start: u64,
    size: u64,
}

impl WindowAt {
    /// Copies `[from, end)`, at most [`WINDOW_BYTES`] of it, in one read.
    /// A range that is not all mapped gives no copy: the slots are then
    /// read one by one.
    #[inline(always)]
    fn fill(copy: &mut StackWindow, from: u64, end: u64) -> WindowAt {
        let size = core::hint::black_box(end.saturating_sub(from).min(WINDOW_BYTES));
        if size == 0 || size > WINDOW_BYTES {
            return WindowAt { start: 0, size: 0 };
        }
        // SAFETY: the helper writes at most `size` bytes, within the copy,
        // and fails instead of faulting.
        let read = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(
                copy.words.as_mut_ptr().cast(),
                size as u32,
                from as *const core::ffi::c_void,
            )
        };
        WindowAt {
            start: from,
            size: if read == 0 { size } else { 0 },
        }
    }

    /// The word at `address`: from the copy if it holds it, else read on
    /// its own.
    #[inline(always)]
    fn read(&self, copy: &StackWindow, address: u64) -> Option<u64> {
        let offset = address.wrapping_sub(self.start);
        if offset >= self.size || self.size - offset < 8 || offset & 7 != 0 {
            return read_user(address);
        }
        // Masked on the register that addresses the word (see frame_slot).
        let offset = core::hint::black_box(offset) & (WINDOW_BYTES - 8);
        // SAFETY: an 8-aligned offset inside the copy.
        Some(unsafe {
            *copy
                .words
                .as_ptr()
                .cast::<u8>()
                .add(offset as usize)
                .cast::<u64>()
        })
    }
}

/// Takes the cached frame the walk stands on if the slots its step read
/// still hold what they held, and moves the walk to its caller. False
/// when the walk is done or must step on by itself (mode `UNCACHED`).
/// Slots are read from `window`'s copy where it holds them; `learned` is
/// the trampoline's address (`TRAMPOLINE`'s slot 0).
fn reuse_one(
    state: &mut ThreadState,
    cache: &WalkCache,
    scratch: &mut WalkCache,
    window: &WindowAt,
    copy: &StackWindow,
    learned: u64,
) -> bool {
    let walk = &mut state.walk;
    let stack = &mut state.stack;
    let at = walk.cached_at;
    let Some(entry) = cached_entry(&cache.frames, at) else {
        walk.mode = walk_mode::UNCACHED;
        return false;
    };
    let caller = match at.checked_sub(1) {
        Some(below) => cached_entry(&cache.frames, below),
        None => None,
    };
    let ends = entry.step == cached_step::END;
    if !ends {
        let same = caller.is_some_and(|caller| {
            entry.still_steps_to(
                caller,
                |slot| window.read(copy, slot),
                // A trampoline: the walk would look up the call it replaced
                // (a nested allocate in flight); rare, so stepped instead.
                |_slot, value| {
                    let value = arch::strip_return_address(value);
                    (!is_trampoline_of(value, learned)).then_some(value)
                },
            )
        });
        if !same {
            // Step on from here; the walk may join again further down
            // (callers that are the same again, such as a runtime's).
            count(counter::WALK_CACHE_MISMATCHES);
            walk.mode = walk_mode::SEEKING;
            return false;
        }
    }
    let len = stack.len as usize;
    let Some(slot) = frame_slot(&mut stack.frames, len) else {
        stack.flags |= stack_flags::TRUNCATED;
        walk.done = 1;
        return false;
    };
    *slot = entry.pc;
    stack.len += 1;
    walk.hash = (walk.hash ^ entry.pc).wrapping_mul(FNV_PRIME);
    walk.reused += 1;
    if entry.flags & cached_flags::BY_FRAME_POINTER != 0 {
        stack.flags |= stack_flags::USED_FRAME_POINTERS;
    }
    // The walk's own state (its bp may differ where nothing uses it), in
    // case a later slot differs and the walk steps on from its scratch.
    if let Some(own) = cached_entry_mut(&mut scratch.frames, len) {
        *own = *entry;
        own.bp = walk.bp;
    }
    walk.entries = len as u32 + 1;
    let Some(caller) = caller.filter(|_| !ends) else {
        stack.flags |= stack_flags::COMPLETE;
        walk.done = 1;
        walk.mode = walk_mode::REUSED;
        return false;
    };
    if entry.fp_offset != 0 {
        walk.bp = caller.bp;
    }
    walk.sp = caller.sp;
    walk.pc = caller.pc;
    walk.cached_at = at - 1;
    if caller.step == cached_step::TERMINAL {
        let mut own = *caller;
        own.bp = walk.bp;
        note_entry(scratch, len + 1, &own);
        walk.entries = len as u32 + 2;
        stack.flags |= stack_flags::COMPLETE;
        walk.done = 1;
        walk.mode = walk_mode::REUSED;
        return false;
    }
    true
}

/// Entry `index` of a cache's frames, if in bounds. The bound is checked
/// on the register that addresses the entry (see [`frame_slot`]).
#[inline(always)]
fn cached_entry(frames: &[CachedFrame; CACHED_FRAMES], index: u32) -> Option<&CachedFrame> {
    let offset = core::hint::black_box((index as usize).wrapping_mul(size_of::<CachedFrame>()));
    if offset > (CACHED_FRAMES - 1) * size_of::<CachedFrame>() {
        return None;
    }
    // SAFETY: `offset` is a multiple of the element size within the array.
    Some(unsafe {
        &*frames
            .as_ptr()
            .cast::<u8>()
            .add(offset)
            .cast::<CachedFrame>()
    })
}

/// [`cached_entry`], writable.
#[inline(always)]
fn cached_entry_mut(
    frames: &mut [CachedFrame; CACHED_FRAMES],
    index: usize,
) -> Option<&mut CachedFrame> {
    let offset = core::hint::black_box(index.wrapping_mul(size_of::<CachedFrame>()));
    if offset > (CACHED_FRAMES - 1) * size_of::<CachedFrame>() {
        return None;
    }
    // SAFETY: as in `cached_entry`.
    Some(unsafe {
        &mut *frames
            .as_mut_ptr()
            .cast::<u8>()
            .add(offset)
            .cast::<CachedFrame>()
    })
}

/// Writes the walk's entry for frame `index` (or its terminal state).
#[inline(always)]
fn note_entry(scratch: &mut WalkCache, index: usize, entry: &CachedFrame) {
    if let Some(slot) = cached_entry_mut(&mut scratch.frames, index) {
        *slot = *entry;
    }
}

/// Records the frame at `walk.pc`, then moves `walk` to the caller. Its
/// cache entry is written to the scratch field by field as soon as each is
/// known (volatile stores): the verifier then forgets the values, and the
/// paths that differ only in them merge.
fn unwind_one(state: &mut ThreadState, scratch: &mut WalkCache) {
    let frames = &state.frames;
    let walk = &mut state.walk;
    let stack = &mut state.stack;
    let len = stack.len as usize;
    let (Some(slot), Some(entry)) = (
        frame_slot(&mut stack.frames, len),
        cached_entry_mut(&mut scratch.frames, len),
    ) else {
        stack.flags |= stack_flags::TRUNCATED;
        walk.done = 1;
        return;
    };
    *slot = walk.pc;
    stack.len += 1;
    walk.hash = (walk.hash ^ walk.pc).wrapping_mul(FNV_PRIME);
    put(&mut entry.pc, walk.pc);
    put(&mut entry.sp, walk.sp);
    put(&mut entry.bp, walk.bp);
    put(&mut entry.step, cached_step::STEP);
    put(&mut entry.fp_offset, 0);
    put(&mut entry.ra_offset, arch::ENTRY_RA_OFFSET);
    put(
        &mut entry.flags,
        if len == 0 { cached_flags::FIRST } else { 0 },
    );
    // A return address points after the call; look up the call itself.
    let lookup = if len == 0 {
        walk.pc
    } else {
        walk.pc.wrapping_sub(1)
    };
    let outcome = match find_row(lookup, &mut walk.mapping) {
        Some(row) => {
            if row.kind() != row_kind::END {
                put(&mut entry.fp_offset, row.fp_offset());
                put(&mut entry.ra_offset, row.ra_offset());
            }
            if row.kind() == row_kind::CFA_FP || cfa_from_frame_record::<Frames, _>(walk, &row) {
                let flags = entry.flags | cached_flags::STEP_USES_BP;
                put(&mut entry.flags, flags);
            }
            caller_by_row::<Frames, _, _>(walk, &row, len == 0, frames, &TargetMemory)
        }
        None => Step::NoRow,
    };
    let outcome = match outcome {
        Step::NoRow => {
            stack.flags |= stack_flags::USED_FRAME_POINTERS;
            // At the first frame the return address is where a call left
            // it and the frame pointer is untouched; further up, the chain
            // reads both from the frame record at bp.
            let chain = len != 0;
            let (fp_offset, ra_offset) = if chain {
                arch::CHAIN_STEP_OFFSETS
            } else {
                (0, arch::ENTRY_RA_OFFSET)
            };
            put(&mut entry.fp_offset, fp_offset);
            put(&mut entry.ra_offset, ra_offset);
            let flags = (entry.flags & cached_flags::FIRST)
                | cached_flags::BY_FRAME_POINTER
                | if chain { cached_flags::STEP_USES_BP } else { 0 };
            put(&mut entry.flags, flags);
            caller_by_frame_pointer::<Frames, _>(walk, len == 0, frames, &TargetMemory)
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
            walk.entries = len as u32 + 1;
            if walk.pc == 0 {
                note_entry(
                    scratch,
                    len + 1,
                    &CachedFrame {
                        pc: 0,
                        sp: walk.sp,
                        bp: walk.bp,
                        step: cached_step::TERMINAL,
                        ..EMPTY_CACHED_FRAME
                    },
                );
                walk.entries = len as u32 + 2;
                stack.flags |= stack_flags::COMPLETE;
                walk.done = 1;
            }
        }
        Step::End => {
            put(&mut entry.step, cached_step::END);
            let flags = entry.flags & cached_flags::FIRST;
            put(&mut entry.flags, flags);
            walk.entries = len as u32 + 1;
            stack.flags |= stack_flags::COMPLETE;
            walk.done = 1;
        }
        Step::Broken | Step::NoRow => {
            stack.flags |= stack_flags::BROKEN;
            walk.done = 1;
        }
    }
}

/// Stores `value` at once (see [`unwind_one`]).
#[inline(always)]
fn put<T>(field: &mut T, value: T) {
    // SAFETY: a mutable reference is valid for writes.
    unsafe { core::ptr::write_volatile(field, value) }
}

/// The target's memory and trampoline, as the walker's steps read them.
struct TargetMemory;

impl ReadUser for TargetMemory {
    #[inline(always)]
    fn read_u64(&self, address: u64) -> Option<u64> {
        read_user(address)
    }
}

impl Memory for TargetMemory {
    #[inline(always)]
    fn is_trampoline(&self, value: u64) -> bool {
        is_trampoline(value)
    }
}

/// True for the address of the kernel's uretprobe trampoline in this
/// process: what a hijacked return-address slot holds.
#[inline(always)]
fn is_trampoline(value: u64) -> bool {
    is_trampoline_of(value, TRAMPOLINE.get(0).copied().unwrap_or(0))
}

/// [`is_trampoline`], with `TRAMPOLINE`'s slot 0 read by the caller.
#[inline(always)]
fn is_trampoline_of(value: u64, learned: u64) -> bool {
    (learned != 0 && value == learned)
        || value == arch::TRAMPOLINE_HINTS[0]
        || value == arch::TRAMPOLINE_HINTS[1]
}

/// A mapping no address is in.
const NO_MAPPING: MappingEntry = MappingEntry {
    start: 0,
    end: 0,
    bias: 0,
    object: 0,
    tabled: 0,
};

/// The unwind row in effect at `pc`, if a tabled object maps it;
/// `previous` is the mapping the walk's last lookup found (updated).
fn find_row(pc: u64, previous: &mut MappingEntry) -> Option<UnwindRow> {
    if !(previous.start <= pc && pc < previous.end) {
        *previous = find_mapping(pc)?;
    }
    let mapping = *previous;
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
    search_rows(rows.first, rows.count, vaddr, |index| {
        UNWIND_ROWS.get(index).copied()
    })
}

/// The mapping containing `pc`: one longest-prefix lookup.
fn find_mapping(pc: u64) -> Option<MappingEntry> {
    let mapping = *UNWIND_MAPPINGS.get(Key::new(64, pc.to_be_bytes()))?;
    (mapping.start <= pc && pc < mapping.end).then_some(mapping)
}

/// The kernel's frame-pointer walk into the record (the comparison path).
/// At a call site the callee goes first and the call is reported by its
/// return address, as the unwinder does.
fn kernel_frame_pointer_walk(
    ctx: &ProbeContext,
    state: *mut ThreadState,
    at_call: bool,
    return_address: u64,
) {
    // SAFETY: the buffer is this thread's PENDING element's frame array,
    // MAX_FRAMES u64s long; bpf_get_stack writes at most `size` bytes, to
    // the part after the callee's slot when there is one.
    unsafe {
        let skip = if at_call { 1 } else { 0 };
        let frames = (&raw mut (*state).stack.frames).cast::<u64>().add(skip);
        let size = ((MAX_FRAMES - skip) * 8) as u32;
        let written = bpf_get_stack(ctx.as_ptr(), frames.cast(), size, BPF_F_USER_STACK as u64);
        if written < 0 {
            (*state).stack.flags |= stack_flags::BROKEN;
            return;
        }
        let len = (written as usize / 8 + skip).min(MAX_FRAMES);
        if at_call && len > 1 {
            (*state).stack.frames[1] = return_address;
        }
        (*state).stack.len = len as u32;
        let mut hash = FNV_OFFSET;
        for index in 0..MAX_FRAMES {
            if index >= len {
                break;
            }
            hash = (hash ^ (*state).stack.frames[index]).wrapping_mul(FNV_PRIME);
        }
        (*state).walk.hash = hash;
        (*state).stack.flags |= if len == MAX_FRAMES {
            stack_flags::TRUNCATED
        } else {
            stack_flags::COMPLETE
        };
    }
}

/// Interns the walked stack and names the walked call's site after it;
/// a complete walk becomes the thread's cached walk. Returns 0: a
/// function that makes a tail call must return an integer (Linux 6.1's
/// verifier refuses it otherwise).
fn finish_walk(ctx: &ProbeContext, state: *mut ThreadState, pid_tgid: u64) -> u32 {
    // SAFETY: this thread's own PENDING element (see on_alloc_enter); the
    // stack record is passed to the map by pointer, never copied to the
    // BPF stack; the frame index is masked into the array.
    unsafe {
        let flags = (*state).stack.flags;
        count(if flags & stack_flags::BROKEN != 0 {
            counter::STACKS_BROKEN
        } else if flags & stack_flags::TRUNCATED != 0 {
            counter::STACKS_TRUNCATED
        } else {
            counter::STACKS_COMPLETE
        });
        let mut id = (*state).walk.hash;
        if id == NO_STACK {
            id -= 1;
        }
        let cache = if WALKER.load() == walker::DWARF {
            WALK_CACHES.get_ptr_mut(pid_tgid)
        } else {
            None
        };
        let stack = &raw const (*state).stack;
        let index = frame_index((*state).walking as usize);
        // The thread's last stack again (a loop, a server's request): it
        // is in STACKS already, which nothing removes from.
        let interned = cache.is_some_and(|cache| (*cache).stack_id == id);
        (*state).frames[index].site.stack_id = if interned {
            id
        } else {
            match STACKS.insert(id, &*stack, BPF_NOEXIST as u64) {
                Ok(()) | Err(EEXIST) => {
                    if let Some(cache) = cache {
                        (*cache).stack_id = id;
                    }
                    id
                }
                Err(_) => {
                    count(counter::STACK_ERRORS);
                    NO_STACK
                }
            }
        };
        let reused = (*state).walk.reused;
        if reused > 0 {
            count_by(counter::FRAMES_REUSED, u64::from(reused));
        }
        if let Some(cache) = cache {
            let walk = &(*state).walk;
            let whole = walk.mode == walk_mode::REUSED
                && walk.joined_at == 0
                && walk.joined_entry + 1 == (*cache).len;
            let complete =
                flags & stack_flags::COMPLETE != 0 && flags & !stack_flags::COMPLETE_WALK == 0;
            // A walk that was the cached one whole leaves it as it is.
            // The copy is a program of its own: its loop is verified once,
            // not in every program that can end a walk. If the tail call
            // fails, the cache stays the older walk (still exact).
            if complete && !whole {
                WALKERS.tail_call(ctx, walker_slot::REMEMBER);
            }
        }
    }
    0
}

/// `pool_walk_remember`: the current thread's walk, just finished and
/// complete, becomes its cached walk.
fn remember_thread_walk() {
    let Some(pid_tgid) = current_pid_tgid() else {
        return;
    };
    let (Some(state), Some(cache)) = (PENDING.get_ptr(pid_tgid), WALK_CACHES.get_ptr_mut(pid_tgid))
    else {
        return;
    };
    // SAFETY: this thread's own PENDING and WALK_CACHES elements (only its
    // probes touch them).
    let _ = unsafe { remember_walk(&*state, &mut *cache) };
}

/// Makes a complete walk the thread's cached walk: the frames it took
/// from the cache stay where they are (outermost first), its own newer
/// frames go after them; a walk that did not join replaces the cache.
/// True when it did. A function of its own, returning a value: inlined,
/// LLVM left a stack pointer in r0 at the caller's exit, which the
/// verifier refuses.
#[inline(never)]
fn remember_walk(state: &ThreadState, cache: &mut WalkCache) -> bool {
    let walk = &state.walk;
    let reused = walk.mode == walk_mode::REUSED;
    let Some(scratch) = WALK_SCRATCH.get_ptr(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch.
    let scratch = unsafe { &*scratch };
    let (kept, new) = if reused {
        (walk.joined_entry as usize + 1, walk.joined_at as usize)
    } else {
        (0, walk.entries as usize)
    };
    // Not usable while it is rewritten, nor if a bound check fails.
    cache.len = 0;
    for k in 0..CACHED_FRAMES {
        if k >= new {
            break;
        }
        let to = kept + k;
        let Some(mut entry) = cached_entry(&scratch.frames, (new - 1 - k) as u32).copied() else {
            return false;
        };
        let caller_depends = match to.checked_sub(1) {
            Some(below) => cached_entry(&cache.frames, below as u32)
                .is_some_and(|caller| caller.flags & cached_flags::DEPENDS_ON_BP != 0),
            None => false,
        };
        entry.flags &= !cached_flags::DEPENDS_ON_BP;
        if entry.depends_on_bp(caller_depends) {
            entry.flags |= cached_flags::DEPENDS_ON_BP;
        }
        let Some(slot) = cached_entry_mut(&mut cache.frames, to) else {
            return false;
        };
        *slot = entry;
    }
    cache.generation = walk.generation;
    cache.len = (kept + new) as u32;
    true
}

#[inline(always)]
fn read_user(address: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user copies from user memory and returns an
    // error instead of faulting on a bad address.
    unsafe { bpf_probe_read_user(address as *const u64) }.ok()
}

/// An allocate call returns (uretprobe, or the instruction after a call):
/// the call whose return-address slot is just below the stack pointer.
fn on_alloc_return(regs: &pt_regs) {
    let Some((pid_tgid, call)) = pop_call(regs) else {
        return;
    };
    record_allocation(arch::returned(regs), pid_tgid, call, None, None);
}

/// Control leaves an inlined instance of allocate: the call recorded at
/// its entry (same frame, so the same stack pointer), with the result
/// where this exit's caller keeps it.
fn on_alloc_inlined_exit(ctx: &ProbeContext) {
    // SAFETY: the probe's own register snapshot.
    let regs = unsafe { &*ctx.regs };
    let cookie = attach_cookie(ctx) as u32;
    let Some((pid_tgid, call)) = pop_call(regs) else {
        return;
    };
    let Some(exit) = ALLOC_EXITS.get(cookie) else {
        count(counter::ALLOC_ID_READ_ERRORS);
        return;
    };
    record_allocation(arch::returned(regs), pid_tgid, call, Some(exit), Some(regs));
}

/// The allocate call in flight whose return-address slot is just below
/// the stack pointer, taken off the thread's stack of calls (counted when
/// there is none).
fn pop_call(regs: &pt_regs) -> Option<(u64, Call)> {
    let pid_tgid = target_thread()?;
    let Some(state) = PENDING.get_ptr_mut(pid_tgid) else {
        count(counter::RETURNS_WITHOUT_ENTRY);
        return None;
    };
    let slot = arch::pending_call_slot(regs);
    // SAFETY: this thread's own PENDING element; only the small fields of
    // the call are copied (the state is too large for the BPF stack); the
    // index is masked into the array.
    unsafe {
        // Calls deeper than this one were left without returning.
        drop_gone_calls(state, slot, false);
        let depth = (*state).depth as usize;
        if depth == 0 {
            count(counter::RETURNS_WITHOUT_ENTRY);
            return None;
        }
        let top = &(*state).frames[frame_index(depth - 1)];
        if top.entry_sp != slot {
            count(counter::RETURNS_WITHOUT_ENTRY);
            return None;
        }
        let call = Call {
            args: top.args,
            entered_ns: top.entered_ns,
            site: top.site,
            internal: top.internal,
        };
        (*state).depth = depth as u32 - 1;
        Some((pid_tgid, call))
    }
}

/// What an allocate call's entry recorded, for its return.
struct Call {
    args: [u64; LOC_BASE_SAVED_COUNT as usize],
    entered_ns: u64,
    site: SiteKey,
    /// Made inside an allocator entry point: not the program's call.
    internal: u32,
}

/// Records the buffer an allocate call returned (`ret`: its return
/// registers, [`arch::returned`]),
/// found at the locations of the function called (`ALLOC_LOCS` by its
/// entry's cookie), or for an inlined allocate at `exit`'s (`regs` where
/// the probe fires, for locations that read registers), when the return
/// is an allocation at all. A realloc first releases its old buffer.
#[inline(always)]
fn record_allocation(
    ret: Returned,
    pid_tgid: u64,
    call: Call,
    exit: Option<&ExitLocs>,
    regs: Option<&pt_regs>,
) {
    let Call {
        args,
        entered_ns,
        site,
        internal,
    } = call;
    if internal != 0 {
        count(counter::ALLOCATOR_INTERNAL_ALLOCS);
        return;
    }
    let Some(locs) = ALLOC_LOCS.get(site.probe) else {
        count(counter::ALLOC_ID_READ_ERRORS);
        return;
    };
    let tgid = (pid_tgid >> 32) as u32;
    let allocated = match is_allocation(&locs.test, &args, ret) {
        Ok(allocated) => allocated,
        Err(()) => {
            count(counter::ALLOC_ID_READ_ERRORS);
            return;
        }
    };
    if field(&locs.kind) == alloc_kind::REALLOC
        && !release_reallocated(locs, &args, tgid, allocated)
    {
        return;
    }
    if !allocated {
        count(counter::ALLOC_FAILED);
        return;
    }
    // An inlined exit's own places, where its caller keeps the result
    // (and, for a key, the pool type it is scoped to).
    let (id_loc, size_loc, scope_loc) = match exit {
        Some(exit) => (&exit.id, &exit.size, &exit.scope),
        None => (&locs.id, &locs.size, &locs.scope),
    };
    let id = evaluate(id_loc, &args, ret, regs);
    let scope = evaluate(scope_loc, &args, ret, None);
    let (Ok(id), Ok(scope)) = (id, scope) else {
        count(counter::ALLOC_ID_READ_ERRORS);
        return;
    };
    let size = evaluate_size(size_loc, &args, ret, regs).wrapping_mul(evaluate_size(
        &locs.count,
        &args,
        ret,
        None,
    ));
    let key = LiveKey {
        tgid,
        _pad: 0,
        id,
        scope,
    };
    let buf = LiveBuf {
        size,
        allocated_ns: entered_ns,
        site,
    };
    if !insert_live(&key, &buf) {
        count(counter::LIVE_MAP_FULL);
        return;
    }
    add_to_site(&site, 1, size as i64);
    count(counter::ALLOCATIONS);
}

/// A realloc returned: releases its old buffer (the id its entry had at
/// `old_id`) when it was resized, moved or freed. True when the return is
/// then to be recorded like any allocation's (allocated or failed); false
/// when the call is fully accounted: a failed realloc (its old buffer
/// stays live), a realloc to size 0 that freed it, an unreadable old id.
/// `realloc(NULL, n)` is `malloc(n)`. Ids of reallocs are pointers:
/// unscoped.
#[inline(always)]
fn release_reallocated(
    locs: &AllocLocs,
    args: &[u64; LOC_BASE_SAVED_COUNT as usize],
    tgid: u32,
    allocated: bool,
) -> bool {
    let Ok(old) = evaluate(&locs.old_id, args, NO_RETURN, None) else {
        count(counter::ALLOC_ID_READ_ERRORS);
        return false;
    };
    if old == 0 {
        return true;
    }
    let freed = !allocated && evaluate_size(&locs.size, args, NO_RETURN, None) == 0;
    if !allocated && !freed {
        count(counter::REALLOC_FAILED);
        count(counter::ALLOC_FAILED);
        return false;
    }
    count(counter::REALLOCS);
    let known = release(&LiveKey {
        tgid,
        _pad: 0,
        id: old,
        scope: 0,
    });
    if !known {
        count(counter::REALLOC_UNKNOWN_OLD);
    }
    if freed {
        count(counter::REALLOC_FREES);
    }
    allocated
}

/// A panic is about to unwind this thread's stack. Every in-flight
/// allocate above the unwinder whose return address a uretprobe replaced
/// gets the original back: the unwinder finds no unwind information for
/// the trampoline and would make the target abort.
fn on_unwind_start(ctx: &ProbeContext) {
    // Not on arm64, where userspace never asks for it (see
    // `arch::REPAIRS_RETURN_ADDRESSES`): the program is then empty.
    if !arch::REPAIRS_RETURN_ADDRESSES {
        return;
    }
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    let Some(state) = PENDING.get_ptr_mut(pid_tgid) else {
        return;
    };
    // SAFETY: the probe's own register snapshot.
    let sp = arch::sp(unsafe { &*ctx.regs });
    for index in 0..MAX_NESTED_ALLOCS {
        // SAFETY: this thread's own PENDING element; index < the array's length.
        let frame = unsafe {
            if index >= (*state).depth as usize {
                break;
            }
            &mut (*state).frames[index]
        };
        // Only a live frame (above the unwinder) whose slot still holds
        // the trampoline: never write into memory a finished call left.
        if frame.trampoline != 0 || frame.entry_sp <= sp {
            continue;
        }
        let Some(value) = read_user(frame.entry_sp) else {
            continue;
        };
        if value == frame.return_address || !is_trampoline(value) {
            continue;
        }
        // SAFETY: writes 8 bytes of the target's stack, at the slot that
        // held this call's return address and now holds the trampoline
        // (checked just above); the helper fails rather than fault.
        let written = unsafe {
            bpf_probe_write_user(
                frame.entry_sp as *mut u64,
                &frame.return_address as *const u64,
            )
        };
        match written {
            Ok(()) => {
                frame.trampoline = value;
                count(counter::UNWIND_REPAIRS);
            }
            Err(_) => {
                count(counter::UNWIND_REPAIR_FAILURES);
                debug!(ctx, "return address at {:x} not restored", frame.entry_sp);
            }
        }
    }
}

/// A panic is caught (`__rust_panic_cleanup(exception)`). The unwinder
/// noted the catching frame in the exception: calls below it were
/// unwound; a call the panic did not leave (caught inside allocate) gets
/// its trampoline back so its return is still seen.
fn on_unwind_caught(ctx: &ProbeContext) {
    let Some(state) = thread_with_calls() else {
        return;
    };
    drop_unwound_calls(ctx, state);
    rearm_live_calls(state);
}

/// This thread's state, when the current process is the target and the
/// thread has one.
#[inline(always)]
fn thread_with_calls() -> Option<*mut ThreadState> {
    PENDING.get_ptr_mut(target_thread()?)
}

/// Counts and drops the in-flight calls below the frame that caught the
/// exception `__rust_panic_cleanup` received.
fn drop_unwound_calls(ctx: &ProbeContext, state: *mut ThreadState) {
    let exception: u64 = ctx.arg(0).unwrap_or(0);
    let Some(handler) = read_user(exception.wrapping_add(EXCEPTION_HANDLER_OFFSET)) else {
        return;
    };
    for _ in 0..MAX_NESTED_ALLOCS {
        // SAFETY: this thread's own PENDING element; the index is masked.
        let depth = unsafe { (*state).depth } as usize;
        if depth == 0 {
            break;
        }
        // SAFETY: as above.
        let top = unsafe { &(*state).frames[frame_index(depth - 1)] };
        if !arch::call_is_below(top.entry_sp, handler) {
            break;
        }
        count(counter::ALLOC_UNWOUND);
        // SAFETY: as above.
        unsafe { (*state).depth = depth as u32 - 1 };
    }
}

/// Puts the trampoline back for the calls still alive whose return
/// address was restored when the panic started.
fn rearm_live_calls(state: *mut ThreadState) {
    for index in 0..MAX_NESTED_ALLOCS {
        // SAFETY: this thread's own PENDING element; index < the array's
        // length.
        let frame = unsafe {
            if index >= (*state).depth as usize {
                break;
            }
            &mut (*state).frames[index]
        };
        if frame.trampoline == 0 {
            continue;
        }
        // SAFETY: the slot is this live call's return-address slot, where
        // on_unwind_start put the original back; the trampoline returns.
        let written = unsafe {
            bpf_probe_write_user(frame.entry_sp as *mut u64, &frame.trampoline as *const u64)
        };
        match written {
            Ok(()) => count(counter::CAUGHT_INSIDE),
            Err(_) => count(counter::UNWIND_REPAIR_FAILURES),
        }
        frame.trampoline = 0;
    }
}

/// A thread of the target exits: its calls in flight will never return.
fn on_thread_exit() {
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    if let Some(state) = PENDING.get_ptr(pid_tgid) {
        // SAFETY: this thread's own PENDING element, read before removal.
        let depth = unsafe { (*state).depth };
        if depth > 0 {
            count_by(counter::EXITED_IN_ALLOCATE, u64::from(depth));
        }
        let _ = PENDING.remove(pid_tgid);
    }
    let _ = WALK_CACHES.remove(pid_tgid);
}

fn on_release_enter(ctx: &ProbeContext) {
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    count(counter::RELEASE_CALLS);
    // SAFETY: the probe's own register snapshot.
    let regs = unsafe { &*ctx.regs };
    if ALLOCATOR_ENTRY_POINTS.load() != 0 && inside_allocator(pid_tgid, arch::sp(regs)) {
        count(counter::ALLOCATOR_INTERNAL_RELEASES);
        return;
    }
    let args = entry_args(ctx);
    let cookie = attach_cookie(ctx) as u32;
    let Some(locs) = RELEASE_LOCS.get(cookie) else {
        count(counter::RELEASE_ID_READ_ERRORS);
        return;
    };
    let id = evaluate(&locs.id, &args, NO_RETURN, Some(regs));
    let scope = evaluate(&locs.scope, &args, NO_RETURN, Some(regs));
    let (Ok(id), Ok(scope)) = (id, scope) else {
        count(counter::RELEASE_ID_READ_ERRORS);
        return;
    };
    if ALLOCATOR_ENTRY_POINTS.load() != 0 && id == 0 {
        count(counter::NULL_RELEASES);
        return;
    }
    let _ = release(&LiveKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        id,
        scope,
    });
}

/// Takes a released buffer out of the live table and off its site; false
/// when the table did not hold it.
#[inline(always)]
fn release(key: &LiveKey) -> bool {
    match take_live(key) {
        Some(buf) => {
            add_to_site(&buf.site, -1, -(buf.size as i64));
            count(counter::RELEASES);
            true
        }
        None => {
            count(counter::UNKNOWN_RELEASES);
            false
        }
    }
}

/// True when this thread's innermost allocate call in flight is an
/// allocator entry point ([`alloc_flags::OUTERMOST`]) whose frame is still
/// above `sp`: a release from there (glibc's realloc calling free) is the
/// allocator's own.
#[inline(always)]
fn inside_allocator(pid_tgid: u64, sp: u64) -> bool {
    let Some(state) = PENDING.get_ptr(pid_tgid) else {
        return false;
    };
    // SAFETY: this thread's own PENDING element; the index is masked.
    unsafe {
        let depth = (*state).depth as usize;
        if depth == 0 {
            return false;
        }
        let top = &(*state).frames[frame_index(depth - 1)];
        top.flags & alloc_flags::OUTERMOST != 0 && top.entry_sp > sp
    }
}

/// Records a new live buffer; false when the table is full. The common
/// case (a new id) costs one update; an id still live takes the stale
/// path first (the kernel checks for an existing key before fullness).
#[inline(always)]
fn insert_live(key: &LiveKey, buf: &LiveBuf) -> bool {
    match LIVE.insert(key, buf, BPF_NOEXIST as u64) {
        Ok(()) => true,
        Err(EEXIST) => {
            forget_stale(key);
            LIVE.insert(key, buf, BPF_ANY as u64).is_ok()
        }
        Err(_) => false,
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

/// The registers an allocate's (or release's) entry saves for locations:
/// the arguments, and on arm64 x8 (see `arch::entry_registers`).
#[inline(always)]
fn entry_args(ctx: &ProbeContext) -> [u64; LOC_BASE_SAVED_COUNT as usize] {
    // SAFETY: the probe's own register snapshot.
    arch::entry_registers(unsafe { &*ctx.regs })
}

#[inline(always)]
fn attach_cookie<C: aya_ebpf::EbpfContext>(ctx: &C) -> u64 {
    // SAFETY: the context pointer is the program's own context.
    unsafe { aya_ebpf::helpers::generated::bpf_get_attach_cookie(ctx.as_ptr()) }
}

use arch::Returned;

/// Where no return is seen (release probes): `ret` locations are refused
/// before attaching, so these values are never used.
const NO_RETURN: Returned = [0, 0];

/// Whether a return is an allocation: always, or when the result's
/// discriminant says it is the success variant (`Some`, `Ok`).
#[inline(always)]
fn is_allocation(
    test: &ReturnTest,
    args: &[u64; LOC_BASE_SAVED_COUNT as usize],
    ret: Returned,
) -> Result<bool, ()> {
    let op = field(&test.op);
    if op == test_op::ALWAYS {
        return Ok(true);
    }
    let value = evaluate(&test.loc, args, ret, None)?;
    // A shift of 64 or more is undefined; the planner never asks for one.
    let discriminant = value.checked_shr(field(&test.shift)).unwrap_or(0) & field(&test.mask);
    let expected = field(&test.value);
    Ok(match op {
        test_op::EQUAL => discriminant == expected,
        _ => discriminant != expected,
    })
}

#[inline(always)]
fn evaluate_size(
    loc: &Loc,
    args: &[u64; LOC_BASE_SAVED_COUNT as usize],
    ret: Returned,
    regs: Option<&pt_regs>,
) -> u64 {
    match evaluate(loc, args, ret, regs) {
        Ok(size) => size,
        Err(()) => {
            count(counter::SIZE_READ_ERRORS);
            0
        }
    }
}

/// Evaluates a compiled location (see [`Loc`]): the shared evaluator,
/// with the registers where the probe fired when given.
#[inline(always)]
fn evaluate(
    loc: &Loc,
    args: &[u64; LOC_BASE_SAVED_COUNT as usize],
    ret: Returned,
    regs: Option<&pt_regs>,
) -> Result<u64, ()> {
    // One instance, with the snapshot optional as before the evaluator
    // moved: an instance for "no registers" of its own let the compiler
    // spill a register it never set on a path it proved dead, which the
    // verifier refuses (R4 !read_ok).
    let registers = regs.map(ProbeRegisters);
    loc_eval::evaluate(loc, args, ret, registers.as_ref(), &TargetMemory).map_err(|NotEvaluable| ())
}

/// A probe's register snapshot, by DWARF number.
struct ProbeRegisters<'a>(&'a pt_regs);

impl Registers for ProbeRegisters<'_> {
    #[inline(always)]
    fn register(&self, number: u8) -> Result<u64, NotEvaluable> {
        arch::register(self.0, number).map_err(|()| NotEvaluable)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
