//! Which mapped object a function is probed in: `OBJECT:FUNCTION` names a
//! shared object the target maps (`libc.so.6:malloc`); a bare function is
//! in the executable.

use std::path::PathBuf;

use anyhow::Result;

use crate::error::UserError;
use crate::plan::ProbeRequest;
use crate::resolve::process::{Mapping, Process};

/// A function as the user named it, split into its object and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFunction<'a> {
    /// The shared object's file name (or full path), when one was given.
    pub object: Option<&'a str>,
    /// The function path inside it.
    pub function: &'a str,
}

/// Splits `OBJECT:FUNCTION` at its single colon. Rust paths only contain
/// colons in pairs (`a::b`), so a lone colon can only separate an object.
pub fn split(text: &str) -> ObjectFunction<'_> {
    let bytes = text.as_bytes();
    let lone = (0..bytes.len()).find(|&i| {
        bytes[i] == b':'
            && (i == 0 || bytes[i - 1] != b':')
            && bytes.get(i + 1).is_none_or(|&next| next != b':')
    });
    match lone {
        Some(i) => ObjectFunction {
            object: Some(&text[..i]),
            function: &text[i + 1..],
        },
        None => ObjectFunction {
            object: None,
            function: text,
        },
    }
}

/// The object both functions are probed in: the executable (`None`) or one
/// shared object; functions in two different objects are refused.
pub fn common_object<'a>(
    alloc: &ObjectFunction<'a>,
    release: &ObjectFunction<'a>,
) -> Result<Option<&'a str>> {
    if alloc.object != release.object {
        return Err(UserError::new(format!(
            "--alloc is in {} and --release in {}: both functions must be in the same object",
            alloc.object.unwrap_or("the executable"),
            release.object.unwrap_or("the executable")
        ))
        .into());
    }
    Ok(alloc.object)
}

/// `request` with every function's object prefix taken off, once all of
/// them are checked to be in `object` (the first functions' common one).
pub fn in_one_object(request: &ProbeRequest, object: Option<&str>) -> Result<ProbeRequest> {
    let strip = |flag: &str, text: &str| -> Result<String> {
        let named = split(text);
        if named.object != object {
            return Err(UserError::new(format!(
                "{flag} {text} is in {} and the first --alloc in {}: every function of a \
                 session must be in the same object",
                named.object.unwrap_or("the executable"),
                object.unwrap_or("the executable")
            ))
            .into());
        }
        Ok(named.function.to_string())
    };
    let mut request = request.clone();
    request.alloc = strip("--alloc", &request.alloc)?;
    request.release = strip("--release", &request.release)?;
    for more in &mut request.more_allocs {
        more.function = strip("--alloc", &more.function)?;
    }
    for more in &mut request.more_releases {
        more.function = strip("--release", &more.function)?;
    }
    Ok(request)
}

/// A shared object the target maps, as the probes reach it.
#[derive(Debug, Clone)]
pub struct MappedObject {
    /// The kernel's own reference to the file (`/proc/PID/map_files/…`):
    /// the target's path is never opened on the host.
    pub path: PathBuf,
    /// The path as the target's maps show it, for people.
    pub display: String,
}

/// Finds `name` among the executable mappings of `process`: a file name
/// (`libc.so.6`) or a full path as `/proc/PID/maps` shows it. Several
/// different files of that name are refused (give the full path).
pub fn find_mapped(process: &Process, name: &str) -> Result<MappedObject> {
    let mappings = process.executable_mappings()?;
    let matching = matching_mappings(&mappings, name);
    let mut paths: Vec<&str> = matching.iter().map(|m| m.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    match (matching.first(), paths.len()) {
        (Some(mapping), 1) => Ok(MappedObject {
            path: PathBuf::from(format!(
                "/proc/{}/map_files/{:x}-{:x}",
                process.pid, mapping.start, mapping.end
            )),
            display: mapping.path.clone(),
        }),
        (None, _) => Err(UserError::new(format!(
            "process {} maps no executable object named {name:?} (see /proc/{}/maps)",
            process.pid, process.pid
        ))
        .into()),
        _ => Err(UserError::new(format!(
            "process {} maps several objects named {name:?} ({}): give the full path",
            process.pid,
            paths.join(", ")
        ))
        .into()),
    }
}

fn matching_mappings<'m>(mappings: &'m [Mapping], name: &str) -> Vec<&'m Mapping> {
    mappings
        .iter()
        .filter(|m| m.path == name || m.path.rsplit('/').next() == Some(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_colon_separates_the_object() {
        assert_eq!(
            split("libc.so.6:malloc"),
            ObjectFunction {
                object: Some("libc.so.6"),
                function: "malloc"
            }
        );
        assert_eq!(split("bufpool::BufPool::allocate").object, None);
        assert_eq!(split("<a::B as c::D>::f").object, None);
        assert_eq!(split("/lib/x.so:a::b").object, Some("/lib/x.so"));
        assert_eq!(split("/lib/x.so:a::b").function, "a::b");
    }

    #[test]
    fn both_functions_must_share_an_object() {
        let (a, b) = (split("libc.so.6:malloc"), split("free"));
        assert!(common_object(&a, &b).is_err());
        let b = split("libc.so.6:free");
        assert_eq!(common_object(&a, &b).unwrap(), Some("libc.so.6"));
    }

    #[test]
    fn mappings_match_by_file_name_or_path() {
        let maps = [
            Mapping::parse("7f00-7f10 r-xp 00001000 08:01 5 /usr/lib/libc.so.6").unwrap(),
            Mapping::parse("7f20-7f30 r-xp 00001000 08:01 6 /usr/lib/libm.so.6").unwrap(),
        ];
        assert_eq!(matching_mappings(&maps, "libc.so.6").len(), 1);
        assert_eq!(matching_mappings(&maps, "/usr/lib/libm.so.6").len(), 1);
        assert!(matching_mappings(&maps, "libc").is_empty());
        assert!(matching_mappings(&maps, "lib/libc.so.6").is_empty());
    }
}
