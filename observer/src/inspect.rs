//! `observer inspect BINARY FUNCTION…`: the resolve and plan stages run on
//! a file, without a process or probes, rendered for a person deciding how
//! to attach.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::error::{one_line, UserError};
use crate::plan::inlined;
use crate::plan::returns::{self, ReturnChoice, ReturnInputs};
use crate::plan::site::{decode_first, decode_several};
use crate::plan::unwinding::Unwinding;
use crate::plan::{infer, plan_copies};
use crate::resolve::debuginfo::DebugOptions;
use crate::resolve::elf::{ElfInfo, FunctionSymbol};
use crate::resolve::pattern::RustPath;
use crate::resolve::safe_file::TargetRoot;
use crate::resolve::signature::{register_text, signature_at, EntryLocation, Signature, TypeShape};
use crate::resolve::{dwarf, resolve_function, unwinder, ResolveError, ResolvedFunction};

/// Renders what the observer knows about each of `patterns` in `binary`.
pub fn inspect(binary: &Path, patterns: &[String], debug: &DebugOptions) -> Result<String> {
    let root = TargetRoot::host().context("cannot open /")?;
    let elf = ElfInfo::read_with_debug(binary, binary, &root, debug)?;
    let display = binary.display().to_string();
    let mut out = String::new();
    let dwarf = match (&elf.debug_file, elf.has_debug_info) {
        (Some(file), _) => format!("DWARF from {}", file.display()),
        (None, true) => "DWARF in the file".into(),
        (None, false) => "no DWARF".into(),
    };
    let _ = writeln!(
        out,
        "{display}: build-id {}, {dwarf}, {} function symbols{}",
        elf.build_id.as_deref().unwrap_or("(none)"),
        elf.functions.len(),
        if elf.has_symtab { "" } else { " (stripped)" }
    );
    for rejected in &elf.debug_rejected {
        let _ = writeln!(out, "  debug file not used: {rejected}");
    }
    // The first function named that returns something: the allocate a
    // later release's `auto` is inferred against (a guard's buffer).
    let mut alloc: Option<Signature> = None;
    for pattern in patterns {
        out.push('\n');
        let function = match resolve_function(&elf, &display, pattern) {
            Ok(function) => function,
            Err(err @ ResolveError::NotFound { .. }) => {
                let found = inlined::find(&elf, pattern)?;
                if found.instances.is_empty() {
                    return Err(UserError::new(err.to_string()).into());
                }
                describe_inlined(&mut out, &elf, &found, alloc.as_ref());
                if let Some(text) = crate::plan::inlined_alloc::describe(&elf, pattern)? {
                    out.push_str(&text);
                }
                if alloc.is_none() {
                    alloc =
                        crate::plan::inlined_alloc::result_type(&elf, pattern)?.map(|returns| {
                            Signature {
                                parameters: Vec::new(),
                                returns: Some(returns),
                            }
                        });
                }
                continue;
            }
            Err(err) => return Err(UserError::new(err.to_string()).into()),
        };
        let _ = writeln!(
            out,
            "{} — {} cop{}",
            function.name,
            function.copies.len(),
            if function.copies.len() == 1 {
                "y"
            } else {
                "ies"
            }
        );
        let mangled: Vec<&str> = function.copies.iter().map(|c| c.mangled.as_str()).collect();
        let names = dwarf::names_by_linkage(&elf, &mangled).unwrap_or_default();
        for (index, copy) in function.copies.iter().enumerate() {
            describe_copy(
                &mut out,
                &elf,
                index,
                copy,
                names.get(&copy.mangled),
                alloc.as_ref(),
            );
        }
        if alloc.is_none() {
            alloc = function
                .copies
                .first()
                .and_then(|copy| signature_at(&elf, copy.address).ok().flatten())
                .filter(|signature| signature.returns.is_some());
        }
        describe_probing(&mut out, &elf, binary, function.clone());
        match dwarf::find_inlined(&elf, &RustPath::parse(pattern)) {
            Ok(Some(inlined)) => {
                let _ = writeln!(out, "  also inlined: {inlined}");
            }
            Ok(None) => {}
            Err(err) => {
                let _ = writeln!(out, "  (DWARF unreadable: {err:#})");
            }
        }
    }
    Ok(out)
}

/// Where the probes would go, whether a panic can unwind through the
/// function, and how its returns would be observed as `--alloc` on this
/// machine (what `--returns auto` would choose, or why it would refuse).
fn describe_probing(out: &mut String, elf: &ElfInfo, binary: &Path, function: ResolvedFunction) {
    let display = binary.display().to_string();
    let planned = match plan_copies(elf, &display, function) {
        Ok(planned) => planned,
        Err(err) => {
            let _ = writeln!(out, "  probes: none possible: {}", one_line(&err));
            return;
        }
    };
    let at_calls = planned.sites.iter().filter(|s| s.call.is_some()).count();
    if at_calls > 0 {
        let _ = writeln!(
            out,
            "  probes: the kernel refuses its first instruction, so it is probed at its {at_calls} \
             direct call sites instead (the call instruction, with the arguments in place)"
        );
    }
    let _ = match returns::unwinding_through(elf, &planned) {
        Unwinding::Possible(how) => writeln!(out, "  panic unwinding: can pass through it ({how})"),
        Unwinding::Impossible(why) => {
            writeln!(out, "  panic unwinding: cannot pass through it ({why})")
        }
    };
    let unwinder = unwinder::of_program(elf, binary);
    let repair = crate::attach::repair::ability(None);
    let inputs = ReturnInputs {
        elf,
        alloc: &planned,
        choice: ReturnChoice::Auto,
        accept_abort: false,
        unwinder: &unwinder,
        repair: &repair,
        no_unwind: None,
    };
    let _ = match returns::choose(&inputs) {
        Ok(method) => writeln!(out, "  as --alloc, returns observed by: {method}"),
        Err(err) => writeln!(
            out,
            "  as --alloc, returns cannot be observed safely here: {}",
            one_line(&err)
        ),
    };
}

fn describe_copy(
    out: &mut String,
    elf: &ElfInfo,
    index: usize,
    copy: &FunctionSymbol,
    name: Option<&String>,
    alloc: Option<&Signature>,
) {
    let offset = elf.file_offset(copy.address).unwrap_or(0);
    let _ = writeln!(
        out,
        "  copy #{index}: {:#x} (file offset {offset:#x}, {} bytes){}",
        copy.address,
        copy.size,
        name.map(|n| format!("  DWARF name {n}"))
            .unwrap_or_default()
    );
    match signature_at(elf, copy.address) {
        Ok(Some(signature)) => describe_signature(out, &signature, Role::Either(alloc)),
        Ok(None) => {
            let _ = writeln!(
                out,
                "    signature: not in DWARF (needs debug = 2 or a debug file with types)"
            );
        }
        Err(err) => {
            let _ = writeln!(out, "    signature: DWARF unreadable ({err:#})");
        }
    }
    let bytes = elf.bytes_at(copy.address, 64).unwrap_or_default();
    let first = decode_first(bytes, copy.address);
    let _ = writeln!(out, "    probe point: {first}");
    for (address, text) in decode_several(bytes, copy.address, 6) {
        let _ = writeln!(out, "      {address:#x}  {text}");
    }
}

/// A function with no out-of-line copy: its inlined instances, where each
/// is entered, and what a release probe there would read.
fn describe_inlined(
    out: &mut String,
    elf: &ElfInfo,
    found: &inlined::Found,
    alloc: Option<&Signature>,
) {
    let instances = &found.instances;
    let _ = writeln!(
        out,
        "{} — no out-of-line copy; inlined at {} place{}. As --release it is probed where \
         control enters each (with --release-id auto); as --alloc it is followed at each \
         instance, its result read where control leaves it (with full DWARF, debug = 2)",
        instances[0].function,
        instances.len(),
        if instances.len() == 1 { "" } else { "s" }
    );
    for (index, instance) in instances.iter().enumerate() {
        let entries: Vec<String> = instance
            .entries
            .iter()
            .map(|e| format!("{:#x}", e.address))
            .collect();
        let _ = writeln!(
            out,
            "  instance #{index}: in {}, {} address range{}, entered at {}",
            inlined::caller_label(elf, instance),
            instance.ranges.len(),
            if instance.ranges.len() == 1 { "" } else { "s" },
            if entries.is_empty() {
                "(unknown: no function symbol holds its code)".to_string()
            } else {
                entries.join(", ")
            }
        );
        for entry in &instance.entries {
            let _ = writeln!(out, "    at {:#x}:", entry.address);
            let release = inlined::release_id_at(elf, alloc.unwrap_or(&unknown_alloc()), entry);
            describe_signature(out, &entry.signature, Role::Release(release));
            let bytes = elf.bytes_at(entry.address, 16).unwrap_or_default();
            let _ = writeln!(
                out,
                "    probe point: {}",
                decode_first(bytes, entry.address)
            );
        }
    }
    for caller in &found.with_computed_jumps {
        let _ = writeln!(
            out,
            "  warning: {caller} has computed jumps; entries through them are not found"
        );
    }
}

/// Which inferences a signature is shown with.
enum Role<'a> {
    /// An out-of-line copy: as allocate, and as release (against the
    /// allocate named before it, if any, whose result it may point to).
    Either(Option<&'a Signature>),
    /// An inlined instance's entry: as release, inferred already.
    Release(Result<infer::Inferred, String>),
}

/// Stands for an allocate not named: what it returns is unknown.
fn unknown_alloc() -> Signature {
    Signature {
        parameters: Vec::new(),
        returns: Some(TypeShape {
            name: String::new(),
            size: 0,
            kind: crate::resolve::signature::TypeKind::Other,
        }),
    }
}

/// A signature and what `auto` infers from it.
fn describe_signature(out: &mut String, signature: &Signature, role: Role<'_>) {
    let parameters: Vec<String> = signature
        .parameters
        .iter()
        .map(|p| {
            let place = match p.location {
                EntryLocation::Register(n) => register_text(n),
                EntryLocation::Memory(n) => format!("*{}, by reference", register_text(n)),
                EntryLocation::Pair(a, b) => format!("{} + {}", register_text(a), register_text(b)),
                EntryLocation::Halves(a, b) => {
                    format!("{}:{} (4 bytes each)", register_text(a), register_text(b))
                }
                EntryLocation::Unknown => "location unknown".into(),
            };
            format!("{}: {} [{place}]", p.name, shape(&p.shape))
        })
        .collect();
    let returns = signature
        .returns
        .as_ref()
        .map(shape)
        .unwrap_or_else(|| "()".into());
    let _ = writeln!(
        out,
        "    signature: fn({}) -> {returns}",
        parameters.join(", ")
    );
    let as_allocate = [
        ("--alloc-id", infer::alloc_id(signature)),
        ("--size", infer::size(signature)),
    ];
    let alloc = match role {
        Role::Either(alloc) => alloc,
        Role::Release(_) => None,
    };
    let shown: Vec<_> = match role {
        Role::Either(alloc) => {
            let release = alloc
                .and_then(|alloc| infer::guard_release_id(alloc, signature))
                .unwrap_or_else(|| infer::release_id(&unknown_alloc(), signature));
            as_allocate
                .into_iter()
                .chain([("--release-id", release)])
                .collect()
        }
        Role::Release(release) => vec![("--release-id", release)],
    };
    for (flag, found) in shown {
        let doubt = found
            .as_ref()
            .ok()
            .filter(|_| flag == "--release-id")
            .and_then(|found| infer::address_not_identity(alloc, signature, &found.location));
        let _ = match (found, doubt) {
            (Ok(found), Some(why)) => writeln!(
                out,
                "    as {flag} auto: {} — CANNOT BE AN IDENTITY: {why}",
                found.location
            ),
            (Ok(found), None) => writeln!(
                out,
                "    as {flag} auto: {} ({})",
                found.location, found.reason
            ),
            (Err(why), _) => writeln!(out, "    as {flag} auto: not inferable: {why}"),
        };
    }
    // Integer keys are scoped to the pool instance, read here at entry.
    if let Ok(pool) = infer::release_scope(signature) {
        let _ = writeln!(
            out,
            "    pool (`self`) at entry: {pool}, what an integer key handed out or taken back here is scoped to"
        );
    }
}

fn shape(shape: &TypeShape) -> String {
    format!(
        "{} ({} bytes)",
        if shape.name.is_empty() {
            "?"
        } else {
            &shape.name
        },
        shape.size
    )
}
