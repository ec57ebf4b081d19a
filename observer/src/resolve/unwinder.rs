//! The target's unwinder and panic runtime: where a panic starts
//! unwinding (`_Unwind_RaiseException`, `_Unwind_ForcedUnwind`, in libgcc_s
//! or linked into the program) and where Rust catches one
//! (`__rust_panic_cleanup`). The observer probes them to keep uretprobes
//! from aborting a target a panic unwinds through (see `plan::returns`).

use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSymbol as _};

use super::elf::{ElfInfo, FunctionSymbol};
use super::process::{Mapping, Process};
use crate::plan::site::{decode_first, ProbedInstruction};

/// Functions that start an unwind; each gets the repair probe.
const UNWIND_STARTS: [&str; 2] = ["_Unwind_RaiseException", "_Unwind_ForcedUnwind"];

/// One probe placed by file offset in a file the target maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoint {
    /// The path the kernel opens to find the file (`/proc/PID/map_files/…`
    /// for a mapped library, or a file on this host).
    pub path: PathBuf,
    /// The object, for people.
    pub object: String,
    pub symbol: String,
    pub file_offset: u64,
    pub first_instruction: ProbedInstruction,
}

/// Where a target's panics start and are caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwinder {
    /// `_Unwind_RaiseException` and, when present, `_Unwind_ForcedUnwind`.
    pub starts: Vec<ProbePoint>,
    /// Rust's catch point, when the program has one.
    pub catch: Option<ProbePoint>,
}

impl Unwinder {
    /// The object holding the unwinder, for people.
    pub fn object(&self) -> &str {
        self.starts.first().map_or("?", |p| p.object.as_str())
    }
}

/// Finds the unwinder of a running process: in its executable, or in a
/// library it maps.
pub fn of_process(process: &Process, exe: &ElfInfo, exe_path: &Path) -> Result<Unwinder, String> {
    let catch = catch_point(exe, exe_path);
    if let Some(unwinder) = in_object(&exe.data, exe_path, &display(exe_path), catch.clone()) {
        return Ok(unwinder);
    }
    let mappings = process
        .executable_mappings()
        .map_err(|err| format!("cannot read the target's mappings: {err:#}"))?;
    for mapping in library_mappings(&mappings) {
        // The kernel's own reference to the file: it is also what the
        // probe is attached through.
        let path = map_files_path(process.pid, mapping);
        let Ok(data) = mapping
            .open_file(process.pid, None)
            .and_then(|file| file.read_all())
        else {
            continue;
        };
        if let Some(unwinder) = in_object(&data, &path, &mapping.path, catch.clone()) {
            return Ok(unwinder);
        }
    }
    Err("no _Unwind_RaiseException in the program or the libraries it maps".into())
}

/// Finds the unwinder of a program about to run (`observer run`): in the
/// file, or in the libraries it will load.
pub fn of_program(program: &ElfInfo, path: &Path) -> Result<Unwinder, String> {
    let catch = catch_point(program, path);
    if let Some(unwinder) = in_object(&program.data, path, &display(path), catch.clone()) {
        return Ok(unwinder);
    }
    for library in super::libraries::needed_libraries(path) {
        let Ok(data) = super::safe_file::open_trusted(&library).and_then(|file| file.read_all())
        else {
            continue;
        };
        if let Some(unwinder) = in_object(&data, &library, &display(&library), catch.clone()) {
            return Ok(unwinder);
        }
    }
    Err("no _Unwind_RaiseException in the program or the libraries it loads".into())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The unwinder defined in one object, if it defines one.
fn in_object(
    data: &[u8],
    path: &Path,
    object: &str,
    catch: Option<ProbePoint>,
) -> Option<Unwinder> {
    let file = object::File::parse(data).ok()?;
    let defined: Vec<(String, u64)> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.is_definition() && s.address() != 0)
        .filter_map(|s| Some((s.name().ok()?.split('@').next()?.to_string(), s.address())))
        .collect();
    let mut starts: Vec<ProbePoint> = Vec::new();
    for wanted in UNWIND_STARTS {
        let Some((_, address)) = defined.iter().find(|(name, _)| name == wanted) else {
            continue;
        };
        if starts.iter().any(|p| p.symbol == wanted) {
            continue;
        }
        starts.push(probe_point(&file, data, path, object, wanted, *address)?);
    }
    if starts.first().is_none_or(|p| p.symbol != UNWIND_STARTS[0]) {
        return None;
    }
    Some(Unwinder { starts, catch })
}

fn probe_point(
    file: &object::File<'_>,
    data: &[u8],
    path: &Path,
    object: &str,
    symbol: &str,
    address: u64,
) -> Option<ProbePoint> {
    let file_offset = file_offset_of(file, address)?;
    let start = usize::try_from(file_offset).ok()?;
    let bytes = data.get(start..start.saturating_add(16).min(data.len()))?;
    Some(ProbePoint {
        path: path.to_path_buf(),
        object: object.to_string(),
        symbol: symbol.to_string(),
        file_offset,
        first_instruction: decode_first(bytes, address),
    })
}

fn file_offset_of(file: &object::File<'_>, address: u64) -> Option<u64> {
    use object::ObjectSegment as _;
    file.segments().find_map(|segment| {
        let (offset, size) = segment.file_range();
        let start = segment.address();
        (address >= start && address - start < size).then(|| address - start + offset)
    })
}

/// Rust's catch point in the program: `__rust_panic_cleanup` (v0-mangled
/// under `__rustc::` since Rust 1.86, plain before).
fn catch_point(exe: &ElfInfo, exe_path: &Path) -> Option<ProbePoint> {
    let function: &FunctionSymbol = exe.functions.iter().find(|f| {
        f.demangled == "__rustc::__rust_panic_cleanup" || f.demangled == "__rust_panic_cleanup"
    })?;
    let bytes = exe.bytes_at(function.address, 16).unwrap_or_default();
    Some(ProbePoint {
        path: exe_path.to_path_buf(),
        object: display(exe_path),
        symbol: "__rust_panic_cleanup".into(),
        file_offset: exe.file_offset(function.address)?,
        first_instruction: decode_first(bytes, function.address),
    })
}

/// Executable mappings of files other than the program, one per file.
fn library_mappings(mappings: &[Mapping]) -> Vec<&Mapping> {
    let mut seen = std::collections::BTreeSet::new();
    mappings
        .iter()
        .filter(|m| m.path.contains(".so"))
        .filter(|m| seen.insert((m.inode, m.path.clone())))
        .collect()
}

/// The kernel's own reference to a mapped file, valid in any namespace.
fn map_files_path(pid: u32, mapping: &Mapping) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mapping.start, mapping.end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_process_has_libgcc_and_a_catch_point() {
        let me = Process::open(std::process::id()).unwrap();
        let exe = ElfInfo::read(&me.exe_path()).unwrap();
        let unwinder = of_process(&me, &exe, &me.exe_path()).unwrap();
        assert_eq!(unwinder.starts[0].symbol, "_Unwind_RaiseException");
        assert!(unwinder.object().contains("libgcc_s"), "{unwinder:?}");
        assert!(unwinder.catch.is_some(), "test binaries catch panics");
    }
}
