//! Stage 5 — symbolize stacks: user addresses to function, file and line,
//! inlined frames included (blazesym, DWARF where present, ELF symbols
//! otherwise).
//!
//! Addresses only mean something against the process's mappings, which die
//! with it. So the mappings are cached while the process lives and every
//! mapped file is opened then (through `/proc/PID/map_files`, which also
//! reaches deleted files and other mount namespaces, else by its path
//! inside the target's root); symbolization reads the files through those
//! descriptors, and works after the target exited.
//!
//! blazesym is only ever given `/proc/self/fd/N` of a file opened safely
//! ([`crate::resolve::safe_file`]), with its own debug directories off; a
//! file that names other files (a debug link, a dwz alternate file) is
//! given as a sealed in-memory copy in which those sections have no name,
//! because blazesym would otherwise open whatever they name by path.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer as Blazesym};
use serde::Serialize;

use crate::resolve::debuginfo::{self, DebugInfo, DebugOptions};
use crate::resolve::elf::{without_link_sections, ElfLayout};
use crate::resolve::pattern::RustPath;
use crate::resolve::process::{Mapping, Process};
use crate::resolve::safe_file::{sealed_memory_file, SafeFile, TargetRoot};

/// One frame of a symbolized stack, innermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The address in the process (a return address for outer frames).
    pub address: u64,
    /// Demangled function name without hash, if known.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// True for a function inlined into the next frame.
    pub inlined: bool,
    /// The file the address is mapped from.
    pub module: Option<String>,
}

/// A mapped file, opened while the process lived, and its debug info.
struct CachedFile {
    object: ForBlazesym,
    /// Loadable segments, to turn file offsets into addresses for a
    /// separate debug file.
    layout: ElfLayout,
    debug: DebugInfo,
    /// The separate debug file, when [`DebugInfo::file`] names one.
    debug_file: Option<ForBlazesym>,
}

/// A file as blazesym gets it: a descriptor we hold, by its
/// `/proc/self/fd/N` path, never a path blazesym would resolve itself.
struct ForBlazesym {
    handle: File,
    /// False when only the symbol table may be used (a copy without link
    /// sections could not be made).
    dwarf: bool,
}

impl ForBlazesym {
    /// `file`, whose bytes are `data`: as it is when it names no other
    /// file, else a sealed in-memory copy whose link sections have no name.
    fn new(file: SafeFile, data: &[u8]) -> Self {
        match without_link_sections(data) {
            None => Self {
                handle: file.into_file(),
                dwarf: true,
            },
            Some(copy) => match sealed_memory_file("observer-elf", &copy) {
                Ok(handle) => Self {
                    handle,
                    dwarf: true,
                },
                Err(_) => Self {
                    handle: file.into_file(),
                    dwarf: false,
                },
            },
        }
    }

    fn source(&self) -> Elf {
        Elf {
            debug_syms: self.dwarf,
            ..Elf::new(format!("/proc/self/fd/{}", self.handle.as_raw_fd()))
        }
    }
}

/// A process's executable mappings, their files opened and their debug
/// information located: the slow part of a [`Symbolizer`], which can be
/// read on any thread.
pub struct MappedFiles {
    process: Process,
    mappings: Vec<Mapping>,
    /// Open files by (inode, path).
    files: HashMap<(u64, String), CachedFile>,
    /// Mapped files that could not be read, and why.
    unreadable: BTreeMap<String, String>,
    debug_options: DebugOptions,
}

/// Mappings cached from a live process plus a blazesym symbolizer.
pub struct Symbolizer {
    mapped: MappedFiles,
    blazesym: Blazesym,
    /// Allocate's name when it is inlined: a stack then starts inside a
    /// caller, at an instance of it, not at a function's first instruction.
    inlined_allocate: Option<crate::resolve::pattern::RustPath>,
    /// An allocator is probed (a preset): its own frames at the top of a
    /// stack are left out, so a stack starts at the code that allocated.
    fold_allocator: bool,
    /// Frames already found, by where the address was looked up: the
    /// stacks of a server share most of their addresses (its runtime's
    /// frames), and a report over thousands of stacks would otherwise look
    /// each one up again. Bounded by the distinct return addresses of the
    /// target's code.
    memo: std::sync::Mutex<HashMap<LookupKey, Vec<Frame>>>,
}

/// One lookup: the address, where it was looked up, and in which mapping
/// (a remapped range is a different key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LookupKey {
    address: u64,
    lookup: u64,
    inode: u64,
    mapping_start: u64,
    mapping_offset: u64,
}

/// An executable mapping of the target, as profile formats describe the
/// objects addresses belong to (pprof's `Mapping`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappedObject {
    pub path: String,
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// Offset in the file of the first mapped byte.
    pub file_offset: u64,
    /// The file's GNU build id (hex), when it has one and could be read.
    pub build_id: Option<String>,
}

/// The debug information found for one mapped object.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleDebugInfo {
    pub module: String,
    #[serde(flatten)]
    pub debug: DebugInfo,
}

impl MappedFiles {
    /// Caches the process's executable mappings and opens their files.
    pub fn read(process: &Process, debug_options: DebugOptions) -> Result<Self> {
        let mut mapped = Self {
            process: process.clone(),
            mappings: Vec::new(),
            files: HashMap::new(),
            unreadable: BTreeMap::new(),
            debug_options,
        };
        mapped.refresh()?;
        Ok(mapped)
    }

    /// See [`Symbolizer::refresh`].
    fn refresh(&mut self) -> Result<()> {
        let Ok(current) = self.process.executable_mappings() else {
            return Ok(());
        };
        // Opened for new mappings only, with the target's credentials now.
        let mut root: Option<Option<TargetRoot>> = None;
        for mapping in current {
            let key = (mapping.inode, mapping.path.clone());
            if !self.files.contains_key(&key) && !self.unreadable.contains_key(&mapping.path) {
                let root = root.get_or_insert_with(|| self.process.root().ok());
                match self.open_and_describe(&mapping, root.as_ref()) {
                    Ok(cached) => {
                        self.files.insert(key, cached);
                    }
                    Err(Some(why)) => {
                        self.unreadable.insert(mapping.path.clone(), why);
                    }
                    Err(None) => {}
                }
            }
            if !self.mappings.contains(&mapping) {
                self.mappings.push(mapping);
            }
        }
        Ok(())
    }

    /// Opens the mapped file and finds its debug information (its own
    /// DWARF, or a separate file that belongs to it). `Err(Some(why))` when
    /// the file is there but was not read.
    fn open_and_describe(
        &self,
        mapping: &Mapping,
        root: Option<&TargetRoot>,
    ) -> std::result::Result<CachedFile, Option<String>> {
        let file = mapping
            .open_file(self.process.pid, root)
            .map_err(|err| (!err.is_missing()).then(|| err.to_string()))?;
        let data = file.read_all().map_err(|err| Some(err.to_string()))?;
        // Not ELF (or unparsable): nothing to symbolize with.
        let layout = ElfLayout::parse(data).map_err(|_| None)?;
        let located = match root {
            Some(root) => {
                debuginfo::locate(&layout, Path::new(&mapping.path), root, &self.debug_options)
            }
            None => debuginfo::Located {
                info: DebugInfo::NONE,
                file: None,
            },
        };
        let object = ForBlazesym::new(file, &layout.data);
        Ok(CachedFile {
            object,
            layout: layout.without_data(),
            debug: located.info,
            debug_file: located
                .file
                .map(|debug| ForBlazesym::new(debug.file, &debug.data)),
        })
    }

    /// See [`Symbolizer::mapped_objects`].
    fn mapped_objects(&self) -> Vec<MappedObject> {
        let mut objects: Vec<MappedObject> = self
            .mappings
            .iter()
            .map(|mapping| MappedObject {
                path: mapping.path.clone(),
                start: mapping.start,
                end: mapping.end,
                file_offset: mapping.file_offset,
                build_id: self
                    .files
                    .get(&(mapping.inode, mapping.path.clone()))
                    .and_then(|cached| cached.layout.build_id.clone()),
            })
            .collect();
        objects.sort_by_key(|object| object.start);
        objects.dedup();
        objects
    }

    /// Which debug information each mapped object has.
    fn debug_info(&self) -> Vec<ModuleDebugInfo> {
        let unreadable = self.unreadable.iter().map(|(path, why)| ModuleDebugInfo {
            module: path.clone(),
            debug: DebugInfo {
                rejected: vec![format!("{path}: not read: {why}")],
                ..DebugInfo::NONE
            },
        });
        let mut out: Vec<ModuleDebugInfo> = self
            .files
            .iter()
            .map(|((_, path), cached)| ModuleDebugInfo {
                module: path.clone(),
                debug: cached.debug.clone(),
            })
            .chain(unreadable)
            .collect();
        out.sort_by(|a, b| a.module.cmp(&b.module));
        out
    }
}

impl Symbolizer {
    /// Caches the process's executable mappings and opens their files.
    pub fn new(process: &Process, debug_options: DebugOptions) -> Result<Self> {
        Ok(Self::from_files(MappedFiles::read(process, debug_options)?))
    }

    /// A symbolizer over mappings already read. It has no debug
    /// directories of its own: it only reads what we opened.
    pub fn from_files(mapped: MappedFiles) -> Self {
        let blazesym = Blazesym::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .set_debug_dirs(Some(Vec::<PathBuf>::new()))
            .build();
        Self {
            mapped,
            blazesym,
            memo: std::sync::Mutex::default(),
            inlined_allocate: None,
            fold_allocator: false,
        }
    }

    /// An allocator is probed: leave its own frames out of every stack
    /// (see [`allocator_frames`]).
    pub fn fold_allocator_frames(&mut self) {
        self.fold_allocator = true;
    }

    /// Allocate is inlined (named `name`): stacks start at its instances.
    pub fn set_inlined_allocate(&mut self, name: &str) {
        self.inlined_allocate = Some(crate::resolve::pattern::RustPath::parse(name));
    }

    /// Picks up mappings added since the last call (e.g. `dlopen`). Does
    /// nothing once the process is gone: the cache is what remains.
    pub fn refresh(&mut self) -> Result<()> {
        self.mapped.refresh()
    }

    /// Which debug information each mapped object has.
    pub fn debug_info(&self) -> Vec<ModuleDebugInfo> {
        self.mapped.debug_info()
    }

    /// Every executable mapping seen while the process lived, by address,
    /// with its file's build id.
    pub fn mapped_objects(&self) -> Vec<MappedObject> {
        self.mapped.mapped_objects()
    }

    /// Symbolizes a user stack (innermost address first, as the kernel
    /// records it). Return addresses are looked up one byte back so the
    /// frame names the call, not the instruction after it.
    pub fn symbolize_stack(&self, addresses: &[u64]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for (depth, &address) in addresses.iter().enumerate() {
            if depth == 0 {
                frames.extend(self.first_frames(address));
            } else {
                frames.extend(self.symbolize_one(address, address.saturating_sub(1)));
            }
        }
        if self.fold_allocator {
            let inside = allocator_frames(&frames);
            frames.drain(..inside);
        }
        frames
    }

    /// The frames of the probed address. At a function's first
    /// instruction, line tables often give it to a call inlined later in
    /// the body (the prologue is scheduled with it), which is not on this
    /// stack yet: only the function itself. At an inlined allocate's
    /// instance, allocate and the callers it is inlined into, leaving out
    /// what allocate itself inlined.
    fn first_frames(&self, address: u64) -> Vec<Frame> {
        let mut frames = self.symbolize_one(address, address);
        let Some(allocate) = &self.inlined_allocate else {
            return frames.pop().into_iter().collect();
        };
        let names_allocate = |frame: &Frame| {
            frame.function.as_deref().is_some_and(|name| {
                allocate.matches_ignoring_generics(&crate::resolve::pattern::RustPath::parse(name))
            })
        };
        if let Some(at) = frames.iter().rposition(names_allocate) {
            frames.drain(..at);
        }
        frames
    }

    fn symbolize_one(&self, address: u64, lookup: u64) -> Vec<Frame> {
        // Newest mapping first: an address range may have been remapped.
        let Some(mapping) = self
            .mapped
            .mappings
            .iter()
            .rev()
            .find(|m| m.contains(lookup))
        else {
            return unknown(address, None);
        };
        let key = LookupKey {
            address,
            lookup,
            inode: mapping.inode,
            mapping_start: mapping.start,
            mapping_offset: mapping.file_offset,
        };
        if let Some(frames) = self.memo().get(&key) {
            return frames.clone();
        }
        let frames = self.look_up(mapping, address, lookup);
        self.memo().insert(key, frames.clone());
        frames
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, HashMap<LookupKey, Vec<Frame>>> {
        // A panic while holding it leaves whole entries or none.
        self.memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Symbolizes `address` (looked up at `lookup`) in `mapping`.
    fn look_up(&self, mapping: &Mapping, address: u64, lookup: u64) -> Vec<Frame> {
        let module = Some(mapping.path.clone());
        let Some(cached) = self
            .mapped
            .files
            .get(&(mapping.inode, mapping.path.clone()))
        else {
            return unknown(address, module);
        };
        let file_offset = mapping.file_offset_of(lookup);
        let offset = Input::FileOffset(file_offset);
        // A separate debug file has the object's addresses, not its file
        // layout: look it up by virtual address.
        let separate = cached
            .debug_file
            .as_ref()
            .zip(cached.layout.address_of_file_offset(file_offset));
        let symbolized = match separate {
            Some((debug_file, address)) => self.blazesym.symbolize_single(
                &Source::Elf(debug_file.source()),
                Input::VirtOffset(address),
            ),
            None => self
                .blazesym
                .symbolize_single(&Source::Elf(cached.object.source()), offset),
        };
        let Ok(Symbolized::Sym(sym)) = symbolized else {
            return unknown(address, module);
        };
        let mut frames = frames_of_symbol(address, &sym, module);
        // Line-tables-only DWARF names functions without their path; the
        // symbol table always has the full name of the out-of-line one.
        if let Some(outer) = frames
            .last_mut()
            .filter(|f| f.function.as_deref().is_some_and(|n| !n.contains("::")))
        {
            let symbols_only = Source::Elf(Elf {
                debug_syms: false,
                ..cached.object.source()
            });
            if let Ok(Symbolized::Sym(sym)) = self.blazesym.symbolize_single(&symbols_only, offset)
            {
                outer.function = Some(clean_name(&sym.name));
            }
        }
        frames
    }
}

/// The one frame of an address nothing is known about.
fn unknown(address: u64, module: Option<String>) -> Vec<Frame> {
    vec![Frame {
        address,
        function: None,
        file: None,
        line: None,
        inlined: false,
        module,
    }]
}

/// How many frames at the top of a stack are the allocator's own, left
/// out when an allocator is probed: its entry points (`malloc`,
/// `__libc_realloc`, `__rust_alloc_zeroed`), Rust's allocation plumbing
/// (`alloc::alloc::…`, `alloc::raw_vec::…`, `Box::new`, `Arc::new`,
/// `Vec`'s growth) down to the first frame of other code. A stack that is
/// nothing but those keeps them all.
pub fn allocator_frames(frames: &[Frame]) -> usize {
    let inside = frames
        .iter()
        .take_while(|frame| frame.function.as_deref().is_some_and(is_allocator_frame))
        .count();
    if inside == frames.len() {
        0
    } else {
        inside
    }
}

/// Prefixes of the allocator's own functions (demangled, without hash):
/// Rust's shims and `alloc`, and the allocators presets name (jemalloc's
/// `_rjem_` entry points and tikv-jemallocator's `GlobalAlloc`, mimalloc's
/// `mi_`/`_mi_` functions and its crate's `GlobalAlloc`).
const ALLOCATOR_PREFIXES: [&str; 19] = [
    "__rustc::__rust_",
    "__rustc::__rdl_",
    "__rustc::__rg_",
    "__rust_",
    "__rdl_",
    "alloc::alloc::",
    "alloc::raw_vec::",
    "alloc::boxed::",
    "alloc::sync::Arc<T>::new",
    "alloc::rc::Rc<T>::new",
    "alloc::vec::",
    "<alloc::alloc::Global as core::alloc::Allocator>",
    "_rjem_",
    "tikv_jemallocator::",
    "<tikv_jemallocator::",
    "mi_",
    "_mi_",
    "mimalloc::",
    "<mimalloc::",
];

/// libc's allocate and release entry points, as its symbols name them
/// (glibc's shared and static, and musl's).
const LIBC_ALLOCATOR: [&str; 16] = [
    "malloc",
    "__libc_malloc",
    "__libc_malloc_impl",
    "calloc",
    "__libc_calloc",
    "realloc",
    "__libc_realloc",
    "posix_memalign",
    "__posix_memalign",
    "aligned_alloc",
    "memalign",
    "__libc_memalign",
    "_mid_memalign",
    "free",
    "__libc_free",
    "_int_malloc",
];

fn is_allocator_frame(name: &str) -> bool {
    ALLOCATOR_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || LIBC_ALLOCATOR.contains(&name)
}

/// Expands one symbol with its inlined calls into frames, innermost first.
///
/// blazesym reports the outer function with the location of the call to
/// the first inlined function, each inlined function with the location of
/// the call to the next one, and the innermost with the address's own
/// location.
fn frames_of_symbol(
    address: u64,
    sym: &blazesym::symbolize::Sym<'_>,
    module: Option<String>,
) -> Vec<Frame> {
    let mut names: Vec<String> = vec![clean_name(&sym.name)];
    let mut places: Vec<(Option<String>, Option<u32>)> = vec![place(sym.code_info.as_deref())];
    for inlined in sym.inlined.iter() {
        names.push(clean_name(&inlined.name));
        places.push(place(inlined.code_info.as_ref()));
    }
    let count = names.len();
    (0..count)
        .rev()
        .map(|i| Frame {
            address,
            function: Some(names[i].clone()),
            file: places[i].0.clone(),
            line: places[i].1,
            inlined: i > 0,
            module: module.clone(),
        })
        .collect()
}

fn place(code_info: Option<&CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match code_info {
        Some(info) => (
            Some(info.to_path().to_string_lossy().into_owned()),
            info.line,
        ),
        None => (None, None),
    }
}

/// blazesym demangles; this normalizes the result the way function
/// patterns are written (hash removed, v0 impl brackets unwrapped).
fn clean_name(name: &str) -> String {
    let without_hash = crate::resolve::pattern::demangle(name);
    let without_hash = strip_legacy_hash(&without_hash);
    RustPath::parse(without_hash).to_string()
}

/// Removes a trailing `::h0123456789abcdef` left by demanglers that keep it.
fn strip_legacy_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|name| Frame {
                address: 0,
                function: Some(name.to_string()),
                file: None,
                line: None,
                inlined: false,
                module: None,
            })
            .collect()
    }

    #[test]
    fn the_allocators_own_frames_are_counted_down_to_the_caller() {
        let rust = named(&[
            "__rustc::__rust_alloc",
            "alloc::alloc::alloc",
            "alloc::alloc::Global::alloc_impl",
            "alloc::raw_vec::RawVecInner<A>::finish_grow",
            "alloc::vec::Vec<T,A>::push",
            "tokio::runtime::io::registration_set::RegistrationSet::deregister",
            "alloc::vec::Vec<T,A>::push",
        ]);
        assert_eq!(allocator_frames(&rust), 5);
        let libc = named(&["__libc_realloc", "open_session", "main"]);
        assert_eq!(allocator_frames(&libc), 1);
        let pool = named(&["bufpool::BufPool::allocate", "app::handle"]);
        assert_eq!(allocator_frames(&pool), 0);
        // Nothing but the allocator: nothing is left out.
        assert_eq!(allocator_frames(&named(&["malloc", "__libc_malloc"])), 0);
    }

    #[inline(never)]
    fn marker_function() -> u64 {
        marker_function as fn() -> u64 as usize as u64
    }

    #[test]
    fn symbolizes_own_function_after_caching() {
        let me = Process::open(std::process::id()).unwrap();
        let symbolizer = Symbolizer::new(&me, DebugOptions::default()).unwrap();
        let frames = symbolizer.symbolize_stack(&[marker_function()]);
        let outer = frames.last().unwrap();
        assert!(
            outer
                .function
                .as_deref()
                .unwrap()
                .ends_with("symbolize::tests::marker_function"),
            "{frames:?}"
        );
        assert!(
            outer.file.as_deref().unwrap().ends_with("symbolize.rs"),
            "{frames:?}"
        );
    }

    #[test]
    fn unknown_addresses_stay_unknown() {
        let me = Process::open(std::process::id()).unwrap();
        let symbolizer = Symbolizer::new(&me, DebugOptions::default()).unwrap();
        let frames = symbolizer.symbolize_stack(&[8]);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].function, None);
    }

    #[test]
    fn hashes_are_removed() {
        assert_eq!(strip_legacy_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(strip_legacy_hash("a::hello"), "a::hello");
    }
}
