//! pprof: a gzipped `profile.proto`, the format `go tool pprof`,
//! Pyroscope and Parca read, laid out as Go's own heap profiles are so
//! that the tools' heap views apply as they are:
//!
//! - four sample types, `alloc_objects`/`alloc_space` (allocated since
//!   attach) and `inuse_objects`/`inuse_space` (outstanding; the default);
//! - one sample per kernel stack, leaf first; the pool's allocate frame is
//!   left out, as Go's profiles leave out its allocator, so the leaf is the
//!   line that called allocate and `-top` ranks the callers;
//! - one location per address, with one line per function at that address,
//!   innermost first, the last being the function the others were inlined
//!   into;
//! - the target's executable mappings with their build ids, main binary
//!   first, marked as already symbolized (so no tool tries to symbolize
//!   again from files it may not have);
//! - the observed period in `time_nanos` / `duration_nanos`.
//!
//! The values are exact counts, not samples: `period` is 1.

pub mod proto;

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::{Context as _, Result};
use observer_ebpf::SiteKey;

use crate::analyse::diff::Mark;
use crate::analyse::group::SiteGroup;
use crate::analyse::Report;
use crate::symbolize::{Frame, MappedObject};

/// The sample types, in the order Go's heap profiles use.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// What `go tool pprof` shows unless told otherwise (`-sample_index`).
pub const DEFAULT_SAMPLE_TYPE: &str = "inuse_space";

/// One kernel stack and its values, in [`SAMPLE_TYPES`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSample {
    /// The whole stack, innermost first, as the symbolizer gives it.
    pub frames: Vec<Frame>,
    pub values: [i64; 4],
}

/// What a profile says about where it comes from.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Every executable mapping of the target.
    pub mappings: Vec<MappedObject>,
    /// The target's executable, whose mapping goes first.
    pub main: String,
    /// When the observed period started, nanoseconds since the UNIX epoch.
    pub time_nanos: i64,
    pub duration_nanos: i64,
    /// Free text shown by `go tool pprof -comments`.
    pub comments: Vec<String>,
    /// The probed allocate function, whose frames at the leaf are left out.
    pub pool_function: String,
}

impl Meta {
    /// The period a report covers: from attach to the report.
    pub fn of_report(report: &Report) -> Meta {
        Meta {
            mappings: report.mappings.clone(),
            main: report.target.exe.clone(),
            time_nanos: (report.attached_at_unix_secs * 1e9) as i64,
            duration_nanos: (report.attached_secs * 1e9) as i64,
            comments: vec![
                format!(
                    "pool observer: pid {} {} (build-id {})",
                    report.target.pid,
                    report.target.exe,
                    report.target.build_id.as_deref().unwrap_or("none")
                ),
                format!(
                    "allocate {}; release {}",
                    report.probes[0].function, report.probes[1].function
                ),
            ],
            pool_function: report.probes[0].function.clone(),
        }
    }
}

/// The report as a gzipped profile. With `--older-than`, in-use values
/// count only the buffers the report counts.
pub fn render(report: &Report) -> Result<Vec<u8>> {
    let stacks = report
        .sites
        .iter()
        .flat_map(|site| {
            site.stacks.iter().map(move |stack| StackSample {
                frames: site
                    .frames
                    .iter()
                    .chain(&stack.frames_below)
                    .cloned()
                    .collect(),
                values: [
                    stack.total_allocations as i64,
                    stack.total_bytes as i64,
                    stack.counted_buffers,
                    stack.counted_bytes,
                ],
            })
        })
        .collect();
    encode(&profile(stacks, &Meta::of_report(report)))
}

/// The profile as it was at `mark`: in use and allocated since attach, then.
pub fn of_mark(mark: &Mark, groups: &[SiteGroup], meta: &Meta) -> Result<Vec<u8>> {
    let values = |key: &SiteKey| {
        let (buffers, bytes) = mark.sample.sites.get(key).copied().unwrap_or_default();
        let (allocations, allocated) = mark.sample.allocated.get(key).copied().unwrap_or_default();
        [allocations as i64, allocated as i64, buffers, bytes]
    };
    encode(&profile(stacks_of(groups, values), meta))
}

/// What changed from `from` to `to`, as a profile whose values are the
/// changes (negative where a site shrank).
pub fn of_diff(from: &Mark, to: &Mark, groups: &[SiteGroup], meta: &Meta) -> Result<Vec<u8>> {
    let at = |mark: &Mark, key: &SiteKey| {
        let (buffers, bytes) = mark.sample.sites.get(key).copied().unwrap_or_default();
        let (allocations, allocated) = mark.sample.allocated.get(key).copied().unwrap_or_default();
        [allocations as i64, allocated as i64, buffers, bytes]
    };
    let values = |key: &SiteKey| {
        let (before, after) = (at(from, key), at(to, key));
        std::array::from_fn(|i| after[i] - before[i])
    };
    encode(&profile(stacks_of(groups, values), meta))
}

/// Each kernel stack of `groups`, whole, with its values.
fn stacks_of(groups: &[SiteGroup], values: impl Fn(&SiteKey) -> [i64; 4]) -> Vec<StackSample> {
    groups
        .iter()
        .flat_map(|group| {
            let values = &values;
            group.tails.iter().map(move |(key, rest)| StackSample {
                frames: group.frames.iter().chain(rest).cloned().collect(),
                values: values(key),
            })
        })
        .collect()
}

/// Serializes and gzips `profile` (pprof files are gzipped on disk).
pub fn encode(profile: &proto::Profile) -> Result<Vec<u8>> {
    let bytes = prost::Message::encode_to_vec(profile);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&bytes)
        .and_then(|()| gzip.finish())
        .context("compressing the pprof profile")
}

/// Builds the profile of `stacks`; stacks whose values are all zero are
/// left out.
pub fn profile(stacks: Vec<StackSample>, meta: &Meta) -> proto::Profile {
    let mut builder = Builder::new(meta);
    for stack in stacks.into_iter().filter(|s| s.values != [0; 4]) {
        let callers = stack
            .frames
            .iter()
            .position(|f| f.function.as_deref() != Some(meta.pool_function.as_str()))
            .unwrap_or(stack.frames.len());
        let location_id = builder.locations_of(&stack.frames[callers..]);
        builder.profile.sample.push(proto::Sample {
            location_id,
            value: stack.values.to_vec(),
            label: Vec::new(),
        });
    }
    builder.profile.string_table = builder.strings;
    builder.profile
}

/// Interns strings, functions, locations and mappings while samples are
/// added.
struct Builder<'a> {
    profile: proto::Profile,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: HashMap<(String, Option<String>), u64>,
    locations: HashMap<u64, u64>,
    /// The mappings as they are in the profile: (object, mapping id).
    mappings: Vec<(&'a MappedObject, u64)>,
}

impl<'a> Builder<'a> {
    fn new(meta: &'a Meta) -> Self {
        let mut builder = Self {
            profile: proto::Profile::default(),
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            functions: HashMap::new(),
            locations: HashMap::new(),
            mappings: Vec::new(),
        };
        let value_type = |b: &mut Self, (kind, unit): (&str, &str)| proto::ValueType {
            r#type: b.string(kind),
            unit: b.string(unit),
        };
        builder.profile.sample_type = SAMPLE_TYPES
            .iter()
            .map(|&pair| value_type(&mut builder, pair))
            .collect();
        builder.profile.default_sample_type = builder.string(DEFAULT_SAMPLE_TYPE);
        builder.profile.period_type = Some(value_type(&mut builder, ("space", "bytes")));
        builder.profile.period = 1;
        builder.profile.time_nanos = meta.time_nanos;
        builder.profile.duration_nanos = meta.duration_nanos;
        builder.profile.comment = meta.comments.iter().map(|c| builder.string(c)).collect();
        builder.add_mappings(meta);
        builder
    }

    fn string(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(text) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(text.to_string());
        self.string_ids.insert(text.to_string(), id);
        id
    }

    /// The main binary's mappings first (pprof takes `mapping[0]` for
    /// it), then the others by address.
    fn add_mappings(&mut self, meta: &'a Meta) {
        let mut ordered: Vec<&MappedObject> = meta.mappings.iter().collect();
        ordered.sort_by_key(|m| (m.path != meta.main, m.start));
        for (index, object) in ordered.into_iter().enumerate() {
            let id = index as u64 + 1;
            let mapping = proto::Mapping {
                id,
                memory_start: object.start,
                memory_limit: object.end,
                file_offset: object.file_offset,
                filename: self.string(&object.path),
                build_id: self.string(object.build_id.as_deref().unwrap_or("")),
                // Symbolized here, from the files as the target mapped them.
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            };
            self.profile.mapping.push(mapping);
            self.mappings.push((object, id));
        }
    }

    /// The location ids of a stack, leaf first: one per address, its
    /// inlined functions as lines of the same location.
    fn locations_of(&mut self, frames: &[Frame]) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut start = 0;
        for (index, frame) in frames.iter().enumerate() {
            let next_is_other_address = frames
                .get(index + 1)
                .is_none_or(|next| next.address != frame.address);
            // A frame inlined into the next one shares its location.
            if frame.inlined && !next_is_other_address {
                continue;
            }
            ids.push(self.location(&frames[start..=index]));
            start = index + 1;
        }
        ids
    }

    /// The location of one address, whose frames are innermost first.
    fn location(&mut self, frames: &[Frame]) -> u64 {
        let address = frames[0].address;
        if let Some(&id) = self.locations.get(&address) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        let line = frames
            .iter()
            .filter_map(|frame| {
                let name = frame.function.as_deref()?;
                Some(proto::Line {
                    function_id: self.function(name, frame.file.as_deref()),
                    line: frame.line.map_or(0, i64::from),
                })
            })
            .collect();
        let mapping_id = self
            .mappings
            .iter()
            .find(|(m, _)| (m.start..m.end).contains(&address))
            .map_or(0, |&(_, id)| id);
        self.profile.location.push(proto::Location {
            id,
            mapping_id,
            address,
            line,
        });
        self.locations.insert(address, id);
        id
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (name.to_string(), file.map(str::to_string));
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let function = proto::Function {
            id,
            name: self.string(name),
            system_name: self.string(name),
            filename: self.string(file.unwrap_or("")),
            start_line: 0,
        };
        self.profile.function.push(function);
        self.functions.insert(key, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use std::io::Read as _;

    fn frame(address: u64, function: &str, line: u32, inlined: bool) -> Frame {
        Frame {
            address,
            function: Some(function.into()),
            file: Some(format!("src/{function}.rs")),
            line: Some(line),
            inlined,
            module: Some("/bin/server".into()),
        }
    }

    fn meta(mappings: &[MappedObject]) -> Meta {
        Meta {
            mappings: mappings.to_vec(),
            main: "/bin/server".into(),
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 5_000_000_000,
            comments: vec!["pool observer: test".into()],
            pool_function: "allocate".into(),
        }
    }

    fn mappings() -> Vec<MappedObject> {
        vec![
            MappedObject {
                path: "/lib/libc.so.6".into(),
                start: 0x100,
                end: 0x200,
                file_offset: 0,
                build_id: None,
            },
            MappedObject {
                path: "/bin/server".into(),
                start: 0x1000,
                end: 0x2000,
                file_offset: 0x1000,
                build_id: Some("abcd".into()),
            },
        ]
    }

    fn name(profile: &proto::Profile, index: i64) -> &str {
        &profile.string_table[index as usize]
    }

    #[test]
    fn inlined_frames_share_a_location_innermost_first() {
        let mappings = mappings();
        // allocate; encode (out of line); send inlined into say_goodbye
        // inlined into run, all at one return address; then libc.
        let stack = vec![
            frame(0x1010, "allocate", 10, false),
            frame(0x1020, "encode", 58, false),
            frame(0x1030, "send", 130, true),
            frame(0x1030, "say_goodbye", 126, true),
            frame(0x1030, "run", 88, false),
            frame(0x150, "start_thread", 442, false),
        ];
        let leak = StackSample {
            frames: stack.clone(),
            values: [3, 768, 2, 512],
        };
        let healthy = StackSample {
            frames: stack[..2].to_vec(),
            values: [0; 4],
        };
        let profile = profile(vec![leak, healthy], &meta(&mappings));
        assert_eq!(profile.sample.len(), 1, "all-zero stacks are left out");
        let sample = &profile.sample[0];
        assert_eq!(sample.value, [3, 768, 2, 512]);
        assert_eq!(sample.location_id.len(), 3, "the pool's frame is left out");
        let leaf = &profile.location[sample.location_id[0] as usize - 1];
        let leaf_function = &profile.function[leaf.line[0].function_id as usize - 1];
        assert_eq!(name(&profile, leaf_function.name), "encode");
        let inlined = &profile.location[sample.location_id[1] as usize - 1];
        assert_eq!(inlined.address, 0x1030);
        let lines: Vec<(&str, i64)> = inlined
            .line
            .iter()
            .map(|l| {
                let function = &profile.function[l.function_id as usize - 1];
                (name(&profile, function.name), l.line)
            })
            .collect();
        assert_eq!(
            lines,
            [("send", 130), ("say_goodbye", 126), ("run", 88)],
            "innermost first, the caller last"
        );
        let libc = &profile.location[sample.location_id[2] as usize - 1];
        let main = &profile.mapping[0];
        assert_eq!(name(&profile, main.filename), "/bin/server");
        assert_eq!(name(&profile, main.build_id), "abcd");
        assert_eq!(inlined.mapping_id, main.id);
        assert_eq!(
            name(&profile, profile.mapping[1].filename),
            "/lib/libc.so.6"
        );
        assert_eq!(libc.mapping_id, profile.mapping[1].id);
    }

    #[test]
    fn sample_types_and_period_are_go_heap_profiles() {
        let mappings = mappings();
        let profile = profile(Vec::new(), &meta(&mappings));
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|t| (name(&profile, t.r#type), name(&profile, t.unit)))
            .collect();
        assert_eq!(types, SAMPLE_TYPES);
        assert_eq!(name(&profile, profile.default_sample_type), "inuse_space");
        assert_eq!(profile.string_table[0], "");
        assert_eq!(profile.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(profile.duration_nanos, 5_000_000_000);
        assert_eq!(name(&profile, profile.comment[0]), "pool observer: test");
    }

    #[test]
    fn encoded_profiles_are_gzipped_protobuf() {
        let mappings = mappings();
        let original = profile(
            vec![StackSample {
                frames: vec![frame(0x1010, "allocate", 1, false)],
                values: [1, 256, 1, 256],
            }],
            &meta(&mappings),
        );
        let gzipped = encode(&original).unwrap();
        assert_eq!(&gzipped[..2], [0x1f, 0x8b]);
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(proto::Profile::decode(&bytes[..]).unwrap(), original);
    }
}
