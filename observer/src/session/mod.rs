//! The observing session: periodic samples and status, on-demand reports
//! (SIGUSR1 or the control socket), marks and diffs, and a final report on
//! every way out (duration, signal, target exit) with the probes detached
//! before the slow part.

pub mod control;
pub mod launch;
pub mod loads;
pub mod stages;

use std::collections::BTreeSet;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::analyse::diff::{diff, Mark, Marks};
use crate::analyse::group::{group_stacks, SiteGroup};
use crate::analyse::growth::{History, Sample};
use crate::analyse::live::LiveSites;
use crate::analyse::verdict::{judge, Gate};
use crate::analyse::{build_report, unix_secs_at, Reason, Report, ReportContext};
use crate::attach::Attachment;
use crate::cost::{CostMeter, WindowStep};
use crate::error::UserError;
use crate::metrics::server::{MetricsServer, Scrape};
use crate::plan::ProbePlan;
use crate::render::text::{bytes, plural};
use crate::render::{self, Format, Reporter};
use crate::resolve::process::Process;
use crate::snapshot::{monotonic_ns, read_stacks, Snapshot};
use crate::symbolize::Symbolizer;
use crate::tui::state::Action;
use crate::tui::Tui;
use control::{ControlServer, Incoming, Payload, Request};
use launch::Launched;
use observer_ebpf::counter;

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

    /// Waits for SIGINT, SIGTERM or SIGHUP.
    pub async fn stopped(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// How long and how chatty a session is, and what it writes.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub duration: Option<Duration>,
    /// Sampling and status-line period.
    pub interval: Duration,
    /// See [`ReportContext::group_depth`].
    pub group_depth: usize,
    pub older_than: Option<Duration>,
    pub reporter: Reporter,
    pub chart: Option<PathBuf>,
    pub flamegraph: Option<PathBuf>,
    /// `observer run`: how to judge the final report.
    pub gate: Option<Gate>,
    pub walker: crate::attach::StackWalker,
    /// `--max-overhead`: percent of one CPU the programs may use over an
    /// interval before observing stops.
    pub max_overhead: Option<f64>,
    /// `--cost-statistics`: how long the kernel times the programs.
    pub cost_statistics: crate::cost::CostStatistics,
    /// `observer top`: a live view in the terminal instead of status lines.
    pub tui: bool,
}

/// The exit status of a session stopped by `--max-overhead`.
pub const OVERHEAD_EXIT_CODE: u8 = 3;

/// Everything known about the observed target.
pub struct Observed {
    pub process: Process,
    pub plan: ProbePlan,
    pub build_id: Option<String>,
    pub symbolizer: Symbolizer,
    pub attachment: Attachment,
    /// Set when the observer launched the target (`observer run`).
    pub launched: Option<Launched>,
    /// What the kernel offered.
    pub kernel: crate::attach::features::KernelFeatures,
}

/// How the session ended, as a process exit status: 0, or 1 for a leak
/// found with `--fail-on-leak` (errors are returned as `Err`, status 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: u8,
}

/// State that accumulates while attached.
struct Session {
    observed: Observed,
    options: SessionOptions,
    attached_ns: u64,
    history: History,
    marks: Marks,
    previous: Snapshot,
    /// The programs' CPU time and probe hits, read at every sample.
    cost: CostMeter,
    /// Sites as the metrics endpoint names them.
    live: LiveSites,
    /// Why `--max-overhead` stopped the session, said again at the end.
    overhead_stop: Option<String>,
    /// The library the probes wait for, while the target has not loaded it.
    awaited: Option<loads::AwaitedLibrary>,
}

enum Event {
    Sample,
    Report,
    Control(Incoming),
    Scrape(Scrape),
    Key(crate::tui::state::Key),
    /// Stop the session (attached) or the command (launched).
    Stop(Reason, i32),
    Exited,
}

/// How long a command gets to exit after SIGTERM when the session failed.
const COMMAND_GRACE: Duration = Duration::from_secs(10);

/// How the observing loop ended.
enum Ending {
    /// As asked (duration, signal) or because the target exited.
    Stopped(Reason),
    /// Something failed while attached.
    Failed(anyhow::Error),
}

/// Runs until the duration elapses, a stop signal arrives, the target
/// exits or something fails; every one of those ends in the same place: a
/// final report of what was seen, with the probes detached.
/// `control` is the socket [`open_control`] bound before attaching.
/// `metrics` is the endpoint [`MetricsServer::bind`] bound before attaching.
pub async fn run(
    observed: Observed,
    signals: Signals,
    options: SessionOptions,
    control: Option<ControlServer>,
    metrics: Option<MetricsServer>,
) -> Result<Outcome> {
    let live = LiveSites::new(options.group_depth, &observed.plan.alloc.function.name);
    let awaited = loads::AwaitedLibrary::of(&observed.plan);
    let mut session = Session {
        cost: CostMeter::start(options.cost_statistics),
        observed,
        options,
        attached_ns: monotonic_ns(),
        history: History::default(),
        marks: Marks::default(),
        previous: Snapshot::default(),
        live,
        overhead_stop: None,
        awaited,
    };
    let ending = match session.observe(signals, control, metrics).await {
        Ok(reason) => Ending::Stopped(reason),
        Err(err) => Ending::Failed(err),
    };
    session.finish(ending)
}

impl Session {
    /// The observing loop; returns why it stopped. An error ends it too,
    /// and the caller still gives the final report.
    async fn observe(
        &mut self,
        mut signals: Signals,
        mut control: Option<ControlServer>,
        mut metrics: Option<MetricsServer>,
    ) -> Result<Reason> {
        if self.observed.launched.is_some() {
            // The command's program is mapped now: let the walker use its
            // table at once.
            self.refresh_mappings()?;
        }
        let pid = self.observed.process.pid;
        let exit_watch = match watch_exit(pid) {
            Ok(watch) => watch,
            // Gone between attaching and now: that is an exit, not a failure.
            Err(_) if !self.observed.process.is_alive() => return Ok(Reason::TargetExited),
            Err(err) => return Err(err),
        };
        announce(
            &self.observed,
            control.as_ref(),
            metrics.as_ref(),
            &self.cost,
        );
        // The first reading: rates are measured from here.
        let counters = self.quick_snapshot()?.counters;
        self.cost
            .read(self.observed.attachment.ebpf()?, &counters)?;
        // Dropped (the terminal given back) on every way out of the loop,
        // before the final report is printed.
        let mut tui = match self.options.tui {
            true => Some(Tui::start(&self.observed.plan.alloc.function.name)?),
            false => None,
        };
        self.refresh_view(tui.as_mut())?;
        let mut deadline = self
            .options
            .duration
            .map(|d| tokio::time::Instant::now() + d);
        let mut ticks = tokio::time::interval(self.options.interval);
        // A launched command maps its libraries right after exec: look often
        // during its first second so their unwind tables are in place early.
        let startup_until = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut startup = tokio::time::interval(Duration::from_millis(10));
        let mut loads = self
            .observed
            .attachment
            .take_load_events()
            .map(loads::LoadWatch::new)
            .transpose()?;
        // Also when attaching: the kernel maps its uretprobe trampoline at
        // the first probe hit, and the repair wants to know where.
        let watch_startup = true;
        // Sampled statistics: when to open or close their window next.
        let mut statistics_window: Option<(tokio::time::Instant, WindowStep)> = None;
        loop {
            let event = tokio::select! {
                _ = exit_watch.readable() => Event::Exited,
                _ = sleep_until(deadline) => Event::Stop(Reason::Duration, libc::SIGINT),
                _ = signals.interrupt.recv() => Event::Stop(Reason::Stop, libc::SIGINT),
                _ = signals.terminate.recv() => Event::Stop(Reason::Stop, libc::SIGTERM),
                _ = signals.hangup.recv() => Event::Stop(Reason::Stop, libc::SIGHUP),
                _ = signals.report.recv() => Event::Report,
                Some(incoming) = next_request(control.as_mut()) => Event::Control(incoming),
                Some(scrape) = next_scrape(metrics.as_mut()) => Event::Scrape(scrape),
                Some(key) = next_key(tui.as_mut()) => Event::Key(key),
                _ = ticks.tick() => Event::Sample,
                _ = sleep_until(statistics_window.map(|(at, _)| at)) => {
                    let step = statistics_window.take().map(|(_, step)| step);
                    statistics_window = self.statistics_window_step(step)?;
                    continue;
                }
                _ = startup.tick(), if watch_startup && tokio::time::Instant::now() < startup_until => {
                    self.refresh_mappings()?;
                    continue;
                }
                changed = loads::next_change(loads.as_mut()) => {
                    changed?;
                    self.refresh_mappings()?;
                    continue;
                }
            };
            self.observed.attachment.flush_log();
            match event {
                Event::Sample => {
                    self.sample()?;
                    statistics_window = at_delay(self.cost.after_tick(self.options.interval));
                    self.refresh_view(tui.as_mut())?;
                    if let Some(why) = self.over_budget() {
                        eprintln!("observer: {why}; stopping");
                        self.overhead_stop = Some(why);
                        return Ok(Reason::Overhead);
                    }
                }
                Event::Report => self.emit_report(Reason::Signal)?,
                Event::Control(incoming) => {
                    let result = self.control(incoming.request.clone());
                    incoming.answer_with(result);
                }
                Event::Key(key) => {
                    if let Some(tui) = tui.as_mut() {
                        match tui.key(key)? {
                            Action::Quit => return Ok(Reason::Stop),
                            Action::Mark => {
                                self.view_mark(tui)?;
                            }
                            Action::Redraw => {}
                        }
                    }
                }
                Event::Scrape(scrape) => match self.scrape() {
                    Ok(text) => scrape.answer(text),
                    Err(err) => {
                        eprintln!("observer: metrics: {}", crate::error::one_line(&err));
                        scrape.fail();
                    }
                },
                Event::Stop(reason, signal) => match self.observed.launched.as_mut() {
                    // The command decides when it is done; we wait for it.
                    Some(launched) => {
                        launched.forward(signal);
                        deadline = None;
                    }
                    None => return Ok(reason),
                },
                Event::Exited => return Ok(Reason::TargetExited),
            }
        }
    }

    /// Opens or closes the window of sampled statistics, and says what
    /// is next and when.
    fn statistics_window_step(
        &mut self,
        step: Option<WindowStep>,
    ) -> Result<Option<(tokio::time::Instant, WindowStep)>> {
        let ebpf = self.observed.attachment.ebpf()?;
        let counters = crate::snapshot::read_counters(ebpf)?;
        Ok(match step {
            Some(WindowStep::Open) => {
                self.cost.open_window(ebpf, &counters);
                at_delay(self.cost.next_check())
            }
            Some(WindowStep::Check) => {
                self.cost
                    .check_window(ebpf, &counters, self.options.interval);
                at_delay(self.cost.next_check())
            }
            None => None,
        })
    }

    fn ebpf(&self) -> Result<&aya::Ebpf> {
        self.observed.attachment.ebpf()
    }

    /// Periodic: a cheap snapshot into the history, a status line, and a
    /// look for new mappings (libraries loaded, or the command's exec).
    fn sample(&mut self) -> Result<()> {
        let now = self.quick_snapshot()?;
        self.history.push(Sample::of(&now));
        let ebpf = self.observed.attachment.ebpf()?;
        self.cost.read(ebpf, &now.counters)?;
        self.refresh_mappings()?;
        if !self.options.tui {
            print_status(&now, &self.previous, self.attached_ns);
        }
        self.previous = now;
        Ok(())
    }

    /// Why the programs' cost is over `--max-overhead`, if it is. Only
    /// judged over a window of at least half an interval (the first tick
    /// comes right after the start), where one burst cannot pass for a
    /// rate.
    fn over_budget(&self) -> Option<String> {
        let limit = self.options.max_overhead?;
        let cost = self.cost.latest()?;
        let window = cost.interval_secs >= self.options.interval.as_secs_f64() / 2.0;
        (window && cost.cpu_percent > limit).then(|| {
            format!(
                "the probes' programs used {:.3}% of one CPU over the last {:.1}s ({}), above --max-overhead {limit}%",
                cost.cpu_percent,
                cost.interval_secs,
                cost.source.describe()
            )
        })
    }

    /// The OpenMetrics exposition now (a quick snapshot: counters and
    /// per-site totals).
    fn scrape(&mut self) -> Result<String> {
        let snapshot = self.quick_snapshot()?;
        let ebpf = self.observed.attachment.ebpf()?;
        let sites = self
            .live
            .sites(&snapshot, ebpf, &self.observed.symbolizer, &self.history)?;
        Ok(crate::metrics::exposition(&crate::metrics::Scraped {
            pid: self.observed.process.pid,
            exe: &self.observed.process.exe_display,
            attached_secs: snapshot.taken_ns.saturating_sub(self.attached_ns) as f64 / 1e9,
            counters: &snapshot.counters,
            sites: &sites,
            cost: self.cost_now(&snapshot.counters).as_ref(),
        }))
    }

    /// New mappings (libraries loaded, the command's exec): symbolize and
    /// unwind through them too.
    /// Catches up with the target's mappings: the uretprobe trampoline,
    /// the unwind tables (first: the walks need them), then the symbols.
    fn refresh_mappings(&mut self) -> Result<()> {
        self.observed
            .attachment
            .learn_trampoline(self.observed.process.pid)?;
        self.observed
            .attachment
            .refresh_tables(&self.observed.process)?;
        if let Some(awaited) = &self.awaited {
            awaited.look(&self.observed.process);
        }
        self.observed.symbolizer.refresh()
    }

    fn report(&mut self, reason: Reason) -> Result<Report> {
        self.observed.symbolizer.refresh()?;
        let snapshot = self.full_snapshot()?;
        self.history.push(Sample::of(&snapshot));
        Ok(self.build(&snapshot, reason, false))
    }

    /// `observer top`: a fresh report into the view (the sample it is
    /// taken with is not added to the history: the tick just did that).
    fn refresh_view(&mut self, tui: Option<&mut Tui>) -> Result<()> {
        let Some(tui) = tui else {
            return Ok(());
        };
        self.observed.symbolizer.refresh()?;
        let snapshot = self.full_snapshot()?;
        tui.show(self.build(&snapshot, Reason::Control, false))
    }

    /// `observer top`'s `m`: a mark now, in the view and in the session
    /// (so `observer diff m1` works from another shell too).
    fn view_mark(&mut self, tui: &mut Tui) -> Result<()> {
        let now = self.quick_snapshot()?;
        let at = now.taken_ns.saturating_sub(self.attached_ns) as f64 / 1e9;
        let name = tui.state.set_mark(Sample::of(&now), at);
        self.marks.set(&name, Sample::of(&now));
        self.refresh_view(Some(tui))
    }

    fn quick_snapshot(&self) -> Result<Snapshot> {
        Ok(self.own_execs_removed(Snapshot::quick(self.ebpf()?)?))
    }

    fn full_snapshot(&self) -> Result<Snapshot> {
        let older_than = self.options.older_than.map(|d| d.as_nanos() as u64);
        let tgid = self.observed.attachment.kernel_tgid();
        let snapshot = Snapshot::full(self.ebpf()?, tgid, older_than)?;
        Ok(self.own_execs_removed(snapshot))
    }

    /// `observer run` attaches before its command's `exec`: that one is
    /// ours, not the target's.
    fn own_execs_removed(&self, mut snapshot: Snapshot) -> Snapshot {
        if self.observed.launched.is_some() {
            let execs = &mut snapshot.counters[counter::EXECS];
            *execs = execs.saturating_sub(1);
        }
        snapshot
    }

    fn build(&self, snapshot: &Snapshot, reason: Reason, exited: bool) -> Report {
        let context = ReportContext {
            plan: &self.observed.plan,
            namespace_pid: self.observed.process.namespace_pid,
            exe: &self.observed.process.exe_display,
            build_id: self.observed.build_id.as_deref(),
            attached_ns: self.attached_ns,
            group_depth: self.options.group_depth,
            history: &self.history,
            older_than_ns: self.options.older_than.map(|d| d.as_nanos() as u64),
            walker: self.options.walker,
            tabled_objects: self.observed.attachment.tabled_objects(),
            kernel: &self.observed.kernel,
        };
        let mut report = build_report(
            &context,
            snapshot,
            &self.observed.symbolizer,
            reason,
            exited,
        );
        let awaited = self.awaited.as_ref();
        let hits = crate::cost::probe_hits(&snapshot.counters);
        report
            .warnings
            .extend(awaited.and_then(|a| a.warning(&self.observed.process, hits)));
        report.cost = self.cost_now(&snapshot.counters);
        report
    }

    /// The programs' cost as of `counters` (the report's own snapshot),
    /// or the last reading once the programs are gone.
    fn cost_now(&self, counters: &crate::snapshot::Counters) -> Option<crate::cost::Cost> {
        match self.ebpf() {
            Ok(ebpf) => Some(self.cost.peek(ebpf, counters)),
            Err(_) => self.cost.latest().cloned(),
        }
    }

    fn emit_report(&mut self, reason: Reason) -> Result<()> {
        let report = self.report(reason)?;
        self.deliver(&report)
    }

    /// Writes the report and the chart / flame graph asked for.
    fn deliver(&self, report: &Report) -> Result<()> {
        self.write_report(report)?;
        self.write_graphics(report)
    }

    /// The report itself, to stdout or `--output`.
    fn write_report(&self, report: &Report) -> Result<()> {
        let reporter = &self.options.reporter;
        reporter.emit(report)?;
        if let Some(path) = &reporter.output {
            eprintln!("observer: report written to {}", path.display());
        }
        Ok(())
    }

    /// The chart and flame graph asked for.
    fn write_graphics(&self, report: &Report) -> Result<()> {
        if let Some(path) = &self.options.chart {
            render::chart::write(path, report, &self.history)?;
        }
        if let Some(path) = &self.options.flamegraph {
            if !render::flamegraph::write(path, report)? {
                eprintln!(
                    "observer: no outstanding bytes, so no flame graph written to {}",
                    path.display()
                );
            }
        }
        Ok(())
    }

    fn control(&mut self, request: Request) -> Result<Payload> {
        match request {
            Request::Mark { name } => {
                let now = self.quick_snapshot()?;
                let (buffers, bytes_now) = now.outstanding();
                self.marks.set(&name, Sample::of(&now));
                Ok(Payload::Text(format!(
                    "mark '{name}' at {:.1}s: {buffers} buffers, {} outstanding\n",
                    now.taken_ns.saturating_sub(self.attached_ns) as f64 / 1e9,
                    bytes(bytes_now)
                )))
            }
            Request::Report {
                format: Format::Pprof,
                mark: Some(name),
            } => {
                let mark = self.mark(&name)?;
                let groups = self.groups_of(&[&mark])?;
                let what = format!("as it was at mark '{name}'");
                let meta = self.profile_meta(self.attached_ns, mark.sample.taken_ns, &what);
                Ok(Payload::Binary(render::pprof::of_mark(
                    &mark, &groups, &meta,
                )?))
            }
            Request::Report { mark: Some(_), .. } => Err(UserError::new(
                "a report at a mark exists only as a pprof profile: add --format pprof",
            )
            .into()),
            Request::Report { format, mark: None } => {
                let report = self.report(Reason::Control)?;
                let rendered = Reporter {
                    format,
                    output: None,
                    ..self.options.reporter.clone()
                }
                .render(&report)?;
                Ok(payload(format, rendered))
            }
            Request::Diff {
                from,
                to,
                per,
                format,
            } => self.diff(&from, to.as_deref(), per, format),
        }
    }

    /// The mark called `name`; a user error naming the marks there are.
    fn mark(&self, name: &str) -> Result<Mark> {
        self.marks.get(name).cloned().ok_or_else(|| {
            UserError::new(format!(
                "no mark '{name}' (marks so far: {})",
                self.marks.names().join(", ")
            ))
            .into()
        })
    }

    /// The sites of the kernel stacks the marks saw, grouped as reports
    /// group them.
    fn groups_of(&mut self, marks: &[&Mark]) -> Result<Vec<SiteGroup>> {
        self.observed.symbolizer.refresh()?;
        let keys: BTreeSet<_> = marks
            .iter()
            .flat_map(|mark| mark.sample.sites.keys())
            .copied()
            .collect();
        let stacks = read_stacks(self.ebpf()?, keys.iter())?;
        Ok(group_stacks(
            &keys,
            &stacks,
            &self.observed.symbolizer,
            self.options.group_depth,
        ))
    }

    /// What a profile of the period `from_ns`..`to_ns` (monotonic) says
    /// about where it comes from.
    fn profile_meta(&self, from_ns: u64, to_ns: u64, what: &str) -> render::pprof::Meta {
        render::pprof::Meta {
            mappings: self.observed.symbolizer.mapped_objects(),
            main: self.observed.process.exe_display.clone(),
            time_nanos: (unix_secs_at(from_ns) * 1e9) as i64,
            duration_nanos: to_ns.saturating_sub(from_ns) as i64,
            comments: vec![
                format!(
                    "pool observer: pid {} {} (build-id {})",
                    self.observed.process.pid,
                    self.observed.process.exe_display,
                    self.observed.build_id.as_deref().unwrap_or("none")
                ),
                what.to_string(),
            ],
            pool_function: self.observed.plan.alloc.function.name.clone(),
        }
    }

    fn diff(
        &mut self,
        from: &str,
        to: Option<&str>,
        per: Option<u64>,
        format: Format,
    ) -> Result<Payload> {
        let from = self.mark(from)?;
        let to = match to {
            Some(name) => self.mark(name)?,
            None => Mark {
                name: "now".into(),
                sample: Sample::of(&self.quick_snapshot()?),
            },
        };
        let groups = self.groups_of(&[&from, &to])?;
        if format == Format::Pprof {
            let what = format!("changes from mark '{}' to '{}'", from.name, to.name);
            let meta = self.profile_meta(from.sample.taken_ns, to.sample.taken_ns, &what);
            return Ok(Payload::Binary(render::pprof::of_diff(
                &from, &to, &groups, &meta,
            )?));
        }
        let result = diff(&from, &to, groups, per);
        render::diff::render(&result, format, &self.options.reporter).map(Payload::Text)
    }

    /// The one way out: snapshot what was seen, detach, reap a launched
    /// command, then symbolize, judge and render. Whatever fails here is
    /// said on stderr and the rest still happens, so a failed session
    /// still leaves its report (or, if even that cannot be written, its
    /// counters). The first error wins the exit status.
    fn finish(mut self, ending: Ending) -> Result<Outcome> {
        let mut errors = Vec::new();
        let reason = match ending {
            Ending::Stopped(reason) => reason,
            Ending::Failed(err) => {
                errors.push(err);
                Reason::Error
            }
        };
        let snapshot = self.final_snapshot();
        self.history.push(Sample::of(&snapshot));
        // The programs' statistics go with them: read them first.
        if let Ok(ebpf) = self.observed.attachment.ebpf() {
            if let Err(err) = self.cost.read(ebpf, &snapshot.counters) {
                eprintln!(
                    "observer: the final report's cost is the last interval's: {}",
                    crate::error::one_line(&err)
                );
            }
        }
        let pid = self.observed.process.pid;
        // Detach now: the slow part below needs only what we copied.
        self.observed.attachment.detach();
        eprintln!("observer: detached from pid {pid}");
        // A failed session leaves the command running: end it, as a stop
        // would have, rather than wait for it forever.
        // So does one stopped for its cost: the command is no longer
        // observed, and `run` is there to observe it.
        let end_command = |launched: &mut Launched| match reason {
            Reason::Error | Reason::Overhead => launched.terminate(COMMAND_GRACE),
            _ => launched.wait(),
        };
        let command = match self.observed.launched.as_mut().map(end_command) {
            Some(Ok(command)) => Some(command),
            Some(Err(err)) => {
                errors.push(err.context("cannot learn how the command ended"));
                None
            }
            None => None,
        };
        let exited = reason == Reason::TargetExited || !self.observed.process.is_alive();
        let mut report = self.build(&snapshot, reason, exited);
        report.command = command;
        if let Some(gate) = &self.options.gate {
            report.verdict = Some(judge(&mut report, gate));
        }
        if let Err(err) = self.write_report(&report) {
            eprintln!(
                "observer: the final report could not be written; what was seen: {}",
                status_line(&snapshot, &Snapshot::default(), self.attached_ns)
            );
            errors.push(err);
        }
        if let Err(err) = self.write_graphics(&report) {
            errors.push(err);
        }
        let overhead_stop = self.overhead_stop.take();
        conclude(errors, || match overhead_stop {
            Some(why) => {
                eprintln!("observer: stopped by --max-overhead: {why}; the report above is what was seen until then");
                Ok(Outcome {
                    exit_code: OVERHEAD_EXIT_CODE,
                })
            }
            None => outcome(&report, self.observed.launched.is_some()),
        })
    }

    /// The fullest reading still possible: everything, else the counters and
    /// per-site totals, else the last periodic sample.
    fn final_snapshot(&mut self) -> Snapshot {
        if let Err(err) = self.observed.symbolizer.refresh() {
            eprintln!(
                "observer: new mappings not read for the final report: {}",
                crate::error::one_line(&err)
            );
        }
        let full = self.full_snapshot();
        let quick = || self.quick_snapshot();
        match full.or_else(|err| {
            eprintln!(
                "observer: final report without ages and stacks: {}",
                crate::error::one_line(&err)
            );
            quick()
        }) {
            Ok(snapshot) => snapshot,
            Err(err) => {
                eprintln!(
                    "observer: final report from the last sample: {}",
                    crate::error::one_line(&err)
                );
                self.previous.clone()
            }
        }
    }
}

/// The exit status of a finished session: its first error, if any (the
/// others are printed, since only one line can be the last), else what the
/// report stands for.
fn conclude(
    errors: Vec<anyhow::Error>,
    report: impl FnOnce() -> Result<Outcome>,
) -> Result<Outcome> {
    let mut errors = errors.into_iter();
    let Some(first) = errors.next() else {
        return report();
    };
    let first_line = crate::error::one_line(&first);
    for other in errors.map(|other| crate::error::one_line(&other)) {
        // The same failure again (the output that failed the session failed
        // the final report too) would only repeat the last line.
        if other != first_line {
            eprintln!("observer: also: {other}");
        }
    }
    Err(first)
}

/// The exit status a finished session stands for.
fn outcome(report: &Report, launched: bool) -> Result<Outcome> {
    let pid = report.target.pid;
    if let Some(command) = &report.command {
        if !command.succeeded {
            let how = match (command.exit_code, command.signal) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                (None, None) => "ended abnormally".into(),
            };
            return Err(UserError::new(format!(
                "the command (pid {pid}) {how}; the report shows the buffers it left outstanding"
            ))
            .into());
        }
    } else if report.target.exited && !launched {
        return Err(UserError::new(format!(
            "target pid {pid} exited while attached; the report shows what was seen until then"
        ))
        .into());
    }
    match &report.verdict {
        Some(verdict) if verdict.fail_on_leak && verdict.leak_found => {
            eprintln!(
                "observer: leak found: {} buffers, {} outstanding at {} (thresholds: {} buffers, {} bytes)",
                verdict.counted_buffers,
                bytes(verdict.counted_bytes),
                plural(verdict.counted_sites, "site"),
                verdict.max_buffers,
                verdict.max_bytes
            );
            Ok(Outcome { exit_code: 1 })
        }
        _ => Ok(Outcome { exit_code: 0 }),
    }
}

/// Binds the control socket before anything is attached: the one the
/// user asked for with `--control` must work (an error here is theirs to
/// fix), the default one in [`control::SOCKET_DIR`] is a convenience whose
/// failure is only noted.
pub fn open_control(explicit: Option<&std::path::Path>, pid: u32) -> Result<Option<ControlServer>> {
    if let Some(path) = explicit {
        return ControlServer::bind(path).map(Some);
    }
    let bound =
        control::ensure_socket_dir().and_then(|_| ControlServer::bind(&control::default_path(pid)));
    match bound {
        Ok(server) => Ok(Some(server)),
        Err(err) => {
            eprintln!(
                "observer: no control socket ({}): mark/diff/report from another shell are unavailable, SIGUSR1 still works",
                crate::error::one_line(&err)
            );
            Ok(None)
        }
    }
}

/// Text output as text; binary output (pprof) as bytes.
fn payload(format: Format, rendered: Vec<u8>) -> Payload {
    if format.is_binary() {
        return Payload::Binary(rendered);
    }
    match String::from_utf8(rendered) {
        Ok(text) => Payload::Text(text),
        Err(err) => Payload::Binary(err.into_bytes()),
    }
}

async fn next_key(tui: Option<&mut Tui>) -> Option<crate::tui::state::Key> {
    match tui {
        Some(tui) => tui.next_key().await,
        None => std::future::pending().await,
    }
}

async fn next_scrape(metrics: Option<&mut MetricsServer>) -> Option<Scrape> {
    match metrics {
        Some(server) => server.next_scrape().await,
        None => std::future::pending().await,
    }
}

async fn next_request(control: Option<&mut ControlServer>) -> Option<Incoming> {
    match control {
        Some(server) => server.next_request().await,
        None => std::future::pending().await,
    }
}

fn announce(
    observed: &Observed,
    control: Option<&ControlServer>,
    metrics: Option<&MetricsServer>,
    cost: &CostMeter,
) {
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
    let namespace_pid = observed
        .process
        .namespace_pid
        .map(|pid| format!(", {pid} in its PID namespace"))
        .unwrap_or_default();
    eprintln!(
        "observer: attached to pid {}{namespace_pid} ({}): {} probes; allocate {}; release {}",
        plan.pid,
        observed.process.exe_display,
        observed.attachment.probe_count,
        plan.alloc_functions()
            .into_iter()
            .map(|(function, _)| describe(function))
            .collect::<Vec<_>>()
            .join(", "),
        plan.release_functions()
            .into_iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some((object, _)) = &plan.not_loaded {
        eprintln!(
            "observer: {object} is not loaded yet; probes wait for it (the kernel places them \
             when the process maps it)"
        );
    }
    eprintln!("observer: allocate returns: {}", plan.returns);
    eprintln!("observer: buffer id: {}", plan.identity);
    if let Some(when) = &plan.allocations_when {
        eprintln!("observer: {when}");
    }
    for inference in &plan.inferred {
        eprintln!("observer: {inference}");
    }
    let control = control
        .map(|c| format!(", `observer mark|report|diff` via {}", c.path().display()))
        .unwrap_or_default();
    let stop = if observed.launched.is_some() {
        "SIGINT/SIGTERM are passed on to the command"
    } else {
        "SIGINT/SIGTERM to stop"
    };
    eprintln!(
        "observer: reports on SIGUSR1 (kill -USR1 {}){control}; {stop}",
        std::process::id()
    );
    if let Some(metrics) = metrics {
        eprintln!("observer: metrics at http://{}/metrics", metrics.address());
    }
    if cost.source() == crate::cost::CostSource::Estimate {
        eprintln!("observer: the kernel keeps no statistics of eBPF programs here (BPF_ENABLE_STATS refused): their CPU time is estimated from call counts");
    }
}

/// One line on stderr: totals now and the change since the last line.
fn print_status(now: &Snapshot, previous: &Snapshot, attached_ns: u64) {
    eprintln!("observer: {}", status_line(now, previous, attached_ns));
}

/// Totals and counters now, and the change since `previous`.
fn status_line(now: &Snapshot, previous: &Snapshot, attached_ns: u64) -> String {
    let (buffers, bytes_now) = now.outstanding();
    let (previous_buffers, previous_bytes) = previous.outstanding();
    let c = &now.counters;
    format!(
        "[{:>7.1}s] outstanding {buffers} buffers / {} ({:+} / {:+} B) in {} sites | allocations {} releases {} unknown-releases {} | not recorded {}",
        now.taken_ns.saturating_sub(attached_ns) as f64 / 1e9,
        bytes(bytes_now),
        buffers - previous_buffers,
        bytes_now - previous_bytes,
        now.sites.values().filter(|s| s.outstanding_buffers > 0).count(),
        c[counter::ALLOCATIONS],
        c[counter::RELEASES],
        c[counter::UNKNOWN_RELEASES],
        c.not_recorded(),
    )
}

/// A step `delay` from now.
fn at_delay<T>(step: Option<(Duration, T)>) -> Option<(tokio::time::Instant, T)> {
    step.map(|(delay, what)| (tokio::time::Instant::now() + delay, what))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A pidfd that becomes readable when the process exits (Linux ≥ 5.3);
/// `pid` counts in the observer's PID namespace, as `pidfd_open`'s does.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_decides_the_exit_whatever_the_report_says() {
        let clean = || Ok(Outcome { exit_code: 0 });
        assert_eq!(conclude(Vec::new(), clean).unwrap().exit_code, 0);
        let errors = vec![
            anyhow::anyhow!("reading the counters failed"),
            anyhow::anyhow!("cannot write report.json"),
        ];
        let err = conclude(errors, || panic!("not consulted when the session failed"));
        assert_eq!(err.unwrap_err().to_string(), "reading the counters failed");
    }

    #[test]
    fn a_report_that_fails_on_its_own_gives_its_error() {
        let target_exited = || Err(UserError::new("target pid 7 exited while attached").into());
        let err = conclude(Vec::new(), target_exited).unwrap_err();
        assert!(err.downcast_ref::<UserError>().is_some());
    }
}
