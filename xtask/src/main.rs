//! Project tasks: `cargo xtask setup | demo | test | lint | kernels | bench | targets | dist | fuzz`.

mod arch;
mod bench;
mod cmd;
mod demo;
mod dist;
mod fuzz;
mod kernels;
mod kernels_arm64;
mod setup;
mod targets;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Set-up, demo and tests of the pool observer")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make this machine able to build eBPF programs (idempotent).
    Setup,
    /// Build everything, run the leaky gateway, drive traffic, attach the
    /// observer and print its report.
    Demo {
        /// Sessions driven while the observer is attached.
        #[arg(long, default_value_t = demo::SESSIONS)]
        sessions: usize,
    },
    /// Set-up, build, unit tests and end-to-end tests against real probes.
    Test,
    /// rustfmt check and clippy (userspace workspace, then the eBPF crate).
    Lint,
    /// The kernel-side end-to-end tests in VMs booted with Debian's LTS
    /// kernels (5.10, 6.1, 6.12), under QEMU's emulation; `--arch aarch64`:
    /// the arm64 observer on Debian's arm64 6.12 and 6.1 (both are steps
    /// of `test`).
    Kernels {
        /// Only these kernels (e.g. 6.1).
        only: Vec<String>,
        /// The processor of the VMs and the observer (default: x86_64).
        #[arg(long, value_enum, default_value_t = arch::Arch::X86_64)]
        arch: arch::Arch,
        /// Write the results into README.md's table of tested kernels
        /// (when every kernel passed).
        #[arg(long)]
        update_readme: bool,
    },
    /// What the probes cost the target: ratios measured in one run.
    Bench {
        /// Write the results into README.md's cost table.
        #[arg(long)]
        update_readme: bool,
        /// Only the cells that tell kernels apart, few pairs, with this
        /// observer binary and the targets already built: what the kernel
        /// matrix runs in each VM.
        #[arg(long, value_name = "OBSERVER", conflicts_with = "update_readme")]
        quick_with: Option<std::path::PathBuf>,
        /// Where to write the results (JSON lines).
        #[arg(long, default_value_os_t = bench::default_results())]
        results: std::path::PathBuf,
    },
    /// Build target programs only, for running end-to-end tests by hand:
    /// `leaky`, `fixed`, `corpus`, `real-crates`, `lto` (all when none is
    /// named).
    Targets { only: Vec<String> },
    /// One static binary (musl) per processor with the eBPF programs
    /// embedded, and its SHA-256, in target/dist/, built from the
    /// packaged crates and run once (another processor's under qemu-user).
    Dist {
        /// Only these processors (all when none is named).
        #[arg(long, value_enum)]
        arch: Vec<arch::Arch>,
    },
    /// Fuzz the parsers of untrusted input (cargo-fuzz, one target at a
    /// time); fails naming each reproducer found.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::LONG_SECONDS)]
        seconds: u64,
        /// Targets to run (all when none is named).
        targets: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Demo { sessions } => demo::run(sessions),
        Task::Test => test::run(),
        Task::Lint => test::lint(),
        Task::Kernels {
            only,
            arch,
            update_readme,
        } => match arch {
            arch::Arch::X86_64 => test::kernels(&only, update_readme),
            arch::Arch::Aarch64 if update_readme => Err(anyhow::anyhow!(
                "--update-readme is for the x86_64 matrix only"
            )),
            arch::Arch::Aarch64 => test::kernels_arm64(&only),
        },
        Task::Bench {
            update_readme,
            quick_with,
            results,
        } => match quick_with {
            Some(observer) => bench::run(&bench::Plan::quick(observer), &results, false),
            None => bench::Plan::full().and_then(|plan| bench::run(&plan, &results, update_readme)),
        },
        Task::Targets { only } => targets::build_named(&only),
        Task::Dist { arch } => dist::build_all(&arch),
        Task::Fuzz { seconds, targets } => fuzz::run(seconds, &targets),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
