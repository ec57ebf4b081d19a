//! Functions after the first of each role: repeated `--alloc`/`--release`,
//! or a preset's calloc, realloc and the like. Each has its own, explicit
//! locations (`auto` reads DWARF off the first functions only), is probed
//! at its out-of-line copies, and has its returns observed by uretprobes
//! like the first allocate function's.

use anyhow::Result;
use observer_ebpf::ReturnTest;

use super::returns::{self, RepairAbility, ReturnChoice, ReturnInputs, ReturnMethod};
use super::{plan_copies, AllocValues, Location, PlannedFunction};
use crate::error::UserError;
use crate::resolve::elf::ElfInfo;
use crate::resolve::unwinder::Unwinder;
use crate::resolve::{resolve_function, ResolveError};

/// An allocate function after the first, as asked for.
#[derive(Debug, Clone)]
pub struct FunctionRequest {
    pub function: String,
    pub size: Location,
    /// The literal 1, or calloc's element count.
    pub count: Location,
    pub id: Location,
    pub test: ReturnTest,
    /// A realloc: where its entry has the old buffer's id.
    pub realloc_old: Option<Location>,
    /// A preset's function that some builds lack (`__rust_alloc_zeroed`
    /// when nothing allocates zeroed memory): left out with a note.
    pub optional: bool,
}

/// A release function after the first, as asked for.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub function: String,
    pub id: Location,
    pub optional: bool,
}

/// An allocate function after the first, planned.
#[derive(Debug, Clone)]
pub struct AllocFunction {
    pub planned: PlannedFunction,
    pub values: AllocValues,
}

/// A release function after the first, planned.
#[derive(Debug, Clone)]
pub struct ReleaseFunction {
    pub planned: PlannedFunction,
    /// Where the buffer's id is at its entry (ids are unscoped).
    pub id: Location,
}

/// What planning them needs from the first functions' plan.
pub struct Inputs<'a> {
    pub elf: &'a ElfInfo,
    pub exe_display: &'a str,
    pub unwinder: &'a Result<Unwinder, String>,
    pub repair: &'a RepairAbility,
    pub accept_abort: bool,
    pub outermost: bool,
    /// See [`super::ProbeRequest::no_unwind`].
    pub no_unwind: Option<&'a str>,
    pub first_alloc_cookie: u32,
    pub first_release_cookie: u32,
    /// Addresses the first functions are probed at, with their name.
    pub probed: Vec<(u64, String)>,
}

/// The functions planned, how each allocate's returns are observed, and
/// notes for the report (optional functions left out).
#[derive(Debug, Default)]
pub struct Planned {
    pub allocs: Vec<AllocFunction>,
    pub releases: Vec<ReleaseFunction>,
    pub returns: Vec<(String, ReturnMethod)>,
    pub notes: Vec<String>,
}

/// Plans every function after the first; cookies continue the first
/// functions' numbering.
pub fn plan(
    inputs: &Inputs<'_>,
    allocs: &[FunctionRequest],
    releases: &[ReleaseRequest],
) -> Result<Planned> {
    let mut planned = Planned::default();
    let mut probed = inputs.probed.clone();
    let mut cookie = inputs.first_alloc_cookie;
    for request in allocs {
        check_alloc(request)?;
        let Some(function) = unprobed(
            inputs,
            &request.function,
            request.optional,
            &mut probed,
            &mut planned,
        )?
        else {
            continue;
        };
        let function = numbered(function, &mut cookie);
        let method = returns::choose(&ReturnInputs {
            elf: inputs.elf,
            alloc: &function,
            choice: ReturnChoice::Auto,
            accept_abort: inputs.accept_abort,
            unwinder: inputs.unwinder,
            repair: inputs.repair,
            no_unwind: inputs.no_unwind,
        })?;
        planned
            .returns
            .push((function.function.name.clone(), method));
        planned
            .notes
            .push(describe(&function.function.name, request));
        planned.allocs.push(AllocFunction {
            planned: function,
            values: AllocValues {
                id: request.id,
                size: request.size,
                count: request.count,
                scope: Location::ZERO,
                test: request.test,
                realloc_old: request.realloc_old,
                outermost: inputs.outermost,
            },
        });
    }
    let mut cookie = inputs.first_release_cookie;
    for request in releases {
        check_release(request)?;
        let Some(function) = unprobed(
            inputs,
            &request.function,
            request.optional,
            &mut probed,
            &mut planned,
        )?
        else {
            continue;
        };
        planned.releases.push(ReleaseFunction {
            planned: numbered(function, &mut cookie),
            id: request.id,
        });
    }
    Ok(planned)
}

/// What is read where, for people: `calloc: size = arg1 × arg0, id = ret,
/// releases the buffer at arg0 (realloc)`.
fn describe(name: &str, request: &FunctionRequest) -> String {
    let count = if request.count == Location::ONE {
        String::new()
    } else {
        format!(" × {}", request.count)
    };
    let realloc = request
        .realloc_old
        .map(|old| format!(", a realloc: releases the buffer at {old} first"))
        .unwrap_or_default();
    format!(
        "{name}: size = {}{count}, id = {}{realloc}",
        request.size, request.id
    )
}

/// Allocate's locations are evaluated at its return, from the registers
/// saved at entry: no register of the moment, and an id that varies.
fn check_alloc(request: &FunctionRequest) -> Result<()> {
    let old = request.realloc_old.iter().map(|l| ("old id", *l));
    for (what, location) in [
        ("size", request.size),
        ("count", request.count),
        ("id", request.id),
    ]
    .into_iter()
    .chain(old)
    {
        if location.reads_register() {
            return Err(mistake(
                &request.function,
                what,
                location,
                "reads a register directly: use argN (the registers saved at entry) or ret",
            ));
        }
    }
    if request.id.is_constant() {
        return Err(mistake(
            &request.function,
            "id",
            request.id,
            "is a constant, so every buffer would have the same id",
        ));
    }
    if request.realloc_old.is_some_and(|old| old.reads_return()) {
        return Err(mistake(
            &request.function,
            "old id",
            request.id,
            "reads ret: the old buffer is an argument (argN)",
        ));
    }
    Ok(())
}

/// Release is probed at entry only, and its id must vary.
fn check_release(request: &ReleaseRequest) -> Result<()> {
    if request.id.reads_return() {
        return Err(mistake(
            &request.function,
            "id",
            request.id,
            "reads ret, but release is probed at entry only: use argN",
        ));
    }
    if request.id.is_constant() {
        return Err(mistake(
            &request.function,
            "id",
            request.id,
            "is a constant, so every buffer would have the same id",
        ));
    }
    Ok(())
}

fn mistake(function: &str, what: &str, location: Location, why: &str) -> anyhow::Error {
    UserError::new(format!(
        "{function}: its {what} location '{location}' {why}"
    ))
    .into()
}

/// The function's out-of-line copies, or `None` for an optional one that
/// is not there (noted).
/// `pattern` planned, unless it is missing and optional, or an alias of a
/// function already probed (glibc's aligned_alloc is memalign: one probe,
/// or every call would be recorded twice), each said in a note; its
/// addresses are then `probed`.
fn unprobed(
    inputs: &Inputs<'_>,
    pattern: &str,
    optional: bool,
    probed: &mut Vec<(u64, String)>,
    planned: &mut Planned,
) -> Result<Option<PlannedFunction>> {
    let Some(function) = resolve(inputs, pattern, optional, planned)? else {
        return Ok(None);
    };
    if let Some(same) = already_probed(&function, probed) {
        planned
            .notes
            .push(format!("{pattern} is {same} (same address): probed once"));
        return Ok(None);
    }
    probed.extend(addresses(&function));
    Ok(Some(function))
}

fn resolve(
    inputs: &Inputs<'_>,
    pattern: &str,
    optional: bool,
    planned: &mut Planned,
) -> Result<Option<PlannedFunction>> {
    match resolve_function(inputs.elf, inputs.exe_display, pattern) {
        Ok(function) => Ok(Some(plan_copies(inputs.elf, inputs.exe_display, function)?)),
        Err(ResolveError::NotFound { .. }) if optional => {
            planned.notes.push(format!(
                "{pattern} is not in {}: not probed (nothing calls it)",
                inputs.exe_display
            ));
            Ok(None)
        }
        Err(err @ ResolveError::NotFound { .. }) => Err(UserError::new(format!(
            "{err} (functions after the first --alloc/--release are probed at their \
             out-of-line copies only)"
        ))
        .into()),
        Err(err) => Err(UserError::new(err.to_string()).into()),
    }
}

/// The probe addresses of `function`'s sites, with its name.
pub fn addresses(function: &PlannedFunction) -> Vec<(u64, String)> {
    function
        .sites
        .iter()
        .map(|site| (site.probe_address, function.function.name.clone()))
        .collect()
}

/// The function already probed at one of `function`'s addresses (an
/// alias), if any.
fn already_probed(function: &PlannedFunction, probed: &[(u64, String)]) -> Option<String> {
    function.sites.iter().find_map(|site| {
        probed
            .iter()
            .find(|(address, _)| *address == site.probe_address)
            .map(|(_, name)| name.clone())
    })
}

/// `function` with its sites' cookies renumbered from `next` on.
fn numbered(mut function: PlannedFunction, next: &mut u32) -> PlannedFunction {
    for site in &mut function.sites {
        site.cookie = *next;
        *next += 1;
    }
    function
}

/// One way to observe every allocate function's returns: several
/// functions share the uretprobe program, so each must be observed by
/// uretprobes; the session needs the repair when any of them does.
pub fn merge_returns(
    first: &str,
    method: ReturnMethod,
    more: Vec<(String, ReturnMethod)>,
) -> Result<ReturnMethod> {
    let mut merged = method;
    for (name, method) in std::iter::once((first.to_string(), merged.clone())).chain(more) {
        if !method.uses_uretprobes() {
            return Err(UserError::new(format!(
                "the returns of {name} can only be observed by {} ({method}), and a session \
                 with several allocate functions observes them all with uretprobes: observe \
                 {name} in a session of its own",
                method.name()
            ))
            .into());
        }
        if rank(&method) > rank(&merged) {
            merged = method;
        }
    }
    Ok(merged)
}

/// How much a uretprobe method needs: the strongest one serves all.
fn rank(method: &ReturnMethod) -> u8 {
    match method {
        ReturnMethod::Uretprobe { .. } => 0,
        ReturnMethod::Repaired { .. } => 1,
        ReturnMethod::Unprotected { .. } => 2,
        ReturnMethod::CallSites { .. } | ReturnMethod::InlinedExits { .. } => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uretprobe(proof: &str) -> ReturnMethod {
        ReturnMethod::Uretprobe {
            proof: proof.into(),
        }
    }

    #[test]
    fn uretprobes_merge_into_the_strongest() {
        let unprotected = ReturnMethod::Unprotected { hazard: "h".into() };
        let merged = merge_returns(
            "malloc",
            uretprobe("a"),
            vec![
                ("calloc".into(), unprotected),
                ("realloc".into(), uretprobe("b")),
            ],
        )
        .unwrap();
        assert_eq!(merged.name(), "uretprobe-unprotected");
        let merged = merge_returns("malloc", uretprobe("a"), vec![]).unwrap();
        assert_eq!(merged.name(), "uretprobe");
    }

    #[test]
    fn call_sites_cannot_be_merged() {
        let sites = ReturnMethod::InlinedExits { sites: vec![] };
        let err = merge_returns("malloc", uretprobe("a"), vec![("get".into(), sites)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("observe get in a session of its own"), "{err}");
    }
}
