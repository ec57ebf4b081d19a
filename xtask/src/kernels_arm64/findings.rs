//! What a VM run showed, read from the output directory: whether `doctor`
//! ran, and for each target build whether the programs loaded, the counts
//! were exact, and the leak's stack was whole and right: `pool_get` called
//! by `serve_leaky` called by `main`, then glibc's start
//! (`__libc_start_call_main`, which glibc's stripped symbol table does not
//! name, `__libc_start_main`) and `_start`, every walk complete, every
//! frame found with an `.eh_frame` row (the build without rows of its own:
//! some by frame records).

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
    let stack_wrong = judge_stack(&report, variant.rows_everywhere);
    let inferred = judge_locations(&report);
    RunFinding {
        passed: exact
            && stack_wrong.is_none()
            && inferred.is_ok()
            && exit.starts_with("exit 0 "),
        line: format!(
            "{name} ({}): {exit}; locations {}; counts {} ({counts}, expected {}); leak's stack {}: {}",
            variant.about,
            match &inferred {
                Ok(found) => format!("inferred {found}"),
                Err(why) => format!("WRONG ({why})"),
            },
            if exact { "exact" } else { "WRONG" },
            Counts::expected(),
            match &stack_wrong {
                None => "right".to_string(),
                Some(why) => format!("WRONG ({why})"),
            },
            stack(&report)
        ),
    }
}

/// What `auto` must infer for `pool.c` (`void *pool_get(size_t size)`,
/// `void pool_put(void *buffer)`): the size and the released pointer in
/// x0 at entry, the buffer in x0 at return.
const INFERRED: [(&str, &str); 3] = [
    ("size", "arg0"),
    ("alloc_id", "ret"),
    ("release_id", "arg0"),
];

/// The locations the observer inferred, when they are [`INFERRED`] and
/// each was inferred (not given); why not otherwise.
fn judge_locations(report: &Value) -> Result<String, String> {
    let locations = &report["locations"];
    let found: Vec<String> = INFERRED
        .iter()
        .map(|(field, _)| format!("{field} {}", locations[*field].as_str().unwrap_or("none")))
        .collect();
    let expected: Vec<String> = INFERRED
        .iter()
        .map(|(field, location)| format!("{field} {location}"))
        .collect();
    let inferred = locations["inferred"].as_array().map_or(0, Vec::len);
    if found != expected || inferred != INFERRED.len() {
        return Err(format!(
            "{} ({inferred} inferred), expected {} all inferred",
            found.join(", "),
            expected.join(", ")
        ));
    }
    Ok(found.join(", "))
}

/// The leak's callers, innermost first, as `pool.c` makes the calls.
const LEAK_CALLERS: [&str; 3] = ["pool_get", "serve_leaky", "main"];

/// Why the leak's stack is not the one `pool.c` makes, if it is not: the
/// top site (the leaked buffers) must have [`LEAK_CALLERS`], then glibc's
/// start (frames in libc.so.6, named `__libc_start_*` or not named at all)
/// down to `_start`; every one of its walks complete, and no frame of any
/// walk found by frame pointers where rows cover every frame (on the build
/// without frame pointers nothing else could walk it), some where the
/// program has no rows (the frame records walked it).
fn judge_stack(report: &Value, rows_everywhere: bool) -> Option<String> {
    let Some(site) = report.pointer("/sites/0") else {
        return Some("no site".into());
    };
    if site["buffers"].as_i64() != Some(LEAKS as i64) {
        return Some(format!("the top site has {} buffers", site["buffers"]));
    }
    let frames = site["frames"].as_array().cloned().unwrap_or_default();
    let name = |frame: &Value| frame["function"].as_str().map(str::to_string);
    let names: Vec<Option<String>> = frames.iter().map(name).collect();
    let top: Vec<Option<&str>> = names
        .iter()
        .take(LEAK_CALLERS.len())
        .map(Option::as_deref)
        .collect();
    if top != LEAK_CALLERS.map(Some) {
        return Some(format!("it does not start {}", LEAK_CALLERS.join(" <- ")));
    }
    let start = &frames[LEAK_CALLERS.len()..];
    if start.last().and_then(name).as_deref() != Some("_start") {
        return Some("it does not end at _start".into());
    }
    let in_libc = |frame: &Value| {
        frame["module"]
            .as_str()
            .is_some_and(|module| module.ends_with("/libc.so.6"))
    };
    let glibc_start = &start[..start.len() - 1];
    if glibc_start.is_empty()
        || !glibc_start.iter().all(|frame| {
            in_libc(frame) && name(frame).is_none_or(|n| n.starts_with("__libc_start_"))
        })
        || !glibc_start
            .iter()
            .any(|frame| name(frame).as_deref() == Some("__libc_start_main"))
    {
        return Some("main is not called by glibc's start (__libc_start_main)".into());
    }
    let endings: Vec<&str> = site["stacks"]
        .as_array()
        .map(|stacks| stacks.iter().filter_map(|s| s["ending"].as_str()).collect())
        .unwrap_or_default();
    if endings.is_empty() || endings.iter().any(|ending| *ending != "complete") {
        return Some(format!("walks ended {endings:?}"));
    }
    let by_frame_pointer = report
        .pointer("/counters/frames_by_frame_pointer")
        .and_then(Value::as_i64);
    let by_frame_pointer = by_frame_pointer.unwrap_or(-1);
    if rows_everywhere && by_frame_pointer != 0 {
        return Some(format!(
            "{by_frame_pointer} frames found by frame pointers, not rows"
        ));
    }
    if !rows_everywhere && by_frame_pointer <= 0 {
        return Some("no frame found by frame records, in a program without rows".into());
    }
    None
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
    let counter = |name: &str| {
        report
            .pointer(&format!("/counters/{name}"))
            .and_then(Value::as_i64)
            .unwrap_or(-1)
    };
    format!(
        "[{}] (walk ended: {ending}; frames by rows {}, by frame records {}, reused {})",
        frames.join(" <- "),
        counter("frames_unwound"),
        counter("frames_by_frame_pointer"),
        counter("frames_reused")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(size: &str, inferred: usize) -> Value {
        serde_json::json!({"locations": {
            "size": size, "alloc_id": "ret", "release_id": "arg0",
            "inferred": vec!["--… auto = …"; inferred],
        }})
    }

    #[test]
    fn locations_pass_only_when_all_inferred_as_expected() {
        assert_eq!(
            judge_locations(&report("arg0", 3)),
            Ok("size arg0, alloc_id ret, release_id arg0".to_string())
        );
        // Given, not inferred: the run does not show `auto` works.
        assert!(judge_locations(&report("arg0", 0)).is_err());
        assert!(judge_locations(&report("arg1", 3)).is_err());
        assert!(judge_locations(&serde_json::json!({})).is_err());
    }
}
