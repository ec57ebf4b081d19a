//! What the observer needs from an ELF file: function symbols, the build
//! id, and the mapping from virtual addresses to file offsets (uprobes are
//! placed by file offset).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};

use super::debuginfo::DebugOptions;
use super::pattern::demangle;
use super::safe_file::{open_trusted, SafeFile, TargetRoot};

/// The most a compressed section may hold once decompressed. The size is
/// the file's own claim (`SHF_COMPRESSED`'s header), and the file may be a
/// hostile target's: past this, the section is refused rather than
/// allocated. 1 GiB covers the DWARF of the largest Rust servers seen.
pub const MAX_UNCOMPRESSED_SECTION: u64 = 1 << 30;

/// A section's bytes, decompressed when the file compressed them (as
/// Debian's debug files and `-gz` builds do: zlib or zstd), refusing a
/// claimed size over [`MAX_UNCOMPRESSED_SECTION`].
pub fn section_bytes<'data>(
    section: &impl object::ObjectSection<'data>,
) -> Result<std::borrow::Cow<'data, [u8]>> {
    let name = section.name().unwrap_or("?").to_string();
    let range = section
        .compressed_file_range()
        .with_context(|| format!("reading section {name}"))?;
    if range.format != object::CompressionFormat::None
        && range.uncompressed_size > MAX_UNCOMPRESSED_SECTION
    {
        anyhow::bail!(
            "section {name} claims {} bytes once decompressed, over the {} the observer accepts",
            range.uncompressed_size,
            MAX_UNCOMPRESSED_SECTION
        );
    }
    section
        .uncompressed_data()
        .with_context(|| format!("decompressing section {name}"))
}

/// A defined function symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    /// The name as stored (mangled).
    pub mangled: String,
    /// Demangled, without hash.
    pub demangled: String,
    /// ELF virtual address.
    pub address: u64,
    pub size: u64,
}

/// A loadable segment, for address ↔ file offset translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoadSegment {
    address: u64,
    size: u64,
    file_offset: u64,
    file_size: u64,
}

/// An ELF file read once, with what later stages ask of it.
#[derive(Debug, Clone)]
pub struct ElfInfo {
    /// The path it was read from (may be a /proc link).
    pub path: PathBuf,
    pub build_id: Option<String>,
    /// True when `.symtab` is present (not stripped).
    pub has_symtab: bool,
    /// True when `.debug_info` is present.
    pub has_debug_info: bool,
    pub functions: Vec<FunctionSymbol>,
    segments: Vec<LoadSegment>,
    /// The raw bytes, kept for DWARF and instruction decoding.
    pub data: std::sync::Arc<[u8]>,
    /// A separate debug file's bytes, when symbols or DWARF came from one.
    dwarf: Option<std::sync::Arc<[u8]>>,
    /// That file.
    pub debug_file: Option<PathBuf>,
    /// Debug files the target named that were not used, and why.
    pub debug_rejected: Vec<String>,
}

impl ElfInfo {
    /// Reads and parses `path`, a file the user named or the kernel's
    /// reference to one (`/proc/PID/exe`): it must be a regular file within
    /// the size bound of [`super::safe_file`].
    pub fn read(path: &Path) -> Result<Self> {
        let data = open_trusted(path)
            .and_then(|file| file.read_all())
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(path, data.into())
    }

    /// Parses the bytes of an ELF file read from `path` (which only names
    /// it in errors and reports): public so that the parsers can be fuzzed
    /// on bytes that never were a file.
    pub fn parse(path: &Path, data: std::sync::Arc<[u8]>) -> Result<Self> {
        let file = object::File::parse(&*data)
            .with_context(|| format!("{} is not a readable ELF file", path.display()))?;
        crate::arch::check_machine(path, file.architecture())?;
        Ok(Self::of(path, &file, data.clone()))
    }

    /// [`ElfInfo::parse`] for a file of either processor: tests judge
    /// the other processor's code with its decoder.
    #[cfg(test)]
    pub(crate) fn parse_of_any_processor(path: &Path, data: std::sync::Arc<[u8]>) -> Result<Self> {
        let file = object::File::parse(&*data)?;
        Ok(Self::of(path, &file, data.clone()))
    }

    fn of(path: &Path, file: &object::File<'_>, data: std::sync::Arc<[u8]>) -> Self {
        let functions = function_symbols(file);
        let segments = load_segments(file);
        Self {
            path: path.to_path_buf(),
            build_id: file.build_id().ok().flatten().map(hex),
            has_symtab: file.section_by_name(".symtab").is_some(),
            has_debug_info: file.section_by_name(".debug_info").is_some(),
            functions,
            segments,
            data,
            dwarf: None,
            debug_file: None,
            debug_rejected: Vec::new(),
        }
    }

    /// Reads `path`; when it has no symbol table (stripped), takes function
    /// symbols and DWARF from its separate debug file, if one is found
    /// (`original` is the path the process knows it by, for debug links,
    /// which are resolved inside `root`).
    pub fn read_with_debug(
        path: &Path,
        original: &Path,
        root: &TargetRoot,
        options: &DebugOptions,
    ) -> Result<Self> {
        let mut elf = Self::read(path)?;
        if elf.has_symtab && elf.has_debug_info {
            return Ok(elf);
        }
        let layout = ElfLayout::parse(elf.data.to_vec())?;
        let found = super::debuginfo::locate(&layout, original, root, options);
        elf.debug_rejected = found.info.rejected;
        let (Some(debug_path), Some(debug_file)) = (found.info.file, found.file) else {
            return Ok(elf);
        };
        let debug = Self::parse(&debug_path, debug_file.data.into())?;
        if !elf.has_symtab {
            elf.functions = debug.functions;
            elf.has_symtab = debug.has_symtab;
        }
        elf.has_debug_info = debug.has_debug_info;
        elf.dwarf = Some(debug.data);
        elf.debug_file = Some(debug_path);
        Ok(elf)
    }

    /// The bytes that hold DWARF: the separate debug file's, or our own.
    pub fn dwarf_data(&self) -> &[u8] {
        self.dwarf.as_deref().unwrap_or(&self.data)
    }

    /// The file offset at which `address`'s bytes are stored.
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| address >= s.address && address - s.address < s.file_size.min(s.size))
            .and_then(|s| (address - s.address).checked_add(s.file_offset))
    }

    /// The load bias of a mapping of this file (`runtime = vaddr + bias`):
    /// `[start, end)` maps the file from `file_offset` (page-aligned, so it
    /// may begin in the previous segment's last page; the segment that
    /// overlaps the mapping most is the one it was made for).
    pub fn load_bias(&self, start: u64, end: u64, file_offset: u64) -> Option<u64> {
        load_bias(&self.segments, start, end, file_offset)
    }

    /// The function symbol whose code holds `address`.
    pub fn function_containing(&self, address: u64) -> Option<&FunctionSymbol> {
        self.functions
            .iter()
            // Subtracted, not added: a hostile symbol may end past 2^64.
            .find(|f| f.address <= address && address - f.address < f.size.max(1))
    }

    /// Up to `len` bytes stored at `address`.
    pub fn bytes_at(&self, address: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(self.file_offset(address)?).ok()?;
        let end = start.checked_add(len)?.min(self.data.len());
        self.data.get(start..end)
    }
}

/// What a GOT slot holds once the dynamic loader has run: calls through it
/// (`call [rip+slot]`, how Rust calls other crates' functions) go there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GotSlot {
    /// A function of this object, at this address.
    Local(u64),
    /// An imported symbol.
    Import(String),
}

impl ElfInfo {
    /// The GOT slots (`.got`, `.got.plt`) and what each holds, by slot
    /// address, from the dynamic relocations that fill them.
    pub fn got_slots(&self) -> std::collections::BTreeMap<u64, GotSlot> {
        use object::{ObjectSymbolTable as _, RelocationTarget};
        let mut slots = std::collections::BTreeMap::new();
        let Ok(file) = object::File::parse(&*self.data) else {
            return slots;
        };
        let got: Vec<(u64, u64)> = file
            .sections()
            .filter(|s| s.name().is_ok_and(|name| GOT_SECTIONS.contains(&name)))
            .map(|s| (s.address(), section_end(&s)))
            .collect();
        let Some(relocations) = file.dynamic_relocations() else {
            return slots;
        };
        let symbols = file.dynamic_symbol_table();
        for (slot, relocation) in relocations {
            if !got.iter().any(|&(start, end)| (start..end).contains(&slot)) {
                continue;
            }
            let held = match relocation.target() {
                RelocationTarget::Absolute => GotSlot::Local(relocation.addend() as u64),
                RelocationTarget::Symbol(index) => {
                    let Some(symbol) = symbols.as_ref().and_then(|t| t.symbol_by_index(index).ok())
                    else {
                        continue;
                    };
                    if symbol.is_definition() && symbol.address() != 0 {
                        GotSlot::Local(symbol.address())
                    } else {
                        let name = symbol.name().unwrap_or("?");
                        GotSlot::Import(name.split('@').next().unwrap_or(name).to_string())
                    }
                }
                _ => continue,
            };
            slots.insert(slot, held);
        }
        slots
    }

    /// The entry point (`e_entry`), when the file has one.
    pub fn entry_point(&self) -> Option<u64> {
        let file = object::File::parse(&*self.data).ok()?;
        Some(file.entry()).filter(|&entry| entry != 0)
    }

    /// True when `address` is inside `.got` or `.got.plt`.
    pub fn in_got(&self, address: u64) -> bool {
        self.in_section(address, &GOT_SECTIONS)
    }

    /// True when `address` is inside a PLT (`.plt`, `.plt.sec`, `.plt.got`,
    /// `.iplt`): stubs that jump through a GOT slot, which no symbol
    /// describes.
    pub fn in_plt(&self, address: u64) -> bool {
        self.in_section(address, &PLT_SECTIONS)
    }

    /// True when `address` is inside a section with one of `names`.
    fn in_section(&self, address: u64, names: &[&str]) -> bool {
        let Ok(file) = object::File::parse(&*self.data) else {
            return false;
        };
        file.sections()
            .filter(|s| s.name().is_ok_and(|name| names.contains(&name)))
            .any(|s| (s.address()..section_end(&s)).contains(&address))
    }
}

/// The sections holding GOT slots.
const GOT_SECTIONS: [&str; 2] = [".got", ".got.plt"];

/// The sections holding PLT stubs.
const PLT_SECTIONS: [&str; 4] = [".plt", ".plt.sec", ".plt.got", ".iplt"];

/// Where a section ends: the file's own numbers, which may add up past
/// 2^64.
fn section_end(section: &object::Section<'_, '_>) -> u64 {
    section.address().saturating_add(section.size())
}

fn load_bias(segments: &[LoadSegment], start: u64, end: u64, file_offset: u64) -> Option<u64> {
    let map_end = file_offset + (end - start);
    let overlap = |s: &LoadSegment| {
        let from = s.file_offset.max(file_offset);
        // The file's own numbers: they may add up past 2^64.
        let to = s.file_offset.saturating_add(s.file_size).min(map_end);
        to.saturating_sub(from)
    };
    let segment = segments
        .iter()
        .filter(|s| overlap(s) > 0)
        .max_by_key(|s| overlap(s))?;
    let runtime = start
        .wrapping_add(segment.file_offset)
        .wrapping_sub(file_offset);
    Some(runtime.wrapping_sub(segment.address))
}

fn load_segments(file: &object::File<'_>) -> Vec<LoadSegment> {
    file.segments()
        .map(|segment| {
            let (file_offset, file_size) = segment.file_range();
            LoadSegment {
                address: segment.address(),
                size: segment.size(),
                file_offset,
                file_size,
            }
        })
        .collect()
}

/// Just the loadable segments of an ELF file: cheap to read for every
/// mapped library (no symbol table, no demangling).
#[derive(Debug, Clone)]
pub struct ElfLayout {
    segments: Vec<LoadSegment>,
    /// The raw bytes (for unwind tables).
    pub data: Vec<u8>,
    pub build_id: Option<String>,
    /// True when `.debug_info` or `.debug_line` is present.
    pub has_dwarf: bool,
    /// `.gnu_debuglink`: the debug file's name and CRC-32.
    pub debuglink: Option<(String, u32)>,
    /// True when a section names another file to read (see [`LINK_SECTIONS`]).
    pub links_elsewhere: bool,
}

/// Sections through which an ELF file names other files holding its debug
/// information: a debug link, a dwz alternate file, a supplementary file.
pub const LINK_SECTIONS: [&str; 4] = [
    ".gnu_debuglink",
    ".gnu_debugaltlink",
    ".debug_sup",
    // GNU's older name of a compressed section: readers with compression
    // support (object's, since the observer reads compressed DWARF) find
    // it as `.debug_sup`.
    ".zdebug_sup",
];

/// A copy of an ELF file's bytes in which the [`LINK_SECTIONS`] have no
/// name, so that a library that follows them by name (blazesym does,
/// opening paths on its own) does not find them; `None` when there are
/// none. Everything else, DWARF included, is unchanged.
pub fn without_link_sections(data: &[u8]) -> Option<Vec<u8>> {
    use object::read::elf::{ElfFile64, FileHeader as _, SectionHeader as _};
    use object::Endian as _;
    let file = ElfFile64::<object::Endianness>::parse(data).ok()?;
    let endian = file.endian();
    let header = file.elf_header();
    let table = file.elf_section_table();
    let first = header.e_shoff(endian) as usize;
    let entry_size = usize::from(header.e_shentsize(endian));
    let mut copy: Option<Vec<u8>> = None;
    for (index, section) in table.iter().enumerate() {
        let name = table.section_name(endian, section).unwrap_or_default();
        if LINK_SECTIONS.iter().any(|link| link.as_bytes() == name) {
            let at = first + index * entry_size;
            let bytes = copy.get_or_insert_with(|| data.to_vec());
            // sh_name is the header's first word. Pointed at the NUL that
            // ends the name, the name is empty: offset 0 is empty only by
            // convention, and a file may name the link itself there.
            let end = section.sh_name(endian).checked_add(name.len() as u32)?;
            bytes
                .get_mut(at..at + 4)?
                .copy_from_slice(&endian.write_u32(end));
        }
    }
    copy
}

impl ElfLayout {
    /// Reads `path`, a file the user named or the kernel's reference to
    /// one, within the size bound of [`super::safe_file`].
    pub fn read(path: &Path) -> Result<Self> {
        let file = open_trusted(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::read_file(&file)
            .with_context(|| format!("{} is not a readable ELF file", path.display()))
    }

    /// Reads a file opened safely.
    pub fn read_file(file: &SafeFile) -> Result<Self> {
        Self::parse(file.read_all()?)
    }

    /// Parses an ELF file's bytes.
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        let file = object::File::parse(&*data).context("not a readable ELF file")?;
        let segments = load_segments(&file);
        let build_id = file.build_id().ok().flatten().map(hex);
        let has_dwarf = [".debug_info", ".debug_line"].iter().any(|name| {
            file.section_by_name(name)
                .is_some_and(|s| s.size() > 0 && s.kind() != object::SectionKind::UninitializedData)
        });
        let debuglink = file
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc));
        let links_elsewhere = LINK_SECTIONS
            .iter()
            .any(|name| file.section_by_name(name).is_some());
        Ok(Self {
            segments,
            data,
            build_id,
            has_dwarf,
            debuglink,
            links_elsewhere,
        })
    }

    /// The same without the file's bytes (kept for address translation).
    pub fn without_data(mut self) -> Self {
        self.data = Vec::new();
        self
    }

    /// The virtual address stored at `file_offset` (inside a segment).
    pub fn address_of_file_offset(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| file_offset >= s.file_offset && file_offset - s.file_offset < s.file_size)
            // None past 2^64, where a hostile segment may claim to end.
            .and_then(|s| (file_offset - s.file_offset).checked_add(s.address))
    }

    /// See [`ElfInfo::load_bias`].
    pub fn load_bias(&self, start: u64, end: u64, file_offset: u64) -> Option<u64> {
        load_bias(&self.segments, start, end, file_offset)
    }
}

/// Defined function symbols from `.symtab` and `.dynsym`, one per address
/// and name.
fn function_symbols(file: &object::File<'_>) -> Vec<FunctionSymbol> {
    let mut functions: Vec<FunctionSymbol> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == object::SymbolKind::Text && s.is_definition() && s.address() != 0)
        .filter_map(|s| {
            let mangled = s.name().ok()?.to_string();
            Some(FunctionSymbol {
                demangled: demangle(&mangled),
                mangled,
                address: s.address(),
                size: s.size(),
            })
        })
        .collect();
    functions.sort_by(|a, b| (a.address, &a.mangled).cmp(&(b.address, &b.mangled)));
    functions.dedup_by(|a, b| a.address == b.address && a.mangled == b.mangled);
    functions
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal x86-64 ELF file: its header and one `PT_LOAD` program
    /// header per segment, nothing else.
    fn elf_with_segments(segments: &[LoadSegment]) -> Vec<u8> {
        let mut data = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        data.extend(3u16.to_le_bytes()); // ET_DYN
        data.extend(62u16.to_le_bytes()); // EM_X86_64
        data.extend(1u32.to_le_bytes()); // EV_CURRENT
        data.extend(0u64.to_le_bytes()); // e_entry
        data.extend(64u64.to_le_bytes()); // e_phoff: right after this header
        data.extend(0u64.to_le_bytes()); // e_shoff: no sections
        data.extend(0u32.to_le_bytes()); // e_flags
        let count = segments.len() as u16;
        for half in [64u16, 56, count, 64, 0, 0] {
            data.extend(half.to_le_bytes());
        }
        for segment in segments {
            data.extend(1u32.to_le_bytes()); // PT_LOAD
            data.extend(5u32.to_le_bytes()); // R+X
            for word in [
                segment.file_offset,
                segment.address,
                segment.address,
                segment.file_size,
                segment.size,
                0x1000,
            ] {
                data.extend(word.to_le_bytes());
            }
        }
        data
    }

    /// Found by fuzzing: a segment whose file range ends past 2^64 made
    /// the load bias overflow (a panic with overflow checks, a wrong
    /// segment without).
    #[test]
    fn file_ranges_past_two_to_the_64_are_no_panic() {
        let hostile = LoadSegment {
            address: 0x1000,
            size: 0x1000,
            file_offset: u64::MAX - 0x10,
            file_size: 0x1000,
        };
        let code = LoadSegment {
            address: 0x4000,
            size: 0x1000,
            file_offset: 0x4000,
            file_size: 0x1000,
        };
        let layout = ElfLayout::parse(elf_with_segments(&[hostile, code])).unwrap();
        let start = 0x5555_0000_4000;
        assert_eq!(
            layout.load_bias(start, start + 0x1000, 0x4000),
            Some(0x5555_0000_0000)
        );
    }

    /// Found by fuzzing: a segment at the top of the address space (or of
    /// the file offsets) made translating between the two overflow.
    #[test]
    fn translations_past_two_to_the_64_are_none() {
        let top = LoadSegment {
            address: u64::MAX - 0x10,
            size: 0x1000,
            file_offset: 0,
            file_size: 0x1000,
        };
        let layout = ElfLayout::parse(elf_with_segments(&[top])).unwrap();
        assert_eq!(layout.address_of_file_offset(0x8), Some(u64::MAX - 8));
        assert_eq!(layout.address_of_file_offset(0x20), None);
        let far = LoadSegment {
            address: 0x1000,
            size: 0x1000,
            file_offset: u64::MAX - 0x10,
            file_size: 0x1000,
        };
        let elf = ElfInfo::parse(Path::new("far"), elf_with_segments(&[far]).into()).unwrap();
        assert_eq!(elf.file_offset(0x1008), Some(u64::MAX - 8));
        assert_eq!(elf.file_offset(0x1020), None);
    }

    /// A minimal x86-64 ELF file with one section besides the names
    /// (`.shstrtab`, holding `names`): its name at `name_at`, the names'
    /// own at `names_at`.
    fn elf_with_section(
        names: &str,
        names_at: u32,
        name_at: u32,
        address: u64,
        size: u64,
    ) -> Vec<u8> {
        let table = (64 + names.len()).next_multiple_of(8);
        let mut data = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        data.extend(3u16.to_le_bytes()); // ET_DYN
        data.extend(62u16.to_le_bytes()); // EM_X86_64
        data.extend(1u32.to_le_bytes()); // EV_CURRENT
        data.extend(0u64.to_le_bytes()); // e_entry
        data.extend(0u64.to_le_bytes()); // e_phoff: no segments
        data.extend((table as u64).to_le_bytes()); // e_shoff
        data.extend(0u32.to_le_bytes()); // e_flags
        for half in [64u16, 56, 0, 64, 3, 1] {
            data.extend(half.to_le_bytes());
        }
        data.extend(names.as_bytes());
        data.resize(table, 0);
        // (sh_name, sh_type, sh_addr, sh_offset, sh_size): null, the
        // names (SHT_STRTAB), the section (SHT_PROGBITS, over the header).
        for (name, kind, address, offset, size) in [
            (0u32, 0u32, 0, 0, 0),
            (names_at, 3, 0, 64, names.len() as u64),
            (name_at, 1, address, 0, size),
        ] {
            data.extend(name.to_le_bytes());
            data.extend(kind.to_le_bytes());
            data.extend(0u64.to_le_bytes()); // sh_flags
            for word in [address, offset, size] {
                data.extend(word.to_le_bytes());
            }
            data.extend([0; 8]); // sh_link, sh_info
            data.extend(1u64.to_le_bytes()); // sh_addralign
            data.extend(0u64.to_le_bytes()); // sh_entsize
        }
        data
    }

    /// Found by fuzzing: a `.got` whose address and size add up past 2^64
    /// made reading the GOT slots overflow.
    #[test]
    fn a_got_ending_past_two_to_the_64_is_no_panic() {
        let data = elf_with_section("\0.shstrtab\0.got\0", 1, 11, u64::MAX - 8, 16);
        let elf = ElfInfo::parse(Path::new("got"), data.into()).unwrap();
        assert!(elf.got_slots().is_empty(), "no relocations fill it");
        assert!(elf.in_got(u64::MAX - 4));
        assert!(!elf.in_got(0x1000));
    }

    /// Found by fuzzing: a link section named at offset 0 of the section
    /// names (where the empty name usually is) kept its name in the copy
    /// given to the symbolizer, which would have followed it.
    #[test]
    fn a_link_named_at_offset_zero_is_hidden_too() {
        let data = elf_with_section(".gnu_debuglink\0.shstrtab\0", 15, 0, 0, 16);
        assert!(ElfLayout::parse(data.clone()).unwrap().links_elsewhere);
        let cleaned = without_link_sections(&data).expect("a link to hide");
        assert_eq!(cleaned.len(), data.len());
        assert!(!ElfLayout::parse(cleaned).unwrap().links_elsewhere);
    }

    /// Found by fuzzing once compressed sections were read: `.zdebug_sup`
    /// is what a reader with compression support finds as `.debug_sup`, so
    /// it is a link to hide too.
    #[test]
    fn a_compressed_supplementary_link_is_hidden_too() {
        let data = elf_with_section("\0.shstrtab\0.zdebug_sup\0", 1, 11, 0, 16);
        assert!(ElfLayout::parse(data.clone()).unwrap().links_elsewhere);
        let cleaned = without_link_sections(&data).expect("a link to hide");
        assert!(!ElfLayout::parse(cleaned).unwrap().links_elsewhere);
    }

    fn with_functions(functions: Vec<FunctionSymbol>) -> ElfInfo {
        ElfInfo {
            path: PathBuf::from("functions"),
            build_id: None,
            has_symtab: true,
            has_debug_info: false,
            functions,
            segments: Vec::new(),
            data: std::sync::Arc::from(&[][..]),
            dwarf: None,
            debug_file: None,
            debug_rejected: Vec::new(),
        }
    }

    /// Found by fuzzing: a symbol whose address and size add up past 2^64
    /// made every lookup that reached it overflow.
    #[test]
    fn symbols_ending_past_two_to_the_64_are_no_panic() {
        let last = FunctionSymbol {
            mangled: "last".into(),
            demangled: "last".into(),
            address: u64::MAX - 4,
            size: 16,
        };
        let elf = with_functions(vec![last.clone()]);
        assert_eq!(elf.function_containing(u64::MAX), Some(&last));
        assert_eq!(elf.function_containing(u64::MAX - 5), None);
        assert_eq!(elf.function_containing(0x1000), None);
    }

    #[test]
    fn reads_own_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let elf = ElfInfo::read(&exe).unwrap();
        assert!(elf.has_symtab);
        let me = elf
            .functions
            .iter()
            .find(|f| f.demangled.ends_with("elf::tests::reads_own_test_binary"))
            .expect("this test's own symbol");
        let offset = elf.file_offset(me.address).unwrap();
        assert_eq!(
            elf.bytes_at(me.address, 4).unwrap(),
            &elf.data[offset as usize..offset as usize + 4]
        );
    }

    #[test]
    fn rejects_non_elf_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text");
        std::fs::write(&text, b"not ELF").unwrap();
        let err = ElfInfo::read(&text).unwrap_err();
        assert!(format!("{err:#}").contains("not a readable ELF file"));
        let err = ElfLayout::read(&text).unwrap_err();
        assert!(format!("{err:#}").contains("not a readable ELF file"));
    }

    #[test]
    fn special_files_are_not_read() {
        for path in ["/dev/zero", "/proc/self"] {
            let err = format!("{:#}", ElfInfo::read(Path::new(path)).unwrap_err());
            assert!(err.contains("not a regular file"), "{path}: {err}");
        }
    }

    #[test]
    fn link_sections_lose_their_names_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let linked = dir.path().join("linked");
        let target = dir.path().join("target.debug");
        std::fs::write(&target, b"debug").unwrap();
        let status = std::process::Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", target.display()))
            .arg(std::env::current_exe().unwrap())
            .arg(&linked)
            .status()
            .expect("objcopy (binutils)");
        assert!(status.success());
        let data = std::fs::read(&linked).unwrap();
        let layout = ElfLayout::parse(data.clone()).unwrap();
        assert!(layout.links_elsewhere);
        assert_eq!(layout.debuglink.as_ref().unwrap().0, "target.debug");
        let cleaned = without_link_sections(&data).expect("a link to remove");
        assert_eq!(cleaned.len(), data.len());
        let after = ElfLayout::parse(cleaned.clone()).unwrap();
        assert!(!after.links_elsewhere && after.debuglink.is_none());
        assert_eq!(after.has_dwarf, layout.has_dwarf);
        assert_eq!(after.build_id, layout.build_id);
        let differing = data.iter().zip(&cleaned).filter(|(a, b)| a != b).count();
        assert!(differing <= 4, "{differing} bytes changed");
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(without_link_sections(&me).is_none(), "nothing to remove");
    }

    /// Compressed debug sections (`cc -gz`, Debian's debug files) are read
    /// decompressed; one whose header claims more than the limit is
    /// refused, not allocated.
    #[test]
    fn compressed_sections_are_read_and_a_claimed_bomb_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = "int answer(int x) { return x * 42; }\nint main(void) { return answer(0); }\n";
        let build = |name: &str, flag: &str| -> Vec<u8> {
            let binary = crate::test_c::compile_in(&dir, "cc", source, name, &["-g", flag]);
            std::fs::read(binary).unwrap()
        };
        let compressed = build("compressed", "-gz=zlib");
        // binutils decompresses it: the independent reading.
        let plain_path = dir.path().join("decompressed");
        let status = std::process::Command::new("objcopy")
            .arg("--decompress-debug-sections")
            .arg(dir.path().join("compressed"))
            .arg(&plain_path)
            .status()
            .unwrap();
        assert!(status.success());
        let plain = std::fs::read(plain_path).unwrap();
        let info = |data: &[u8]| {
            let file = object::File::parse(data).unwrap();
            let section = file.section_by_name(".debug_info").unwrap();
            let range = section.compressed_file_range().unwrap();
            (section_bytes(&section).unwrap().into_owned(), range)
        };
        let (expected, plain_range) = info(&plain);
        let (got, range) = info(&compressed);
        assert_eq!(plain_range.format, object::CompressionFormat::None);
        assert_eq!(range.format, object::CompressionFormat::Zlib);
        assert_eq!(got, expected, "decompressed as written");
        // The section starts with its Elf64_Chdr: ch_type, ch_reserved,
        // then ch_size at byte 8.
        let header = {
            let file = object::File::parse(&*compressed).unwrap();
            let section = file.section_by_name(".debug_info").unwrap();
            section.file_range().unwrap().0 as usize
        };
        assert!(range.offset as usize > header);
        let mut bomb = compressed.clone();
        let at = header + 8;
        bomb[at..at + 8].copy_from_slice(&(MAX_UNCOMPRESSED_SECTION + 1).to_le_bytes());
        let file = object::File::parse(&*bomb).unwrap();
        let section = file.section_by_name(".debug_info").unwrap();
        let err = section_bytes(&section).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
    }
}
