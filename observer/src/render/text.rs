//! Text: what a person reads in a terminal.

use std::fmt::Write as _;
use std::path::Path;

use crate::analyse::growth::{Growth, Trend};
use crate::analyse::verdict::Verdict;
use crate::analyse::{CommandOutcome, ProbedFunction, Reason, Report, Site};
use crate::plan::site::Execution;
use crate::snapshot::Counters;
use crate::symbolize::Frame;
use observer_ebpf::{counter, CounterKind};

pub fn render(report: &Report, top: usize, max_frames: usize) -> String {
    let mut out = String::new();
    header(&mut out, report);
    let shown = report.sites.iter().take(top);
    for site in shown {
        site_block(&mut out, report, site, max_frames);
    }
    let hidden = report.sites.len().saturating_sub(top);
    if hidden > 0 {
        let _ = writeln!(out, "… {hidden} more sites (raise --top to see them)");
    }
    if let Some(command) = &report.command {
        command_line(&mut out, command);
    }
    if let Some(verdict) = &report.verdict {
        verdict_line(&mut out, verdict);
    }
    out
}

fn command_line(out: &mut String, command: &CommandOutcome) {
    let how = match (command.exit_code, command.signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("ended by signal {signal}"),
        (None, None) => "ended".into(),
    };
    let verdict = if command.succeeded {
        ""
    } else {
        " (a failure)"
    };
    let _ = writeln!(out, "command: {} {how}{verdict}", command.argv.join(" "));
}

fn verdict_line(out: &mut String, v: &Verdict) {
    let what = if v.leak_found {
        "LEAK FOUND"
    } else {
        "no leak over the thresholds"
    };
    let mut line = format!(
        "verdict: {what}: {} buffers, {} counted at {} (thresholds: {} buffers, {} bytes)",
        v.counted_buffers,
        bytes(v.counted_bytes),
        plural(v.counted_sites, "site"),
        v.max_buffers,
        v.max_bytes
    );
    if v.suppressed_sites > 0 {
        let _ = write!(line, "; {} sites suppressed", v.suppressed_sites);
    }
    if let Some(baseline) = &v.baseline {
        let _ = write!(line, "; compared with baseline {baseline}");
    }
    let _ = writeln!(out, "{line}");
}

fn header(out: &mut String, report: &Report) {
    let target = &report.target;
    let namespace_pid = target
        .namespace_pid
        .map(|pid| format!(", {pid} in its PID namespace"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "pool leak report: pid {}{namespace_pid} ({})",
        target.pid, target.exe
    );
    let reason = match report.reason {
        Reason::Duration => "duration elapsed",
        Reason::Signal => "on demand (SIGUSR1), still attached",
        Reason::Stop => "stopped",
        Reason::TargetExited => "target exited",
        Reason::Control => "on demand (observer report), still attached",
        Reason::Error => "ended by an error (see below)",
        Reason::Overhead => "stopped: over --max-overhead",
    };
    let _ = writeln!(
        out,
        "  build-id {}  attached {}  report: {reason}",
        target.build_id.as_deref().unwrap_or("(none)"),
        seconds(report.attached_secs)
    );
    let probes: Vec<String> = report.probes.iter().map(probe_summary).collect();
    let _ = writeln!(out, "  probes: {}", probes.join("; "));
    let _ = writeln!(out, "  returns: {}", report.returns.description);
    let _ = writeln!(out, "  kernel: {}", report.kernel.summary());
    let l = &report.locations;
    let _ = writeln!(
        out,
        "  locations: size {}  alloc-id {}  release-id {}",
        l.size, l.alloc_id, l.release_id
    );
    let _ = writeln!(out, "    id: {}", l.identity);
    if let Some(when) = &l.allocations_when {
        let _ = writeln!(out, "    {when}");
    }
    for inference in &l.inferred {
        let _ = writeln!(out, "    {inference}");
    }
    counters(out, &report.counters);
    if let Some(cost) = &report.cost {
        let _ = writeln!(out, "  cost: {}", cost.describe());
    }
    stacks(out, report);
    debug_info(out, report);
    for warning in &report.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    let o = &report.outstanding;
    let _ = writeln!(
        out,
        "  outstanding since attach: {} buffers, {} in {} of {} sites; {}",
        o.buffers,
        bytes(o.bytes),
        o.sites,
        report.sites.len(),
        growth(&report.growth)
    );
    if let Some(older_than) = report.older_than_secs {
        let in_flight: i64 = report.sites.iter().map(|s| s.in_flight_buffers).sum();
        let _ = writeln!(
            out,
            "  counting only buffers older than {}: {in_flight} younger ones are in flight and not counted",
            seconds(older_than)
        );
    }
    out.push('\n');
    if target.exited {
        let _ = writeln!(out, "  (the process has exited; this is what was seen)\n");
    }
}

fn probe_summary(probe: &ProbedFunction) -> String {
    let first = probe.copies.first();
    let cost = match first.map(|c| c.execution) {
        Some(Execution::Emulated) => "emulated",
        Some(Execution::SingleStep) => "single-stepped",
        Some(Execution::Refused) => "refused by the kernel",
        _ => "unknown cost",
    };
    format!(
        "{} {} ×{}{} [{}: {cost}]",
        probe.role,
        probe.function,
        probe.copies.len(),
        if probe.inlined { " inlined" } else { "" },
        first.map_or("?", |c| c.first_instruction.as_str())
    )
}

fn counters(out: &mut String, c: &Counters) {
    // Shown only for enum results, where a return may not allocate.
    let failed = match c[counter::ALLOC_FAILED] {
        0 => String::new(),
        n => format!("{n} returned None/Err/null, "),
    };
    // A realloc releases its old buffer without a release call.
    let realloc_releases = match c[counter::REALLOCS] {
        0 => String::new(),
        n => format!(" and {n} reallocs"),
    };
    let _ = writeln!(
        out,
        "  events: {} allocations tracked of {} calls ({failed}{} unwound by a panic, {} in flight), {} releases matched of {} calls{realloc_releases}, {} unknown releases",
        c[counter::ALLOCATIONS],
        c[counter::ALLOC_CALLS],
        c[counter::ALLOC_UNWOUND],
        c[counter::IN_FLIGHT],
        c[counter::RELEASES],
        c[counter::RELEASE_CALLS],
        c[counter::UNKNOWN_RELEASES]
    );
    reallocs(out, c);
    let lost: Vec<String> = c
        .iter()
        .filter(|(info, _)| info.kind == CounterKind::Lost)
        .map(|(info, value)| format!("{value} {}", info.name.replace('_', " ")))
        .collect();
    let _ = writeln!(out, "  not recorded: {}", lost.join(", "));
    let target: Vec<String> = c
        .iter()
        .filter(|(info, value)| info.kind == CounterKind::Target && *value > 0)
        .map(|(info, value)| format!("{value} {}", info.name.replace('_', " ")))
        .collect();
    if !target.is_empty() {
        let _ = writeln!(out, "  target: {}", target.join(", "));
    }
}

/// What reallocs and an allocator's own calls did, when there were any
/// (allocator presets).
fn reallocs(out: &mut String, c: &Counters) {
    let shown = [
        counter::REALLOCS,
        counter::REALLOC_FAILED,
        counter::ALLOCATOR_INTERNAL_ALLOCS,
        counter::ALLOCATOR_INTERNAL_RELEASES,
        counter::NULL_RELEASES,
    ];
    if shown.iter().all(|&index| c[index] == 0) {
        return;
    }
    let _ = writeln!(
        out,
        "  reallocs: {} moved, resized or freed a buffer ({} freed it, {} of a buffer allocated before attach), {} failed and kept it; allocator's own calls not recorded: {} allocate, {} release; {} releases of null",
        c[counter::REALLOCS],
        c[counter::REALLOC_FREES],
        c[counter::REALLOC_UNKNOWN_OLD],
        c[counter::REALLOC_FAILED],
        c[counter::ALLOCATOR_INTERNAL_ALLOCS],
        c[counter::ALLOCATOR_INTERNAL_RELEASES],
        c[counter::NULL_RELEASES]
    );
}

fn stacks(out: &mut String, report: &Report) {
    let c = &report.counters;
    let walker = match report.stacks.walker {
        crate::attach::StackWalker::Dwarf => {
            let rows: usize = report.stacks.tabled_objects.iter().map(|o| o.rows).sum();
            format!(
                "unwind tables ({} objects, {rows} rows): {} frames, {} by frame pointers where no row, \
                 {} reused from the thread's previous walk ({} walks re-stepped after a changed slot, \
                 {} walks of threads without a walk cache)",
                report.stacks.tabled_objects.len(),
                c[counter::FRAMES_UNWOUND],
                c[counter::FRAMES_BY_FRAME_POINTER],
                c[counter::FRAMES_REUSED],
                c[counter::WALK_CACHE_MISMATCHES],
                c[counter::WALK_CACHES_FULL]
            )
        }
        crate::attach::StackWalker::FramePointers => "the kernel's frame-pointer walker".into(),
    };
    let _ = writeln!(
        out,
        "  stacks: {walker}; {} complete, {} cut at the depth limit, {} stopped early",
        c[counter::STACKS_COMPLETE],
        c[counter::STACKS_TRUNCATED],
        c[counter::STACKS_BROKEN]
    );
}

/// The debug information of the objects the shown stacks pass through.
fn debug_info(out: &mut String, report: &Report) {
    use crate::resolve::debuginfo::DebugSource;
    let mut shown: Vec<String> = Vec::new();
    for info in &report.debug_info {
        let in_stacks = report.sites.iter().any(|s| {
            s.frames
                .iter()
                .any(|f| f.module.as_deref() == Some(&info.module))
        });
        if !in_stacks {
            continue;
        }
        let name = info.module.rsplit('/').next().unwrap_or(&info.module);
        let how = match info.debug.source {
            DebugSource::Embedded => "DWARF in the file",
            DebugSource::None => "none (symbol names only)",
            DebugSource::GivenFile => "--debug-file",
            DebugSource::BuildId => "build-id file",
            DebugSource::DebugLink => "debug link",
        };
        let mut source = match &info.debug.file {
            Some(file) => format!("{how} {}", file.display()),
            None => how.to_string(),
        };
        if !info.debug.rejected.is_empty() {
            source.push_str(&format!(" (not used: {})", info.debug.rejected.join("; ")));
        }
        shown.push(format!("{name}: {source}"));
    }
    if !shown.is_empty() {
        let _ = writeln!(out, "  debug info: {}", shown.join("; "));
    }
}

/// Which copies of a generic allocate function the site's stacks came from.
fn copies(out: &mut String, report: &Report, site: &Site) {
    let Some(allocate) = report.probes.first().filter(|p| p.copies.len() > 1) else {
        return;
    };
    let mut labels: Vec<&str> = site
        .stacks
        .iter()
        .filter_map(|s| allocate.copies.get(s.copy as usize))
        .filter_map(|c| c.label.as_deref())
        .collect();
    labels.sort();
    labels.dedup();
    if !labels.is_empty() {
        let _ = writeln!(out, "     from copy: {}", labels.join(", "));
    }
}

fn site_block(out: &mut String, report: &Report, site: &Site, max_frames: usize) {
    let mut line = format!(
        "#{:<3} {} buffers  {}  outstanding   ({} allocated since attach, {})",
        site.rank,
        site.buffers,
        bytes(site.bytes),
        site.total_allocations,
        bytes(site.total_bytes as i64)
    );
    if let (Some(oldest), Some(newest)) = (site.oldest_secs, site.newest_secs) {
        let _ = write!(
            line,
            "  oldest {}  newest {}",
            seconds(oldest),
            seconds(newest)
        );
    }
    let _ = writeln!(out, "{line}");
    copies(out, report, site);
    let _ = writeln!(out, "     {}", growth(&site.growth));
    if let Some(judgement) = &site.judgement {
        let mut line = match &judgement.suppressed_by {
            Some(rule) => format!("suppressed by leak:{rule}"),
            None => format!(
                "counted: {} buffers, {}",
                judgement.counted_buffers,
                bytes(judgement.counted_bytes)
            ),
        };
        if judgement.baseline_buffers != 0 {
            let _ = write!(
                line,
                " (baseline had {} buffers)",
                judgement.baseline_buffers
            );
        }
        let _ = writeln!(out, "     {line}");
    }
    if site.frames.is_empty() {
        let _ = writeln!(out, "      (stack not captured)");
    }
    let cwd = std::env::current_dir().ok();
    let cut = write_frames(out, &site.frames, max_frames, "      ", cwd.as_deref());
    if !cut && site.frames_truncated {
        let _ = writeln!(
            out,
            "      … {} stacks share the frames above and differ below; the largest continues:",
            site.stacks.len()
        );
        let budget = max_frames - site.frames.len();
        write_frames(
            out,
            &site.largest_stack_rest,
            budget,
            "        ",
            cwd.as_deref(),
        );
    }
    out.push('\n');
}

/// `growth: steady growth, +60.0 buffers/min, +15.0 KiB/min over 25.0s`.
fn growth(growth: &Growth) -> String {
    let mut text = format!("growth: {}", growth.trend.describe());
    if growth.trend == Trend::Unknown {
        let _ = write!(text, " ({} samples)", growth.samples);
    } else {
        let _ = write!(
            text,
            ", {:+.1} buffers/min, {}/min over {} ({} samples)",
            growth.buffers_per_min,
            signed_rate(growth.bytes_per_min),
            seconds(growth.window_secs),
            growth.samples
        );
    }
    text
}

fn signed_rate(bytes_per_min: f64) -> String {
    let text = bytes(bytes_per_min.round() as i64);
    if bytes_per_min >= 0.0 {
        format!("+{text}")
    } else {
        text
    }
}

/// One frame, paths relative to the working directory.
pub fn frame_line(frame: &Frame) -> String {
    frame_line_in(frame, std::env::current_dir().ok().as_deref())
}

/// Writes up to `budget` frames, then how many more there are; true when
/// some were left out.
fn write_frames(
    out: &mut String,
    frames: &[Frame],
    budget: usize,
    indent: &str,
    cwd: Option<&Path>,
) -> bool {
    for frame in frames.iter().take(budget) {
        let _ = writeln!(out, "{indent}{}", frame_line_in(frame, cwd));
    }
    let cut = frames.len() > budget;
    if cut {
        let _ = writeln!(
            out,
            "{indent}… {} more frames (raise --frames)",
            frames.len() - budget
        );
    }
    cut
}

fn frame_line_in(frame: &Frame, cwd: Option<&Path>) -> String {
    let function = frame
        .function
        .as_deref()
        .map(shorten_generics)
        .unwrap_or_else(|| format!("{:#x}", frame.address));
    let location = match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!("{}:{line}", short_path(file, cwd)),
        (Some(file), None) => short_path(file, cwd),
        (None, _) => frame
            .module
            .as_deref()
            .map(|m| format!("in {}", short_path(m, cwd)))
            .unwrap_or_default(),
    };
    let inlined = if frame.inlined { " (inlined)" } else { "" };
    format!("{function:<58} {location}{inlined}")
}

/// Paths people can read: relative to the working directory, a crate's
/// registry path from the crate name on, the standard library from
/// `library/` on.
fn short_path(path: &str, cwd: Option<&Path>) -> String {
    if let Some(relative) = cwd.and_then(|cwd| Path::new(path).strip_prefix(cwd).ok()) {
        return relative.display().to_string();
    }
    if let Some(at) = path.find("/registry/src/") {
        let rest = &path[at + "/registry/src/".len()..];
        if let Some((_index, krate)) = rest.split_once('/') {
            return krate.to_string();
        }
    }
    if path.starts_with("/rustc/") {
        if let Some(at) = path.find("/library/") {
            return path[at + 1..].to_string();
        }
    }
    path.to_string()
}

/// Replaces generic argument lists longer than a screen can bear with `<…>`.
fn shorten_generics(name: &str) -> String {
    const LIMIT: usize = 24;
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    let mut start = 0usize;
    for (i, c) in name.char_indices() {
        match c {
            '<' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            '>' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let inner = &name[start..=i];
                    if inner.len() > LIMIT {
                        out.push_str("<…>");
                    } else {
                        out.push_str(inner);
                    }
                }
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `1 site`, `2 sites`.
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// `51200 B (50.0 KiB)`.
pub fn bytes(value: i64) -> String {
    let magnitude = value.unsigned_abs() as f64;
    if magnitude < 1024.0 {
        return format!("{value} B");
    }
    let (scaled, unit) = if magnitude < 1024.0 * 1024.0 {
        (value as f64 / 1024.0, "KiB")
    } else if magnitude < 1024.0 * 1024.0 * 1024.0 {
        (value as f64 / (1024.0 * 1024.0), "MiB")
    } else {
        (value as f64 / (1024.0 * 1024.0 * 1024.0), "GiB")
    };
    format!("{value} B ({scaled:.1} {unit})")
}

pub fn seconds(value: f64) -> String {
    if value < 120.0 {
        format!("{value:.1}s")
    } else if value < 7200.0 {
        format!("{:.1}m", value / 60.0)
    } else {
        format!("{:.1}h", value / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(bytes(256), "256 B");
        assert_eq!(bytes(51200), "51200 B (50.0 KiB)");
        assert_eq!(bytes(-2048), "-2048 B (-2.0 KiB)");
        assert_eq!(seconds(3.25), "3.2s");
        assert_eq!(seconds(600.0), "10.0m");
    }

    #[test]
    fn readable_paths_and_names() {
        let cwd = Path::new("/work/app");
        assert_eq!(
            short_path("/work/app/src/main.rs", Some(cwd)),
            "src/main.rs"
        );
        assert_eq!(
            short_path("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/lib.rs", Some(cwd)),
            "tokio-1.54.1/src/lib.rs"
        );
        assert_eq!(
            short_path(
                "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/rt.rs",
                None
            ),
            "library/std/src/rt.rs"
        );
        assert_eq!(shorten_generics("a::Core<T,S>::poll"), "a::Core<T,S>::poll");
        assert_eq!(
            shorten_generics(
                "poll<leaky_gateway::server::serve::{async_fn#0}, alloc::sync::Arc<X>>"
            ),
            "poll<…>"
        );
    }
}
