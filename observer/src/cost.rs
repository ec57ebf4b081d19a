//! The observer's own cost to the machine: how often its probes fire and
//! how much CPU its eBPF programs take.
//!
//! The CPU time is the kernel's own accounting of each program
//! (`run_time_ns` and `run_cnt` from `BPF_OBJ_GET_INFO_BY_FD`). The kernel
//! keeps it only while statistics are enabled: the observer asks for that
//! with `BPF_ENABLE_STATS` (Linux ≥ 5.8), which enables them for as long as
//! it holds the returned descriptor, rather than flipping
//! `kernel.bpf_stats_enabled` for the whole host and leaving it so. Where
//! neither works the CPU time is an estimate, calls × a cost per call
//! measured on the machine this was developed on, and says so.
//!
//! What the numbers include: every run of every program of ours, the raw
//! tracepoints too (they fire for every thread of the host that exits or
//! forks, and filter in the program). A tail call is not counted on its
//! own: the stack walker, tail-called by the allocate entry probe, is
//! accounted to that probe, whose time therefore includes the walk. Not
//! included: the kernel's uprobe machinery around the programs (the
//! breakpoint trap, single-stepping), which `cargo xtask bench` measures as
//! the probe floor.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd};

use anyhow::Result;
use aya::Ebpf;
use observer_ebpf::counter;
use serde::Serialize;

use crate::snapshot::{monotonic_ns, Counters};

/// Estimated CPU time of one allocate call (entry probe with a DWARF
/// stack walk of about 20 frames, and its return probe), nanoseconds.
/// Measured with kernel statistics on pool-bench (`--depth 16`, call-site
/// returns) on the 2-core machine this was developed on: 8.8 µs for the
/// entry and its walk, 1.1 µs for the return (the
/// `overhead::max_overhead_stops_the_session_with_a_final_report` test
/// prints the programs' statistics).
pub const ESTIMATED_NS_PER_ALLOCATE: u64 = 9_900;

/// Estimated CPU time of one release call (entry probe), nanoseconds;
/// measured as above: 0.84 µs.
pub const ESTIMATED_NS_PER_RELEASE: u64 = 850;

/// Where the CPU time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostSource {
    /// The kernel's per-program statistics.
    Kernel,
    /// Calls × [`ESTIMATED_NS_PER_ALLOCATE`] / [`ESTIMATED_NS_PER_RELEASE`].
    Estimate,
}

/// One program's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramStats {
    pub program: String,
    /// Runs since it was loaded (0 while statistics are off).
    pub runs: u64,
    /// CPU time of those runs, nanoseconds.
    pub run_time_ns: u64,
}

/// One reading of the counters and the programs' statistics.
#[derive(Debug, Clone, PartialEq)]
struct Reading {
    taken_ns: u64,
    hits: u64,
    cpu_ns: u64,
}

/// The cost so far, and over the last interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    pub source: CostSource,
    /// Probe hits since attach: allocate entries and returns, release
    /// entries (from the counters).
    pub probe_hits: u64,
    /// CPU time of the programs since statistics were enabled, nanoseconds.
    pub cpu_ns: u64,
    /// Over the last interval: probe hits per second.
    pub hits_per_sec: f64,
    /// Over the last interval: the programs' CPU time as a percentage of
    /// one CPU.
    pub cpu_percent: f64,
    /// Length of that interval, seconds (0 before the second reading).
    pub interval_secs: f64,
    /// Per program (kernel statistics only).
    pub programs: Vec<ProgramStats>,
    /// Kernel memory charged to the observer's maps and programs now
    /// (the `memlock` the kernel accounts to each of their descriptors).
    pub kernel_memory_bytes: u64,
}

impl Cost {
    /// One line for people: `0.42% of one CPU (kernel statistics), 1234 probe hits/s`.
    pub fn describe(&self) -> String {
        let source = match self.source {
            CostSource::Kernel => "kernel statistics",
            CostSource::Estimate => "ESTIMATE: kernel statistics unavailable",
        };
        format!(
            "{:.3}% of one CPU over the last {:.1}s ({source}), {:.0} probe hits/s, {:.3}s of CPU in all, {:.1} MiB of kernel memory",
            self.cpu_percent,
            self.interval_secs,
            self.hits_per_sec,
            self.cpu_ns as f64 / 1e9,
            self.kernel_memory_bytes as f64 / (1024.0 * 1024.0)
        )
    }
}

/// Reads the cost at each interval; holds kernel statistics on while it
/// lives.
pub struct CostMeter {
    /// Keeps `BPF_ENABLE_STATS` in force; closed on drop.
    _stats: Option<OwnedFd>,
    source: CostSource,
    last: Option<Reading>,
    latest: Option<Cost>,
}

impl CostMeter {
    /// Turns kernel statistics on for as long as the meter lives, if the
    /// kernel lets us (or they are on already); otherwise estimates.
    pub fn start() -> Self {
        let (stats, source) = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => (Some(fd), CostSource::Kernel),
            Err(_) if sysctl_stats_enabled() => (None, CostSource::Kernel),
            Err(_) => (None, CostSource::Estimate),
        };
        Self {
            _stats: stats,
            source,
            last: None,
            latest: None,
        }
    }

    pub fn source(&self) -> CostSource {
        self.source
    }

    /// Reads the programs' statistics and `counters` now, and returns the
    /// cost since the previous reading, which this one becomes.
    pub fn read(&mut self, ebpf: &Ebpf, counters: &Counters) -> Result<Cost> {
        let (now, cost) = self.cost_now(ebpf, counters);
        self.last = Some(now);
        self.latest = Some(cost.clone());
        Ok(cost)
    }

    /// The cost now — totals as of `counters`, rates over the time since
    /// the last periodic reading — without becoming a reading: what a
    /// report says, however long ago the last interval ended.
    pub fn peek(&self, ebpf: &Ebpf, counters: &Counters) -> Cost {
        self.cost_now(ebpf, counters).1
    }

    /// A reading now, and the cost it gives over the last reading, with
    /// the kernel memory held now.
    fn cost_now(&self, ebpf: &Ebpf, counters: &Counters) -> (Reading, Cost) {
        let (now, programs) = self.reading(ebpf, counters);
        let cost = Cost {
            kernel_memory_bytes: kernel_memory(ebpf),
            ..cost_between(self.source, self.last.as_ref(), &now, programs)
        };
        (now, cost)
    }

    fn reading(&self, ebpf: &Ebpf, counters: &Counters) -> (Reading, Vec<ProgramStats>) {
        let programs = match self.source {
            CostSource::Kernel => program_stats(ebpf),
            CostSource::Estimate => Vec::new(),
        };
        let now = Reading {
            taken_ns: monotonic_ns(),
            hits: probe_hits(counters),
            cpu_ns: match self.source {
                CostSource::Kernel => programs.iter().map(|p| p.run_time_ns).sum(),
                CostSource::Estimate => estimated_cpu_ns(counters),
            },
        };
        (now, programs)
    }

    /// The cost at the last reading, if any.
    pub fn latest(&self) -> Option<&Cost> {
        self.latest.as_ref()
    }
}

/// The cost at `now`, with rates over the time since `previous`.
fn cost_between(
    source: CostSource,
    previous: Option<&Reading>,
    now: &Reading,
    programs: Vec<ProgramStats>,
) -> Cost {
    let (hits_per_sec, cpu_percent, interval_secs) = match previous {
        Some(before) if now.taken_ns > before.taken_ns => {
            let secs = (now.taken_ns - before.taken_ns) as f64 / 1e9;
            let hits = now.hits.saturating_sub(before.hits) as f64;
            let cpu = now.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1e9;
            (hits / secs, 100.0 * cpu / secs, secs)
        }
        _ => (0.0, 0.0, 0.0),
    };
    Cost {
        source,
        probe_hits: now.hits,
        cpu_ns: now.cpu_ns,
        hits_per_sec,
        cpu_percent,
        interval_secs,
        programs,
        kernel_memory_bytes: 0,
    }
}

/// Kernel memory the maps and programs of `ebpf` hold: the sum of what
/// the kernel charges each descriptor (`memlock:` in its fdinfo, which
/// Linux ≥ 6.4 computes from the memory in use, older kernels from the
/// sizes declared). Maps created without preallocation count what their
/// elements use at the moment. 0 for a descriptor it cannot read.
pub fn kernel_memory(ebpf: &Ebpf) -> u64 {
    let maps = ebpf.maps().filter_map(|(_, map)| {
        let data = match map {
            aya::maps::Map::Array(data)
            | aya::maps::Map::PerCpuArray(data)
            | aya::maps::Map::HashMap(data)
            | aya::maps::Map::PerCpuHashMap(data)
            | aya::maps::Map::LpmTrie(data)
            | aya::maps::Map::ProgramArray(data)
            | aya::maps::Map::RingBuf(data)
            | aya::maps::Map::PerfEventArray(data) => data,
            _ => return None,
        };
        Some(descriptor_memlock(data.fd().as_fd().as_raw_fd()))
    });
    let programs = ebpf.programs().filter_map(|(_, program)| {
        program
            .fd()
            .ok()
            .map(|fd| descriptor_memlock(fd.as_fd().as_raw_fd()))
    });
    maps.chain(programs).sum()
}

/// `memlock:` of our own descriptor `fd`, from /proc/self/fdinfo.
fn descriptor_memlock(fd: RawFd) -> u64 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|info| memlock_field(&info))
        .unwrap_or(0)
}

/// The value of the `memlock:` line of an fdinfo text.
fn memlock_field(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Allocate entries and returns, release entries.
pub fn probe_hits(counters: &Counters) -> u64 {
    2 * counters[counter::ALLOC_CALLS] + counters[counter::RELEASE_CALLS]
}

fn estimated_cpu_ns(counters: &Counters) -> u64 {
    counters[counter::ALLOC_CALLS] * ESTIMATED_NS_PER_ALLOCATE
        + counters[counter::RELEASE_CALLS] * ESTIMATED_NS_PER_RELEASE
}

/// Every loaded program's statistics (programs never loaded are left out).
fn program_stats(ebpf: &Ebpf) -> Vec<ProgramStats> {
    let mut stats: Vec<ProgramStats> = ebpf
        .programs()
        .filter_map(|(name, program)| {
            let info = program.info().ok()?;
            Some(ProgramStats {
                program: name.to_string(),
                runs: info.run_count(),
                run_time_ns: info.run_time().as_nanos() as u64,
            })
        })
        .collect();
    stats.sort_by(|a, b| a.program.cmp(&b.program));
    stats
}

/// True when `kernel.bpf_stats_enabled` is already 1 (someone turned
/// statistics on for the whole host).
fn sysctl_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_last_interval() {
        let before = Reading {
            taken_ns: 1_000_000_000,
            hits: 1_000,
            cpu_ns: 5_000_000,
        };
        let now = Reading {
            taken_ns: 3_000_000_000,
            hits: 21_000,
            cpu_ns: 25_000_000,
        };
        let cost = cost_between(CostSource::Kernel, Some(&before), &now, Vec::new());
        assert_eq!(cost.interval_secs, 2.0);
        assert_eq!(cost.hits_per_sec, 10_000.0);
        // 20 ms of CPU in 2 s: 1 % of one CPU.
        assert!((cost.cpu_percent - 1.0).abs() < 1e-9, "{cost:?}");
        assert_eq!(cost.probe_hits, 21_000);
        let first = cost_between(CostSource::Kernel, None, &now, Vec::new());
        assert_eq!((first.cpu_percent, first.interval_secs), (0.0, 0.0));
    }

    #[test]
    fn memlock_is_read_from_fdinfo_text() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t16778112\nmap_id:\t7\n";
        assert_eq!(memlock_field(fdinfo), Some(16_778_112));
        assert_eq!(memlock_field("pos:\t0\n"), None);
    }

    #[test]
    fn estimates_count_calls() {
        let mut counters = Counters::default();
        counters[counter::ALLOC_CALLS] = 10;
        counters[counter::RELEASE_CALLS] = 4;
        assert_eq!(probe_hits(&counters), 24);
        assert_eq!(
            estimated_cpu_ns(&counters),
            10 * ESTIMATED_NS_PER_ALLOCATE + 4 * ESTIMATED_NS_PER_RELEASE
        );
        let estimate = Cost {
            source: CostSource::Estimate,
            probe_hits: 0,
            cpu_ns: 0,
            hits_per_sec: 0.0,
            cpu_percent: 0.0,
            interval_secs: 0.0,
            programs: Vec::new(),
            kernel_memory_bytes: 3 << 20,
        };
        assert!(estimate.describe().contains("ESTIMATE"));
        assert!(estimate.describe().ends_with("3.0 MiB of kernel memory"));
    }
}
