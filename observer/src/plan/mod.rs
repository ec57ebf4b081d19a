//! Stage 2 — plan probes: which instruction of which file gets which eBPF
//! program, with which value locations.

pub mod loc;
pub mod site;
pub mod unwind;

use std::path::PathBuf;

use anyhow::Result;
pub use loc::Location;
use site::ProbedInstruction;

use crate::error::UserError;
use crate::resolve::elf::{ElfInfo, FunctionSymbol};
use crate::resolve::{resolve_function, ResolvedFunction};

/// What the user asked to observe.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub alloc: String,
    pub release: String,
    pub size: Location,
    pub alloc_id: Location,
    pub release_id: Location,
}

/// One probed copy of a function.
#[derive(Debug, Clone)]
pub struct ProbeSite {
    /// Attach cookie; for allocate copies it becomes `SiteKey::probe`.
    pub cookie: u32,
    pub symbol: FunctionSymbol,
    pub file_offset: u64,
    pub first_instruction: ProbedInstruction,
    /// What tells this copy apart from the others, when there are several:
    /// DWARF's name with type arguments (`take<app::Chat>`), or the address.
    pub label: Option<String>,
}

/// A function and the probes planned on it.
#[derive(Debug, Clone)]
pub struct PlannedFunction {
    pub function: ResolvedFunction,
    pub sites: Vec<ProbeSite>,
}

/// Everything the attach stage needs.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub pid: u32,
    /// The file the kernel places the probes in.
    pub binary: PathBuf,
    pub alloc: PlannedFunction,
    pub release: PlannedFunction,
    pub size: Location,
    pub alloc_id: Location,
    pub release_id: Location,
}

impl ProbePlan {
    /// Resolves both functions in `elf` and checks the locations make sense
    /// where they will be evaluated.
    pub fn new(
        pid: u32,
        binary: PathBuf,
        elf: &ElfInfo,
        exe_display: &str,
        request: &ProbeRequest,
    ) -> Result<Self> {
        check_locations(request)?;
        let alloc = plan_function(elf, exe_display, &request.alloc)?;
        let release = plan_function(elf, exe_display, &request.release)?;
        Ok(Self {
            pid,
            binary,
            alloc,
            release,
            size: request.size,
            alloc_id: request.alloc_id,
            release_id: request.release_id,
        })
    }

    /// The allocate copy a site's cookie refers to.
    pub fn alloc_site(&self, cookie: u32) -> Option<&ProbeSite> {
        self.alloc.sites.iter().find(|s| s.cookie == cookie)
    }
}

fn check_locations(request: &ProbeRequest) -> Result<()> {
    if request.release_id.reads_return() {
        return Err(UserError::new(format!(
            "--release-id '{}' reads ret, but release is probed at entry only: use argN, e.g. '*arg1' for a buffer passed by reference",
            request.release_id
        ))
        .into());
    }
    for (flag, location) in [
        ("--alloc-id", request.alloc_id),
        ("--release-id", request.release_id),
    ] {
        if location.is_constant() {
            return Err(UserError::new(format!(
                "{flag} '{location}' is a constant, so every buffer would have the same id: give a register or memory location"
            ))
            .into());
        }
    }
    Ok(())
}

fn plan_function(elf: &ElfInfo, exe_display: &str, pattern: &str) -> Result<PlannedFunction> {
    let function = resolve_function(elf, exe_display, pattern)
        .map_err(|err| UserError::new(err.to_string()))?;
    let dwarf_names = if function.copies.len() > 1 {
        let mangled: Vec<&str> = function.copies.iter().map(|c| c.mangled.as_str()).collect();
        crate::resolve::dwarf::names_by_linkage(elf, &mangled).unwrap_or_default()
    } else {
        Default::default()
    };
    let sites = function
        .copies
        .iter()
        .enumerate()
        .map(|(index, symbol)| {
            let file_offset = elf.file_offset(symbol.address).ok_or_else(|| {
                UserError::new(format!(
                    "{} at {:#x} is not inside a loadable segment of {exe_display}",
                    symbol.demangled, symbol.address
                ))
            })?;
            let bytes = elf.bytes_at(symbol.address, 16).unwrap_or_default();
            Ok(ProbeSite {
                cookie: index as u32,
                symbol: symbol.clone(),
                file_offset,
                first_instruction: site::decode_first(bytes, symbol.address),
                label: (function.copies.len() > 1).then(|| {
                    dwarf_names
                        .get(&symbol.mangled)
                        .cloned()
                        .unwrap_or_else(|| format!("copy at {:#x}", symbol.address))
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PlannedFunction { function, sites })
}
