//! Outstanding bytes over time as an SVG line chart: the total and the top
//! sites, from the session's samples. Plain SVG, readable in any browser.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use observer_ebpf::{SiteKey, NO_STACK};

use crate::analyse::growth::{History, Point};
use crate::analyse::{Report, Site};

const WIDTH: f64 = 980.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 330.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const TOP_SITES: usize = 5;
const PALETTE: [&str; TOP_SITES] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"];

/// A named line of the chart.
struct Line {
    label: String,
    detail: String,
    color: &'static str,
    width: f64,
    points: Vec<(f64, f64)>,
}

pub fn write(path: &Path, report: &Report, history: &History) -> Result<()> {
    super::replace_file(path, render(report, history).as_bytes())
}

pub fn render(report: &Report, history: &History) -> String {
    let all_keys: Vec<SiteKey> = report.sites.iter().flat_map(site_keys).collect();
    let total = bytes_over_time(&history.series(&all_keys));
    let mut lines = vec![Line {
        label: "all sites".into(),
        detail: format!(
            "{}/min, {}",
            signed_bytes(report.growth.bytes_per_min),
            report.growth.trend.describe()
        ),
        color: "#222222",
        width: 2.5,
        points: total,
    }];
    let top = report
        .sites
        .iter()
        .filter(|s| s.total_bytes > 0)
        .take(TOP_SITES);
    for (site, color) in top.zip(PALETTE) {
        let (label, detail) = site_label(site);
        lines.push(Line {
            label,
            detail,
            color,
            width: 1.5,
            points: bytes_over_time(&history.series(&site_keys(site))),
        });
    }
    draw(report, &lines)
}

fn site_keys(site: &Site) -> Vec<SiteKey> {
    site.stacks
        .iter()
        .map(|s| SiteKey {
            stack_id: s.stack_id.unwrap_or(NO_STACK),
            probe: s.copy,
            _pad: 0,
        })
        .collect()
}

fn bytes_over_time(series: &[Point]) -> Vec<(f64, f64)> {
    series.iter().map(|p| (p.secs, p.bytes)).collect()
}

/// `#1 encode ← send ← say_goodbye` and `+15.0 KiB/min, steady growth`.
fn site_label(site: &Site) -> (String, String) {
    let mut names: Vec<String> = Vec::new();
    for frame in site.frames.iter().skip(1) {
        let Some(function) = &frame.function else {
            continue;
        };
        let short = short_function(function);
        if !names.contains(&short) {
            names.push(short);
        }
        if names.len() == 3 {
            break;
        }
    }
    (
        format!("#{} {}", site.rank, names.join(" ← ")),
        format!(
            "{}/min, {}",
            signed_bytes(site.growth.bytes_per_min),
            site.growth.trend.describe()
        ),
    )
}

/// The function's own name, closures and async bodies folded into the
/// function that contains them.
fn short_function(name: &str) -> String {
    name.split("::")
        .filter(|s| !(s.starts_with('{') && s.ends_with('}')))
        .last()
        .unwrap_or(name)
        .to_string()
}

fn signed_bytes(value: f64) -> String {
    let sign = if value < 0.0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(value.abs()))
}

fn human_bytes(value: f64) -> String {
    match value {
        v if v >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GiB", v / (1024.0 * 1024.0 * 1024.0)),
        v if v >= 1024.0 * 1024.0 => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
        v if v >= 1024.0 => format!("{:.1} KiB", v / 1024.0),
        v => format!("{v:.0} B"),
    }
}

/// A round byte-axis maximum at or above `value`: 1, 2, 2.5, 5 or 10
/// times a power of ten of the binary unit it is shown in.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let unit = [1024.0f64.powi(3), 1024.0f64.powi(2), 1024.0, 1.0]
        .into_iter()
        .find(|unit| value >= *unit)
        .unwrap_or(1.0);
    unit * nice_decimal(value / unit)
}

fn nice_decimal(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn draw(report: &Report, lines: &[Line]) -> String {
    let max_x = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let max_y = nice_ceiling(
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |secs: f64| LEFT + secs / max_x * plot_w;
    let y = |bytes: f64| TOP + plot_h - bytes / max_y * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="24" font-size="15">Outstanding pool bytes, pid {} ({})</text>"#,
        report.target.pid,
        escape(&report.target.exe)
    );
    for i in 0..=5 {
        let value = max_y * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            y(value),
            y(value),
            LEFT - 6.0,
            y(value) + 4.0,
            human_bytes(value)
        );
        let secs = max_x * f64::from(i) / 5.0;
        let precision = if max_x < 10.0 { 1 } else { 0 };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{secs:.precision$}s</text>"#,
            x(secs),
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since attach (first sample)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    for (index, line) in lines.iter().enumerate() {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|&(s, b)| format!("{:.1},{:.1}", x(s), y(b)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="{}" points="{}"/>"#,
            line.color,
            line.width,
            points.join(" ")
        );
        let legend_y = TOP + 10.0 + index as f64 * 36.0;
        let legend_x = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            svg,
            r##"<rect x="{legend_x}" y="{:.1}" width="12" height="4" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" fill="#555555">{}</text>"##,
            legend_y - 4.0,
            line.color,
            legend_x + 18.0,
            legend_y + 1.0,
            escape(&line.label),
            legend_x + 18.0,
            legend_y + 16.0,
            escape(&line.detail)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_and_labels() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(51200.0), 50.0 * 1024.0);
        assert_eq!(nice_ceiling(52000.0), 100.0 * 1024.0);
        assert_eq!(nice_ceiling(230.0), 250.0);
        assert_eq!(nice_ceiling(3.0 * 1024.0 * 1024.0), 5.0 * 1024.0 * 1024.0);
        assert_eq!(
            short_function("a::session::Session::say_goodbye::{{closure}}"),
            "say_goodbye"
        );
        assert_eq!(signed_bytes(-2048.0), "-2.0 KiB");
        assert_eq!(escape("<a & b>"), "&lt;a &amp; b&gt;");
    }
}
