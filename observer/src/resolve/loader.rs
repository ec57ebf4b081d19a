//! The target's dynamic linker and the hook it calls on every change to
//! its list of loaded objects: `_dl_debug_state`, the function `r_brk` in
//! its `r_debug` points to (what debuggers break on to see `dlopen` and
//! `dlclose`). glibc calls it before a change (`RT_ADD`, `RT_DELETE`) and
//! after (`RT_CONSISTENT`: the new library is mapped and relocated, and its
//! constructors have not run yet).
//!
//! The dynamic linker is found by where the kernel loaded it: `AT_BASE`
//! of the process's auxiliary vector, the start of its first mapping.

use std::fs;
use std::path::PathBuf;

use super::elf::ElfInfo;
use super::process::{Mapping, Process};

/// The symbol glibc's (and musl's) dynamic linker calls around changes.
const HOOK: &str = "_dl_debug_state";

/// `AT_BASE` in the auxiliary vector: the interpreter's load address.
const AT_BASE: u64 = 7;

/// Where to place a probe on the dynamic linker's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadHook {
    /// The kernel's own reference to the dynamic linker's file
    /// (`/proc/PID/map_files/…`).
    pub path: PathBuf,
    /// The dynamic linker, as the target's maps name it.
    pub object: String,
    pub file_offset: u64,
}

/// The hook of the dynamic linker `process` runs with, or why there is
/// none (a static executable has no dynamic linker; one without the
/// symbol cannot be followed).
pub fn load_hook(process: &Process) -> Result<LoadHook, String> {
    let base = interpreter_base(process.pid)
        .ok_or("the process has no dynamic linker (a static executable)")?;
    let maps = fs::read_to_string(format!("/proc/{}/maps", process.pid))
        .map_err(|err| format!("cannot read the target's mappings: {err}"))?;
    let mapping = maps
        .lines()
        .filter_map(Mapping::parse)
        .find(|m| m.start == base && m.path.starts_with('/'))
        .ok_or("no file is mapped where the dynamic linker was loaded")?;
    let path = PathBuf::from(format!(
        "/proc/{}/map_files/{:x}-{:x}",
        process.pid, mapping.start, mapping.end
    ));
    let elf = ElfInfo::read(&path).map_err(|err| format!("{}: {err:#}", mapping.path))?;
    let hook = elf
        .functions
        .iter()
        .find(|f| f.mangled == HOOK)
        .ok_or_else(|| format!("{} has no {HOOK}", mapping.path))?;
    let file_offset = elf
        .file_offset(hook.address)
        .ok_or_else(|| format!("{HOOK} of {} is not in its file", mapping.path))?;
    Ok(LoadHook {
        path,
        object: mapping.path,
        file_offset,
    })
}

/// `AT_BASE` of `/proc/PID/auxv` (native-endian pairs of words), when it
/// is not 0.
fn interpreter_base(pid: u32) -> Option<u64> {
    let auxv = fs::read(format!("/proc/{pid}/auxv")).ok()?;
    auxv_value(&auxv, AT_BASE).filter(|&base| base != 0)
}

fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let word = |at: usize| u64::from_ne_bytes(pair[at..at + 8].try_into().expect("8 bytes"));
        (word(0) == key).then(|| word(8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_processs_dynamic_linker_hook() {
        let me = Process::open(std::process::id()).unwrap();
        let hook = load_hook(&me).unwrap();
        assert!(hook.object.contains("ld-"), "{hook:?}");
        assert!(hook.file_offset > 0);
    }

    #[test]
    fn auxv_pairs_are_read_by_key() {
        let auxv: Vec<u8> = [(3u64, 0x40u64), (7, 0x7f00_0000), (0, 0)]
            .iter()
            .flat_map(|(k, v)| k.to_ne_bytes().into_iter().chain(v.to_ne_bytes()))
            .collect();
        assert_eq!(auxv_value(&auxv, 7), Some(0x7f00_0000));
        assert_eq!(auxv_value(&auxv, 9), None);
        assert_eq!(auxv_value(&auxv[..20], 7), None);
    }
}
