//! What the live view shows and how keys change it: selection, sort order,
//! the expanded stack, the mark and the diff since it. No terminal here, so
//! it is tested as plain data.

use observer_ebpf::{SiteKey, NO_STACK};

use crate::analyse::growth::Sample;
use crate::analyse::{Report, Site};

/// How the sites are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Bytes,
    Buffers,
    Growth,
    Allocated,
}

impl SortBy {
    fn next(self) -> Self {
        match self {
            SortBy::Bytes => SortBy::Buffers,
            SortBy::Buffers => SortBy::Growth,
            SortBy::Growth => SortBy::Allocated,
            SortBy::Allocated => SortBy::Bytes,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortBy::Bytes => "outstanding bytes",
            SortBy::Buffers => "outstanding buffers",
            SortBy::Growth => "growth",
            SortBy::Allocated => "bytes allocated",
        }
    }
}

/// A key, as the view understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    /// Expand or fold the selected site's stack.
    Expand,
    Sort,
    Mark,
    Diff,
    Quit,
}

/// What the session must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Redraw,
    /// Take a mark now (the session reads the counts).
    Mark,
    /// Stop the session: detach and give the final report.
    Quit,
}

/// The mark the diff is taken against.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewMark {
    pub name: String,
    /// Seconds since attach when it was taken.
    pub at_secs: f64,
    pub sample: Sample,
}

/// The view's state.
#[derive(Debug, Clone)]
pub struct State {
    pub sort: SortBy,
    pub selected: usize,
    pub expanded: bool,
    pub mark: Option<ViewMark>,
    pub show_diff: bool,
    marks_taken: usize,
}

impl Default for State {
    fn default() -> Self {
        Self {
            sort: SortBy::Bytes,
            selected: 0,
            expanded: false,
            mark: None,
            show_diff: false,
            marks_taken: 0,
        }
    }
}

impl State {
    /// Applies `key`; `sites` is how many rows there are.
    pub fn handle(&mut self, key: Key, sites: usize) -> Action {
        match key {
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::Down => self.selected = (self.selected + 1).min(sites.saturating_sub(1)),
            Key::Expand => self.expanded = !self.expanded,
            Key::Sort => {
                self.sort = self.sort.next();
                self.selected = 0;
            }
            Key::Diff => self.show_diff = self.mark.is_some() && !self.show_diff,
            Key::Mark => return Action::Mark,
            Key::Quit => return Action::Quit,
        }
        Action::Redraw
    }

    /// Records a mark taken at `at_secs`, named m1, m2, …; the diff is then
    /// shown against it.
    pub fn set_mark(&mut self, sample: Sample, at_secs: f64) -> String {
        self.marks_taken += 1;
        let name = format!("m{}", self.marks_taken);
        self.mark = Some(ViewMark {
            name: name.clone(),
            at_secs,
            sample,
        });
        self.show_diff = true;
        name
    }

    /// The report's sites in the chosen order.
    pub fn ordered<'r>(&self, report: &'r Report) -> Vec<&'r Site> {
        let mut sites: Vec<&Site> = report.sites.iter().collect();
        match self.sort {
            SortBy::Bytes => sites.sort_by_key(|s| std::cmp::Reverse((s.bytes, s.buffers))),
            SortBy::Buffers => sites.sort_by_key(|s| std::cmp::Reverse((s.buffers, s.bytes))),
            SortBy::Allocated => sites.sort_by_key(|s| std::cmp::Reverse(s.total_bytes)),
            SortBy::Growth => sites.sort_by(|a, b| {
                b.growth
                    .bytes_per_min
                    .total_cmp(&a.growth.bytes_per_min)
                    .then(b.bytes.cmp(&a.bytes))
            }),
        }
        sites
    }

    /// The change of a site's outstanding (buffers, bytes) since the mark.
    pub fn since_mark(&self, site: &Site) -> Option<(i64, i64)> {
        let mark = self.mark.as_ref()?;
        let before = mark.sample.total_of(site_keys(site).iter());
        let now = site
            .stacks
            .iter()
            .fold((0, 0), |(n, b), s| (n + s.buffers, b + s.bytes));
        Some((now.0 - before.0, now.1 - before.1))
    }
}

/// The kernel's keys of a site's stacks.
fn site_keys(site: &Site) -> Vec<SiteKey> {
    site.stacks
        .iter()
        .map(|stack| SiteKey {
            stack_id: stack.stack_id.unwrap_or(NO_STACK),
            probe: stack.copy,
            _pad: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_move_sort_expand_and_quit() {
        let mut state = State::default();
        assert_eq!(state.handle(Key::Down, 3), Action::Redraw);
        assert_eq!(state.handle(Key::Down, 3), Action::Redraw);
        assert_eq!(state.handle(Key::Down, 3), Action::Redraw);
        assert_eq!(state.selected, 2, "stops at the last row");
        state.handle(Key::Up, 3);
        assert_eq!(state.selected, 1);
        state.handle(Key::Expand, 3);
        assert!(state.expanded);
        state.handle(Key::Sort, 3);
        assert_eq!((state.sort, state.selected), (SortBy::Buffers, 0));
        assert_eq!(state.handle(Key::Mark, 3), Action::Mark);
        assert_eq!(state.handle(Key::Quit, 3), Action::Quit);
    }

    #[test]
    fn the_diff_needs_a_mark_and_is_shown_once_one_is_set() {
        let mut state = State::default();
        state.handle(Key::Diff, 1);
        assert!(!state.show_diff, "nothing to diff against");
        assert_eq!(state.set_mark(Sample::default(), 1.0), "m1");
        assert!(state.show_diff);
        state.handle(Key::Diff, 1);
        assert!(!state.show_diff);
        assert_eq!(state.set_mark(Sample::default(), 2.0), "m2");
    }
}
