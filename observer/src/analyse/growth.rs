//! Outstanding over time: a bounded history of the kernel's per-site
//! aggregates, growth rates by least squares, and a classification a person
//! can act on (steady growth, spike, stable).

use std::collections::{BTreeMap, VecDeque};

use observer_ebpf::SiteKey;
use serde::Serialize;

use crate::snapshot::Snapshot;

/// Samples kept; at the default 5 s interval, about 85 minutes.
pub const HISTORY_CAPACITY: usize = 1024;

/// One sample: when, and each site's outstanding (buffers, bytes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    pub taken_ns: u64,
    pub sites: BTreeMap<SiteKey, (i64, i64)>,
    /// Each site's allocations since attach (buffers, bytes): what a pprof
    /// profile of a mark reports as `alloc_objects` / `alloc_space`.
    pub allocated: BTreeMap<SiteKey, (u64, u64)>,
}

impl Sample {
    pub fn of(snapshot: &Snapshot) -> Self {
        Self {
            taken_ns: snapshot.taken_ns,
            sites: snapshot
                .sites
                .iter()
                .map(|(key, stats)| (*key, (stats.outstanding_buffers, stats.outstanding_bytes)))
                .collect(),
            allocated: snapshot
                .sites
                .iter()
                .map(|(key, stats)| (*key, (stats.total_allocations, stats.total_bytes)))
                .collect(),
        }
    }

    /// Sum over `keys` (a grouped site's kernel stacks).
    pub fn total_of<'a>(&self, keys: impl Iterator<Item = &'a SiteKey>) -> (i64, i64) {
        keys.filter_map(|key| self.sites.get(key))
            .fold((0, 0), |(n, b), (dn, db)| (n + dn, b + db))
    }

    pub fn total(&self) -> (i64, i64) {
        self.total_of(self.sites.keys())
    }
}

/// Bounded history of samples, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == HISTORY_CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The series (seconds since the first sample, buffers, bytes) of the
    /// kernel stacks `keys` taken together.
    pub fn series(&self, keys: &[SiteKey]) -> Vec<Point> {
        let Some(start) = self.samples.front().map(|s| s.taken_ns) else {
            return Vec::new();
        };
        self.samples
            .iter()
            .map(|sample| {
                let (buffers, bytes) = sample.total_of(keys.iter());
                Point {
                    secs: sample.taken_ns.saturating_sub(start) as f64 / 1e9,
                    buffers: buffers as f64,
                    bytes: bytes as f64,
                }
            })
            .collect()
    }
}

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub secs: f64,
    pub buffers: f64,
    pub bytes: f64,
}

/// What the outstanding count of a site has been doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trend {
    /// Too few samples to say (fewer than three).
    Unknown,
    /// Flat, or moving within noise.
    Stable,
    /// Rising, and still near its highest at the end: a leak's signature.
    SteadyGrowth,
    /// Rose, then fell back by at least half of the rise.
    Spike,
}

impl Trend {
    pub fn describe(self) -> &'static str {
        match self {
            Trend::Unknown => "not enough history",
            Trend::Stable => "stable",
            Trend::SteadyGrowth => "steady growth",
            Trend::Spike => "spike",
        }
    }
}

/// Growth of one site over the history window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Growth {
    pub trend: Trend,
    /// Least-squares slope, per minute.
    pub buffers_per_min: f64,
    pub bytes_per_min: f64,
    pub samples: usize,
    pub window_secs: f64,
}

/// Classifies a series and measures its slope.
///
/// The rules, on buffer counts: a series whose range stays within noise
/// (2 buffers or 10 % of its peak, whichever is larger) is stable; one
/// with a positive slope whose net rise is at least half its range is
/// steady growth; one that fell back from its peak by at least half of its
/// rise is a spike; anything else is stable.
pub fn growth(series: &[Point]) -> Growth {
    let window_secs =
        series.last().map_or(0.0, |p| p.secs) - series.first().map_or(0.0, |p| p.secs);
    let buffers_per_min = slope(series, |p| p.buffers) * 60.0;
    let bytes_per_min = slope(series, |p| p.bytes) * 60.0;
    Growth {
        trend: classify(series, buffers_per_min),
        buffers_per_min,
        bytes_per_min,
        samples: series.len(),
        window_secs,
    }
}

fn classify(series: &[Point], slope: f64) -> Trend {
    if series.len() < 3 {
        return Trend::Unknown;
    }
    let values: Vec<f64> = series.iter().map(|p| p.buffers).collect();
    let first = values[0];
    let last = values[values.len() - 1];
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let range = max - min;
    let noise = (0.1 * max.abs()).max(2.0);
    if range <= noise {
        return Trend::Stable;
    }
    if slope > 0.0 && last - first >= 0.5 * range {
        return Trend::SteadyGrowth;
    }
    if max > first && max - last >= 0.5 * (max - first) {
        return Trend::Spike;
    }
    Trend::Stable
}

/// Least-squares slope of `value` over `secs` (per second); 0 when it is
/// undefined.
fn slope(series: &[Point], value: impl Fn(&Point) -> f64) -> f64 {
    let n = series.len() as f64;
    if series.len() < 2 {
        return 0.0;
    }
    let mean_x = series.iter().map(|p| p.secs).sum::<f64>() / n;
    let mean_y = series.iter().map(&value).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for point in series {
        let dx = point.secs - mean_x;
        covariance += dx * (value(point) - mean_y);
        variance += dx * dx;
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| Point {
                secs: i as f64 * 5.0,
                buffers: v,
                bytes: v * 256.0,
            })
            .collect()
    }

    #[test]
    fn steady_leak_is_growth_with_its_rate() {
        let g = growth(&series(&[0.0, 10.0, 20.0, 30.0, 40.0, 50.0]));
        assert_eq!(g.trend, Trend::SteadyGrowth);
        assert!((g.buffers_per_min - 120.0).abs() < 1e-9, "{g:?}");
        assert!((g.bytes_per_min - 120.0 * 256.0).abs() < 1e-6);
        assert_eq!(g.window_secs, 25.0);
    }

    #[test]
    fn noisy_growth_is_still_growth() {
        let g = growth(&series(&[0.0, 12.0, 9.0, 25.0, 22.0, 38.0, 35.0, 50.0]));
        assert_eq!(g.trend, Trend::SteadyGrowth);
    }

    #[test]
    fn rise_and_fall_is_a_spike() {
        let g = growth(&series(&[0.0, 50.0, 100.0, 60.0, 10.0, 0.0]));
        assert_eq!(g.trend, Trend::Spike);
        let g = growth(&series(&[5.0, 5.0, 80.0, 30.0]));
        assert_eq!(g.trend, Trend::Spike);
    }

    #[test]
    fn in_flight_jitter_is_stable() {
        assert_eq!(
            growth(&series(&[0.0, 1.0, 0.0, 2.0, 0.0, 1.0])).trend,
            Trend::Stable
        );
        assert_eq!(
            growth(&series(&[500.0, 520.0, 490.0, 510.0])).trend,
            Trend::Stable
        );
        assert_eq!(growth(&series(&[0.0, 0.0, 0.0])).trend, Trend::Stable);
    }

    #[test]
    fn growth_that_stopped_reads_as_growth_until_it_falls_back() {
        // Buffers that never come back are the point, even if the leak
        // stopped for a while; falling back by half is a spike.
        assert_eq!(
            growth(&series(&[0.0, 100.0, 100.0, 100.0])).trend,
            Trend::SteadyGrowth
        );
        assert_eq!(
            growth(&series(&[0.0, 100.0, 100.0, 40.0])).trend,
            Trend::Spike
        );
    }

    #[test]
    fn too_short_is_unknown() {
        assert_eq!(growth(&series(&[0.0, 10.0])).trend, Trend::Unknown);
        assert_eq!(growth(&[]).samples, 0);
    }

    #[test]
    fn history_is_bounded_and_sums_keys() {
        let mut history = History::default();
        let key = |stack_id| SiteKey {
            stack_id,
            probe: 0,
            _pad: 0,
        };
        for i in 0..HISTORY_CAPACITY + 10 {
            let sites = [(key(1), (i as i64, 256 * i as i64)), (key(2), (1, 64))]
                .into_iter()
                .collect();
            history.push(Sample {
                taken_ns: i as u64 * 1_000_000_000,
                sites,
                ..Sample::default()
            });
        }
        assert_eq!(history.len(), HISTORY_CAPACITY);
        let points = history.series(&[key(1), key(2)]);
        assert_eq!(points[0].buffers, 11.0);
        assert_eq!(points[0].secs, 0.0);
        assert_eq!(points[1].secs, 1.0);
    }
}
