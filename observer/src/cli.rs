//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::attach::AttachOptions;
use crate::plan::{Location, ProbeRequest};
use crate::render::{Format, Reporter};
use crate::session::SessionOptions;

/// Finds leaking buffer pools in live Rust processes with eBPF uprobes.
#[derive(Debug, Parser)]
#[command(name = "observer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a running process and report buffers that were allocated
    /// from its pool and never released, grouped by allocating stack.
    Attach(AttachArgs),
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process to attach to.
    #[arg(short, long)]
    pub pid: u32,
    #[command(flatten)]
    pub probes: ProbeArgs,
    /// Stop after this long (e.g. 30s, 5m, 1h); default: until SIGINT/SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print a status line on stderr this often.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub interval: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Capacity of the kernel's live-buffer table.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_live: u32,
    /// Forward the eBPF programs' debug log to stderr (slow; debugging only).
    #[arg(long)]
    pub ebpf_log: bool,
}

/// Which functions to probe and where their values are.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The pool's allocate function, by path without hash
    /// (e.g. `bufpool::BufPool::allocate`, `Pool<*>::get` for every copy of a generic).
    #[arg(long, value_name = "FUNCTION")]
    pub alloc: String,
    /// Buffer size in bytes, evaluated when allocate returns (`argN` = value at entry).
    #[arg(long, value_name = "LOC", value_parser = Location::parse)]
    pub size: Location,
    /// Buffer identity, evaluated when allocate returns (`argN` = value at entry).
    #[arg(long, value_name = "LOC", value_parser = Location::parse)]
    pub alloc_id: Location,
    /// The pool's release function.
    #[arg(long, value_name = "FUNCTION")]
    pub release: String,
    /// Buffer identity at release's entry.
    #[arg(long, value_name = "LOC", value_parser = Location::parse)]
    pub release_id: Location,
}

/// How reports look and where they go.
#[derive(Debug, Args)]
pub struct OutputArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write each report to this file (replacing it) instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Sites shown in text reports.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Frames shown per site in text reports.
    #[arg(long, default_value_t = 12)]
    pub frames: usize,
    /// Stacks whose first N symbolized frames agree are one site (0: the
    /// whole stack must agree).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub group_depth: usize,
}

impl ProbeArgs {
    pub fn request(&self) -> ProbeRequest {
        ProbeRequest {
            alloc: self.alloc.clone(),
            release: self.release.clone(),
            size: self.size,
            alloc_id: self.alloc_id,
            release_id: self.release_id,
        }
    }
}

impl AttachArgs {
    pub fn attach_options(&self) -> AttachOptions {
        AttachOptions {
            max_live: self.max_live,
            ebpf_log: self.ebpf_log,
        }
    }

    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            duration: self.duration,
            interval: self.interval,
            group_depth: self.output.group_depth,
            reporter: Reporter {
                format: self.output.format,
                output: self.output.output.clone(),
                top: self.output.top,
                frames: self.output.frames,
            },
        }
    }
}

/// `500ms`, `30s`, `5m`, `2h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: write e.g. 30s, 5m, 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}': use ms, s, m or h"
            ))
        }
    };
    if seconds <= 0.0 {
        return Err(format!("'{text}' must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn bad_location_is_rejected_by_the_parser() {
        let err = Cli::try_parse_from([
            "observer",
            "attach",
            "--pid",
            "1",
            "--alloc",
            "a",
            "--size",
            "argx",
            "--alloc-id",
            "ret",
            "--release",
            "r",
            "--release-id",
            "arg1",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("bad location 'argx'"), "{err}");
    }
}
