//! Planning a release that the compiler inlined into every caller.
//!
//! Such a release has no entry to probe, but DWARF records each inlined
//! instance (`DW_TAG_inlined_subroutine`): where its code starts and where
//! its parameters are there. Each instance gets its own uprobe at that
//! address and its own identity location, because every caller keeps the
//! buffer in a register of its own choosing. An inlined *allocate* cannot be
//! followed this way: its result has no DWARF location at the instance's
//! end, so allocate must stay out of line.

use std::collections::BTreeSet;

use anyhow::Result;

use super::instance;
use super::keys::{self, PoolScope};
use super::{flow, infer};
use super::{Inferrer, LocSpec, Location, PlannedFunction, ProbeRequest, ProbeSite};
use crate::error::UserError;
use crate::resolve::elf::ElfInfo;
use crate::resolve::pattern::RustPath;
use crate::resolve::signature::{inlined_calls, signature_at, InlinedEntry, InlinedInstance};
use crate::resolve::ResolvedFunction;

/// At most this many probes for the entries into one inlined release:
/// beyond it the user is better served probing its callers.
const MAX_RELEASE_SITES: usize = 1024;

/// How many per-entry explanations a report lists before summarising.
const EXPLAINED_ENTRIES: usize = 6;

/// Plans one probe per place control enters an inlined instance of the
/// release function, or `None` when DWARF knows no inlined instance.
/// Also returns the first site's location, for the plan's `release_id`
/// (checked and reported like any other); every site is probed with its
/// own.
pub(super) fn plan_release(
    elf: &ElfInfo,
    exe_display: &str,
    request: &ProbeRequest,
    inferrer: &mut Inferrer<'_>,
    scope: Option<&PoolScope>,
) -> Result<Option<(PlannedFunction, Location)>> {
    let Found {
        instances,
        with_computed_jumps,
    } = find(elf, &request.release)?;
    if instances.is_empty() {
        return Ok(None);
    }
    let name = instances[0].function.clone();
    let parameter = match request.release_id {
        LocSpec::Given(location) => Some(parameter_index(&location).ok_or_else(|| {
            UserError::new(format!(
                "'{}' has no out-of-line copy in {exe_display}: it is inlined at {} places, each \
                 keeping the buffer in its own registers, so one --release-id '{location}' cannot \
                 fit them all: use --release-id auto (needs DWARF with types, debug = 2), or argN \
                 for the Nth parameter wherever DWARF puts it",
                request.release,
                instances.len()
            ))
        })?),
        LocSpec::Auto => None,
    };
    let alloc = match parameter {
        Some(_) => crate::resolve::signature::Signature {
            parameters: Vec::new(),
            returns: None,
        },
        None => inferrer.alloc_signature()?.clone(),
    };
    let mut sites = Vec::new();
    let mut skipped = Vec::new();
    for instance in &instances {
        let caller = caller_label(elf, instance);
        if instance.entries.is_empty() {
            skipped.push(format!("{caller}: no function symbol holds its code"));
        }
        for entry in &instance.entries {
            let found = match parameter.map_or_else(
                || release_id_at(elf, &alloc, entry),
                |index| parameter_at(entry, index),
            ) {
                Ok(found) => found,
                Err(why) => {
                    skipped.push(format!("{caller} at {:#x}: {why}", entry.address));
                    continue;
                }
            };
            let release_scope = match scope_at(entry, scope) {
                Ok(release_scope) => release_scope,
                Err(why) => {
                    skipped.push(format!("{caller} at {:#x}: {why}", entry.address));
                    continue;
                }
            };
            let Some(mut site) = instance::site_at(elf, &name, entry.address, &caller, sites.len())
            else {
                skipped.push(format!(
                    "{caller}: {:#x} is outside the loaded code",
                    entry.address
                ));
                continue;
            };
            if sites.len() < EXPLAINED_ENTRIES {
                inferrer.explanations.push(format!(
                    "--release-id {}, inlined in {caller}, entered at {:#x} = {}: {}",
                    match request.release_id {
                        LocSpec::Auto => "auto".to_string(),
                        LocSpec::Given(given) => given.to_string(),
                    },
                    entry.address,
                    found.location,
                    found.reason
                ));
            }
            site.release_id = Some(found.location);
            site.release_scope = release_scope;
            sites.push(site);
        }
    }
    check_coverage(request, exe_display, &instances, &sites, &skipped)?;
    if sites.len() > EXPLAINED_ENTRIES {
        inferrer.explanations.push(format!(
            "--release-id auto: … and {} more entries into inlined instances, each with its own location",
            sites.len() - EXPLAINED_ENTRIES
        ));
    }
    if !skipped.is_empty() {
        inferrer.warnings.push(format!(
            "{} places where control enters inlined {name} are not probed, so buffers released \
             there look outstanding: {}",
            skipped.len(),
            skipped.join("; ")
        ));
    }
    if !with_computed_jumps.is_empty() {
        inferrer.warnings.push(format!(
            "{} use computed jumps, which may enter inlined {name} where no probe is: \
             buffers released that way look outstanding",
            with_computed_jumps
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let first = sites[0].release_id.expect("inlined sites carry a location");
    let function = ResolvedFunction {
        pattern: request.release.clone(),
        name,
        copies: sites.iter().map(|s| s.symbol.clone()).collect(),
    };
    Ok(Some((
        PlannedFunction {
            function,
            sites,
            inlined: true,
        },
        first,
    )))
}

/// The pool an integer key belongs to where control enters an instance:
/// its `self` when allocate's keys are scoped to pool instances, its
/// `self`'s type when to pool types; nothing for pointers.
fn scope_at(entry: &InlinedEntry, scope: Option<&PoolScope>) -> Result<Option<Location>, String> {
    match scope {
        None => Ok(None),
        Some(PoolScope::Instance(_)) => infer::release_scope(&entry.signature).map(Some),
        Some(PoolScope::Type(_)) => keys::pool_type(&entry.signature)
            .map(|pool| Some(PoolScope::Type(pool).location()))
            .ok_or_else(|| "DWARF names no `self` there, the pool a key belongs to".into()),
    }
}

/// `argN` alone names the Nth parameter of an inlined release: there are
/// no argument registers in an inlined call, only where DWARF puts each
/// parameter.
fn parameter_index(location: &Location) -> Option<usize> {
    let text = location.to_string();
    let index: usize = text.strip_prefix("arg")?.parse().ok()?;
    (index < 6).then_some(index)
}

/// The Nth parameter where control enters an instance (`--release-id
/// argN` on an inlined release), when DWARF puts it in a register.
fn parameter_at(entry: &InlinedEntry, index: usize) -> Result<infer::Inferred, String> {
    let parameter = entry
        .signature
        .parameters
        .get(index)
        .ok_or_else(|| format!("DWARF describes no parameter {index} there"))?;
    let crate::resolve::signature::EntryLocation::Register(register) = parameter.location else {
        return Err(format!(
            "DWARF does not put parameter `{}` in a register there",
            parameter.name
        ));
    };
    let text = crate::resolve::signature::register_text(register);
    Ok(infer::Inferred {
        location: Location::parse(&text).map_err(|e| e.to_string())?,
        reason: format!(
            "parameter `{}` ({}), in {text} there",
            parameter.name, parameter.shape.name
        ),
    })
}

/// The release's identity where control enters an instance: through a
/// guard's pointer when release takes one (a `Drop` impl), else as for an
/// out-of-line release. An instance entered at its holder's first
/// instruction (a `Drop` impl inlined into its `drop_in_place` glue) has
/// its parameters located only a few instructions later; there they are
/// the holder's own, which its signature places at its entry.
pub(crate) fn release_id_at(
    elf: &ElfInfo,
    alloc: &crate::resolve::signature::Signature,
    entry: &InlinedEntry,
) -> Result<infer::Inferred, String> {
    let holder = elf
        .function_containing(entry.address)
        .filter(|f| f.address == entry.address)
        .and_then(|f| signature_at(elf, f.address).ok().flatten());
    let signatures = [Some(&entry.signature), holder.as_ref()];
    let mut guard_error = None;
    for signature in signatures.into_iter().flatten() {
        match infer::guard_release_id(alloc, signature) {
            Some(Ok(found)) => return Ok(found),
            Some(Err(why)) => guard_error = guard_error.or(Some(why)),
            None => {}
        }
    }
    if let Some(why) = guard_error {
        return Err(why);
    }
    let found = infer::release_id(alloc, &entry.signature)?;
    match infer::address_not_identity(Some(alloc), &entry.signature, &found.location) {
        Some(why) => Err(why),
        None => Ok(found),
    }
}

/// The inlined instances of `pattern`, with where control enters each.
pub struct Found {
    pub instances: Vec<InlinedInstance>,
    /// Callers with computed jumps, through which entries may be missed.
    pub with_computed_jumps: BTreeSet<String>,
}

/// Finds the inlined instances of the function `pattern` names (full DWARF
/// needed) and where control enters each.
pub fn find(elf: &ElfInfo, pattern: &str) -> Result<Found> {
    let mut with_computed_jumps = BTreeSet::new();
    let instances = inlined_calls(elf, &RustPath::parse(pattern), |ranges| {
        let Some(caller) = instance::caller_of(elf, ranges) else {
            return Vec::new();
        };
        let code = elf
            .bytes_at(caller.address, caller.size as usize)
            .unwrap_or_default();
        let ranges = flow::with_detours(crate::arch::ISA, code, caller.address, ranges);
        let found = flow::entries(crate::arch::ISA, code, caller.address, &ranges);
        if found.computed_jumps {
            with_computed_jumps.insert(instance::function_name(caller));
        }
        found.addresses
    })?;
    Ok(Found {
        instances,
        with_computed_jumps,
    })
}

/// Where an instance sits, for people (see [`instance::caller_label`]).
pub fn caller_label(elf: &ElfInfo, instance: &InlinedInstance) -> String {
    instance::caller_label(elf, &instance.ranges, instance.via.as_deref())
}

/// Refuses plans that probe nothing, or more places than the kernel side
/// keeps locations for.
fn check_coverage(
    request: &ProbeRequest,
    exe_display: &str,
    instances: &[InlinedInstance],
    sites: &[ProbeSite],
    skipped: &[String],
) -> Result<()> {
    if sites.is_empty() {
        return Err(UserError::new(format!(
            "'{}' has no out-of-line copy in {exe_display}, and none of its {} inlined instances \
             can be probed ({}): un-inline it, or probe the function that calls it",
            request.release,
            instances.len(),
            skipped.join("; ")
        ))
        .into());
    }
    if sites.len() > MAX_RELEASE_SITES {
        return Err(UserError::new(format!(
            "'{}' is inlined at {} places, more than the {MAX_RELEASE_SITES} release probes the \
             observer keeps locations for: probe the functions that call it instead",
            request.release,
            sites.len()
        ))
        .into());
    }
    Ok(())
}
