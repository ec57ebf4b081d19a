//! Stage 3 — load the eBPF programs and attach them to the planned sites.
//!
//! Requires Linux ≥ 5.15 (uprobe attach cookies via BPF links) and root, or
//! CAP_BPF + CAP_PERFMON (+ CAP_SYS_PTRACE for another user's process).
//! Every probe belongs to an fd this process holds: dropping the
//! [`Attachment`] detaches them, and if the observer dies the kernel closes
//! the fds and removes the probes itself.

pub mod unwind;

use std::num::NonZeroU32;

use anyhow::{anyhow, Context as _, Result};
use aya::maps::{Array, ProgramArray};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use aya::programs::{ProgramError, UProbe};
use aya::{Ebpf, EbpfLoader};
use observer_ebpf::{names, walker, Loc};

use crate::error::UserError;
use crate::plan::{ProbePlan, ProbeSite};

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
}

impl Attachment {
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

    /// Tables objects the process mapped since attach.
    pub fn refresh_tables(&mut self, process: &crate::resolve::process::Process) -> Result<()> {
        if let (Some(tables), Some(ebpf)) = (self.tables.as_mut(), self.ebpf.as_mut()) {
            tables.refresh(ebpf, process)?;
        }
        Ok(())
    }
}

/// Fails with a [`UserError`] unless this process may load eBPF programs and
/// open uprobe perf events.
pub fn check_privileges() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .context("no CapEff line in /proc/self/status")?;
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

/// Loads the programs configured for `plan` and attaches every probe.
///
/// Order matters for honest accounting: release probes go first (so no
/// buffer allocated under observation can be released unseen), then the
/// allocate return probes, then the allocate entry probes (so every
/// recorded entry also has its return probe).
pub fn attach(
    plan: &ProbePlan,
    options: AttachOptions,
    tables: Option<unwind::PreparedTables>,
) -> Result<Attachment> {
    let rows_capacity = tables.as_ref().map_or(1, |t| t.capacity);
    let mut ebpf = load(plan, options, rows_capacity)?;
    let tables = tables
        .map(|prepared| unwind::UnwindTables::install(&mut ebpf, prepared))
        .transpose()
        .context("cannot install the unwind tables")?;
    install_walker(&mut ebpf)?;
    install_release_locations(&mut ebpf, plan)?;
    let logger = options
        .ebpf_log
        .then(|| aya_log::EbpfLogger::init(&mut ebpf))
        .transpose()
        .context("cannot start the eBPF log reader")?;
    let pid = NonZeroU32::new(plan.pid).context("PID 0")?;
    let mut probe_count = 0;
    for (program, sites) in [
        (names::PROG_RELEASE_ENTER, &plan.release.sites),
        (names::PROG_ALLOC_RETURN, &plan.alloc.sites),
        (names::PROG_ALLOC_ENTER, &plan.alloc.sites),
    ] {
        let uprobe = uprobe_mut(&mut ebpf, program)?;
        uprobe.load().map_err(|err| load_error(program, err))?;
        for site in sites {
            attach_site(uprobe, plan, site, pid)
                .with_context(|| format!("cannot attach {program} to {}", site.symbol.demangled))?;
            probe_count += 1;
        }
    }
    Ok(Attachment {
        tables,
        tabled: Vec::new(),
        ebpf: Some(ebpf),
        probe_count,
        logger,
    })
}

/// Puts `pool_walk_stack` in the tail-call slot the entry probe jumps to.
fn install_walker(ebpf: &mut Ebpf) -> Result<()> {
    let program = uprobe_mut(ebpf, names::PROG_WALK)?;
    program
        .load()
        .map_err(|err| load_error(names::PROG_WALK, err))?;
    let fd = program.fd()?.try_clone()?;
    let mut slots: ProgramArray<_> = ProgramArray::try_from(
        ebpf.map_mut(names::MAP_WALKERS)
            .context("eBPF object has no map WALKERS")?,
    )?;
    slots.set(0, &fd, 0)?;
    Ok(())
}

/// Gives every release probe its identity location, at its attach cookie:
/// the site's own (an inlined instance), else the plan's.
fn install_release_locations(ebpf: &mut Ebpf, plan: &ProbePlan) -> Result<()> {
    let mut locations: Array<_, Loc> = Array::try_from(
        ebpf.map_mut(names::MAP_RELEASE_LOCS)
            .context("eBPF object has no map RELEASE_LOCS")?,
    )?;
    for site in &plan.release.sites {
        let location = site.release_id.unwrap_or(plan.release_id);
        locations
            .set(site.cookie, location.compiled(), 0)
            .with_context(|| {
                format!("cannot store the location of release site {}", site.cookie)
            })?;
    }
    Ok(())
}

fn load(plan: &ProbePlan, options: AttachOptions, rows_capacity: u32) -> Result<Ebpf> {
    let size = plan.size.compiled();
    let alloc_id = plan.alloc_id.compiled();
    // aya-log's level global: 0 turns every log statement off.
    let log_level: u8 = if options.ebpf_log { 0xff } else { 0 };
    let walker = match options.walker {
        StackWalker::Dwarf => walker::DWARF,
        StackWalker::FramePointers => walker::FRAME_POINTERS,
    };
    EbpfLoader::new()
        .override_global(names::GLOBAL_TARGET_TGID, &plan.pid, true)
        .override_global(names::GLOBAL_SIZE_LOC, &size, true)
        .override_global(names::GLOBAL_ALLOC_ID_LOC, &alloc_id, true)
        .override_global(aya_log::LEVEL, &log_level, false)
        .override_global(names::GLOBAL_WALKER, &walker, true)
        .map_max_entries(names::MAP_LIVE, options.max_live)
        .map_max_entries(names::MAP_RELEASE_LOCS, release_sites(plan))
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
        .release
        .sites
        .iter()
        .map(|s| s.cookie)
        .max()
        .unwrap_or(0);
    highest + 1
}

fn uprobe_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?;
    Ok(program.try_into()?)
}

fn attach_site(
    uprobe: &mut UProbe,
    plan: &ProbePlan,
    site: &ProbeSite,
    pid: NonZeroU32,
) -> Result<()> {
    let point = UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(site.file_offset),
        cookie: Some(u64::from(site.cookie)),
    };
    uprobe
        .attach(point, &plan.binary, UProbeScope::OneProcess(pid))
        .map(|_| ())
        .map_err(|err| {
            if std::path::Path::new(&format!("/proc/{}", plan.pid)).exists() {
                anyhow!(err)
            } else {
                UserError::new(format!("process {} exited while attaching", plan.pid)).into()
            }
        })
}

fn load_error(program: &str, err: ProgramError) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => anyhow!(
            "the kernel refused eBPF program {program}: {io_error}\nverifier log:\n{verifier_log}"
        ),
        other => anyhow!(other).context(format!("cannot load eBPF program {program}")),
    }
}

fn is_permission_error(err: &aya::EbpfError) -> bool {
    let text = format!("{err:?}");
    text.contains("PermissionDenied") || text.contains("Operation not permitted")
}
