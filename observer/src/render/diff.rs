//! Rendering a diff between two marks.

use std::fmt::Write as _;

use anyhow::Result;

use super::text::bytes;
use super::{Format, Reporter};
use crate::analyse::diff::{Delta, Diff};

pub fn render(diff: &Diff, format: Format, reporter: &Reporter) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string(diff)? + "\n",
        // A pprof diff is a profile of the changes, made from the marks
        // themselves (`render::pprof::of_diff`); text stands in elsewhere.
        Format::Text | Format::Folded | Format::Pprof => text(diff, reporter),
    })
}

fn text(diff: &Diff, reporter: &Reporter) -> String {
    let mut out = String::new();
    let per = diff
        .per
        .map(|n| format!(", per {n} cycles"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "diff '{}' → '{}' ({:.1}s apart{per})",
        diff.from, diff.to, diff.elapsed_secs
    );
    let _ = writeln!(out, "  total: {}", delta(&diff.total));
    let _ = writeln!(
        out,
        "  {} sites changed, {} unchanged\n",
        diff.sites.len(),
        diff.unchanged_sites
    );
    for site in diff.sites.iter().take(reporter.top) {
        let _ = writeln!(out, "#{:<3} {}", site.rank, delta(&site.delta));
        for frame in site.frames.iter().take(reporter.frames) {
            let _ = writeln!(out, "      {}", super::text::frame_line(frame));
        }
        out.push('\n');
    }
    out
}

/// `+256 B (1 buffer) per cycle   [+25600 B (25.0 KiB), +100 buffers in all]`.
pub fn delta(delta: &Delta) -> String {
    let all = format!("{} B, {:+} buffers", signed(delta.bytes), delta.buffers);
    match (delta.bytes_per_cycle, delta.buffers_per_cycle) {
        (Some(bytes_per), Some(buffers_per)) => {
            let count = if (buffers_per - 1.0).abs() < 1e-9 {
                "1 buffer".to_string()
            } else {
                format!("{} buffers", trim(buffers_per))
            };
            let sign = if bytes_per < 0.0 { "" } else { "+" };
            format!(
                "{sign}{} B ({count}) per cycle   [{all} in all]",
                trim(bytes_per)
            )
        }
        _ => format!(
            "{} ({:+} buffers)",
            signed_human(delta.bytes),
            delta.buffers
        ),
    }
}

fn signed(value: i64) -> String {
    format!("{value:+}")
}

fn signed_human(value: i64) -> String {
    let text = bytes(value);
    if value > 0 {
        format!("+{text}")
    } else {
        text
    }
}

/// `1`, `0.5`, `2.33`: no trailing zeros.
fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cycle_wording() {
        let d = Delta {
            buffers: 100,
            bytes: 25600,
            buffers_per_cycle: Some(1.0),
            bytes_per_cycle: Some(256.0),
        };
        assert_eq!(
            delta(&d),
            "+256 B (1 buffer) per cycle   [+25600 B, +100 buffers in all]"
        );
        let d = Delta {
            buffers: 3,
            bytes: 768,
            buffers_per_cycle: Some(1.5),
            bytes_per_cycle: Some(384.0),
        };
        assert!(delta(&d).starts_with("+384 B (1.5 buffers) per cycle"));
        let d = Delta {
            buffers: -2,
            bytes: -2048,
            buffers_per_cycle: None,
            bytes_per_cycle: None,
        };
        assert_eq!(delta(&d), "-2048 B (-2.0 KiB) (-2 buffers)");
    }
}
