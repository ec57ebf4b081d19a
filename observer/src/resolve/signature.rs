//! A function's signature as DWARF describes it: parameter names, types
//! and where each parameter is at the function's first instruction, and
//! the return type, with the sizes and fields of struct types. Needs full
//! DWARF (`debug = 2`, or a separate debug file): line-tables-only and
//! `debug = "limited"` carry no types.

use anyhow::Result;
use gimli::{AttributeValue, Reader as _, UnitOffset};

use std::ops::ControlFlow;

use std::collections::HashMap;
use std::ops::Range;

use gimli::UnitSectionOffset;

use super::dwarf::{
    abstract_instances, code_ranges, for_each_inlined_call, for_each_subprogram,
    matching_subprograms, name_of, Match, Slice,
};
use super::elf::ElfInfo;
use super::pattern::RustPath;
use crate::arch::ARGUMENT_REGISTERS;
type Unit<'a> = gimli::Unit<Slice<'a>>;

/// The shape of a type, as far as locating a buffer's identity needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeShape {
    pub name: String,
    pub size: u64,
    pub kind: TypeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// A pointer or reference.
    Pointer,
    /// An integer, float or bool.
    Scalar,
    /// A struct (or tuple) with its fields.
    Struct(Vec<Field>),
    /// An enum with data (`Option<usize>`, `Result<K, E>`), as Rust's DWARF
    /// describes it: a variant part.
    Enum(EnumShape),
    Other,
}

/// An enum: where its discriminant is and what each variant holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumShape {
    /// The discriminant's offset and size in bytes: a tag, or the field
    /// whose unused values ("niche") tell the variants apart.
    pub discriminant: Option<(u64, u64)>,
    pub variants: Vec<Variant>,
}

/// One variant of an enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    /// The discriminant's value for this variant; `None` for the variant
    /// that has every value the others do not (a niche enum's data variant).
    pub discriminant: Option<u64>,
    /// Its fields, at offsets from the start of the enum.
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u64,
    pub shape: TypeShape,
}

/// Where a parameter is when the function (or an inlined instance of it)
/// starts. Registers are in DWARF numbering (0 rax … 15 r15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryLocation {
    /// In this register.
    Register(u16),
    /// In memory at the address held by this register (a struct passed by
    /// reference).
    Memory(u16),
    /// A 16-byte value split over two registers: bytes 0..8, then 8..16.
    Pair(u16, u16),
    /// An 8-byte value split over two registers: bytes 0..4, then 4..8.
    Halves(u16, u16),
    /// DWARF says something else, or nothing.
    Unknown,
}

/// How the location language names a register: `argN` for the argument
/// registers (as at a function's entry), the register's name otherwise.
pub fn register_text(dwarf_register: u16) -> String {
    match ARGUMENT_REGISTERS.iter().position(|&r| r == dwarf_register) {
        Some(index) => format!("arg{index}"),
        None => crate::plan::loc::REGISTER_NAMES
            .get(usize::from(dwarf_register))
            .map_or_else(
                || format!("dwarf register {dwarf_register}"),
                |n| n.to_string(),
            ),
    }
}

/// The argument register after this one (the second half of a pair).
pub fn next_argument(dwarf_register: u16) -> Option<u16> {
    let index = ARGUMENT_REGISTERS
        .iter()
        .position(|&r| r == dwarf_register)?;
    ARGUMENT_REGISTERS.get(index + 1).copied()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub shape: TypeShape,
    pub location: EntryLocation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub parameters: Vec<Parameter>,
    /// `None` for `()`.
    pub returns: Option<TypeShape>,
}

impl TypeShape {
    /// The offset of the first pointer in this type (itself, or a field,
    /// recursively): a buffer's identity.
    pub fn first_pointer(&self) -> Option<u64> {
        match &self.kind {
            TypeKind::Pointer => Some(0),
            TypeKind::Struct(fields) => fields
                .iter()
                .find_map(|f| f.shape.first_pointer().map(|o| f.offset + o)),
            _ => None,
        }
    }

    /// The offset of the pointer that identifies a pooled buffer: the first
    /// pointer that owns what it points to (a raw pointer, as inside `Vec`,
    /// `Box` or `NonNull`), else the first pointer of any kind. A borrowed
    /// reference (`&Pool`, the way back a guard keeps) is shared by every
    /// buffer, so it is a buffer's identity only when nothing else is.
    pub fn buffer_pointer(&self) -> Option<u64> {
        self.owned_pointer().or_else(|| self.first_pointer())
    }

    fn owned_pointer(&self) -> Option<u64> {
        match &self.kind {
            TypeKind::Pointer if !self.name.starts_with('&') => Some(0),
            TypeKind::Struct(fields) => fields.iter().find_map(|f| {
                f.shape
                    .owned_pointer()
                    .and_then(|o| f.offset.checked_add(o))
            }),
            _ => None,
        }
    }

    /// For a pointer or reference type: true when it points to a type
    /// named `pointee` (DWARF names the pointer `&mut a::T<..>` or
    /// `a::T<..> *`, and a struct by its last path segment).
    pub fn points_to(&self, pointee: &str) -> bool {
        if self.kind != TypeKind::Pointer || pointee.is_empty() {
            return false;
        }
        let target = self
            .name
            .trim_start_matches("&mut ")
            .trim_start_matches('&')
            .trim_start_matches("*mut ")
            .trim_start_matches("*const ")
            .trim_end_matches(" *")
            .trim();
        target == pointee || target.ends_with(&format!("::{pointee}"))
    }

    /// The offset of an integer field with one of these names, searched
    /// through nested structs.
    pub fn scalar_named(&self, names: &[&str]) -> Option<(String, u64)> {
        let TypeKind::Struct(fields) = &self.kind else {
            return None;
        };
        fields.iter().find_map(|f| match &f.shape.kind {
            TypeKind::Scalar if names.contains(&f.name.as_str()) => {
                Some((f.name.clone(), f.offset))
            }
            TypeKind::Struct(_) => f
                .shape
                .scalar_named(names)
                .map(|(name, offset)| (name, f.offset + offset)),
            _ => None,
        })
    }
}

/// An inlined instance of a function: the code it became inside its
/// caller, and where its parameters are at each place control enters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinedInstance {
    /// The inlined function's path, as DWARF names it.
    pub function: String,
    /// The inlined function it sits in, when it was inlined into another
    /// inlined call (the caller's symbol does not show that).
    pub via: Option<String>,
    /// Its address ranges (not sorted by how control runs through them).
    pub ranges: Vec<Range<u64>>,
    pub entries: Vec<InlinedEntry>,
}

/// A place control enters an inlined instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinedEntry {
    pub address: u64,
    /// The parameters' locations at that address.
    pub signature: Signature,
}

/// Every inlined instance of the function `wanted` names (by its full path:
/// bare line-table names are not enough to trust). `entries_of` says where
/// control enters an instance with these ranges; the parameters' locations
/// are read at each of those addresses.
pub fn inlined_calls(
    elf: &ElfInfo,
    wanted: &RustPath,
    mut entries_of: impl FnMut(&[Range<u64>]) -> Vec<u64>,
) -> Result<Vec<InlinedInstance>> {
    let mut instances = Vec::new();
    for_each_inlined_instance(elf, wanted, |site| {
        let entries = entries_of(&site.ranges)
            .into_iter()
            .map(|address| {
                Ok(InlinedEntry {
                    address,
                    signature: read_signature(site.dwarf, site.unit, site.entry.offset(), address)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        instances.push(InlinedInstance {
            function: site.function.to_string(),
            via: site.via,
            ranges: site.ranges,
            entries,
        });
        Ok(())
    })?;
    Ok(instances)
}

/// One inlined instance, with code, of a function a pattern names.
pub(crate) struct InlinedSite<'s, 'a> {
    pub dwarf: &'s gimli::Dwarf<Slice<'a>>,
    pub unit: &'s Unit<'a>,
    /// Its `DW_TAG_inlined_subroutine`.
    pub entry: &'s gimli::DebuggingInformationEntry<Slice<'a>>,
    /// The inlined function's path.
    pub function: &'s str,
    /// The function it is inlined into, when DWARF names it.
    pub via: Option<String>,
    pub ranges: Vec<Range<u64>>,
}

/// Calls `visit` on every inlined instance with code of the functions
/// `wanted` names by path in `elf`'s DWARF (none without DWARF): what
/// planning an inlined release and an inlined allocate both start from.
pub(crate) fn for_each_inlined_instance(
    elf: &ElfInfo,
    wanted: &RustPath,
    mut visit: impl FnMut(InlinedSite<'_, '_>) -> Result<()>,
) -> Result<()> {
    if !elf.has_debug_info {
        return Ok(());
    }
    let sections = super::dwarf::sections(elf)?;
    let dwarf = sections.borrow(|section| gimli::EndianSlice::new(section, gimli::LittleEndian));
    let declarations: HashMap<UnitSectionOffset, String> = matching_subprograms(&dwarf, wanted)?
        .into_iter()
        .filter(|(_, _, how)| *how == Match::Path)
        .map(|(offset, name, _)| (offset, name))
        .collect();
    if declarations.is_empty() {
        return Ok(());
    }
    let origins = abstract_instances(&dwarf, declarations)?;
    for_each_inlined_call(&dwarf, &origins, |unit, entry, function, via| {
        let ranges = code_ranges(&dwarf, unit, entry)?;
        if ranges.is_empty() {
            return Ok(());
        }
        let via = via
            .map(|at| function_path(&dwarf, unit, at))
            .transpose()?
            .flatten();
        visit(InlinedSite {
            dwarf: &dwarf,
            unit,
            entry,
            function,
            via,
            ranges,
        })
    })
}

/// A subprogram's path: its demangled linkage name, else its own or its
/// declaration's name.
pub(crate) fn function_path(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    mut at: UnitOffset,
) -> Result<Option<String>> {
    for _ in 0..4 {
        let entry = unit.entry(at)?;
        if let Some(value) = entry.attr_value(gimli::DW_AT_linkage_name) {
            let mangled = dwarf
                .attr_string(unit, value)?
                .to_string_lossy()
                .into_owned();
            return Ok(Some(
                RustPath::parse(&super::pattern::demangle(&mangled)).to_string(),
            ));
        }
        match referenced(&entry, gimli::DW_AT_specification) {
            Some(next) => at = next,
            None => {
                let name = name_of(dwarf, unit, &entry)?;
                return Ok((!name.is_empty()).then_some(name));
            }
        }
    }
    Ok(None)
}

/// The signature of the out-of-line function at `address`, if DWARF has
/// types for it.
pub fn signature_at(elf: &ElfInfo, address: u64) -> Result<Option<Signature>> {
    if !elf.has_debug_info {
        return Ok(None);
    }
    let mut found = None;
    for_each_subprogram(elf, |dwarf, unit, entry| {
        let low_pc = entry
            .attr_value(gimli::DW_AT_low_pc)
            .map(|v| dwarf.attr_address(unit, v))
            .transpose()?
            .flatten();
        if low_pc != Some(address) {
            return Ok(ControlFlow::Continue(()));
        }
        let signature = read_signature(dwarf, unit, entry.offset(), address)?;
        // Line-tables-only DWARF has the function but no parameters or
        // types: that is "no signature", not `fn()`.
        let typeless = signature.parameters.is_empty() && signature.returns.is_none();
        found = (!typeless).then_some(signature);
        Ok(ControlFlow::Break(()))
    })?;
    Ok(found)
}

pub(crate) fn read_signature(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    concrete: UnitOffset,
    entry_pc: u64,
) -> Result<Signature> {
    let returns = return_type(dwarf, unit, concrete)?;
    let mut parameters = Vec::new();
    let mut tree = unit.entries_tree(Some(concrete))?;
    let mut children = tree.root()?.children();
    while let Some(child) = children.next()? {
        let entry = child.entry();
        if entry.tag() != gimli::DW_TAG_formal_parameter {
            continue;
        }
        let Some((name, shape)) = parameter_name_and_shape(dwarf, unit, entry)? else {
            continue;
        };
        let location = entry_location(dwarf, unit, entry, entry_pc)?;
        parameters.push(Parameter {
            name,
            shape,
            location,
        });
    }
    Ok(Signature {
        parameters,
        returns,
    })
}

/// The parameters an inlined instance's function declares, as its abstract
/// origin lists them (an instance keeps DIEs only for the parameters it
/// still has: an optimised-out `self` is missing there), with the
/// instance's own locations at `entry_pc` where it has them.
pub(crate) fn declared_parameters(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    concrete: UnitOffset,
    entry_pc: u64,
) -> Result<Vec<Parameter>> {
    let located = read_signature(dwarf, unit, concrete, entry_pc)?.parameters;
    let entry = unit.entry(concrete)?;
    let declared = match entry.attr_value(gimli::DW_AT_abstract_origin) {
        Some(AttributeValue::UnitRef(origin)) => formal_parameters(dwarf, unit, origin)?,
        Some(AttributeValue::DebugInfoRef(target)) => match unit_holding(dwarf, target)? {
            Some((other, origin)) => formal_parameters(dwarf, &other, origin)?,
            None => Vec::new(),
        },
        _ => Vec::new(),
    };
    if declared.len() <= located.len() {
        return Ok(located);
    }
    Ok(declared
        .into_iter()
        .map(|(name, shape)| {
            located
                .iter()
                .find(|p| p.name == name)
                .cloned()
                .unwrap_or(Parameter {
                    name,
                    shape,
                    location: EntryLocation::Unknown,
                })
        })
        .collect())
}

/// The names and types of a function DIE's formal parameters.
fn formal_parameters(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    function: UnitOffset,
) -> Result<Vec<(String, TypeShape)>> {
    let mut parameters = Vec::new();
    let mut tree = unit.entries_tree(Some(function))?;
    let mut children = tree.root()?.children();
    while let Some(child) = children.next()? {
        let entry = child.entry();
        if entry.tag() == gimli::DW_TAG_formal_parameter {
            parameters.extend(parameter_name_and_shape(dwarf, unit, entry)?);
        }
    }
    Ok(parameters)
}

/// A parameter's name and type shape, from its DIE or its abstract origin,
/// which LTO and cross-crate inlining may leave in another unit.
fn parameter_name_and_shape(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
) -> Result<Option<(String, TypeShape)>> {
    if let Some(AttributeValue::DebugInfoRef(target)) =
        entry.attr_value(gimli::DW_AT_abstract_origin)
    {
        if let Some((other, at)) = unit_holding(dwarf, target)? {
            let origin = other.entry(at)?;
            return parameter_name_and_shape(dwarf, &other, &origin);
        }
    }
    let origin = referenced(entry, gimli::DW_AT_abstract_origin);
    let name = match own_or_origin_attr(unit, entry.offset(), origin, gimli::DW_AT_name)? {
        Some(value) => dwarf
            .attr_string(unit, value)?
            .to_string_lossy()
            .into_owned(),
        None => String::new(),
    };
    let Some(ty) = own_or_origin_attr(unit, entry.offset(), origin, gimli::DW_AT_type)? else {
        return Ok(None);
    };
    Ok(shape_of_reference(dwarf, unit, ty)?.map(|shape| (name, shape)))
}

/// The unit holding a section offset, and the offset within it.
fn unit_holding<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    target: gimli::DebugInfoOffset,
) -> Result<Option<(Unit<'a>, UnitOffset)>> {
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        if let Some(at) = target.to_unit_offset(&header) {
            return Ok(Some((dwarf.unit(header)?, at)));
        }
    }
    Ok(None)
}

/// The return type, from the DIE or the declaration it completes.
pub(crate) fn return_type(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    concrete: UnitOffset,
) -> Result<Option<TypeShape>> {
    let mut at = concrete;
    for _ in 0..4 {
        let entry = unit.entry(at)?;
        if let Some(value) = entry.attr_value(gimli::DW_AT_type) {
            return shape_of_reference(dwarf, unit, value);
        }
        if let Some(AttributeValue::DebugInfoRef(target)) =
            entry.attr_value(gimli::DW_AT_abstract_origin)
        {
            // An origin in another unit (LTO, cross-crate inlining).
            return match unit_holding(dwarf, target)? {
                Some((other, at)) => return_type(dwarf, &other, at),
                None => Ok(None),
            };
        }
        match referenced(&entry, gimli::DW_AT_specification)
            .or_else(|| referenced(&entry, gimli::DW_AT_abstract_origin))
        {
            Some(next) => at = next,
            None => return Ok(None),
        }
    }
    Ok(None)
}

pub(crate) fn referenced(
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
    attr: gimli::DwAt,
) -> Option<UnitOffset> {
    match entry.attr_value(attr) {
        Some(AttributeValue::UnitRef(offset)) => Some(offset),
        _ => None,
    }
}

/// An attribute of the DIE at `at`, or else of its abstract origin (an
/// inlined or concrete parameter leaves its name and type there).
pub(crate) fn own_or_origin_attr<'a>(
    unit: &Unit<'a>,
    at: UnitOffset,
    origin: Option<UnitOffset>,
    attr: gimli::DwAt,
) -> Result<Option<AttributeValue<Slice<'a>>>> {
    for offset in [Some(at), origin].into_iter().flatten() {
        if let Some(value) = unit.entry(offset)?.attr_value(attr) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// Follows a type reference, into another unit when it points there
/// (inlining across crates leaves a caller's unit pointing at the types of
/// the crate that defined the function).
pub(crate) fn shape_of_reference(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    value: AttributeValue<Slice<'_>>,
) -> Result<Option<TypeShape>> {
    with_referenced(dwarf, unit, value, |unit, ty| shape(dwarf, unit, ty, 0))
}

/// Runs `read` on the DIE a type reference points to: in this unit, or in
/// another one (`DW_FORM_ref_addr`: LTO merges crates into units that
/// share types across them). `None` for anything else.
fn with_referenced<'a, T>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    unit: &Unit<'a>,
    value: AttributeValue<Slice<'a>>,
    read: impl FnOnce(&Unit<'a>, UnitOffset) -> Result<T>,
) -> Result<Option<T>> {
    match value {
        AttributeValue::UnitRef(at) => read(unit, at).map(Some),
        AttributeValue::DebugInfoRef(target) => match unit_holding(dwarf, target)? {
            Some((other, at)) => read(&other, at).map(Some),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// How deep types are followed into their fields. A pooled `Vec`'s data
/// pointer sits 10 levels into a guard in current Rust (`Recycled` →
/// `RecycledInner` → `ManuallyDrop` → `MaybeDangling` → `Vec` → `RawVec`
/// → `RawVecInner` → `Unique` → `NonNull` → `*const u8`); stopping short
/// of it leaves only the guard's borrow of its pool, the same for every
/// buffer.
const MAX_TYPE_DEPTH: u32 = 16;

/// The shape of the type at `offset` (typedefs and qualifiers skipped).
fn shape(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    offset: UnitOffset,
    depth: u32,
) -> Result<TypeShape> {
    let entry = unit.entry(offset)?;
    let mut name = name_of(dwarf, unit, &entry)?;
    let size = entry
        .attr_value(gimli::DW_AT_byte_size)
        .and_then(|v| v.udata_value())
        .unwrap_or(0);
    let kind = match entry.tag() {
        gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => {
            if name.is_empty() {
                name = pointer_name(dwarf, unit, &entry, depth)?;
            }
            TypeKind::Pointer
        }
        gimli::DW_TAG_base_type => TypeKind::Scalar,
        gimli::DW_TAG_typedef | gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => {
            let inner = match entry.attr_value(gimli::DW_AT_type) {
                Some(value) if depth < MAX_TYPE_DEPTH => {
                    with_referenced(dwarf, unit, value, |unit, inner| {
                        shape(dwarf, unit, inner, depth + 1)
                    })?
                }
                _ => None,
            };
            return Ok(inner.unwrap_or(TypeShape {
                name,
                size,
                kind: TypeKind::Other,
            }));
        }
        gimli::DW_TAG_structure_type if depth < MAX_TYPE_DEPTH => {
            match variant_part(dwarf, unit, offset, depth)? {
                Some(shape) => TypeKind::Enum(shape),
                None => TypeKind::Struct(fields(dwarf, unit, offset, depth)?),
            }
        }
        _ => TypeKind::Other,
    };
    let size = if kind == TypeKind::Pointer && size == 0 {
        8
    } else {
        size
    };
    Ok(TypeShape { name, size, kind })
}

/// The name of a pointer type without one, as C writes it: C's pointer
/// types are unnamed in DWARF (Rust's are named, `*mut u8`), and without
/// a name the planner could not compare one with allocate's result or
/// tell a buffer's address (`void *`, `char *`) from a guard's.
fn pointer_name(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
    depth: u32,
) -> Result<String> {
    Ok(format!("{} *", referenced_name(dwarf, unit, entry, depth)?))
}

/// The name of the type `entry` refers to (a pointer's pointee, a
/// qualifier's type): `void` when it refers to none, `?` past
/// [`MAX_TYPE_DEPTH`] or for an anonymous struct.
fn referenced_name(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
    depth: u32,
) -> Result<String> {
    Ok(match entry.attr_value(gimli::DW_AT_type) {
        Some(value) if depth < MAX_TYPE_DEPTH => {
            with_referenced(dwarf, unit, value, |unit, at| {
                pointee_name(dwarf, unit, at, depth + 1)
            })?
            .unwrap_or_else(|| "?".into())
        }
        Some(_) => "?".into(),
        None => "void".into(),
    })
}

/// The name of the type at `offset` as a pointer's pointee: its own, or
/// past unnamed qualifiers (`const char` → `char`), or a pointer's
/// ([`pointer_name`]); `?` for an anonymous struct.
fn pointee_name(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    offset: UnitOffset,
    depth: u32,
) -> Result<String> {
    let entry = unit.entry(offset)?;
    let name = name_of(dwarf, unit, &entry)?;
    if !name.is_empty() {
        return Ok(name);
    }
    match entry.tag() {
        gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => {
            pointer_name(dwarf, unit, &entry, depth)
        }
        gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => {
            referenced_name(dwarf, unit, &entry, depth)
        }
        _ => Ok("?".into()),
    }
}

fn fields(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    offset: UnitOffset,
    depth: u32,
) -> Result<Vec<Field>> {
    let mut out = Vec::new();
    let mut tree = unit.entries_tree(Some(offset))?;
    let mut children = tree.root()?.children();
    while let Some(child) = children.next()? {
        let entry = child.entry();
        if entry.tag() != gimli::DW_TAG_member {
            continue;
        }
        let name = name_of(dwarf, unit, entry)?;
        let field_offset = entry
            .attr_value(gimli::DW_AT_data_member_location)
            .and_then(|v| v.udata_value())
            .unwrap_or(0);
        let Some(ty) = entry.attr_value(gimli::DW_AT_type) else {
            continue;
        };
        let Some(field_shape) = with_referenced(dwarf, unit, ty, |unit, ty| {
            shape(dwarf, unit, ty, depth + 1)
        })?
        else {
            continue;
        };
        out.push(Field {
            name,
            offset: field_offset,
            shape: field_shape,
        });
    }
    out.sort_by_key(|f| f.offset);
    Ok(out)
}

/// The variant part of an enum's structure type, if it has one: the
/// discriminant member `DW_AT_discr` names, and each `DW_TAG_variant` with
/// its `DW_AT_discr_value` and the member holding the variant's struct.
fn variant_part(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    offset: UnitOffset,
    depth: u32,
) -> Result<Option<EnumShape>> {
    let mut tree = unit.entries_tree(Some(offset))?;
    let mut children = tree.root()?.children();
    while let Some(child) = children.next()? {
        if child.entry().tag() != gimli::DW_TAG_variant_part {
            continue;
        }
        let discr_at = referenced(child.entry(), gimli::DW_AT_discr);
        let mut shape = EnumShape {
            discriminant: None,
            variants: Vec::new(),
        };
        let mut parts = child.children();
        while let Some(part) = parts.next()? {
            let entry = part.entry();
            match entry.tag() {
                gimli::DW_TAG_member if Some(entry.offset()) == discr_at => {
                    let size = referenced(entry, gimli::DW_AT_type)
                        .map(|ty| shape_size(unit, ty))
                        .transpose()?
                        .unwrap_or(0);
                    shape.discriminant = Some((member_offset(entry), size));
                }
                gimli::DW_TAG_variant => {
                    let discriminant = entry
                        .attr_value(gimli::DW_AT_discr_value)
                        .and_then(|v| v.udata_value());
                    let mut members = part.children();
                    while let Some(member) = members.next()? {
                        let member = member.entry();
                        if member.tag() != gimli::DW_TAG_member {
                            continue;
                        }
                        let at = member_offset(member);
                        let fields = match member.attr_value(gimli::DW_AT_type) {
                            Some(ty) => with_referenced(dwarf, unit, ty, |unit, ty| {
                                fields(dwarf, unit, ty, depth + 1)
                            })?
                            .unwrap_or_default(),
                            None => Vec::new(),
                        };
                        shape.variants.push(Variant {
                            name: name_of(dwarf, unit, member)?,
                            discriminant,
                            fields: fields
                                .into_iter()
                                .map(|f| Field {
                                    offset: f.offset + at,
                                    ..f
                                })
                                .collect(),
                        });
                    }
                }
                _ => {}
            }
        }
        return Ok(Some(shape));
    }
    Ok(None)
}

/// The byte size of a type (through typedefs), 0 when DWARF does not say.
fn shape_size(unit: &Unit<'_>, mut ty: UnitOffset) -> Result<u64> {
    for _ in 0..8 {
        let entry = unit.entry(ty)?;
        if let Some(size) = entry
            .attr_value(gimli::DW_AT_byte_size)
            .and_then(|v| v.udata_value())
        {
            return Ok(size);
        }
        match referenced(&entry, gimli::DW_AT_type) {
            Some(next) => ty = next,
            None => break,
        }
    }
    Ok(0)
}

fn member_offset(entry: &gimli::DebuggingInformationEntry<Slice<'_>>) -> u64 {
    entry
        .attr_value(gimli::DW_AT_data_member_location)
        .and_then(|v| v.udata_value())
        .unwrap_or(0)
}

/// Where the parameter is at `entry_pc`: a single-register location, or a
/// location list entry covering the function's first instruction.
fn entry_location(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
    entry_pc: u64,
) -> Result<EntryLocation> {
    let expression = match entry.attr_value(gimli::DW_AT_location) {
        Some(AttributeValue::Exprloc(expression)) => Some(expression),
        Some(value) => match dwarf.attr_locations_offset(unit, value)? {
            Some(offset) => {
                let mut list = dwarf.locations(unit, offset)?;
                let mut found = None;
                while let Some(location) = list.next()? {
                    if location.range.begin <= entry_pc && entry_pc < location.range.end {
                        found = Some(location.data);
                        break;
                    }
                }
                found
            }
            None => None,
        },
        None => None,
    };
    let Some(expression) = expression else {
        return Ok(EntryLocation::Unknown);
    };
    let bytes = expression.0.to_slice()?;
    Ok(location_of_expression(&bytes))
}

/// Reads the simple shapes of a location expression; computed locations
/// (arithmetic, implicit values, partial pieces) are not followed.
fn location_of_expression(bytes: &[u8]) -> EntryLocation {
    const PIECE: u8 = 0x93;
    let register = |op: u8| (0x50..0x60).contains(&op).then(|| u16::from(op - 0x50));
    match *bytes {
        // DW_OP_reg0..15
        [op] => register(op).map_or(EntryLocation::Unknown, EntryLocation::Register),
        // DW_OP_breg0..15 with offset 0: the value is in memory there.
        [op, 0] if (0x70..0x80).contains(&op) => EntryLocation::Memory(u16::from(op - 0x70)),
        // DW_OP_regA DW_OP_piece 8 DW_OP_regB DW_OP_piece 8
        [a, PIECE, 8, b, PIECE, 8] => match (register(a), register(b)) {
            (Some(a), Some(b)) => EntryLocation::Pair(a, b),
            _ => EntryLocation::Unknown,
        },
        // DW_OP_regA DW_OP_piece 4 DW_OP_regB DW_OP_piece 4
        [a, PIECE, 4, b, PIECE, 4] => match (register(a), register(b)) {
            (Some(a), Some(b)) => EntryLocation::Halves(a, b),
            _ => EntryLocation::Unknown,
        },
        _ => EntryLocation::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C's pointer types have no name in DWARF; each is named as C
    /// writes it from what it points to, so a C pool's `void *` reads as
    /// a buffer's address and its `struct buf *` compares with allocate's
    /// result. Compiled by the machine's C compiler.
    #[test]
    fn c_pointers_are_named_from_what_they_point_to() {
        let source = "struct buf { char *data; unsigned long len; };\n\
             static struct buf one;\n\
             __attribute__((noinline)) struct buf *buf_get(unsigned long n) { one.len = n; return &one; }\n\
             __attribute__((noinline)) void buf_put(struct buf *b) { b->len = 0; }\n\
             __attribute__((noinline)) void raw_put(const void *p) { (void)p; }\n\
             __attribute__((noinline)) void text_put(const char *s) { (void)s; }\n\
             __attribute__((noinline)) void both_put(struct buf **pp) { *pp = 0; }\n\
             int main(void) { struct buf *b = buf_get(1); raw_put(b); text_put(\"\"); buf_put(b); both_put(&b); return 0; }\n";
        let (_dir, binary) = crate::test_c::compile("cc", source, "pool", &["-O1", "-g"]);
        let elf = ElfInfo::read(&binary).unwrap();
        let signature = |name: &str| {
            let function = elf.functions.iter().find(|f| f.demangled == name).unwrap();
            signature_at(&elf, function.address).unwrap().unwrap()
        };
        let first = |name: &str| signature(name).parameters[0].shape.name.clone();
        assert_eq!(signature("buf_get").returns.unwrap().name, "buf *");
        assert_eq!(first("buf_put"), "buf *");
        assert_eq!(first("raw_put"), "void *");
        assert_eq!(first("text_put"), "char *");
        assert_eq!(first("both_put"), "buf * *");
    }

    #[test]
    fn reads_register_memory_and_pair_locations() {
        assert_eq!(location_of_expression(&[0x55]), EntryLocation::Register(5));
        assert_eq!(location_of_expression(&[0x74, 0]), EntryLocation::Memory(4));
        assert_eq!(location_of_expression(&[0x74, 8]), EntryLocation::Unknown);
        assert_eq!(
            location_of_expression(&[0x53, 0x93, 8, 0x5c, 0x93, 8]),
            EntryLocation::Pair(3, 12)
        );
        // Only half of the value is described: not trusted.
        assert_eq!(
            location_of_expression(&[0x53, 0x93, 8]),
            EntryLocation::Unknown
        );
    }

    #[test]
    fn names_argument_registers_by_position() {
        assert_eq!(register_text(5), "arg0");
        assert_eq!(register_text(9), "arg5");
        assert_eq!(register_text(3), "rbx");
        assert_eq!(next_argument(4), Some(1));
        assert_eq!(next_argument(9), None);
    }
}
