//! Stage 2 — plan probes: which instruction of which file gets which eBPF
//! program, with which value locations.

pub mod infer;
pub mod loc;
pub mod site;
pub mod unwind;

use std::path::PathBuf;

use anyhow::Result;
pub use loc::Location;
use site::ProbedInstruction;

use crate::error::UserError;
use crate::resolve::elf::{ElfInfo, FunctionSymbol};
use crate::resolve::signature::{signature_at, Signature};
use crate::resolve::{resolve_function, ResolvedFunction};

/// What the user asked to observe.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub alloc: String,
    pub release: String,
    pub size: LocSpec,
    pub alloc_id: LocSpec,
    pub release_id: LocSpec,
}

/// A location as given on the command line: explicit, or `auto` (read off
/// the functions' DWARF signatures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocSpec {
    Given(Location),
    Auto,
}

impl LocSpec {
    /// `auto`, or the location language.
    pub fn parse(text: &str) -> Result<Self, loc::LocError> {
        if text.trim() == "auto" {
            return Ok(Self::Auto);
        }
        Location::parse(text).map(Self::Given)
    }
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
    /// What `auto` locations were inferred to, and why, for people.
    pub inferred: Vec<String>,
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
        let alloc = plan_function(elf, exe_display, &request.alloc)?;
        let release = plan_function(elf, exe_display, &request.release)?;
        let mut inferrer = Inferrer::new(elf, &alloc, &release);
        let size = inferrer.resolve("--size", request.size, infer::size)?;
        let alloc_id = inferrer.resolve("--alloc-id", request.alloc_id, infer::alloc_id)?;
        let release_id = inferrer.resolve_release(request.release_id)?;
        let inferred = inferrer.explanations;
        check_locations(size, alloc_id, release_id)?;
        Ok(Self {
            pid,
            binary,
            alloc,
            release,
            size,
            alloc_id,
            release_id,
            inferred,
        })
    }

    /// The allocate copy a site's cookie refers to.
    pub fn alloc_site(&self, cookie: u32) -> Option<&ProbeSite> {
        self.alloc.sites.iter().find(|s| s.cookie == cookie)
    }
}

/// Fills in `auto` locations from the first copy of each function.
struct Inferrer<'a> {
    elf: &'a ElfInfo,
    alloc: &'a PlannedFunction,
    release: &'a PlannedFunction,
    signatures: Option<(Signature, Signature)>,
    explanations: Vec<String>,
}

impl<'a> Inferrer<'a> {
    fn new(elf: &'a ElfInfo, alloc: &'a PlannedFunction, release: &'a PlannedFunction) -> Self {
        Self {
            elf,
            alloc,
            release,
            signatures: None,
            explanations: Vec::new(),
        }
    }

    fn signatures(&mut self) -> Result<&(Signature, Signature)> {
        if self.signatures.is_none() {
            let read = |planned: &PlannedFunction| -> Result<Signature> {
                let address = planned.sites[0].symbol.address;
                signature_at(self.elf, address)?.ok_or_else(|| {
                    UserError::new(format!(
                        "`auto` locations need DWARF with types for {}, and {}: build with debug = 2 \
                         (or give its debug file with --debug-file), or write the locations out",
                        planned.function.name,
                        if self.elf.has_debug_info {
                            "this DWARF has none (line tables or `limited` debug info only)"
                        } else {
                            "the binary has no DWARF"
                        }
                    ))
                    .into()
                })
            };
            self.signatures = Some((read(self.alloc)?, read(self.release)?));
        }
        Ok(self.signatures.as_ref().expect("just set"))
    }

    fn resolve(
        &mut self,
        flag: &str,
        spec: LocSpec,
        infer: fn(&Signature) -> Result<infer::Inferred, String>,
    ) -> Result<Location> {
        match spec {
            LocSpec::Given(location) => Ok(location),
            LocSpec::Auto => {
                let found = infer(&self.signatures()?.0).map_err(|why| {
                    UserError::new(format!("{flag} auto: {why}; write it explicitly"))
                })?;
                self.explain(flag, &found);
                Ok(found.location)
            }
        }
    }

    fn resolve_release(&mut self, spec: LocSpec) -> Result<Location> {
        match spec {
            LocSpec::Given(location) => Ok(location),
            LocSpec::Auto => {
                let (alloc, release) = self.signatures()?;
                let found = infer::release_id(alloc, release).map_err(|why| {
                    UserError::new(format!("--release-id auto: {why}; write it explicitly"))
                })?;
                self.explain("--release-id", &found);
                Ok(found.location)
            }
        }
    }

    fn explain(&mut self, flag: &str, found: &infer::Inferred) {
        self.explanations.push(format!(
            "{flag} auto = {}: {}",
            found.location, found.reason
        ));
    }
}

fn check_locations(_size: Location, alloc_id: Location, release_id: Location) -> Result<()> {
    if release_id.reads_return() {
        return Err(UserError::new(format!(
            "--release-id '{release_id}' reads ret, but release is probed at entry only: use argN, e.g. '*arg1' for a buffer passed by reference"
        ))
        .into());
    }
    for (flag, location) in [("--alloc-id", alloc_id), ("--release-id", release_id)] {
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
