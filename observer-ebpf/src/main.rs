//! eBPF programs of the pool observer.
//!
//! Three programs follow a buffer pool inside one process:
//! - `pool_alloc_enter` (uprobe at allocate's entry): saves the argument
//!   registers, the user stack and a timestamp for this thread;
//! - `pool_alloc_return` (uretprobe on allocate): evaluates the buffer's id
//!   and size (`argN` = the registers saved at entry, so a return slot passed
//!   in a register is readable once filled), records the buffer in `LIVE`
//!   and adds it to its site's aggregates in `SITES`;
//! - `pool_release_enter` (uprobe at release's entry): removes the buffer
//!   from `LIVE` and subtracts it from its site.
//!
//! Userspace only ever reads aggregates; nothing here sends per-event data.
//! Requires Linux ≥ 5.15 (attach cookies, atomic fetch-add on map values,
//! bounded loops); written and tested on 6.18.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's `fetch_add` is not
// available; the intrinsic lowers to BPF's native atomic add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, StackTrace},
    programs::{tracing::StackIdContext as _, ProbeContext, RetProbeContext},
    Global,
};
use aya_log_ebpf::debug;
use observer_ebpf::{
    counter, LiveBuf, LiveKey, Loc, Pending, SiteKey, SiteStats, LOC_BASE_ARG_COUNT,
    LOC_BASE_CONST, LOC_BASE_RET, MAX_LOC_STEPS, NO_STACK,
};

/// The process being observed; every program ignores other processes.
#[unsafe(no_mangle)]
static TARGET_TGID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static SIZE_LOC: Global<Loc> = Global::new(Loc::ZERO);
#[unsafe(no_mangle)]
static ALLOC_ID_LOC: Global<Loc> = Global::new(Loc::ZERO);
#[unsafe(no_mangle)]
static RELEASE_ID_LOC: Global<Loc> = Global::new(Loc::ZERO);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

// Sizes below are defaults; userspace may resize LIVE (--max-live).
#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

#[map]
static LIVE: HashMap<LiveKey, LiveBuf> = HashMap::with_max_entries(1 << 20, BPF_F_NO_PREALLOC);

#[map]
static SITES: HashMap<SiteKey, SiteStats> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);

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
    let args = entry_args(ctx);
    let stack_id = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as u32,
        Err(_) => {
            count(counter::STACK_ERRORS);
            NO_STACK
        }
    };
    let pending = Pending {
        args,
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        entered_ns: unsafe { bpf_ktime_get_ns() },
        site: SiteKey {
            stack_id,
            probe: attach_cookie(ctx) as u32,
        },
    };
    if PENDING
        .insert(pid_tgid, pending, BPF_NOEXIST as u64)
        .is_err()
    {
        count(counter::ENTRIES_WITHOUT_RETURN);
        let _ = PENDING.insert(pid_tgid, pending, BPF_ANY as u64);
    }
}

fn on_alloc_return(ctx: &RetProbeContext) {
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    // SAFETY: the value is copied out immediately; PENDING is keyed by
    // thread and only this thread writes its own key.
    let Some(pending) = (unsafe { PENDING.get(pid_tgid) }).copied() else {
        count(counter::RETURNS_WITHOUT_ENTRY);
        return;
    };
    let _ = PENDING.remove(pid_tgid);
    let ret: u64 = ctx.ret();
    let Ok(id) = evaluate(&ALLOC_ID_LOC.load(), &pending.args, ret) else {
        count(counter::ALLOC_ID_READ_ERRORS);
        debug!(ctx, "alloc id unreadable (ret {:x})", ret);
        return;
    };
    let size = evaluate_size(&SIZE_LOC.load(), &pending.args, ret);
    let key = LiveKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        id,
    };
    forget_stale(&key);
    let buf = LiveBuf {
        size,
        allocated_ns: pending.entered_ns,
        site: pending.site,
    };
    if LIVE.insert(key, buf, BPF_ANY as u64).is_err() {
        count(counter::LIVE_MAP_FULL);
        return;
    }
    add_to_site(&pending.site, 1, size as i64);
    count(counter::ALLOCATIONS);
}

fn on_release_enter(ctx: &ProbeContext) {
    let Some(pid_tgid) = target_thread() else {
        return;
    };
    count(counter::RELEASE_CALLS);
    let args = entry_args(ctx);
    let Ok(id) = evaluate(&RELEASE_ID_LOC.load(), &args, 0) else {
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
    match evaluate(loc, args, ret) {
        Ok(size) => size,
        Err(()) => {
            count(counter::SIZE_READ_ERRORS);
            0
        }
    }
}

/// Evaluates a compiled location (see [`Loc`]).
#[inline(always)]
fn evaluate(loc: &Loc, args: &[u64; LOC_BASE_ARG_COUNT as usize], ret: u64) -> Result<u64, ()> {
    let mut value = match loc.base {
        LOC_BASE_RET => ret,
        LOC_BASE_CONST => 0,
        base if base < LOC_BASE_ARG_COUNT => args[base as usize],
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
