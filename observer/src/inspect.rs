//! `observer inspect BINARY FUNCTION…`: the resolve and plan stages run on
//! a file, without a process or probes, rendered for a person deciding how
//! to attach.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::error::UserError;
use crate::plan::infer;
use crate::plan::site::{decode_first, decode_several};
use crate::resolve::debuginfo::DebugOptions;
use crate::resolve::elf::{ElfInfo, FunctionSymbol};
use crate::resolve::pattern::RustPath;
use crate::resolve::signature::{signature_at, EntryLocation, Signature, TypeShape};
use crate::resolve::{dwarf, resolve_function};

/// Renders what the observer knows about each of `patterns` in `binary`.
pub fn inspect(binary: &Path, patterns: &[String], debug: &DebugOptions) -> Result<String> {
    let elf = ElfInfo::read_with_debug(binary, binary, debug)?;
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
    for pattern in patterns {
        out.push('\n');
        let function = resolve_function(&elf, &display, pattern)
            .map_err(|err| UserError::new(err.to_string()))?;
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
            describe_copy(&mut out, &elf, index, copy, names.get(&copy.mangled));
        }
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

fn describe_copy(
    out: &mut String,
    elf: &ElfInfo,
    index: usize,
    copy: &FunctionSymbol,
    name: Option<&String>,
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
        Ok(Some(signature)) => describe_signature(out, &signature),
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

fn describe_signature(out: &mut String, signature: &Signature) {
    let parameters: Vec<String> = signature
        .parameters
        .iter()
        .map(|p| {
            let place = match p.location {
                EntryLocation::Register(n) => format!("arg{n}"),
                EntryLocation::Memory(n) => format!("*arg{n}, by reference"),
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
    let unknown = Signature {
        parameters: Vec::new(),
        returns: Some(TypeShape {
            name: String::new(),
            size: 0,
            kind: crate::resolve::signature::TypeKind::Other,
        }),
    };
    let as_release = ("--release-id", infer::release_id(&unknown, signature));
    for (flag, found) in as_allocate.into_iter().chain([as_release]) {
        let _ = match found {
            Ok(found) => writeln!(
                out,
                "    as {flag} auto: {} ({})",
                found.location, found.reason
            ),
            Err(why) => writeln!(out, "    as {flag} auto: not inferable: {why}"),
        };
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
