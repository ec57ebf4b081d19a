//! What a VM run showed, read from the output directory: whether `doctor`
//! ran, and for each target build whether the programs loaded and the
//! counts were exact (what is claimed to work on arm64 now), plus the
//! stack the observer gave the leak (reported as seen, not judged: the
//! unwinder is x86-64's until it is ported, see docs/arm64.md).

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use super::target::{Variant, LEAKED_SIZE, LEAKS, ROUNDS};

/// One target build's run.
pub struct RunFinding {
    /// Counts exact and the observer exited 0.
    pub passed: bool,
    /// One line for people.
    pub line: String,
}

/// The line `results.txt` holds for `prefix` (`doctor:`, `run NAME:`).
pub fn result_line<'a>(results: &'a str, prefix: &str) -> Option<&'a str> {
    results
        .lines()
        .find_map(|line| line.strip_prefix(prefix).map(str::trim))
}

/// Whether `doctor` exited 0, and its lines answering "NO".
pub fn doctor(results: &str, doctor: &str) -> (bool, String) {
    let passed = result_line(results, "doctor:") == Some("exit 0");
    let missing: Vec<&str> = doctor
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("NO "))
        .map(|rest| rest.split(':').next().unwrap_or(rest).trim())
        .collect();
    let summary = format!(
        "doctor {}; NO: {}",
        result_line(results, "doctor:").unwrap_or("did not run"),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join("; ")
        }
    );
    (passed, summary)
}

/// The run of `variant`: its exit line and its JSON report in `out`.
pub fn run(out: &Path, results: &str, variant: &Variant) -> RunFinding {
    let name = variant.name;
    let exit = result_line(results, &format!("run {name}:")).unwrap_or("did not run");
    let report = std::fs::read_to_string(out.join(format!("report-{name}.json")))
        .context("no report")
        .and_then(|text| {
            let last = text.lines().last().unwrap_or_default().to_string();
            serde_json::from_str::<Value>(&last).context("the report is not JSON")
        });
    let report = match report {
        Ok(report) => report,
        Err(err) => {
            return RunFinding {
                passed: false,
                line: format!("{name}: {exit}; {err:#} (see run-{name}.log)"),
            }
        }
    };
    let counts = Counts::of(&report);
    let exact = counts == Counts::expected();
    RunFinding {
        passed: exact && exit.starts_with("exit 0 "),
        line: format!(
            "{name} ({}): {exit}; counts {} ({counts}, expected {}); leak's stack as reported: {}",
            variant.about,
            if exact { "exact" } else { "WRONG" },
            Counts::expected(),
            stack(&report)
        ),
    }
}

/// The numbers an exact observer gives for one run of the target.
#[derive(PartialEq, Eq)]
struct Counts {
    allocations: i64,
    releases: i64,
    buffers: i64,
    bytes: i64,
}

impl Counts {
    fn expected() -> Counts {
        Counts {
            allocations: (ROUNDS + LEAKS) as i64,
            releases: ROUNDS as i64,
            buffers: LEAKS as i64,
            bytes: (LEAKS * LEAKED_SIZE) as i64,
        }
    }

    fn of(report: &Value) -> Counts {
        let number = |pointer: &str| {
            report
                .pointer(pointer)
                .and_then(Value::as_i64)
                .unwrap_or(-1)
        };
        Counts {
            allocations: number("/counters/allocations"),
            releases: number("/counters/releases"),
            buffers: number("/outstanding/buffers"),
            bytes: number("/outstanding/bytes"),
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} allocations, {} releases, {} outstanding / {} bytes",
            self.allocations, self.releases, self.buffers, self.bytes
        )
    }
}

/// The top site's frames (innermost first) and how its walk ended.
fn stack(report: &Value) -> String {
    let Some(site) = report.pointer("/sites/0") else {
        return "no site".to_string();
    };
    let frames: Vec<String> = site["frames"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .map(|frame| match frame["function"].as_str() {
                    Some(function) => function.to_string(),
                    None => format!("{:#x}", frame["address"].as_u64().unwrap_or(0)),
                })
                .collect()
        })
        .unwrap_or_default();
    let ending = site
        .pointer("/stacks/0/ending")
        .map_or("?".to_string(), Value::to_string);
    format!("[{}] (walk ended: {ending})", frames.join(" <- "))
}
