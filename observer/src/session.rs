//! The attached session: periodic status, on-demand reports, and a final
//! report on every way out (duration, signal, target exit).

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::analyse::{build_report, Reason, ReportContext};
use crate::attach::Attachment;
use crate::error::UserError;
use crate::plan::ProbePlan;
use crate::render::text::bytes;
use crate::render::Reporter;
use crate::resolve::process::Process;
use crate::snapshot::{monotonic_ns, Snapshot};
use crate::symbolize::Symbolizer;

/// Signal streams, installed before attaching so no signal is missed.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    report: Signal,
}

impl Signals {
    pub fn install() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            report: signal(SignalKind::user_defined1())?,
        })
    }
}

/// How long and how chatty a session is.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub duration: Option<Duration>,
    pub interval: Duration,
    /// See [`ReportContext::group_depth`].
    pub group_depth: usize,
    pub reporter: Reporter,
}

/// Everything known about the attached target.
pub struct Observed {
    pub process: Process,
    pub plan: ProbePlan,
    pub build_id: Option<String>,
    pub symbolizer: Symbolizer,
    pub attachment: Attachment,
}

enum Event {
    Status,
    Report,
    Stop(Reason),
}

/// Runs until the duration elapses, a stop signal arrives or the target
/// exits; always ends with a final report and detached probes.
pub async fn run(
    mut observed: Observed,
    mut signals: Signals,
    options: SessionOptions,
) -> Result<()> {
    let attached_ns = monotonic_ns();
    let exit_watch = watch_exit(observed.process.pid)?;
    announce(&observed);
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut status = tokio::time::interval_at(
        tokio::time::Instant::now() + options.interval,
        options.interval,
    );
    let mut previous = Snapshot::default();
    let reason = loop {
        let event = tokio::select! {
            _ = sleep_until(deadline) => Event::Stop(Reason::Duration),
            _ = signals.interrupt.recv() => Event::Stop(Reason::Stop),
            _ = signals.terminate.recv() => Event::Stop(Reason::Stop),
            _ = signals.hangup.recv() => Event::Stop(Reason::Stop),
            _ = exit_watch.readable() => Event::Stop(Reason::TargetExited),
            _ = signals.report.recv() => Event::Report,
            _ = status.tick() => Event::Status,
        };
        observed.attachment.flush_log();
        match event {
            Event::Status => previous = print_status(&observed, attached_ns, &previous)?,
            Event::Report => report(&mut observed, attached_ns, &options)?,
            Event::Stop(reason) => break reason,
        }
    };
    finish(observed, attached_ns, &options, reason)
}

/// Final report: snapshot, detach, then symbolize and render (the probes
/// are gone before the slow part).
fn finish(
    mut observed: Observed,
    attached_ns: u64,
    options: &SessionOptions,
    reason: Reason,
) -> Result<()> {
    observed.symbolizer.refresh()?;
    let snapshot = Snapshot::full(observed.attachment.ebpf(), observed.process.pid)?;
    let Observed {
        process,
        plan,
        build_id,
        symbolizer,
        attachment,
    } = observed;
    attachment.detach();
    eprintln!("observer: detached from pid {}", process.pid);
    let exited = reason == Reason::TargetExited || !process.is_alive();
    let context = report_context(&plan, &process, build_id.as_deref(), attached_ns, options);
    let report = build_report(&context, &snapshot, &symbolizer, reason, exited);
    emit(&options.reporter, &report)?;
    if exited {
        return Err(UserError::new(format!(
            "target pid {} exited while attached; the report shows what was seen until then",
            process.pid
        ))
        .into());
    }
    Ok(())
}

/// On-demand report; the probes stay attached.
fn report(observed: &mut Observed, attached_ns: u64, options: &SessionOptions) -> Result<()> {
    observed.symbolizer.refresh()?;
    let snapshot = Snapshot::full(observed.attachment.ebpf(), observed.process.pid)?;
    let context = report_context(
        &observed.plan,
        &observed.process,
        observed.build_id.as_deref(),
        attached_ns,
        options,
    );
    let report = build_report(
        &context,
        &snapshot,
        &observed.symbolizer,
        Reason::Signal,
        false,
    );
    emit(&options.reporter, &report)
}

fn report_context<'a>(
    plan: &'a ProbePlan,
    process: &'a Process,
    build_id: Option<&'a str>,
    attached_ns: u64,
    options: &SessionOptions,
) -> ReportContext<'a> {
    ReportContext {
        plan,
        exe: &process.exe_display,
        build_id,
        attached_ns,
        group_depth: options.group_depth,
    }
}

fn emit(reporter: &Reporter, report: &crate::analyse::Report) -> Result<()> {
    reporter.emit(report)?;
    if let Some(path) = &reporter.output {
        eprintln!("observer: report written to {}", path.display());
    }
    Ok(())
}

fn announce(observed: &Observed) {
    let plan = &observed.plan;
    let describe = |planned: &crate::plan::PlannedFunction| {
        let first = &planned.sites[0];
        format!(
            "{} ×{} (first instruction {})",
            planned.function.name,
            planned.sites.len(),
            first.first_instruction
        )
    };
    eprintln!(
        "observer: attached to pid {} ({}): {} probes; allocate {}; release {}",
        plan.pid,
        observed.process.exe_display,
        observed.attachment.probe_count,
        describe(&plan.alloc),
        describe(&plan.release)
    );
    eprintln!(
        "observer: send SIGUSR1 (kill -USR1 {}) for a report, SIGINT/SIGTERM to stop",
        std::process::id()
    );
}

/// One line on stderr: totals now and the change since the last line.
fn print_status(observed: &Observed, attached_ns: u64, previous: &Snapshot) -> Result<Snapshot> {
    let now = Snapshot::quick(observed.attachment.ebpf())?;
    let (buffers, bytes_now) = now.outstanding();
    let (previous_buffers, previous_bytes) = previous.outstanding();
    let c = &now.counters;
    let lost = c.live_map_full
        + c.site_map_full
        + c.stack_errors
        + c.entries_without_return
        + c.returns_without_entry
        + c.alloc_id_read_errors
        + c.release_id_read_errors
        + c.size_read_errors
        + c.reallocated_ids;
    eprintln!(
        "observer: [{:>7.1}s] outstanding {buffers} buffers / {} ({:+} / {:+} B) in {} sites | allocations {} releases {} unknown-releases {} | not recorded {lost}",
        now.taken_ns.saturating_sub(attached_ns) as f64 / 1e9,
        bytes(bytes_now),
        buffers - previous_buffers,
        bytes_now - previous_bytes,
        now.sites.values().filter(|s| s.outstanding_buffers > 0).count(),
        c.allocations,
        c.releases,
        c.unknown_releases,
    );
    Ok(now)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A pidfd that becomes readable when the process exits (Linux ≥ 5.3).
fn watch_exit(pid: u32) -> Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot watch pid {pid} for exit (pidfd_open)"));
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: an OwnedFd stays open and keeps returning the same raw fd until
    // it is dropped, which only happens when the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("cannot register the pidfd with tokio")
}
