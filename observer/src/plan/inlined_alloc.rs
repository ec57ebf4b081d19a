//! Planning an allocate that the compiler inlined into every caller (a
//! generic pool's `pull`, instantiated and inlined in the caller's crate,
//! or any pool under LTO).
//!
//! Each instance is followed where it runs: a probe where control enters
//! it records the call and walks the stack (the kernel side pretends a
//! call there, with its return-address slot just below the stack
//! pointer), and a probe where control leaves it reads the result where
//! that caller keeps it (DWARF's location of the caller's variable of the
//! result type at that address) and pairs it with the entry by the same
//! stack pointer. Needs full DWARF (`debug = 2`, or a debug file).

use anyhow::Result;

use super::flow;
use super::infer::{self, KeyScope};
use super::instance;
use super::keys::{self, IdKind, PoolScope};
use super::{ExitValues, LocSpec, Location, PlannedFunction, ProbeRequest, ProbeSite};
use crate::error::UserError;
use crate::resolve::elf::ElfInfo;
use crate::resolve::inlined_result::{inlined_allocs, AllocInstance, Flow};
use crate::resolve::pattern::RustPath;
use crate::resolve::signature::{Signature, TypeShape};
use crate::resolve::ResolvedFunction;

/// At most this many entry and exit probes each: beyond it the user is
/// better served un-inlining the pool.
const MAX_SITES: usize = 1024;

/// How many per-exit explanations a plan lists before summarising.
const EXPLAINED_EXITS: usize = 4;

/// Size field names, as `--size auto` looks for them.
const SIZE_NAMES: [&str; 6] = ["capacity", "cap", "len", "size", "bytes", "length"];

/// An inlined allocate, planned.
pub(super) struct InlinedAlloc {
    /// Entry probes (kind "inlined").
    pub planned: PlannedFunction,
    /// Exit probes, each with the result's place there.
    pub exits: Vec<ProbeSite>,
    /// Allocate's parameters and result type, for inferring the release's
    /// identity.
    pub signature: Signature,
    /// For an integer key: its type and what it is unique within.
    pub key: Option<KeyScope>,
    /// The first exit's locations, reported as the plan's.
    pub first: ExitValues,
    pub explanations: Vec<String>,
    pub warnings: Vec<String>,
}

/// Plans the inlined instances of `request.alloc`, or `None` when DWARF
/// knows none.
pub(super) fn plan_alloc(
    elf: &ElfInfo,
    exe_display: &str,
    request: &ProbeRequest,
) -> Result<Option<InlinedAlloc>> {
    let instances = find(elf, &request.alloc)?;
    if instances.is_empty() {
        return Ok(None);
    }
    let name = instances[0].function.clone();
    let Some(returns) = instances.iter().find_map(|i| i.returns.clone()) else {
        return Err(UserError::new(format!(
            "'{}' has no out-of-line copy in {exe_display}: it is inlined at {} places, and its \
             result can only be followed with DWARF types: build with debug = 2 (or give its \
             debug file with --debug-file)",
            request.alloc,
            instances.len()
        ))
        .into());
    };
    check_given(request, exe_display, instances.len())?;
    let identity = id_rule(request.alloc_id, &name, &returns, &instances)?;
    let size = size_rule(request.size, &returns, identity.key.is_some())?;
    let mut plan = Builder::default();
    for instance in &instances {
        plan.add_instance(elf, instance, &identity, &size);
    }
    plan.finish(
        request,
        exe_display,
        &name,
        &instances,
        returns,
        &size,
        identity,
    )
}

/// What identifies a buffer at every exit: the bytes at `offset` of the
/// result, and for an integer key, what it is unique within.
struct IdRule {
    offset: u64,
    key: Option<KeyScope>,
}

fn id_rule(
    spec: LocSpec,
    name: &str,
    returns: &TypeShape,
    instances: &[AllocInstance],
) -> Result<IdRule> {
    // `ret`: the result itself (a slab's integer key), unscoped.
    if let LocSpec::Given(_) = spec {
        return Ok(IdRule {
            offset: 0,
            key: None,
        });
    }
    if let Some(offset) = returns.buffer_pointer() {
        return Ok(IdRule { offset, key: None });
    }
    let signature = instance_signature(&instances[0], returns);
    let refuse = |why: String| {
        UserError::new(format!(
            "--alloc-id auto: {} (what inlined {name} returns) {why}; --alloc-id ret takes the \
             result itself",
            returns.name
        ))
    };
    let value = keys::result_value(returns, &signature).map_err(&refuse)?;
    let IdKind::Key { type_name } = value.kind else {
        return Err(refuse("holds no pointer to identify a buffer by".into()).into());
    };
    if value.success.is_some() {
        return Err(refuse(
            "is an enum: which of its variants an inlined instance leaves is not followed".into(),
        )
        .into());
    }
    Ok(IdRule {
        offset: value.offset,
        key: Some(KeyScope {
            type_name,
            pool: keys::pool_type(&signature).map(PoolScope::Type),
        }),
    })
}

/// An instance's signature as DWARF declares it (its parameters' types;
/// their locations are rarely known inside a caller).
fn instance_signature(instance: &AllocInstance, returns: &TypeShape) -> Signature {
    Signature {
        parameters: instance.parameters.clone(),
        returns: Some(returns.clone()),
    }
}

/// Locations given on the command line must be the same at every exit:
/// only a literal size is.
fn check_given(request: &ProbeRequest, exe_display: &str, places: usize) -> Result<()> {
    let fits = |flag: &str, spec: LocSpec| match spec {
        LocSpec::Auto => true,
        // `ret`: the result, wherever each caller keeps it.
        LocSpec::Given(location) if flag == "--alloc-id" => location.to_string() == "ret",
        LocSpec::Given(location) => location.is_constant(),
    };
    for (flag, spec) in [("--alloc-id", request.alloc_id), ("--size", request.size)] {
        if !fits(flag, spec) {
            let LocSpec::Given(location) = spec else {
                unreachable!("auto fits");
            };
            return Err(UserError::new(format!(
                "'{}' has no out-of-line copy in {exe_display}: it is inlined at {places} \
                 place{}, each keeping its result where its caller chose, so one {flag} \
                 '{location}' cannot fit them all: use {flag} auto (needs DWARF with types, \
                 debug = 2){}",
                request.alloc,
                if places == 1 { "" } else { "s" },
                if flag == "--size" {
                    " or a literal size"
                } else {
                    ", or ret for the result itself"
                }
            ))
            .into());
        }
    }
    Ok(())
}

/// How the size is found at each exit.
enum SizeRule {
    /// A literal from the command line.
    Literal(Location),
    /// The field at this offset of the result.
    Field { name: String, offset: u64 },
    /// A slab's: the size of the value each instance stores per key.
    Element,
}

fn size_rule(spec: LocSpec, returns: &TypeShape, returns_key: bool) -> Result<SizeRule> {
    if let LocSpec::Given(location) = spec {
        return Ok(SizeRule::Literal(location));
    }
    if returns_key && size_field(returns).is_none() {
        return Ok(SizeRule::Element);
    }
    let (name, offset) = size_field(returns).ok_or_else(|| {
        UserError::new(format!(
            "--size auto: {} has no field named like a size ({}); give a literal such as \
             --size 4096",
            returns.name,
            SIZE_NAMES.join(", ")
        ))
    })?;
    Ok(SizeRule::Field { name, offset })
}

/// A size field of the result: an integer named like a size, or a field
/// so named that wraps one integer (`Vec`'s `cap: Cap(usize)`).
fn size_field(shape: &TypeShape) -> Option<(String, u64)> {
    use crate::resolve::signature::TypeKind;
    let TypeKind::Struct(fields) = &shape.kind else {
        return None;
    };
    fields.iter().find_map(|field| {
        let named = SIZE_NAMES.contains(&field.name.as_str());
        match &field.shape.kind {
            TypeKind::Scalar if named => Some((field.name.clone(), field.offset)),
            TypeKind::Struct(inner)
                if named && inner.len() == 1 && matches!(inner[0].shape.kind, TypeKind::Scalar) =>
            {
                Some((
                    field.name.clone(),
                    field.offset.checked_add(inner[0].offset)?,
                ))
            }
            TypeKind::Struct(_) => size_field(&field.shape)
                .and_then(|(name, offset)| Some((name, field.offset.checked_add(offset)?))),
            _ => None,
        }
    })
}

/// The instances of `pattern` with where control enters and leaves each.
fn find(elf: &ElfInfo, pattern: &str) -> Result<Vec<AllocInstance>> {
    inlined_allocs(elf, &RustPath::parse(pattern), |ranges| {
        let Some(caller) = instance::caller_of(elf, ranges) else {
            return Flow {
                entries: Vec::new(),
                exits: Vec::new(),
                after_calls: Vec::new(),
                edges: Vec::new(),
            };
        };
        let code = elf
            .bytes_at(caller.address, caller.size as usize)
            .unwrap_or_default();
        let ranges = &flow::with_detours(crate::arch::ISA, code, caller.address, ranges);
        // Landing pads run only when a call panics: no call starts or
        // returns there.
        let reached = flow::ordinary_flow(crate::arch::ISA, code, caller.address);
        let mut entries: Vec<u64> = flow::entries(crate::arch::ISA, code, caller.address, ranges)
            .addresses
            .into_iter()
            .filter(|address| reached.as_ref().is_none_or(|r| r.contains(address)))
            .map(|address| flow::past_padding(crate::arch::ISA, code, caller.address, address))
            .collect();
        entries.sort_unstable();
        entries.dedup();
        let exits = flow::exits(crate::arch::ISA, code, caller.address, ranges);
        let exits = flow::ordinary_exits(
            crate::arch::ISA,
            code,
            caller.address,
            reached.as_ref(),
            exits,
        );
        Flow {
            entries,
            exits: exits.addresses,
            after_calls: exits.after_calls,
            edges: exits.edges,
        }
    })
}

/// The plan being built, instance by instance.
#[derive(Default)]
struct Builder {
    entries: Vec<ProbeSite>,
    exits: Vec<ProbeSite>,
    explanations: Vec<String>,
    skipped: Vec<String>,
}

impl Builder {
    /// Plans one instance: its exits whose result DWARF locates, and its
    /// entries when at least one exit is probed (an entry without a
    /// probed exit would only count as a call that never returned).
    fn add_instance(
        &mut self,
        elf: &ElfInfo,
        instance: &AllocInstance,
        identity: &IdRule,
        size: &SizeRule,
    ) {
        let caller = caller_label(elf, instance);
        let scoped = match instance_scope(instance, identity) {
            Ok(scoped) => scoped,
            Err(why) => {
                self.skipped.push(format!("{caller}: {why}"));
                return;
            }
        };
        let mut exits = Vec::new();
        for exit in &instance.exits {
            match exit_values(&exit.result, identity.offset, &scoped.size, size) {
                Ok((mut values, why)) => {
                    values.scope = scoped.scope;
                    let index = self.exits.len() + exits.len();
                    match instance::site_at(elf, &instance.function, exit.address, &caller, index) {
                        Some(mut site) => {
                            site.exit = Some(values);
                            if self.explanations.len() < EXPLAINED_EXITS {
                                self.explanations.push(format!(
                                    "--alloc-id auto, inlined in {caller}, leaving at {:#x} = {} \
                                     (--size {}): {why}",
                                    exit.address, values.id, values.size
                                ));
                            }
                            exits.push(site);
                        }
                        None => self.skipped.push(format!(
                            "{caller}: exit {:#x} is outside the loaded code",
                            exit.address
                        )),
                    }
                }
                // A call's return where nothing is located is most likely
                // a call that never returns.
                Err(_) if exit.after_call => {}
                Err(why) => self
                    .skipped
                    .push(format!("{caller}, leaving at {:#x}: {why}", exit.address)),
            }
        }
        if exits.is_empty() {
            self.skipped.push(format!(
                "{caller}: no exit with a located result, so its calls are not followed"
            ));
            return;
        }
        self.exits.extend(exits);
        for &address in &instance.entries {
            let index = self.entries.len();
            match instance::site_at(elf, &instance.function, address, &caller, index) {
                Some(site) => self.entries.push(site),
                None => self.skipped.push(format!(
                    "{caller}: entry {address:#x} is outside the loaded code"
                )),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        request: &ProbeRequest,
        exe_display: &str,
        name: &str,
        instances: &[AllocInstance],
        returns: TypeShape,
        size: &SizeRule,
        identity: IdRule,
    ) -> Result<Option<InlinedAlloc>> {
        if self.entries.is_empty() || self.exits.is_empty() {
            return Err(UserError::new(format!(
                "'{}' has no out-of-line copy in {exe_display}, and none of its {} inlined \
                 instances can be followed ({}): un-inline it, or probe a pool function that is \
                 not inlined",
                request.alloc,
                instances.len(),
                self.skipped.join("; ")
            ))
            .into());
        }
        if self.entries.len().max(self.exits.len()) > MAX_SITES {
            return Err(UserError::new(format!(
                "'{}' is inlined at {} places ({} entries, {} exits), more than the {MAX_SITES} \
                 probes the observer keeps for one function: un-inline it",
                request.alloc,
                instances.len(),
                self.entries.len(),
                self.exits.len()
            ))
            .into());
        }
        let mut explanations = self.explanations;
        match size {
            SizeRule::Field { name: field, .. } => explanations.push(format!(
                "--size auto: field `{field}` of the {} each inlined instance returns",
                returns.name
            )),
            SizeRule::Element => explanations.push(format!(
                "--size auto: inlined {name} returns an integer key, so it stores a value per \
                 key: the size of that value's type in DWARF, per instance ({} at the first)",
                self.exits[0].exit.map_or(Location::ZERO, |v| v.size)
            )),
            SizeRule::Literal(_) => {}
        }
        if let Some(key) = &identity.key {
            explanations.push(format!("--alloc-id auto: the id is an {}", key.describe()));
        }
        if self.exits.len() > EXPLAINED_EXITS {
            explanations.push(format!(
                "--alloc-id auto: … and {} more exits of inlined instances, each with its own \
                 location",
                self.exits.len() - EXPLAINED_EXITS
            ));
        }
        let mut warnings = Vec::new();
        if !self.skipped.is_empty() {
            warnings.push(format!(
                "{} places of inlined {name} are not probed, so buffers allocated there are not \
                 seen (calls entered there count as entries without return): {}",
                self.skipped.len(),
                self.skipped.join("; ")
            ));
        }
        let first = self.exits[0].exit.expect("exit sites carry their values");
        let function = ResolvedFunction {
            pattern: request.alloc.clone(),
            name: name.to_string(),
            copies: self.entries.iter().map(|s| s.symbol.clone()).collect(),
        };
        Ok(Some(InlinedAlloc {
            planned: PlannedFunction {
                function,
                sites: self.entries,
                inlined: true,
            },
            exits: self.exits,
            signature: instance_signature(&instances[0], &returns),
            key: identity.key,
            first,
            explanations,
            warnings,
        }))
    }
}

/// The id and size locations at one exit, with why, or why not.
fn exit_values(
    result: &Result<crate::resolve::places::Place, String>,
    id_offset: u64,
    element_size: &Option<Location>,
    size: &SizeRule,
) -> Result<(ExitValues, String), String> {
    let place = result.as_ref().map_err(Clone::clone)?;
    let parse = |text: String| Location::parse(&text).map_err(|e| e.to_string());
    let id_text = place.word_at(id_offset).ok_or_else(|| {
        format!(
            "DWARF does not locate the result's bytes {id_offset}..{}",
            id_offset.saturating_add(8)
        )
    })?;
    let size = match size {
        SizeRule::Literal(location) => *location,
        SizeRule::Field { offset, .. } => parse(place.word_at(*offset).ok_or_else(|| {
            format!("DWARF does not locate the result's size at offset {offset}")
        })?)?,
        SizeRule::Element => element_size
            .ok_or_else(|| "DWARF gives no size for the value stored under the key".to_string())?,
    };
    let values = ExitValues {
        id: parse(id_text)?,
        size,
        scope: Location::ZERO,
    };
    Ok((
        values,
        format!("the caller's result there, whose identity is at offset {id_offset}"),
    ))
}

/// What one instance adds to every exit's values: the pool scope of its
/// keys, and the size of the value it stores per key.
struct InstanceValues {
    scope: Location,
    size: Option<Location>,
}

fn instance_scope(instance: &AllocInstance, identity: &IdRule) -> Result<InstanceValues, String> {
    let Some(key) = &identity.key else {
        return Ok(InstanceValues {
            scope: Location::ZERO,
            size: None,
        });
    };
    let Some(returns) = &instance.returns else {
        return Err("DWARF has no type for its result".into());
    };
    let signature = instance_signature(instance, returns);
    // Every instantiation is its own pool type (`Slab<A>`, `Slab<B>`).
    let scope = match (&key.pool, keys::pool_type(&signature)) {
        (Some(_), Some(pool)) => PoolScope::Type(pool).location(),
        (None, _) => Location::ZERO,
        (Some(_), None) => return Err("DWARF names no `self` for this instance".into()),
    };
    let size = infer::element_size(&signature)?.map(|found| found.location);
    Ok(InstanceValues { scope, size })
}

fn caller_label(elf: &ElfInfo, instance: &AllocInstance) -> String {
    instance::caller_label(elf, &instance.ranges, instance.via.as_deref())
}

/// For `inspect`: each instance of an inlined allocate, where it is
/// entered and left, and the result's location at each exit.
pub fn describe(elf: &ElfInfo, pattern: &str) -> Result<Option<String>> {
    use std::fmt::Write as _;
    let instances = find(elf, pattern)?;
    let Some(returns) = instances.iter().find_map(|i| i.returns.clone()) else {
        return Ok(None);
    };
    let name = instances[0].function.clone();
    let identity = id_rule(LocSpec::Auto, &name, &returns, &instances);
    let size = identity
        .as_ref()
        .ok()
        .and_then(|id| size_rule(LocSpec::Auto, &returns, id.key.is_some()).ok());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  as --alloc: followed at each inlined instance (entry probe, and the result where \
         control leaves it); it returns {} ({} bytes){}",
        returns.name,
        returns.size,
        match &identity {
            Ok(IdRule { key: Some(key), .. }) => format!(", an {}", key.describe()),
            Ok(IdRule { offset, .. }) => format!(", buffer pointer at offset {offset}"),
            Err(why) => format!(": {why}"),
        }
    );
    for (number, instance) in instances.iter().enumerate() {
        let _ = writeln!(
            out,
            "  alloc instance #{number}: in {}, entered at {}",
            caller_label(elf, instance),
            hex_list(&instance.entries)
        );
        let scoped = identity
            .as_ref()
            .map_err(|_| "see above".to_string())
            .and_then(|id| instance_scope(instance, id));
        for exit in instance
            .exits
            .iter()
            .filter(|e| !e.after_call || e.result.is_ok())
        {
            let text = match (&identity, &scoped, &size) {
                (Ok(id), Ok(scoped), Some(size)) => {
                    match exit_values(&exit.result, id.offset, &scoped.size, size) {
                        Ok((values, _)) => format!(
                            "--alloc-id auto = {}, --size auto = {}{}",
                            values.id,
                            values.size,
                            match id.key {
                                Some(_) => format!(", scope = {}", scoped.scope),
                                None => String::new(),
                            }
                        ),
                        Err(why) => format!("not inferable: {why}"),
                    }
                }
                (_, Err(why), _) if identity.is_ok() => format!("not inferable: {why}"),
                _ => "not inferable (see above)".into(),
            };
            let _ = writeln!(out, "    leaving at {:#x}: {text}", exit.address);
        }
    }
    Ok(Some(out))
}

/// What an inlined `pattern` returns, when DWARF has its type.
pub fn result_type(elf: &ElfInfo, pattern: &str) -> Result<Option<TypeShape>> {
    Ok(find(elf, pattern)?.into_iter().find_map(|i| i.returns))
}

fn hex_list(addresses: &[u64]) -> String {
    addresses
        .iter()
        .map(|a| format!("{a:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::signature::{Field, TypeKind};

    fn field(name: &str, offset: u64, shape: TypeShape) -> Field {
        Field {
            name: name.into(),
            offset,
            shape,
        }
    }

    fn shape(name: &str, size: u64, kind: TypeKind) -> TypeShape {
        TypeShape {
            name: name.into(),
            size,
            kind,
        }
    }

    /// object_pool's guard around a Vec<u8>, as rustc 1.9x lays it out.
    fn guard() -> TypeShape {
        let usize_ = || shape("usize", 8, TypeKind::Scalar);
        let cap = shape("Cap", 8, TypeKind::Struct(vec![field("__0", 0, usize_())]));
        let ptr = shape("*const u8", 8, TypeKind::Pointer);
        let vec = shape(
            "Vec<u8, alloc::alloc::Global>",
            24,
            TypeKind::Struct(vec![
                field("cap", 0, cap),
                field("ptr", 8, ptr),
                field("len", 16, usize_()),
            ]),
        );
        let pool = shape("&object_pool::Pool<Vec<u8>>", 8, TypeKind::Pointer);
        shape(
            "Reusable<Vec<u8>>",
            32,
            TypeKind::Struct(vec![field("data", 0, vec), field("pool", 24, pool)]),
        )
    }

    #[test]
    fn the_guards_buffer_is_its_vecs_pointer_and_its_size_the_capacity() {
        assert_eq!(guard().buffer_pointer(), Some(8));
        assert_eq!(size_field(&guard()), Some(("cap".to_string(), 0)));
    }

    #[test]
    fn a_borrowed_pool_reference_is_not_a_buffer() {
        let pool = shape("&Pool", 8, TypeKind::Pointer);
        let only_borrowed = shape("Handle", 8, TypeKind::Struct(vec![field("pool", 0, pool)]));
        // Nothing owned: the first pointer is all there is.
        assert_eq!(only_borrowed.buffer_pointer(), Some(0));
    }

    fn signature(parameters: Vec<crate::resolve::signature::Parameter>) -> Signature {
        Signature {
            parameters,
            returns: None,
        }
    }

    fn guard_pointer(location: crate::resolve::signature::EntryLocation) -> Signature {
        signature(vec![crate::resolve::signature::Parameter {
            name: String::new(),
            shape: shape("*mut object_pool::Reusable<Vec<u8>>", 8, TypeKind::Pointer),
            location,
        }])
    }

    #[test]
    fn a_guards_release_reads_the_buffer_inside_the_guard() {
        use crate::plan::infer::guard_release_id;
        use crate::resolve::signature::EntryLocation;
        let alloc = Signature {
            parameters: Vec::new(),
            returns: Some(guard()),
        };
        let found = guard_release_id(&alloc, &guard_pointer(EntryLocation::Register(5)))
            .expect("a pointer to the guard")
            .unwrap();
        assert_eq!(found.location.to_string(), "*(arg0+8)");
        let spilled = guard_release_id(&alloc, &guard_pointer(EntryLocation::Memory(3)))
            .unwrap()
            .unwrap();
        assert_eq!(spilled.location.to_string(), "*(*rbx+8)");
        // A release that takes no pointer to the guard is not a guard's.
        let other = signature(vec![crate::resolve::signature::Parameter {
            name: "buf".into(),
            shape: shape("*mut u8", 8, TypeKind::Pointer),
            location: EntryLocation::Register(4),
        }]);
        assert!(guard_release_id(&alloc, &other).is_none());
    }

    #[test]
    fn the_guards_own_address_is_flagged_but_a_byte_pointer_is_not() {
        use crate::plan::infer::address_not_identity;
        use crate::resolve::signature::EntryLocation;
        let arg0 = Location::parse("arg0").unwrap();
        let why = address_not_identity(None, &guard_pointer(EntryLocation::Register(5)), &arg0)
            .expect("flagged");
        assert!(why.contains("stack slot"), "{why}");
        let pointer_to = |name: &str| {
            signature(vec![crate::resolve::signature::Parameter {
                name: "buf".into(),
                shape: shape(name, 8, TypeKind::Pointer),
                location: EntryLocation::Register(5),
            }])
        };
        // Rust's and C's pointers to bytes (C's named as C writes them).
        for bytes in ["*mut u8", "void *", "unsigned char *", "char *"] {
            assert_eq!(
                address_not_identity(None, &pointer_to(bytes), &arg0),
                None,
                "{bytes}"
            );
        }
        // A C pool handing back the pointer its allocate returned.
        let buf_get = Signature {
            parameters: Vec::new(),
            returns: Some(shape("buf *", 8, TypeKind::Pointer)),
        };
        let buf_put = pointer_to("buf *");
        assert_eq!(address_not_identity(Some(&buf_get), &buf_put, &arg0), None);
        // ... but not a pointer to something else, nor without allocate.
        assert!(address_not_identity(Some(&buf_get), &pointer_to("session *"), &arg0).is_some());
        assert!(address_not_identity(None, &buf_put, &arg0).is_some());
    }
}
