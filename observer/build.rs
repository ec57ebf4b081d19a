//! Builds the eBPF object with aya-build (nightly, `-Z build-std=core`,
//! bpf-linker); `cargo xtask setup` installs what that needs.
use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    let metadata_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("observer has a parent directory")?
        .join("observer-ebpf");
    let root_dir = metadata_dir.to_str().context("non-UTF-8 path")?;
    let package = aya_build::Package {
        name: "observer-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
