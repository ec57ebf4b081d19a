//! Builds the observer and the target programs under `tests/`.

use std::path::PathBuf;

use anyhow::Result;

use crate::cmd::{cargo, checked, root};

/// A build of the target programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As the story had it, built like a production service: `cargo build
    /// --release`, no frame pointers.
    Leaky,
    /// With the story's fix (`--features leaky-gateway/fixed-disconnect`).
    Fixed,
    /// The leaky build with `-C force-frame-pointers=yes`, for comparing the
    /// frame-pointer walker with the unwinder (`cargo xtask bench`).
    FramePointers,
}

impl Variant {
    fn target_dir(self) -> PathBuf {
        root().join(match self {
            Variant::Leaky => "target/targets/release",
            Variant::Fixed => "target/targets/fixed",
            Variant::FramePointers => "target/targets/frame-pointers",
        })
    }

    fn rustflags(self) -> &'static str {
        match self {
            Variant::FramePointers => "-C force-frame-pointers=yes",
            Variant::Leaky | Variant::Fixed => "",
        }
    }
}

/// Where a variant's binaries end up.
pub fn targets_dir(variant: Variant) -> PathBuf {
    variant.target_dir().join("release")
}

/// `cargo build --release` of the `tests/` workspace.
pub fn build_targets(variant: Variant) -> Result<()> {
    println!("xtask: building the target programs ({variant:?})");
    let mut command = cargo();
    command
        .args(["build", "--release", "--manifest-path", "tests/Cargo.toml"])
        .arg("--target-dir")
        .arg(variant.target_dir())
        .env("RUSTFLAGS", variant.rustflags());
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
            .env("RUSTFLAGS", Variant::Leaky.rustflags()),
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
