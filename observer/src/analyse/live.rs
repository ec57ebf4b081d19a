//! A cheap view of the sites between reports, for endpoints polled often
//! (the metrics endpoint): the per-site counts of a quick snapshot (no walk
//! of the live table), grouped into sites as reports group them, each with
//! a stable id and a short human label. Each kernel stack is symbolized
//! once, when it is first seen (stacks are interned by a hash of their
//! frames, so an id never changes meaning).

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use aya::Ebpf;
use observer_ebpf::SiteKey;

use super::group::{frame_key, group_frames};
use super::growth::{growth, Growth, History};
use crate::snapshot::{read_stacks, Snapshot};
use crate::symbolize::{Frame, Symbolizer};

/// One site as the live view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSite {
    /// Stable across scrapes and sessions of the same binary: a hash of
    /// the frames that define the site.
    pub id: String,
    /// The first frame outside the pool, and the first caller that tells
    /// it apart from another site with the same first frame.
    pub label: String,
    pub buffers: i64,
    pub bytes: i64,
    pub growth: Growth,
}

/// Symbolized stacks and assigned labels, kept for the session.
pub struct LiveSites {
    /// See [`crate::analyse::ReportContext::group_depth`].
    depth: usize,
    /// The probed allocate function: frames of it are not a site's label.
    pool_function: String,
    frames: HashMap<SiteKey, Vec<Frame>>,
    /// Labels by site id, fixed once given so a series keeps its name.
    labels: HashMap<String, String>,
}

impl LiveSites {
    pub fn new(depth: usize, pool_function: &str) -> Self {
        Self {
            depth,
            pool_function: pool_function.to_string(),
            frames: HashMap::new(),
            labels: HashMap::new(),
        }
    }

    /// The sites of `snapshot` (a quick one is enough), most outstanding
    /// bytes first.
    pub fn sites(
        &mut self,
        snapshot: &Snapshot,
        ebpf: &Ebpf,
        symbolizer: &Symbolizer,
        history: &History,
    ) -> Result<Vec<LiveSite>> {
        let new: Vec<SiteKey> = snapshot
            .sites
            .keys()
            .filter(|key| !self.frames.contains_key(key))
            .copied()
            .collect();
        let stacks = read_stacks(ebpf, new.iter())?;
        for key in new {
            let frames = stacks
                .get(&key.stack_id)
                .map(|stack| symbolizer.symbolize_stack(&stack.frames))
                .unwrap_or_default();
            self.frames.insert(key, frames);
        }
        let known: Vec<(SiteKey, Vec<Frame>)> = snapshot
            .sites
            .keys()
            .map(|key| (*key, self.frames[key].clone()))
            .collect();
        Ok(self.measure(known, &snapshot.sites, history))
    }

    fn measure(
        &mut self,
        stacks: Vec<(SiteKey, Vec<Frame>)>,
        counts: &BTreeMap<SiteKey, observer_ebpf::SiteStats>,
        history: &History,
    ) -> Vec<LiveSite> {
        let groups = group_frames(stacks, self.depth);
        let defining: Vec<Vec<Frame>> = groups
            .iter()
            .map(|g| self.defining_frames(&g.frames))
            .collect();
        let mut sites: Vec<LiveSite> = groups
            .iter()
            .zip(&defining)
            .map(|(group, frames)| {
                let id = site_id(frames);
                let label = match self.labels.get(&id) {
                    Some(label) => label.clone(),
                    None => {
                        let label = label_among(frames, &defining);
                        self.labels.insert(id.clone(), label.clone());
                        label
                    }
                };
                let (buffers, bytes) = group
                    .keys
                    .iter()
                    .filter_map(|key| counts.get(key))
                    .fold((0, 0), |(n, b), s| {
                        (n + s.outstanding_buffers, b + s.outstanding_bytes)
                    });
                LiveSite {
                    id,
                    label,
                    buffers,
                    bytes,
                    growth: growth(&history.series(&group.keys)),
                }
            })
            .collect();
        sites.sort_by(|a, b| (b.bytes, b.buffers, &a.id).cmp(&(a.bytes, a.buffers, &b.id)));
        sites
    }

    /// The frames that define a site: those below the pool's own, up to
    /// the grouping depth.
    fn defining_frames(&self, frames: &[Frame]) -> Vec<Frame> {
        let outside = frames
            .iter()
            .position(|f| f.function.as_deref() != Some(self.pool_function.as_str()))
            .unwrap_or(frames.len());
        let depth = if self.depth == 0 {
            frames.len()
        } else {
            self.depth
        };
        frames[outside..].iter().take(depth).cloned().collect()
    }
}

/// A stable id: FNV-1a over the frames' function, file and line (not
/// addresses, which move between builds and with ASLR), 16 hex digits.
pub fn site_id(frames: &[Frame]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for frame in frames {
        let (function, file, line) = frame_key(frame);
        let text = format!(
            "{}|{}|{}\n",
            function.as_deref().unwrap_or(""),
            file.as_deref().unwrap_or(""),
            line.unwrap_or(0)
        );
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// `Encoder::encode:58`, followed by `< Session::say_goodbye:126` when
/// another site starts with the same frame: the first caller where the
/// two differ.
fn label_among(frames: &[Frame], all: &[Vec<Frame>]) -> String {
    let Some(first) = frames.first() else {
        return "[stack not captured]".into();
    };
    let first_key = frame_key(first);
    let differs_at = all
        .iter()
        .filter(|other| other.as_slice() != frames)
        .filter(|other| other.first().map(frame_key) == Some(first_key.clone()))
        .map(|other| {
            frames
                .iter()
                .zip(other.iter())
                .take_while(|(a, b)| frame_key(a) == frame_key(b))
                .count()
        })
        .max();
    match differs_at.and_then(|index| frames.get(index)) {
        Some(caller) => format!("{} < {}", short(first), short(caller)),
        None => short(first),
    }
}

/// The last two segments of a function's path (closures named by their
/// function), and its line: `Session::say_goodbye:126`.
pub fn short(frame: &Frame) -> String {
    let Some(function) = frame.function.as_deref() else {
        return format!("{:#x}", frame.address);
    };
    let mut path = function;
    while let Some(stripped) = path.strip_suffix("::{{closure}}") {
        path = stripped;
    }
    let segments: Vec<&str> = path.rsplitn(3, "::").collect();
    let name = match segments.as_slice() {
        [last, second, ..] => format!("{second}::{last}"),
        [only] => only.to_string(),
        [] => path.to_string(),
    };
    match frame.line {
        Some(line) => format!("{name}:{line}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use observer_ebpf::SiteStats;

    fn frame(function: &str, line: u32) -> Frame {
        Frame {
            address: u64::from(line),
            function: Some(function.into()),
            file: Some("src/x.rs".into()),
            line: Some(line),
            inlined: false,
            module: None,
        }
    }

    fn key(stack_id: u64) -> SiteKey {
        SiteKey {
            stack_id,
            probe: 0,
            _pad: 0,
        }
    }

    fn stack(caller: &str) -> Vec<Frame> {
        vec![
            frame("bufpool::BufPool::allocate", 144),
            frame("leaky_gateway::codec::Encoder::encode", 58),
            frame("leaky_gateway::session::Session::send::{{closure}}", 130),
            frame(caller, 126),
        ]
    }

    #[test]
    fn sites_get_stable_ids_and_labels_that_tell_them_apart() {
        let mut live = LiveSites::new(16, "bufpool::BufPool::allocate");
        let stacks = vec![
            (
                key(1),
                stack("leaky_gateway::session::Session::say_goodbye::{{closure}}"),
            ),
            (
                key(2),
                stack("leaky_gateway::session::Session::converse::{{closure}}"),
            ),
        ];
        let counts = BTreeMap::from([
            (
                key(1),
                SiteStats {
                    outstanding_buffers: 2,
                    outstanding_bytes: 512,
                    ..SiteStats::default()
                },
            ),
            (key(2), SiteStats::default()),
        ]);
        let sites = live.measure(stacks.clone(), &counts, &History::default());
        assert_eq!(
            sites[0].label,
            "Encoder::encode:58 < Session::say_goodbye:126"
        );
        assert_eq!(sites[0].bytes, 512);
        assert_eq!(sites[1].label, "Encoder::encode:58 < Session::converse:126");
        assert_ne!(sites[0].id, sites[1].id);
        // Same frames, same id, on every scrape.
        let again = live.measure(stacks, &counts, &History::default());
        assert_eq!(again[0].id, sites[0].id);
        assert_eq!(sites[0].id.len(), 16);
    }

    #[test]
    fn a_site_alone_is_named_by_its_first_frame_outside_the_pool() {
        let mut live = LiveSites::new(16, "bufpool::BufPool::allocate");
        let stacks = vec![(key(1), stack("main"))];
        let counts = BTreeMap::from([(key(1), SiteStats::default())]);
        let sites = live.measure(stacks, &counts, &History::default());
        assert_eq!(sites[0].label, "Encoder::encode:58");
        let unknown = Frame {
            function: None,
            line: None,
            ..frame("x", 1)
        };
        assert_eq!(short(&unknown), "0x1");
    }
}
