//! Project tasks: `cargo xtask setup | demo | test | lint | bench | fuzz`.

mod bench;
mod cmd;
mod demo;
mod fuzz;
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
        #[arg(long, default_value_t = 200)]
        sessions: usize,
    },
    /// Set-up, build, unit tests and end-to-end tests against real probes.
    Test,
    /// rustfmt check and clippy (userspace workspace, then the eBPF crate).
    Lint,
    /// What the probes cost the target: ratios measured in one run.
    Bench,
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
        Task::Bench => bench::run(),
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
