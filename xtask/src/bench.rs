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

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{root, signal, Guarded};
use crate::setup;
use crate::targets::{build_observer, build_targets, targets_dir, Variant};

const PAIRS: u64 = 100_000;
const ROUNDS: usize = 5;
const DEPTHS: [u32; 2] = [16, 64];

/// What is attached to `pool-bench` in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Alone,
    /// Empty programs on the probes of `returns`.
    Floor {
        returns: &'static str,
    },
    /// The observer with `returns` and a stack walker.
    Observer {
        returns: &'static str,
        walker: &'static str,
    },
}

/// One measured configuration.
#[derive(Debug, Clone)]
struct Cell {
    build: Variant,
    depth: u32,
    load: Load,
    runs: Vec<f64>,
}

impl Cell {
    fn new(build: Variant, depth: u32, load: Load) -> Self {
        Self {
            build,
            depth,
            load,
            runs: Vec::new(),
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
            Load::Observer { returns, walker } => format!("observer ({returns}, {walker} walker)"),
        };
        (build, load)
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
fn cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for depth in DEPTHS {
        for load in [
            Load::Alone,
            Load::Floor {
                returns: "uretprobe",
            },
            Load::Observer {
                returns: "uretprobe",
                walker: "dwarf",
            },
            Load::Floor {
                returns: "call-sites",
            },
            Load::Observer {
                returns: "call-sites",
                walker: "dwarf",
            },
        ] {
            cells.push(Cell::new(Variant::Leaky, depth, load));
        }
        for load in [
            Load::Alone,
            Load::Floor {
                returns: "uretprobe",
            },
            Load::Observer {
                returns: "uretprobe",
                walker: "frame-pointers",
            },
            Load::Observer {
                returns: "uretprobe",
                walker: "dwarf",
            },
        ] {
            cells.push(Cell::new(Variant::FramePointers, depth, load));
        }
    }
    cells
}

/// Markers around README's generated cost table.
const README_BEGIN: &str = "<!-- cargo xtask bench --update-readme: begin -->";
const README_END: &str = "<!-- cargo xtask bench --update-readme: end -->";

pub fn run(update_readme: bool) -> Result<()> {
    setup::run()?;
    build_observer(true)?;
    build_targets(Variant::Leaky)?;
    build_targets(Variant::FramePointers)?;
    let mut cells = cells();
    for round in 1..=ROUNDS {
        println!(
            "xtask: bench round {round} of {ROUNDS} ({} cells)",
            cells.len()
        );
        for cell in &mut cells {
            let value = measure(cell)?;
            cell.runs.push(value);
        }
    }
    print_results(&cells);
    write_results(&cells)?;
    if update_readme {
        update_readme_table(&cells)?;
    }
    Ok(())
}

/// Replaces README's cost table with this run's, conditions stated.
fn update_readme_table(cells: &[Cell]) -> Result<()> {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path)?;
    let (Some(begin), Some(end)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
        bail!("README.md has no {README_BEGIN} … {README_END} section");
    };
    let mut table = String::new();
    table.push_str(README_BEGIN);
    table.push_str(&format!(
        "\n\nGenerated by `cargo xtask bench --update-readme` on {} ({} CPUs, kernel {}), \
         `pool-bench` with {PAIRS} allocate+release pairs per run, median of {ROUNDS} \
         interleaved rounds; ns per pair, and the observer's cost over the program alone as a \
         ratio to the probe floor's (empty programs on the same probes) in the same run:\n\n",
        today(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release()
    ));
    table.push_str(
        "| depth | build | attached | ns per pair | ratio to the floor |\n|---|---|---|---|---|\n",
    );
    for cell in cells {
        let (build, load) = cell.label_parts();
        let ratio = ratio_to_floor(cells, cell)
            .map(|r| format!("{r:.2}"))
            .unwrap_or_default();
        table.push_str(&format!(
            "| {} | {build} | {load} | {:.0} | {ratio} |\n",
            cell.depth,
            cell.median()
        ));
    }
    table.push('\n');
    let updated = format!("{}{}{}", &readme[..begin], table, &readme[end..]);
    std::fs::write(&path, updated)?;
    println!("README.md's cost table updated");
    Ok(())
}

fn today() -> String {
    crate::cmd::output(Command::new("date").arg("+%Y-%m-%d"))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default()
}

fn print_results(cells: &[Cell]) {
    println!(
        "\nns per allocate+release pair, median of {ROUNDS} interleaved rounds of {PAIRS} pairs \
         (all runs in brackets); ratio = cost over the same build alone, divided by the floor's"
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

fn write_results(cells: &[Cell]) -> Result<()> {
    let lines: Vec<String> = cells
        .iter()
        .map(|cell| {
            let ratio = ratio_to_floor(cells, cell)
                .map(|r| format!("{r:.3}"))
                .unwrap_or_else(|| "null".into());
            format!(
                "{{\"cell\":\"{}\",\"median_ns\":{:.1},\"runs\":[{}],\"ratio_to_floor\":{ratio}}}",
                cell.label(),
                cell.median(),
                cell.runs
                    .iter()
                    .map(|r| format!("{r:.1}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("probe-cost.jsonl"), lines.join("\n") + "\n")?;
    println!("\nwritten to target/bench/probe-cost.jsonl");
    Ok(())
}

/// One run: start the bench, attach what the cell asks for, let it go,
/// read its number.
fn measure(cell: &Cell) -> Result<f64> {
    let bench: PathBuf = targets_dir(cell.build).join("pool-bench");
    let mut child = Command::new(&bench)
        .args(["--pairs", &PAIRS.to_string()])
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
    let attached = match cell.load {
        Load::Alone => None,
        load => Some(attach(bench_child.0.id(), load)?),
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
    Ok(value)
}

/// Starts the observer (or its probe floor) on `pid` and waits until its
/// probes are in place.
fn attach(pid: u32, load: Load) -> Result<Guarded> {
    let mut command = Command::new(root().join("target/release/observer"));
    let (subcommand, returns, ready) = match load {
        Load::Floor { returns } => ("floor", returns, "observer: floor attached"),
        Load::Observer { returns, .. } => ("attach", returns, "observer: attached"),
        Load::Alone => unreachable!("nothing to attach"),
    };
    command
        .args([subcommand, "--pid", &pid.to_string()])
        .args([
            "--alloc",
            "bufpool::BufPool::allocate",
            "--size",
            "*(arg0+8)",
        ])
        .args([
            "--alloc-id",
            "*arg0",
            "--release",
            "bufpool::BufPool::release",
        ])
        .args(["--release-id", "*arg1", "--returns", returns])
        // The uretprobe path is measured as the proof and the repair run
        // it; pool-bench's allocate could panic, so it must be accepted.
        .args(["--accept-abort-on-panic"]);
    if let Load::Observer { walker, .. } = load {
        command.args(["--stack-walker", walker, "--interval", "1h"]);
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
    rx.recv_timeout(Duration::from_secs(60))
        .context("the observer did not attach")?;
    Ok(guard)
}
