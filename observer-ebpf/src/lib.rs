//! Types shared by the eBPF programs (`src/main.rs`) and the userspace
//! observer. Every type is `#[repr(C)]` with explicit padding so both sides
//! agree on the layout byte for byte; the `user` feature adds `aya::Pod`.
#![no_std]

/// How many dereference steps a [`Loc`] may take. Four is enough for
/// `*(*(*(*arg0+8)+16)+24)`; the eBPF side unrolls this loop.
pub const MAX_LOC_STEPS: usize = 4;

/// [`Loc::base`] values 0..=5 are the integer argument registers at function
/// entry (x86-64 SysV order: rdi, rsi, rdx, rcx, r8, r9).
pub const LOC_BASE_ARG_COUNT: u8 = 6;
/// [`Loc::base`]: the return register (`rax`) when the function returns.
pub const LOC_BASE_RET: u8 = 6;
/// [`Loc::base`]: the constant 0; with `final_offset` this is a literal.
pub const LOC_BASE_CONST: u8 = 7;
/// [`Loc::base`] values `LOC_BASE_REGISTER + n`: general register `n` in
/// DWARF numbering (0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp,
/// 8–15 r8–r15) when the probe fires. Only for probes evaluated where they
/// fire (release), such as a release inlined into its callers.
pub const LOC_BASE_REGISTER: u8 = 16;

/// A compiled location: where a value lives when a probe fires.
///
/// Evaluation: `v = base; for each of the first `steps` offsets: v = *(u64*)(v + offset);
/// v += final_offset`. Memory reads are user-memory reads of 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub base: u8,
    pub steps: u8,
    pub _pad: [u8; 6],
    pub offsets: [i64; MAX_LOC_STEPS],
    pub final_offset: i64,
}

impl Loc {
    /// The literal 0, the value of a location nobody configured.
    pub const ZERO: Loc = Loc {
        base: LOC_BASE_CONST,
        steps: 0,
        _pad: [0; 6],
        offsets: [0; MAX_LOC_STEPS],
        final_offset: 0,
    };

    /// True when the location reads `ret`, which exists only where a
    /// return is observed.
    pub const fn needs_return(&self) -> bool {
        self.base == LOC_BASE_RET
    }
}

/// Stack id used for allocations whose stack could not be captured; their
/// buffers are still accounted, under a site without frames.
pub const NO_STACK: u64 = u64::MAX;

/// A call site: the allocating user stack (its interned hash) plus which
/// probed copy of the allocate function was hit (the attach cookie; generic
/// functions have several copies).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    pub stack_id: u64,
    pub probe: u32,
    pub _pad: u32,
}

/// Deepest user stack recorded, innermost frame first.
pub const MAX_FRAMES: usize = 192;

/// An interned user stack: `STACKS[hash] = StackRecord`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackRecord {
    pub len: u32,
    /// [`stack_flags`] bits: how the walk ended.
    pub flags: u32,
    pub frames: [u64; MAX_FRAMES],
}

/// How a stack walk ended.
pub mod stack_flags {
    /// Reached an entry point (return address undefined) or a zero return
    /// address: the stack is whole.
    pub const COMPLETE: u32 = 1;
    /// Stopped at [`super::MAX_FRAMES`].
    pub const TRUNCATED: u32 = 2;
    /// Stopped early: no unwind row and no usable frame pointer, unreadable
    /// stack memory, or an unwind rule we do not implement.
    pub const BROKEN: u32 = 4;
    /// Some frames were unwound with frame pointers (no unwind row).
    pub const USED_FRAME_POINTERS: u32 = 8;
}

/// Which stack walker the entry probe uses.
pub mod walker {
    /// `.eh_frame` unwind tables in BPF maps, frame pointers where a row is
    /// missing.
    pub const DWARF: u32 = 0;
    /// The kernel's frame-pointer walker (`bpf_get_stack`).
    pub const FRAME_POINTERS: u32 = 1;
}

/// One row of a compact unwind table (8 bytes): from `pc` until the next
/// row, how to find the caller's frame. Derived from `.eh_frame` by the
/// observer at attach. `pc` is the object's ELF virtual address (low 32
/// bits; objects above 4 GiB are not tabled).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u32,
    /// CFA = base register + this (see [`row_kind`]).
    pub cfa_offset: i16,
    /// rbp was saved at CFA + 8 × this; 0 = rbp unchanged.
    pub rbp_offset_words: i8,
    pub kind: u8,
}

/// [`UnwindRow::kind`] values. The return address is always at CFA − 8 on
/// x86-64 (rows where it is not are [`row_kind::UNSUPPORTED`]).
pub mod row_kind {
    /// No FDE covers this address (between functions).
    pub const GAP: u8 = 0;
    /// CFA = rsp + offset.
    pub const CFA_RSP: u8 = 1;
    /// CFA = rbp + offset.
    pub const CFA_RBP: u8 = 2;
    /// PLT entry: CFA = rsp + 8 + ((pc & 15) >= 11 ? 8 : 0).
    pub const PLT_11: u8 = 3;
    /// PLT entry with threshold 10.
    pub const PLT_10: u8 = 4;
    /// Return address undefined: an entry point, the stack ends here.
    pub const END: u8 = 5;
    /// A rule we do not implement (CFA in another register, expressions).
    pub const UNSUPPORTED: u8 = 6;
}

/// Rows are found through 64 KiB pages of each object's address space.
pub const PAGE_SHIFT: u32 = 16;

/// Key of the page index: an object and a page of its virtual addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageKey {
    pub object: u32,
    pub page: u32,
}

/// The rows of one page: `UNWIND_ROWS[first .. first + count]`, starting with
/// the row in effect at the page's first address. At most 2^17 rows, so a
/// 17-step binary search finds any.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRows {
    pub first: u32,
    pub count: u32,
}

/// Address prefixes in `UNWIND_MAPPINGS` (an LPM trie keyed by big-endian
/// address; a mapping takes up to ~100 prefixes).
pub const MAX_MAPPING_PREFIXES: u32 = 16384;

/// An executable mapping of the target: addresses in `[start, end)` belong
/// to `object`, at ELF virtual address `pc - bias`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingEntry {
    pub start: u64,
    pub end: u64,
    pub bias: u64,
    pub object: u32,
    /// 1 when the object has unwind rows.
    pub tabled: u32,
}

/// Per-site aggregates maintained in the kernel with atomic adds, so the
/// observer never handles individual events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    /// Buffers allocated at this site since attach and not yet released.
    pub outstanding_buffers: i64,
    /// Their bytes, as reported by the size location.
    pub outstanding_bytes: i64,
    /// Every allocation recorded at this site since attach.
    pub total_allocations: u64,
    /// Their bytes.
    pub total_bytes: u64,
}

/// Key of the live-buffer table: the process and the buffer's identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LiveKey {
    pub tgid: u32,
    pub _pad: u32,
    pub id: u64,
}

/// One outstanding buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveBuf {
    pub size: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when allocate was entered.
    pub allocated_ns: u64,
    pub site: SiteKey,
}

/// Where a thread's stack walk stands between tail calls.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkState {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    /// FNV-1a of the frames so far: the stack's id once done.
    pub hash: u64,
    pub tail_calls: u32,
    pub done: u32,
}

/// What the allocate entry probe saves for the return probe, per thread,
/// with the stack being walked. Too large for the BPF stack: it is built
/// in place in the `PENDING` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub args: [u64; LOC_BASE_ARG_COUNT as usize],
    pub entered_ns: u64,
    pub site: SiteKey,
    pub walk: WalkState,
    pub stack: StackRecord,
}

/// Indices into the per-CPU `COUNTERS` array. Every event the kernel side
/// could not record has one, so the report can say what was lost.
pub mod counter {
    /// Allocations recorded in the live table.
    pub const ALLOCATIONS: u32 = 0;
    /// Releases that matched a recorded allocation.
    pub const RELEASES: u32 = 1;
    /// Releases of an id the live table did not hold (allocated before
    /// attach, lost, or a wrong `--release-id`).
    pub const UNKNOWN_RELEASES: u32 = 2;
    /// Allocations not recorded because the live table was full.
    pub const LIVE_MAP_FULL: u32 = 3;
    /// Allocations whose user stack could not be captured.
    pub const STACK_ERRORS: u32 = 4;
    /// Allocate entries whose return was never seen (thread died, longjmp,
    /// unwinding, or re-entry).
    pub const ENTRIES_WITHOUT_RETURN: u32 = 5;
    /// Allocate returns without a saved entry (call in flight at attach).
    pub const RETURNS_WITHOUT_ENTRY: u32 = 6;
    /// The alloc id location could not be read.
    pub const ALLOC_ID_READ_ERRORS: u32 = 7;
    /// The release id location could not be read.
    pub const RELEASE_ID_READ_ERRORS: u32 = 8;
    /// The size location could not be read (buffer tracked with size 0).
    pub const SIZE_READ_ERRORS: u32 = 9;
    /// An allocation returned an id that was still live: its release was
    /// missed; the older record was dropped.
    pub const REALLOCATED_IDS: u32 = 10;
    /// The site table was full: a buffer is tracked but not counted per site.
    pub const SITE_MAP_FULL: u32 = 11;
    /// Allocate calls entered (after the tgid filter).
    pub const ALLOC_CALLS: u32 = 12;
    /// Release calls entered (after the tgid filter).
    pub const RELEASE_CALLS: u32 = 13;
    /// Frames unwound with `.eh_frame` rows.
    pub const FRAMES_UNWOUND: u32 = 14;
    /// Frames unwound with frame pointers because no row covered the address.
    pub const FRAMES_BY_FRAME_POINTER: u32 = 15;
    /// Stacks walked to their entry point.
    pub const STACKS_COMPLETE: u32 = 16;
    /// Stacks cut at the maximum depth.
    pub const STACKS_TRUNCATED: u32 = 17;
    /// Stacks that stopped early (see `stack_flags::BROKEN`).
    pub const STACKS_BROKEN: u32 = 18;
    /// Number of counters; the array is sized by this.
    pub const COUNT: u32 = 19;
}

/// Names of the maps and globals, shared so a rename breaks the build, not
/// the attach.
pub mod names {
    pub const MAP_COUNTERS: &str = "COUNTERS";
    pub const MAP_SITES: &str = "SITES";
    pub const MAP_LIVE: &str = "LIVE";
    pub const MAP_PENDING: &str = "PENDING";
    pub const MAP_STACKS: &str = "STACKS";
    pub const MAP_UNWIND_ROWS: &str = "UNWIND_ROWS";
    pub const MAP_UNWIND_PAGES: &str = "UNWIND_PAGES";
    pub const MAP_UNWIND_MAPPINGS: &str = "UNWIND_MAPPINGS";
    pub const MAP_WALKERS: &str = "WALKERS";
    pub const MAP_RELEASE_LOCS: &str = "RELEASE_LOCS";
    pub const GLOBAL_WALKER: &str = "WALKER";
    pub const GLOBAL_TARGET_TGID: &str = "TARGET_TGID";
    pub const GLOBAL_SIZE_LOC: &str = "SIZE_LOC";
    pub const GLOBAL_ALLOC_ID_LOC: &str = "ALLOC_ID_LOC";
    pub const PROG_ALLOC_ENTER: &str = "pool_alloc_enter";
    pub const PROG_ALLOC_RETURN: &str = "pool_alloc_return";
    pub const PROG_RELEASE_ENTER: &str = "pool_release_enter";
    pub const PROG_WALK: &str = "pool_walk_stack";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], made only of integers and
    // arrays of integers, with explicit padding fields, so any bit pattern
    // is a valid value and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::Loc {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SiteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SiteStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LiveKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LiveBuf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Pending {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageRows {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MappingEntry {}
}
