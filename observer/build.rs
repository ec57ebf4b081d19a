//! Builds the eBPF programs (the `pool-observer-ebpf` crate's binary) for
//! the BPF target, as aya-build 0.2 did: `rustup run nightly cargo build
//! --manifest-path <its Cargo.toml> --bins --release --target
//! bpfel-unknown-none -Z build-std=core --message-format=json` with BTF
//! and full debug info, its program copied to `$OUT_DIR/observer-ebpf`
//! where `attach` embeds it. `cargo xtask setup` installs what that needs
//! (nightly's rust-src and bpf-linker).
//!
//! The sources are found through the eBPF crate itself, a
//! build-dependency (`observer_ebpf::SOURCE_DIR`), never by a path outside
//! this package: in this workspace they are `../observer-ebpf`, in a build
//! of the published crate they are cargo's copy of the published eBPF
//! crate, built with the `Cargo.lock` it ships.
//!
//! Unlike aya-build, only the inner build's real warnings and errors are
//! passed on (its progress lines are not warnings); when it fails, the
//! outer build fails with its errors shown. `AYA_BUILD_SKIP=1` (or `true`)
//! skips it, keeping whatever program an earlier build left, or an empty
//! placeholder where there is none (it compiles; loading it fails).

use std::env;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

/// The eBPF crate, and its binary: the program object.
const PACKAGE: &str = "pool-observer-ebpf";
const PROGRAM: &str = "observer-ebpf";
const SKIP: &str = "AYA_BUILD_SKIP";

fn main() {
    // Said plainly: an `Err` from main would add a backtrace of this script.
    if let Err(err) = build() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn build() -> Result<()> {
    println!("cargo:rerun-if-env-changed={SKIP}");
    if skip_requested() {
        println!("cargo:warning={SKIP} is set: the eBPF programs were not rebuilt");
        return ensure_placeholder();
    }
    let sources = Path::new(observer_ebpf::SOURCE_DIR);
    // The programs are a binary of another crate: cargo cannot see that we
    // depend on its sources, so say so (and on the lock file that pins
    // what they are built with).
    println!("cargo:rerun-if-changed={}", sources.display());
    if let Some(lock) = nearest_lock_file(sources) {
        println!("cargo:rerun-if-changed={}", lock.display());
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let program = build_programs(&sources.join("Cargo.toml"), &out_dir)?;
    let destination = out_dir.join(PROGRAM);
    std::fs::copy(&program, &destination).with_context(|| {
        format!(
            "cannot copy {} to {}",
            program.display(),
            destination.display()
        )
    })?;
    Ok(())
}

/// The `Cargo.lock` the inner build uses: the one of the workspace the
/// eBPF crate belongs to (this one), or the one the published crate ships.
fn nearest_lock_file(sources: &Path) -> Option<PathBuf> {
    sources
        .ancestors()
        .map(|dir| dir.join("Cargo.lock"))
        .find(|lock| lock.is_file())
}

/// With the build skipped, a target directory that never built the
/// programs (a fuzzing build, a check on a machine without bpf-linker) still
/// needs a file for `attach` to embed: an empty one, which compiles and is
/// refused when loaded. A program an earlier build left is kept.
fn ensure_placeholder() -> Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let destination = out_dir.join(PROGRAM);
    if !destination.exists() {
        std::fs::write(&destination, [])
            .with_context(|| format!("cannot write {}", destination.display()))?;
    }
    Ok(())
}

fn skip_requested() -> bool {
    env::var_os(SKIP).is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
}

/// What the inner build said and made.
#[derive(Default)]
struct InnerBuild {
    /// Warnings and errors, each with its context lines, in order.
    diagnostics: Vec<String>,
    /// The built program.
    program: Option<PathBuf>,
}

/// Runs the inner build; returns the built program, or fails with its
/// errors. Its warnings become cargo warnings of this package.
fn build_programs(manifest: &Path, out_dir: &Path) -> Result<PathBuf> {
    let mut command = inner_build_command(manifest, out_dir)?;
    let described = format!("{command:?}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {described}"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let cargo_lines = std::thread::spawn(move || diagnostics_of_cargo(BufReader::new(stderr)));
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut build = read_messages(BufReader::new(stdout))?;
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {described}"))?;
    build.diagnostics.extend(
        cargo_lines
            .join()
            .map_err(|_| anyhow!("reading the inner build's stderr failed"))?,
    );
    if !status.success() {
        for line in &build.diagnostics {
            eprintln!("{line}");
        }
        bail!("building the eBPF programs failed ({status}): the errors are above; the command was {described}");
    }
    for line in &build.diagnostics {
        println!("cargo:warning={line}");
    }
    build
        .program
        .with_context(|| format!("{described} built no {PROGRAM} program"))
}

fn inner_build_command(manifest: &Path, out_dir: &Path) -> Result<Command> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN not set")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endianness {other}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let mut command = if on_path("rustup") {
        let mut rustup = Command::new("rustup");
        rustup.args(["run", "nightly", "cargo"]);
        rustup
    } else {
        println!("cargo:warning=rustup is not on PATH: building the eBPF programs with the current toolchain, which must be a nightly");
        Command::new("cargo")
    };
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest)
        .args(["--package", PACKAGE, "--bins", "--release"])
        .args(["--message-format=json", "--target", target])
        .args(["-Z", "build-std=core"])
        // The profile the programs need, given here because a profile in
        // the eBPF crate's manifest would be ignored (with a warning) in
        // this workspace, and the workspace's is not published with it.
        .args([
            "--config",
            &format!("profile.release.package.{PACKAGE}.debug=2"),
        ])
        .args([
            "--config",
            &format!("profile.release.package.{PACKAGE}.codegen-units=1"),
        ])
        .arg("--target-dir")
        .arg(out_dir.join("ebpf-target"))
        .env("CARGO_ENCODED_RUSTFLAGS", bpf_rustflags(&arch))
        // The outer build's compiler is stable: let rustup pick nightly's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    Ok(command)
}

/// `bpf_target_arch` for aya-ebpf's register access, BTF for the loader,
/// full debug info (BTF is derived from it).
fn bpf_rustflags(arch: &str) -> OsString {
    let arch = if arch.starts_with("riscv64") {
        "riscv64"
    } else {
        arch
    };
    [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_string(),
        "-Clink-arg=--btf".to_string(),
    ]
    .join("\x1f")
    .into()
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Reads cargo's JSON messages: rustc's warnings and errors (rendered as
/// rustc would print them) and the built program.
fn read_messages(stdout: impl BufRead) -> Result<InnerBuild> {
    let mut build = InnerBuild::default();
    for line in stdout.lines() {
        let line = line.context("reading the inner build's output")?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            // Not cargo's: something a build script of the inner build printed.
            build
                .diagnostics
                .extend(diagnostics_of_cargo(line.as_bytes()));
            continue;
        };
        match message["reason"].as_str() {
            Some("compiler-message") => {
                let level = message["message"]["level"].as_str().unwrap_or_default();
                if level == "warning" || level.starts_with("error") {
                    let rendered = message["message"]["rendered"].as_str().unwrap_or_default();
                    build
                        .diagnostics
                        .extend(rendered.trim_end().lines().map(str::to_string));
                }
            }
            Some("compiler-artifact") if message["target"]["name"] == PROGRAM => {
                if let Some(executable) = message["executable"].as_str() {
                    build.program = Some(PathBuf::from(executable));
                }
            }
            _ => {}
        }
    }
    Ok(build)
}

/// Cargo's own warnings and errors from its human-readable output, each
/// with the lines that belong to it; progress lines (`   Compiling …`,
/// `    Finished …`) are dropped.
fn diagnostics_of_cargo(stderr: impl BufRead) -> Vec<String> {
    let mut kept = Vec::new();
    let mut in_diagnostic = false;
    for line in stderr.lines().map_while(Result::ok) {
        if line.starts_with("warning") || line.starts_with("error") {
            in_diagnostic = true;
        } else if is_progress(&line) {
            in_diagnostic = false;
        }
        if in_diagnostic {
            kept.push(line);
        }
    }
    kept
}

/// Cargo's progress lines: a capitalized verb right-aligned after spaces.
fn is_progress(line: &str) -> bool {
    line.starts_with(' ')
        && line.trim_start().split(' ').next().is_some_and(|verb| {
            verb.len() > 1
                && verb.starts_with(|c: char| c.is_ascii_uppercase())
                && verb[1..].chars().all(|c| c.is_ascii_lowercase())
        })
}
