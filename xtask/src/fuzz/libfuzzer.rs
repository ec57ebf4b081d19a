//! One libFuzzer run of one target: its output read as it comes (shown,
//! or kept for when it fails), its statistics, and what it found.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::{cargo_fuzz, common_args, reproduce_command, Target};
use crate::cmd::{root, Guarded};

/// Lines of a failed run's output shown when it ran quietly.
const TAIL_LINES: usize = 80;

/// What one run did and found.
#[derive(Debug)]
pub struct Outcome {
    status: ExitStatus,
    elapsed: Duration,
    /// libFuzzer's count of inputs run, when it got to say it.
    executions: Option<u64>,
    /// Inputs libFuzzer wrote because they crashed, hung or used too much
    /// memory.
    reproducers: Vec<PathBuf>,
    target: &'static str,
}

impl Outcome {
    /// What was found, with how to reproduce it; `None` for a clean run.
    pub fn finding(&self) -> Option<String> {
        if self.status.success() && self.reproducers.is_empty() {
            return None;
        }
        Some(match self.reproducers.as_slice() {
            [] => format!(
                "libFuzzer {} and wrote no reproducer (see its output above)",
                self.status
            ),
            inputs => inputs
                .iter()
                .map(|input| {
                    format!(
                        "reproducer {} (`{}`)",
                        input.display(),
                        reproduce_command(self.target, &input.display().to_string())
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs = self
            .executions
            .map_or_else(|| "an unknown number of".to_string(), |n| n.to_string());
        let verdict = if self.finding().is_some() {
            "FAILED"
        } else {
            "ok"
        };
        write!(
            f,
            "{verdict}, {runs} executions in {:.0} s",
            self.elapsed.as_secs_f64()
        )?;
        for input in &self.reproducers {
            write!(f, "; reproducer {}", input.display())?;
        }
        Ok(())
    }
}

/// Runs `target` for `seconds` on `corpora` (the first one grows: it is
/// created if missing). With `quiet`, libFuzzer's output is only shown
/// (its last lines) when the run fails.
pub fn run(target: &Target, corpora: &[PathBuf], seconds: u64, quiet: bool) -> Result<Outcome> {
    if let Some(growing) = corpora.first() {
        std::fs::create_dir_all(growing)
            .with_context(|| format!("cannot create {}", growing.display()))?;
    }
    let mut command = cargo_fuzz();
    command
        .arg("run")
        .args(common_args())
        .arg(target.name)
        .args(corpora)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={}", target.max_len))
        .arg(format!("-timeout={}", target.timeout))
        .arg(format!("-rss_limit_mb={}", target.rss_limit_mb))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = Guarded(
        command
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?,
    );
    let lines = merged_lines(&mut child)?;
    let mut reading = Reading::default();
    for line in lines {
        if !quiet {
            eprintln!("{line}");
        }
        reading.line(line);
    }
    let status = child.0.wait().context("waiting for cargo fuzz")?;
    let outcome = Outcome {
        status,
        elapsed: started.elapsed(),
        executions: reading.executions,
        reproducers: reading.reproducers,
        target: target.name,
    };
    if quiet && outcome.finding().is_some() {
        for line in &reading.tail {
            eprintln!("  | {line}");
        }
    }
    Ok(outcome)
}

/// The child's stdout and stderr lines as they come, in one stream that
/// ends when both are closed.
fn merged_lines(child: &mut Guarded) -> Result<mpsc::IntoIter<String>> {
    let (sender, receiver) = mpsc::channel();
    let stdout = child.0.stdout.take().context("no stdout pipe")?;
    let stderr = child.0.stderr.take().context("no stderr pipe")?;
    forward(stdout, sender.clone());
    forward(stderr, sender);
    Ok(receiver.into_iter())
}

fn forward(pipe: impl Read + Send + 'static, lines: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        // Bytes, not `lines()`: a crashing input may be echoed raw.
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if lines.send(text).is_err() {
                return;
            }
            line.clear();
        }
    });
}

/// What is picked out of libFuzzer's output.
#[derive(Default)]
struct Reading {
    executions: Option<u64>,
    reproducers: Vec<PathBuf>,
    tail: VecDeque<String>,
}

impl Reading {
    fn line(&mut self, line: String) {
        if let Some(count) = executions(&line) {
            self.executions = Some(count);
        }
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            let path = Path::new(path.trim());
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                root().join(path)
            };
            if !self.reproducers.contains(&path) {
                self.reproducers.push(path);
            }
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// The number of inputs run, from `-print_final_stats` or the closing
/// `Done N runs in S second(s)`.
fn executions(line: &str) -> Option<u64> {
    if let Some(count) = line.strip_prefix("stat::number_of_executed_units:") {
        return count.trim().parse().ok();
    }
    line.strip_prefix("Done ")?.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_and_reproducers_from_libfuzzer_output() {
        let mut reading = Reading::default();
        for line in [
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "Done 123456 runs in 5 second(s)",
            "==1== ERROR: libFuzzer: deadly signal",
            "artifact_prefix='/x/artifacts/location/'; Test unit written to /x/artifacts/location/crash-abc",
            "stat::number_of_executed_units: 123999",
        ] {
            reading.line(line.to_string());
        }
        assert_eq!(reading.executions, Some(123_999));
        assert_eq!(
            reading.reproducers,
            vec![PathBuf::from("/x/artifacts/location/crash-abc")]
        );
        assert_eq!(reading.tail.len(), 5);
        assert_eq!(executions("Done 77 runs in 1 second(s)"), Some(77));
        assert_eq!(executions("#77 pulse"), None);
    }

    #[test]
    fn a_failed_run_is_a_finding_with_its_reproducer() {
        use std::os::unix::process::ExitStatusExt as _;
        let clean = Outcome {
            status: ExitStatus::from_raw(0),
            elapsed: Duration::from_secs(5),
            executions: Some(10),
            reproducers: Vec::new(),
            target: "maps",
        };
        assert!(clean.finding().is_none());
        assert_eq!(clean.to_string(), "ok, 10 executions in 5 s");
        let crashed = Outcome {
            status: ExitStatus::from_raw(1 << 8),
            reproducers: vec![PathBuf::from("/a/crash-1")],
            ..clean
        };
        let finding = crashed.finding().unwrap();
        assert!(finding.contains("reproducer /a/crash-1"), "{finding}");
        assert!(
            finding.contains("fuzz run --fuzz-dir observer/fuzz"),
            "{finding}"
        );
        assert!(crashed.to_string().starts_with("FAILED"));
    }
}
