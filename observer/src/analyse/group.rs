//! Grouping the kernel's exact stacks into the call paths people think in.
//!
//! The kernel aggregates per exact stack. A runtime's scheduler reaches the
//! same code from several places far below it, so stacks whose first
//! `depth` symbolized frames agree are one site; the site shows the frames
//! all its stacks share.

use std::collections::BTreeMap;

use observer_ebpf::SiteKey;

use crate::snapshot::WalkedStack;
use crate::symbolize::{Frame, Symbolizer};

/// Kernel stacks that form one site, with the frames they share.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteGroup {
    pub keys: Vec<SiteKey>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// True when the stacks differ below `frames`.
    pub frames_truncated: bool,
    /// Each kernel stack's own frames below the shared ones.
    pub tails: Vec<(SiteKey, Vec<Frame>)>,
}

/// Symbolizes the stacks of `keys` and groups them.
pub fn group_stacks<'a>(
    keys: impl IntoIterator<Item = &'a SiteKey>,
    stacks: &BTreeMap<u64, WalkedStack>,
    symbolizer: &Symbolizer,
    depth: usize,
) -> Vec<SiteGroup> {
    let symbolized = keys
        .into_iter()
        .map(|key| {
            let frames = stacks
                .get(&key.stack_id)
                .map(|stack| symbolizer.symbolize_stack(&stack.frames))
                .unwrap_or_default();
            (*key, frames)
        })
        .collect();
    group_frames(symbolized, depth)
}

/// Groups symbolized stacks whose first `depth` frames agree (0: all).
pub fn group_frames(stacks: Vec<(SiteKey, Vec<Frame>)>, depth: usize) -> Vec<SiteGroup> {
    let mut groups: Vec<(Vec<FrameKey>, SiteGroup)> = Vec::new();
    for (key, frames) in stacks {
        let collapsed = collapse_recursion(frames.iter().map(frame_key).collect());
        let depth = if depth == 0 {
            collapsed.len()
        } else {
            depth.min(collapsed.len())
        };
        let signature: Vec<FrameKey> = collapsed[..depth].to_vec();
        match groups.iter_mut().find(|(s, _)| *s == signature) {
            Some((_, group)) => {
                keep_common_frames(group, &frames);
                group.keys.push(key);
                group.tails.push((key, frames));
            }
            None => groups.push((
                signature,
                SiteGroup {
                    keys: vec![key],
                    frames: frames.clone(),
                    frames_truncated: false,
                    tails: vec![(key, frames)],
                },
            )),
        }
    }
    groups
        .into_iter()
        .map(|(_, mut group)| {
            let shared = group.frames.len();
            for (_, frames) in &mut group.tails {
                frames.drain(..shared.min(frames.len()));
            }
            group
        })
        .collect()
}

/// Recursion repeats a short cycle of frames many times; for grouping, a
/// run of repeats counts once, so the frames below the recursion (which
/// tell call paths apart) stay within the grouping depth.
fn collapse_recursion(frames: Vec<FrameKey>) -> Vec<FrameKey> {
    const LONGEST_CYCLE: usize = 4;
    let mut out: Vec<FrameKey> = Vec::with_capacity(frames.len());
    for frame in frames {
        out.push(frame);
        'collapse: loop {
            for cycle in 1..=LONGEST_CYCLE {
                let n = out.len();
                if n >= 2 * cycle && out[n - 2 * cycle..n - cycle] == out[n - cycle..] {
                    out.truncate(n - cycle);
                    continue 'collapse;
                }
            }
            break;
        }
    }
    out
}

fn keep_common_frames(group: &mut SiteGroup, frames: &[Frame]) {
    let common = group
        .frames
        .iter()
        .zip(frames)
        .take_while(|(a, b)| frame_key(a) == frame_key(b))
        .count();
    if common < group.frames.len() || common < frames.len() {
        group.frames.truncate(common);
        group.frames_truncated = true;
    }
}

/// What makes two frames the same place in the code: function and source
/// line (addresses differ between inlined copies). Unsymbolized frames
/// compare by address.
type FrameKey = (Option<String>, Option<String>, Option<u64>);

pub fn frame_key(frame: &Frame) -> FrameKey {
    match (&frame.function, frame.line) {
        (None, None) => (None, None, Some(frame.address)),
        _ => (
            frame.function.clone(),
            frame.file.clone(),
            frame.line.map(u64::from),
        ),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn frame(function: &str, line: u32) -> Frame {
        Frame {
            address: 0x1000 + u64::from(line),
            function: Some(function.into()),
            file: Some("src/lib.rs".into()),
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

    #[test]
    fn stacks_differing_deep_down_are_one_site() {
        let a = vec![frame("alloc", 1), frame("encode", 2), frame("worker_a", 3)];
        let b = vec![frame("alloc", 1), frame("encode", 2), frame("worker_b", 4)];
        let c = vec![frame("alloc", 1), frame("decode", 9), frame("worker_a", 3)];
        let groups = group_frames(vec![(key(1), a), (key(2), b), (key(3), c)], 2);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].keys, vec![key(1), key(2)]);
        assert_eq!(groups[0].frames.len(), 2);
        assert!(groups[0].frames_truncated);
        assert!(!groups[1].frames_truncated);
    }

    #[test]
    fn recursion_does_not_hide_the_call_path_below_it() {
        let recursive = |bottom: &str| {
            let mut frames = vec![frame("alloc", 1), frame("number", 2)];
            for _ in 0..40 {
                frames.push(frame("value", 3));
                frames.push(frame("list", 4));
            }
            frames.push(frame(bottom, 5));
            frames
        };
        let groups = group_frames(
            vec![(key(1), recursive("bad")), (key(2), recursive("good"))],
            8,
        );
        assert_eq!(groups.len(), 2, "the paths differ below the recursion");
        let keys: Vec<_> = recursive("x").iter().map(frame_key).collect();
        assert_eq!(collapse_recursion(keys).len(), 5);
    }

    #[test]
    fn depth_zero_needs_whole_stacks_to_agree() {
        let a = vec![frame("alloc", 1), frame("x", 2)];
        let b = vec![frame("alloc", 1), frame("y", 2)];
        assert_eq!(
            group_frames(vec![(key(1), a.clone()), (key(2), b)], 0).len(),
            2
        );
        let groups = group_frames(vec![(key(1), a.clone()), (key(2), a)], 0);
        assert_eq!(groups.len(), 1);
        assert!(!groups[0].frames_truncated);
    }
}
