//! Finding an object's debug information wherever it is: in the object
//! itself, in a separate file named by its build id
//! (`/usr/lib/debug/.build-id/xx/rest.debug`), through `.gnu_debuglink`,
//! or given with `--debug-file`. A separate file is only used when it
//! belongs to the object (same build id, or the debug link's CRC).
//!
//! The object's path and its debug link are the target's say: every file
//! they lead to is opened through [`super::safe_file`], inside the target's
//! root and with its credentials, and a debug link must be a plain file
//! name. What is turned down is kept, with why, for the report.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::elf::ElfLayout;
use super::safe_file::{open_trusted, Refused, SafeFile, TargetRoot};
use crate::error::UserError;

/// Where to look for separate debug files.
#[derive(Debug, Clone)]
pub struct DebugOptions {
    /// Roots of debug trees (`DIR/.build-id/…`, `DIR/<object's dir>/…`).
    pub dirs: Vec<PathBuf>,
    /// Debug files given by the user; each serves the object with its build id.
    pub files: Vec<GivenDebugFile>,
}

impl Default for DebugOptions {
    fn default() -> Self {
        Self {
            dirs: vec![PathBuf::from("/usr/lib/debug")],
            files: Vec::new(),
        }
    }
}

impl DebugOptions {
    /// The user's debug directories before the system's, and the user's
    /// debug files, each checked now: a file that cannot serve is a
    /// mistake to report before attaching, not to ignore.
    pub fn new(dirs: &[PathBuf], files: &[PathBuf]) -> Result<Self> {
        let mut options = Self::default();
        options.dirs.splice(0..0, dirs.iter().cloned());
        options.files = files
            .iter()
            .map(|path| GivenDebugFile::check(path))
            .collect::<Result<_>>()?;
        Ok(options)
    }
}

/// A `--debug-file`: a regular ELF file with a build id, by which it is
/// matched to the objects it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenDebugFile {
    pub path: PathBuf,
    pub build_id: String,
}

impl GivenDebugFile {
    /// Opens and reads `path`; any problem is a [`UserError`].
    pub fn check(path: &Path) -> Result<Self> {
        let shown = path.display();
        let layout = open_trusted(path)
            .and_then(|file| file.read_all())
            .map_err(|err| {
                UserError::new(format!("--debug-file {shown}: cannot read it ({err})"))
            })?;
        let layout = ElfLayout::parse(layout).map_err(|_| {
            UserError::new(format!(
                "--debug-file {shown} is not an ELF file: give the separate debug file \
                 (e.g. made with objcopy --only-keep-debug)"
            ))
        })?;
        let build_id = layout.build_id.ok_or_else(|| {
            UserError::new(format!(
                "--debug-file {shown} has no build id, so it cannot be matched to an object: \
                 use a debug file of a binary linked with a build id, or --debug-dir for debug links"
            ))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            build_id,
        })
    }
}

/// Where an object's DWARF came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DebugSource {
    /// The object carries its own DWARF.
    Embedded,
    /// `--debug-file`, matched by build id.
    GivenFile,
    /// `DIR/.build-id/xx/rest.debug`.
    BuildId,
    /// `.gnu_debuglink`.
    DebugLink,
    /// None found: function names from the symbol table only.
    None,
}

/// The debug information chosen for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebugInfo {
    pub source: DebugSource,
    /// The separate file, when there is one.
    pub file: Option<PathBuf>,
    /// Candidate files that were found but not used, each with why (a
    /// FIFO, a file the target may not read, another object's file…).
    pub rejected: Vec<String>,
}

impl DebugInfo {
    pub const NONE: DebugInfo = DebugInfo {
        source: DebugSource::None,
        file: None,
        rejected: Vec::new(),
    };
}

/// A chosen separate debug file: opened once, read once.
#[derive(Debug)]
pub struct DebugFile {
    pub file: SafeFile,
    pub data: Vec<u8>,
}

/// What [`locate`] found.
#[derive(Debug)]
pub struct Located {
    pub info: DebugInfo,
    pub file: Option<DebugFile>,
}

/// Chooses the debug information of `object`, whose original path (as the
/// process names it) is `original` and whose filesystem view is `root`.
///
/// Every path derived from what the target says (its path, its debug
/// link) is opened inside `root` with the target's credentials; the
/// user's debug directories are searched on the host too, by build id or
/// (for debug links) confined to the directory. A candidate that is
/// present but unusable is listed in [`DebugInfo::rejected`].
pub fn locate(
    object: &ElfLayout,
    original: &Path,
    root: &TargetRoot,
    options: &DebugOptions,
) -> Located {
    if object.has_dwarf {
        return Located {
            info: DebugInfo {
                source: DebugSource::Embedded,
                ..DebugInfo::NONE
            },
            file: None,
        };
    }
    let mut search = Search {
        build_id: object.build_id.as_deref(),
        rejected: Vec::new(),
    };
    let found = search
        .given_file(options)
        .or_else(|| search.by_build_id(root, options))
        .or_else(|| search.by_debug_link(object, original, root, options));
    match found {
        Some((source, path, file)) => Located {
            info: DebugInfo {
                source,
                file: Some(path),
                rejected: search.rejected,
            },
            file: Some(file),
        },
        None => Located {
            info: DebugInfo {
                rejected: search.rejected,
                ..DebugInfo::NONE
            },
            file: None,
        },
    }
}

/// One object's search, collecting why candidates were turned down.
struct Search<'a> {
    build_id: Option<&'a str>,
    rejected: Vec<String>,
}

type Found = (DebugSource, PathBuf, DebugFile);

impl Search<'_> {
    fn given_file(&mut self, options: &DebugOptions) -> Option<Found> {
        let build_id = self.build_id?;
        let given = options.files.iter().find(|f| f.build_id == build_id)?;
        let opened = open_trusted(&given.path);
        self.accept(DebugSource::GivenFile, &given.path, opened, None)
    }

    fn by_build_id(&mut self, root: &TargetRoot, options: &DebugOptions) -> Option<Found> {
        let build_id = self.build_id.filter(|id| id.len() > 2)?;
        let (head, rest) = build_id.split_at(2);
        for dir in &options.dirs {
            // Hex digits only: the name itself cannot climb out of `dir`.
            let candidate = dir
                .join(".build-id")
                .join(head)
                .join(format!("{rest}.debug"));
            let in_target = root.open(&candidate);
            if let Some(found) = self.accept(DebugSource::BuildId, &candidate, in_target, None) {
                return Some(found);
            }
            let on_host = open_trusted(&candidate);
            if let Some(found) = self.accept(DebugSource::BuildId, &candidate, on_host, None) {
                return Some(found);
            }
        }
        None
    }

    fn by_debug_link(
        &mut self,
        object: &ElfLayout,
        original: &Path,
        root: &TargetRoot,
        options: &DebugOptions,
    ) -> Option<Found> {
        let (name, crc) = object.debuglink.as_ref()?;
        if !is_plain_file_name(name) {
            self.rejected.push(format!(
                "debug link '{}': not a plain file name, not followed",
                name.escape_debug()
            ));
            return None;
        }
        let dir = original.parent().unwrap_or(Path::new("/"));
        let relative = dir.strip_prefix("/").unwrap_or(dir).join(name);
        let mut candidates: Vec<(PathBuf, Result<SafeFile, Refused>)> = Vec::new();
        for path in [dir.join(name), dir.join(".debug").join(name)] {
            let opened = root.open(&path);
            candidates.push((path, opened));
        }
        for debug_dir in &options.dirs {
            let path = debug_dir.join(&relative);
            let in_target = root.open(&path);
            candidates.push((path.clone(), in_target));
            let on_host = TargetRoot::confined_to(debug_dir)
                .map_err(Refused::from_open_error)
                .and_then(|dir| dir.open(&relative));
            candidates.push((path, on_host));
        }
        candidates.into_iter().find_map(|(path, opened)| {
            self.accept(DebugSource::DebugLink, &path, opened, Some(*crc))
        })
    }

    /// Takes `opened` if it is this object's debug file: same build id, or
    /// (debug links to files without one) the CRC the link records.
    fn accept(
        &mut self,
        source: DebugSource,
        path: &Path,
        opened: Result<SafeFile, Refused>,
        crc: Option<u32>,
    ) -> Option<Found> {
        let what = match source {
            DebugSource::DebugLink => "debug link target",
            DebugSource::GivenFile => "--debug-file",
            _ => "build-id file",
        };
        let mut reject = |why: String| {
            let line = format!("{what} {}: {why}", path.display());
            if !self.rejected.contains(&line) {
                self.rejected.push(line);
            }
            None
        };
        let file = match opened {
            Ok(file) => file,
            Err(err) if err.is_missing() => return None,
            Err(err) => return reject(err.to_string()),
        };
        let data = match file.read_all() {
            Ok(data) => data,
            Err(err) => return reject(err.to_string()),
        };
        let theirs = ElfLayout::parse(data.clone()).ok().map(|l| l.build_id);
        let belongs = match (self.build_id, theirs, crc) {
            (_, None, _) => return reject("not an ELF file".into()),
            (Some(ours), Some(Some(theirs)), _) => ours == theirs,
            (_, Some(_), Some(crc)) => crc32(&data) == crc,
            (_, Some(_), None) => false,
        };
        if !belongs {
            return reject("belongs to another object (build id or CRC differs)".into());
        }
        Some((source, path.to_path_buf(), DebugFile { file, data }))
    }
}

/// A debug link names a file in the same directory or a debug directory
/// (gdb strips the directory when it writes one): anything with a `/`, or
/// `.`/`..`, is not a debug link but an attempt to go elsewhere.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The CRC-32 (IEEE 802.3, as zlib) `.gnu_debuglink` records.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    fn host() -> TargetRoot {
        TargetRoot::host().unwrap()
    }

    #[test]
    fn an_object_with_dwarf_uses_its_own() {
        let me = ElfLayout::read(&std::env::current_exe().unwrap()).unwrap();
        assert!(me.has_dwarf);
        let info = locate(&me, Path::new("/x/y"), &host(), &DebugOptions::default()).info;
        assert_eq!(info.source, DebugSource::Embedded);
    }

    #[test]
    fn separate_file_by_build_id_and_by_given_path() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::env::current_exe().unwrap();
        let mut stripped = ElfLayout::read(&me).unwrap();
        stripped.has_dwarf = false;
        let build_id = stripped.build_id.clone().unwrap();
        let by_id = dir
            .path()
            .join(".build-id")
            .join(&build_id[..2])
            .join(format!("{}.debug", &build_id[2..]));
        std::fs::create_dir_all(by_id.parent().unwrap()).unwrap();
        std::fs::copy(&me, &by_id).unwrap();
        let options = DebugOptions::new(&[dir.path().to_path_buf()], &[]).unwrap();
        let located = locate(&stripped, &me, &host(), &options);
        assert_eq!(located.info.source, DebugSource::BuildId);
        assert_eq!(located.info.file, Some(by_id.clone()));
        assert_eq!(located.file.unwrap().data, std::fs::read(&me).unwrap());
        let given = DebugOptions::new(&[], std::slice::from_ref(&by_id)).unwrap();
        assert_eq!(
            locate(&stripped, &me, &host(), &given).info.source,
            DebugSource::GivenFile
        );
        stripped.build_id = Some("00".repeat(20));
        assert_eq!(
            locate(&stripped, &me, &host(), &options).info,
            DebugInfo::NONE,
            "wrong build id"
        );
    }

    /// A stripped object at `dir/prog` whose debug link names `link`.
    fn linked_object(link: &str) -> ElfLayout {
        let mut object = ElfLayout::read(&std::env::current_exe().unwrap()).unwrap();
        object.has_dwarf = false;
        object.build_id = None;
        object.debuglink = Some((link.to_string(), 0x1234_5678));
        object
    }

    #[test]
    fn debug_links_are_followed_only_to_matching_regular_files_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("prog");
        let options = DebugOptions {
            dirs: vec![],
            files: vec![],
        };
        // A matching file (by CRC) is taken.
        let debug = dir.path().join("prog.debug");
        std::fs::copy(std::env::current_exe().unwrap(), &debug).unwrap();
        let mut object = linked_object("prog.debug");
        object.debuglink.as_mut().unwrap().1 = crc32(&std::fs::read(&debug).unwrap());
        let located = locate(&object, &program, &host(), &options);
        assert_eq!(located.info.source, DebugSource::DebugLink);
        assert_eq!(located.info.file.as_deref(), Some(debug.as_path()));
        // Special files are refused without blocking, with the reason.
        std::fs::remove_file(&debug).unwrap();
        symlink("/dev/zero", &debug).unwrap();
        let located = locate(&object, &program, &host(), &options);
        assert_eq!(located.info.source, DebugSource::None);
        assert_eq!(
            located.info.rejected,
            [format!(
                "debug link target {}: a character device, not a regular file",
                debug.display()
            )]
        );
        // A file of another object is turned down, and said so.
        std::fs::remove_file(&debug).unwrap();
        std::fs::write(&debug, b"\x7fELF but not really").unwrap();
        let located = locate(&object, &program, &host(), &options);
        assert!(
            located.info.rejected[0].ends_with("not an ELF file"),
            "{:?}",
            located.info
        );
    }

    #[test]
    fn debug_link_names_with_directories_are_not_followed() {
        for name in ["../../etc/passwd", "/etc/passwd", "..", "a/b"] {
            let located = locate(
                &linked_object(name),
                Path::new("/usr/bin/prog"),
                &host(),
                &DebugOptions::default(),
            );
            assert_eq!(located.info.source, DebugSource::None);
            assert!(
                located.info.rejected[0].contains("not a plain file name"),
                "{name}: {:?}",
                located.info
            );
        }
    }

    #[test]
    fn given_debug_files_are_checked_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"hello").unwrap();
        let cases = [
            (
                dir.path().join("missing.debug"),
                "cannot read it (no such file)",
            ),
            (text, "is not an ELF file"),
            (PathBuf::from("/dev/null"), "not a regular file"),
        ];
        for (path, expected) in cases {
            let err = DebugOptions::new(&[], std::slice::from_ref(&path)).unwrap_err();
            let user = err.downcast_ref::<UserError>().expect("a user error");
            assert!(user.to_string().contains(expected), "{path:?}: {user}");
        }
        let no_build_id = dir.path().join("no-build-id");
        let status = std::process::Command::new("objcopy")
            .arg("--remove-section=.note.gnu.build-id")
            .arg(std::env::current_exe().unwrap())
            .arg(&no_build_id)
            .status()
            .expect("objcopy (binutils)");
        assert!(status.success());
        let err = DebugOptions::new(&[], &[no_build_id]).unwrap_err();
        assert!(err.to_string().contains("has no build id"), "{err}");
    }
}
