//! JSON: the report model serialized as one line.

use anyhow::Result;

use crate::analyse::Report;

pub fn render(report: &Report) -> Result<String> {
    let mut line = serde_json::to_string(report)?;
    line.push('\n');
    Ok(line)
}
