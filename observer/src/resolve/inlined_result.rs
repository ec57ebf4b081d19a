//! An allocate the compiler inlined into its callers: each instance's
//! code, the places control enters and leaves it, and where the caller
//! keeps the result when control leaves.
//!
//! An inlined call has no return value in DWARF: its result becomes one of
//! the caller's variables (`let buffer = pool.pull(..)`), whose location
//! list says where it is at each address. So the result at an exit is the
//! caller's variable of the function's return type that DWARF places at
//! that address.

use std::ops::Range;

use anyhow::Result;
use gimli::AttributeValue;

use super::dwarf::{code_ranges, name_of, Slice};
use super::elf::ElfInfo;
use super::pattern::RustPath;
use super::places::{decode, frame_base_register, Place};
use super::signature::{
    declared_parameters, for_each_inlined_instance, own_or_origin_attr, referenced, return_type,
    Parameter, TypeShape,
};

type Unit<'a> = gimli::Unit<Slice<'a>>;

/// One inlined instance of an allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocInstance {
    /// The inlined function's path, as DWARF names it.
    pub function: String,
    /// The inlined function it sits in, if any.
    pub via: Option<String>,
    pub ranges: Vec<Range<u64>>,
    /// Where control enters it.
    pub entries: Vec<u64>,
    /// What it returns (`None` without DWARF types).
    pub returns: Option<TypeShape>,
    /// Its parameters' names and types (`self`: the pool, whose type an
    /// integer key is scoped to); their locations are those at the first
    /// entry, often none in an inlined instance.
    pub parameters: Vec<Parameter>,
    pub exits: Vec<Exit>,
}

/// A place control leaves an instance, and where the result is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub address: u64,
    /// The return of a call that ends the instance, which may never
    /// happen (a panic): not worth a warning when nothing is located there.
    pub after_call: bool,
    /// The result's place, or why it has none.
    pub result: Result<Place, String>,
}

/// Where control enters and leaves an instance with these ranges.
pub struct Flow {
    pub entries: Vec<u64>,
    pub exits: Vec<u64>,
    /// Exits that are the returns of calls ending the instance.
    pub after_calls: Vec<u64>,
    /// Each exit with the instruction inside the instance it is reached
    /// from: `(exit, from)`.
    pub edges: Vec<(u64, u64)>,
}

/// Every inlined instance of the function `wanted` names (by full path),
/// with its flow (from `flow_of`, given the instance's ranges) and the
/// result's place at each exit.
pub fn inlined_allocs(
    elf: &ElfInfo,
    wanted: &RustPath,
    mut flow_of: impl FnMut(&[Range<u64>]) -> Flow,
) -> Result<Vec<AllocInstance>> {
    let mut instances = Vec::new();
    for_each_inlined_instance(elf, wanted, |site| {
        let (dwarf, unit, entry) = (site.dwarf, site.unit, site.entry);
        let returns = return_type(dwarf, unit, entry.offset())?;
        let Flow {
            entries,
            mut exits,
            after_calls,
            edges,
        } = flow_of(&site.ranges);
        exits.extend(&after_calls);
        let wanted = Wanted {
            instance: entry.offset(),
            type_name: returns.as_ref().map_or("", |r| r.name.as_str()),
            exits: &exits,
            edges: &edges,
            after_calls: &after_calls,
        };
        let mut exits = match &returns {
            Some(_) => results_at(dwarf, unit, &wanted)?,
            None => exits
                .iter()
                .map(|&address| Exit {
                    address,
                    after_call: false,
                    result: Err("DWARF has no type for its result".into()),
                })
                .collect(),
        };
        for exit in &mut exits {
            exit.after_call = after_calls.contains(&exit.address);
        }
        let first_entry = entries
            .first()
            .copied()
            .or_else(|| site.ranges.first().map(|r| r.start))
            .unwrap_or(0);
        let parameters = declared_parameters(dwarf, unit, entry.offset(), first_entry)?;
        instances.push(AllocInstance {
            function: site.function.to_string(),
            via: site.via,
            ranges: site.ranges,
            entries,
            returns,
            parameters,
            exits,
        });
        Ok(())
    })?;
    Ok(instances)
}

/// A scope around the DIE being read: its code and its frame base.
struct Scope {
    depth: isize,
    ranges: Vec<Range<u64>>,
    frame_base: Option<u16>,
}

/// What [`results_at`] looks for.
struct Wanted<'w> {
    /// The instance's DIE.
    instance: gimli::UnitOffset,
    /// Its result type's name.
    type_name: &'w str,
    exits: &'w [u64],
    /// `(exit, from)`: the instruction inside the instance each exit is
    /// reached from.
    edges: &'w [(u64, u64)],
    after_calls: &'w [u64],
}

/// For each exit, the place of the result: the caller's variable of the
/// result type that DWARF locates at the exit; failing that, the inlined
/// function's own variable of that type (the value it returns) located at
/// the instruction control leaves from, when that place still holds it at
/// the exit (always after a jump; after a call only in memory or in a
/// register the call preserves).
fn results_at(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    wanted: &Wanted<'_>,
) -> Result<Vec<Exit>> {
    let exits = wanted.exits;
    let mut found: Vec<Vec<Place>> = vec![Vec::new(); exits.len()];
    let mut own: Vec<Vec<Place>> = vec![Vec::new(); exits.len()];
    let mut scopes: Vec<Scope> = Vec::new();
    let mut inside_at: Option<isize> = None;
    let mut entries = unit.entries();
    while let Some(entry) = entries.next_dfs()? {
        let depth = entry.depth();
        scopes.retain(|s| s.depth < depth);
        if inside_at.is_some_and(|d| depth <= d) {
            inside_at = None;
        }
        if entry.offset() == wanted.instance {
            inside_at = Some(depth);
        }
        match entry.tag() {
            gimli::DW_TAG_subprogram
            | gimli::DW_TAG_lexical_block
            | gimli::DW_TAG_inlined_subroutine => {
                let frame_base = match entry.attr_value(gimli::DW_AT_frame_base) {
                    Some(AttributeValue::Exprloc(e)) => frame_base_register(e.0.slice()),
                    _ => scopes.last().and_then(|s| s.frame_base),
                };
                scopes.push(Scope {
                    depth,
                    ranges: code_ranges(dwarf, unit, entry)?,
                    frame_base,
                });
            }
            gimli::DW_TAG_variable | gimli::DW_TAG_formal_parameter => {
                if type_of(dwarf, unit, entry)?.as_deref() != Some(wanted.type_name) {
                    continue;
                }
                let Some(scope) = scopes.last() else {
                    continue;
                };
                let located = |address: u64| -> Result<Option<Place>> {
                    let in_scope = scope.ranges.iter().any(|r| r.contains(&address));
                    Ok(expression_at(dwarf, unit, entry, address, in_scope)?
                        .and_then(|bytes| decode(&bytes, scope.frame_base)))
                };
                let inside = inside_at.is_some();
                for (index, &address) in exits.iter().enumerate() {
                    if !inside {
                        if let Some(place) = located(address)? {
                            push_new(&mut found[index], place);
                        }
                        continue;
                    }
                    let after_call = wanted.after_calls.contains(&address);
                    for &(_, from) in wanted.edges.iter().filter(|(to, _)| *to == address) {
                        if let Some(place) = located(from)? {
                            if !after_call || survives_calls(&place) {
                                push_new(&mut own[index], place);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let type_name = wanted.type_name;
    Ok(exits
        .iter()
        .zip(found.into_iter().zip(own))
        .map(|(&address, (found, own))| {
            let mut places = if found.is_empty() { own } else { found };
            Exit {
                address,
                after_call: false,
                result: match places.len() {
                    1 => Ok(places.remove(0)),
                    0 => Err(format!("DWARF locates no {type_name} there")),
                    n => Err(format!("{n} values of type {type_name} are located there")),
                },
            }
        })
        .collect())
}

fn push_new(places: &mut Vec<Place>, place: Place) {
    if !places.contains(&place) {
        places.push(place);
    }
}

/// Whether a value in this place is still there after a call returns:
/// in memory, or in registers the ABI has calls preserve
/// (`arch::CALL_PRESERVED_REGISTERS`: rbx, rbp, r12–r15 on x86-64).
fn survives_calls(place: &Place) -> bool {
    use super::places::Part;
    use crate::arch::{CALL_PRESERVED_REGISTERS as PRESERVED, STACK_POINTER};
    place.pieces.iter().all(|piece| match piece.part {
        Part::Register(register) => PRESERVED.contains(&register),
        Part::Memory { register, .. } | Part::Computed { register, .. } => {
            register == STACK_POINTER || PRESERVED.contains(&register)
        }
    })
}

/// The name of a variable's type.
fn type_of(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
) -> Result<Option<String>> {
    let origin = referenced(entry, gimli::DW_AT_abstract_origin);
    match own_or_origin_attr(unit, entry.offset(), origin, gimli::DW_AT_type)? {
        Some(AttributeValue::UnitRef(ty)) => Ok(Some(name_of(dwarf, unit, &unit.entry(ty)?)?)),
        _ => Ok(None),
    }
}

/// The variable's location expression at `address`: the location list
/// entry covering it, or its single location when its scope covers it.
fn expression_at(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<'_>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
    address: u64,
    in_scope: bool,
) -> Result<Option<Vec<u8>>> {
    match entry.attr_value(gimli::DW_AT_location) {
        Some(AttributeValue::Exprloc(expression)) if in_scope => {
            Ok(Some(expression.0.slice().to_vec()))
        }
        Some(AttributeValue::Exprloc(_)) | None => Ok(None),
        Some(value) => {
            let Some(offset) = dwarf.attr_locations_offset(unit, value)? else {
                return Ok(None);
            };
            let mut list = dwarf.locations(unit, offset)?;
            while let Some(location) = list.next()? {
                if location.range.begin <= address && address < location.range.end {
                    return Ok(Some(location.data.0.slice().to_vec()));
                }
            }
            Ok(None)
        }
    }
}
