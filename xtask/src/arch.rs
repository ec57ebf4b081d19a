//! The processors the observer is shipped for, and what building and
//! running its static binary for each takes on this machine: the musl
//! target, a cross linker and an emulator where the processor is not this
//! machine's, and the Debian packages that provide them.

use std::fmt;

use anyhow::{bail, Result};

/// A processor the static binary is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// x86-64 (`x86_64-unknown-linux-musl`).
    #[value(name = "x86_64")]
    X86_64,
    /// arm64 (`aarch64-unknown-linux-musl`), e.g. Graviton-class servers.
    #[value(name = "aarch64")]
    Aarch64,
}

/// What a build for a processor other than this machine's needs.
pub struct Cross {
    /// Linker (and C compiler) for the target, from `packages`.
    pub gcc: &'static str,
    /// Runs the target's binaries here (user-mode emulation).
    pub runner: &'static str,
    /// Debian packages providing the two.
    pub packages: &'static [&'static str],
}

impl Arch {
    /// Every processor the observer is shipped for.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// This machine's processor (the one xtask was built for).
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// Where a function returning a large value by hidden pointer gets
    /// that pointer, in the observer's location language: the first
    /// argument on x86-64 (rdi), the indirect-result register x8 as it
    /// was at entry on arm64.
    pub fn hidden_result(self) -> &'static str {
        match self {
            Arch::X86_64 => "arg0",
            Arch::Aarch64 => "x8@entry",
        }
    }

    /// The name in target triples and dist file names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Rust target of the static build (musl links statically).
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The Rust target of programs linked against glibc, as the test
    /// targets are (the arm64 VMs' root file system is Debian's, with
    /// glibc).
    pub fn gnu_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The C compiler for its programs: this machine's `gcc`, or the
    /// cross compiler.
    pub fn gcc(self) -> Result<&'static str> {
        Ok(self.cross()?.map_or("gcc", |cross| cross.gcc))
    }

    /// Has `cargo` link for `target` (one of this processor's) with the
    /// cross linker, for Rust and for build scripts' C code (`cc`): nothing
    /// for this machine's processor. The caller passes `--target`.
    pub fn cross_link(self, cargo: &mut std::process::Command, target: &str) -> Result<()> {
        if let Some(cross) = self.cross()? {
            let triple = target.replace('-', "_");
            cargo
                .env(
                    format!("CARGO_TARGET_{}_LINKER", triple.to_uppercase()),
                    cross.gcc,
                )
                .env(format!("CC_{triple}"), cross.gcc);
        }
        Ok(())
    }

    /// The ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => object::elf::EM_X86_64,
            Arch::Aarch64 => object::elf::EM_AARCH64,
        }
    }

    /// `None` when this machine builds and runs its binaries natively;
    /// otherwise the cross toolchain and emulator (set up for an x86-64
    /// machine building arm64, the project's machines; anything else is
    /// refused).
    pub fn cross(self) -> Result<Option<Cross>> {
        match (Arch::host(), self) {
            (host, target) if host == target => Ok(None),
            (Arch::X86_64, Arch::Aarch64) => Ok(Some(Cross {
                gcc: "aarch64-linux-gnu-gcc",
                runner: "qemu-aarch64-static",
                packages: &[
                    "gcc-aarch64-linux-gnu",
                    "libc6-dev-arm64-cross",
                    "qemu-user-static",
                ],
            })),
            (host, target) => bail!("building for {target} on {host} is not set up"),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
