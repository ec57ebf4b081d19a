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

use super::safe_file::open_trusted;

/// Directories searched after the program's own paths, as glibc's default
/// configuration does on x86-64 Debian/Ubuntu/Fedora.
const SYSTEM_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

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
    let expand = |dir: &str| dir.replace("$ORIGIN", &origin.display().to_string());
    // RPATH applies only without RUNPATH (ld.so(8)).
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
        .chain(SYSTEM_DIRS.iter().map(|d| d.to_string()))
        .map(|dir| Path::new(&dir).join(name))
        .find(|candidate| candidate.is_file())
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
