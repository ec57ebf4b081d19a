//! Builds the observer and the target programs under `tests/`.

use std::path::PathBuf;

use anyhow::Result;

use crate::cmd::{cargo, checked, root};

/// How the target programs are compiled. Frame pointers are the only
/// concession for now: the kernel's stack walker follows them.
pub const TARGET_RUSTFLAGS: &str = "-C force-frame-pointers=yes";

/// A build of the target programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As the story had it: the gateway leaks on every disconnect.
    Leaky,
    /// With the story's fix (`--features leaky-gateway/fixed-disconnect`).
    Fixed,
}

impl Variant {
    fn target_dir(self) -> PathBuf {
        root().join(match self {
            Variant::Leaky => "target/targets/fp",
            Variant::Fixed => "target/targets/fp-fixed",
        })
    }
}

/// Where a variant's binaries end up.
pub fn targets_dir(variant: Variant) -> PathBuf {
    variant.target_dir().join("release")
}

/// `cargo build --release` of the `tests/` workspace with [`TARGET_RUSTFLAGS`].
pub fn build_targets(variant: Variant) -> Result<()> {
    println!("xtask: building the target programs, {variant:?} ({TARGET_RUSTFLAGS})");
    let mut command = cargo();
    command
        .args(["build", "--release", "--manifest-path", "tests/Cargo.toml"])
        .arg("--target-dir")
        .arg(variant.target_dir())
        .env("RUSTFLAGS", TARGET_RUSTFLAGS);
    if variant == Variant::Fixed {
        command.args(["--features", "leaky-gateway/fixed-disconnect"]);
    }
    checked(&mut command)
}

/// Runs the target programs' own unit tests (in the leaky variant's build).
pub fn test_targets() -> Result<()> {
    checked(
        cargo()
            .args(["test", "--release", "--manifest-path", "tests/Cargo.toml"])
            .arg("--target-dir")
            .arg(Variant::Leaky.target_dir())
            .env("RUSTFLAGS", TARGET_RUSTFLAGS),
    )
}

/// Builds the observer (and its eBPF object) in the given profile.
pub fn build_observer(release: bool) -> Result<()> {
    println!("xtask: building the observer");
    let mut command = cargo();
    command.args(["build", "--package", "observer"]);
    if release {
        command.arg("--release");
    }
    checked(&mut command)
}
