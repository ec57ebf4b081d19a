//! Finding an object's debug information wherever it is: in the object
//! itself, in a separate file named by its build id
//! (`/usr/lib/debug/.build-id/xx/rest.debug`), through `.gnu_debuglink`,
//! or given with `--debug-file`. A separate file is only used when it
//! belongs to the object (same build id, or the debug link's CRC).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::elf::ElfLayout;

/// Where to look for separate debug files.
#[derive(Debug, Clone)]
pub struct DebugOptions {
    /// Roots of debug trees (`DIR/.build-id/…`, `DIR/<object's dir>/…`).
    pub dirs: Vec<PathBuf>,
    /// Debug files given by the user; each serves the object with its build id.
    pub files: Vec<PathBuf>,
}

impl Default for DebugOptions {
    fn default() -> Self {
        Self {
            dirs: vec![PathBuf::from("/usr/lib/debug")],
            files: Vec::new(),
        }
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
}

impl DebugInfo {
    pub const NONE: DebugInfo = DebugInfo {
        source: DebugSource::None,
        file: None,
    };
}

/// Chooses the debug information of `object`, whose original path (as the
/// process names it) is `original` and whose namespace root is `root`
/// (`/proc/PID/root`, or `/`).
pub fn locate(
    object: &ElfLayout,
    original: &Path,
    root: &Path,
    options: &DebugOptions,
) -> DebugInfo {
    if object.has_dwarf {
        return DebugInfo {
            source: DebugSource::Embedded,
            file: None,
        };
    }
    let found = |source, file: PathBuf| DebugInfo {
        source,
        file: Some(file),
    };
    if let Some(build_id) = &object.build_id {
        if let Some(file) = options.files.iter().find(|f| same_build_id(f, build_id)) {
            return found(DebugSource::GivenFile, file.clone());
        }
        if build_id.len() > 2 {
            let (head, rest) = build_id.split_at(2);
            for dir in &options.dirs {
                let candidate = dir
                    .join(".build-id")
                    .join(head)
                    .join(format!("{rest}.debug"));
                for path in [rooted(root, &candidate), candidate.clone()] {
                    if same_build_id(&path, build_id) {
                        return found(DebugSource::BuildId, path);
                    }
                }
            }
        }
    }
    if let Some((name, crc)) = &object.debuglink {
        let dir = original.parent().unwrap_or(Path::new("/"));
        let mut candidates = vec![dir.join(name), dir.join(".debug").join(name)];
        for debug_dir in &options.dirs {
            let relative = dir.strip_prefix("/").unwrap_or(dir);
            candidates.push(debug_dir.join(relative).join(name));
        }
        for candidate in candidates {
            for path in [rooted(root, &candidate), candidate.clone()] {
                if belongs(&path, object.build_id.as_deref(), *crc) {
                    return found(DebugSource::DebugLink, path);
                }
            }
        }
    }
    DebugInfo::NONE
}

/// `path` seen from inside the namespace whose root is `root`.
fn rooted(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn same_build_id(path: &Path, build_id: &str) -> bool {
    ElfLayout::read(path).is_ok_and(|debug| debug.build_id.as_deref() == Some(build_id))
}

/// A debug-link target belongs to the object if their build ids agree, or
/// (without build ids) if its CRC-32 is the one the link records.
fn belongs(path: &Path, build_id: Option<&str>, crc: u32) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    match (
        build_id,
        ElfLayout::read(path).ok().and_then(|d| d.build_id),
    ) {
        (Some(ours), Some(theirs)) => ours == theirs,
        _ => crc32(&data) == crc,
    }
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

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn an_object_with_dwarf_uses_its_own() {
        let me = ElfLayout::read(&std::env::current_exe().unwrap()).unwrap();
        assert!(me.has_dwarf);
        let info = locate(
            &me,
            Path::new("/x/y"),
            Path::new("/"),
            &DebugOptions::default(),
        );
        assert_eq!(info.source, DebugSource::Embedded);
    }

    #[test]
    fn separate_file_by_build_id_and_by_given_path() {
        let dir = std::env::temp_dir().join(format!("observer-debuginfo-{}", std::process::id()));
        let me = std::env::current_exe().unwrap();
        let mut stripped = ElfLayout::read(&me).unwrap();
        stripped.has_dwarf = false;
        let build_id = stripped.build_id.clone().unwrap();
        let by_id = dir
            .join(".build-id")
            .join(&build_id[..2])
            .join(format!("{}.debug", &build_id[2..]));
        std::fs::create_dir_all(by_id.parent().unwrap()).unwrap();
        std::fs::copy(&me, &by_id).unwrap();
        let options = DebugOptions {
            dirs: vec![dir.clone()],
            files: vec![],
        };
        let info = locate(&stripped, &me, Path::new("/"), &options);
        assert_eq!(
            info,
            DebugInfo {
                source: DebugSource::BuildId,
                file: Some(by_id.clone())
            }
        );
        let given = DebugOptions {
            dirs: vec![],
            files: vec![PathBuf::from("/proc/self/exe"), by_id.clone()],
        };
        assert_eq!(
            locate(&stripped, &me, Path::new("/"), &given).source,
            DebugSource::GivenFile
        );
        stripped.build_id = Some("00".repeat(20));
        assert_eq!(
            locate(&stripped, &me, Path::new("/"), &options),
            DebugInfo::NONE,
            "wrong build id"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
