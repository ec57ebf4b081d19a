//! The observer's own cost to the machine: how often its probes fire and
//! how much CPU its eBPF programs take.
//!
//! The CPU time is the kernel's own accounting of each program
//! (`run_time_ns` and `run_cnt` from `BPF_OBJ_GET_INFO_BY_FD`). The kernel
//! keeps it only while statistics are enabled, and while they are, every
//! run of every eBPF program on the host pays two clock reads (about
//! 0.4 µs per allocate/release pair of ours here, measured with `perf`;
//! see docs/design.md). So by default ([`CostStatistics::Sampled`]) the
//! observer turns them on with `BPF_ENABLE_STATS` (Linux ≥ 5.8; on while
//! it holds the returned descriptor, never by flipping
//! `kernel.bpf_stats_enabled` for the host) only for a window at the end
//! of each interval, and counts the time between windows as calls × the
//! last window's cost per call. [`CostStatistics::Always`] keeps them on.
//! Where the kernel keeps no statistics for us the CPU time is calls × a
//! cost per call measured on the machine this was developed on, and says
//! so.
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
use std::time::Duration;

use anyhow::Result;
use aya::Ebpf;
use observer_ebpf::{counter, names};
use serde::Serialize;

use crate::snapshot::{monotonic_ns, Counters};

/// Estimated CPU time of one allocate call (entry probe with its DWARF
/// stack walk, and its return probe), nanoseconds: pool-bench at depth
/// 16 with call-site returns on the 2-core machine this was developed on
/// (`cargo xtask bench`, 2026-11-30: 1.8 µs for the entry and its cached
/// walk, 0.96 µs for the return). Used only until a statistics window has
/// measured the real cost, or where the kernel keeps no statistics.
pub const ESTIMATED_NS_PER_ALLOCATE: u64 = 2_800;

/// Estimated CPU time of one release call (entry probe), nanoseconds;
/// measured as above: 0.79 µs.
pub const ESTIMATED_NS_PER_RELEASE: u64 = 800;

/// The longest statistics window: at the end of each interval, a tenth of
/// it, at most this.
const MAX_WINDOW: Duration = Duration::from_secs(1);

/// Allocate calls a window must see for its cost per call to stand
/// alone; with fewer it is weighed against the previous cost, counted as
/// this many calls. Until windows have seen this many in all, a window
/// opens at each tick and closes as soon as it has (a learning window).
const MIN_CALLS: u64 = 64;

/// How often a learning window looks whether it has seen enough calls.
const LEARNING_CHECK: Duration = Duration::from_millis(20);

/// How long the kernel's per-program statistics stay on (`--cost-statistics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostStatistics {
    /// On for the last tenth of each interval (at most 1 s); between
    /// windows, calls × the last window's cost per call.
    #[default]
    Sampled,
    /// On for the whole session: every run timed, at two clock reads per
    /// run of every eBPF program on the host.
    Always,
}

/// Where the CPU time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostSource {
    /// The kernel's per-program statistics, every run.
    Kernel,
    /// The kernel's statistics in a window per interval, calls × the
    /// window's cost per call between windows.
    KernelSampled,
    /// Calls × [`ESTIMATED_NS_PER_ALLOCATE`] / [`ESTIMATED_NS_PER_RELEASE`].
    Estimate,
}

impl CostSource {
    /// How a person is told where the numbers come from.
    pub fn describe(self) -> &'static str {
        match self {
            CostSource::Kernel => "kernel statistics",
            CostSource::KernelSampled => "kernel statistics, sampled",
            CostSource::Estimate => "ESTIMATE: kernel statistics unavailable",
        }
    }
}

/// One program's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramStats {
    pub program: String,
    /// Runs timed since it was loaded (only while statistics were on).
    pub runs: u64,
    /// CPU time of those runs, nanoseconds.
    pub run_time_ns: u64,
}

/// One reading of the counters and the programs' CPU time.
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
    /// CPU time of the programs since attach, nanoseconds (with sampled
    /// statistics: measured in the windows, estimated between them).
    pub cpu_ns: u64,
    /// The part of `cpu_ns` the kernel measured.
    pub measured_cpu_ns: u64,
    /// Over the last interval: probe hits per second.
    pub hits_per_sec: f64,
    /// Over the last interval: the programs' CPU time as a percentage of
    /// one CPU.
    pub cpu_percent: f64,
    /// Length of that interval, seconds (0 before the second reading).
    pub interval_secs: f64,
    /// Per program, the kernel's statistics (runs timed and their time).
    pub programs: Vec<ProgramStats>,
    /// Kernel memory charged to the observer's maps and programs now
    /// (the `memlock` the kernel accounts to each of their descriptors).
    pub kernel_memory_bytes: u64,
}

impl Cost {
    /// One line for people: `0.42% of one CPU (kernel statistics), 1234 probe hits/s`.
    pub fn describe(&self) -> String {
        format!(
            "{:.3}% of one CPU over the last {:.1}s ({}), {:.0} probe hits/s, {:.3}s of CPU in all, {:.1} MiB of kernel memory",
            self.cpu_percent,
            self.interval_secs,
            self.source.describe(),
            self.hits_per_sec,
            self.cpu_ns as f64 / 1e9,
            self.kernel_memory_bytes as f64 / (1024.0 * 1024.0)
        )
    }
}

/// Allocate and release calls, from the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Calls {
    allocate: u64,
    release: u64,
}

impl Calls {
    fn of(counters: &Counters) -> Self {
        Self {
            allocate: counters[counter::ALLOC_CALLS],
            release: counters[counter::RELEASE_CALLS],
        }
    }

    fn since(self, earlier: Calls) -> Calls {
        Calls {
            allocate: self.allocate.saturating_sub(earlier.allocate),
            release: self.release.saturating_sub(earlier.release),
        }
    }
}

/// The programs' CPU time as the kernel counts it, split into what serves
/// releases (the release entry) and everything else, charged to allocate
/// calls (their entry with its walk, their return, and the few runs of the
/// tracepoints and other probes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ProgramTime {
    allocate_ns: u64,
    release_ns: u64,
}

impl ProgramTime {
    fn of(programs: &[ProgramStats]) -> Self {
        programs.iter().fold(Self::default(), |mut time, program| {
            if program.program == names::PROG_RELEASE_ENTER {
                time.release_ns += program.run_time_ns;
            } else {
                time.allocate_ns += program.run_time_ns;
            }
            time
        })
    }

    fn since(self, earlier: ProgramTime) -> ProgramTime {
        ProgramTime {
            allocate_ns: self.allocate_ns.saturating_sub(earlier.allocate_ns),
            release_ns: self.release_ns.saturating_sub(earlier.release_ns),
        }
    }

    fn total(self) -> u64 {
        self.allocate_ns + self.release_ns
    }
}

/// CPU time per call, nanoseconds: what the time between windows is
/// estimated from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PerCall {
    allocate_ns: f64,
    release_ns: f64,
}

impl PerCall {
    const BUILT_IN: PerCall = PerCall {
        allocate_ns: ESTIMATED_NS_PER_ALLOCATE as f64,
        release_ns: ESTIMATED_NS_PER_RELEASE as f64,
    };

    fn cost_of(self, calls: Calls) -> u64 {
        (calls.allocate as f64 * self.allocate_ns + calls.release as f64 * self.release_ns).round()
            as u64
    }

    /// The cost per call a window measured: its own where it saw at least
    /// [`MIN_CALLS`] calls of that kind, weighed against the previous one
    /// (as [`MIN_CALLS`] calls) where it saw fewer, the previous one where
    /// it saw none. A few calls alone (the first, cold ones) would make the
    /// estimate between windows whatever they happened to cost.
    fn learned(self, time: ProgramTime, calls: Calls) -> PerCall {
        let per = |ns: u64, n: u64, before: f64| match n {
            0 => before,
            n if n >= MIN_CALLS => ns as f64 / n as f64,
            n => (before * MIN_CALLS as f64 + ns as f64) / (MIN_CALLS + n) as f64,
        };
        PerCall {
            allocate_ns: per(time.allocate_ns, calls.allocate, self.allocate_ns),
            release_ns: per(time.release_ns, calls.release, self.release_ns),
        }
    }
}

/// An open statistics window: the counts and times when it opened.
#[derive(Debug, Clone, Copy)]
struct Window {
    calls: Calls,
    time: ProgramTime,
    opened_ns: u64,
}

/// The CPU time accounted for up to the moment the counters said `calls`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Ledger {
    calls: Calls,
    cpu_ns: u64,
    measured_ns: u64,
}

impl Ledger {
    /// Adds the time up to `calls` estimated at `per_call`.
    fn estimated_to(self, calls: Calls, per_call: PerCall) -> Ledger {
        Ledger {
            calls,
            cpu_ns: self.cpu_ns + per_call.cost_of(calls.since(self.calls)),
            measured_ns: self.measured_ns,
        }
    }

    /// Adds the time a window measured, up to `calls`.
    fn measured_to(self, calls: Calls, measured: ProgramTime) -> Ledger {
        Ledger {
            calls,
            cpu_ns: self.cpu_ns + measured.total(),
            measured_ns: self.measured_ns + measured.total(),
        }
    }
}

/// Reads the cost at each interval, and keeps the kernel's statistics on
/// as [`CostStatistics`] says.
pub struct CostMeter {
    source: CostSource,
    /// Keeps `BPF_ENABLE_STATS` in force (always, or during a window);
    /// closed on drop.
    stats: Option<OwnedFd>,
    window: Option<Window>,
    per_call: PerCall,
    /// Allocate calls the windows have seen in all: `per_call` is
    /// learned once they are [`MIN_CALLS`].
    calls_seen: u64,
    ledger: Ledger,
    last: Option<Reading>,
    latest: Option<Cost>,
}

/// What the session does next with sampled statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStep {
    /// [`CostMeter::open_window`].
    Open,
    /// [`CostMeter::check_window`].
    Check,
}

impl CostMeter {
    /// Starts metering as `statistics` asks, where the kernel lets us:
    /// statistics already on for the whole host are simply read; where
    /// `BPF_ENABLE_STATS` is refused, the cost is estimated.
    pub fn start(statistics: CostStatistics) -> Self {
        let enabled = || aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
        let (stats, source) = if sysctl_stats_enabled() {
            (None, CostSource::Kernel)
        } else {
            match (statistics, enabled()) {
                (CostStatistics::Always, Some(fd)) => (Some(fd), CostSource::Kernel),
                // Allowed: windows will open it again; closed until then.
                (CostStatistics::Sampled, Some(_)) => (None, CostSource::KernelSampled),
                (_, None) => (None, CostSource::Estimate),
            }
        };
        Self {
            source,
            stats,
            window: None,
            per_call: PerCall::BUILT_IN,
            calls_seen: 0,
            ledger: Ledger::default(),
            last: None,
            latest: None,
        }
    }

    pub fn source(&self) -> CostSource {
        self.source
    }

    /// How long a window lasts: a tenth of the interval, at most
    /// [`MAX_WINDOW`].
    fn window_length(interval: Duration) -> Duration {
        (interval / 10).min(MAX_WINDOW)
    }

    /// True once the windows have seen enough calls to estimate from.
    fn learned(&self) -> bool {
        self.calls_seen >= MIN_CALLS
    }

    /// After a tick (which closed any window): when to open the next
    /// window, from now. Learning windows open at once (see
    /// [`MIN_CALLS`]); later ones end at the next tick, which reads them.
    /// None unless statistics are sampled.
    pub fn after_tick(&self, interval: Duration) -> Option<(Duration, WindowStep)> {
        if self.source != CostSource::KernelSampled {
            return None;
        }
        Some(match self.learned() {
            true => (interval - Self::window_length(interval), WindowStep::Open),
            false => (Duration::ZERO, WindowStep::Open),
        })
    }

    /// After a window opened or was checked: when to check it next, from
    /// now (a learning window only).
    pub fn next_check(&self) -> Option<(Duration, WindowStep)> {
        (self.window.is_some() && !self.learned()).then_some((LEARNING_CHECK, WindowStep::Check))
    }

    /// Closes a learning window that has seen [`MIN_CALLS`] allocate calls
    /// or lasted a normal window's length (`counters`: the counts now).
    pub fn check_window(&mut self, ebpf: &Ebpf, counters: &Counters, interval: Duration) {
        let Some(window) = self.window.filter(|_| !self.learned()) else {
            return;
        };
        let seen = Calls::of(counters).since(window.calls).allocate;
        let open_ns = monotonic_ns().saturating_sub(window.opened_ns);
        if self.calls_seen + seen >= MIN_CALLS
            || open_ns >= Self::window_length(interval).as_nanos() as u64
        {
            self.close_window_with(counters, &program_stats(ebpf));
        }
    }

    /// Opens a statistics window now (`counters`: the counts now): the
    /// time since the last reading is estimated, the window's will be
    /// measured. Nothing happens when statistics are not sampled or a
    /// window is open; a refusal now leaves the estimate running.
    pub fn open_window(&mut self, ebpf: &Ebpf, counters: &Counters) {
        if self.source != CostSource::KernelSampled || self.window.is_some() {
            return;
        }
        let calls = Calls::of(counters);
        self.ledger = self.ledger.estimated_to(calls, self.per_call);
        let Ok(fd) = aya::sys::enable_stats(aya::sys::Stats::RunTime) else {
            return;
        };
        self.stats = Some(fd);
        self.window = Some(Window {
            calls,
            time: ProgramTime::of(&program_stats(ebpf)),
            opened_ns: monotonic_ns(),
        });
    }

    /// Reads the programs' statistics and `counters` now, and returns the
    /// cost since the previous reading, which this one becomes. Closes an
    /// open window, learning its cost per call.
    pub fn read(&mut self, ebpf: &Ebpf, counters: &Counters) -> Result<Cost> {
        let programs = self.program_stats(ebpf);
        self.close_window_with(counters, &programs);
        let (now, cost) = self.cost_now(ebpf, counters, programs);
        if self.source != CostSource::Kernel {
            self.ledger = self.ledger.estimated_to(Calls::of(counters), self.per_call);
        }
        self.last = Some(now);
        self.latest = Some(cost.clone());
        Ok(cost)
    }

    fn close_window_with(&mut self, counters: &Counters, programs: &[ProgramStats]) {
        let Some(window) = self.window.take() else {
            return;
        };
        let calls = Calls::of(counters);
        let measured = ProgramTime::of(programs).since(window.time);
        let seen = calls.since(window.calls);
        self.per_call = self.per_call.learned(measured, seen);
        self.calls_seen += seen.allocate;
        self.ledger = self.ledger.measured_to(calls, measured);
        self.stats = None;
    }

    /// The cost now — totals as of `counters`, rates over the time since
    /// the last periodic reading — without becoming a reading: what a
    /// report says, however long ago the last interval ended.
    pub fn peek(&self, ebpf: &Ebpf, counters: &Counters) -> Cost {
        self.cost_now(ebpf, counters, self.program_stats(ebpf)).1
    }

    /// A reading now, and the cost it gives over the last reading, with
    /// the kernel memory held now.
    fn cost_now(
        &self,
        ebpf: &Ebpf,
        counters: &Counters,
        programs: Vec<ProgramStats>,
    ) -> (Reading, Cost) {
        let ledger = self.ledger_now(counters, &programs);
        let now = Reading {
            taken_ns: monotonic_ns(),
            hits: probe_hits(counters),
            cpu_ns: ledger.cpu_ns,
        };
        let cost = Cost {
            measured_cpu_ns: ledger.measured_ns,
            kernel_memory_bytes: kernel_memory(ebpf),
            ..cost_between(self.source, self.last.as_ref(), &now, programs)
        };
        (now, cost)
    }

    /// The ledger brought up to `counters`: every run measured when
    /// statistics are always on; else measured within an open window and
    /// estimated since the ledger's last entry outside one.
    fn ledger_now(&self, counters: &Counters, programs: &[ProgramStats]) -> Ledger {
        let calls = Calls::of(counters);
        let time = ProgramTime::of(programs);
        match (self.source, self.window) {
            (CostSource::Kernel, _) => Ledger {
                calls,
                cpu_ns: time.total(),
                measured_ns: time.total(),
            },
            (_, Some(window)) => self.ledger.measured_to(calls, time.since(window.time)),
            (_, None) => self.ledger.estimated_to(calls, self.per_call),
        }
    }

    fn program_stats(&self, ebpf: &Ebpf) -> Vec<ProgramStats> {
        match self.source {
            CostSource::Estimate => Vec::new(),
            _ => program_stats(ebpf),
        }
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
        measured_cpu_ns: 0,
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

    fn calls(allocate: u64, release: u64) -> Calls {
        Calls { allocate, release }
    }

    fn program(name: &str, run_time_ns: u64) -> ProgramStats {
        ProgramStats {
            program: name.to_string(),
            runs: 1,
            run_time_ns,
        }
    }

    #[test]
    fn estimates_count_calls() {
        let mut counters = Counters::default();
        counters[counter::ALLOC_CALLS] = 10;
        counters[counter::RELEASE_CALLS] = 4;
        assert_eq!(probe_hits(&counters), 24);
        assert_eq!(
            Ledger::default()
                .estimated_to(Calls::of(&counters), PerCall::BUILT_IN)
                .cpu_ns,
            10 * ESTIMATED_NS_PER_ALLOCATE + 4 * ESTIMATED_NS_PER_RELEASE
        );
        let estimate = Cost {
            source: CostSource::Estimate,
            probe_hits: 0,
            cpu_ns: 0,
            measured_cpu_ns: 0,
            hits_per_sec: 0.0,
            cpu_percent: 0.0,
            interval_secs: 0.0,
            programs: Vec::new(),
            kernel_memory_bytes: 3 << 20,
        };
        assert!(estimate.describe().contains("ESTIMATE"));
        assert!(estimate.describe().ends_with("3.0 MiB of kernel memory"));
    }

    #[test]
    fn release_programs_are_told_from_the_rest() {
        let time = ProgramTime::of(&[
            program(names::PROG_ALLOC_ENTER, 700),
            program(names::PROG_ALLOC_RETURN, 300),
            program(names::PROG_RELEASE_ENTER, 250),
            program("pool_thread_exit", 5),
        ]);
        assert_eq!((time.allocate_ns, time.release_ns), (1_005, 250));
        assert_eq!(time.total(), 1_255);
    }

    /// A sampled session: estimated before the window with the built-in
    /// cost, measured in it, and estimated after it at the window's cost
    /// per call — not the built-in one.
    #[test]
    fn windows_measure_and_teach_the_estimate_between_them() {
        let ledger = Ledger::default().estimated_to(calls(100, 50), PerCall::BUILT_IN);
        assert_eq!(ledger.cpu_ns, PerCall::BUILT_IN.cost_of(calls(100, 50)));
        assert_eq!(ledger.measured_ns, 0);
        // The window saw 1000 allocates and 400 releases take 2 ms and 0.2 ms.
        let measured = ProgramTime {
            allocate_ns: 2_000_000,
            release_ns: 200_000,
        };
        let in_window = calls(1_100, 450).since(ledger.calls);
        assert_eq!(in_window, calls(1_000, 400));
        let per_call = PerCall::BUILT_IN.learned(measured, in_window);
        assert_eq!(per_call.allocate_ns, 2_000.0);
        assert_eq!(per_call.release_ns, 500.0);
        let ledger = ledger.measured_to(calls(1_100, 450), measured);
        assert_eq!(ledger.measured_ns, 2_200_000);
        let after = ledger.estimated_to(calls(2_100, 1_450), per_call);
        assert_eq!(after.cpu_ns - ledger.cpu_ns, 1_000 * 2_000 + 1_000 * 500);
        assert_eq!(after.measured_ns, 2_200_000);
    }

    /// A window without calls of a kind keeps that kind's cost per call.
    #[test]
    fn an_idle_window_keeps_the_cost_per_call() {
        let known = PerCall {
            allocate_ns: 1_500.0,
            release_ns: 600.0,
        };
        let idle = known.learned(
            ProgramTime {
                allocate_ns: 40,
                release_ns: 0,
            },
            calls(0, 0),
        );
        assert_eq!(idle, known);
    }

    fn meter(source: CostSource, calls_seen: u64, window_open: bool) -> CostMeter {
        CostMeter {
            source,
            stats: None,
            window: window_open.then_some(Window {
                calls: Calls::default(),
                time: ProgramTime::default(),
                opened_ns: monotonic_ns(),
            }),
            per_call: PerCall::BUILT_IN,
            calls_seen,
            ledger: Ledger::default(),
            last: None,
            latest: None,
        }
    }

    /// Windows end at a tick, a tenth of the interval long (at most a
    /// second), once a cost per call is learned; until then they open at
    /// once and are checked until they have seen enough calls.
    #[test]
    fn windows_are_scheduled_from_ticks() {
        let five = Duration::from_secs(5);
        let sampled = meter(CostSource::KernelSampled, MIN_CALLS, false);
        assert_eq!(
            sampled.after_tick(five),
            Some((Duration::from_millis(4_500), WindowStep::Open))
        );
        assert_eq!(
            sampled.after_tick(Duration::from_secs(60)),
            Some((Duration::from_secs(59), WindowStep::Open))
        );
        assert_eq!(
            meter(CostSource::KernelSampled, MIN_CALLS, true).next_check(),
            None
        );
        let learning = meter(CostSource::KernelSampled, MIN_CALLS - 1, false);
        assert_eq!(
            learning.after_tick(five),
            Some((Duration::ZERO, WindowStep::Open))
        );
        assert_eq!(
            meter(CostSource::KernelSampled, 0, true).next_check(),
            Some((LEARNING_CHECK, WindowStep::Check))
        );
        for source in [CostSource::Kernel, CostSource::Estimate] {
            assert_eq!(meter(source, 0, false).after_tick(five), None);
        }
    }

    /// A few calls move the estimate only as much as they weigh.
    #[test]
    fn a_window_of_few_calls_is_weighed_against_the_previous_cost() {
        let known = PerCall {
            allocate_ns: 1_000.0,
            release_ns: 500.0,
        };
        let few = known.learned(
            ProgramTime {
                allocate_ns: 16 * 21_000,
                release_ns: 0,
            },
            calls(16, 0),
        );
        assert_eq!(few.allocate_ns, (64.0 * 1_000.0 + 16.0 * 21_000.0) / 80.0);
        assert_eq!(few.release_ns, 500.0);
    }
}
