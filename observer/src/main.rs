//! `observer`: parses the command line and wires the stages together.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;
use observer::attach;
use observer::cli::{AttachArgs, Cli, Command};
use observer::error::one_line;
use observer::plan::ProbePlan;
use observer::resolve::elf::ElfInfo;
use observer::resolve::process::Process;
use observer::session::{self, Observed, Signals};
use observer::symbolize::Symbolizer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Attach(args) => attach_command(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("observer: error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

async fn attach_command(args: AttachArgs) -> Result<()> {
    if args.ebpf_log {
        // The eBPF programs' records carry their crate as the log target.
        env_logger::Builder::new()
            .filter_level(log::LevelFilter::Warn)
            .filter_module("observer_ebpf", log::LevelFilter::Trace)
            .init();
    }
    let signals = Signals::install()?;
    attach::check_privileges()?;
    let process = Process::open(args.pid)?;
    let elf = ElfInfo::read(&process.exe_path())?;
    let plan = ProbePlan::new(
        process.pid,
        process.exe_path(),
        &elf,
        &process.exe_display,
        &args.probes.request(),
    )?;
    let symbolizer = Symbolizer::new(&process)?;
    let attachment = attach::attach(&plan, args.attach_options())?;
    let observed = Observed {
        process,
        plan,
        build_id: elf.build_id.clone(),
        symbolizer,
        attachment,
    };
    session::run(observed, signals, args.session_options()).await
}
