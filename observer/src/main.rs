//! `observer`: parses the command line and wires the stages together.

use std::process::ExitCode;

use anyhow::Result;
use observer::attach::features::KernelFeatures;
use observer::attach::unwind::PreparedTables;
use observer::attach::{self, AttachOptions, Attachment, StackWalker};
use observer::cli::{AttachArgs, Cli, Command, ControlArgs, FloorArgs, RunArgs};
use observer::error::one_line;
use observer::metrics::server::MetricsServer;
use observer::plan::{ProbePlan, ProbeRequest};
use observer::render;
use observer::resolve::debuginfo::DebugOptions;
use observer::resolve::elf::ElfInfo;
use observer::resolve::loader;
use observer::resolve::object;
use observer::resolve::pid_namespace::ObserverNamespace;
use observer::resolve::process::Process;
use observer::resolve::unwinder::{self, Unwinder};
use observer::session::control::{self, Request};
use observer::session::launch;
use observer::session::stages::Stage;
use observer::session::{self, Observed, Outcome, Signals};
use observer::symbolize::{MappedFiles, Symbolizer};
use std::path::{Path, PathBuf};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::new(err).context("cannot start the runtime")),
    };
    let outcome = runtime.block_on(command(cli.command));
    // A step abandoned on a stop signal may still be reading files on a
    // blocking thread: exit without waiting for it.
    runtime.shutdown_background();
    match outcome {
        Ok(outcome) => ExitCode::from(outcome.exit_code),
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("observer: error: {}", one_line(err));
    ExitCode::from(2)
}

async fn command(command: Command) -> Result<Outcome> {
    match command {
        Command::Attach(args) => {
            let log = args.session.verifier_log.clone();
            keeping_verifier_log(log, attach_command(args, false).await)
        }
        Command::Top(args) => {
            let log = args.session.verifier_log.clone();
            keeping_verifier_log(log, attach_command(args, true).await)
        }
        Command::Run(args) => {
            let log = args.session.verifier_log.clone();
            keeping_verifier_log(log, run_command(args).await)
        }
        Command::Mark(args) => control_command(&args.target, args.request(), None),
        Command::Report(args) => {
            render::check_binary_destination(args.format, args.output.as_deref())?;
            args.output
                .as_deref()
                .map(|path| render::check_destinations(&[("--output", Some(path))]))
                .transpose()?;
            control_command(&args.target, args.request()?, args.output.as_deref())
        }
        Command::Diff(args) => {
            render::check_binary_destination(args.format, args.output.as_deref())?;
            args.output
                .as_deref()
                .map(|path| render::check_destinations(&[("--output", Some(path))]))
                .transpose()?;
            control_command(&args.target, args.request(), args.output.as_deref())
        }
        Command::Floor(args) => floor_command(args).await,
        Command::Doctor => {
            let features = KernelFeatures::probe();
            print!("{}", features.describe());
            features.require()?;
            Ok(Outcome { exit_code: 0 })
        }
        Command::Inspect(args) => args
            .debug_options()
            .and_then(|debug| observer::inspect::inspect(&args.binary, &args.functions, &debug))
            .map(|text| {
                print!("{text}");
                Outcome { exit_code: 0 }
            }),
    }
}

/// `observer attach`, or with `tui` `observer top`.
async fn attach_command(args: AttachArgs, tui: bool) -> Result<Outcome> {
    let mut signals = Signals::install()?;
    init_ebpf_log(args.session.ebpf_log);
    args.output.check_destinations()?;
    let request = args.probes.request()?;
    if tui {
        observer::tui::check_terminal()?;
    }
    // A PID means another process when /proc counts another namespace's.
    ObserverNamespace::current()?;
    attach::check_privileges()?;
    let kernel = KernelFeatures::probe();
    kernel.require()?;
    let process = Process::open(args.pid)?;
    let debug = args.session.debug_options()?;
    let (plan, build_id) = signals
        .stage(Stage::Planning, {
            let (process, debug) = (process.clone(), debug.clone());
            move || {
                let exe = process.exe_path();
                plan(&process, exe, &request, &debug, |elf, probed| {
                    unwinder::of_process(&process, elf, probed)
                })
            }
        })
        .await?;
    let mapped = signals
        .stage(Stage::Symbolizing, {
            let process = process.clone();
            move || MappedFiles::read(&process, debug)
        })
        .await?;
    let tables = signals
        .stage(Stage::UnwindTables, {
            let (walker, process) = (args.session.stack_walker, process.clone());
            move || unwind_tables(walker, &process)
        })
        .await?;
    let control = session::open_control(args.session.control.as_deref(), process.pid)?;
    let metrics = args.session.metrics.map(MetricsServer::bind).transpose()?;
    let (plan, attachment) = signals
        .stage(Stage::Attaching, {
            let options = args.session.attach_options();
            let process = process.clone();
            move || {
                let mut attachment = attach::attach(&plan, options, tables)?;
                watch_loads(&mut attachment, &process, options.walker);
                Ok((plan, attachment))
            }
        })
        .await?;
    let symbolizer = Symbolizer::from_files(mapped);
    let observed = observed(
        process, plan, build_id, symbolizer, attachment, None, kernel,
    );
    let mut options = args.session.session_options(&args.output, None);
    options.tui = tui;
    session::run(observed, signals, options, control, metrics).await
}

async fn run_command(args: RunArgs) -> Result<Outcome> {
    let mut signals = Signals::install()?;
    init_ebpf_log(args.session.ebpf_log);
    let gate = args.gate.gate(args.output.group_depth)?;
    args.output.check_destinations()?;
    // The command's PID must mean it in /proc too.
    ObserverNamespace::current()?;
    attach::check_privileges()?;
    let kernel = KernelFeatures::probe();
    kernel.require()?;
    let debug = args.session.debug_options()?;
    // Dropped on any early return: a child never released is killed.
    let mut launched = launch::spawn_paused(&args.command)?;
    let (plan, build_id) = signals
        .stage(Stage::Planning, {
            let paused = Process::paused_child(launched.pid, &launched.program);
            let (program, request) = (launched.program.clone(), args.probes.request()?);
            let debug = debug.clone();
            move || {
                plan(&paused, program.clone(), &request, &debug, |elf, _| {
                    unwinder::of_program(elf, &program)
                })
            }
        })
        .await?;
    // The child has not exec'd yet: table the program it is about to run;
    // its libraries are tabled as they get mapped.
    let tables = signals
        .stage(Stage::UnwindTables, {
            let (walker, program) = (args.session.stack_walker, launched.program.clone());
            move || unwind_tables_for_program(walker, &program)
        })
        .await?;
    let control = session::open_control(args.session.control.as_deref(), launched.pid)?;
    let metrics = args.session.metrics.map(MetricsServer::bind).transpose()?;
    let (plan, mut attachment) = signals
        .stage(Stage::Attaching, {
            let options = args.session.attach_options();
            move || attach::attach(&plan, options, tables).map(|attachment| (plan, attachment))
        })
        .await?;
    // From here the command runs: a stop signal is no longer an interrupted
    // start but the session's to pass on, which it does as soon as it runs.
    // The dynamic linker's probe and the symbolizer's mappings need the
    // process alive: read while the gate holds it, or a command that runs
    // for milliseconds is gone first (its report had no symbols, and the
    // probe failed with ENOENT on its map_files).
    let entry_point = launched.program_entry_point();
    let walker = args.session.stack_walker;
    let (process, mapped) =
        launched.release_through_gate(&mut attachment, entry_point, |attachment, process| {
            watch_loads(attachment, process, walker);
            MappedFiles::read(process, debug)
        })?;
    let symbolizer = Symbolizer::from_files(mapped?);
    let observed = observed(
        process,
        plan,
        build_id,
        symbolizer,
        attachment,
        Some(launched),
        kernel,
    );
    let options = args.session.session_options(&args.output, Some(gate));
    session::run(observed, signals, options, control, metrics).await
}

/// `--verifier-log FILE`: a program the kernel refused leaves its log.
fn keeping_verifier_log(path: Option<PathBuf>, outcome: Result<Outcome>) -> Result<Outcome> {
    if let (Err(err), Some(path)) = (&outcome, path) {
        if let Err(write) = attach::write_verifier_log(err, &path) {
            eprintln!("observer: {}", one_line(&write));
        }
    }
    outcome
}

async fn floor_command(args: FloorArgs) -> Result<Outcome> {
    let mut signals = Signals::install()?;
    // As for attach.
    ObserverNamespace::current()?;
    attach::check_privileges()?;
    KernelFeatures::probe().require()?;
    let process = Process::open(args.pid)?;
    let exe = process.exe_path();
    let debug = DebugOptions::new(&[], &[])?;
    let (plan, _) = plan(
        &process,
        exe.clone(),
        &args.probes.request()?,
        &debug,
        |elf, probed| unwinder::of_process(&process, elf, probed),
    )?;
    let options = AttachOptions {
        max_live: 1,
        ebpf_log: false,
        walker: StackWalker::Dwarf,
    };
    let floor = attach::attach_floor(&plan, options)?;
    eprintln!(
        "observer: floor attached to pid {}: {} probes, returns by {}",
        process.pid,
        floor.probe_count(),
        plan.returns.name()
    );
    signals.stopped().await;
    drop(floor);
    Ok(Outcome { exit_code: 0 })
}

/// Sends `request` to the session and writes its answer to `output` (or
/// stdout); binary answers arrive decoded.
fn control_command(
    target: &ControlArgs,
    request: Request,
    output: Option<&Path>,
) -> Result<Outcome> {
    let socket = control::find_socket(target.control.as_deref(), target.pid)?;
    let answer = control::call(&socket, &request)?;
    render::deliver(output, &answer.into_bytes())?;
    Ok(Outcome { exit_code: 0 })
}

fn unwind_tables(walker: StackWalker, process: &Process) -> Result<Option<PreparedTables>> {
    match walker {
        StackWalker::Dwarf => Ok(Some(attach::unwind::prepare(process)?)),
        StackWalker::FramePointers => Ok(None),
    }
}

fn unwind_tables_for_program(
    walker: StackWalker,
    program: &Path,
) -> Result<Option<PreparedTables>> {
    match walker {
        StackWalker::Dwarf => Ok(Some(attach::unwind::prepare_for_file(program)?)),
        StackWalker::FramePointers => Ok(None),
    }
}

/// With unwind tables, probes the target's dynamic linker so that a
/// library it loads later is tabled at once; otherwise (no dynamic
/// linker, or its hook cannot be probed) says that such a library waits
/// for the next `--interval` tick.
fn watch_loads(attachment: &mut Attachment, process: &Process, walker: StackWalker) {
    if walker != StackWalker::Dwarf {
        return;
    }
    let watched = loader::load_hook(process).and_then(|hook| {
        attachment
            .watch_loads(&hook, process.pid)
            .map_err(|err| one_line(&err))
    });
    // Interrupted while attaching: the interruption is the one thing to say.
    if let Err(why) = watched {
        if attach::registrar::is_stopping() {
            return;
        }
        eprintln!(
            "observer: libraries loaded later are tabled at the next --interval tick, not at \
             once: {why}"
        );
    }
}

fn plan(
    process: &Process,
    binary: std::path::PathBuf,
    request: &ProbeRequest,
    debug: &DebugOptions,
    find_unwinder: impl FnOnce(&ElfInfo, &Path) -> Result<Unwinder, String>,
) -> Result<(ProbePlan, Option<String>)> {
    let (alloc, release) = (
        object::split(&request.alloc),
        object::split(&request.release),
    );
    let common = object::common_object(&alloc, &release)?;
    let request = object::in_one_object(request, common)?;
    let common = match common {
        Some(object::C_LIBRARY) => object::c_library(process)?,
        other => other.map(str::to_string),
    };
    let (binary, display, not_loaded) = match common.as_deref() {
        None => (binary, process.exe_display.clone(), None),
        Some(name) => {
            let found = object::find_object(process, name)?;
            (found.path, found.display, found.not_loaded)
        }
    };
    let root = process.root()?;
    let elf = ElfInfo::read_with_debug(&binary, Path::new(&display), &root, debug)?;
    let unwinder = find_unwinder(&elf, &binary);
    let repair = attach::repair::ability(Some(process.pid));
    let mut plan = ProbePlan::new(
        process.pid,
        binary,
        &elf,
        &display,
        &request,
        &unwinder,
        &repair,
    )?;
    plan.not_loaded = not_loaded.map(|file| (display, file));
    Ok((plan, elf.build_id))
}

fn observed(
    process: Process,
    plan: ProbePlan,
    build_id: Option<String>,
    symbolizer: Symbolizer,
    attachment: Attachment,
    launched: Option<launch::Launched>,
    kernel: KernelFeatures,
) -> Observed {
    let mut symbolizer = symbolizer;
    if plan.alloc.inlined {
        symbolizer.set_inlined_allocate(&plan.alloc.function.name);
    }
    if plan.outermost {
        symbolizer.fold_allocator_frames();
    }
    Observed {
        process,
        plan,
        build_id,
        symbolizer,
        attachment,
        launched,
        kernel,
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
