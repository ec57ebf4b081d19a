//! Stage 2 — plan probes: which instruction of which file gets which eBPF
//! program, with which value locations.

pub mod flow;
pub mod infer;
pub mod inlined;
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
use crate::resolve::{resolve_function, ResolveError, ResolvedFunction};

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
    /// Where this site finds the buffer's identity, when it differs from
    /// the plan's `release_id`: an inlined instance of release, whose
    /// values sit in whatever registers its caller chose.
    pub release_id: Option<Location>,
}

/// A function and the probes planned on it.
#[derive(Debug, Clone)]
pub struct PlannedFunction {
    pub function: ResolvedFunction,
    pub sites: Vec<ProbeSite>,
    /// True when the sites are inlined instances, not function entries.
    pub inlined: bool,
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
    /// Release's identity location; for an inlined release, its first
    /// site's (each site carries its own in [`ProbeSite::release_id`]).
    pub release_id: Location,
    /// What `auto` locations were inferred to, and why, for people.
    pub inferred: Vec<String>,
    /// What planning could not cover and every report must say (inlined
    /// release instances left unprobed).
    pub warnings: Vec<String>,
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
        let mut inferrer = Inferrer::new(elf, &alloc);
        let size = inferrer.resolve("--size", request.size, infer::size)?;
        let alloc_id = inferrer.resolve("--alloc-id", request.alloc_id, infer::alloc_id)?;
        let (release, release_id) = match resolve_function(elf, exe_display, &request.release) {
            Ok(function) => {
                let release = plan_copies(elf, exe_display, function)?;
                let release_id = inferrer.resolve_release(&release, request.release_id)?;
                (release, release_id)
            }
            Err(err @ ResolveError::NotFound { .. }) => {
                inlined::plan_release(elf, exe_display, request, &mut inferrer)?
                    .ok_or_else(|| UserError::new(err.to_string()))?
            }
            Err(err) => return Err(UserError::new(err.to_string()).into()),
        };
        let Inferrer {
            explanations: inferred,
            warnings,
            ..
        } = inferrer;
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
            warnings,
        })
    }

    /// The release identity location as people read it: one location, or
    /// one per inlined instance.
    pub fn release_id_text(&self) -> String {
        if self.release.inlined {
            format!("per inlined instance ({} sites)", self.release.sites.len())
        } else {
            self.release_id.to_string()
        }
    }

    /// The allocate copy a site's cookie refers to.
    pub fn alloc_site(&self, cookie: u32) -> Option<&ProbeSite> {
        self.alloc.sites.iter().find(|s| s.cookie == cookie)
    }
}

/// Fills in `auto` locations from the first copy of each function.
pub(crate) struct Inferrer<'a> {
    elf: &'a ElfInfo,
    alloc: &'a PlannedFunction,
    alloc_signature: Option<Signature>,
    explanations: Vec<String>,
    warnings: Vec<String>,
}

impl<'a> Inferrer<'a> {
    fn new(elf: &'a ElfInfo, alloc: &'a PlannedFunction) -> Self {
        Self {
            elf,
            alloc,
            alloc_signature: None,
            explanations: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn alloc_signature(&mut self) -> Result<&Signature> {
        if self.alloc_signature.is_none() {
            self.alloc_signature = Some(self.read_signature(self.alloc)?);
        }
        Ok(self.alloc_signature.as_ref().expect("just set"))
    }

    fn read_signature(&self, planned: &PlannedFunction) -> Result<Signature> {
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
                let found = infer(self.alloc_signature()?).map_err(|why| {
                    UserError::new(format!("{flag} auto: {why}; write it explicitly"))
                })?;
                self.explain(flag, &found);
                Ok(found.location)
            }
        }
    }

    fn resolve_release(&mut self, release: &PlannedFunction, spec: LocSpec) -> Result<Location> {
        match spec {
            LocSpec::Given(location) => Ok(location),
            LocSpec::Auto => {
                let release = self.read_signature(release)?;
                let found =
                    infer::release_id(self.alloc_signature()?, &release).map_err(|why| {
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

fn check_locations(size: Location, alloc_id: Location, release_id: Location) -> Result<()> {
    for (flag, location) in [("--size", size), ("--alloc-id", alloc_id)] {
        if location.reads_register() {
            return Err(UserError::new(format!(
                "{flag} '{location}' reads a register directly, which only release probes can: \
                 use argN (the registers saved at allocate's entry) or ret"
            ))
            .into());
        }
    }
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
    plan_copies(elf, exe_display, function)
}

/// One probe at the entry of each out-of-line copy.
fn plan_copies(
    elf: &ElfInfo,
    exe_display: &str,
    function: ResolvedFunction,
) -> Result<PlannedFunction> {
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
                release_id: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PlannedFunction {
        function,
        sites,
        inlined: false,
    })
}
