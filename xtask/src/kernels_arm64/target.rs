//! The arm64 target programs run in the VM: `pool.c` (next to this file)
//! cross-compiled by Debian's `aarch64-linux-gnu-gcc`, with frame
//! pointers, with return addresses signed too (`pac-ret`, checked in the
//! disassembly), without frame pointers (only `.eh_frame` can walk it:
//! `serve_leaky` saves x30 alone, and x29 is not a frame chain), and with
//! frame pointers but no unwind tables of its own (only the frame records
//! can walk it, up to glibc's rows), dynamically linked against glibc like
//! most programs (the guest's root file system is Debian's).

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{checked, command, output, root};

/// Buffers got and put back by each run.
pub const ROUNDS: u64 = 100;
/// Buffers kept until exit by each run.
pub const LEAKS: u64 = 7;
/// Size of a kept buffer.
pub const LEAKED_SIZE: u64 = 48;

/// One build of the target.
pub struct Variant {
    /// The file name in the VM's `bin/`, and the report's name.
    pub name: &'static str,
    /// What it is, for people.
    pub about: &'static str,
    flags: &'static [&'static str],
    /// True when `.eh_frame` rows cover every frame of the leak's stack;
    /// false when the program has none (its frames are walked by frame
    /// records).
    pub rows_everywhere: bool,
}

/// Every build.
pub const VARIANTS: [Variant; 4] = [
    Variant {
        name: "pool-fp",
        about: "frame pointers",
        flags: &["-fno-omit-frame-pointer"],
        rows_everywhere: true,
    },
    Variant {
        name: "pool-pac",
        about: "frame pointers, return addresses signed (-mbranch-protection=pac-ret)",
        flags: &["-fno-omit-frame-pointer", "-mbranch-protection=pac-ret"],
        rows_everywhere: true,
    },
    Variant {
        name: "pool-nofp",
        about: "no frame pointers, return addresses signed",
        flags: &["-fomit-frame-pointer", "-mbranch-protection=pac-ret"],
        rows_everywhere: true,
    },
    Variant {
        name: "pool-norows",
        about: "frame pointers, no .eh_frame of its own",
        flags: &[
            "-fno-omit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
        rows_everywhere: false,
    },
];

/// Compiles every variant into `bin`.
pub fn build_all(bin: &Path) -> Result<()> {
    let source = root().join("xtask/src/kernels_arm64/pool.c");
    for variant in &VARIANTS {
        let binary = bin.join(variant.name);
        checked(
            command("aarch64-linux-gnu-gcc")
                .args([
                    "-O1",
                    "-g",
                    "-fno-optimize-sibling-calls",
                    "-Wall",
                    "-Werror",
                ])
                .args(variant.flags)
                .arg("-o")
                .arg(&binary)
                .arg(&source),
        )
        .with_context(|| format!("cannot cross-compile {}", variant.name))?;
        if variant.flags.iter().any(|flag| flag.contains("pac-ret")) {
            check_signed(&binary)?;
        }
    }
    Ok(())
}

/// The pac-ret build signs pool_get's return address (`paciasp`).
fn check_signed(binary: &Path) -> Result<()> {
    let disassembly = output(
        command("aarch64-linux-gnu-objdump")
            .args(["-d", "--disassemble=pool_get"])
            .arg(binary),
    )?;
    if !String::from_utf8_lossy(&disassembly.stdout).contains("paciasp") {
        bail!(
            "{} was built with pac-ret but pool_get has no paciasp",
            binary.display()
        );
    }
    Ok(())
}
