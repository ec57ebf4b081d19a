//! Flame graph (SVG, inferno) of outstanding bytes by allocating stack.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::folded;
use crate::analyse::Report;

/// Writes the flame graph; `false` when nothing is outstanding (a flame
/// graph of nothing cannot be drawn, and no file is written).
pub fn write(path: &Path, report: &Report) -> Result<bool> {
    let lines = folded::lines(report);
    if lines.is_empty() {
        return Ok(false);
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = format!("Outstanding pool bytes, pid {}", report.target.pid);
    options.count_name = "bytes".into();
    options.name_type = "Site:".into();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .context("drawing the flame graph")?;
    super::replace_file(path, &svg)?;
    Ok(true)
}
