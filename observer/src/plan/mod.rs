//! Stage 2 — plan probes: which instruction of which file gets which eBPF
//! program, with which value locations.

pub mod callers;
pub mod extra_functions;
pub mod flow;
pub mod infer;
pub mod inlined;
pub mod inlined_alloc;
pub mod instance;
pub mod keys;
pub mod loc;
pub mod presets;
pub mod returns;
pub mod site;
pub mod unwind;
pub mod unwinding;

use std::path::PathBuf;

use anyhow::Result;
use extra_functions::{AllocFunction, FunctionRequest, ReleaseFunction, ReleaseRequest};
use keys::PoolScope;
pub use loc::Location;
use observer_ebpf::{alloc_flags, alloc_kind, AllocLocs, ReturnTest};
use returns::{RepairAbility, ReturnChoice, ReturnInputs, ReturnMethod};
use site::{Execution, ProbedInstruction};

use crate::error::UserError;
use crate::resolve::elf::{ElfInfo, FunctionSymbol};
use crate::resolve::pattern::RustPath;
use crate::resolve::safe_file::SafeFile;
use crate::resolve::signature::{signature_at, Signature};
use crate::resolve::unwinder::Unwinder;
use crate::resolve::{resolve_function, ResolveError, ResolvedFunction};

/// What the user asked to observe.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub alloc: String,
    pub release: String,
    pub size: LocSpec,
    pub alloc_id: LocSpec,
    pub release_id: LocSpec,
    /// How allocate's returns are observed (`--returns`).
    pub returns: ReturnChoice,
    /// Use uretprobes even where a panic would abort the target.
    pub accept_abort_on_panic: bool,
    /// Which returns of `alloc` are allocations, when known without DWARF
    /// (a preset's malloc: a non-null pointer), with the words for it.
    pub success: Option<(ReturnTest, String)>,
    /// Allocate functions after the first (repeated `--alloc`, a preset's
    /// calloc and realloc), each with its own locations.
    pub more_allocs: Vec<FunctionRequest>,
    /// Release functions after the first.
    pub more_releases: Vec<ReleaseRequest>,
    /// The functions are an allocator's entry points (a preset): calls
    /// among them on one thread are the allocator's own (see
    /// [`alloc_flags::OUTERMOST`]).
    pub outermost: bool,
    /// Why no panic can unwind through the functions, when the request
    /// knows what they are (a preset of an allocator written in C), so
    /// their returns need no proof from their code.
    pub no_unwind: Option<String>,
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
    /// Where this release site finds the pool an integer key belongs to,
    /// when it differs from the plan's `release_scope` (an inlined
    /// instance's `self`, or the site's own pool type).
    pub release_scope: Option<Location>,
    /// Set on the exits of an inlined allocate: where the result's id and
    /// size are there.
    pub exit: Option<ExitValues>,
    /// Set when the probe is on a `call` of the function instead of its
    /// first instruction (which the kernel refuses to probe).
    pub call: Option<CallEntry>,
    /// The ELF address of the probed instruction.
    pub probe_address: u64,
}

/// Where an inlined allocate's result is at one of its exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitValues {
    pub id: Location,
    pub size: Location,
    /// What an integer key is unique within there (the literal 0 for
    /// pointers).
    pub scope: Location,
}

/// A function entered through a probe on its caller's `call` instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEntry {
    /// Length of the call instruction.
    pub length: u8,
    /// The function's address.
    pub callee: u64,
}

/// A function and the probes planned on it.
#[derive(Debug, Clone)]
pub struct PlannedFunction {
    pub function: ResolvedFunction,
    pub sites: Vec<ProbeSite>,
    /// True when the sites are inlined instances, not function entries.
    pub inlined: bool,
}

/// Where one allocate function's values are at its return: what
/// `ALLOC_LOCS` holds for each of its entry probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocValues {
    pub id: Location,
    /// Bytes per element; the allocation is `size × count` bytes.
    pub size: Location,
    /// The literal 1, or calloc's element count.
    pub count: Location,
    pub scope: Location,
    pub test: ReturnTest,
    /// For a realloc, where its entry has the old buffer's id.
    pub realloc_old: Option<Location>,
    /// An allocator's entry point (see [`alloc_flags::OUTERMOST`]).
    pub outermost: bool,
}

impl AllocValues {
    /// The form the eBPF side reads.
    pub fn compiled(&self) -> AllocLocs {
        AllocLocs {
            id: self.id.compiled(),
            size: self.size.compiled(),
            count: self.count.compiled(),
            scope: self.scope.compiled(),
            test: self.test,
            old_id: self.realloc_old.unwrap_or(Location::ZERO).compiled(),
            kind: match self.realloc_old {
                Some(_) => alloc_kind::REALLOC,
                None => alloc_kind::PLAIN,
            },
            flags: if self.outermost {
                alloc_flags::OUTERMOST
            } else {
                0
            },
        }
    }
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
    /// Which returns are allocations: an enum result's success variant
    /// (`auto`), else every return.
    pub alloc_test: ReturnTest,
    /// What ids are unique within, at allocate's return: allocate's `self`
    /// for an integer key; the literal 0 for pointers.
    pub alloc_scope: Location,
    /// The same at release's entry: release's `self`, or the literal 0.
    pub release_scope: Location,
    /// What the id is, in words (a pointer, an integer key scoped to …).
    pub identity: String,
    /// `alloc_test` in words, when not every return is an allocation.
    pub allocations_when: Option<String>,
    /// What `auto` locations were inferred to, and why, for people.
    pub inferred: Vec<String>,
    /// What planning could not cover and every report must say (inlined
    /// release instances left unprobed).
    pub warnings: Vec<String>,
    /// How allocate's returns are observed.
    pub returns: ReturnMethod,
    /// Allocate functions after `alloc`, with their own values; their
    /// sites' cookies follow `alloc`'s.
    pub more_allocs: Vec<AllocFunction>,
    /// Release functions after `release`; cookies follow its.
    pub more_releases: Vec<ReleaseFunction>,
    /// `alloc` is an allocator's entry point (a preset).
    pub outermost: bool,
    /// The object the functions are in, when the target has not mapped
    /// it yet: its path in the target, and the file held open while
    /// `binary` (`/proc/self/fd/N`) names it. Its probes wait for the
    /// target to map it (`dlopen`).
    pub not_loaded: Option<(String, std::sync::Arc<SafeFile>)>,
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
        unwinder: &Result<Unwinder, String>,
        repair: &RepairAbility,
    ) -> Result<Self> {
        let planned = plan_alloc(elf, exe_display, request)?;
        let alloc = planned.function;
        let mut inferrer = Inferrer::new(elf, &alloc);
        inferrer.alloc_signature = planned.signature;
        inferrer.explanations = planned.explanations;
        inferrer.warnings = planned.warnings;
        let (size, alloc_id, identity) = match planned.first {
            Some(first) => (first.size, first.id, None),
            None => {
                let size = inferrer.resolve("--size", request.size, infer::size)?;
                let (alloc_id, identity) = inferrer.resolve_alloc_id(request.alloc_id)?;
                (size, alloc_id, identity)
            }
        };
        let key = identity
            .as_ref()
            .and_then(|i| i.key.clone())
            .or(planned.key);
        let scope = key.as_ref().and_then(|key| key.pool.clone());
        let (mut release, release_id, release_scope) =
            match resolve_function(elf, exe_display, &request.release) {
                Ok(function) => {
                    let release = plan_copies(elf, exe_display, function)?;
                    let release_id = inferrer.resolve_release(&release, request.release_id)?;
                    let release_scope = match &scope {
                        Some(PoolScope::Instance(_)) => inferrer.resolve_release_scope(&release)?,
                        _ => Location::ZERO,
                    };
                    (release, release_id, release_scope)
                }
                Err(err @ ResolveError::NotFound { .. }) => {
                    let (release, release_id) = inlined::plan_release(
                        elf,
                        exe_display,
                        request,
                        &mut inferrer,
                        scope.as_ref(),
                    )?
                    .ok_or_else(|| UserError::new(err.to_string()))?;
                    (release, release_id, Location::ZERO)
                }
                Err(err) => return Err(UserError::new(err.to_string()).into()),
            };
        if let Some(PoolScope::Type(pool)) = &scope {
            if !release.inlined {
                inferrer.scope_copies_by_type(&mut release, pool)?;
            }
        }
        let identity_text = match (&identity, &key) {
            (_, Some(key)) => key.describe(),
            (Some(_), None) => "pointer (unique in the process)".to_string(),
            (None, None) if alloc.inlined => format!(
                "the result where control leaves each inlined instance ({alloc_id} at the first)"
            ),
            (None, None) => format!("the value at {alloc_id}, as given"),
        };
        let Inferrer {
            explanations: inferred,
            mut warnings,
            ..
        } = inferrer;
        check_locations(size, alloc_id, release_id, alloc.inlined)?;
        let mut returns = match planned.exits {
            Some(_) if request.returns != ReturnChoice::Auto => {
                return Err(UserError::new(format!(
                    "--returns {} does not apply: '{}' is inlined, so nothing returns; its \
                     results are read where control leaves each inlined instance (leave out \
                     --returns)",
                    clap::ValueEnum::to_possible_value(&request.returns)
                        .map_or_else(String::new, |v| v.get_name().to_string()),
                    request.alloc
                ))
                .into())
            }
            Some(sites) => ReturnMethod::InlinedExits { sites },
            None => returns::choose(&ReturnInputs {
                elf,
                alloc: &alloc,
                choice: request.returns,
                accept_abort: request.accept_abort_on_panic,
                unwinder,
                repair,
                no_unwind: request.no_unwind.as_deref(),
            })?,
        };
        let more = extra_functions::plan(
            &extra_functions::Inputs {
                elf,
                exe_display,
                unwinder,
                repair,
                accept_abort: request.accept_abort_on_panic,
                outermost: request.outermost,
                no_unwind: request.no_unwind.as_deref(),
                first_alloc_cookie: next_cookie(&alloc.sites),
                first_release_cookie: next_cookie(&release.sites),
                probed: extra_functions::addresses(&alloc)
                    .into_iter()
                    .chain(extra_functions::addresses(&release))
                    .collect(),
            },
            &request.more_allocs,
            &request.more_releases,
        )?;
        if !more.allocs.is_empty() {
            returns = extra_functions::merge_returns(&alloc.function.name, returns, more.returns)?;
        }
        let mut inferred = inferred;
        inferred.extend(more.notes);
        if let ReturnMethod::CallSites { unseen, .. } = &returns {
            if !unseen.is_empty() {
                warnings.push(format!(
                    "allocate returns are seen at its call sites, which miss {}: those calls count as entries without return",
                    unseen.join(", ")
                ));
            }
        }
        Ok(Self {
            pid,
            binary,
            alloc,
            release,
            size,
            alloc_id,
            release_id,
            alloc_test: request
                .success
                .as_ref()
                .or(identity.as_ref().and_then(|i| i.success.as_ref()))
                .map_or(ReturnTest::ALWAYS, |(test, _)| *test),
            alloc_scope: match (&scope, planned.first) {
                (_, Some(first)) => first.scope,
                (Some(scope), None) => scope.location(),
                (None, None) => Location::ZERO,
            },
            release_scope,
            allocations_when: request
                .success
                .as_ref()
                .or(identity.as_ref().and_then(|i| i.success.as_ref()))
                .map(|(_, text)| text.clone()),
            identity: identity_text,
            inferred,
            warnings,
            returns,
            more_allocs: more.allocs,
            more_releases: more.releases,
            outermost: request.outermost,
            not_loaded: None,
        })
    }

    /// The first allocate function's values.
    pub fn alloc_values(&self) -> AllocValues {
        AllocValues {
            id: self.alloc_id,
            size: self.size,
            count: Location::ONE,
            scope: self.alloc_scope,
            test: self.alloc_test,
            realloc_old: None,
            outermost: self.outermost,
        }
    }

    /// Every allocate function with its values, the first first.
    pub fn alloc_functions(&self) -> Vec<(&PlannedFunction, AllocValues)> {
        std::iter::once((&self.alloc, self.alloc_values()))
            .chain(self.more_allocs.iter().map(|f| (&f.planned, f.values)))
            .collect()
    }

    /// Every allocate probe site, of every allocate function.
    pub fn alloc_sites(&self) -> Vec<ProbeSite> {
        self.alloc_functions()
            .into_iter()
            .flat_map(|(function, _)| function.sites.iter().cloned())
            .collect()
    }

    /// Every release function, the first first.
    pub fn release_functions(&self) -> Vec<&PlannedFunction> {
        std::iter::once(&self.release)
            .chain(self.more_releases.iter().map(|f| &f.planned))
            .collect()
    }

    /// Every release probe site with its identity location (the site's
    /// own for an inlined instance, else its function's) and scope.
    pub fn release_sites(&self) -> Vec<(ProbeSite, Location, Location)> {
        let first = self.release.sites.iter().map(|site| {
            let id = site.release_id.unwrap_or(self.release_id);
            let scope = site.release_scope.unwrap_or(self.release_scope);
            (site.clone(), id, scope)
        });
        let more = self.more_releases.iter().flat_map(|f| {
            f.planned
                .sites
                .iter()
                .map(move |site| (site.clone(), f.id, Location::ZERO))
        });
        first.chain(more).collect()
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
        self.alloc
            .sites
            .iter()
            .chain(self.more_allocs.iter().flat_map(|f| &f.planned.sites))
            .find(|s| s.cookie == cookie)
    }
}

/// The cookie after the highest of `sites`.
fn next_cookie(sites: &[ProbeSite]) -> u32 {
    sites.iter().map(|s| s.cookie + 1).max().unwrap_or(0)
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

    /// `--alloc-id`: as given, or inferred with what the id is.
    fn resolve_alloc_id(&mut self, spec: LocSpec) -> Result<(Location, Option<infer::Identity>)> {
        match spec {
            LocSpec::Given(location) => Ok((location, None)),
            LocSpec::Auto => {
                let found = infer::alloc_identity(self.alloc_signature()?).map_err(|why| {
                    UserError::new(format!(
                        "--alloc-id auto: {why}; it is not a buffer's identity: write it explicitly"
                    ))
                })?;
                self.explain("--alloc-id", &found.id);
                Ok((found.id.location, Some(found)))
            }
        }
    }

    /// Gives each out-of-line release copy the tag of its own pool type
    /// (`self`'s), which keys handed out by an inlined allocate are scoped
    /// to; refuses when no copy works on allocate's pool type.
    fn scope_copies_by_type(&mut self, release: &mut PlannedFunction, pool: &str) -> Result<()> {
        let mut matching = 0;
        for site in &mut release.sites {
            let signature = signature_at(self.elf, site.symbol.address)?;
            let own = signature.as_ref().and_then(keys::pool_type);
            matching += usize::from(own.as_deref() == Some(pool));
            site.release_scope = own.map(|own| PoolScope::Type(own).location());
        }
        if matching == 0 {
            return Err(UserError::new(format!(
                "--release-id: {} works on no {pool}, the pool type allocate's keys belong to; \
                 name the release of that pool",
                release.function.name
            ))
            .into());
        }
        self.explanations.push(format!(
            "release scope: the pool type of each copy's `self`, as for allocate ({pool})"
        ));
        Ok(())
    }

    /// Release's `self`, which an integer key is scoped to.
    fn resolve_release_scope(&mut self, release: &PlannedFunction) -> Result<Location> {
        let signature = self.read_signature(release)?;
        let scope = infer::release_scope(&signature)
            .map_err(|why| UserError::new(format!("--release-id: {why}")))?;
        self.explanations.push(format!(
            "release scope = {scope}: release's `self`, the pool the key belongs to"
        ));
        Ok(scope)
    }

    fn resolve_release(&mut self, release: &PlannedFunction, spec: LocSpec) -> Result<Location> {
        match spec {
            LocSpec::Given(location) => Ok(location),
            LocSpec::Auto => {
                let release = self.read_signature(release)?;
                let alloc = self.alloc_signature()?;
                let found = infer::guard_release_id(alloc, &release)
                    .unwrap_or_else(|| {
                        let found = infer::release_id(alloc, &release)?;
                        match infer::address_not_identity(Some(alloc), &release, &found.location) {
                            Some(why) => Err(why),
                            None => Ok(found),
                        }
                    })
                    .map_err(|why| {
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

pub(crate) fn check_locations(
    size: Location,
    alloc_id: Location,
    release_id: Location,
    alloc_inlined: bool,
) -> Result<()> {
    for (flag, location) in [("--size", size), ("--alloc-id", alloc_id)] {
        // An inlined allocate's locations are read where its exit probes
        // fire, in the registers there.
        if location.reads_register() && !alloc_inlined {
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

/// Allocate, planned: its entry probes, and for an inlined allocate its
/// exit probes and what was inferred for them.
struct PlannedAlloc {
    function: PlannedFunction,
    signature: Option<Signature>,
    /// An inlined allocate's integer key, when it returns one.
    key: Option<infer::KeyScope>,
    first: Option<ExitValues>,
    exits: Option<Vec<ProbeSite>>,
    explanations: Vec<String>,
    warnings: Vec<String>,
}

/// Plans allocate's out-of-line copies, or, when it has none, its inlined
/// instances.
fn plan_alloc(elf: &ElfInfo, exe_display: &str, request: &ProbeRequest) -> Result<PlannedAlloc> {
    let function = match resolve_function(elf, exe_display, &request.alloc) {
        Ok(function) => function,
        Err(err @ ResolveError::NotFound { .. }) => {
            let inlined = inlined_alloc::plan_alloc(elf, exe_display, request)?
                .ok_or_else(|| UserError::new(err.to_string()))?;
            return Ok(PlannedAlloc {
                function: inlined.planned,
                signature: Some(inlined.signature),
                key: inlined.key,
                first: Some(inlined.first),
                exits: Some(inlined.exits),
                explanations: inlined.explanations,
                warnings: inlined.warnings,
            });
        }
        Err(err) => return Err(UserError::new(err.to_string()).into()),
    };
    Ok(PlannedAlloc {
        function: plan_copies(elf, exe_display, function)?,
        signature: None,
        key: None,
        first: None,
        exits: None,
        explanations: Vec::new(),
        warnings: Vec::new(),
    })
}

/// One probe at the entry of each out-of-line copy; where the kernel
/// refuses a copy's first instruction, one on each direct call of it.
pub(crate) fn plan_copies(
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
    let mut sites = Vec::new();
    for symbol in &function.copies {
        let label = (function.copies.len() > 1).then(|| {
            dwarf_names
                .get(&symbol.mangled)
                .cloned()
                .unwrap_or_else(|| format!("copy at {:#x}", symbol.address))
        });
        let entry = entry_site(elf, exe_display, symbol, label.clone())?;
        if entry.first_instruction.execution == Execution::Refused {
            sites.extend(call_site_entries(elf, exe_display, symbol, &entry, label)?);
        } else {
            sites.push(entry);
        }
    }
    for (index, site) in sites.iter_mut().enumerate() {
        site.cookie = index as u32;
    }
    Ok(PlannedFunction {
        function,
        sites,
        inlined: false,
    })
}

fn entry_site(
    elf: &ElfInfo,
    exe_display: &str,
    symbol: &FunctionSymbol,
    label: Option<String>,
) -> Result<ProbeSite> {
    let file_offset = elf.file_offset(symbol.address).ok_or_else(|| {
        UserError::new(format!(
            "{} at {:#x} is not inside a loadable segment of {exe_display}",
            symbol.demangled, symbol.address
        ))
    })?;
    let bytes = elf.bytes_at(symbol.address, 16).unwrap_or_default();
    Ok(ProbeSite {
        cookie: 0,
        symbol: symbol.clone(),
        file_offset,
        first_instruction: site::decode_first(bytes, symbol.address),
        label,
        release_id: None,
        release_scope: None,
        exit: None,
        call: None,
        probe_address: symbol.address,
    })
}

/// Probes on the direct calls of a function whose first instruction the
/// kernel refuses: the `call` instructions, which it emulates; the
/// arguments are in their registers already.
fn call_site_entries(
    elf: &ElfInfo,
    exe_display: &str,
    symbol: &FunctionSymbol,
    entry: &ProbeSite,
    label: Option<String>,
) -> Result<Vec<ProbeSite>> {
    let found = callers::find(elf, &[symbol.address]);
    let name = RustPath::parse(&symbol.demangled).to_string();
    if found.calls.is_empty() {
        return Err(UserError::new(format!(
            "the kernel refuses to probe {name}'s first instruction ({}: a lock or segment prefix),              and {exe_display} has no direct call of it to probe instead: probe a function that              calls it",
            entry.first_instruction.text
        ))
        .into());
    }
    let mut sites = Vec::new();
    for call in &found.calls {
        let Some(file_offset) = elf.file_offset(call.address) else {
            continue;
        };
        let bytes = elf.bytes_at(call.address, 16).unwrap_or_default();
        sites.push(ProbeSite {
            cookie: 0,
            symbol: symbol.clone(),
            file_offset,
            first_instruction: site::decode_first(bytes, call.address),
            label: Some(match &label {
                Some(label) => format!(
                    "{label}, called from {} at {:#x}",
                    call.caller, call.address
                ),
                None => format!("called from {} at {:#x}", call.caller, call.address),
            }),
            release_id: None,
            release_scope: None,
            exit: None,
            call: Some(CallEntry {
                length: call.length,
                callee: symbol.address,
            }),
            probe_address: call.address,
        });
    }
    Ok(sites)
}
