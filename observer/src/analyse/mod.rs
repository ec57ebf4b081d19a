//! Stage 6 — analyse: turn a snapshot into a report (sites ranked by
//! outstanding bytes, with ages, growth and symbolized stacks), compare
//! marks, and judge a run for CI. The report is the one model every
//! renderer reads; its JSON form is documented in `docs/report-format.md`
//! and versioned by [`REPORT_VERSION`].

pub mod diff;
pub mod group;
pub mod growth;
pub mod live;
pub mod verdict;

use serde::Serialize;

use observer_ebpf::{counter, NO_STACK};

use crate::attach::features::KernelFeatures;
use crate::attach::unwind::TabledObject;
use crate::attach::StackWalker;
use crate::plan::{PlannedFunction, ProbePlan};
use crate::snapshot::{Counters, Snapshot, StackEnding};
use crate::symbolize::{Frame, MappedObject, ModuleDebugInfo, Symbolizer};
use group::{group_stacks, SiteGroup};
use growth::{growth, Growth, History};

/// Version of the JSON report schema; bumped on incompatible changes.
pub const REPORT_VERSION: u32 = 1;

/// Why a report was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// `--duration` elapsed.
    Duration,
    /// SIGUSR1: on demand, still attached.
    Signal,
    /// SIGINT / SIGTERM / SIGHUP.
    Stop,
    /// The target process exited.
    TargetExited,
    /// Asked for over the control socket (`observer report`).
    Control,
    /// The session failed while attached: the final report of what was
    /// seen, followed by the error.
    Error,
    /// The probes' CPU time went over `--max-overhead`: observing stopped
    /// to spare the target.
    Overhead,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    pub reason: Reason,
    pub target: Target,
    /// Seconds between attach and this snapshot.
    pub attached_secs: f64,
    /// When the probes were attached, in seconds since the UNIX epoch
    /// (wall clock): the start of the observed period.
    pub attached_at_unix_secs: f64,
    pub probes: Vec<ProbedFunction>,
    /// How allocate's returns are observed (safe against panics).
    pub returns: Returns,
    /// The kernel and the features of it the observation relied on.
    pub kernel: KernelFeatures,
    pub locations: Locations,
    pub counters: Counters,
    /// How stacks were walked, and the unwind tables installed for it.
    pub stacks: StackWalking,
    /// Where each mapped object's DWARF came from (names and lines depend
    /// on it).
    pub debug_info: Vec<ModuleDebugInfo>,
    /// The target's executable mappings seen while attached, by address,
    /// with their build ids (what addresses in `frames` belong to).
    pub mappings: Vec<MappedObject>,
    pub outstanding: Outstanding,
    /// `--older-than`: buffers younger than this are in flight, not counted.
    pub older_than_secs: Option<f64>,
    /// Growth of the total outstanding over the history window.
    pub growth: Growth,
    /// Set by `observer run`: the command and the CI verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<verdict::Verdict>,
    /// The observer's own cost, set by the session (absent before the
    /// first reading).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::Cost>,
    /// What looks wrong with the observation itself (a location that does
    /// not read, tables that filled up), in words.
    pub warnings: Vec<String>,
    /// Every site seen since attach, most outstanding bytes first.
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The PID the observer was given (its own PID namespace's).
    pub pid: u32,
    /// The target's PID in its own PID namespace when that is not the
    /// observer's (a process in a container, observed from the host).
    pub namespace_pid: Option<u32>,
    pub exe: String,
    pub build_id: Option<String>,
    /// True once the process has exited (the report shows what was seen).
    pub exited: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbedFunction {
    /// "allocate" or "release".
    pub role: &'static str,
    pub function: String,
    /// True when the copies are inlined instances probed inside their
    /// callers, not function entries.
    pub inlined: bool,
    pub copies: Vec<ProbedCopy>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbedCopy {
    pub symbol: String,
    pub address: u64,
    pub file_offset: u64,
    pub first_instruction: String,
    pub execution: crate::plan::site::Execution,
    /// For a function with several copies: which one (DWARF's name with
    /// type arguments, or the address).
    pub label: Option<String>,
}

/// The return method of the plan, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct Returns {
    /// `uretprobe`, `uretprobe-with-repair`, `call-sites` or
    /// `uretprobe-unprotected`.
    pub method: &'static str,
    /// The method and why it was chosen, in words.
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Locations {
    pub size: String,
    pub alloc_id: String,
    pub release_id: String,
    /// What the id is: a pointer, an integer key scoped to a pool, or a
    /// given location's value.
    pub identity: String,
    /// Which returns are allocations, when not every one is (an enum
    /// result's success variant).
    pub allocations_when: Option<String>,
    /// For `auto` locations: what was inferred and why.
    pub inferred: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackWalking {
    pub walker: StackWalker,
    /// Objects with `.eh_frame` unwind tables in the kernel (`dwarf` only).
    pub tabled_objects: Vec<TabledObject>,
}

/// The command `observer run` launched, and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct CommandOutcome {
    pub argv: Vec<String>,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// False when it failed on its own (non-zero exit, or killed by a
    /// signal the observer did not forward).
    pub succeeded: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Outstanding {
    pub buffers: i64,
    pub bytes: i64,
    /// Sites with at least one outstanding buffer.
    pub sites: usize,
}

/// Outstanding buffers of one allocating call path: the kernel's stacks
/// whose first `group_depth` symbolized frames are the same.
#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub rank: usize,
    pub buffers: i64,
    pub bytes: i64,
    pub total_allocations: u64,
    pub total_bytes: u64,
    /// Age of the oldest / newest outstanding buffer, seconds.
    pub oldest_secs: Option<f64>,
    pub newest_secs: Option<f64>,
    /// With `--older-than`: outstanding buffers too young to count.
    pub in_flight_buffers: i64,
    /// Outstanding over the history window.
    pub growth: Growth,
    /// Set when judged for CI (`observer run`), see `verdict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement: Option<verdict::SiteJudgement>,
    /// Innermost first: the allocate function, then its callers. When the
    /// grouped stacks differ further down, only their common frames.
    pub frames: Vec<Frame>,
    /// True when `frames` stops where the grouped stacks start to differ.
    pub frames_truncated: bool,
    /// Then: the rest of the stack holding the most buffers (or, if none
    /// holds any, the most allocations), below `frames`.
    pub largest_stack_rest: Vec<Frame>,
    /// The kernel stacks grouped here.
    pub stacks: Vec<SiteStack>,
}

/// One kernel stack (one `SiteKey`) within a site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStack {
    /// Interned stack id (a hash of the frames); `null` when the stack could
    /// not be captured.
    pub stack_id: Option<u64>,
    /// How the walk of this stack ended; `null` when not captured.
    pub ending: Option<StackEnding>,
    /// Which copy of the allocate function (index into `probes[0].copies`).
    pub copy: u32,
    /// Outstanding, whatever their age.
    pub buffers: i64,
    pub bytes: i64,
    /// Outstanding and counted: with `--older-than`, only buffers older
    /// than that (the site's `buffers` / `bytes` are the sums of these).
    pub counted_buffers: i64,
    pub counted_bytes: i64,
    pub total_allocations: u64,
    pub total_bytes: u64,
    /// This stack's own frames below the site's `frames` (empty when the
    /// site's frames are the whole stack). Not in the JSON report, which
    /// gives only the largest stack's rest; pprof profiles carry every
    /// stack whole.
    #[serde(skip)]
    pub frames_below: Vec<Frame>,
}

/// Inputs that stay the same for every report of one attach.
pub struct ReportContext<'a> {
    pub plan: &'a ProbePlan,
    /// See [`Target::namespace_pid`].
    pub namespace_pid: Option<u32>,
    pub exe: &'a str,
    pub build_id: Option<&'a str>,
    pub attached_ns: u64,
    /// Stacks equal in this many symbolized frames form one site; 0 = all.
    pub group_depth: usize,
    pub history: &'a History,
    /// `--older-than`, nanoseconds.
    pub older_than_ns: Option<u64>,
    pub walker: StackWalker,
    pub tabled_objects: &'a [TabledObject],
    pub kernel: &'a KernelFeatures,
}

/// Builds the report for `snapshot`.
pub fn build_report(
    context: &ReportContext<'_>,
    snapshot: &Snapshot,
    symbolizer: &Symbolizer,
    reason: Reason,
    exited: bool,
) -> Report {
    let groups = group_stacks(
        snapshot.sites.keys(),
        &snapshot.stacks,
        symbolizer,
        context.group_depth,
    );
    let mut sites: Vec<Site> = groups
        .into_iter()
        .map(|group| measure_site(group, snapshot, context))
        .collect();
    sites.sort_by(|a, b| {
        (b.bytes, b.buffers, b.total_allocations).cmp(&(a.bytes, a.buffers, a.total_allocations))
    });
    for (index, site) in sites.iter_mut().enumerate() {
        site.rank = index + 1;
    }
    let plan = context.plan;
    let all_keys: Vec<_> = snapshot.sites.keys().copied().collect();
    let debug_info = symbolizer.debug_info();
    Report {
        version: REPORT_VERSION,
        reason,
        target: Target {
            pid: plan.pid,
            namespace_pid: context.namespace_pid,
            exe: context.exe.to_string(),
            build_id: context.build_id.map(str::to_string),
            exited,
        },
        attached_secs: snapshot.taken_ns.saturating_sub(context.attached_ns) as f64 / 1e9,
        attached_at_unix_secs: unix_secs_at(context.attached_ns),
        probes: plan
            .alloc_functions()
            .into_iter()
            .map(|(function, _)| probed_function("allocate", function))
            .chain(
                plan.release_functions()
                    .into_iter()
                    .map(|function| probed_function("release", function)),
            )
            .collect(),
        kernel: context.kernel.clone(),
        returns: Returns {
            method: plan.returns.name(),
            description: plan.returns.to_string(),
        },
        locations: Locations {
            size: plan.size.to_string(),
            alloc_id: plan.alloc_id.to_string(),
            release_id: plan.release_id_text(),
            identity: plan.identity.clone(),
            allocations_when: plan.allocations_when.clone(),
            inferred: plan.inferred.clone(),
        },
        counters: snapshot.counters,
        debug_info: debug_info.clone(),
        mappings: symbolizer.mapped_objects(),
        stacks: StackWalking {
            walker: context.walker,
            tabled_objects: context.tabled_objects.to_vec(),
        },
        warnings: plan
            .warnings
            .iter()
            .cloned()
            .chain(warnings(&snapshot.counters))
            .chain(debug_warnings(&debug_info))
            .collect(),
        outstanding: Outstanding {
            buffers: sites.iter().map(|s| s.buffers).sum(),
            bytes: sites.iter().map(|s| s.bytes).sum(),
            sites: sites.iter().filter(|s| s.buffers > 0).count(),
        },
        older_than_secs: context.older_than_ns.map(|ns| ns as f64 / 1e9),
        growth: growth(&context.history.series(&all_keys)),
        command: None,
        verdict: None,
        cost: None,
        sites,
    }
}

/// The wall-clock time (seconds since the UNIX epoch) at which
/// CLOCK_MONOTONIC read `monotonic_ns`.
pub fn unix_secs_at(monotonic_ns: u64) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    now - crate::snapshot::monotonic_ns().saturating_sub(monotonic_ns) as f64 / 1e9
}

/// Sums a group's kernel stacks. With `--older-than`, only buffers older
/// than the cut-off count as outstanding.
fn measure_site(group: SiteGroup, snapshot: &Snapshot, context: &ReportContext<'_>) -> Site {
    let mut site = Site {
        rank: 0,
        buffers: 0,
        bytes: 0,
        total_allocations: 0,
        total_bytes: 0,
        oldest_secs: None,
        newest_secs: None,
        in_flight_buffers: 0,
        growth: growth(&context.history.series(&group.keys)),
        judgement: None,
        frames: group.frames,
        frames_truncated: group.frames_truncated,
        largest_stack_rest: Vec::new(),
        stacks: Vec::new(),
    };
    let heaviest = group.tails.iter().max_by_key(|(key, _)| {
        snapshot.sites.get(key).map_or((0, 0), |s| {
            (s.outstanding_buffers, s.total_allocations as i64)
        })
    });
    if site.frames_truncated {
        site.largest_stack_rest = heaviest.map(|(_, rest)| rest.clone()).unwrap_or_default();
    }
    let age = |ns: u64| snapshot.taken_ns.saturating_sub(ns) as f64 / 1e9;
    for key in &group.keys {
        let Some(stats) = snapshot.sites.get(key) else {
            continue;
        };
        let ages = snapshot.ages.get(key);
        let (buffers, bytes) = match (context.older_than_ns, ages) {
            (Some(_), Some(ages)) => (ages.old_count as i64, ages.old_bytes as i64),
            (Some(_), None) => (0, 0),
            (None, _) => (stats.outstanding_buffers, stats.outstanding_bytes),
        };
        site.buffers += buffers;
        site.bytes += bytes;
        site.in_flight_buffers += stats.outstanding_buffers - buffers;
        site.total_allocations += stats.total_allocations;
        site.total_bytes += stats.total_bytes;
        if let Some(ages) = ages.filter(|a| a.count > 0) {
            site.oldest_secs = Some(site.oldest_secs.unwrap_or(0.0).max(age(ages.oldest_ns)));
            site.newest_secs = Some(
                site.newest_secs
                    .unwrap_or(f64::MAX)
                    .min(age(ages.newest_ns)),
            );
        }
        let frames_below = group
            .tails
            .iter()
            .find(|(tail_key, _)| tail_key == key)
            .map(|(_, rest)| rest.clone())
            .unwrap_or_default();
        site.stacks.push(SiteStack {
            stack_id: (key.stack_id != NO_STACK).then_some(key.stack_id),
            ending: snapshot.stacks.get(&key.stack_id).map(|s| s.ending),
            copy: key.probe,
            buffers: stats.outstanding_buffers,
            bytes: stats.outstanding_bytes,
            counted_buffers: buffers,
            counted_bytes: bytes,
            total_allocations: stats.total_allocations,
            total_bytes: stats.total_bytes,
            frames_below,
        });
    }
    site
}

/// One warning per file the target pointed the observer at that it did not
/// use (a debug link to a FIFO, a file the target may not read…): the
/// frames of that object have fewer names, and the user should know why.
fn debug_warnings(debug_info: &[ModuleDebugInfo]) -> Vec<String> {
    debug_info
        .iter()
        .flat_map(|info| {
            info.debug.rejected.iter().map(move |why| {
                format!(
                    "debug information for {}: {why}, so it was not used",
                    info.module
                )
            })
        })
        .collect()
}

/// Plain-language warnings for counters that mean the observation is
/// incomplete, the locations are probably wrong, or the target did
/// something the observation does not follow.
pub fn warnings(c: &Counters) -> Vec<String> {
    let mut out = Vec::new();
    if c[counter::RELEASES] == 0 && c[counter::UNKNOWN_RELEASES] > 0 && c[counter::ALLOCATIONS] > 0
    {
        out.push(format!(
            "no release matched a recorded allocation ({} unknown releases): --release-id \
             probably does not name the value --alloc-id names",
            c[counter::UNKNOWN_RELEASES]
        ));
    }
    let explained: [(u32, &str); 16] = [
        (counter::STACKS_BROKEN, "{n} allocation stacks stopped early (no unwind row and no frame pointer, or unreadable stack): their sites show only the frames found"),
        (counter::ALLOC_ID_READ_ERRORS, "--alloc-id could not be read {n} times: check the location"),
        (counter::RELEASE_ID_READ_ERRORS, "--release-id could not be read {n} times: check the location"),
        (counter::SIZE_READ_ERRORS, "--size could not be read {n} times (those buffers count 0 bytes): check the location"),
        (counter::LIVE_MAP_FULL, "the live-buffer table was full {n} times; those allocations are not tracked (raise --max-live)"),
        (counter::SITE_MAP_FULL, "the site table was full {n} times; per-site totals undercount"),
        (counter::STACK_ERRORS, "{n} allocation stacks could not be captured; their buffers are counted under a site without frames"),
        (counter::REALLOCATED_IDS, "{n} allocations returned an id that was still live: releases are being missed (another release path, or an inlined release)"),
        (counter::ENTRIES_WITHOUT_RETURN, "{n} allocate calls ended without their return being seen (a call the return probes do not cover, or a frame left by a jump): those buffers are not tracked"),
        (counter::EXITED_IN_ALLOCATE, "{n} allocate calls were in flight when their thread exited"),
        (counter::NESTED_TOO_DEEP, "{n} allocate calls were nested more than 4 deep on one thread and not tracked"),
        (counter::THREADS_FULL, "{n} allocate calls were not tracked because the per-thread table was full"),
        (counter::UNWIND_REPAIR_FAILURES, "{n} return addresses could not be put back for a panic unwinding through allocate: the target may have aborted"),
        (counter::FORKS, "the target started {n} processes (fork/spawn): buffers a forked copy allocates are not observed"),
        (counter::EXECS, "the target replaced its program with exec {n} times: the probes went with the old program, and this report names the old binary"),
        (counter::RETURNS_WITHOUT_ENTRY, "{n} allocate returns had no recorded entry (calls in flight at attach, or nested too deep)"),
    ];
    for (index, text) in explained {
        let count = c[index];
        if count > 0 {
            out.push(text.replace("{n}", &count.to_string()));
        }
    }
    out
}

fn probed_function(role: &'static str, planned: &PlannedFunction) -> ProbedFunction {
    ProbedFunction {
        role,
        function: planned.function.name.clone(),
        inlined: planned.inlined,
        copies: planned
            .sites
            .iter()
            .map(|site| ProbedCopy {
                symbol: site.symbol.mangled.clone(),
                address: site.symbol.address,
                file_offset: site.file_offset,
                first_instruction: site.first_instruction.text.clone(),
                execution: site.first_instruction.execution,
                label: site.label.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_that_mean_trouble_are_explained() {
        assert!(warnings(&Counters::default()).is_empty());
        let mut mismatched = Counters::default();
        mismatched[counter::ALLOCATIONS] = 10;
        mismatched[counter::UNKNOWN_RELEASES] = 7;
        mismatched[counter::STACK_ERRORS] = 2;
        let text = warnings(&mismatched).join("\n");
        assert!(text.contains("no release matched a recorded allocation (7 unknown releases)"));
        assert!(text.contains("2 allocation stacks could not be captured"));
    }
}
