//! Drawing the live view with ratatui: a header (target, totals, counters,
//! cost, mark), the sites table, and the selected site's stack or the keys.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::state::State;
use crate::analyse::{Report, Site};
use crate::render::text::{bytes, frame_line};
use observer_ebpf::counter;

/// Frames of a site named in its row: enough to tell sites apart.
const ROW_FRAMES: usize = 3;

/// Draws `report` as `state` says.
pub fn draw(frame: &mut Frame<'_>, report: &Report, state: &State, pool_function: &str) {
    let [header, table, detail] = Layout::vertical([
        Constraint::Length(7),
        Constraint::Min(6),
        Constraint::Percentage(40),
    ])
    .areas(frame.area());
    frame.render_widget(header_lines(report, state), header);
    let sites = state.ordered(report);
    let mut table_state = TableState::default().with_selected(Some(state.selected));
    frame.render_stateful_widget(
        sites_table(&sites, state, pool_function),
        table,
        &mut table_state,
    );
    let selected = sites.get(state.selected).copied();
    frame.render_widget(detail_lines(selected, state), detail);
}

fn header_lines<'a>(report: &'a Report, state: &'a State) -> Paragraph<'a> {
    let c = &report.counters;
    let o = &report.outstanding;
    let mut lines = vec![
        Line::from(format!(
            "pid {} ({})  attached {:.1}s  sorted by {}",
            report.target.pid,
            report.target.exe,
            report.attached_secs,
            state.sort.name()
        )),
        Line::from(format!(
            "outstanding: {} buffers, {} in {} of {} sites; {} B/min",
            o.buffers,
            bytes(o.bytes),
            o.sites,
            report.sites.len(),
            report.growth.bytes_per_min.round()
        )),
        Line::from(format!(
            "allocations {}  releases {}  unknown releases {}  not recorded {}",
            c[counter::ALLOCATIONS],
            c[counter::RELEASES],
            c[counter::UNKNOWN_RELEASES],
            c.not_recorded()
        )),
        Line::from(match &report.cost {
            Some(cost) => format!("observer cost: {}", cost.describe()),
            None => "observer cost: measuring".into(),
        }),
    ];
    lines.push(Line::from(match &state.mark {
        Some(mark) => format!(
            "mark '{}' at {:.1}s{}",
            mark.name,
            mark.at_secs,
            if state.show_diff {
                ": change since it shown (d hides)"
            } else {
                " (d shows the change since it)"
            }
        ),
        None => "no mark (m sets one)".into(),
    }));
    Paragraph::new(lines).block(Block::bordered().title(" observer top "))
}

fn sites_table<'a>(sites: &[&'a Site], state: &State, pool_function: &str) -> Table<'a> {
    let diff = state.show_diff;
    let mut header = vec!["#", "outstanding", "buffers", "growth/min"];
    if diff {
        header.push("since mark");
    }
    header.push("site");
    let rows: Vec<Row> = sites
        .iter()
        .map(|site| {
            let mut cells = vec![
                site.rank.to_string(),
                bytes(site.bytes),
                site.buffers.to_string(),
                format!("{:+.0} B", site.growth.bytes_per_min),
            ];
            if diff {
                cells.push(match state.since_mark(site) {
                    Some((buffers, change)) => format!("{change:+} B ({buffers:+})"),
                    None => String::new(),
                });
            }
            cells.push(site_name(site, pool_function));
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(4),
        Constraint::Length(22),
        Constraint::Length(8),
        Constraint::Length(14),
    ];
    if diff {
        widths.push(Constraint::Length(22));
    }
    widths.push(Constraint::Fill(1));
    Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(" sites (↑/↓ select, s sort) "))
}

/// The first frames outside the pool, short: `Encoder::encode:58 <
/// Session::send:130 < Session::say_goodbye:126`.
fn site_name(site: &Site, pool_function: &str) -> String {
    let names: Vec<String> = site
        .frames
        .iter()
        .chain(&site.largest_stack_rest)
        .filter(|f| f.function.as_deref() != Some(pool_function))
        .take(ROW_FRAMES)
        .map(crate::analyse::live::short)
        .collect();
    if names.is_empty() {
        "[stack not captured]".into()
    } else {
        names.join(" < ")
    }
}

fn detail_lines<'a>(site: Option<&'a Site>, state: &State) -> Paragraph<'a> {
    let keys = "keys: ↑/↓ select  enter expand  s sort  m mark  d diff since mark  q quit (detach)";
    let (title, lines) = match site.filter(|_| state.expanded) {
        Some(site) => (
            format!(" stack of site #{} (enter folds) ", site.rank),
            site.frames
                .iter()
                .chain(&site.largest_stack_rest)
                .map(|f| Line::from(frame_line(f)))
                .collect(),
        ),
        None => (" keys ".to_string(), vec![Line::from(keys)]),
    };
    Paragraph::new(lines).block(Block::bordered().title(title))
}
