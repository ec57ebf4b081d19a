//! Builds the observer and the target programs under `tests/`.

use std::path::PathBuf;

use anyhow::Result;

use crate::cmd::{cargo, checked, root};

/// How the target programs are compiled. Frame pointers are the only
/// concession for now: the kernel's stack walker follows them.
pub const TARGET_RUSTFLAGS: &str = "-C force-frame-pointers=yes";

/// Where the target programs' binaries end up.
pub fn targets_dir() -> PathBuf {
    root().join("target/targets/fp/release")
}

/// `cargo build --release` of the `tests/` workspace with [`TARGET_RUSTFLAGS`].
pub fn build_targets() -> Result<()> {
    println!("xtask: building the target programs ({TARGET_RUSTFLAGS})");
    checked(
        cargo()
            .args(["build", "--release", "--manifest-path", "tests/Cargo.toml"])
            .arg("--target-dir")
            .arg(root().join("target/targets/fp"))
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
