//! `cargo xtask fuzz`: the parsers that read untrusted bytes (the location
//! language, command-line values, control socket lines, `/proc/PID/maps`
//! lines, Rust paths, and ELF, DWARF, `.eh_frame` and machine code of
//! arbitrary files), fuzzed with cargo-fuzz (libFuzzer) one target at a
//! time. The fuzz crate is `observer/fuzz`; `cargo xtask test` runs every
//! target for a few seconds.

mod libfuzzer;
mod seeds;

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::cmd::{checked, command, root};
use crate::setup;

/// Seconds per target of `cargo xtask fuzz` without `--seconds`.
pub const LONG_SECONDS: u64 = 180;

/// Seconds per target of the smoke run in `cargo xtask test`: enough to
/// run every seed and a few hundred thousand mutations of the small ones.
pub const SMOKE_SECONDS: u64 = 5;

/// Largest input of the ELF targets: real small libraries fit, and a
/// mutation is still cheap to run.
const ELF_MAX_LEN: usize = 1 << 20;

/// One fuzz target of `observer/fuzz` and how libFuzzer runs it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// `-max_len`: the longest input worth trying.
    max_len: usize,
    /// `-timeout`: seconds one input may take before it counts as a hang.
    timeout: u32,
    /// `-rss_limit_mb`: memory beyond which the input counts as a blow-up.
    rss_limit_mb: u32,
    /// Seeded with the ELF files made at run time (see [`seeds`]).
    elf: bool,
}

/// Every target, in the order they run. Text targets are bounded by what
/// reaches them (a control request by its 4 KiB limit, the rest a little
/// beyond the longest sensible value); ELF targets by [`ELF_MAX_LEN`].
pub const TARGETS: [Target; 9] = [
    text("location", 256),
    text("values", 8192),
    text("control", 8192),
    text("maps", 4096),
    text("rust_path", 65536),
    elf("elf"),
    elf("eh_frame"),
    elf("dwarf"),
    elf("machine_code"),
];

const fn text(name: &'static str, max_len: usize) -> Target {
    Target {
        name,
        max_len,
        timeout: 5,
        rss_limit_mb: 1024,
        elf: false,
    }
}

const fn elf(name: &'static str) -> Target {
    Target {
        name,
        max_len: ELF_MAX_LEN,
        timeout: 20,
        rss_limit_mb: 2048,
        elf: true,
    }
}

/// The fuzz crate, relative to the repository root.
const FUZZ_DIR: &str = "observer/fuzz";

/// `cargo xtask fuzz [--seconds N] [TARGET...]`: every named target (all
/// when none is) for `seconds` each; fails listing every finding.
pub fn run(seconds: u64, names: &[String]) -> Result<()> {
    let targets = chosen(names)?;
    setup::run()?;
    fuzz(&targets, seconds, false)
}

/// The smoke run of `cargo xtask test`: every target, [`SMOKE_SECONDS`]
/// each, quietly unless something is found.
pub fn smoke() -> Result<()> {
    fuzz(&TARGETS, SMOKE_SECONDS, true)
}

fn chosen(names: &[String]) -> Result<Vec<Target>> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    names
        .iter()
        .map(|name| match TARGETS.iter().find(|t| t.name == name) {
            Some(target) => Ok(*target),
            None => bail!(
                "no fuzz target '{name}': the targets are {}",
                TARGETS.map(|t| t.name).join(", ")
            ),
        })
        .collect()
}

/// Builds the targets, makes the ELF seeds, runs each target in turn.
fn fuzz(targets: &[Target], seconds: u64, quiet: bool) -> Result<()> {
    build()?;
    let elf_seeds = if targets.iter().any(|t| t.elf) {
        Some(seeds::elf_seeds(ELF_MAX_LEN)?)
    } else {
        None
    };
    let mut findings = Vec::new();
    for target in targets {
        let mut corpora = vec![fuzz_dir().join("corpus").join(target.name)];
        let committed = fuzz_dir().join("seeds").join(target.name);
        if committed.is_dir() {
            corpora.push(committed);
        }
        if target.elf {
            corpora.extend(elf_seeds.clone());
        }
        let outcome = libfuzzer::run(target, &corpora, seconds, quiet)?;
        println!("fuzz: {}: {outcome}", target.name);
        if let Some(finding) = outcome.finding() {
            findings.push(format!("{}: {finding}", target.name));
        }
    }
    if !findings.is_empty() {
        bail!(
            "fuzzing found {} problem(s):\n  {}\nreproduce one with `{}`",
            findings.len(),
            findings.join("\n  "),
            reproduce_command("TARGET", "REPRODUCER")
        );
    }
    Ok(())
}

/// `cargo fuzz build` of every target, optimized with debug assertions and
/// overflow checks (cargo-fuzz's default), without a sanitizer: the code
/// under test is safe Rust, so a sanitizer would only slow it down; panics,
/// hangs and memory blow-ups are what is looked for. The eBPF programs are
/// not built (`AYA_BUILD_SKIP`): nothing here loads them.
fn build() -> Result<()> {
    println!("fuzz: building the fuzz targets (nightly, cargo-fuzz)");
    checked(cargo_fuzz().arg("build").args(common_args()))
}

/// rustfmt and clippy on the fuzz crate (its own workspace, so not seen
/// by the workspace's), with the toolchain that builds it.
pub fn lint() -> Result<()> {
    let manifest = format!("{FUZZ_DIR}/Cargo.toml");
    checked(nightly_cargo().args(["fmt", "--check", "--manifest-path", &manifest]))?;
    checked(
        nightly_cargo()
            .args(["clippy", "--manifest-path", &manifest, "--all-targets"])
            .args(["--", "-D", "warnings"]),
    )
}

/// `rustup run nightly cargo`, from the repository root, with the eBPF
/// build skipped (nothing here loads the programs).
fn nightly_cargo() -> std::process::Command {
    let mut command = command("rustup");
    command
        .args(["run", setup::TOOLCHAIN, "cargo"])
        .env("AYA_BUILD_SKIP", "1");
    command
}

/// `rustup run nightly cargo fuzz`, from the repository root, with the
/// eBPF build skipped.
fn cargo_fuzz() -> std::process::Command {
    let mut command = nightly_cargo();
    command.arg("fuzz");
    command
}

/// Arguments every `cargo fuzz build` and `run` gets, so that a run never
/// rebuilds with other flags.
fn common_args() -> [&'static str; 4] {
    ["--fuzz-dir", FUZZ_DIR, "--sanitizer", "none"]
}

fn fuzz_dir() -> PathBuf {
    root().join(FUZZ_DIR)
}

/// How to run one reproducer again (from the repository root).
pub fn reproduce_command(target: &str, input: &str) -> String {
    format!(
        "AYA_BUILD_SKIP=1 cargo +{} fuzz run {} {target} {input}",
        setup::TOOLCHAIN,
        common_args().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target added to the fuzz crate without an entry here would never
    /// run; one listed here without a source would fail only when run.
    #[test]
    fn every_fuzz_target_is_listed_once() {
        let mut sources: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "rs"))
            .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        sources.sort();
        let mut listed: Vec<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
        listed.sort();
        assert_eq!(listed, sources);
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for name in &listed {
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "{name} has no [[bin]] in {FUZZ_DIR}/Cargo.toml"
            );
        }
    }

    #[test]
    fn unknown_targets_are_named_with_the_choices() {
        let err = chosen(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("no fuzz target 'nope'"), "{err}");
        assert!(err.contains("location, values"), "{err}");
        let picked = chosen(&["dwarf".into()]).unwrap();
        assert_eq!(picked.len(), 1);
        assert!(picked[0].elf);
        assert_eq!(chosen(&[]).unwrap().len(), TARGETS.len());
    }
}
