//! Stage 6 — analyse: turn a snapshot into a report (sites ranked by
//! outstanding bytes, with ages and symbolized stacks). The report is the
//! one model every renderer reads; its JSON form is documented in the
//! README and versioned by [`REPORT_VERSION`].

use serde::Serialize;

use observer_ebpf::{SiteKey, NO_STACK};

use crate::plan::{PlannedFunction, ProbePlan};
use crate::snapshot::{Counters, Snapshot};
use crate::symbolize::{Frame, Symbolizer};

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
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    pub reason: Reason,
    pub target: Target,
    /// Seconds between attach and this snapshot.
    pub attached_secs: f64,
    pub probes: Vec<ProbedFunction>,
    pub locations: Locations,
    pub counters: Counters,
    pub outstanding: Outstanding,
    /// What looks wrong with the observation itself (a location that does
    /// not read, tables that filled up), in words.
    pub warnings: Vec<String>,
    /// Every site seen since attach, most outstanding bytes first.
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub pid: u32,
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
    pub copies: Vec<ProbedCopy>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbedCopy {
    pub symbol: String,
    pub address: u64,
    pub file_offset: u64,
    pub first_instruction: String,
    pub execution: crate::plan::site::Execution,
}

#[derive(Debug, Clone, Serialize)]
pub struct Locations {
    pub size: String,
    pub alloc_id: String,
    pub release_id: String,
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
    /// Innermost first: the allocate function, then its callers. When the
    /// grouped stacks differ further down, only their common frames.
    pub frames: Vec<Frame>,
    /// True when `frames` stops where the grouped stacks start to differ.
    pub frames_truncated: bool,
    /// The kernel stacks grouped here.
    pub stacks: Vec<SiteStack>,
}

/// One kernel stack (one `SiteKey`) within a site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStack {
    /// Kernel stack id; `null` when the stack could not be captured.
    pub stack_id: Option<u32>,
    /// Which copy of the allocate function (index into `probes[0].copies`).
    pub copy: u32,
    pub buffers: i64,
    pub bytes: i64,
    pub total_allocations: u64,
}

/// Inputs that stay the same for every report of one attach.
pub struct ReportContext<'a> {
    pub plan: &'a ProbePlan,
    pub exe: &'a str,
    pub build_id: Option<&'a str>,
    pub attached_ns: u64,
    /// Stacks equal in this many symbolized frames form one site; 0 = all.
    pub group_depth: usize,
}

/// Builds the report for `snapshot`.
pub fn build_report(
    context: &ReportContext<'_>,
    snapshot: &Snapshot,
    symbolizer: &Symbolizer,
    reason: Reason,
    exited: bool,
) -> Report {
    let mut sites = group_sites(snapshot, symbolizer, context.group_depth);
    sites.sort_by(|a, b| {
        (b.bytes, b.buffers, b.total_allocations).cmp(&(a.bytes, a.buffers, a.total_allocations))
    });
    for (index, site) in sites.iter_mut().enumerate() {
        site.rank = index + 1;
    }
    let (buffers, bytes) = snapshot.outstanding();
    let plan = context.plan;
    Report {
        version: REPORT_VERSION,
        reason,
        target: Target {
            pid: plan.pid,
            exe: context.exe.to_string(),
            build_id: context.build_id.map(str::to_string),
            exited,
        },
        attached_secs: snapshot.taken_ns.saturating_sub(context.attached_ns) as f64 / 1e9,
        probes: vec![
            probed_function("allocate", &plan.alloc),
            probed_function("release", &plan.release),
        ],
        locations: Locations {
            size: plan.size.to_string(),
            alloc_id: plan.alloc_id.to_string(),
            release_id: plan.release_id.to_string(),
        },
        counters: snapshot.counters,
        warnings: warnings(&snapshot.counters),
        outstanding: Outstanding {
            buffers,
            bytes,
            sites: sites.iter().filter(|s| s.buffers > 0).count(),
        },
        sites,
    }
}

/// Plain-language warnings for counters that mean the observation is
/// incomplete or the locations are probably wrong.
pub fn warnings(c: &Counters) -> Vec<String> {
    let mut out = Vec::new();
    if c.releases == 0 && c.unknown_releases > 0 && c.allocations > 0 {
        out.push(format!(
            "no release matched a recorded allocation ({} unknown releases): --release-id \
             probably does not name the value --alloc-id names",
            c.unknown_releases
        ));
    }
    let explained: [(u64, &str); 7] = [
        (c.alloc_id_read_errors, "--alloc-id could not be read {n} times: check the location"),
        (c.release_id_read_errors, "--release-id could not be read {n} times: check the location"),
        (c.size_read_errors, "--size could not be read {n} times (those buffers count 0 bytes): check the location"),
        (c.live_map_full, "the live-buffer table was full {n} times; those allocations are not tracked (raise --max-live)"),
        (c.site_map_full, "the site table was full {n} times; per-site totals undercount"),
        (c.stack_errors, "{n} allocation stacks could not be captured; their buffers are counted under a site without frames"),
        (c.reallocated_ids, "{n} allocations returned an id that was still live: releases are being missed (another release path, or an inlined release)"),
    ];
    for (count, text) in explained {
        if count > 0 {
            out.push(text.replace("{n}", &count.to_string()));
        }
    }
    out
}

/// What makes two frames the same call path: function and source line
/// (addresses differ between copies of inlined code).
type FrameKey = (Option<String>, Option<String>, Option<u32>);

fn frame_key(frame: &Frame) -> FrameKey {
    match (&frame.function, frame.line) {
        (None, None) => (None, None, Some(frame.address as u32)),
        _ => (frame.function.clone(), frame.file.clone(), frame.line),
    }
}

/// Symbolizes every kernel stack and merges those whose first
/// `group_depth` frames agree. The kernel keys by exact stack; people think
/// in call paths, and a runtime's scheduler loop reaches the same path from
/// several places far below the code that matters.
fn group_sites(snapshot: &Snapshot, symbolizer: &Symbolizer, group_depth: usize) -> Vec<Site> {
    let mut groups: Vec<(Vec<FrameKey>, Site)> = Vec::new();
    for (key, stats) in &snapshot.sites {
        let frames = site_frames(key, snapshot, symbolizer);
        let depth = if group_depth == 0 {
            frames.len()
        } else {
            group_depth.min(frames.len())
        };
        let group_key: Vec<FrameKey> = frames[..depth].iter().map(frame_key).collect();
        let age = |ns: u64| snapshot.taken_ns.saturating_sub(ns) as f64 / 1e9;
        let ages = snapshot.ages.get(key);
        let stack = SiteStack {
            stack_id: (key.stack_id != NO_STACK).then_some(key.stack_id),
            copy: key.probe,
            buffers: stats.outstanding_buffers,
            bytes: stats.outstanding_bytes,
            total_allocations: stats.total_allocations,
        };
        let member = Site {
            rank: 0,
            buffers: stats.outstanding_buffers,
            bytes: stats.outstanding_bytes,
            total_allocations: stats.total_allocations,
            total_bytes: stats.total_bytes,
            oldest_secs: ages.map(|a| age(a.oldest_ns)),
            newest_secs: ages.map(|a| age(a.newest_ns)),
            frames,
            frames_truncated: false,
            stacks: vec![stack],
        };
        match groups.iter_mut().find(|(k, _)| *k == group_key) {
            Some((_, site)) => merge_into(site, member),
            None => groups.push((group_key, member)),
        }
    }
    groups.into_iter().map(|(_, site)| site).collect()
}

fn merge_into(site: &mut Site, member: Site) {
    site.buffers += member.buffers;
    site.bytes += member.bytes;
    site.total_allocations += member.total_allocations;
    site.total_bytes += member.total_bytes;
    site.oldest_secs = max_option(site.oldest_secs, member.oldest_secs);
    site.newest_secs = match (site.newest_secs, member.newest_secs) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let common = site
        .frames
        .iter()
        .zip(&member.frames)
        .take_while(|(a, b)| frame_key(a) == frame_key(b))
        .count();
    if common < site.frames.len() || common < member.frames.len() {
        site.frames.truncate(common);
        site.frames_truncated = true;
    }
    site.stacks.extend(member.stacks);
}

fn max_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn site_frames(key: &SiteKey, snapshot: &Snapshot, symbolizer: &Symbolizer) -> Vec<Frame> {
    snapshot
        .stacks
        .get(&key.stack_id)
        .map(|addresses| symbolizer.symbolize_stack(addresses))
        .unwrap_or_default()
}

fn probed_function(role: &'static str, planned: &PlannedFunction) -> ProbedFunction {
    ProbedFunction {
        role,
        function: planned.function.name.clone(),
        copies: planned
            .sites
            .iter()
            .map(|site| ProbedCopy {
                symbol: site.symbol.mangled.clone(),
                address: site.symbol.address,
                file_offset: site.file_offset,
                first_instruction: site.first_instruction.text.clone(),
                execution: site.first_instruction.execution,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, line: u32) -> Frame {
        Frame {
            address: 0x1000 + u64::from(line),
            function: Some(function.into()),
            file: Some("src/lib.rs".into()),
            line: Some(line),
            inlined: false,
            module: None,
        }
    }

    fn site(buffers: i64, oldest: f64, frames: Vec<Frame>) -> Site {
        Site {
            rank: 0,
            buffers,
            bytes: buffers * 256,
            total_allocations: buffers as u64 + 1,
            total_bytes: (buffers as u64 + 1) * 256,
            oldest_secs: Some(oldest),
            newest_secs: Some(oldest / 2.0),
            frames,
            frames_truncated: false,
            stacks: Vec::new(),
        }
    }

    #[test]
    fn merged_sites_keep_common_frames_and_extreme_ages() {
        let mut merged = site(
            2,
            10.0,
            vec![frame("alloc", 1), frame("encode", 2), frame("a", 3)],
        );
        merge_into(
            &mut merged,
            site(
                3,
                4.0,
                vec![frame("alloc", 1), frame("encode", 2), frame("b", 3)],
            ),
        );
        assert_eq!((merged.buffers, merged.bytes), (5, 1280));
        assert_eq!(merged.oldest_secs, Some(10.0));
        assert_eq!(merged.newest_secs, Some(2.0));
        assert_eq!(merged.frames.len(), 2);
        assert!(merged.frames_truncated);
    }

    #[test]
    fn identical_stacks_merge_without_truncation() {
        let frames = vec![frame("alloc", 1), frame("encode", 2)];
        let mut merged = site(1, 1.0, frames.clone());
        merge_into(&mut merged, site(1, 1.0, frames));
        assert!(!merged.frames_truncated);
        assert_eq!(merged.frames.len(), 2);
    }

    #[test]
    fn counters_that_mean_trouble_are_explained() {
        assert!(warnings(&Counters::default()).is_empty());
        let mismatched = Counters {
            allocations: 10,
            unknown_releases: 7,
            stack_errors: 2,
            ..Counters::default()
        };
        let text = warnings(&mismatched).join("\n");
        assert!(text.contains("no release matched a recorded allocation (7 unknown releases)"));
        assert!(text.contains("2 allocation stacks could not be captured"));
    }
}
