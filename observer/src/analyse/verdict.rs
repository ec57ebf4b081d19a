//! Judging a run for CI: which outstanding buffers count as leaks, after
//! accepted sites (suppressions) and what an earlier run already had
//! (baseline), against thresholds.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::Report;
use crate::error::UserError;
use crate::symbolize::Frame;

/// What counts as failure.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub fail_on_leak: bool,
    /// Counted bytes above this are a leak.
    pub max_bytes: u64,
    /// Counted buffers above this are a leak.
    pub max_buffers: u64,
    pub baseline: Option<Baseline>,
    pub suppressions: Suppressions,
    /// Frames compared when matching sites with the baseline.
    pub depth: usize,
}

/// How one site was counted.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SiteJudgement {
    /// The suppression rule that matched, if any.
    pub suppressed_by: Option<String>,
    /// Outstanding in the baseline at the same site.
    pub baseline_buffers: i64,
    pub baseline_bytes: i64,
    /// What counts toward the verdict: growth over the baseline, 0 when
    /// suppressed.
    pub counted_buffers: i64,
    pub counted_bytes: i64,
}

/// The CI verdict of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub fail_on_leak: bool,
    pub max_bytes: u64,
    pub max_buffers: u64,
    pub baseline: Option<String>,
    pub suppression_rules: usize,
    pub counted_buffers: i64,
    pub counted_bytes: i64,
    /// Sites with something counted.
    pub counted_sites: usize,
    pub suppressed_sites: usize,
    /// Counted buffers or bytes exceed a threshold.
    pub leak_found: bool,
}

/// Annotates every site with its judgement and returns the verdict.
pub fn judge(report: &mut Report, gate: &Gate) -> Verdict {
    let mut verdict = Verdict {
        fail_on_leak: gate.fail_on_leak,
        max_bytes: gate.max_bytes,
        max_buffers: gate.max_buffers,
        baseline: gate.baseline.as_ref().map(|b| b.path.clone()),
        suppression_rules: gate.suppressions.rules.len(),
        counted_buffers: 0,
        counted_bytes: 0,
        counted_sites: 0,
        suppressed_sites: 0,
        leak_found: false,
    };
    for site in &mut report.sites {
        let suppressed_by = gate.suppressions.matching(&site.frames).map(str::to_string);
        let (baseline_buffers, baseline_bytes) = gate
            .baseline
            .as_ref()
            .map_or((0, 0), |b| b.outstanding_at(&site.frames, gate.depth));
        let (counted_buffers, counted_bytes) = if suppressed_by.is_some() {
            (0, 0)
        } else {
            (
                (site.buffers - baseline_buffers).max(0),
                (site.bytes - baseline_bytes).max(0),
            )
        };
        if suppressed_by.is_some() && site.buffers > 0 {
            verdict.suppressed_sites += 1;
        }
        if counted_buffers > 0 || counted_bytes > 0 {
            verdict.counted_sites += 1;
        }
        verdict.counted_buffers += counted_buffers;
        verdict.counted_bytes += counted_bytes;
        site.judgement = Some(SiteJudgement {
            suppressed_by,
            baseline_buffers,
            baseline_bytes,
            counted_buffers,
            counted_bytes,
        });
    }
    verdict.leak_found = verdict.counted_buffers > gate.max_buffers as i64
        || verdict.counted_bytes > gate.max_bytes as i64;
    verdict
}

/// LeakSanitizer-style suppressions: one `leak:PATTERN` per line, `#`
/// comments. A pattern matches a frame's function, file or module as a
/// substring; `*` matches anything, a leading `^` / trailing `$` anchor it.
#[derive(Debug, Clone, Default)]
pub struct Suppressions {
    rules: Vec<String>,
}

impl Suppressions {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read suppressions {}", path.display()))?;
        Self::parse(&text)
            .map_err(|err| UserError::new(format!("{}: {err}", path.display())).into())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.strip_prefix("leak:").map(str::trim) {
                Some(pattern) if !pattern.is_empty() => rules.push(pattern.to_string()),
                _ => {
                    return Err(format!(
                        "line {}: expected 'leak:PATTERN', found '{line}'",
                        index + 1
                    ))
                }
            }
        }
        Ok(Self { rules })
    }

    /// The first rule matching any frame.
    pub fn matching(&self, frames: &[Frame]) -> Option<&str> {
        self.rules
            .iter()
            .find(|rule| {
                frames.iter().any(|frame| {
                    [&frame.function, &frame.file, &frame.module]
                        .into_iter()
                        .flatten()
                        .any(|text| pattern_matches(rule, text))
                })
            })
            .map(String::as_str)
    }
}

fn pattern_matches(pattern: &str, text: &str) -> bool {
    let (start, core) = match pattern.strip_prefix('^') {
        Some(rest) => ("", rest),
        None => ("*", pattern),
    };
    let (core, end) = match core.strip_suffix('$') {
        Some(rest) => (rest, ""),
        None => (core, "*"),
    };
    glob(format!("{start}{core}{end}").as_bytes(), text.as_bytes())
}

/// `*`-only glob matching the whole text (iterative, with backtracking to
/// the last star).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Frames as (function, line): what identifies a site across runs (paths
/// and addresses differ between checkouts and processes).
type Signature = Vec<(Option<String>, Option<u64>)>;

/// Sites of an earlier JSON report, to compare against.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub path: String,
    sites: Vec<(Signature, i64, i64)>,
}

impl Baseline {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read baseline {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
            .map_err(|err| UserError::new(format!("baseline {}: {err:#}", path.display())).into())
    }

    /// Parses a report written with `--format json`: the whole file, or its
    /// last line when it holds a stream of reports.
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let report: serde_json::Value = match serde_json::from_str(text) {
            Ok(report) => report,
            Err(_) => {
                let line = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .context("the file is empty")?;
                serde_json::from_str(line)
                    .context("not a JSON report (write it with --format json)")?
            }
        };
        if report["version"] != super::REPORT_VERSION {
            bail!(
                "report version {} is not {}",
                report["version"],
                super::REPORT_VERSION
            );
        }
        let sites = report["sites"]
            .as_array()
            .context("no sites array")?
            .iter()
            .map(|site| {
                let signature = site["frames"]
                    .as_array()
                    .map(|frames| {
                        frames
                            .iter()
                            .map(|f| {
                                (
                                    f["function"].as_str().map(str::to_string),
                                    f["line"].as_u64(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    signature,
                    site["buffers"].as_i64().unwrap_or(0),
                    site["bytes"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        Ok(Self {
            path: path.to_string(),
            sites,
        })
    }

    /// Outstanding (buffers, bytes) of baseline sites that agree with
    /// `frames` on their first `depth` frames (function and line; paths
    /// differ between checkouts). A site whose frames were cut short (its
    /// stacks diverge, or a walk ended early) agrees on as many as it has.
    pub fn outstanding_at(&self, frames: &[Frame], depth: usize) -> (i64, i64) {
        let ours: Signature = frames
            .iter()
            .map(|f| (f.function.clone(), f.line.map(u64::from)))
            .collect();
        self.sites
            .iter()
            .filter(|(theirs, _, _)| {
                let limit = if depth == 0 { usize::MAX } else { depth };
                let n = limit.min(ours.len()).min(theirs.len());
                n > 0 && ours[..n] == theirs[..n]
            })
            .fold((0, 0), |(n, b), (_, dn, db)| (n + dn, b + db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::group::tests::frame;

    #[test]
    fn suppression_patterns() {
        assert!(pattern_matches(
            "say_goodbye",
            "a::Session::say_goodbye::{{closure}}"
        ));
        assert!(pattern_matches("^a::Session", "a::Session::x"));
        assert!(!pattern_matches("^Session", "a::Session::x"));
        assert!(pattern_matches("codec.rs$", "src/codec.rs"));
        assert!(!pattern_matches("codec$", "src/codec.rs"));
        assert!(pattern_matches(
            "Session::*goodbye",
            "a::Session::say_goodbye"
        ));
        assert!(!pattern_matches(
            "goodbye*Session",
            "a::Session::say_goodbye"
        ));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("codec.rs$", "src/codec.rs.d/codec.rs"));
    }

    #[test]
    fn suppressions_file_syntax() {
        let s =
            Suppressions::parse("# accepted\n\nleak:say_goodbye\n  leak: codec.rs$ \n").unwrap();
        assert_eq!(s.rules, vec!["say_goodbye", "codec.rs$"]);
        let frames = vec![frame("alloc", 1), frame("x::say_goodbye", 2)];
        assert_eq!(s.matching(&frames), Some("say_goodbye"));
        assert_eq!(s.matching(&[frame("alloc", 1)]), None);
        let err = Suppressions::parse("leak:a\nleek:b\n").unwrap_err();
        assert_eq!(err, "line 2: expected 'leak:PATTERN', found 'leek:b'");
    }

    #[test]
    fn baseline_matches_by_function_and_line() {
        let json = r#"{"version":1,"sites":[
            {"buffers":10,"bytes":2560,"frames":[{"function":"alloc","line":1},{"function":"enc","line":2},{"function":"x","line":3}]},
            {"buffers":1,"bytes":64,"frames":[{"function":"alloc","line":1},{"function":"dec","line":7}]}]}"#;
        let baseline = Baseline::parse(json, "b.json").unwrap();
        let frames = vec![frame("alloc", 1), frame("enc", 2), frame("y", 3)];
        assert_eq!(baseline.outstanding_at(&frames, 2), (10, 2560));
        assert_eq!(baseline.outstanding_at(&frames, 3), (0, 0));
        // Cut short, it still agrees with the baseline site on what it has.
        assert_eq!(baseline.outstanding_at(&frames[..2], 16), (10, 2560));
        assert_eq!(
            baseline.outstanding_at(&[frame("alloc", 1)], 16),
            (11, 2624)
        );
        assert!(Baseline::parse("{\"version\":9,\"sites\":[]}", "b").is_err());
        assert!(Baseline::parse("", "b").is_err());
    }
}
