//! Marks and diffs: what changed between two moments, overall and per
//! site, optionally divided by a number of cycles the user ran in between
//! ("+256 B (1 buffer) per connect/disconnect").

use serde::Serialize;

use super::group::SiteGroup;
use super::growth::Sample;
use crate::symbolize::Frame;

/// Version of the JSON diff schema.
pub const DIFF_VERSION: u32 = 1;

/// A named moment: the per-site outstanding counts when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub name: String,
    pub sample: Sample,
}

/// The marks of one session, by name (setting a name again replaces it).
#[derive(Debug, Clone, Default)]
pub struct Marks {
    marks: Vec<Mark>,
}

impl Marks {
    pub fn set(&mut self, name: &str, sample: Sample) {
        self.marks.retain(|m| m.name != name);
        self.marks.push(Mark {
            name: name.to_string(),
            sample,
        });
    }

    pub fn get(&self, name: &str) -> Option<&Mark> {
        self.marks.iter().find(|m| m.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.marks.iter().map(|m| m.name.as_str()).collect()
    }
}

/// A change in outstanding buffers and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Delta {
    pub buffers: i64,
    pub bytes: i64,
    /// Divided by `per`, when given.
    pub buffers_per_cycle: Option<f64>,
    pub bytes_per_cycle: Option<f64>,
}

impl Delta {
    fn new(buffers: i64, bytes: i64, per: Option<u64>) -> Self {
        let divide = |v: i64| per.filter(|&n| n > 0).map(|n| v as f64 / n as f64);
        Self {
            buffers,
            bytes,
            buffers_per_cycle: divide(buffers),
            bytes_per_cycle: divide(bytes),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffSite {
    pub rank: usize,
    pub delta: Delta,
    /// Outstanding at the later mark.
    pub buffers_after: i64,
    pub frames: Vec<Frame>,
    pub frames_truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub version: u32,
    pub from: String,
    pub to: String,
    pub elapsed_secs: f64,
    /// The number of cycles the user said ran between the marks.
    pub per: Option<u64>,
    pub total: Delta,
    /// Sites whose outstanding changed, largest change in bytes first.
    pub sites: Vec<DiffSite>,
    /// Sites that did not change.
    pub unchanged_sites: usize,
}

/// Compares two marks over the grouped sites.
pub fn diff(from: &Mark, to: &Mark, groups: Vec<SiteGroup>, per: Option<u64>) -> Diff {
    let (before_buffers, before_bytes) = from.sample.total();
    let (after_buffers, after_bytes) = to.sample.total();
    let mut sites = Vec::new();
    let mut unchanged_sites = 0;
    for group in groups {
        let (b0, y0) = from.sample.total_of(group.keys.iter());
        let (b1, y1) = to.sample.total_of(group.keys.iter());
        if (b0, y0) == (b1, y1) {
            unchanged_sites += 1;
            continue;
        }
        sites.push(DiffSite {
            rank: 0,
            delta: Delta::new(b1 - b0, y1 - y0, per),
            buffers_after: b1,
            frames: group.frames,
            frames_truncated: group.frames_truncated,
        });
    }
    sites.sort_by_key(|s| std::cmp::Reverse((s.delta.bytes.abs(), s.delta.buffers.abs())));
    for (index, site) in sites.iter_mut().enumerate() {
        site.rank = index + 1;
    }
    Diff {
        version: DIFF_VERSION,
        from: from.name.clone(),
        to: to.name.clone(),
        elapsed_secs: to.sample.taken_ns.saturating_sub(from.sample.taken_ns) as f64 / 1e9,
        per,
        total: Delta::new(
            after_buffers - before_buffers,
            after_bytes - before_bytes,
            per,
        ),
        sites,
        unchanged_sites,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::group::tests::frame;
    use observer_ebpf::SiteKey;

    fn key(stack_id: u64) -> SiteKey {
        SiteKey {
            stack_id,
            probe: 0,
            _pad: 0,
        }
    }

    fn sample(secs: u64, sites: &[(u64, i64, i64)]) -> Sample {
        Sample {
            taken_ns: secs * 1_000_000_000,
            sites: sites.iter().map(|&(id, n, b)| (key(id), (n, b))).collect(),
            ..Sample::default()
        }
    }

    fn group(keys: &[u64], function: &str) -> SiteGroup {
        SiteGroup {
            keys: keys.iter().map(|&id| key(id)).collect(),
            frames: vec![frame("alloc", 1), frame(function, 2)],
            frames_truncated: false,
            tails: Vec::new(),
        }
    }

    #[test]
    fn per_cycle_change_of_a_leaking_site() {
        let mut marks = Marks::default();
        // Stacks 1 and 2 are one leaking site; 3 is healthy with jitter
        // that came back; 4 is healthy and idle.
        marks.set(
            "before",
            sample(10, &[(1, 20, 5120), (2, 0, 0), (3, 2, 512), (4, 0, 0)]),
        );
        marks.set(
            "after",
            sample(
                40,
                &[(1, 80, 20480), (2, 40, 10240), (3, 2, 512), (4, 0, 0)],
            ),
        );
        let groups = vec![
            group(&[1, 2], "say_goodbye"),
            group(&[3], "converse"),
            group(&[4], "inbox"),
        ];
        let d = diff(
            marks.get("before").unwrap(),
            marks.get("after").unwrap(),
            groups,
            Some(100),
        );
        assert_eq!(d.elapsed_secs, 30.0);
        assert_eq!(d.total.buffers, 100);
        assert_eq!(d.total.bytes_per_cycle, Some(256.0));
        assert_eq!(d.sites.len(), 1);
        assert_eq!(d.unchanged_sites, 2);
        let site = &d.sites[0];
        assert_eq!(site.delta.buffers_per_cycle, Some(1.0));
        assert_eq!(site.delta.bytes_per_cycle, Some(256.0));
        assert_eq!(site.buffers_after, 120);
        assert_eq!(site.frames[1].function.as_deref(), Some("say_goodbye"));
    }

    #[test]
    fn shrinking_sites_are_listed_and_sorted_by_size_of_change() {
        let from = Mark {
            name: "a".into(),
            sample: sample(0, &[(1, 10, 1000), (2, 1, 10)]),
        };
        let to = Mark {
            name: "b".into(),
            sample: sample(1, &[(1, 0, 0), (2, 3, 30), (5, 1, 64)]),
        };
        let groups = vec![group(&[2], "small"), group(&[1], "big"), group(&[5], "new")];
        let d = diff(&from, &to, groups, None);
        assert_eq!(d.sites.len(), 3);
        assert_eq!(d.sites[0].delta.bytes, -1000);
        assert_eq!(d.sites[0].rank, 1);
        assert_eq!(d.sites[1].delta.bytes, 64);
        assert_eq!(d.total.buffers_per_cycle, None);
        assert_eq!(d.total.buffers, -7);
    }

    #[test]
    fn setting_a_mark_again_replaces_it() {
        let mut marks = Marks::default();
        marks.set("a", sample(1, &[]));
        marks.set("a", sample(2, &[]));
        assert_eq!(marks.names(), vec!["a"]);
        assert_eq!(marks.get("a").unwrap().sample.taken_ns, 2_000_000_000);
    }
}
