//! `observer`: parses the command line and wires the stages together.

use std::process::ExitCode;

use anyhow::Result;
use observer::attach::unwind::PreparedTables;
use observer::attach::{self, Attachment, StackWalker};
use observer::cli::{AttachArgs, Cli, Command, ControlArgs, RunArgs, SessionArgs};
use observer::error::one_line;
use observer::plan::{ProbePlan, ProbeRequest};
use observer::resolve::debuginfo::DebugOptions;
use observer::resolve::elf::ElfInfo;
use observer::resolve::process::Process;
use observer::session::control::{self, Request};
use observer::session::launch;
use observer::session::{self, Observed, Outcome, Signals};
use observer::symbolize::Symbolizer;
use std::path::Path;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let outcome = match cli.command {
        Command::Attach(args) => attach_command(args).await,
        Command::Run(args) => run_command(args).await,
        Command::Mark(args) => control_command(&args.target, args.request()),
        Command::Report(args) => control_command(&args.target, args.request()),
        Command::Diff(args) => control_command(&args.target, args.request()),
        Command::Inspect(args) => {
            observer::inspect::inspect(&args.binary, &args.functions, &args.debug_options()).map(
                |text| {
                    print!("{text}");
                    Outcome { exit_code: 0 }
                },
            )
        }
    };
    match outcome {
        Ok(outcome) => ExitCode::from(outcome.exit_code),
        Err(err) => {
            eprintln!("observer: error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

async fn attach_command(args: AttachArgs) -> Result<Outcome> {
    init_ebpf_log(args.session.ebpf_log);
    let signals = Signals::install()?;
    attach::check_privileges()?;
    let process = Process::open(args.pid)?;
    let (plan, build_id) = plan(
        &process,
        process.exe_path(),
        &args.probes.request(),
        &args.session.debug_options(),
    )?;
    let symbolizer = Symbolizer::new(&process, args.session.debug_options())?;
    let tables = unwind_tables(&args.session, &process)?;
    let attachment = attach::attach(&plan, args.session.attach_options(), tables)?;
    let observed = observed(process, plan, build_id, symbolizer, attachment, None);
    let options = args.session.session_options(&args.output, None);
    session::run(observed, signals, options).await
}

async fn run_command(args: RunArgs) -> Result<Outcome> {
    init_ebpf_log(args.session.ebpf_log);
    let signals = Signals::install()?;
    let gate = args.gate.gate(args.output.group_depth)?;
    attach::check_privileges()?;
    let mut launched = launch::spawn_paused(&args.command)?;
    let paused = Process::paused_child(launched.pid, &launched.program);
    let (plan, build_id) = plan(
        &paused,
        launched.program.clone(),
        &args.probes.request(),
        &args.session.debug_options(),
    )?;
    // The child has not exec'd yet: table the program it is about to run;
    // its libraries are tabled as they get mapped.
    let tables = unwind_tables_for_program(&args.session, &launched.program)?;
    let mut attachment = attach::attach(&plan, args.session.attach_options(), tables)?;
    launched.release()?;
    let process = Process::open(launched.pid)?;
    // The program is mapped now: let the walker use its table at once.
    attachment.refresh_tables(&process)?;
    let symbolizer = Symbolizer::new(&process, args.session.debug_options())?;
    let observed = observed(
        process,
        plan,
        build_id,
        symbolizer,
        attachment,
        Some(launched),
    );
    let options = args.session.session_options(&args.output, Some(gate));
    session::run(observed, signals, options).await
}

fn control_command(target: &ControlArgs, request: Request) -> Result<Outcome> {
    let socket = control::find_socket(target.control.as_deref(), target.pid)?;
    print!("{}", control::call(&socket, &request)?);
    Ok(Outcome { exit_code: 0 })
}

fn unwind_tables(session: &SessionArgs, process: &Process) -> Result<Option<PreparedTables>> {
    match session.stack_walker {
        StackWalker::Dwarf => Ok(Some(attach::unwind::prepare(process)?)),
        StackWalker::FramePointers => Ok(None),
    }
}

fn unwind_tables_for_program(
    session: &SessionArgs,
    program: &std::path::Path,
) -> Result<Option<PreparedTables>> {
    match session.stack_walker {
        StackWalker::Dwarf => Ok(Some(attach::unwind::prepare_for_file(program)?)),
        StackWalker::FramePointers => Ok(None),
    }
}

fn plan(
    process: &Process,
    binary: std::path::PathBuf,
    request: &ProbeRequest,
    debug: &DebugOptions,
) -> Result<(ProbePlan, Option<String>)> {
    let elf = ElfInfo::read_with_debug(&binary, Path::new(&process.exe_display), debug)?;
    let plan = ProbePlan::new(process.pid, binary, &elf, &process.exe_display, request)?;
    Ok((plan, elf.build_id))
}

fn observed(
    process: Process,
    plan: ProbePlan,
    build_id: Option<String>,
    symbolizer: Symbolizer,
    attachment: Attachment,
    launched: Option<launch::Launched>,
) -> Observed {
    Observed {
        process,
        plan,
        build_id,
        symbolizer,
        attachment,
        launched,
    }
}

fn init_ebpf_log(enabled: bool) {
    if enabled {
        // The eBPF programs' records carry their crate as the log target.
        env_logger::Builder::new()
            .filter_level(log::LevelFilter::Warn)
            .filter_module("observer_ebpf", log::LevelFilter::Trace)
            .init();
    }
}
