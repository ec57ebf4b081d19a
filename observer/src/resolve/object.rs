//! Which object a function is probed in: `OBJECT:FUNCTION` names a shared
//! object the target maps (`libc.so.6:malloc`) or one its dynamic linker
//! would load for a `dlopen`; a bare function is in the executable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::error::UserError;
use crate::plan::ProbeRequest;
use crate::resolve::libraries;
use crate::resolve::process::{Mapping, Process};
use crate::resolve::safe_file::{open_trusted, SafeFile};

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

/// A shared object the probes go into, as they reach it.
#[derive(Debug, Clone)]
pub struct ProbedObject {
    /// What the kernel opens to place the probes: its own reference to a
    /// mapped file (`/proc/PID/map_files/…`), or this observer's
    /// descriptor of a file not mapped yet (`/proc/self/fd/N`); the
    /// target's path is never opened on the host.
    pub path: PathBuf,
    /// The path as the target names it, for people.
    pub display: String,
    /// Set when the target has not mapped the object yet: the file, found
    /// where its dynamic linker would find it and held open so that `path`
    /// names it until the probes are placed. The kernel places them in the
    /// process when it maps that file (`dlopen`).
    pub not_loaded: Option<Arc<SafeFile>>,
}

/// Finds `name` (a file name such as `libc.so.6`, or a full path) among
/// the executable mappings of `process`; failing that, where the target's
/// dynamic linker would find it for a `dlopen` (see
/// [`libraries::find_in_target`]). Several different mapped files of that
/// name are refused (give the full path); a name found nowhere is an error.
pub fn find_object(process: &Process, name: &str) -> Result<ProbedObject> {
    let mappings = process.executable_mappings()?;
    let matching = matching_mappings(&mappings, name);
    let mut paths: Vec<&str> = matching.iter().map(|m| m.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    match (matching.first(), paths.len()) {
        (Some(mapping), 1) => Ok(ProbedObject {
            path: PathBuf::from(format!(
                "/proc/{}/map_files/{:x}-{:x}",
                process.pid, mapping.start, mapping.end
            )),
            display: mapping.path.clone(),
            not_loaded: None,
        }),
        (None, _) => find_unmapped(process, name),
        _ => Err(UserError::new(format!(
            "process {} maps several objects named {name:?} ({}): give the full path",
            process.pid,
            paths.join(", ")
        ))
        .into()),
    }
}

/// `name` on disk, for a process that has not mapped it.
fn find_unmapped(process: &Process, name: &str) -> Result<ProbedObject> {
    let root = process.root()?;
    let exe = process
        .exe_path_in_root()
        .context("cannot tell where the target's executable is")?;
    let exe_data = open_trusted(&process.exe_path())
        .and_then(|file| file.read_all())
        .with_context(|| format!("cannot read the executable of process {}", process.pid))?;
    let ld_library_path = process.initial_env("LD_LIBRARY_PATH").unwrap_or_default();
    let search = libraries::TargetSearch {
        root: &root,
        exe: &exe_data,
        exe_path: &exe,
        ld_library_path: &ld_library_path,
    };
    let Some(found) = libraries::find_in_target(&search, name) else {
        return Err(UserError::new(format!(
            "process {} maps no executable object named {name:?} (see /proc/{}/maps), and its \
             dynamic linker would not find one to load (RPATH, LD_LIBRARY_PATH, RUNPATH, \
             /etc/ld.so.cache, the system directories)",
            process.pid, process.pid
        ))
        .into());
    };
    let file = Arc::new(found.file);
    Ok(ProbedObject {
        path: file.fd_path(),
        display: found.path.display().to_string(),
        not_loaded: Some(file),
    })
}

/// The object name that means the process's C library, whatever its
/// file: `--alloc libc:malloc`, and what `--preset libc` uses.
pub const C_LIBRARY: &str = "libc";

/// The process's C library among its mappings: glibc's `libc.so.6`, or
/// musl's, which is its dynamic linker too (`ld-musl-<arch>.so.1`, linked
/// as `libc.musl-<arch>.so.1` on Alpine; a link to
/// `/usr/lib/<arch>-linux-musl/libc.so` on Debian, the name the mapping
/// has). `None` when the process maps
/// no shared object at all (statically linked: the C library is in the
/// executable). Any other process maps a C library this observer does not
/// know by name: an error saying to name the file.
pub fn c_library(process: &Process) -> Result<Option<String>> {
    if let Some(program) = &process.before_exec {
        return c_library_of_program(program);
    }
    let mappings = process.executable_mappings()?;
    c_library_among(&mappings).map_err(|shared| {
        UserError::new(format!(
            "process {} maps no C library known by name (glibc's libc.so.6, musl's \
             ld-musl-*.so.1 or libc.so) and is not statically linked (it maps {shared}): name the \
             allocator's functions in their file, --alloc FILE:malloc",
            process.pid
        ))
        .into()
    })
}

/// [`c_library`] for a program not started yet: the C library among the
/// libraries it needs (found as its dynamic linker will find them, see
/// [`libraries::needed_libraries`]); `None` for a program without an
/// interpreter (statically linked).
fn c_library_of_program(program: &Path) -> Result<Option<String>> {
    let needed = libraries::needed_libraries(program);
    if let Some(libc) = needed.iter().find(|path| {
        path.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(is_c_library)
    }) {
        return Ok(Some(libc.display().to_string()));
    }
    if libraries::interpreter(program).is_none() {
        return Ok(None);
    }
    Err(UserError::new(format!(
        "{} needs no C library known by name (glibc's libc.so.6, musl's libc.so): name the \
         allocator's functions in their file, --alloc FILE:malloc",
        program.display()
    ))
    .into())
}

/// [`c_library`] over a process's `mappings`; the error lists the shared
/// objects mapped (files named `*.so` or `*.so.*`).
fn c_library_among(mappings: &[Mapping]) -> std::result::Result<Option<String>, String> {
    if let Some(libc) = mappings.iter().find(|m| is_c_library(file_name(&m.path))) {
        return Ok(Some(libc.path.clone()));
    }
    let mut shared: Vec<&str> = mappings
        .iter()
        .map(|m| m.path.as_str())
        .filter(|path| is_shared_object(file_name(path)))
        .collect();
    shared.sort_unstable();
    shared.dedup();
    if shared.is_empty() {
        Ok(None)
    } else {
        Err(shared.join(", "))
    }
}

/// glibc's and musl's file names of the C library (glibc's `libc.so` is
/// a linker script, never mapped).
fn is_c_library(name: &str) -> bool {
    let musl =
        (name.starts_with("ld-musl-") || name.starts_with("libc.musl-")) && name.ends_with(".so.1");
    name == "libc.so.6" || name == "libc.so" || musl
}

fn is_shared_object(name: &str) -> bool {
    name.ends_with(".so") || name.contains(".so.")
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
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

    fn mapping(path: &str) -> Mapping {
        Mapping::parse(&format!(
            "7f0000000000-7f0000001000 r-xp 00000000 08:01 42 {path}"
        ))
        .expect("a valid maps line")
    }

    #[test]
    fn the_c_library_is_glibcs_or_musls_or_in_a_static_executable() {
        let exe = "/srv/app";
        let glibc = [mapping(exe), mapping("/usr/lib/x86_64-linux-gnu/libc.so.6")];
        assert_eq!(
            c_library_among(&glibc),
            Ok(Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()))
        );
        let musl = [mapping(exe), mapping("/lib/ld-musl-x86_64.so.1")];
        assert_eq!(
            c_library_among(&musl),
            Ok(Some("/lib/ld-musl-x86_64.so.1".into()))
        );
        let debian_musl = [mapping(exe), mapping("/usr/lib/x86_64-linux-musl/libc.so")];
        assert_eq!(
            c_library_among(&debian_musl),
            Ok(Some("/usr/lib/x86_64-linux-musl/libc.so".into()))
        );
        let alpine = [mapping("/lib/libc.musl-x86_64.so.1")];
        assert_eq!(
            c_library_among(&alpine),
            Ok(Some("/lib/libc.musl-x86_64.so.1".into()))
        );
        assert_eq!(c_library_among(&[mapping(exe)]), Ok(None));
        let unknown = [mapping(exe), mapping("/opt/lib/libuclibc.so.0")];
        assert_eq!(
            c_library_among(&unknown),
            Err("/opt/lib/libuclibc.so.0".into())
        );
        assert!(!is_c_library("libc.so.6.bak"));
        assert!(!is_c_library("ld-linux-x86-64.so.2"));
    }

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
