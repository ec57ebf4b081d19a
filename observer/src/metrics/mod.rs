//! The Prometheus endpoint (`--metrics ADDR`): OpenMetrics text at
//! `/metrics`, built with prometheus-client from what the session reads at
//! each scrape. [`server`] serves it over HTTP: OpenMetrics to clients that
//! ask for it (Prometheus does), the classic text format (0.0.4) to the
//! others (curl, `promtool check metrics`), as Prometheus's own client
//! libraries do.
//!
//! Series are bounded whatever the target does: sites are labelled by a
//! stable id and a short human label (never a stack), and only the top
//! [`TOP_SITES`] by outstanding bytes get their own series; the rest are
//! summed under `site="other"`. The kernel's counters come from the one
//! table that declares them (`observer_ebpf::COUNTERS`).

pub mod server;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicI64, AtomicU64};

use crate::analyse::live::LiveSite;
use crate::cost::{Cost, CostSource};
use crate::snapshot::Counters;
use observer_ebpf::CounterKind;

/// Sites with series of their own; the others are summed as `other`.
pub const TOP_SITES: usize = 20;

/// The content type of what [`exposition`] renders.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of what [`classic_text`] renders.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition in the classic Prometheus text format: the same samples,
/// without OpenMetrics' `# UNIT` and `# EOF` lines, and with a counter's
/// HELP and TYPE under the name its samples carry (`…_total`), which is
/// where that format looks for them.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// What one scrape shows.
pub struct Scraped<'a> {
    pub pid: u32,
    pub exe: &'a str,
    pub attached_secs: f64,
    pub counters: &'a Counters,
    /// Most outstanding bytes first.
    pub sites: &'a [LiveSite],
    pub cost: Option<&'a Cost>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    site: String,
    label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    pid: String,
    exe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// OpenMetrics text for one scrape.
pub fn exposition(scraped: &Scraped<'_>) -> String {
    let mut registry = Registry::with_prefix("pool_observer");
    register_target(&mut registry, scraped);
    register_totals(&mut registry, scraped);
    register_sites(&mut registry, scraped.sites);
    register_counters(&mut registry, scraped.counters);
    if let Some(cost) = scraped.cost {
        register_cost(&mut registry, cost);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

fn register_target(registry: &mut Registry, scraped: &Scraped<'_>) {
    // An info metric the classic way (a gauge of 1 with the facts as
    // labels): OpenMetrics' own `info` type is unknown to the Prometheus
    // text format, which tools such as promtool still read.
    let info = Family::<TargetLabels, Gauge>::default();
    info.get_or_create(&TargetLabels {
        pid: scraped.pid.to_string(),
        exe: scraped.exe.to_string(),
    })
    .set(1);
    registry.register("target_info", "The observed process", info);
    let attached = FloatGauge::default();
    attached.set(scraped.attached_secs);
    registry.register_with_unit(
        "attached",
        "Time since the probes were attached",
        Unit::Seconds,
        attached,
    );
}

fn register_totals(registry: &mut Registry, scraped: &Scraped<'_>) {
    let (buffers, bytes) = scraped
        .sites
        .iter()
        .fold((0, 0), |(n, b), s| (n + s.buffers, b + s.bytes));
    let gauge = |value: i64| {
        let gauge: Gauge = Gauge::default();
        gauge.set(value);
        gauge
    };
    registry.register(
        "outstanding_buffers",
        "Buffers allocated since attach and not released",
        gauge(buffers),
    );
    registry.register_with_unit(
        "outstanding",
        "Bytes of the buffers allocated since attach and not released",
        Unit::Bytes,
        gauge(bytes),
    );
    registry.register(
        "sites",
        "Allocating call paths seen since attach",
        gauge(scraped.sites.len() as i64),
    );
}

/// Per-site gauges: the top sites, then the rest summed as `other`.
fn register_sites(registry: &mut Registry, sites: &[LiveSite]) {
    let buffers = Family::<SiteLabels, Gauge>::default();
    let bytes = Family::<SiteLabels, Gauge>::default();
    let growth = Family::<SiteLabels, FloatGauge>::default();
    for site in sites.iter().take(TOP_SITES) {
        let labels = SiteLabels {
            site: site.id.clone(),
            label: site.label.clone(),
        };
        buffers.get_or_create(&labels).set(site.buffers);
        bytes.get_or_create(&labels).set(site.bytes);
        growth
            .get_or_create(&labels)
            .set(site.growth.bytes_per_min / 60.0);
    }
    let rest = sites.get(TOP_SITES..).unwrap_or_default();
    if !rest.is_empty() {
        let other = SiteLabels {
            site: "other".into(),
            label: format!("{} other sites", rest.len()),
        };
        let sum = |f: fn(&LiveSite) -> f64| rest.iter().map(f).sum::<f64>();
        buffers
            .get_or_create(&other)
            .set(sum(|s| s.buffers as f64) as i64);
        bytes
            .get_or_create(&other)
            .set(sum(|s| s.bytes as f64) as i64);
        growth
            .get_or_create(&other)
            .set(sum(|s| s.growth.bytes_per_min) / 60.0);
    }
    registry.register(
        "site_outstanding_buffers",
        "Outstanding buffers per allocating site (top sites, the rest summed as site other)",
        buffers,
    );
    registry.register_with_unit(
        "site_outstanding",
        "Outstanding bytes per allocating site (top sites, the rest summed as site other)",
        Unit::Bytes,
        bytes,
    );
    registry.register(
        "site_growth_bytes_per_second",
        "Least-squares growth of each site's outstanding bytes over the sampled history",
        growth,
    );
}

/// Every counter of the kernel side's table, by its name: counters for
/// events, a gauge for what userspace derives.
fn register_counters(registry: &mut Registry, counters: &Counters) {
    for (info, value) in counters.iter() {
        let help = format!("{} ({})", info.meaning, kind_word(info.kind));
        if info.kind == CounterKind::Derived {
            let gauge: Gauge = Gauge::default();
            gauge.set(value as i64);
            registry.register(info.name, help, gauge);
        } else {
            let counter: Counter = Counter::default();
            counter.inc_by(value);
            registry.register(info.name, help, counter);
        }
    }
    let lost: Counter = Counter::default();
    lost.inc_by(counters.not_recorded());
    registry.register(
        "not_recorded",
        "Everything the kernel side could not record, all 'lost' counters together",
        lost,
    );
}

fn kind_word(kind: CounterKind) -> &'static str {
    match kind {
        CounterKind::Event => "event",
        CounterKind::Lost => "not recorded",
        CounterKind::Stack => "stack walking",
        CounterKind::Target => "the target",
        CounterKind::Derived => "derived",
    }
}

/// The observer's own cost.
fn register_cost(registry: &mut Registry, cost: &Cost) {
    let hits: Counter = Counter::default();
    hits.inc_by(cost.probe_hits);
    registry.register(
        "probe_hits",
        "Probe hits since attach: allocate entries and returns, release entries",
        hits,
    );
    let rate = FloatGauge::default();
    rate.set(cost.hits_per_sec);
    registry.register(
        "probe_hits_per_second",
        "Probe hits per second over the last interval",
        rate,
    );
    let source = SourceLabels {
        source: match cost.source {
            CostSource::Kernel => "kernel",
            CostSource::KernelSampled => "kernel-sampled",
            CostSource::Estimate => "estimate",
        }
        .into(),
    };
    let cpu = Family::<SourceLabels, Counter<f64, AtomicU64>>::default();
    cpu.get_or_create(&source).inc_by(cost.cpu_ns as f64 / 1e9);
    registry.register_with_unit(
        "cpu",
        "CPU time of the observer's eBPF programs (source kernel: every run timed; kernel-sampled: timed in a window per interval, calls x the window's cost per call between; estimate: calls x a built-in cost per call, kernel statistics being unavailable)",
        Unit::Seconds,
        cpu,
    );
    let memory = Gauge::<i64, AtomicI64>::default();
    memory.set(i64::try_from(cost.kernel_memory_bytes).unwrap_or(i64::MAX));
    registry.register_with_unit(
        "kernel_memory",
        "Kernel memory held by the observer's eBPF maps and programs (memlock)",
        Unit::Bytes,
        memory,
    );
    let usage = Family::<SourceLabels, FloatGauge>::default();
    usage.get_or_create(&source).set(cost.cpu_percent / 100.0);
    registry.register(
        "cpu_usage_ratio",
        "The programs' CPU time over the last interval, as a fraction of one CPU",
        usage,
    );
    let runs = Family::<ProgramLabels, Counter>::default();
    let time = Family::<ProgramLabels, Counter<f64, AtomicU64>>::default();
    for program in &cost.programs {
        let labels = ProgramLabels {
            program: program.program.clone(),
        };
        runs.get_or_create(&labels).inc_by(program.runs);
        time.get_or_create(&labels)
            .inc_by(program.run_time_ns as f64 / 1e9);
    }
    registry.register(
        "program_runs",
        "Runs of each eBPF program (kernel statistics; a tail-called program counts under its caller)",
        runs,
    );
    registry.register_with_unit(
        "program_cpu",
        "CPU time of each eBPF program (kernel statistics; a tail-called program counts under its caller)",
        Unit::Seconds,
        time,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::growth::{Growth, Trend};
    use observer_ebpf::{counter, COUNTERS};

    fn site(id: usize, bytes: i64) -> LiveSite {
        LiveSite {
            id: format!("{id:016x}"),
            label: format!("f{id}:1"),
            buffers: bytes / 256,
            bytes,
            growth: Growth {
                trend: Trend::Stable,
                buffers_per_min: 0.0,
                bytes_per_min: 60.0 * bytes as f64,
                samples: 3,
                window_secs: 2.0,
            },
        }
    }

    fn scrape(sites: &[LiveSite], counters: &Counters) -> String {
        exposition(&Scraped {
            pid: 42,
            exe: "/bin/gateway",
            attached_secs: 1.5,
            counters,
            sites,
            cost: None,
        })
    }

    #[test]
    fn every_counter_of_the_table_is_exported() {
        let mut counters = Counters::default();
        counters[counter::UNKNOWN_RELEASES] = 7;
        counters[counter::IN_FLIGHT] = 2;
        let text = scrape(&[], &counters);
        for info in &COUNTERS {
            let name = if info.kind == CounterKind::Derived {
                format!("pool_observer_{} ", info.name)
            } else {
                format!("pool_observer_{}_total ", info.name)
            };
            assert!(text.contains(&name), "{name} missing:\n{text}");
        }
        assert!(
            text.contains("pool_observer_unknown_releases_total 7\n"),
            "{text}"
        );
        assert!(text.contains("pool_observer_in_flight 2\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_classic_format_names_counters_by_their_samples() {
        let mut counters = Counters::default();
        counters[counter::ALLOCATIONS] = 3;
        let classic = classic_text(&scrape(&[], &counters));
        assert!(classic.contains("# TYPE pool_observer_allocations_total counter\n"));
        assert!(classic.contains("# HELP pool_observer_allocations_total allocations"));
        assert!(classic.contains("pool_observer_allocations_total 3\n"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        assert!(classic.contains("# TYPE pool_observer_outstanding_bytes gauge\n"));
    }

    #[test]
    fn sites_beyond_the_top_are_one_other_series() {
        let sites: Vec<LiveSite> = (0..TOP_SITES + 5)
            .map(|i| site(i, 256 * (100 - i as i64)))
            .collect();
        let text = scrape(&sites, &Counters::default());
        let series = text
            .lines()
            .filter(|l| l.starts_with("pool_observer_site_outstanding_bytes{"))
            .count();
        assert_eq!(series, TOP_SITES + 1, "{text}");
        let rest: i64 = sites[TOP_SITES..].iter().map(|s| s.bytes).sum();
        assert!(
            text.contains(&format!(
                "pool_observer_site_outstanding_bytes{{site=\"other\",label=\"5 other sites\"}} {rest}\n"
            )),
            "{text}"
        );
        let total: i64 = sites.iter().map(|s| s.bytes).sum();
        assert!(text.contains(&format!("pool_observer_outstanding_bytes {total}\n")));
    }
}
