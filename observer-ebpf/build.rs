//! Declares the `bpf_target_arch` cfg that selects the programs'
//! architecture module (`src/arch/`), and supplies it where no build did.
//!
//! The observer's build passes `--cfg bpf_target_arch="<its target's
//! arch>"` to the whole eBPF build, and cargo then reports it here as
//! `CARGO_CFG_BPF_TARGET_ARCH`. A build of this crate alone for the BPF
//! target (clippy in `cargo xtask lint`) has none; it then gets the one
//! aya-ebpf's bindings choose in that case, so both agree:
//! `AYA_BPF_TARGET_ARCH` when set, else the host's architecture. Builds
//! for any other target (the shared types in userspace) get their own
//! target's architecture: the location encoding (`src/arch/loc_*.rs`)
//! differs per architecture, and the observer built for a machine must use
//! that machine's numbering.

use std::env;

/// The architectures `src/arch/` has a module for.
const ARCHITECTURES: [&str; 2] = ["x86_64", "aarch64"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\"))");
    println!("cargo::rerun-if-env-changed=AYA_BPF_TARGET_ARCH");
    println!("cargo::rerun-if-env-changed=CARGO_CFG_BPF_TARGET_ARCH");
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if env::var_os("CARGO_CFG_BPF_TARGET_ARCH").is_some() {
        return;
    }
    let arch = if target_arch == "bpf" {
        env::var("AYA_BPF_TARGET_ARCH").unwrap_or_else(|_| host_arch())
    } else {
        target_arch
    };
    if !ARCHITECTURES.contains(&arch.as_str()) {
        // The programs' own compile_error! names the supported ones.
        println!("cargo::warning=bpf_target_arch {arch} has no module in src/arch/");
    }
    println!("cargo::rustc-cfg=bpf_target_arch=\"{arch}\"");
}

/// The first component of the host's target triple (`x86_64`, `aarch64`).
fn host_arch() -> String {
    let host = env::var("HOST").unwrap_or_default();
    host.split('-').next().unwrap_or_default().to_string()
}
