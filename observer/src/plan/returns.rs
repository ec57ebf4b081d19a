//! How allocate's returns are observed, chosen so that a panic can never
//! take the target down.
//!
//! A uretprobe is the cheap way (the kernel's trampoline, about as costly
//! as an emulated probe), but it replaces the return address of the call
//! in flight, and the unwinder finds no unwind information for the
//! replacement: a panic unwinding through allocate (caught by
//! `catch_unwind`, or by a tokio task) aborts the target. The methods, in
//! the order `auto` tries them:
//!
//! 1. **uretprobe, proven safe**: the program cannot unwind through
//!    allocate at all (see [`super::unwinding`]). Free.
//! 2. **uretprobe with repair**: probes on the unwinder's entry points put
//!    the original return addresses back when a panic starts unwinding
//!    (`bpf_probe_write_user`), and Rust's catch point re-arms a call the
//!    panic did not leave. Nothing on the hot path; needs CAP_SYS_ADMIN,
//!    no kernel lockdown, and no shadow stack in the target.
//! 3. **call sites**: a uprobe on the instruction after every direct call
//!    of allocate; nothing is replaced, so nothing can break. The kernel
//!    usually single-steps those instructions (≈10× an emulated probe),
//!    and calls through pointers are not seen.
//!
//! With none available the observer refuses to attach, unless the user
//! accepts the hazard (`--accept-abort-on-panic`).

use std::fmt;

use super::callers::{self, Callers};
use super::site::{self, decode_first, Execution};
use super::unwinding::{self, Unwinding};
use super::{PlannedFunction, ProbeSite};
use crate::arch::decode::Flow;
use crate::error::UserError;
use crate::resolve::elf::{ElfInfo, FunctionSymbol};
use crate::resolve::unwinder::Unwinder;

/// What the user asked for with `--returns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReturnChoice {
    /// The cheapest method that cannot harm the target.
    #[default]
    Auto,
    /// Uretprobes (refused when a panic could unwind through allocate,
    /// unless --accept-abort-on-panic).
    Uretprobe,
    /// Uretprobes with return addresses repaired when a panic unwinds.
    Repair,
    /// Probes after every direct call of allocate.
    CallSites,
}

/// Whether this kernel and these privileges allow repairing return
/// addresses (writing the target's stack), or why not.
pub type RepairAbility = Result<(), String>;

/// The method chosen, with what it needs.
#[derive(Debug, Clone)]
pub enum ReturnMethod {
    /// Uretprobes; no unwind can pass through allocate.
    Uretprobe { proof: String },
    /// Uretprobes, repaired by probes on the unwinder when a panic starts.
    Repaired { unwinder: Unwinder, hazard: String },
    /// Probes on the instruction after each call of allocate.
    CallSites {
        sites: Vec<ProbeSite>,
        /// Why the uretprobe methods were not used.
        because: String,
        /// Calls the probes do not see (tail calls, address taken).
        unseen: Vec<String>,
        /// The target's unwinder, when found: its catch point tells
        /// which calls a panic unwound.
        unwinder: Option<Unwinder>,
    },
    /// Uretprobes although a panic could abort the target
    /// (`--accept-abort-on-panic`).
    Unprotected { hazard: String },
    /// Allocate is inlined: probes where control leaves each instance,
    /// each reading the result where its caller keeps it. Nothing returns,
    /// so nothing a panic unwinds can be harmed.
    InlinedExits { sites: Vec<ProbeSite> },
}

impl ReturnMethod {
    /// True when the allocate probes are uretprobes.
    pub fn uses_uretprobes(&self) -> bool {
        !matches!(
            self,
            ReturnMethod::CallSites { .. } | ReturnMethod::InlinedExits { .. }
        )
    }

    /// Short name, for reports and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            ReturnMethod::Uretprobe { .. } => "uretprobe",
            ReturnMethod::Repaired { .. } => "uretprobe-with-repair",
            ReturnMethod::CallSites { .. } => "call-sites",
            ReturnMethod::Unprotected { .. } => "uretprobe-unprotected",
            ReturnMethod::InlinedExits { .. } => "inlined-exits",
        }
    }
}

impl fmt::Display for ReturnMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReturnMethod::Uretprobe { proof } => {
                write!(
                    f,
                    "uretprobe (no panic can unwind through allocate: {proof})"
                )
            }
            ReturnMethod::Repaired { unwinder, .. } => write!(
                f,
                "uretprobe, return addresses put back when a panic unwinds ({} in {}{})",
                unwinder
                    .starts
                    .iter()
                    .map(|s| s.symbol.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                unwinder.object(),
                if unwinder.catch.is_some() {
                    "; catches seen at __rust_panic_cleanup"
                } else {
                    ""
                }
            ),
            ReturnMethod::CallSites { sites, because, .. } => {
                let stepped = sites
                    .iter()
                    .filter(|s| s.first_instruction.execution != Execution::Emulated)
                    .count();
                write!(
                    f,
                    "{} call sites ({stepped} single-stepped, ~10x an emulated probe) because {because}",
                    sites.len()
                )
            }
            ReturnMethod::Unprotected { hazard } => write!(
                f,
                "uretprobe, UNPROTECTED (--accept-abort-on-panic): {hazard}"
            ),
            ReturnMethod::InlinedExits { sites } => {
                let stepped = sites
                    .iter()
                    .filter(|s| s.first_instruction.execution != Execution::Emulated)
                    .count();
                write!(
                    f,
                    "{} exits of inlined instances ({stepped} single-stepped, ~10x an emulated \
                     probe): allocate is inlined, so its result is read where control leaves it",
                    sites.len()
                )
            }
        }
    }
}

/// Everything the choice depends on.
pub struct ReturnInputs<'a> {
    pub elf: &'a ElfInfo,
    pub alloc: &'a PlannedFunction,
    pub choice: ReturnChoice,
    pub accept_abort: bool,
    /// Where the target's panics start and are caught, or why unknown.
    pub unwinder: &'a Result<Unwinder, String>,
    pub repair: &'a RepairAbility,
    /// Why no panic can unwind through allocate, when the request knows
    /// (an allocator written in C): no proof is looked for in its code.
    pub no_unwind: Option<&'a str>,
}

impl ReturnInputs<'_> {
    /// The unwinder, when the repair is possible with it (on this
    /// processor, this kernel, with these privileges).
    fn repairable(&self) -> Result<&Unwinder, String> {
        crate::arch::RETURN_ADDRESS_REPAIR.map_err(String::from)?;
        self.repair.clone()?;
        self.unwinder.as_ref().map_err(Clone::clone)
    }
}

/// Chooses how allocate's returns are observed.
pub fn choose(inputs: &ReturnInputs<'_>) -> anyhow::Result<ReturnMethod> {
    let function = &inputs.alloc.function.name;
    if inputs.alloc.sites.iter().any(|s| s.call.is_some()) {
        // Entries at call sites: the function itself carries no probe to
        // hang a uretprobe on; its calls return to the next instruction.
        return call_sites(
            inputs,
            "allocate's own first instruction cannot be probed".into(),
        );
    }
    let unwinding = match inputs.no_unwind {
        Some(why) => Unwinding::Impossible(why.to_string()),
        None => unwinding_through(inputs.elf, inputs.alloc),
    };
    let hazard = match &unwinding {
        Unwinding::Impossible(proof) => {
            if inputs.choice == ReturnChoice::CallSites {
                return call_sites(inputs, "--returns call-sites".into());
            }
            return Ok(ReturnMethod::Uretprobe {
                proof: proof.clone(),
            });
        }
        Unwinding::Possible(how) => format!("a panic can unwind through {function} ({how})"),
    };
    match inputs.choice {
        ReturnChoice::Auto => match inputs.repairable() {
            Ok(unwinder) => Ok(ReturnMethod::Repaired {
                unwinder: unwinder.clone(),
                hazard,
            }),
            Err(why) => call_sites(inputs, format!("{hazard}, and {why}")).or_else(|err| {
                if inputs.accept_abort {
                    Ok(ReturnMethod::Unprotected { hazard })
                } else {
                    Err(err)
                }
            }),
        },
        ReturnChoice::Repair => match inputs.repairable() {
            Ok(unwinder) => Ok(ReturnMethod::Repaired {
                unwinder: unwinder.clone(),
                hazard,
            }),
            Err(why) => Err(UserError::new(format!(
                "--returns repair is not possible here: {why}; use --returns auto"
            ))
            .into()),
        },
        ReturnChoice::CallSites => call_sites(inputs, "--returns call-sites".into()),
        ReturnChoice::Uretprobe if inputs.accept_abort => Ok(ReturnMethod::Unprotected { hazard }),
        ReturnChoice::Uretprobe => Err(UserError::new(format!(
            "{hazard}: plain uretprobes would make the target abort when that happens; use \
             --returns auto, or add --accept-abort-on-panic to take that risk"
        ))
        .into()),
    }
}

/// The verdict over every copy of the function: possible if any copy can.
pub fn unwinding_through(elf: &ElfInfo, alloc: &PlannedFunction) -> Unwinding {
    let mut proof = None;
    for site in &alloc.sites {
        match unwinding::through(elf, &site.symbol) {
            Unwinding::Possible(how) => return Unwinding::Possible(how),
            Unwinding::Impossible(why) => proof = Some(why),
        }
    }
    Unwinding::Impossible(proof.unwrap_or_default())
}

/// Probes after every direct call of allocate, or an error saying why
/// there are none.
fn call_sites(inputs: &ReturnInputs<'_>, because: String) -> anyhow::Result<ReturnMethod> {
    let targets: Vec<u64> = inputs
        .alloc
        .function
        .copies
        .iter()
        .map(|c| c.address)
        .collect();
    let found = callers::find(inputs.elf, &targets);
    let (sites, unprobeable) = return_sites(inputs.elf, &found);
    if sites.is_empty() {
        return Err(UserError::new(format!(
            "cannot observe {}'s returns safely: {because}, and it has no direct call sites to \
             probe instead; --accept-abort-on-panic uses uretprobes anyway (the target aborts if a \
             panic unwinds through it while attached)",
            inputs.alloc.function.name
        ))
        .into());
    }
    Ok(ReturnMethod::CallSites {
        sites,
        because,
        unseen: unseen_calls(&found)
            .into_iter()
            .chain(unprobeable)
            .collect(),
        unwinder: inputs.unwinder.as_ref().ok().cloned(),
    })
}

/// One probe where each call returns to: the instruction after the call,
/// or, when the kernel refuses that one (a `lock`ed update of a reference
/// count, typically), the first one after it that it accepts, provided
/// everything passed over leaves the stack pointer, the return registers
/// and the stack alone. Calls with no such place are returned apart, for
/// the report.
pub fn return_sites(elf: &ElfInfo, found: &Callers) -> (Vec<ProbeSite>, Vec<String>) {
    let mut sites = Vec::new();
    let mut unprobeable = Vec::new();
    for call in &found.calls {
        match return_site(elf, call.return_address()) {
            Some((address, first_instruction)) => {
                let Some(file_offset) = elf.file_offset(address) else {
                    continue;
                };
                sites.push(ProbeSite {
                    cookie: sites.len() as u32,
                    symbol: FunctionSymbol {
                        mangled: format!("return to {} at {address:#x}", call.caller),
                        demangled: call.caller.clone(),
                        address,
                        size: 0,
                    },
                    file_offset,
                    first_instruction,
                    label: Some(format!("after the call in {}", call.caller)),
                    release_id: None,
                    release_scope: None,
                    exit: None,
                    call: None,
                    probe_address: address,
                });
            }
            None => unprobeable.push(format!(
                "the return into {} at {:#x}, where the kernel refuses a probe",
                call.caller,
                call.return_address()
            )),
        }
    }
    (sites, unprobeable)
}

/// How many refused instructions a return probe may be moved past.
const MAX_PASSED: usize = 4;

/// The first probe-able place at or after `address` that a return there
/// reaches with its stack pointer and return registers unchanged.
fn return_site(elf: &ElfInfo, address: u64) -> Option<(u64, site::ProbedInstruction)> {
    let bytes = elf.bytes_at(address, 64)?;
    for instruction in crate::arch::ISA.sweep(bytes, address).take(MAX_PASSED + 1) {
        if instruction.flow == Flow::Invalid {
            return None;
        }
        let at = instruction.address;
        let offset = (at - address) as usize;
        let probed = decode_first(&bytes[offset..], at);
        if probed.execution != Execution::Refused {
            return Some((at, probed));
        }
        // Moved past only when it leaves the stack pointer, the return
        // registers and the stack alone.
        if !instruction.leaves_return_state() {
            return None;
        }
    }
    None
}

/// Calls of the function that probes at call sites cannot see.
pub fn unseen_calls(found: &Callers) -> Vec<String> {
    let mut unseen: Vec<String> = found
        .tail_calls
        .iter()
        .map(|t| format!("a tail call from {} at {:#x}", t.caller, t.address))
        .collect();
    unseen.extend(
        found
            .address_taken
            .iter()
            .map(|place| format!("calls through a pointer (address taken by {place})")),
    );
    unseen
}
