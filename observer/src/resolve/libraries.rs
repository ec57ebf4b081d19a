//! The shared libraries a program will load, found the way the dynamic
//! linker finds them (interpreter, DT_NEEDED through RPATH, LD_LIBRARY_PATH,
//! RUNPATH and the system directories), without running anything.
//!
//! `observer run` needs them before the command starts: unwind tables for
//! libc and friends must be ready when the first allocation happens, and
//! building them takes longer than the dynamic linker takes to map them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use object::read::elf::{Dyn as _, ElfFile64, FileHeader as _, ProgramHeader as _};
use object::{elf, Endianness};

use super::safe_file::{open_trusted, SafeFile, TargetRoot};

/// Directories searched after the program's own paths: the processor's
/// (`arch::LIBRARY_DIRS`).
const SYSTEM_DIRS: &[&str] = crate::arch::LIBRARY_DIRS;

/// The largest `/etc/ld.so.cache` read in a target's root.
const MAX_CACHE_BYTES: u64 = 16 << 20;

/// What one ELF file asks of the dynamic linker.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Dependencies {
    interpreter: Option<PathBuf>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

/// The program's interpreter and every library it needs, transitively,
/// resolved to files. Names that cannot be found are left out: the
/// dynamic linker will fail on them, or they will be tabled once mapped.
pub fn needed_libraries(program: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut queue: VecDeque<PathBuf> = VecDeque::from([program.to_path_buf()]);
    let ld_library_path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    while let Some(file) = queue.pop_front() {
        // Regular files within the bound only: a name can lead anywhere.
        let data = open_trusted(&file).and_then(|f| f.read_all());
        let Some(dependencies) = data.ok().and_then(|d| dependencies(&d)) else {
            continue;
        };
        let origin = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut next: Vec<PathBuf> = dependencies.interpreter.clone().into_iter().collect();
        for name in &dependencies.needed {
            if let Some(path) = locate(name, &dependencies, &origin, &ld_library_path) {
                next.push(path);
            }
        }
        for path in next {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            if !found.contains(&path) && path != program {
                found.push(path.clone());
                queue.push_back(path);
            }
        }
    }
    found
}

/// The interpreter `program` asks for (`PT_INTERP`); `None` for a
/// statically linked program, or a file that cannot be read as ELF.
pub fn interpreter(program: &Path) -> Option<PathBuf> {
    let data = open_trusted(program).and_then(|f| f.read_all()).ok()?;
    dependencies(&data)?.interpreter
}

fn locate(
    name: &str,
    deps: &Dependencies,
    origin: &Path,
    ld_library_path: &str,
) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    program_directories(deps, origin, ld_library_path)
        .into_iter()
        .chain(SYSTEM_DIRS.iter().map(|d| d.to_string()))
        .map(|dir| Path::new(&dir).join(name))
        .find(|candidate| candidate.is_file())
}

/// The directories searched before the cache and the system directories,
/// in the dynamic linker's order: RPATH (only without RUNPATH, ld.so(8)),
/// `LD_LIBRARY_PATH`, RUNPATH, with `$ORIGIN` the object's directory.
fn program_directories(deps: &Dependencies, origin: &Path, ld_library_path: &str) -> Vec<String> {
    let expand = |dir: &str| dir.replace("$ORIGIN", &origin.display().to_string());
    let rpath: &[String] = if deps.runpath.is_empty() {
        &deps.rpath
    } else {
        &[]
    };
    rpath
        .iter()
        .map(|d| expand(d))
        .chain(
            ld_library_path
                .split(':')
                .filter(|d| !d.is_empty())
                .map(str::to_string),
        )
        .chain(deps.runpath.iter().map(|d| expand(d)))
        .collect()
}

/// A library a running process has not loaded, found where its dynamic
/// linker would find it for a `dlopen` from its executable.
#[derive(Debug)]
pub struct FoundLibrary {
    /// Its path inside the target's root, for people and debug links.
    pub path: PathBuf,
    /// The file, opened inside the target's root (see [`TargetRoot::open`]).
    pub file: SafeFile,
}

/// What the search in a running process needs: its root, its executable's
/// bytes and path (inside that root), and its `LD_LIBRARY_PATH` as it
/// started (the dynamic linker reads it once, at start).
pub struct TargetSearch<'a> {
    pub root: &'a TargetRoot,
    pub exe: &'a [u8],
    pub exe_path: &'a Path,
    pub ld_library_path: &'a str,
}

/// Finds `name` (a file name, or an absolute path) the way the target's
/// dynamic linker would for `dlopen(name)` called from its executable:
/// its RPATH, `LD_LIBRARY_PATH`, its RUNPATH, `/etc/ld.so.cache` (x86-64
/// entries), then the system directories. Every candidate is opened inside
/// the target's root with its credentials; one that is not a regular
/// x86-64 ELF file is passed over, as the dynamic linker does.
pub fn find_in_target(search: &TargetSearch<'_>, name: &str) -> Option<FoundLibrary> {
    let try_path = |path: PathBuf| -> Option<FoundLibrary> {
        let file = search.root.open(&path).ok()?;
        is_own_machine_elf(&file).then_some(FoundLibrary { path, file })
    };
    if name.contains('/') {
        // A relative path would be the target's working directory's: only
        // an absolute one names a file without it.
        return name
            .starts_with('/')
            .then(|| try_path(PathBuf::from(name)))?;
    }
    let deps = dependencies(search.exe).unwrap_or_default();
    let origin = search.exe_path.parent().unwrap_or(Path::new("/"));
    let directories = program_directories(&deps, origin, search.ld_library_path);
    let in_directories = directories
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find_map(try_path);
    in_directories
        .or_else(|| {
            cached_paths(search.root, name)
                .into_iter()
                .find_map(try_path)
        })
        .or_else(|| {
            SYSTEM_DIRS
                .iter()
                .map(|dir| Path::new(dir).join(name))
                .find_map(try_path)
        })
}

/// Whether `file` starts with the header of a little-endian ELF64 file
/// for the observer's processor (its first 64 bytes only: a candidate is
/// not read whole).
fn is_own_machine_elf(file: &SafeFile) -> bool {
    use std::os::unix::fs::FileExt as _;
    let mut header = [0u8; 64];
    if file.file().read_exact_at(&mut header, 0).is_err() {
        return false;
    }
    let machine = u16::from_le_bytes([header[18], header[19]]);
    header.starts_with(&[0x7f, b'E', b'L', b'F', elf::ELFCLASS64, elf::ELFDATA2LSB])
        && machine == crate::arch::ELF_MACHINE
}

/// The paths `/etc/ld.so.cache` in `root` gives for `name` (the
/// observer's processor's entries of glibc's format 1.1), in its order.
fn cached_paths(root: &TargetRoot, name: &str) -> Vec<PathBuf> {
    let Ok(file) = root.open(Path::new("/etc/ld.so.cache")) else {
        return Vec::new();
    };
    // Real caches hold a few thousand entries (well under 1 MiB): a
    // bigger one is not read.
    let bounded = file
        .file()
        .metadata()
        .is_ok_and(|m| m.len() <= MAX_CACHE_BYTES);
    let Some(data) = bounded.then(|| file.read_all().ok()).flatten() else {
        return Vec::new();
    };
    cache_entries(&data, crate::arch::LD_CACHE_ARCH)
        .into_iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| PathBuf::from(value))
        .collect()
}

/// `(name, path)` of every library of the processor `arch` (the flags'
/// architecture bits) in an `ld.so.cache` of the format glibc has written
/// since 2.32 (`glibc-ld.so.cache1.1`); nothing for any other content.
fn cache_entries(data: &[u8], arch: u32) -> Vec<(String, String)> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    const HEADER: usize = 48;
    const ENTRY: usize = 24;
    const ARCH_MASK: u32 = 0xff00;
    if !data.starts_with(MAGIC) {
        return Vec::new();
    }
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    let string = |at: u32| -> Option<String> {
        let rest = data.get(at as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let count = word(20).unwrap_or(0) as usize;
    (0..count)
        .map_while(|i| {
            let at = HEADER + i * ENTRY;
            Some((word(at)?, word(at + 4)?, word(at + 8)?))
        })
        .filter(|(flags, _, _)| flags & ARCH_MASK == arch)
        .filter_map(|(_, key, value)| Some((string(key)?, string(value)?)))
        .collect()
}

fn dependencies(data: &[u8]) -> Option<Dependencies> {
    let file = ElfFile64::<Endianness>::parse(data).ok()?;
    let endian = file.endian();
    let header = file.elf_header();
    let mut deps = Dependencies::default();
    for segment in header.program_headers(endian, data).ok()? {
        if segment.p_type(endian) == elf::PT_INTERP {
            let bytes = segment.data(endian, data).ok()?;
            let bytes = bytes.split(|&b| b == 0).next().unwrap_or_default();
            deps.interpreter = Some(PathBuf::from(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    let sections = file.elf_section_table();
    let Ok(Some((entries, strings_index))) = sections.dynamic(endian, data) else {
        return Some(deps);
    };
    let strings = sections.strings(endian, data, strings_index).ok()?;
    for entry in entries {
        let tag = entry.d_tag(endian);
        if ![elf::DT_NEEDED, elf::DT_RPATH, elf::DT_RUNPATH].contains(&tag) {
            continue;
        }
        let Ok(value) = strings.get(entry.d_val(endian) as u32) else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        let paths = || value.split(':').map(str::to_string).collect::<Vec<_>>();
        match tag {
            elf::DT_NEEDED => deps.needed.push(value.clone()),
            elf::DT_RPATH => deps.rpath.extend(paths()),
            elf::DT_RUNPATH => deps.runpath.extend(paths()),
            _ => {}
        }
    }
    Some(deps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_this_test_binary_loads() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let needed = needed_libraries(&exe);
        let mapped: Vec<PathBuf> = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5).map(PathBuf::from))
            .filter(|p| p.to_string_lossy().contains(".so"))
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .collect();
        for library in &mapped {
            assert!(
                needed.contains(library),
                "{} not predicted: {needed:?}",
                library.display()
            );
        }
    }

    /// Directories each holding a different file of the same name.
    fn library_dirs(names: &[&str]) -> (tempfile::TempDir, Vec<String>) {
        let top = tempfile::tempdir().unwrap();
        let dirs = names
            .iter()
            .map(|name| {
                let dir = top.path().join(name);
                std::fs::create_dir(&dir).unwrap();
                std::fs::write(dir.join("libchosen.so.1"), name).unwrap();
                dir.display().to_string()
            })
            .collect();
        (top, dirs)
    }

    fn chosen(deps: &Dependencies, ld_library_path: &str) -> String {
        let path = locate("libchosen.so.1", deps, Path::new("/"), ld_library_path)
            .expect("found in one of the directories");
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn rpath_is_ignored_when_runpath_is_present() {
        let (_top, dirs) = library_dirs(&["rpath", "runpath", "env"]);
        let [rpath, runpath, env] = [&dirs[0], &dirs[1], &dirs[2]];
        let with_runpath = Dependencies {
            rpath: vec![rpath.clone()],
            runpath: vec![runpath.clone()],
            ..Dependencies::default()
        };
        assert_eq!(chosen(&with_runpath, ""), "runpath");
        assert_eq!(chosen(&with_runpath, env), "env", "LD_LIBRARY_PATH first");
        let rpath_only = Dependencies {
            rpath: vec![rpath.clone()],
            ..Dependencies::default()
        };
        assert_eq!(
            chosen(&rpath_only, env),
            "rpath",
            "RPATH before LD_LIBRARY_PATH"
        );
        assert_eq!(chosen(&rpath_only, ""), "rpath");
    }

    /// The smallest ELF64 header object accepts, for machine `machine`.
    fn elf_header(machine: u16) -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
        header[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        header[18..20].copy_from_slice(&machine.to_le_bytes());
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        header[52..54].copy_from_slice(&64u16.to_le_bytes());
        header[54..56].copy_from_slice(&56u16.to_le_bytes());
        header[58..60].copy_from_slice(&64u16.to_le_bytes());
        header
    }

    #[test]
    fn a_dlopen_name_is_found_inside_the_targets_root_in_the_linkers_order() {
        let root_dir = tempfile::tempdir().unwrap();
        let write = |path: &str, bytes: &[u8]| {
            let path = root_dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        // Not a library of this processor: passed over, as the dynamic
        // linker does.
        let own = crate::arch::ELF_MACHINE;
        let foreign = if own == elf::EM_X86_64 {
            elf::EM_AARCH64
        } else {
            elf::EM_X86_64
        };
        let multiarch = format!("{}/libarm.so", SYSTEM_DIRS[1]);
        write("/env/libfoo.so", b"not an ELF file");
        write("/env/libarm.so", &elf_header(foreign));
        write("/usr/lib/libfoo.so", &elf_header(own));
        write(&multiarch, &elf_header(own));
        // An absolute link is resolved inside the root: this one leads
        // nowhere there, whatever the host has at that path.
        std::os::unix::fs::symlink(
            "/proc/self/exe",
            root_dir.path().join("usr/lib/libescape.so"),
        )
        .unwrap();
        let root = TargetRoot::confined_to(root_dir.path()).unwrap();
        let exe = elf_header(own);
        let search = TargetSearch {
            root: &root,
            exe: &exe,
            exe_path: Path::new("/bin/program"),
            ld_library_path: "/env",
        };
        let found = |name: &str| find_in_target(&search, name).map(|f| f.path);
        assert_eq!(
            found("libfoo.so"),
            Some(PathBuf::from("/usr/lib/libfoo.so"))
        );
        assert_eq!(found("libarm.so"), Some(PathBuf::from(&multiarch)));
        assert_eq!(
            found("/usr/lib/libfoo.so"),
            Some(PathBuf::from("/usr/lib/libfoo.so"))
        );
        assert_eq!(found("libescape.so"), None);
        assert_eq!(found("libnothere.so"), None);
        assert_eq!(found("usr/lib/libfoo.so"), None, "relative to its cwd");
    }

    /// An `ld.so.cache` of glibc's format 1.1 holding `entries` (flags,
    /// name, path).
    fn cache(entries: &[(u32, &str, &str)]) -> Vec<u8> {
        let mut header = b"glibc-ld.so.cache1.1".to_vec();
        header.extend((entries.len() as u32).to_le_bytes());
        header.resize(48, 0);
        let strings_at = 48 + entries.len() * 24;
        let mut strings = Vec::new();
        let mut table = Vec::new();
        for (flags, name, path) in entries {
            let mut offset = |text: &str| {
                let at = (strings_at + strings.len()) as u32;
                strings.extend(text.as_bytes());
                strings.push(0);
                at
            };
            let (key, value) = (offset(name), offset(path));
            table.extend(flags.to_le_bytes());
            table.extend(key.to_le_bytes());
            table.extend(value.to_le_bytes());
            table.extend([0u8; 12]);
        }
        [header, table, strings].concat()
    }

    #[test]
    fn the_cache_gives_x86_64_entries_only() {
        let data = cache(&[
            (0x0003, "libz.so.1", "/usr/lib/i386-linux-gnu/libz.so.1"),
            (0x0303, "libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"),
            (0x0a03, "libz.so.1", "/usr/lib/aarch64-linux-gnu/libz.so.1"),
        ]);
        assert_eq!(
            cache_entries(&data, 0x0a00),
            vec![(
                "libz.so.1".to_string(),
                "/usr/lib/aarch64-linux-gnu/libz.so.1".to_string()
            )]
        );
        assert_eq!(
            cache_entries(&data, 0x0300),
            vec![(
                "libz.so.1".to_string(),
                "/usr/lib/x86_64-linux-gnu/libz.so.1".to_string()
            )]
        );
        // Cut short or of another format: nothing, no panic.
        assert!(cache_entries(&data[..60], 0x0300).is_empty());
        assert!(cache_entries(b"ld.so-1.7.0", 0x0300).is_empty());
    }

    #[test]
    fn only_regular_files_are_libraries() {
        let (_top, dirs) = library_dirs(&["fifo", "file"]);
        let fifo = Path::new(&dirs[0]).join("libchosen.so.1");
        std::fs::remove_file(&fifo).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let deps = Dependencies {
            runpath: dirs.clone(),
            ..Dependencies::default()
        };
        assert_eq!(chosen(&deps, ""), "file");
        // A program that is a FIFO is not read (and does not block).
        assert!(needed_libraries(&fifo).is_empty());
    }
}
