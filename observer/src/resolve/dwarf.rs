//! Looking in DWARF for a function that has no symbol: was it inlined, and
//! into what?

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;

use anyhow::{Context as _, Result};
use gimli::{AttributeValue, EndianSlice, LittleEndian, UnitSectionOffset};
use object::Object as _;

use super::elf::ElfInfo;
use super::pattern::{demangle, RustPath};

pub(crate) type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// What DWARF says about a function that exists only inlined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinedReport {
    /// The name DWARF gives it.
    pub name: String,
    /// False when DWARF only has the bare name (line-tables-only builds), so
    /// the match is by last path segment only.
    pub exact: bool,
    /// Inlined instances found.
    pub call_sites: usize,
    /// Up to three functions it was inlined into.
    pub callers: Vec<String>,
}

impl fmt::Display for InlinedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = if self.exact {
            format!("'{}'", self.name)
        } else {
            format!(
                "a function named '{}' (line tables only, so possibly another one)",
                self.name
            )
        };
        write!(
            f,
            "DWARF shows {which} inlined at {} call site{}",
            self.call_sites,
            if self.call_sites == 1 { "" } else { "s" }
        )?;
        if !self.callers.is_empty() {
            write!(f, " (e.g. in {})", self.callers.join(", "))?;
        }
        Ok(())
    }
}

/// Finds inlined instances of the function `wanted` names, if the binary
/// has DWARF and the function has any.
pub fn find_inlined(elf: &ElfInfo, wanted: &RustPath) -> Result<Option<InlinedReport>> {
    if !elf.has_debug_info {
        return Ok(None);
    }
    let sections = sections(elf)?;
    let dwarf = sections.borrow(|section| EndianSlice::new(section, LittleEndian));
    let origins = matching_subprograms(&dwarf, wanted)?;
    // Best evidence first: the full path, then an async fn's or closure's
    // body named after it, then a bare name (line tables only).
    let best = origins.iter().map(|o| o.2).max().unwrap_or(Match::BareName);
    let origins: Vec<_> = origins.into_iter().filter(|o| o.2 == best).collect();
    let exact = best != Match::BareName;
    let Some((_, name, _)) = origins.first().cloned() else {
        return Ok(None);
    };
    let origins = abstract_instances(&dwarf, origins.into_iter().map(|o| (o.0, o.1)).collect())?;
    let mut call_sites = 0;
    let mut caller_addresses = Vec::new();
    for_each_inlined_call(&dwarf, &origins, |unit, entry, _, _| {
        call_sites += 1;
        // Dead code keeps DWARF with address 0; it is not a real site.
        if let Some(start) = code_ranges(&dwarf, unit, entry)?
            .iter()
            .map(|r| r.start)
            .min()
        {
            caller_addresses.push(start);
        }
        Ok(())
    })?;
    if call_sites == 0 {
        return Ok(None);
    }
    Ok(Some(InlinedReport {
        name,
        exact,
        call_sites,
        callers: caller_names(elf, &caller_addresses),
    }))
}

/// DWARF's names of the functions with these linkage (mangled) names. For
/// generic functions they carry the type arguments (`take<app::Chat>`),
/// which legacy symbol mangling hides, so copies can be told apart.
pub fn names_by_linkage(elf: &ElfInfo, mangled: &[&str]) -> Result<HashMap<String, String>> {
    let mut names = HashMap::new();
    if !elf.has_debug_info || mangled.is_empty() {
        return Ok(names);
    }
    for_each_subprogram(elf, |dwarf, unit, entry| {
        if let Some(linkage) = entry.attr_value(gimli::DW_AT_linkage_name) {
            let linkage = dwarf
                .attr_string(unit, linkage)?
                .to_string_lossy()
                .into_owned();
            if mangled.contains(&linkage.as_str()) {
                names.insert(linkage, name_of(dwarf, unit, entry)?);
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(names)
}

/// Calls `visit` with every subprogram DIE until it says stop.
pub(crate) fn for_each_subprogram(
    elf: &ElfInfo,
    mut visit: impl FnMut(
        &gimli::Dwarf<Slice<'_>>,
        &gimli::Unit<Slice<'_>>,
        &gimli::DebuggingInformationEntry<Slice<'_>>,
    ) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let sections = sections(elf)?;
    let dwarf = sections.borrow(|section| EndianSlice::new(section, LittleEndian));
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        while let Some(entry) = entries.next_dfs()? {
            if entry.tag() == gimli::DW_TAG_subprogram && visit(&dwarf, &unit, entry)?.is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// How a DWARF subprogram's name matched the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Match {
    BareName,
    Body,
    Path,
}

/// The DWARF sections of the binary or of its separate debug file.
pub(crate) fn sections(elf: &ElfInfo) -> Result<gimli::DwarfSections<Cow<'_, [u8]>>> {
    let file = object::File::parse(elf.dwarf_data()).context("re-parsing the ELF file")?;
    Ok(gimli::DwarfSections::load(|id| load_section(&file, id))?)
}

/// A DIE's `DW_AT_name`, or "".
pub(crate) fn name_of(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
) -> Result<String> {
    Ok(match entry.attr_value(gimli::DW_AT_name) {
        Some(value) => dwarf
            .attr_string(unit, value)?
            .to_string_lossy()
            .into_owned(),
        None => String::new(),
    })
}

fn load_section<'a>(
    file: &object::File<'a>,
    id: gimli::SectionId,
) -> Result<Cow<'a, [u8]>, gimli::Error> {
    Ok(file
        .section_by_name(id.name())
        .and_then(|section| super::elf::section_bytes(&section).ok())
        .unwrap_or(Cow::Borrowed(&[])))
}

/// Subprogram DIEs whose name matches, with whether the match used a full
/// path.
pub(crate) fn matching_subprograms(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    wanted: &RustPath,
) -> Result<Vec<(UnitSectionOffset, String, Match)>> {
    let mut found = Vec::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut namespaces: Vec<(isize, String)> = Vec::new();
        let mut entries = unit.entries();
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            namespaces.retain(|(d, _)| *d < depth);
            let name = match entry.attr_value(gimli::DW_AT_name) {
                Some(value) => Some(
                    dwarf
                        .attr_string(&unit, value)?
                        .to_string_lossy()
                        .into_owned(),
                ),
                None => None,
            };
            match entry.tag() {
                gimli::DW_TAG_namespace => {
                    if let Some(name) = name {
                        namespaces.push((depth, name));
                    }
                }
                gimli::DW_TAG_subprogram => {
                    let linkage = entry
                        .attr_value(gimli::DW_AT_linkage_name)
                        .map(|value| dwarf.attr_string(&unit, value))
                        .transpose()?
                        .map(|s| demangle(&s.to_string_lossy()));
                    let offset = entry.offset().to_unit_section_offset(&unit);
                    if let Some(full) = linkage {
                        let path = RustPath::parse(&full);
                        if wanted.matches(&path) {
                            found.push((offset, path.to_string(), Match::Path));
                        } else if path
                            .enclosing_function()
                            .is_some_and(|f| wanted.matches(&f))
                        {
                            found.push((offset, path.to_string(), Match::Body));
                        }
                    } else if let Some(name) = name {
                        if namespaces.is_empty() {
                            // Generic functions keep their arguments in
                            // the bare name (`put<512>`).
                            let bare = RustPath::parse(&name);
                            if wanted.last_ident().is_some()
                                && wanted.last_ident() == bare.last_ident()
                            {
                                found.push((offset, name, Match::BareName));
                            }
                        } else {
                            let mut full: Vec<&str> =
                                namespaces.iter().map(|(_, n)| n.as_str()).collect();
                            full.push(&name);
                            let path = RustPath::parse(&full.join("::"));
                            if wanted.matches(&path) {
                                found.push((offset, path.to_string(), Match::Path));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(found)
}

/// Calls `visit` for every inlined call of the subprograms in `origins`
/// (DIE offsets, with the name to report), with the unit, the call's DIE,
/// that name, and the abstract origin of the inlined call it sits in, if
/// it was inlined into another inlined call.
pub(crate) fn for_each_inlined_call<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    origins: &HashMap<UnitSectionOffset, String>,
    mut visit: impl FnMut(
        &gimli::Unit<Slice<'a>>,
        &gimli::DebuggingInformationEntry<Slice<'a>>,
        &str,
        Option<gimli::UnitOffset>,
    ) -> Result<()>,
) -> Result<()> {
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        // The inlined calls around the current DIE: (depth, origin).
        let mut enclosing: Vec<(isize, Option<gimli::UnitOffset>)> = Vec::new();
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            enclosing.retain(|(d, _)| *d < depth);
            if entry.tag() != gimli::DW_TAG_inlined_subroutine {
                continue;
            }
            let via = enclosing.last().and_then(|(_, origin)| *origin);
            let origin = entry.attr_value(gimli::DW_AT_abstract_origin);
            let local_origin = match origin {
                Some(AttributeValue::UnitRef(offset)) => Some(offset),
                _ => None,
            };
            enclosing.push((depth, local_origin));
            if let Some(function) = reference(&unit, origin).and_then(|o| origins.get(&o)) {
                visit(&unit, entry, function, via)?;
            }
        }
    }
    Ok(())
}

/// The address ranges of a DIE's code; dead code (address 0) left out.
pub(crate) fn code_ranges<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    unit: &gimli::Unit<Slice<'a>>,
    entry: &gimli::DebuggingInformationEntry<Slice<'a>>,
) -> Result<Vec<std::ops::Range<u64>>> {
    let mut out = Vec::new();
    let mut ranges = dwarf.die_ranges(unit, entry)?;
    while let Some(range) = ranges.next()? {
        if range.begin != 0 && range.begin < range.end {
            out.push(range.begin..range.end);
        }
    }
    Ok(out)
}

/// The subprograms inlined instances can point at: the matched ones, and
/// the abstract instances that complete them (rustc declares a method
/// inside its type and defines its abstract instance elsewhere, linked by
/// DW_AT_specification, with no name of its own).
pub(crate) fn abstract_instances(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    mut origins: HashMap<UnitSectionOffset, String>,
) -> Result<HashMap<UnitSectionOffset, String>> {
    let mut completing = Vec::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        while let Some(entry) = entries.next_dfs()? {
            if entry.tag() != gimli::DW_TAG_subprogram {
                continue;
            }
            let specification = reference(&unit, entry.attr_value(gimli::DW_AT_specification));
            if let Some(name) = specification.and_then(|s| origins.get(&s)) {
                completing.push((entry.offset().to_unit_section_offset(&unit), name.clone()));
            }
        }
    }
    origins.extend(completing);
    Ok(origins)
}

/// A DIE reference attribute as a section offset.
pub(crate) fn reference(
    unit: &gimli::Unit<Slice<'_>>,
    value: Option<AttributeValue<Slice<'_>>>,
) -> Option<UnitSectionOffset> {
    match value? {
        AttributeValue::UnitRef(offset) => Some(offset.to_unit_section_offset(unit)),
        AttributeValue::DebugInfoRef(offset) => Some(UnitSectionOffset(offset.0)),
        _ => None,
    }
}

/// Names of up to three distinct functions holding `addresses`.
fn caller_names(elf: &ElfInfo, addresses: &[u64]) -> Vec<String> {
    let mut names = Vec::new();
    for &address in addresses {
        let Some(function) = elf.function_containing(address) else {
            continue;
        };
        let name = RustPath::parse(&function.demangled).to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        if names.len() == 3 {
            break;
        }
    }
    names
}
