//! Types shared by the eBPF programs (`src/main.rs`) and the userspace
//! observer. Every type is `#[repr(C)]` with explicit padding so both sides
//! agree on the layout byte for byte; the `user` feature adds `aya::Pod`.
#![no_std]

pub mod frame_rules;
pub mod loc_eval;
mod unwind_row;
mod walk_cache;
pub mod walk_step;
pub use unwind_row::*;
pub use walk_cache::*;

/// Where this crate's sources were when it was compiled (its manifest
/// directory): the observer's build script, which has this crate as a
/// build-dependency, builds the eBPF programs (`src/main.rs`) from there,
/// whether that is this workspace or cargo's copy of the published crate.
pub const SOURCE_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// How many dereference steps a [`Loc`] may take. Four is enough for
/// `*(*(*(*arg0+8)+16)+24)`; the eBPF side unrolls this loop.
pub const MAX_LOC_STEPS: usize = 4;

// The per-architecture part of the location numbering: the argument
// registers, which registers an allocate's entry saves, and the bases after
// them. Chosen by `bpf_target_arch`, which the build script sets for every
// build (the eBPF programs': the kernel's architecture; userspace's: its
// own target's), so the programs and the observer built for one machine
// agree on the numbering.
#[cfg_attr(bpf_target_arch = "x86_64", path = "arch/loc_x86_64.rs")]
#[cfg_attr(bpf_target_arch = "aarch64", path = "arch/loc_aarch64.rs")]
mod loc_arch;
#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("the location encoding supports bpf_target_arch x86_64 and aarch64");

/// [`Loc::base`] values: `0..LOC_BASE_ARG_COUNT` the argument registers at
/// entry (`argN`), `0..LOC_BASE_SAVED_COUNT` every register the entry saves
/// (arm64 adds x8), [`LOC_BASE_RESULT_SLOT`] the saved register holding a
/// large result's hidden return slot, then `ret`, the constant and `ret.1`.
pub use loc_arch::{
    saved_register, LOC_BASE_ARG_COUNT, LOC_BASE_CONST, LOC_BASE_RESULT_SLOT, LOC_BASE_RET,
    LOC_BASE_RET_HIGH, LOC_BASE_SAVED_COUNT,
};
/// [`Loc::base`] values `LOC_BASE_REGISTER + n`: general register `n` in
/// DWARF numbering (x86-64: 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi,
/// 6 rbp, 7 rsp, 8–15 r8–r15; arm64: 0–30 x0–x30, 31 sp) when the probe
/// fires. Only for probes evaluated where they
/// fire (release), such as a release inlined into its callers.
pub const LOC_BASE_REGISTER: u8 = 16;

// The numbering's invariants, on every architecture: the saved registers
// include the arguments and the result slot, the other bases follow them,
// all are distinct and below the register bases, and the highest register
// base (arm64's sp, 31) fits in a byte.
const _: () = {
    assert!(LOC_BASE_ARG_COUNT <= LOC_BASE_SAVED_COUNT);
    assert!(LOC_BASE_RESULT_SLOT < LOC_BASE_SAVED_COUNT);
    assert!(LOC_BASE_RET >= LOC_BASE_SAVED_COUNT);
    assert!(LOC_BASE_CONST >= LOC_BASE_SAVED_COUNT && LOC_BASE_CONST != LOC_BASE_RET);
    assert!(LOC_BASE_RET_HIGH >= LOC_BASE_SAVED_COUNT);
    assert!(LOC_BASE_RET_HIGH != LOC_BASE_RET && LOC_BASE_RET_HIGH != LOC_BASE_CONST);
    assert!(LOC_BASE_RET < LOC_BASE_REGISTER && LOC_BASE_CONST < LOC_BASE_REGISTER);
    assert!(LOC_BASE_RET_HIGH < LOC_BASE_REGISTER);
    assert!(LOC_BASE_REGISTER as u32 + 31 <= u8::MAX as u32);
};

/// A compiled location: where a value lives when a probe fires.
///
/// Evaluation: `v = base; for each of the first `steps` offsets: v = *(u64*)(v + offset);
/// v += final_offset`. Memory reads are user-memory reads of 8 bytes. With
/// `high_half` set, `v` is an 8-byte value split over two registers, 4
/// bytes each (DWARF's `DW_OP_piece 4` pairs, as optimised code keeps a
/// `(u32, u32)` key): `v = low 32 bits of v | low 32 bits of that
/// register << 32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub base: u8,
    pub steps: u8,
    /// 0, or `LOC_BASE_REGISTER + n`: register `n` holds the upper 4 bytes
    /// (where the probe fires only, like register bases).
    pub high_half: u8,
    pub _pad: [u8; 5],
    pub offsets: [i64; MAX_LOC_STEPS],
    pub final_offset: i64,
}

impl Loc {
    /// The literal 0, the value of a location nobody configured.
    pub const ZERO: Loc = Loc {
        base: LOC_BASE_CONST,
        steps: 0,
        high_half: 0,
        _pad: [0; 5],
        offsets: [0; MAX_LOC_STEPS],
        final_offset: 0,
    };

    /// True when the location reads `ret`, which exists only where a
    /// return is observed.
    pub const fn needs_return(&self) -> bool {
        self.base == LOC_BASE_RET || self.base == LOC_BASE_RET_HIGH
    }
}

/// [`ReturnTest::op`] values: how the tested value is compared.
pub mod test_op {
    /// No test: every return is an allocation.
    pub const ALWAYS: u32 = 0;
    /// An allocation when the value equals [`super::ReturnTest::value`].
    pub const EQUAL: u32 = 1;
    /// An allocation when the value differs from it.
    pub const NOT_EQUAL: u32 = 2;
}

/// Which of allocate's returns are allocations: for an enum result
/// (`Option`, `Result`), the discriminant of the success variant.
///
/// Evaluation: `d = (evaluate(loc) >> shift) & mask`, then compared with
/// `value` by `op` ([`test_op`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReturnTest {
    pub loc: Loc,
    pub mask: u64,
    pub value: u64,
    pub shift: u32,
    pub op: u32,
}

impl ReturnTest {
    /// Every return is an allocation.
    pub const ALWAYS: ReturnTest = ReturnTest {
        loc: Loc::ZERO,
        mask: 0,
        value: 0,
        shift: 0,
        op: test_op::ALWAYS,
    };
}

/// [`AllocLocs::kind`] values: what an allocate function does besides
/// allocating.
pub mod alloc_kind {
    /// Allocates (or fails); nothing else.
    pub const PLAIN: u32 = 0;
    /// `realloc`: releases the buffer [`super::AllocLocs::old_id`] names
    /// (saved at entry) and allocates the one it returns, at the stack of
    /// the realloc. A null old id is a plain allocation; a failed realloc
    /// (the test says failure, size > 0) leaves the old buffer live; size
    /// 0 with a null result frees it.
    pub const REALLOC: u32 = 1;
}

/// [`AllocLocs::flags`] bits.
pub mod alloc_flags {
    /// An allocator's public entry point (a preset's): allocate and release
    /// calls made while it is in flight on the same thread (glibc's realloc
    /// calling malloc and free) are its own business, not the program's,
    /// and are counted apart instead of recorded.
    pub const OUTERMOST: u32 = 1;
}

/// What an allocate probe evaluates at its return, by the attach cookie of
/// its entry (`ALLOC_LOCS`): each function probed in a session (malloc,
/// calloc, realloc, a pool's allocate) has its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocLocs {
    pub id: Loc,
    /// Bytes, multiplied by `count` (the literal 1 but for calloc).
    pub size: Loc,
    pub count: Loc,
    /// What the id is unique within; the literal 0 for pointers.
    pub scope: Loc,
    /// Which returns are allocations.
    pub test: ReturnTest,
    /// [`alloc_kind::REALLOC`]: the old buffer's id (`argN` = at entry).
    pub old_id: Loc,
    /// [`alloc_kind`].
    pub kind: u32,
    /// [`alloc_flags`] bits.
    pub flags: u32,
}

impl AllocLocs {
    /// Nothing configured: an id of 0 at every return.
    pub const ZERO: AllocLocs = AllocLocs {
        id: Loc::ZERO,
        size: Loc::ZERO,
        count: Loc::ZERO,
        scope: Loc::ZERO,
        test: ReturnTest::ALWAYS,
        old_id: Loc::ZERO,
        kind: alloc_kind::PLAIN,
        flags: 0,
    };
}

/// Where a release probe finds the buffer's identity, by attach cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleaseLocs {
    /// The id itself.
    pub id: Loc,
    /// What the id is scoped to (the pool instance for an integer key);
    /// the literal 0 when ids are pointers, unique on their own.
    pub scope: Loc,
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
    /// The flags a complete walk may have: one that is also cut or
    /// broken is not.
    pub const COMPLETE_WALK: u32 = COMPLETE | USED_FRAME_POINTERS;
}

/// Which stack walker the entry probe uses.
pub mod walker {
    /// `.eh_frame` unwind tables in BPF maps, frame pointers where a row is
    /// missing.
    pub const DWARF: u32 = 0;
    /// The kernel's frame-pointer walker (`bpf_get_stack`).
    pub const FRAME_POINTERS: u32 = 1;
}

/// Slots of the `WALKERS` program array, which the walk tail-calls.
pub mod walker_slot {
    /// `pool_walk_stack`: steps frame by frame with the unwind rows.
    pub const STEP: u32 = 0;
    /// `pool_walk_cached`: re-reads the slots of the thread's cached walk.
    pub const CACHED: u32 = 1;
    /// `pool_walk_remember`: makes a complete walk the thread's cached one.
    pub const REMEMBER: u32 = 2;
    /// Slots in the array.
    pub const COUNT: u32 = 3;
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
    /// What `id` is unique within: the pool instance for integer keys
    /// (two pools hand out the same keys), 0 for pointers.
    pub scope: u64,
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
    /// The stack pointer; [`UNKNOWN_SP`] after an arm64 frame-record step,
    /// which does not tell it.
    pub sp: u64,
    /// The frame pointer (rbp, x29).
    pub bp: u64,
    /// The link register (arm64's x30) where the probe fired: the return
    /// address of the walk's first frame until its prologue saved it (0
    /// where calls push the return address).
    pub lr: u64,
    /// FNV-1a of the frames so far: the stack's id once done.
    pub hash: u64,
    pub tail_calls: u32,
    pub done: u32,
    /// The mapping the previous frame was found in: the next frame is
    /// usually in the same object, and checking its range saves the
    /// longest-prefix lookup. Zero (matching nothing) at the start of
    /// each walk, so a walk never sees an older walk's mappings.
    pub mapping: MappingEntry,
    /// The unwind tables' generation when the walk started: the thread's
    /// cached walk is usable only if it was walked under the same tables.
    pub generation: u64,
    /// [`walk_mode`]: whether the walk may still join the thread's cached
    /// walk ([`WalkCache`]), is re-reading its slots, or took it whole.
    pub mode: u32,
    /// Entries of the cached walk usable by this walk (0: none).
    pub cached_len: u32,
    /// While verifying: the cache entry the walk stands on; after a slot
    /// differed, the entry it differed at (a later join is below it).
    pub cached_at: u32,
    /// The frame index (in the stack record) where the walk last joined
    /// the cache, and the cache entry it joined.
    pub joined_at: u32,
    pub joined_entry: u32,
    /// Entries this walk wrote to the per-CPU walk scratch: one per frame
    /// (its state and step), and the state after a last step that read a
    /// zero return address.
    pub entries: u32,
    /// Frames taken from the cache.
    pub reused: u32,
    /// The bounds of the search for a cached state (see [`seek_sp`]).
    pub seek_bounds: [u32; 2],
    pub _pad: u32,
}

/// [`WalkState::sp`] once a step could not tell the caller's stack
/// pointer: arm64's frame-pointer chain, whose frame record {x29, x30} can
/// sit anywhere in its frame (GCC puts it at the bottom), so that the
/// caller's stack pointer is not the frame pointer plus 16. The caller's
/// CFA then comes from the frame pointer, where its row says its own frame
/// record is, or the walk follows the chain again.
pub const UNKNOWN_SP: u64 = 0;

const _: () = assert!(size_of::<WalkState>() == 128);
const _: () = assert!(core::mem::offset_of!(WalkState, lr) == 24);

/// [`WalkState::mode`] values.
pub mod walk_mode {
    /// No usable cached walk (none, or walked with other tables).
    pub const UNCACHED: u32 = 0;
    /// Stepping frame by frame, looking for a state the cached walk had
    /// (below the entry where a slot last differed, if one did).
    pub const SEEKING: u32 = 1;
    /// Joined: re-reading the cached walk's slots, frame by frame.
    pub const VERIFYING: u32 = 2;
    /// Every slot below the join held its value: the cached walk's frames
    /// from the join on are this walk's.
    pub const REUSED: u32 = 3;
}

/// Allocate calls one thread may have in flight at once (nested or
/// recursive calls); deeper ones are counted, not tracked.
pub const MAX_NESTED_ALLOCS: usize = 4;

/// One allocate call between its entry and its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// What identifies the call (`arch::entry_call_slot`): x86-64's
    /// return-address slot (rsp at entry); arm64's stack pointer at the
    /// call, where nothing is pushed (the callee's CFA).
    pub entry_sp: u64,
    /// The return address (read at entry, before any uretprobe replaced
    /// it: the kernel hijacks it after every entry handler ran).
    pub return_address: u64,
    /// Non-zero while the slot holds the original return address again
    /// because a panic started unwinding: the value (the kernel's uretprobe
    /// trampoline) to put back if the panic is caught inside the call.
    pub trampoline: u64,
    /// `bpf_ktime_get_ns()` at entry.
    pub entered_ns: u64,
    /// The registers saved at entry: the arguments (`argN` in locations),
    /// then on arm64 x8 (the hidden result slot, [`LOC_BASE_RESULT_SLOT`]).
    pub args: [u64; LOC_BASE_SAVED_COUNT as usize],
    pub site: SiteKey,
    /// Non-zero for a call made inside an [`alloc_flags::OUTERMOST`]
    /// call in flight: its return is taken off and counted, not recorded.
    pub internal: u32,
    /// [`alloc_flags`] of the function called.
    pub flags: u32,
}

// InFlight's layout: the saved registers sit after four u64s and before
// the site, with no padding (x86-64: 104 bytes, as always; arm64: 128).
const _: () = {
    let saved = 8 * LOC_BASE_SAVED_COUNT as usize;
    assert!(core::mem::offset_of!(InFlight, args) == 32);
    assert!(core::mem::offset_of!(InFlight, site) == 32 + saved);
    assert!(core::mem::size_of::<InFlight>() == 32 + saved + core::mem::size_of::<SiteKey>() + 8);
};

/// Per-thread state (`PENDING[pid_tgid]`): the allocate calls in flight,
/// innermost last, and the scratch of the stack walk in progress. Too
/// large for the BPF stack: it lives in the map and is reused for the
/// thread's life (removed when the thread exits).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadState {
    /// Calls in `frames[..depth]`.
    pub depth: u32,
    /// The frame whose stack the walker is filling in.
    pub walking: u32,
    pub frames: [InFlight; MAX_NESTED_ALLOCS],
    pub walk: WalkState,
    pub stack: StackRecord,
}

/// How an allocate probe site is reached ([`EntrySite::kind`]).
pub mod entry_kind {
    /// The probe is on the function's first instruction.
    pub const FUNCTION: u32 = 0;
    /// The probe is on a `call` of the function (its first instruction
    /// cannot be probed): the callee has not been entered yet.
    pub const CALL_SITE: u32 = 1;
    /// The probe is where control enters an inlined instance of the
    /// function: there is no call, so no return-address slot. The call is
    /// recorded as if its slot were just below the stack pointer, where
    /// the probe on the instance's exit (same frame, same stack pointer)
    /// looks for it.
    pub const INLINED: u32 = 2;
}

/// Where an inlined allocate's result is when control leaves one of its
/// instances, by the exit probe's attach cookie (`ALLOC_EXITS`): each
/// caller keeps it in places of its own choosing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitLocs {
    pub id: Loc,
    pub size: Loc,
    /// What the id is unique within (an integer key's pool type); the
    /// literal 0 for pointers.
    pub scope: Loc,
}

/// What the allocate entry probe must know about the site it fires at,
/// by attach cookie (`ENTRY_SITES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntrySite {
    /// [`entry_kind`].
    pub kind: u32,
    /// Length of the `call` instruction (call sites).
    pub call_length: u32,
    /// Callee address minus the call instruction's address (call sites).
    pub callee_delta: i64,
}

/// What a counter counts, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Calls and their outcomes.
    Event,
    /// Something the kernel side could not record: the picture is
    /// incomplete by this much.
    Lost,
    /// How stacks were walked.
    Stack,
    /// What happened to the target that the report must mention.
    Target,
    /// Filled in by userspace when it reads the counters.
    Derived,
}

/// One counter: its slot, its name in reports and JSON, what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterInfo {
    pub index: u32,
    pub name: &'static str,
    pub kind: CounterKind,
    pub meaning: &'static str,
}

/// Declares the counters once: the slot constants both sides use, and the
/// table userspace reads and reports them by.
macro_rules! counters {
    ($($index:literal $constant:ident $name:ident $kind:ident $meaning:literal;)*) => {
        /// Indices into the per-CPU `COUNTERS` array. Every event the
        /// kernel side could not record has one, so every report can say
        /// what was lost.
        pub mod counter {
            $(
                #[doc = $meaning]
                pub const $constant: u32 = $index;
            )*
            /// Number of counters; the array is sized by this.
            pub const COUNT: u32 = [$($index),*].len() as u32;
        }

        /// Every counter, in slot order.
        pub const COUNTERS: [CounterInfo; counter::COUNT as usize] = [$(
            CounterInfo {
                index: $index,
                name: stringify!($name),
                kind: CounterKind::$kind,
                meaning: $meaning,
            },
        )*];
    };
}

counters! {
    0 ALLOC_CALLS alloc_calls Event "allocate calls entered";
    1 ALLOCATIONS allocations Event "allocations recorded in the live table";
    2 RELEASE_CALLS release_calls Event "release calls entered";
    3 RELEASES releases Event "releases that matched a recorded allocation";
    4 UNKNOWN_RELEASES unknown_releases Event "releases of an id the live table did not hold (allocated before attach, or locations that disagree)";
    5 ALLOC_UNWOUND alloc_unwound Event "allocate calls a panic unwound through: they returned nothing, so they are not allocations";
    6 IN_FLIGHT in_flight Derived "allocate calls in flight when the counters were read";
    7 ENTRIES_WITHOUT_RETURN entries_without_return Lost "allocate calls whose return was never seen although their frame is gone";
    8 EXITED_IN_ALLOCATE exited_in_allocate Lost "allocate calls in flight when their thread exited";
    9 NESTED_TOO_DEEP nested_too_deep Lost "allocate calls nested deeper than the per-thread limit, not tracked";
    10 THREADS_FULL threads_full Lost "allocate calls not tracked because the per-thread table was full";
    11 ALLOC_ID_READ_ERRORS alloc_id_read_errors Lost "allocate returns whose id location (or its pool scope, or an enum result's discriminant) could not be read";
    12 LIVE_MAP_FULL live_map_full Lost "allocations not recorded because the live table was full";
    13 RETURNS_WITHOUT_ENTRY returns_without_entry Lost "allocate returns whose entry was not recorded (calls in flight at attach, or nested too deep)";
    14 RELEASE_ID_READ_ERRORS release_id_read_errors Lost "release calls whose id location (or its pool scope) could not be read";
    15 SIZE_READ_ERRORS size_read_errors Lost "allocations whose size location could not be read (tracked with size 0)";
    16 SITE_MAP_FULL site_map_full Lost "allocations tracked but not counted per site because the site table was full";
    17 STACK_ERRORS stack_errors Lost "allocations whose stack could not be stored (counted under a site without frames)";
    18 REALLOCATED_IDS reallocated_ids Lost "allocations that returned an id still live: the release of the older buffer was missed";
    19 FRAMES_UNWOUND frames_unwound Stack "frames unwound with .eh_frame rows";
    20 FRAMES_BY_FRAME_POINTER frames_by_frame_pointer Stack "frames unwound with frame pointers because no row covered the address";
    21 STACKS_COMPLETE stacks_complete Stack "stacks walked to their entry point";
    22 STACKS_TRUNCATED stacks_truncated Stack "stacks cut at the maximum depth";
    23 STACKS_BROKEN stacks_broken Stack "stacks that stopped early";
    24 UNWIND_REPAIRS unwind_repairs Target "return addresses put back so a panic could unwind through allocate";
    25 UNWIND_REPAIR_FAILURES unwind_repair_failures Target "return addresses that could not be put back before an unwind";
    26 CAUGHT_INSIDE caught_inside Target "panics caught inside allocate: its return probe was put back in place";
    27 FORKS forks Target "processes the target forked (their allocations are not observed)";
    28 EXECS execs Target "times the target replaced its program with exec (the probes went with the old one)";
    29 ALLOC_FAILED alloc_failed Event "allocate returns of the failure variant (None, Err, a null pointer): nothing was allocated";
    30 FRAMES_REUSED frames_reused Stack "frames taken from the thread's previous walk after re-reading every stack slot it had read from there on";
    31 WALK_CACHE_MISMATCHES walk_cache_mismatches Stack "walks that joined the thread's previous walk where a re-read slot had changed: they stepped on from there";
    32 WALK_CACHES_FULL walk_caches_full Stack "walks of threads that got no walk cache because its table was full (stepped frame by frame)";
    33 REALLOCS reallocs Event "reallocs of a non-null buffer that resized, moved or freed it: each released the old buffer (counted in releases or unknown_releases) and, unless it freed, allocated the new one at the realloc's stack";
    34 REALLOC_FAILED realloc_failed Event "reallocs of a non-null buffer that failed (null result, size > 0): the old buffer stays live (also counted in alloc_failed)";
    35 REALLOC_FREES realloc_frees Event "reallocs to size 0 that freed the old buffer and returned null: nothing was allocated";
    36 ALLOCATOR_INTERNAL_ALLOCS allocator_internal_allocs Event "allocate calls made inside another probed allocator entry point on the same thread (realloc calling malloc): the outer call accounts for them";
    37 ALLOCATOR_INTERNAL_RELEASES allocator_internal_releases Event "release calls made inside a probed allocator entry point on the same thread (realloc calling free): the outer call accounts for them";
    38 REALLOC_UNKNOWN_OLD realloc_unknown_old Event "reallocs whose old buffer the live table did not hold (allocated before attach): also counted in unknown_releases";
    39 NULL_RELEASES null_releases Event "releases of a null pointer by an allocator's entry point (free(NULL)): nothing to release";
}

/// Every allocate call ends up in exactly one of these (after the
/// entry was counted in `ALLOC_CALLS`), so they sum to it.
pub const ALLOC_CALL_OUTCOMES: [u32; 12] = [
    counter::ALLOCATIONS,
    counter::ALLOC_FAILED,
    counter::REALLOC_FREES,
    counter::ALLOCATOR_INTERNAL_ALLOCS,
    counter::ALLOC_UNWOUND,
    counter::IN_FLIGHT,
    counter::ENTRIES_WITHOUT_RETURN,
    counter::EXITED_IN_ALLOCATE,
    counter::NESTED_TOO_DEEP,
    counter::THREADS_FULL,
    counter::ALLOC_ID_READ_ERRORS,
    counter::LIVE_MAP_FULL,
];

/// Names of the maps and globals, shared so a rename breaks the build, not
/// the attach.
pub mod names {
    pub const MAP_COUNTERS: &str = "COUNTERS";
    pub const MAP_SITES: &str = "SITES";
    pub const MAP_LIVE: &str = "LIVE";
    pub const MAP_PENDING: &str = "PENDING";
    pub const MAP_ENTRY_SITES: &str = "ENTRY_SITES";
    pub const MAP_TRAMPOLINE: &str = "TRAMPOLINE";
    pub const MAP_STACKS: &str = "STACKS";
    pub const MAP_UNWIND_ROWS: &str = "UNWIND_ROWS";
    pub const MAP_UNWIND_PAGES: &str = "UNWIND_PAGES";
    pub const MAP_UNWIND_MAPPINGS: &str = "UNWIND_MAPPINGS";
    pub const MAP_WALKERS: &str = "WALKERS";
    pub const MAP_WALK_CACHES: &str = "WALK_CACHES";
    pub const MAP_WALK_SCRATCH: &str = "WALK_SCRATCH";
    pub const MAP_UNWIND_GENERATION: &str = "UNWIND_GENERATION";
    pub const MAP_RELEASE_LOCS: &str = "RELEASE_LOCS";
    pub const MAP_ALLOC_EXITS: &str = "ALLOC_EXITS";
    pub const MAP_ALLOC_LOCS: &str = "ALLOC_LOCS";
    pub const MAP_LOADS: &str = "LOADS";
    pub const GLOBAL_WALKER: &str = "WALKER";
    pub const GLOBAL_ALLOCATOR_ENTRY_POINTS: &str = "ALLOCATOR_ENTRY_POINTS";
    pub const GLOBAL_TARGET_TGID: &str = "TARGET_TGID";
    pub const GLOBAL_TARGET_PID_NS_DEV: &str = "TARGET_PID_NS_DEV";
    pub const GLOBAL_TARGET_PID_NS_INO: &str = "TARGET_PID_NS_INO";
    pub const PROG_ALLOC_ENTER: &str = "pool_alloc_enter";
    pub const PROG_ALLOC_RETURN: &str = "pool_alloc_return";
    pub const PROG_RELEASE_ENTER: &str = "pool_release_enter";
    pub const PROG_WALK: &str = "pool_walk_stack";
    pub const PROG_WALK_CACHED: &str = "pool_walk_cached";
    pub const PROG_WALK_REMEMBER: &str = "pool_walk_remember";
    pub const PROG_ALLOC_RETURN_SITE: &str = "pool_alloc_return_site";
    pub const PROG_UNWIND_START: &str = "pool_unwind_start";
    pub const PROG_UNWIND_CAUGHT: &str = "pool_unwind_caught";
    pub const PROG_PANIC_CAUGHT: &str = "pool_panic_caught";
    pub const PROG_THREAD_EXIT: &str = "pool_thread_exit";
    pub const PROG_START_GATE: &str = "pool_start_gate";
    pub const PROG_EMPTY: &str = "pool_empty";
    pub const PROG_NEW_TASK: &str = "pool_new_task";
    pub const PROG_EXEC: &str = "pool_exec";
    pub const PROG_ALLOC_INLINED_EXIT: &str = "pool_alloc_inlined_exit";
    pub const PROG_LOADS_CHANGED: &str = "pool_loads_changed";
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
    unsafe impl aya::Pod for super::ReturnTest {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReleaseLocs {}
    // SAFETY: as above (`Loc`s, a `ReturnTest`, two u32).
    unsafe impl aya::Pod for super::AllocLocs {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SiteStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LiveKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LiveBuf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InFlight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EntrySite {}
    // SAFETY: as above (two `Loc`s).
    unsafe impl aya::Pod for super::ExitLocs {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::x86_64::UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::aarch64::UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageRows {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MappingEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CachedFrame {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WalkCache {}
}

// Both architectures' numberings, whichever this build uses, so that one
// host's tests check both.
#[cfg(test)]
#[path = "arch/loc_aarch64.rs"]
mod loc_aarch64_for_tests;
#[cfg(test)]
#[path = "arch/loc_x86_64.rs"]
mod loc_x86_64_for_tests;

#[cfg(test)]
mod loc_numbering_tests {
    use super::{loc_aarch64_for_tests as arm64, loc_x86_64_for_tests as x86, LOC_BASE_REGISTER};

    /// (argument count, saved count, result slot, ret, constant, ret.1).
    type Numbering = (u8, u8, u8, u8, u8, u8);

    const X86_64: Numbering = (
        x86::LOC_BASE_ARG_COUNT,
        x86::LOC_BASE_SAVED_COUNT,
        x86::LOC_BASE_RESULT_SLOT,
        x86::LOC_BASE_RET,
        x86::LOC_BASE_CONST,
        x86::LOC_BASE_RET_HIGH,
    );
    const AARCH64: Numbering = (
        arm64::LOC_BASE_ARG_COUNT,
        arm64::LOC_BASE_SAVED_COUNT,
        arm64::LOC_BASE_RESULT_SLOT,
        arm64::LOC_BASE_RET,
        arm64::LOC_BASE_CONST,
        arm64::LOC_BASE_RET_HIGH,
    );

    /// Every base a location can have that is not a saved register is
    /// outside the saved ones, and no two bases collide.
    fn assert_consistent((args, saved, slot, ret, constant, ret_high): Numbering) {
        assert!(args <= saved && slot < saved);
        let others = [ret, constant, ret_high];
        for (i, &base) in others.iter().enumerate() {
            assert!(base >= saved && base < LOC_BASE_REGISTER, "{base}");
            assert!(!others[i + 1..].contains(&base), "{base} twice");
        }
    }

    #[test]
    fn x86_64_keeps_the_numbering_every_earlier_observer_used() {
        assert_eq!(X86_64, (6, 6, 0, 6, 7, 8));
        assert_eq!(LOC_BASE_REGISTER, 16);
        assert_consistent(X86_64);
    }

    #[test]
    fn arm64_saves_x0_to_x8_and_numbers_the_rest_after_them() {
        assert_eq!(AARCH64, (8, 9, 8, 9, 10, 11));
        assert_consistent(AARCH64);
    }

    #[test]
    fn in_flight_holds_the_saved_registers_of_this_build() {
        #[cfg(bpf_target_arch = "x86_64")]
        assert_eq!(core::mem::size_of::<super::InFlight>(), 104);
        #[cfg(bpf_target_arch = "aarch64")]
        assert_eq!(core::mem::size_of::<super::InFlight>(), 128);
    }
}
