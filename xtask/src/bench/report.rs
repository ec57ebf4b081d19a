//! The report over a million outstanding buffers: how long from SIGUSR1
//! to the written report, and the observer's peak memory.
//!
//! `pool-bench --keep` allocates the buffers from 1,000 call chains and
//! holds them; the observer attached to it writes its report to a file on
//! SIGUSR1. The report's counts are checked: a fast report that lost
//! buffers would be no result.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{signal, Guarded};
use crate::targets::{targets_dir, Variant};

/// Buffers kept outstanding.
pub const BUFFERS: u64 = 1_000_000;
/// Call chains they come from.
pub const STACKS: u64 = 1_000;

/// What one big report cost.
pub struct BigReport {
    /// SIGUSR1 to the report file in place.
    pub seconds: f64,
    /// The observer's peak resident memory (VmHWM), MiB.
    pub peak_mib: f64,
    /// Kernel memory of the observer's maps and programs with the buffers
    /// live (the report's `cost.kernel_memory_bytes`), MiB.
    pub kernel_mib: f64,
}

/// Measures one report over [`BUFFERS`] outstanding buffers.
pub fn measure(observer: &Path) -> Result<BigReport> {
    let bench = targets_dir(Variant::Leaky).join("pool-bench");
    let mut child = Command::new(&bench)
        .args([
            "--keep",
            &BUFFERS.to_string(),
            "--stacks",
            &STACKS.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start pool-bench")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut stdin = child.stdin.take().context("stdin")?;
    let bench_child = Guarded(child);
    if lines.next().context("pool-bench said nothing")?? != "ready" {
        bail!("pool-bench did not say ready");
    }
    let dir = tempfile::tempdir()?;
    let output = dir.path().join("report.json");
    let mut attached = attach(observer, bench_child.0.id(), &output)?;
    stdin.write_all(b"go\n")?;
    let kept = lines.next().context("pool-bench kept nothing")??;
    if kept != format!("kept {BUFFERS}") {
        bail!("unexpected pool-bench output: {kept}");
    }
    let started = Instant::now();
    signal(&attached.0, libc::SIGUSR1)?;
    while !output.exists() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("no report two minutes after SIGUSR1");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_mib = peak_memory_kib(attached.0.id())? as f64 / 1024.0;
    let kernel_mib = check_counts(&output)? as f64 / (1024.0 * 1024.0);
    signal(&attached.0, libc::SIGINT)?;
    attached.0.wait()?;
    drop(stdin);
    Ok(BigReport {
        seconds,
        peak_mib,
        kernel_mib,
    })
}

/// The observer on `pid`, writing JSON reports to `output`, attached.
fn attach(observer: &Path, pid: u32, output: &Path) -> Result<Guarded> {
    let mut command = Command::new(observer);
    command
        .args(["attach", "--pid", &pid.to_string()])
        .args(super::POOL_BENCH_SPEC)
        .args(["--interval", "1h", "--format", "json"])
        .args(["--max-live", &(BUFFERS + BUFFERS / 10).to_string()])
        .arg("--output")
        .arg(output)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut observer = command.spawn().context("cannot start the observer")?;
    let stderr = observer.stderr.take().context("stderr")?;
    let guard = Guarded(observer);
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        if line.starts_with("observer: attached") {
            // Keep reading what it says (a closed pipe would end it when it
            // reports).
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(guard);
        }
        if line.starts_with("observer: error") {
            bail!("{line}");
        }
    }
    bail!("the observer exited before attaching")
}

fn peak_memory_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in the observer's status")
}

/// The report must hold every buffer, from every call chain. Returns the
/// kernel memory it says the observer held.
fn check_counts(output: &Path) -> Result<u64> {
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(output)?)?;
    let buffers = report["outstanding"]["buffers"].as_u64();
    let stacks: u64 = report["sites"]
        .as_array()
        .map(|sites| {
            sites
                .iter()
                .filter_map(|site| site["stacks"].as_array())
                .map(|stacks| stacks.len() as u64)
                .sum()
        })
        .unwrap_or(0);
    if buffers != Some(BUFFERS) || stacks != STACKS {
        bail!(
            "the report is not exact: {buffers:?} buffers in {stacks} stacks, \
             {BUFFERS} in {STACKS} were outstanding"
        );
    }
    report["cost"]["kernel_memory_bytes"]
        .as_u64()
        .context("the report has no kernel memory")
}
