//! What every fuzz target shares: a bound on single allocations, so that a
//! parser asking for an absurd amount of memory is a finding rather than a
//! lazily committed mapping libFuzzer's RSS limit never sees, and small
//! helpers to turn fuzz input into what the parsers take.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;

use observer::resolve::elf::ElfInfo;

/// The largest single allocation a target may make. Inputs are at most a
/// few MiB, so a parser asking for more than this trusted a length field.
/// libFuzzer's `-malloc_limit_mb` would do the same, but only with a
/// sanitizer's allocator, which these runs do without (safe Rust; speed).
pub const MAX_ALLOCATION: usize = 256 << 20;

/// The system allocator, refusing any single allocation above
/// [`MAX_ALLOCATION`]. A refusal makes `alloc` return null, which Rust
/// turns into "memory allocation of N bytes failed" and an abort: a crash
/// libFuzzer records with its input. Fallible reservations (`try_reserve`)
/// see an ordinary error, as they would on a machine out of memory.
pub struct BoundedAllocator;

// SAFETY: every method forwards to `System` with the caller's layout and
// pointer unchanged, or returns null before allocating anything, which
// `GlobalAlloc` allows for any allocation that cannot be satisfied.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with
        // this layout (the caller's contract for `dealloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `dealloc`; `new_size` is the caller's, checked
        // non-zero by its contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

/// The name under which fuzz input is parsed as a file (it only shows in
/// error messages).
pub const INPUT_PATH: &str = "fuzz-input";

/// Fuzz input as an ELF file the observer read, if it parses as one.
pub fn elf_info(data: &[u8]) -> Option<ElfInfo> {
    ElfInfo::parse(Path::new(INPUT_PATH), Arc::from(data)).ok()
}

/// Fuzz input as text: the parsers take `&str`, and the command line and
/// `/proc` hand them valid UTF-8 only (clap refuses the rest), so other
/// bytes are not worth a run.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
