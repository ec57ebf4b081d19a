//! Stage 4 — snapshot the kernel's maps: counters, per-site aggregates,
//! the ages of live buffers and the stacks of the sites.
//!
//! Reading is all this stage does; the kernel keeps aggregating while we
//! read, so a snapshot of a busy process is a few microseconds wide.

mod batch;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use aya::Ebpf;
use observer_ebpf::{
    counter, names, stack_flags, CounterInfo, CounterKind, LiveBuf, LiveKey, SiteKey, SiteStats,
    StackRecord, ThreadState, ALLOC_CALL_OUTCOMES, COUNTERS, NO_STACK,
};
use serde::Serialize;

/// The counters of [`observer_ebpf::COUNTERS`], summed over CPUs; index
/// with the `observer_ebpf::counter` constants. Serialized as an object
/// keyed by each counter's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    values: [u64; counter::COUNT as usize],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            values: [0; counter::COUNT as usize],
        }
    }
}

impl std::ops::Index<u32> for Counters {
    type Output = u64;

    fn index(&self, index: u32) -> &u64 {
        &self.values[index as usize]
    }
}

impl std::ops::IndexMut<u32> for Counters {
    fn index_mut(&mut self, index: u32) -> &mut u64 {
        &mut self.values[index as usize]
    }
}

impl Counters {
    /// Every counter with its description, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static CounterInfo, u64)> + '_ {
        COUNTERS.iter().map(|info| (info, self[info.index]))
    }

    /// Events the kernel side could not record fully, all kinds together.
    pub fn not_recorded(&self) -> u64 {
        self.iter()
            .filter(|(info, _)| info.kind == CounterKind::Lost)
            .map(|(_, value)| value)
            .sum()
    }

    /// The allocate calls no outcome accounts for: 0 whenever the counters
    /// were read while the target was quiet (each call ends in exactly
    /// one of [`ALLOC_CALL_OUTCOMES`]).
    pub fn unaccounted_alloc_calls(&self) -> i64 {
        let outcomes: u64 = ALLOC_CALL_OUTCOMES.iter().map(|&i| self[i]).sum();
        self[counter::ALLOC_CALLS] as i64 - outcomes as i64
    }
}

impl Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(COUNTERS.len()))?;
        for (info, value) in self.iter() {
            map.serialize_entry(info.name, &value)?;
        }
        map.end()
    }
}

/// An interned user stack and how its walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedStack {
    /// Innermost first.
    pub frames: Vec<u64>,
    pub ending: StackEnding,
}

/// How a stack walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackEnding {
    /// Reached the thread's or process's entry point.
    Complete,
    /// Cut at the maximum depth.
    Truncated,
    /// Stopped early: no unwind information and no frame pointer, or
    /// unreadable stack memory.
    Broken,
}

impl StackEnding {
    fn of(flags: u32) -> Self {
        if flags & stack_flags::BROKEN != 0 {
            Self::Broken
        } else if flags & stack_flags::TRUNCATED != 0 {
            Self::Truncated
        } else {
            Self::Complete
        }
    }
}

/// Ages of the live buffers of one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveAges {
    pub count: u64,
    pub oldest_ns: u64,
    pub newest_ns: u64,
    /// Buffers (and their bytes) allocated before the `older_than` cut-off
    /// the snapshot was taken with; all of them without a cut-off.
    pub old_count: u64,
    pub old_bytes: u64,
}

/// One reading of the maps.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC when the snapshot was taken (the clock of
    /// `bpf_ktime_get_ns`).
    pub taken_ns: u64,
    pub counters: Counters,
    pub sites: BTreeMap<SiteKey, SiteStats>,
    /// Per-site ages; empty for a quick (status-line) snapshot.
    pub ages: BTreeMap<SiteKey, LiveAges>,
    /// User stacks by stack id; empty for a quick snapshot.
    pub stacks: BTreeMap<u64, WalkedStack>,
}

impl Snapshot {
    /// Counters and per-site aggregates only: cheap whatever the number of
    /// live buffers.
    pub fn quick(ebpf: &Ebpf) -> Result<Self> {
        Ok(Self {
            taken_ns: monotonic_ns(),
            counters: read_counters(ebpf)?,
            sites: read_sites(ebpf)?,
            ..Self::default()
        })
    }

    /// Everything a report needs: also walks the live table for ages (one
    /// syscall pair per live buffer) and reads the sites' stacks. Buffers
    /// younger than `older_than_ns` are counted apart (`LiveAges::old_*`).
    /// `tgid` is the target's process ID as the programs record it
    /// ([`crate::attach::Attachment::kernel_tgid`]).
    pub fn full(ebpf: &Ebpf, tgid: u32, older_than_ns: Option<u64>) -> Result<Self> {
        let mut snapshot = Self::quick(ebpf)?;
        let cutoff = snapshot.taken_ns.saturating_sub(older_than_ns.unwrap_or(0));
        snapshot.ages = read_ages(ebpf, tgid, cutoff)?;
        snapshot.stacks = read_stacks(ebpf, snapshot.sites.keys())?;
        Ok(snapshot)
    }

    /// Sum of outstanding buffers and bytes over all sites.
    pub fn outstanding(&self) -> (i64, i64) {
        self.sites.values().fold((0, 0), |(n, b), s| {
            (n + s.outstanding_buffers, b + s.outstanding_bytes)
        })
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn map<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::maps::Map> {
    ebpf.map(name)
        .with_context(|| format!("eBPF object has no map {name}"))
}

/// The counters summed over CPUs.
pub fn read_counters(ebpf: &Ebpf) -> Result<Counters> {
    let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, names::MAP_COUNTERS)?)?;
    let mut counters = Counters::default();
    for info in &COUNTERS {
        let per_cpu = array
            .get(&info.index, 0)
            .with_context(|| format!("reading counter {}", info.name))?;
        counters[info.index] = per_cpu.iter().sum();
    }
    counters[counter::IN_FLIGHT] = in_flight_calls(ebpf)?;
    Ok(counters)
}

/// Allocate calls entered and not yet returned, over all threads.
fn in_flight_calls(ebpf: &Ebpf) -> Result<u64> {
    let threads: HashMap<&MapData, u64, ThreadState> =
        HashMap::try_from(map(ebpf, names::MAP_PENDING)?)?;
    Ok(collect_live_map(threads.iter())?
        .iter()
        .map(|(_, state)| u64::from(state.depth))
        .sum())
}

fn read_sites(ebpf: &Ebpf) -> Result<BTreeMap<SiteKey, SiteStats>> {
    let sites: HashMap<&MapData, SiteKey, SiteStats> =
        HashMap::try_from(map(ebpf, names::MAP_SITES)?)?;
    Ok(collect_live_map(sites.iter())?.into_iter().collect())
}

/// Per-site ages; buffers allocated at or before `cutoff_ns` count as old.
///
/// The live map can hold millions of entries: it is read in batches
/// (a few system calls in all), and folded into per-site ages as it is
/// read, never copied whole.
fn read_ages(ebpf: &Ebpf, tgid: u32, cutoff_ns: u64) -> Result<BTreeMap<SiteKey, LiveAges>> {
    let live = map(ebpf, names::MAP_LIVE)?;
    let mut ages: BTreeMap<SiteKey, LiveAges> = BTreeMap::new();
    let mut add = |key: &LiveKey, buf: &LiveBuf| {
        if key.tgid == tgid {
            add_age(&mut ages, buf, cutoff_ns);
        }
    };
    if batch::for_each_entry(live, &mut add).is_err() {
        // No batch lookup here (Linux < 5.6): key by key.
        let live: HashMap<&MapData, LiveKey, LiveBuf> = HashMap::try_from(live)?;
        for entry in live.iter() {
            match entry {
                Ok((key, buf)) => add(&key, &buf),
                Err(MapError::KeyNotFound) => continue,
                Err(err) => return Err(err).context("reading the live-buffer map"),
            }
        }
    }
    Ok(ages)
}

/// Counts one live buffer into its site's ages.
fn add_age(ages: &mut BTreeMap<SiteKey, LiveAges>, buf: &LiveBuf, cutoff_ns: u64) {
    let site = ages.entry(buf.site).or_insert(LiveAges {
        count: 0,
        oldest_ns: u64::MAX,
        newest_ns: 0,
        old_count: 0,
        old_bytes: 0,
    });
    site.count += 1;
    site.oldest_ns = site.oldest_ns.min(buf.allocated_ns);
    site.newest_ns = site.newest_ns.max(buf.allocated_ns);
    if buf.allocated_ns <= cutoff_ns {
        site.old_count += 1;
        site.old_bytes += buf.size;
    }
}

/// The user stacks of `sites`, by stack id.
pub fn read_stacks<'a>(
    ebpf: &Ebpf,
    sites: impl Iterator<Item = &'a SiteKey>,
) -> Result<BTreeMap<u64, WalkedStack>> {
    let stacks: HashMap<&MapData, u64, StackRecord> =
        HashMap::try_from(map(ebpf, names::MAP_STACKS)?)?;
    let mut out = BTreeMap::new();
    for site in sites {
        if site.stack_id == NO_STACK || out.contains_key(&site.stack_id) {
            continue;
        }
        match stacks.get(&site.stack_id, 0) {
            Ok(record) => {
                let len = (record.len as usize).min(record.frames.len());
                out.insert(
                    site.stack_id,
                    WalkedStack {
                        frames: record.frames[..len].to_vec(),
                        ending: StackEnding::of(record.flags),
                    },
                );
            }
            Err(MapError::KeyNotFound) => {}
            Err(err) => return Err(err).context("reading a stack"),
        }
    }
    Ok(out)
}

/// Collects a hash map that the kernel keeps changing: an element deleted
/// between "next key" and "lookup" is skipped, not an error.
fn collect_live_map<K, V>(
    entries: impl Iterator<Item = Result<(K, V), MapError>>,
) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for entry in entries {
        match entry {
            Ok(pair) => out.push(pair),
            Err(MapError::KeyNotFound) => continue,
            Err(err) => return Err(err).context("reading a map"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_documented_in_the_report_format() {
        let doc = include_str!("../../../docs/report-format.md");
        for info in &COUNTERS {
            assert!(
                doc.contains(&format!("| `{}` |", info.name)),
                "docs/report-format.md does not document the counter `{}`",
                info.name
            );
        }
    }

    #[test]
    fn the_outcomes_of_an_allocate_call_add_up() {
        let mut counters = Counters::default();
        counters[counter::ALLOC_CALLS] = 10;
        counters[counter::ALLOCATIONS] = 6;
        counters[counter::ALLOC_UNWOUND] = 3;
        assert_eq!(counters.unaccounted_alloc_calls(), 1);
        counters[counter::IN_FLIGHT] = 1;
        assert_eq!(counters.unaccounted_alloc_calls(), 0);
    }
}
