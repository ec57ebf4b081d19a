//! Allocator presets (`--preset`): the entry points of a well-known
//! allocator with their locations written out, so nobody has to work out
//! where calloc's size or posix_memalign's pointer is.

use observer_ebpf::{test_op, ReturnTest, LOC_BASE_RET};

use super::extra_functions::{FunctionRequest, ReleaseRequest};
use super::loc::Location;
use super::returns::ReturnChoice;
use super::{LocSpec, ProbeRequest};

/// A known allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The process's C library (glibc's `libc.so.6`, musl's
    /// `ld-musl-*.so.1`, or the executable when it is linked statically):
    /// malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign and
    /// free.
    Libc,
    /// Rust's global allocator entry points in the executable
    /// (`__rust_alloc`, `__rust_alloc_zeroed`, `__rust_realloc`,
    /// `__rust_dealloc`), whatever allocator serves them.
    RustGlobal,
    /// jemalloc as the `tikv-jemallocator` crate links it into the
    /// executable, its symbols prefixed `_rjem_`: malloc, mallocx, calloc,
    /// realloc, rallocx, posix_memalign, aligned_alloc; sdallocx, free,
    /// dallocx.
    Jemalloc,
    /// mimalloc as the `mimalloc` crate links it into the executable:
    /// mi_malloc_aligned, mi_zalloc_aligned, mi_realloc_aligned and the
    /// unaligned forms; mi_free.
    Mimalloc,
}

/// Where libc's functions are looked for: the process's C library,
/// whichever file it is ([`crate::resolve::object::c_library`]).
const LIBC: &str = crate::resolve::object::C_LIBRARY;

/// One allocate function of a preset: where its values are.
struct Entry {
    function: &'static str,
    size: &'static str,
    count: &'static str,
    id: &'static str,
    success: Success,
    realloc_old: Option<&'static str>,
    optional: bool,
}

/// What a successful call returns.
#[derive(Clone, Copy)]
enum Success {
    /// A non-null pointer.
    NonNull,
    /// The int 0 (posix_memalign; the pointer is written through arg0).
    Zero,
}

impl Success {
    fn test(self) -> ReturnTest {
        let ret = Location::parse("ret").expect("a valid location").compiled();
        debug_assert_eq!(ret.base, LOC_BASE_RET);
        match self {
            Success::NonNull => ReturnTest {
                loc: ret,
                mask: u64::MAX,
                value: 0,
                shift: 0,
                op: test_op::NOT_EQUAL,
            },
            Success::Zero => ReturnTest {
                loc: ret,
                mask: u64::from(u32::MAX),
                value: 0,
                shift: 0,
                op: test_op::EQUAL,
            },
        }
    }

    fn words(self) -> &'static str {
        match self {
            Success::NonNull => "allocations are the calls that return a non-null pointer",
            Success::Zero => "allocations are the calls that return 0",
        }
    }
}

const fn entry(function: &'static str, size: &'static str, id: &'static str) -> Entry {
    Entry {
        function,
        size,
        count: "1",
        id,
        success: Success::NonNull,
        realloc_old: None,
        optional: false,
    }
}

/// libc's allocate functions, malloc first (C11 and POSIX signatures).
const LIBC_ALLOCS: [Entry; 6] = [
    entry("malloc", "arg0", "ret"),
    Entry {
        count: "arg0",
        ..entry("calloc", "arg1", "ret")
    },
    Entry {
        realloc_old: Some("arg0"),
        ..entry("realloc", "arg1", "ret")
    },
    Entry {
        success: Success::Zero,
        ..entry("posix_memalign", "arg2", "*arg0")
    },
    entry("aligned_alloc", "arg1", "ret"),
    entry("memalign", "arg1", "ret"),
];

/// Rust's global allocator shims (`alloc::alloc`): `__rust_alloc(size,
/// align)`, `__rust_alloc_zeroed(size, align)`, `__rust_realloc(ptr,
/// old_size, align, new_size)`, `__rust_dealloc(ptr, size, align)`. Since
/// Rust 1.88 they are v0-mangled under `__rustc::`; the paths below match
/// both that and the older unmangled names. A program that never
/// allocates zeroed memory or reallocates has no such shim.
const RUST_ALLOCS: [Entry; 3] = [
    entry("__rust_alloc", "arg0", "ret"),
    Entry {
        optional: true,
        ..entry("__rust_alloc_zeroed", "arg0", "ret")
    },
    Entry {
        realloc_old: Some("arg0"),
        optional: true,
        ..entry("__rust_realloc", "arg3", "ret")
    },
];

/// jemalloc's allocate functions as tikv-jemallocator calls them
/// (`alloc` → malloc or, for large alignments, mallocx; `alloc_zeroed` →
/// calloc or mallocx; `realloc` → realloc or rallocx), and the standard
/// ones a C caller of the prefixed API uses. `_rjem_malloc` is in every
/// build; the linker drops what nothing calls.
const JEMALLOC_ALLOCS: [Entry; 7] = [
    entry("_rjem_malloc", "arg0", "ret"),
    Entry {
        optional: true,
        ..entry("_rjem_mallocx", "arg0", "ret")
    },
    Entry {
        count: "arg0",
        optional: true,
        ..entry("_rjem_calloc", "arg1", "ret")
    },
    Entry {
        realloc_old: Some("arg0"),
        optional: true,
        ..entry("_rjem_realloc", "arg1", "ret")
    },
    Entry {
        realloc_old: Some("arg0"),
        optional: true,
        ..entry("_rjem_rallocx", "arg1", "ret")
    },
    Entry {
        success: Success::Zero,
        optional: true,
        ..entry("_rjem_posix_memalign", "arg2", "*arg0")
    },
    Entry {
        optional: true,
        ..entry("_rjem_aligned_alloc", "arg1", "ret")
    },
];

/// jemalloc's release functions: `sdallocx(ptr, size, flags)` is what
/// Rust's `dealloc` calls.
const JEMALLOC_RELEASES: [&str; 3] = ["_rjem_sdallocx", "_rjem_free", "_rjem_dallocx"];

/// mimalloc's allocate functions: the aligned forms the `mimalloc` crate's
/// `GlobalAlloc` calls (`mi_malloc_aligned(size, align)`,
/// `mi_zalloc_aligned(size, align)`, `mi_realloc_aligned(ptr, size,
/// align)`), then the unaligned ones C callers use.
const MIMALLOC_ALLOCS: [Entry; 7] = [
    entry("mi_malloc_aligned", "arg0", "ret"),
    Entry {
        optional: true,
        ..entry("mi_zalloc_aligned", "arg0", "ret")
    },
    Entry {
        realloc_old: Some("arg0"),
        optional: true,
        ..entry("mi_realloc_aligned", "arg1", "ret")
    },
    Entry {
        optional: true,
        ..entry("mi_malloc", "arg0", "ret")
    },
    Entry {
        optional: true,
        ..entry("mi_zalloc", "arg0", "ret")
    },
    Entry {
        count: "arg0",
        optional: true,
        ..entry("mi_calloc", "arg1", "ret")
    },
    Entry {
        realloc_old: Some("arg0"),
        optional: true,
        ..entry("mi_realloc", "arg1", "ret")
    },
];

impl Preset {
    /// The probe request for this preset.
    pub fn request(self, returns: ReturnChoice, accept_abort_on_panic: bool) -> ProbeRequest {
        let (allocs, releases, object): (&[Entry], &[&str], Option<&str>) = match self {
            Preset::Libc => (&LIBC_ALLOCS, &["free"], Some(LIBC)),
            Preset::RustGlobal => (&RUST_ALLOCS, &["__rust_dealloc"], None),
            Preset::Jemalloc => (&JEMALLOC_ALLOCS, &JEMALLOC_RELEASES, None),
            Preset::Mimalloc => (&MIMALLOC_ALLOCS, &["mi_free"], None),
        };
        let path = |function: &str| match object {
            Some(object) => format!("{object}:{function}"),
            None => function.to_string(),
        };
        let location = |text: &str| Location::parse(text).expect("presets hold valid locations");
        let first = &allocs[0];
        ProbeRequest {
            alloc: path(first.function),
            release: path(releases[0]),
            size: LocSpec::Given(location(first.size)),
            alloc_id: LocSpec::Given(location(first.id)),
            release_id: LocSpec::Given(location("arg0")),
            returns,
            accept_abort_on_panic,
            success: Some((first.success.test(), first.success.words().to_string())),
            more_allocs: allocs[1..]
                .iter()
                .map(|entry| FunctionRequest {
                    function: path(entry.function),
                    size: location(entry.size),
                    count: location(entry.count),
                    id: location(entry.id),
                    test: entry.success.test(),
                    realloc_old: entry.realloc_old.map(location),
                    optional: entry.optional,
                })
                .collect(),
            // Every release takes the buffer first.
            more_releases: releases[1..]
                .iter()
                .map(|function| ReleaseRequest {
                    function: path(function),
                    id: location("arg0"),
                    optional: true,
                })
                .collect(),
            outermost: true,
            no_unwind: self.written_in_c().then(|| C_ALLOCATOR.to_string()),
        }
    }

    /// Whether the allocator is C code, entered from Rust only through
    /// `extern "C"` functions: jemalloc and mimalloc linked into the
    /// executable, and the C library wherever it is. (glibc's shared
    /// object could also be proven from its code, but a statically linked
    /// one calls code no symbol describes, and musl's is not proven the
    /// same way: C is C in all three.)
    fn written_in_c(self) -> bool {
        matches!(self, Preset::Libc | Preset::Jemalloc | Preset::Mimalloc)
    }
}

/// Why no panic unwinds through a C allocator's entry points: C code does
/// not unwind, and a panic in a Rust callback it calls (a hook) stops at
/// that callback's `extern "C"` boundary, where Rust aborts (since 1.81):
/// a uretprobe there changes nothing a panic could do.
const C_ALLOCATOR: &str = "it is a C allocator's entry point: C code does not unwind, and a panic \
     in a Rust callback it calls aborts at the callback's extern \"C\" boundary (Rust 1.81 and \
     later), so no panic unwinds through it";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_location_parses_and_only_reallocs_release() {
        for preset in [
            Preset::Libc,
            Preset::RustGlobal,
            Preset::Jemalloc,
            Preset::Mimalloc,
        ] {
            let request = preset.request(ReturnChoice::Auto, false);
            assert!(request.outermost);
            for more in &request.more_allocs {
                let resizes = ["realloc", "rallocx", "realloc_aligned"]
                    .iter()
                    .any(|name| more.function.ends_with(name));
                assert_eq!(more.realloc_old.is_some(), resizes, "{}", more.function);
            }
        }
        let libc = Preset::Libc.request(ReturnChoice::Auto, false);
        assert_eq!(libc.alloc, "libc:malloc");
        let calloc = &libc.more_allocs[0];
        assert_eq!(
            (calloc.size.to_string(), calloc.count.to_string()),
            ("arg1".into(), "arg0".into())
        );
        let memalign = &libc.more_allocs[2];
        assert_eq!(memalign.id.to_string(), "*arg0");
        assert_eq!(memalign.test.op, test_op::EQUAL);
    }
}
