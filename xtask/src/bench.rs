//! `cargo xtask bench`: what the probes cost the target, per allocate +
//! release pair, measured as ratios within one run (the machines are shared
//! and noisy; absolute numbers are for context only).
//!
//! `pool-bench` allocates and releases buffers from a call chain of a chosen
//! depth. It runs alone, then with the observer attached using each stack
//! walker. The fair comparison of the walkers is on the frame-pointer build
//! (both work there); the stock build shows the unwinder where only it works.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{root, signal, Guarded};
use crate::setup;
use crate::targets::{build_observer, build_targets, targets_dir, Variant};

const PAIRS: u64 = 200_000;
const REPEATS: usize = 5;
const DEPTHS: [u32; 2] = [16, 64];

pub fn run() -> Result<()> {
    setup::run()?;
    build_observer(true)?;
    build_targets(Variant::Leaky)?;
    build_targets(Variant::FramePointers)?;
    let mut lines = Vec::new();
    for depth in DEPTHS {
        let stock = targets_dir(Variant::Leaky).join("pool-bench");
        let fp = targets_dir(Variant::FramePointers).join("pool-bench");
        let stock_alone = median(&stock, None, depth)?;
        let stock_dwarf = median(&stock, Some("dwarf"), depth)?;
        let fp_alone = median(&fp, None, depth)?;
        let fp_kernel = median(&fp, Some("frame-pointers"), depth)?;
        let fp_dwarf = median(&fp, Some("dwarf"), depth)?;
        let unwind_cost = fp_dwarf - fp_alone;
        let fp_cost = fp_kernel - fp_alone;
        println!(
            "\ndepth {depth} (ns per allocate+release pair, median of {REPEATS} runs of {PAIRS}):"
        );
        println!("  stock build:          alone {stock_alone:8.1}   dwarf walker {stock_dwarf:8.1}   probe cost {:8.1}", stock_dwarf - stock_alone);
        println!("  frame-pointer build:  alone {fp_alone:8.1}   fp walker    {fp_kernel:8.1}   probe cost {fp_cost:8.1}");
        println!("                                        dwarf walker {fp_dwarf:8.1}   probe cost {unwind_cost:8.1}");
        println!(
            "  ratio, dwarf walker / frame-pointer walker (probe cost, same binary): {:.2}",
            unwind_cost / fp_cost
        );
        lines.push(format!(
            "{{\"depth\":{depth},\"stock_alone\":{stock_alone:.1},\"stock_dwarf\":{stock_dwarf:.1},\"fp_alone\":{fp_alone:.1},\"fp_frame_pointers\":{fp_kernel:.1},\"fp_dwarf\":{fp_dwarf:.1},\"unwind_to_frame_pointer_cost_ratio\":{:.3}}}",
            unwind_cost / fp_cost
        ));
    }
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("probe-cost.jsonl"), lines.join("\n") + "\n")?;
    println!("\nwritten to target/bench/probe-cost.jsonl");
    Ok(())
}

fn median(bench: &Path, walker: Option<&str>, depth: u32) -> Result<f64> {
    let mut samples = (0..REPEATS)
        .map(|_| measure(bench, walker, depth))
        .collect::<Result<Vec<_>>>()?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[REPEATS / 2])
}

/// One run: start the bench, attach if asked, let it go, read its number.
fn measure(bench: &Path, walker: Option<&str>, depth: u32) -> Result<f64> {
    let mut child = Command::new(bench)
        .args(["--pairs", &PAIRS.to_string(), "--depth", &depth.to_string()])
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
    let observer = walker
        .map(|walker| attach(bench_child.0.id(), walker))
        .transpose()?;
    stdin.write_all(b"go\n")?;
    let result = stdout.next().context("pool-bench gave no result")??;
    let value = result
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected pool-bench output: {result}"))?;
    if let Some(mut observer) = observer {
        signal(&observer.0, libc::SIGINT)?;
        observer.0.wait()?;
    }
    Ok(value)
}

fn attach(pid: u32, walker: &str) -> Result<Guarded> {
    let mut observer = Command::new(root().join("target/release/observer"))
        .args([
            "attach",
            "--pid",
            &pid.to_string(),
            "--stack-walker",
            walker,
        ])
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
        .args(["--release-id", "*arg1", "--interval", "1h"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the observer")?;
    let stderr = observer.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("observer: attached") {
                let _ = tx.send(());
            }
        }
    });
    let guard = Guarded(observer);
    rx.recv_timeout(Duration::from_secs(30))
        .context("the observer did not attach")?;
    Ok(guard)
}
