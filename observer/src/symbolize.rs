//! Stage 5 — symbolize stacks: user addresses to function, file and line,
//! inlined frames included (blazesym, DWARF where present, ELF symbols
//! otherwise).
//!
//! Addresses only mean something against the process's mappings, which die
//! with it. So the mappings are cached while the process lives and every
//! mapped file is opened then (through `/proc/PID/map_files`, which also
//! reaches deleted files and other mount namespaces); symbolization reads
//! the files through those descriptors, and works after the target exited.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer as Blazesym};
use serde::Serialize;

use crate::resolve::debuginfo::{self, DebugInfo, DebugOptions};
use crate::resolve::elf::ElfLayout;
use crate::resolve::pattern::RustPath;
use crate::resolve::process::{Mapping, Process};

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
    file: File,
    /// Loadable segments, to turn file offsets into addresses for a
    /// separate debug file.
    layout: Option<ElfLayout>,
    debug: DebugInfo,
}

/// A process's executable mappings, their files opened and their debug
/// information located: the slow part of a [`Symbolizer`], which can be
/// read on any thread.
pub struct MappedFiles {
    process: Process,
    mappings: Vec<Mapping>,
    /// Open files by (inode, path).
    files: HashMap<(u64, String), CachedFile>,
    debug_options: DebugOptions,
}

/// Mappings cached from a live process plus a blazesym symbolizer.
pub struct Symbolizer {
    mapped: MappedFiles,
    blazesym: Blazesym,
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
        for mapping in current {
            let key = (mapping.inode, mapping.path.clone());
            if !self.files.contains_key(&key) {
                if let Some(file) = open_mapped_file(self.process.pid, &mapping) {
                    let cached = self.describe(file, &mapping);
                    self.files.insert(key, cached);
                }
            }
            if !self.mappings.contains(&mapping) {
                self.mappings.push(mapping);
            }
        }
        Ok(())
    }

    /// Finds the file's debug information (its own DWARF, or a separate
    /// file that belongs to it).
    fn describe(&self, file: File, mapping: &Mapping) -> CachedFile {
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let layout = ElfLayout::read(Path::new(&path)).ok();
        // The target's mount namespace, or plain paths when it shares ours.
        let proc_root = PathBuf::from(format!("/proc/{}/root", self.process.pid));
        let root = match std::fs::read_link(&proc_root) {
            Ok(link) if link == Path::new("/") => PathBuf::from("/"),
            _ => proc_root,
        };
        let debug = layout.as_ref().map_or(DebugInfo::NONE, |layout| {
            debuginfo::locate(layout, Path::new(&mapping.path), &root, &self.debug_options)
        });
        CachedFile {
            file,
            layout: layout.map(ElfLayout::without_data),
            debug,
        }
    }
}

impl Symbolizer {
    /// Caches the process's executable mappings and opens their files.
    pub fn new(process: &Process, debug_options: DebugOptions) -> Result<Self> {
        Ok(Self::from_files(MappedFiles::read(process, debug_options)?))
    }

    /// A symbolizer over mappings already read.
    pub fn from_files(mapped: MappedFiles) -> Self {
        let blazesym = Blazesym::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .build();
        Self { mapped, blazesym }
    }

    /// Picks up mappings added since the last call (e.g. `dlopen`). Does
    /// nothing once the process is gone: the cache is what remains.
    pub fn refresh(&mut self) -> Result<()> {
        self.mapped.refresh()
    }

    /// Which debug information each mapped object has.
    pub fn debug_info(&self) -> Vec<ModuleDebugInfo> {
        let mut out: Vec<ModuleDebugInfo> = self
            .mapped
            .files
            .iter()
            .map(|((_, path), cached)| ModuleDebugInfo {
                module: path.clone(),
                debug: cached.debug.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.module.cmp(&b.module));
        out
    }

    /// Symbolizes a user stack (innermost address first, as the kernel
    /// records it). Return addresses are looked up one byte back so the
    /// frame names the call, not the instruction after it.
    pub fn symbolize_stack(&self, addresses: &[u64]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for (depth, &address) in addresses.iter().enumerate() {
            if depth == 0 {
                // The probed function's first instruction: line tables often
                // give it to a call inlined later in the body (the prologue
                // is scheduled with it), which is not on this stack yet.
                frames.extend(self.symbolize_one(address, address).pop());
            } else {
                frames.extend(self.symbolize_one(address, address.saturating_sub(1)));
            }
        }
        frames
    }

    fn symbolize_one(&self, address: u64, lookup: u64) -> Vec<Frame> {
        let unknown = |module: Option<String>| {
            vec![Frame {
                address,
                function: None,
                file: None,
                line: None,
                inlined: false,
                module,
            }]
        };
        // Newest mapping first: an address range may have been remapped.
        let Some(mapping) = self
            .mapped
            .mappings
            .iter()
            .rev()
            .find(|m| m.contains(lookup))
        else {
            return unknown(None);
        };
        let module = Some(mapping.path.clone());
        let Some(cached) = self
            .mapped
            .files
            .get(&(mapping.inode, mapping.path.clone()))
        else {
            return unknown(module);
        };
        let path = format!("/proc/self/fd/{}", cached.file.as_raw_fd());
        let file_offset = mapping.file_offset_of(lookup);
        let offset = Input::FileOffset(file_offset);
        // A separate debug file has the object's addresses, not its file
        // layout: look it up by virtual address.
        let separate = cached.debug.file.as_ref().zip(
            cached
                .layout
                .as_ref()
                .and_then(|l| l.address_of_file_offset(file_offset)),
        );
        let symbolized = match separate {
            Some((debug_file, address)) => self.blazesym.symbolize_single(
                &Source::Elf(Elf::new(debug_file)),
                Input::VirtOffset(address),
            ),
            None => self
                .blazesym
                .symbolize_single(&Source::Elf(Elf::new(path.clone())), offset),
        };
        let Ok(Symbolized::Sym(sym)) = symbolized else {
            return unknown(module);
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
                ..Elf::new(path)
            });
            if let Ok(Symbolized::Sym(sym)) = self.blazesym.symbolize_single(&symbols_only, offset)
            {
                outer.function = Some(clean_name(&sym.name));
            }
        }
        frames
    }
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

/// Opens the file behind a mapping, preferring the kernel's own reference.
fn open_mapped_file(pid: u32, mapping: &Mapping) -> Option<File> {
    let map_files = format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mapping.start, mapping.end
    );
    let in_namespace = format!("/proc/{pid}/root{}", mapping.path);
    for path in [&map_files, &in_namespace, &mapping.path] {
        if let Ok(file) = File::open(path) {
            return Some(file);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
