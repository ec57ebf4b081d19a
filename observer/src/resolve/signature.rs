//! A function's signature as DWARF describes it: parameter names, types
//! and where each parameter is at the function's first instruction, and
//! the return type, with the sizes and fields of struct types. Needs full
//! DWARF (`debug = 2`, or a separate debug file): line-tables-only and
//! `debug = "limited"` carry no types.

use anyhow::Result;
use gimli::{AttributeValue, Reader as _, UnitOffset};

use std::ops::ControlFlow;

use super::dwarf::{for_each_subprogram, name_of, Slice};
use super::elf::ElfInfo;
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
    /// A struct (or tuple, or enum treated as opaque) with its fields.
    Struct(Vec<Field>),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u64,
    pub shape: TypeShape,
}

/// Where a parameter is when the function starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryLocation {
    /// In this argument register (0..5 = rdi rsi rdx rcx r8 r9).
    Register(u8),
    /// In memory at the address held by this argument register (a struct
    /// passed by reference).
    Memory(u8),
    /// DWARF says something else, or nothing.
    Unknown,
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

/// DWARF x86-64 register numbers of the argument registers, in order.
const ARGUMENT_REGISTERS: [u16; 6] = [5, 4, 1, 2, 8, 9];

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

fn read_signature(
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
        let origin = referenced(entry, gimli::DW_AT_abstract_origin);
        let name = attribute_string(dwarf, unit, entry.offset(), origin, gimli::DW_AT_name)?
            .unwrap_or_default();
        let Some(type_offset) = type_of(unit, entry.offset(), origin)? else {
            continue;
        };
        let shape = shape(dwarf, unit, type_offset, 0)?;
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

/// The return type, from the DIE or the declaration it completes.
fn return_type(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    concrete: UnitOffset,
) -> Result<Option<TypeShape>> {
    let mut at = concrete;
    for _ in 0..4 {
        let entry = unit.entry(at)?;
        if let Some(AttributeValue::UnitRef(ty)) = entry.attr_value(gimli::DW_AT_type) {
            return shape(dwarf, unit, ty, 0).map(Some);
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

fn referenced(
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
    attr: gimli::DwAt,
) -> Option<UnitOffset> {
    match entry.attr_value(attr) {
        Some(AttributeValue::UnitRef(offset)) => Some(offset),
        _ => None,
    }
}

fn type_of(
    unit: &Unit<'_>,
    at: UnitOffset,
    origin: Option<UnitOffset>,
) -> Result<Option<UnitOffset>> {
    for offset in [Some(at), origin].into_iter().flatten() {
        if let Some(AttributeValue::UnitRef(ty)) = unit.entry(offset)?.attr_value(gimli::DW_AT_type)
        {
            return Ok(Some(ty));
        }
    }
    Ok(None)
}

fn attribute_string(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    at: UnitOffset,
    origin: Option<UnitOffset>,
    attr: gimli::DwAt,
) -> Result<Option<String>> {
    for offset in [Some(at), origin].into_iter().flatten() {
        if let Some(value) = unit.entry(offset)?.attr_value(attr) {
            return Ok(Some(
                dwarf
                    .attr_string(unit, value)?
                    .to_string_lossy()
                    .into_owned(),
            ));
        }
    }
    Ok(None)
}

/// The shape of the type at `offset` (typedefs and qualifiers skipped).
fn shape(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    offset: UnitOffset,
    depth: u32,
) -> Result<TypeShape> {
    let entry = unit.entry(offset)?;
    let name = name_of(dwarf, unit, &entry)?;
    let size = entry
        .attr_value(gimli::DW_AT_byte_size)
        .and_then(|v| v.udata_value())
        .unwrap_or(0);
    let kind = match entry.tag() {
        gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => TypeKind::Pointer,
        gimli::DW_TAG_base_type => TypeKind::Scalar,
        gimli::DW_TAG_typedef | gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => {
            return match referenced(&entry, gimli::DW_AT_type) {
                Some(inner) if depth < 8 => shape(dwarf, unit, inner, depth + 1),
                _ => Ok(TypeShape {
                    name,
                    size,
                    kind: TypeKind::Other,
                }),
            };
        }
        gimli::DW_TAG_structure_type if depth < 8 => {
            TypeKind::Struct(fields(dwarf, unit, offset, depth)?)
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
        let Some(ty) = referenced(entry, gimli::DW_AT_type) else {
            continue;
        };
        out.push(Field {
            name,
            offset: field_offset,
            shape: shape(dwarf, unit, ty, depth + 1)?,
        });
    }
    out.sort_by_key(|f| f.offset);
    Ok(out)
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
    Ok(match bytes.first() {
        // DW_OP_reg0..31
        Some(&op) if (0x50..0x70).contains(&op) => {
            argument(u16::from(op - 0x50)).map_or(EntryLocation::Unknown, EntryLocation::Register)
        }
        // DW_OP_breg0..31 with offset 0: the value is in memory there.
        Some(&op) if (0x70..0x90).contains(&op) && bytes.get(1) == Some(&0) => {
            argument(u16::from(op - 0x70)).map_or(EntryLocation::Unknown, EntryLocation::Memory)
        }
        _ => EntryLocation::Unknown,
    })
}

fn argument(dwarf_register: u16) -> Option<u8> {
    ARGUMENT_REGISTERS
        .iter()
        .position(|&r| r == dwarf_register)
        .map(|index| index as u8)
}
