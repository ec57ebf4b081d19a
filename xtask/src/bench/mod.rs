//! `cargo xtask bench`: what the probes cost the target, per allocate +
//! release pair, measured as ratios within one run (the machines are
//! shared and noisy; absolute numbers are for context only).
//!
//! `pool-bench` allocates and releases buffers from a call chain of a
//! chosen depth. Each cell runs it alone, under the probe floor (empty
//! programs on exactly the uprobes the observer would place: the kernel's
//! trap cost and nothing of ours), or under the observer; the cells are
//! run interleaved, one round of every cell after another, so a change in
//! the machine's load touches them all alike. Results are medians over the
//! rounds, with every run listed, and the observer's cost as a ratio to
//! the floor of the same probes.

mod report;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{root, signal, Guarded};
use crate::setup;
use crate::targets::{build_observer, build_targets, targets_dir, Variant};

const DEPTHS: [u32; 3] = [16, 0, 64];

/// pool-bench's pool and where its ids and sizes are, for every observer
/// the benchmark attaches.
const POOL_BENCH_SPEC: [&str; 10] = [
    "--alloc",
    "bufpool::BufPool::allocate",
    "--size",
    "*(arg0+8)",
    "--alloc-id",
    "*arg0",
    "--release",
    "bufpool::BufPool::release",
    "--release-id",
    "*arg1",
];

/// How much to measure, and with what.
pub struct Plan {
    /// allocate+release pairs per run.
    pairs: u64,
    rounds: usize,
    /// The observer binary measured.
    observer: PathBuf,
    /// Only depth 16 of the stock build (the kernel matrix: every cell is
    /// slow under emulation).
    quick: bool,
}

impl Plan {
    /// The full benchmark, with the release observer built now.
    pub fn full() -> Result<Self> {
        setup::run()?;
        build_observer(true)?;
        build_targets(Variant::Leaky)?;
        build_targets(Variant::FramePointers)?;
        Ok(Self {
            pairs: 100_000,
            rounds: 5,
            observer: root().join("target/release/observer"),
            quick: false,
        })
    }

    /// The few cells that tell one kernel's probe costs apart from
    /// another's, with `observer`, on targets already built (a VM of the
    /// kernel matrix, which cannot build).
    pub fn quick(observer: PathBuf) -> Self {
        Self {
            pairs: 20_000,
            rounds: 3,
            observer,
            quick: true,
        }
    }
}

/// What is attached to `pool-bench` in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Alone,
    /// Empty programs on the probes of `returns`.
    Floor {
        returns: &'static str,
    },
    /// The observer with `returns`, a stack walker and its
    /// `--cost-statistics` (`sampled`, as users run it; `always` shows
    /// what timing every run costs).
    Observer {
        returns: &'static str,
        walker: &'static str,
        statistics: &'static str,
    },
}

/// One measured configuration.
#[derive(Debug, Clone)]
struct Cell {
    build: Variant,
    depth: u32,
    load: Load,
    runs: Vec<f64>,
    /// The observer's programs, ns per run by program, one map per run
    /// (the kernel's statistics from the observer's final report).
    programs: Vec<BTreeMap<String, f64>>,
}

impl Cell {
    fn new(build: Variant, depth: u32, load: Load) -> Self {
        Self {
            build,
            depth,
            load,
            runs: Vec::new(),
            programs: Vec::new(),
        }
    }

    fn label(&self) -> String {
        let (build, load) = self.label_parts();
        format!("depth {:>2}, {build} build, {load}", self.depth)
    }

    /// The build and what is attached, for people.
    fn label_parts(&self) -> (&'static str, String) {
        let build = match self.build {
            Variant::FramePointers => "frame-pointer",
            _ => "stock",
        };
        let load = match self.load {
            Load::Alone => "nothing".to_string(),
            Load::Floor { returns } => format!("probe floor ({returns})"),
            Load::Observer {
                returns,
                walker,
                statistics: SAMPLED,
            } => format!("observer ({returns}, {walker} walker)"),
            Load::Observer {
                returns,
                walker,
                statistics,
            } => format!("observer ({returns}, {walker} walker, statistics {statistics})"),
        };
        (build, load)
    }

    /// Each probe program's median ns per run over the rounds (entry,
    /// return and release programs; the tail-called walker is counted in
    /// the entry's), for people.
    fn programs_line(&self) -> String {
        let mut names: Vec<&String> = self.programs.iter().flat_map(BTreeMap::keys).collect();
        names.sort();
        names.dedup();
        names
            .iter()
            .filter(|name| {
                ["alloc_enter", "alloc_return", "release_enter"]
                    .iter()
                    .any(|probe| name.contains(probe))
            })
            .map(|name| {
                let mut values: Vec<f64> = self
                    .programs
                    .iter()
                    .filter_map(|p| p.get(*name))
                    .copied()
                    .collect();
                values.sort_by(f64::total_cmp);
                format!("{name} {:.0}", values[values.len() / 2])
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn median(&self) -> f64 {
        let mut sorted = self.runs.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }
}

/// The cells: for each depth, the stock build under both return methods
/// (what `auto` picks on a locked-down kernel: call sites; and the
/// uretprobe path that the proof and the repair share), and the
/// frame-pointer build to compare the stack walkers on the same binary.
fn cells(quick: bool) -> Vec<Cell> {
    let mut cells = Vec::new();
    let depths: &[u32] = if quick { &DEPTHS[..1] } else { &DEPTHS };
    for &depth in depths {
        for load in [
            Load::Alone,
            Load::Floor {
                returns: "uretprobe",
            },
            Load::Observer {
                returns: "uretprobe",
                walker: "dwarf",
                statistics: SAMPLED,
            },
            Load::Floor {
                returns: "call-sites",
            },
            Load::Observer {
                returns: "call-sites",
                walker: "dwarf",
                statistics: SAMPLED,
            },
        ] {
            cells.push(Cell::new(Variant::Leaky, depth, load));
        }
        if quick {
            continue;
        }
        // What statistics on for every run would add (the observer held
        // them so until it sampled them).
        cells.push(Cell::new(
            Variant::Leaky,
            depth,
            Load::Observer {
                returns: "uretprobe",
                walker: "dwarf",
                statistics: "always",
            },
        ));
        for load in [
            Load::Alone,
            Load::Floor {
                returns: "uretprobe",
            },
            Load::Observer {
                returns: "uretprobe",
                walker: "frame-pointers",
                statistics: SAMPLED,
            },
            Load::Observer {
                returns: "uretprobe",
                walker: "dwarf",
                statistics: SAMPLED,
            },
        ] {
            cells.push(Cell::new(Variant::FramePointers, depth, load));
        }
    }
    cells
}

/// The observer's default `--cost-statistics`.
const SAMPLED: &str = "sampled";

/// Markers around README's generated cost table.
const README_SECTION: &str = "cargo xtask bench --update-readme";

/// Measures every cell of `plan`, prints the results and writes them as
/// JSON lines to `results` (README's table too with `update_readme`).
pub fn run(plan: &Plan, results: &Path, update_readme: bool) -> Result<()> {
    let mut cells = cells(plan.quick);
    for round in 1..=plan.rounds {
        println!(
            "xtask: bench round {round} of {} ({} cells)",
            plan.rounds,
            cells.len()
        );
        for cell in &mut cells {
            let (value, programs) = measure(plan, cell)?;
            cell.runs.push(value);
            cell.programs.extend(programs);
        }
    }
    print_results(plan, &cells);
    let big = if plan.quick {
        None
    } else {
        Some(big_reports(plan)?)
    };
    write_results(&cells, big.as_ref(), results)?;
    if update_readme {
        update_readme_table(plan, &cells, big.as_ref())?;
    }
    Ok(())
}

/// Runs of the report over a million buffers.
const BIG_REPORT_RUNS: usize = 3;

/// The big report, measured [`BIG_REPORT_RUNS`] times: medians.
fn big_reports(plan: &Plan) -> Result<report::BigReport> {
    let mut runs = Vec::new();
    for run in 1..=BIG_REPORT_RUNS {
        println!(
            "xtask: report over {} outstanding buffers, run {run} of {BIG_REPORT_RUNS}",
            report::BUFFERS
        );
        runs.push(report::measure(&plan.observer)?);
    }
    let median = |value: fn(&report::BigReport) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(value).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let big = report::BigReport {
        seconds: median(|r| r.seconds),
        peak_mib: median(|r| r.peak_mib),
        kernel_mib: median(|r| r.kernel_mib),
    };
    println!("{}", big_report_line(&big));
    Ok(big)
}

/// The big report's result, for people.
fn big_report_line(big: &report::BigReport) -> String {
    format!(
        "A report over {} outstanding buffers in {} stacks (counts checked exact): {:.2} s from \
         SIGUSR1 to the written report, observer peak memory {:.0} MiB, kernel memory of its maps \
         and programs {:.0} MiB with them live (medians of {BIG_REPORT_RUNS} runs).",
        report::BUFFERS,
        report::STACKS,
        big.seconds,
        big.peak_mib,
        big.kernel_mib
    )
}

/// Where `cargo xtask bench` writes its results.
pub fn default_results() -> PathBuf {
    root().join("target/bench/probe-cost.jsonl")
}

/// Replaces README's cost table with this run's, conditions stated.
fn update_readme_table(plan: &Plan, cells: &[Cell], big: Option<&report::BigReport>) -> Result<()> {
    let mut table = String::new();
    table.push_str(&format!(
        "Generated by `cargo xtask bench --update-readme` on {} ({} CPUs, kernel {}), \
         `pool-bench` with {} allocate+release pairs per run, median of {} \
         interleaved rounds; ns per pair, and the observer's cost over the program alone as a \
         ratio to the probe floor's (empty programs on the same probes) in the same run. The \
         observer runs as users run it, its statistics sampled (on only in its windows); the \
         programs' ns per run are the kernel's statistics of those windows (here: the learning \
         window at attach, the first calls):\n\n",
        today(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release(),
        plan.pairs,
        plan.rounds,
    ));
    table.push_str(
        "| depth | build | attached | ns per pair | ratio to the floor | programs, ns per run (kernel statistics, sampled) |\n|---|---|---|---|---|---|\n",
    );
    for cell in cells {
        let (build, load) = cell.label_parts();
        let ratio = ratio_to_floor(cells, cell)
            .map(|r| format!("{r:.2}"))
            .unwrap_or_default();
        table.push_str(&format!(
            "| {} | {build} | {load} | {:.0} | {ratio} | {} |\n",
            cell.depth,
            cell.median(),
            cell.programs_line()
        ));
    }
    if let Some(big) = big {
        table.push('\n');
        table.push_str(&big_report_line(big));
        table.push('\n');
    }
    crate::cmd::replace_readme_section(README_SECTION, &table)?;
    println!("README.md's cost table updated");
    Ok(())
}

pub fn today() -> String {
    crate::cmd::output(Command::new("date").arg("+%Y-%m-%d"))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default()
}

fn print_results(plan: &Plan, cells: &[Cell]) {
    println!(
        "\nns per allocate+release pair, median of {} interleaved rounds of {} pairs \
         (all runs in brackets); ratio = cost over the same build alone, divided by the floor's",
        plan.rounds, plan.pairs
    );
    for cell in cells {
        let runs: Vec<String> = cell.runs.iter().map(|r| format!("{r:.0}")).collect();
        let ratio = ratio_to_floor(cells, cell)
            .map(|r| format!("   {r:.2}x the floor"))
            .unwrap_or_default();
        println!(
            "  {:<62} {:>9.1}  [{}]{ratio}",
            cell.label(),
            cell.median(),
            runs.join(" ")
        );
        if !cell.programs.is_empty() {
            println!("      ns per run: {}", cell.programs_line());
        }
    }
}

/// The observer's cost (over the program alone) divided by the floor's
/// cost for the same probes, build and depth.
fn ratio_to_floor(cells: &[Cell], cell: &Cell) -> Option<f64> {
    let Load::Observer { returns, .. } = cell.load else {
        return None;
    };
    let find = |load: Load| {
        cells
            .iter()
            .find(|c| c.build == cell.build && c.depth == cell.depth && c.load == load)
            .map(Cell::median)
    };
    let alone = find(Load::Alone)?;
    let floor = find(Load::Floor { returns })?;
    Some((cell.median() - alone) / (floor - alone))
}

fn write_results(cells: &[Cell], big: Option<&report::BigReport>, results: &Path) -> Result<()> {
    let mut lines: Vec<String> = cells
        .iter()
        .map(|cell| {
            serde_json::json!({
                "cell": cell.label(),
                "median_ns": cell.median(),
                "runs": cell.runs,
                "ratio_to_floor": ratio_to_floor(cells, cell),
                "programs_ns_per_run": cell.programs,
            })
            .to_string()
        })
        .collect();
    if let Some(big) = big {
        lines.push(format!(
            "{{\"cell\":\"report over {} buffers\",\"seconds\":{:.3},\"peak_mib\":{:.1},\"kernel_mib\":{:.1}}}",
            report::BUFFERS,
            big.seconds,
            big.peak_mib,
            big.kernel_mib
        ));
    }
    if let Some(dir) = results.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(results, lines.join("\n") + "\n")?;
    println!("\nwritten to {}", results.display());
    Ok(())
}

/// One run: start the bench, attach what the cell asks for, let it go,
/// read its number.
fn measure(plan: &Plan, cell: &Cell) -> Result<(f64, Option<BTreeMap<String, f64>>)> {
    let bench: PathBuf = targets_dir(cell.build).join("pool-bench");
    let mut child = Command::new(&bench)
        .args(["--pairs", &plan.pairs.to_string()])
        .args(["--depth", &cell.depth.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start pool-bench")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut stdin = child.stdin.take().context("stdin")?;
    let bench_child = Guarded(child);
    let ready = stdout.next().context("pool-bench said nothing")??;
    if ready != "ready" {
        bail!("unexpected pool-bench output: {ready}");
    }
    let report_dir = tempfile::tempdir()?;
    let report = report_dir.path().join("report.json");
    let attached = match cell.load {
        Load::Alone => None,
        load => Some(attach(&plan.observer, bench_child.0.id(), load, &report)?),
    };
    stdin.write_all(b"go\n")?;
    let result = stdout.next().context("pool-bench gave no result")??;
    let value = result
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected pool-bench output: {result}"))?;
    if let Some(mut attached) = attached {
        signal(&attached.0, libc::SIGINT)?;
        attached.0.wait()?;
    }
    // pool-bench waits for the end of its input: the observer was stopped
    // while its target lived, as a user would stop it.
    drop(stdin);
    let programs = match cell.load {
        Load::Observer { .. } => Some(program_costs(&report)?),
        _ => None,
    };
    Ok((value, programs))
}

/// ns per run of each program that ran, from a report's `cost`.
fn program_costs(report: &Path) -> Result<BTreeMap<String, f64>> {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).context("the observer wrote no report")?)?;
    let programs = report["cost"]["programs"]
        .as_array()
        .context("the report has no program statistics")?;
    Ok(programs
        .iter()
        .filter_map(|program| {
            let runs = program["runs"].as_u64().filter(|&runs| runs > 0)?;
            let time = program["run_time_ns"].as_u64()?;
            Some((
                program["program"].as_str()?.to_string(),
                time as f64 / runs as f64,
            ))
        })
        .collect())
}

/// Starts the observer (or its probe floor) on `pid` and waits until its
/// probes are in place.
fn attach(observer: &Path, pid: u32, load: Load, report: &Path) -> Result<Guarded> {
    let mut command = Command::new(observer);
    let (subcommand, returns, ready) = match load {
        Load::Floor { returns } => ("floor", returns, "observer: floor attached"),
        Load::Observer { returns, .. } => ("attach", returns, "observer: attached"),
        Load::Alone => unreachable!("nothing to attach"),
    };
    command
        .args([subcommand, "--pid", &pid.to_string()])
        .args(POOL_BENCH_SPEC)
        .args(["--returns", returns])
        // The uretprobe path is measured as the proof and the repair run
        // it; pool-bench's allocate could panic, so it must be accepted.
        .args(["--accept-abort-on-panic"]);
    if let Load::Observer {
        walker, statistics, ..
    } = load
    {
        command
            .args(["--stack-walker", walker, "--interval", "1h"])
            .args(["--cost-statistics", statistics])
            .args(["--format", "json", "--output"])
            .arg(report);
    }
    let mut observer = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the observer")?;
    let stderr = observer.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with(ready) {
                let _ = tx.send(());
            } else if line.starts_with("observer: error") {
                eprintln!("{line}");
            }
        }
    });
    let guard = Guarded(observer);
    // Generous: in a VM of the kernel matrix, QEMU emulates every instruction.
    rx.recv_timeout(Duration::from_secs(300))
        .context("the observer did not attach")?;
    Ok(guard)
}
