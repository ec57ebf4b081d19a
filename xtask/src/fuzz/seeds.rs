//! Seeds for the ELF targets, made at run time rather than committed: a
//! few small files of this machine (a program, a library with a GOT and
//! unwind tables) and the seed programs under `observer/fuzz/seeds/
//! programs` compiled with full DWARF, so that every reader has real
//! structure to mutate from the first run.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::cmd::{command, output, root};

/// How one seed is made.
enum Recipe {
    /// A file of this machine, as it is.
    Copy(&'static str),
    /// `/bin/true` with a `.gnu_debuglink` section (naming another file).
    DebugLink,
    /// `seeds/programs/pool.c` compiled with these flags.
    C(&'static [&'static str]),
    /// `seeds/programs/pool.rs` compiled with full DWARF, the standard
    /// library linked dynamically (a small file).
    Rust,
}

/// Every seed, by file name.
const SEEDS: [(&str, Recipe); 6] = [
    ("true", Recipe::Copy("/bin/true")),
    (
        "libgcc_s.so.1",
        Recipe::Copy("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"),
    ),
    ("true-with-debuglink", Recipe::DebugLink),
    ("pool-c", Recipe::C(&["-g", "-O2"])),
    ("pool-c-compressed-dwarf", Recipe::C(&["-g", "-O2", "-gz"])),
    ("pool-rs", Recipe::Rust),
];

/// Where the seeds are made (under the workspace's `target/`).
fn seed_dir() -> PathBuf {
    root().join("target/fuzz-seeds/elf")
}

/// Makes the seeds that are missing and returns their directory. A seed
/// that cannot be made here (no C compiler, a file too large) is skipped
/// with a note: the others still seed the run.
pub fn elf_seeds(max_len: usize) -> Result<PathBuf> {
    let dir = seed_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, recipe) in &SEEDS {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        if let Err(err) = make(recipe, &path).and_then(|()| fits(&path, max_len)) {
            let _ = fs::remove_file(&path);
            println!("fuzz: ELF seed {name} not made: {err:#}");
        }
    }
    Ok(dir)
}

fn make(recipe: &Recipe, to: &Path) -> Result<()> {
    let programs = root().join("observer/fuzz/seeds/programs");
    match recipe {
        Recipe::Copy(from) => copy(Path::new(from), to),
        Recipe::DebugLink => run(command("objcopy")
            .arg("--add-gnu-debuglink=/bin/true")
            .arg("/bin/true")
            .arg(to)),
        Recipe::C(flags) => run(command("cc")
            .args(*flags)
            .arg("-o")
            .arg(to)
            .arg(programs.join("pool.c"))),
        Recipe::Rust => run(command("rustc")
            .args(["-g", "-O", "-C", "prefer-dynamic", "-o"])
            .arg(to)
            .arg(programs.join("pool.rs"))),
    }
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    Ok(())
}

/// Runs a tool that makes a seed; its error output is the reason.
fn run(command: &mut std::process::Command) -> Result<()> {
    let done = output(command)?;
    anyhow::ensure!(
        done.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&done.stderr).trim()
    );
    Ok(())
}

/// A seed longer than `-max_len` would only be cut.
fn fits(path: &Path, max_len: usize) -> Result<()> {
    let len = fs::metadata(path)?.len();
    anyhow::ensure!(
        len <= max_len as u64,
        "{len} bytes, more than the {max_len} the targets read"
    );
    Ok(())
}
