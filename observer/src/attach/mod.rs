//! Stage 3 — load the eBPF programs and attach them to the planned sites.
//!
//! Requires Linux ≥ 5.15 (uprobe attach cookies via BPF links) and root, or
//! CAP_BPF + CAP_PERFMON (+ CAP_SYS_PTRACE for another user's process).
//! From a PID namespace other than the initial one (the observer in a
//! container), the programs recognise the target by its PID in its own
//! namespace (Linux ≥ 5.7; see [`crate::resolve::pid_namespace`]); the
//! uprobes' PID, like every PID here, is one of the observer's namespace.
//! Every probe belongs to an fd this process holds: dropping the
//! [`Attachment`] detaches them, and if the observer dies the kernel closes
//! the fds and removes the probes itself.

pub mod emulation;
pub mod features;
pub mod registrar;
pub mod repair;
pub mod unwind;

use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::{anyhow, Context as _, Result};
use aya::maps::{Array, MapData, ProgramArray, RingBuf};
use aya::programs::{ProgramError, RawTracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use observer_ebpf::{
    entry_kind, names, walker, walker_slot, AllocLocs, EntrySite, ExitLocs, ReleaseLocs,
};

use crate::error::UserError;
use crate::plan::returns::ReturnMethod;
use crate::plan::{ProbePlan, ProbeSite};
use crate::resolve::loader::LoadHook;
use crate::resolve::pid_namespace::KernelTarget;
use crate::resolve::unwinder::ProbePoint;
use std::path::{Path, PathBuf};

/// The compiled eBPF object, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer-ebpf"));

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// How the entry probe walks the allocating stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackWalker {
    /// `.eh_frame` unwind tables in BPF maps; frame pointers only where a
    /// table has no row. Works on stock release builds.
    Dwarf,
    /// The kernel's frame-pointer walker: cheaper, but needs the target
    /// built with `-C force-frame-pointers=yes`.
    FramePointers,
}

/// Tuning for the kernel side.
#[derive(Debug, Clone, Copy)]
pub struct AttachOptions {
    /// Capacity of the live-buffer table.
    pub max_live: u32,
    /// Forward the eBPF programs' aya-log messages (debugging only).
    pub ebpf_log: bool,
    pub walker: StackWalker,
}

/// Loaded programs with their probes attached. Dropping it detaches.
pub struct Attachment {
    /// The tables of the DWARF walker (unmapped before the programs go).
    tables: Option<unwind::UnwindTables>,
    /// What was tabled, kept for the final report after detaching.
    tabled: Vec<unwind::TabledObject>,
    /// `None` once detached.
    ebpf: Option<Ebpf>,
    /// Probes attached, for the report header.
    pub probe_count: usize,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The uretprobe trampoline address last given to the kernel side.
    trampoline: u64,
    /// The start gate's probe while it is attached (`observer run`).
    gate: Option<registrar::Registered>,
    /// Every uprobe, in the order they were placed.
    probes: Vec<registrar::Registered>,
    /// The probe on the dynamic linker's hook, while it is placed.
    loads_probe: Option<registrar::Registered>,
    /// How the programs recognise the target.
    kernel_target: KernelTarget,
}

impl Attachment {
    /// The target's process ID as the programs record it (in the live
    /// table's keys): its PID in its own namespace when the observer runs
    /// in a container.
    pub fn kernel_tgid(&self) -> u32 {
        self.kernel_target.tgid
    }

    /// The loaded object, for reading maps.
    pub fn ebpf(&self) -> Result<&Ebpf> {
        self.ebpf
            .as_ref()
            .context("the probes are already detached")
    }

    /// Passes pending eBPF log records to the `log` crate (no-op unless
    /// `--ebpf-log` was given).
    pub fn flush_log(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// Detaches every probe and unloads the programs; the maps go with them.
    pub fn detach(&mut self) {
        registrar::release(std::mem::take(&mut self.probes));
        let gates = self.gate.take().into_iter().chain(self.loads_probe.take());
        registrar::release(gates.collect());
        self.logger = None;
        if let Some(tables) = self.tables.take() {
            self.tabled = tables.tabled.clone();
        }
        self.ebpf = None;
    }

    /// The objects whose unwind tables are installed (DWARF walker).
    pub fn tabled_objects(&self) -> &[unwind::TabledObject] {
        self.tables.as_ref().map_or(&self.tabled, |t| &t.tabled)
    }

    /// Gives the kernel side the address of the target's uretprobe
    /// trampoline once the kernel has mapped it (`[uprobes]` in the
    /// target's maps), so repairs recognise hijacked return addresses
    /// wherever the kernel placed it.
    pub fn learn_trampoline(&mut self, pid: u32) -> Result<()> {
        let Some(address) = trampoline_address(pid) else {
            return Ok(());
        };
        if address == self.trampoline {
            return Ok(());
        }
        let Some(ebpf) = self.ebpf.as_mut() else {
            return Ok(());
        };
        let mut slot: Array<_, u64> = Array::try_from(
            ebpf.map_mut(names::MAP_TRAMPOLINE)
                .context("eBPF object has no map TRAMPOLINE")?,
        )?;
        slot.set(0, address, 0)
            .context("cannot store the trampoline address")?;
        self.trampoline = address;
        Ok(())
    }

    /// `observer run`: stops the command at its program's entry point
    /// (`file_offset` in `program`), once, so that everything the dynamic
    /// loader mapped can be tabled before the program runs; see
    /// [`Attachment::remove_start_gate`].
    pub fn arm_start_gate(&mut self, program: &Path, file_offset: u64, pid: u32) -> Result<()> {
        let ebpf = self
            .ebpf
            .as_mut()
            .context("the probes are already detached")?;
        let fd = loaded_program(ebpf, names::PROG_START_GATE)?;
        let place = registrar::Place {
            path: program,
            file_offset,
            what: "the program's entry point",
        };
        let request = registrar::UprobeRequest::new(fd, place, pid, false, 0)?;
        let mut gate = registrar::register(&[request]).context("cannot place the start gate")?;
        self.gate = gate.pop();
        Ok(())
    }

    /// Removes the start gate, so a later start of the same program in
    /// this process is not stopped.
    pub fn remove_start_gate(&mut self) -> Result<()> {
        if let Some(gate) = self.gate.take() {
            registrar::release(vec![gate]);
        }
        Ok(())
    }

    /// Probes the dynamic linker's hook (see [`crate::resolve::loader`])
    /// so that every change to the target's loaded objects wakes the
    /// session (through [`Attachment::take_load_events`]), which tables a
    /// library as soon as it is mapped rather than at the next tick.
    pub fn watch_loads(&mut self, hook: &LoadHook, pid: u32) -> Result<()> {
        let ebpf = self
            .ebpf
            .as_mut()
            .context("the probes are already detached")?;
        let fd = loaded_program(ebpf, names::PROG_LOADS_CHANGED)?;
        let what = format!("_dl_debug_state in {}", hook.object);
        let place = registrar::Place {
            path: &hook.path,
            file_offset: hook.file_offset,
            what: &what,
        };
        let request = registrar::UprobeRequest::new(fd, place, pid, false, 0)?;
        let mut probe = registrar::register(&[request])
            .context("cannot probe the dynamic linker's _dl_debug_state")?;
        self.loads_probe = probe.pop();
        Ok(())
    }

    /// The ring buffer [`Attachment::watch_loads`]'s probe writes a record
    /// to on every change to the target's loaded objects (taken once: its
    /// reader owns it).
    pub fn take_load_events(&mut self) -> Option<RingBuf<MapData>> {
        self.loads_probe.as_ref()?;
        let map = self.ebpf.as_mut()?.take_map(names::MAP_LOADS)?;
        RingBuf::try_from(map).ok()
    }

    /// Tables objects the process mapped since attach.
    pub fn refresh_tables(&mut self, process: &crate::resolve::process::Process) -> Result<()> {
        if let (Some(tables), Some(ebpf)) = (self.tables.as_mut(), self.ebpf.as_mut()) {
            tables.refresh(ebpf, process)?;
        }
        Ok(())
    }
}

/// Where the kernel mapped the process's uretprobe trampoline, if it has.
fn trampoline_address(pid: u32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .find(|line| line.ends_with("[uprobes]"))
        .and_then(|line| line.split('-').next())
        .and_then(|start| u64::from_str_radix(start, 16).ok())
}

/// Fails with a [`UserError`] unless this process may load eBPF programs and
/// open uprobe perf events.
pub fn check_privileges() -> Result<()> {
    let effective = effective_capabilities()?;
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(UserError::new(
        "attaching uprobes needs root, or CAP_BPF and CAP_PERFMON (plus CAP_SYS_PTRACE for another \
         user's process), and this process has neither: run it with sudo",
    )
    .into())
}

/// This process's effective capability set (`CapEff` in /proc/self/status).
pub fn effective_capabilities() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .context("no CapEff line in /proc/self/status")
}

/// True when this process has CAP_SYS_ADMIN in its effective set.
pub fn has_sys_admin() -> bool {
    effective_capabilities().is_ok_and(|caps| caps & (1u64 << CAP_SYS_ADMIN) != 0)
}

/// Loads the programs configured for `plan` and attaches every probe.
///
/// Order matters for honest accounting and for the target's safety: the
/// tracepoints that see threads exit go first; then release probes (so
/// no buffer allocated under observation can be released unseen); then
/// the unwinder repair (before any uretprobe can replace a return
/// address); then allocate's return probes, then its entry probes (so
/// every recorded entry also has its return probe).
pub fn attach(
    plan: &ProbePlan,
    options: AttachOptions,
    tables: Option<unwind::PreparedTables>,
) -> Result<Attachment> {
    let rows_capacity = tables.as_ref().map_or(1, |t| t.capacity);
    let kernel_target = kernel_target(plan.pid)?;
    let mut ebpf = load(plan, &kernel_target, options, rows_capacity)?;
    let tables = tables
        .map(|prepared| unwind::UnwindTables::install(&mut ebpf, prepared))
        .transpose()
        .context("cannot install the unwind tables")?;
    if options.walker == StackWalker::Dwarf {
        // Only the unwinder tail-calls the walker; the frame-pointer walk
        // needs no more than the kernel's own.
        install_walker(&mut ebpf)?;
    }
    install_release_locations(&mut ebpf, plan)?;
    install_entry_sites(&mut ebpf, plan)?;
    install_alloc_locations(&mut ebpf, plan)?;
    install_alloc_exits(&mut ebpf, plan)?;
    let logger = options
        .ebpf_log
        .then(|| aya_log::EbpfLogger::init(&mut ebpf))
        .transpose()
        .context("cannot start the eBPF log reader")?;
    attach_tracepoints(&mut ebpf)?;
    let mut requests = Vec::new();
    let mut add = |ebpf: &mut Ebpf, program: &str, targets: &[ProbeTarget]| -> Result<()> {
        if targets.is_empty() {
            return Ok(());
        }
        let fd = loaded_program(ebpf, program)?;
        let retprobe = program == names::PROG_ALLOC_RETURN;
        for target in targets {
            let place = registrar::Place {
                path: &target.path,
                file_offset: target.file_offset,
                what: &target.what,
            };
            requests.push(registrar::UprobeRequest::new(
                fd,
                place,
                plan.pid,
                retprobe,
                u64::from(target.cookie),
            )?);
        }
        Ok(())
    };
    add(
        &mut ebpf,
        names::PROG_RELEASE_ENTER,
        &targets_of(plan, &release_sites_only(plan)),
    )?;
    match &plan.returns {
        ReturnMethod::Repaired { unwinder, .. } => {
            let starts: Vec<ProbeTarget> = unwinder.starts.iter().map(ProbeTarget::from).collect();
            add(&mut ebpf, names::PROG_UNWIND_START, &starts)?;
            let catch: Vec<ProbeTarget> = unwinder.catch.iter().map(ProbeTarget::from).collect();
            add(&mut ebpf, names::PROG_UNWIND_CAUGHT, &catch)?;
        }
        ReturnMethod::CallSites {
            unwinder: Some(unwinder),
            ..
        } => {
            let catch: Vec<ProbeTarget> = unwinder.catch.iter().map(ProbeTarget::from).collect();
            add(&mut ebpf, names::PROG_PANIC_CAUGHT, &catch)?;
        }
        _ => {}
    }
    match &plan.returns {
        ReturnMethod::CallSites { sites, .. } => add(
            &mut ebpf,
            names::PROG_ALLOC_RETURN_SITE,
            &targets_of(plan, sites),
        )?,
        ReturnMethod::InlinedExits { sites } => add(
            &mut ebpf,
            names::PROG_ALLOC_INLINED_EXIT,
            &targets_of(plan, sites),
        )?,
        _ => add(
            &mut ebpf,
            names::PROG_ALLOC_RETURN,
            &targets_of(plan, &plan.alloc_sites()),
        )?,
    }
    add(
        &mut ebpf,
        names::PROG_ALLOC_ENTER,
        &targets_of(plan, &plan.alloc_sites()),
    )?;
    let probes = registrar::register(&requests).map_err(|err| {
        if std::path::Path::new(&format!("/proc/{}", plan.pid)).exists() {
            err
        } else {
            UserError::new(format!("process {} exited while attaching", plan.pid)).into()
        }
    })?;
    let probe_count = probes.len();
    Ok(Attachment {
        tables,
        tabled: Vec::new(),
        ebpf: Some(ebpf),
        probe_count,
        probes,
        loads_probe: None,
        logger,
        trampoline: 0,
        gate: None,
        kernel_target,
    })
}

/// How the programs are to recognise process `pid`.
fn kernel_target(pid: u32) -> Result<KernelTarget> {
    KernelTarget::of(pid).map_err(|err| {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            err.context(format!("cannot tell how the kernel sees process {pid}"))
        } else {
            UserError::new(format!("process {pid} exited while attaching")).into()
        }
    })
}

/// Empty programs on exactly the uprobes [`attach`] would place for
/// `plan`: the kernel's cost of the traps alone, the floor the observer's
/// own cost is measured against. Dropping it removes them.
pub struct Floor {
    probes: Vec<registrar::Registered>,
    _ebpf: Ebpf,
}

impl Floor {
    pub fn probe_count(&self) -> usize {
        self.probes.len()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        registrar::release(std::mem::take(&mut self.probes));
    }
}

/// Places the probe floor for `plan` (see [`Floor`]).
pub fn attach_floor(plan: &ProbePlan, options: AttachOptions) -> Result<Floor> {
    let mut ebpf = load(plan, &kernel_target(plan.pid)?, options, 1)?;
    let empty = loaded_program(&mut ebpf, names::PROG_EMPTY)?;
    let mut requests = Vec::new();
    let returns = match &plan.returns {
        ReturnMethod::CallSites { sites, .. } | ReturnMethod::InlinedExits { sites } => {
            (targets_of(plan, sites), false)
        }
        _ => (targets_of(plan, &plan.alloc_sites()), true),
    };
    for (targets, retprobe) in [
        (targets_of(plan, &release_sites_only(plan)), false),
        returns,
        (targets_of(plan, &plan.alloc_sites()), false),
    ] {
        for target in &targets {
            let place = registrar::Place {
                path: &target.path,
                file_offset: target.file_offset,
                what: &target.what,
            };
            requests.push(registrar::UprobeRequest::new(
                empty, place, plan.pid, retprobe, 0,
            )?);
        }
    }
    let probes = registrar::register(&requests)?;
    Ok(Floor {
        probes,
        _ebpf: ebpf,
    })
}

/// One uprobe to place: a file, an offset in it, a cookie.
struct ProbeTarget {
    path: PathBuf,
    file_offset: u64,
    cookie: u32,
    /// For error messages.
    what: String,
}

impl From<&ProbePoint> for ProbeTarget {
    fn from(point: &ProbePoint) -> Self {
        Self {
            path: point.path.clone(),
            file_offset: point.file_offset,
            cookie: 0,
            what: format!("{} in {}", point.symbol, point.object),
        }
    }
}

/// Every release probe site, of every release function.
fn release_sites_only(plan: &ProbePlan) -> Vec<ProbeSite> {
    plan.release_sites()
        .into_iter()
        .map(|(site, _, _)| site)
        .collect()
}

fn targets_of(plan: &ProbePlan, sites: &[ProbeSite]) -> Vec<ProbeTarget> {
    sites
        .iter()
        .map(|site| ProbeTarget {
            path: plan.binary.clone(),
            file_offset: site.file_offset,
            cookie: site.cookie,
            what: site.symbol.demangled.clone(),
        })
        .collect()
}

/// The raw tracepoints that follow the target's threads and processes.
fn attach_tracepoints(ebpf: &mut Ebpf) -> Result<()> {
    for (program, tracepoint) in [
        (names::PROG_THREAD_EXIT, "sched_process_exit"),
        (names::PROG_NEW_TASK, "task_newtask"),
        (names::PROG_EXEC, "sched_process_exec"),
    ] {
        let raw: &mut RawTracePoint = ebpf
            .program_mut(program)
            .with_context(|| format!("eBPF object has no program {program}"))?
            .try_into()?;
        raw.load().map_err(|err| load_error(program, err))?;
        raw.attach(tracepoint)
            .with_context(|| format!("cannot attach {program} to the {tracepoint} tracepoint"))?;
    }
    Ok(())
}

/// Tells the entry probe how each allocate site is placed (function entry
/// or call site), by cookie.
fn install_entry_sites(ebpf: &mut Ebpf, plan: &ProbePlan) -> Result<()> {
    let mut entries: Array<_, EntrySite> = Array::try_from(
        ebpf.map_mut(names::MAP_ENTRY_SITES)
            .context("eBPF object has no map ENTRY_SITES")?,
    )?;
    for site in plan.alloc_sites() {
        let entry = match site.call {
            Some(call) => EntrySite {
                kind: entry_kind::CALL_SITE,
                call_length: u32::from(call.length),
                callee_delta: call.callee.wrapping_sub(site.probe_address) as i64,
            },
            None if plan.alloc.inlined => EntrySite {
                kind: entry_kind::INLINED,
                ..EntrySite::default()
            },
            None => EntrySite::default(),
        };
        entries
            .set(site.cookie, entry, 0)
            .with_context(|| format!("cannot describe allocate site {}", site.cookie))?;
    }
    Ok(())
}

/// Tells each allocate entry probe's return what to evaluate, by the
/// entry's cookie: its function's values.
fn install_alloc_locations(ebpf: &mut Ebpf, plan: &ProbePlan) -> Result<()> {
    let mut locations: Array<_, AllocLocs> = Array::try_from(
        ebpf.map_mut(names::MAP_ALLOC_LOCS)
            .context("eBPF object has no map ALLOC_LOCS")?,
    )?;
    for (function, values) in plan.alloc_functions() {
        let compiled = values.compiled();
        for site in &function.sites {
            locations.set(site.cookie, compiled, 0).with_context(|| {
                format!(
                    "cannot store the locations of allocate site {} ({})",
                    site.cookie, function.function.name
                )
            })?;
        }
    }
    Ok(())
}

/// Tells each exit probe of an inlined allocate where the result is, by
/// cookie.
fn install_alloc_exits(ebpf: &mut Ebpf, plan: &ProbePlan) -> Result<()> {
    let ReturnMethod::InlinedExits { sites } = &plan.returns else {
        return Ok(());
    };
    let mut exits: Array<_, ExitLocs> = Array::try_from(
        ebpf.map_mut(names::MAP_ALLOC_EXITS)
            .context("eBPF object has no map ALLOC_EXITS")?,
    )?;
    for site in sites {
        let values = site
            .exit
            .with_context(|| format!("exit site {} has no locations", site.cookie))?;
        let locs = ExitLocs {
            id: values.id.compiled(),
            size: values.size.compiled(),
            scope: values.scope.compiled(),
        };
        exits
            .set(site.cookie, locs, 0)
            .with_context(|| format!("cannot store the locations of exit {}", site.cookie))?;
    }
    Ok(())
}

/// Puts the walk's programs in the tail-call slots the entry probe and
/// they themselves jump to: `pool_walk_stack` (steps with the unwind
/// rows), `pool_walk_cached` (re-reads the thread's cached walk) and
/// `pool_walk_remember` (makes a walk the thread's cached one).
fn install_walker(ebpf: &mut Ebpf) -> Result<()> {
    for (name, slot) in [
        (names::PROG_WALK, walker_slot::STEP),
        (names::PROG_WALK_CACHED, walker_slot::CACHED),
        (names::PROG_WALK_REMEMBER, walker_slot::REMEMBER),
    ] {
        let program = uprobe_mut(ebpf, name)?;
        program.load().map_err(|err| load_error(name, err))?;
        let fd = program.fd()?.try_clone()?;
        let mut slots: ProgramArray<_> = ProgramArray::try_from(
            ebpf.map_mut(names::MAP_WALKERS)
                .context("eBPF object has no map WALKERS")?,
        )?;
        slots.set(slot, &fd, 0)?;
    }
    Ok(())
}

/// Gives every release probe its identity location, at its attach cookie:
/// the site's own (an inlined instance), else the plan's.
fn install_release_locations(ebpf: &mut Ebpf, plan: &ProbePlan) -> Result<()> {
    let mut locations: Array<_, ReleaseLocs> = Array::try_from(
        ebpf.map_mut(names::MAP_RELEASE_LOCS)
            .context("eBPF object has no map RELEASE_LOCS")?,
    )?;
    for (site, id, scope) in plan.release_sites() {
        let location = ReleaseLocs {
            id: id.compiled(),
            scope: scope.compiled(),
        };
        locations.set(site.cookie, location, 0).with_context(|| {
            format!("cannot store the location of release site {}", site.cookie)
        })?;
    }
    Ok(())
}

fn load(
    plan: &ProbePlan,
    target: &KernelTarget,
    options: AttachOptions,
    rows_capacity: u32,
) -> Result<Ebpf> {
    // aya-log's level global: 0 turns every log statement off.
    let log_level: u8 = if options.ebpf_log { 0xff } else { 0 };
    let walker = match options.walker {
        StackWalker::Dwarf => walker::DWARF,
        StackWalker::FramePointers => walker::FRAME_POINTERS,
    };
    // No namespace (inode 0): the programs compare the kernel's own IDs.
    let namespace = target.namespace.map_or((0, 0), |ns| (ns.device, ns.inode));
    let allocator_entry_points = u32::from(
        plan.alloc_functions()
            .iter()
            .any(|(_, values)| values.outermost),
    );
    EbpfLoader::new()
        .override_global(names::GLOBAL_TARGET_TGID, &target.tgid, true)
        .override_global(names::GLOBAL_TARGET_PID_NS_DEV, &namespace.0, true)
        .override_global(names::GLOBAL_TARGET_PID_NS_INO, &namespace.1, true)
        .override_global(aya_log::LEVEL, &log_level, false)
        .override_global(names::GLOBAL_WALKER, &walker, true)
        .override_global(
            names::GLOBAL_ALLOCATOR_ENTRY_POINTS,
            &allocator_entry_points,
            true,
        )
        .map_max_entries(names::MAP_LIVE, options.max_live)
        .map_max_entries(names::MAP_RELEASE_LOCS, release_sites(plan))
        .map_max_entries(names::MAP_ENTRY_SITES, alloc_sites(plan))
        .map_max_entries(names::MAP_ALLOC_LOCS, alloc_sites(plan))
        .map_max_entries(names::MAP_ALLOC_EXITS, alloc_exits(plan))
        .map_max_entries(names::MAP_UNWIND_ROWS, rows_capacity.max(1))
        .load(EBPF_OBJECT)
        .map_err(|err| {
            if is_permission_error(&err) {
                check_privileges().err().unwrap_or_else(|| anyhow!(err))
            } else {
                anyhow!(err)
            }
        })
        .context("cannot load the eBPF programs")
}

/// Entries `RELEASE_LOCS` needs: one per release probe (cookies are
/// 0..n).
fn release_sites(plan: &ProbePlan) -> u32 {
    let highest = plan
        .release_sites()
        .iter()
        .map(|(site, _, _)| site.cookie)
        .max()
        .unwrap_or(0);
    highest + 1
}

/// Entries `ENTRY_SITES` and `ALLOC_LOCS` need: one per allocate entry
/// probe, of every allocate function (cookies are 0..n).
fn alloc_sites(plan: &ProbePlan) -> u32 {
    let highest = plan
        .alloc_sites()
        .iter()
        .map(|site| site.cookie)
        .max()
        .unwrap_or(0);
    highest + 1
}

/// Entries `ALLOC_EXITS` needs: one per exit of an inlined allocate.
fn alloc_exits(plan: &ProbePlan) -> u32 {
    match &plan.returns {
        ReturnMethod::InlinedExits { sites } => sites.len().max(1) as u32,
        _ => 1,
    }
}

fn uprobe_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?;
    Ok(program.try_into()?)
}

/// Loads `program` (once) and returns its descriptor for the registrar.
fn loaded_program(ebpf: &mut Ebpf, program: &str) -> Result<RawFd> {
    let uprobe = uprobe_mut(ebpf, program)?;
    if uprobe.fd().is_err() {
        uprobe.load().map_err(|err| load_error(program, err))?;
    }
    Ok(uprobe.fd()?.as_fd().as_raw_fd())
}

/// The verifier refused a program: said in one line (the instruction it
/// stopped at and why); the whole log goes to `--verifier-log FILE`.
#[derive(Debug, thiserror::Error)]
#[error(
    "this kernel (Linux {release}) refused the eBPF program {program} ({io_error}): {reason}; \
     --verifier-log FILE keeps the verifier's whole log"
)]
pub struct KernelRefused {
    pub program: String,
    pub release: String,
    pub io_error: std::io::Error,
    /// The verifier's last words.
    pub reason: String,
    /// The whole log.
    pub log: String,
}

/// Writes the verifier's log of a refused program, if `err` is one, to
/// `path` (`--verifier-log`).
pub fn write_verifier_log(err: &anyhow::Error, path: &std::path::Path) -> Result<()> {
    let Some(refused) = err.chain().find_map(|e| e.downcast_ref::<KernelRefused>()) else {
        return Ok(());
    };
    crate::render::replace_file(path, refused.log.as_bytes())
        .with_context(|| format!("cannot write the verifier log to {}", path.display()))
}

fn load_error(program: &str, err: ProgramError) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            KernelRefused {
                program: program.to_string(),
                release: features::KernelFeatures::probe().release,
                io_error,
                reason: verifier_reason(&log),
                log,
            }
            .into()
        }
        other => anyhow!(other).context(format!("cannot load eBPF program {program}")),
    }
}

/// The line of a verifier log that says why it stopped: the last one
/// that is not its closing statistics.
fn verifier_reason(log: &str) -> String {
    log.lines()
        .map(str::trim)
        .rfind(|line| {
            !line.is_empty()
                && !line.starts_with("verification time")
                && !line.starts_with("processed ")
                && !line.starts_with("stack depth")
        })
        .map(|line| line.chars().take(300).collect())
        .unwrap_or_else(|| "(the verifier gave no reason)".into())
}

fn is_permission_error(err: &aya::EbpfError) -> bool {
    let text = format!("{err:?}");
    text.contains("PermissionDenied") || text.contains("Operation not permitted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifiers_reason_is_its_last_word_before_the_statistics() {
        let log = "0: R1=ctx() R10=fp0\n44: (7b) *(u64 *)(r2 +0) = r8\nR2 unbounded memory access, make sure to bounds check any such access\nverification time 12284 usec\nstack depth 112\nprocessed 44 insns (limit 1000000) max_states_per_insn 0\n";
        assert_eq!(
            verifier_reason(log),
            "R2 unbounded memory access, make sure to bounds check any such access"
        );
        assert_eq!(verifier_reason(""), "(the verifier gave no reason)");
    }
}
