//! Stage 7 — render a report for a person (text) or a machine (JSON), and
//! deliver it to stdout or a file.

pub mod chart;
pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod json;
pub mod text;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::analyse::Report;

/// Output format of reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// For a person.
    Text,
    /// One line of JSON per report (docs/report-format.md).
    Json,
    /// One `outermost;…;innermost bytes` line per site, for flame graph tools.
    Folded,
}

/// Renders and delivers reports.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub format: Format,
    /// Replace this file with each report; stdout when `None`.
    pub output: Option<PathBuf>,
    /// Sites shown in text reports.
    pub top: usize,
    /// Frames shown per site in text reports.
    pub frames: usize,
}

impl Reporter {
    pub fn render(&self, report: &Report) -> Result<String> {
        Ok(match self.format {
            Format::Text => text::render(report, self.top, self.frames),
            Format::Json => json::render(report)?,
            Format::Folded => folded::render(report),
        })
    }

    /// Writes `report`: to stdout (a JSON report is one line, so a stream of
    /// reports is JSON Lines), or atomically replacing the output file.
    pub fn emit(&self, report: &Report) -> Result<()> {
        let rendered = self.render(report)?;
        match &self.output {
            Some(path) => replace_file(path, &rendered),
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(rendered.as_bytes())?;
                stdout.flush().context("writing the report to stdout")
            }
        }
    }
}

/// Writes `contents` next to `path` and renames it over `path`, so a reader
/// never sees half a report.
fn replace_file(path: &Path, contents: &str) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, contents)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}
