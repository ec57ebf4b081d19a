//! `cargo xtask dist`: one static binary of the observer per processor
//! (x86-64, arm64), with its eBPF programs embedded, and its SHA-256
//! checksum, in `target/dist/`. Each is checked the way a user would first
//! run it: `--version`, and `inspect` of its own code (for another
//! processor than this machine's, under user-mode emulation).
//!
//! The binary is built from the crates as `cargo package` makes them
//! (`pool-observer` and `pool-observer-ebpf`), unpacked outside the
//! workspace's source tree: what is shipped is what the published crates
//! build, and a packaging mistake (a file left out, a path outside a
//! package) fails here instead of for the first user of the crate.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use object::read::elf::{Dyn as _, ElfFile64, FileHeader as _, ProgramHeader as _};
use object::{elf, Endianness};

use crate::arch::Arch;
use crate::cmd::{cargo, checked, command, output, root};
/// The published crates, the eBPF one first (the other depends on it).
const CRATES: [&str; 2] = ["pool-observer-ebpf", "pool-observer"];
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The dist binary and its checksum file.
pub struct Dist {
    pub binary: PathBuf,
    pub checksum: PathBuf,
}

/// Where the dist binary for `arch` is written (see README, "Install").
pub fn binary_path(arch: Arch) -> PathBuf {
    dist_dir().join(format!("observer-{VERSION}-{arch}-linux-musl"))
}

fn dist_dir() -> PathBuf {
    root().join("target/dist")
}

/// Cargo's target directory of the dist builds: other builds made with
/// the same target, profile and flags share its compiled dependencies
/// ([`crate::kernels::e2e_binary`]).
pub fn target_dir() -> PathBuf {
    dist_dir().join("build/target")
}

/// `cargo xtask dist`: set-up, then [`build`] for each of `only` (every
/// processor when empty).
pub fn build_all(only: &[Arch]) -> Result<()> {
    crate::setup::run()?;
    let arches = if only.is_empty() {
        &Arch::ALL[..]
    } else {
        only
    };
    for &arch in arches {
        crate::setup::cross(arch)?;
        build(arch)?;
    }
    Ok(())
}

/// Packages, builds the packaged crates for `arch`'s musl target, checks
/// the result is static and for `arch`, writes it with its checksum, and
/// runs it. `setup::cross(arch)` must have run.
pub fn build(arch: Arch) -> Result<Dist> {
    println!("xtask: packaging {}", CRATES.join(" and "));
    let sources = unpack_packages()?;
    let target = arch.musl_target();
    println!("xtask: building the packaged crates for {target}");
    let started = std::time::Instant::now();
    let built = compile(&sources, arch)?;
    let linking = static_linking(&built)?;
    if !linking.is_empty() {
        bail!("{} is not static: {}", built.display(), linking.join(", "));
    }
    let machine = elf_machine(&built)?;
    if machine != arch.elf_machine() {
        bail!(
            "{} is for ELF machine {machine}, not {arch} ({})",
            built.display(),
            arch.elf_machine()
        );
    }
    let dist = publish(&built, arch)?;
    let size = fs::metadata(&dist.binary)?.len();
    println!(
        "xtask: {} ({:.1} MiB, {arch}, static: no program interpreter, no shared libraries; built in {:.0} s)\nxtask: {}",
        dist.binary.display(),
        size as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64(),
        dist.checksum.display()
    );
    check_runs(&dist.binary, arch)?;
    Ok(dist)
}

/// `cargo package` of both crates, unpacked under `target/dist/build/src`.
/// Returns the directory of each crate, in [`CRATES`] order.
///
/// Not verified by cargo: its check would build the eBPF crate's program
/// for this host, where it cannot build (it is for the BPF target). The
/// packaged crates are built right after, for real, by [`compile`].
fn unpack_packages() -> Result<Vec<PathBuf>> {
    let mut package = cargo();
    package.args(["package", "--allow-dirty", "--no-verify", "--quiet"]);
    for name in CRATES {
        package.args(["--package", name]);
    }
    checked(&mut package)?;
    let sources = dist_dir().join("build/src");
    CRATES
        .iter()
        .map(|name| {
            let crate_file = root().join(format!("target/package/{name}-{VERSION}.crate"));
            unpack(&crate_file, &sources.join(format!("{name}-{VERSION}")))
        })
        .collect()
}

/// Unpacks `crate_file` into `destination`, rewriting only the files whose
/// content changed, so that cargo rebuilds only what changed.
fn unpack(crate_file: &Path, destination: &Path) -> Result<PathBuf> {
    let fresh = destination.with_extension("unpacking");
    let _ = fs::remove_dir_all(&fresh);
    fs::create_dir_all(&fresh)?;
    checked(
        command("tar")
            .args(["--extract", "--gzip", "--strip-components=1", "--file"])
            .arg(crate_file)
            .arg("--directory")
            .arg(&fresh),
    )?;
    sync_tree(&fresh, destination)?;
    fs::remove_dir_all(&fresh)?;
    Ok(destination.to_path_buf())
}

/// Makes `to` hold exactly the files of `from`, touching only those that
/// differ. `.cargo_vcs_info.json` (the commit packaged) is left out: no
/// build reads it, and it changes with every commit.
fn sync_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    let wanted: Vec<_> = fs::read_dir(from)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    for existing in fs::read_dir(to)? {
        let name = existing?.file_name();
        // Cargo's own: the patched lock file of the last build is kept.
        if !wanted.contains(&name) && name != "Cargo.lock" {
            let path = to.join(&name);
            if path.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
    }
    for name in wanted.iter().filter(|n| *n != ".cargo_vcs_info.json") {
        let (source, target) = (from.join(name), to.join(name));
        if source.is_dir() {
            sync_tree(&source, &target)?;
        } else {
            let content = fs::read(&source)?;
            if fs::read(&target).ok().as_ref() != Some(&content) {
                fs::write(&target, content)
                    .with_context(|| format!("cannot write {}", target.display()))?;
            }
        }
    }
    Ok(())
}

/// Builds the unpacked `pool-observer` for `arch`'s musl target in
/// release, with the unpacked eBPF crate standing in for the published
/// one; for another processor than this machine's, linked by its cross
/// linker (the eBPF programs are built for `arch`'s kernels by the
/// observer's build script, from the target's architecture).
fn compile(sources: &[PathBuf], arch: Arch) -> Result<PathBuf> {
    let [ebpf, observer] = sources else {
        bail!("expected two unpacked crates");
    };
    let target_dir = target_dir();
    let patch = format!(
        "patch.crates-io.{}.path={:?}",
        CRATES[0],
        ebpf.display().to_string()
    );
    let target = arch.musl_target();
    let mut build = cargo();
    build
        .args(["build", "--release", "--target", target])
        .arg("--manifest-path")
        .arg(observer.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--config", &patch])
        // The workspace's flags are for its own builds, not this one.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    arch.cross_link(&mut build, target)?;
    checked(&mut build)?;
    Ok(target_dir.join(target).join("release/observer"))
}

/// The ELF `e_machine` of `binary`.
fn elf_machine(binary: &Path) -> Result<u16> {
    let data = fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let file = ElfFile64::<Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", binary.display()))?;
    Ok(file.elf_header().e_machine(file.endian()))
}

/// Runs the dist binary as a user first would: `--version`, then
/// `inspect` of its own `observer::main` (the observer reads a program of
/// its own processor: the ELF check, symbols, signatures). A binary for
/// another processor runs under its user-mode emulator (which has no
/// `bpf()`: nothing here loads programs).
fn check_runs(binary: &Path, arch: Arch) -> Result<()> {
    let runner = arch.cross()?.map(|cross| cross.runner);
    let version = run_dist(runner, binary, &[OsStr::new("--version")])?;
    let expected = format!("observer {VERSION}");
    if version.trim() != expected {
        bail!(
            "{} --version printed {version:?}, not {expected:?}",
            binary.display()
        );
    }
    let inspected = run_dist(
        runner,
        binary,
        &[
            OsStr::new("inspect"),
            binary.as_os_str(),
            OsStr::new("observer::main"),
        ],
    )?;
    if !inspected.contains("observer::main — 1 copy") {
        bail!(
            "{} inspect of itself did not find observer::main:\n{inspected}",
            binary.display()
        );
    }
    println!(
        "xtask: {} runs{}: --version, inspect of itself",
        binary.display(),
        runner.map(|r| format!(" under {r}")).unwrap_or_default()
    );
    Ok(())
}

/// `binary args…` (through `runner` when given) with an empty
/// environment; its standard output, or an error with what it printed.
fn run_dist(runner: Option<&str>, binary: &Path, args: &[&OsStr]) -> Result<String> {
    let mut run = match runner {
        Some(runner) => {
            let mut run = Command::new(runner);
            run.arg(binary);
            run
        }
        None => Command::new(binary),
    };
    run.args(args).env_clear().current_dir(dist_dir());
    let done = output(&mut run)?;
    if !done.status.success() {
        bail!(
            "{run:?} failed with {}: {}",
            done.status,
            String::from_utf8_lossy(&done.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&done.stdout).into_owned())
}

/// What makes `binary` depend on files of the machine it runs on: a
/// program interpreter (`PT_INTERP`) and the shared libraries it needs
/// (`DT_NEEDED`). Empty for a static binary (a static PIE keeps a
/// `PT_DYNAMIC` for its own relocations, without either).
pub fn static_linking(binary: &Path) -> Result<Vec<String>> {
    let data = fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let file = ElfFile64::<Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", binary.display()))?;
    let (header, endian) = (file.elf_header(), file.endian());
    let mut found = Vec::new();
    for segment in header.program_headers(endian, &*data)? {
        if segment.p_type(endian) == elf::PT_INTERP {
            let interpreter = segment
                .interpreter(endian, &*data)?
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .unwrap_or_default();
            found.push(format!("program interpreter {interpreter}"));
        }
    }
    let sections = header.sections(endian, &*data)?;
    if let Some((entries, strings_index)) = sections.dynamic(endian, &*data)? {
        let strings = sections.strings(endian, &*data, strings_index)?;
        for entry in entries {
            if entry.tag(endian) == elf::DT_NEEDED {
                let name = entry
                    .string(endian, strings)
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                    .unwrap_or_else(|_| "?".into());
                found.push(format!("needs {name}"));
            }
        }
    }
    Ok(found)
}

/// Copies the binary to its dist name and writes its checksum beside it,
/// in `sha256sum` format, then checks it the way a user would.
fn publish(built: &Path, arch: Arch) -> Result<Dist> {
    let binary = binary_path(arch);
    fs::create_dir_all(dist_dir())?;
    fs::copy(built, &binary).with_context(|| format!("cannot write {}", binary.display()))?;
    let name = binary
        .file_name()
        .context("the dist binary has a name")?
        .to_string_lossy()
        .into_owned();
    let sum = output(command("sha256sum").arg(&name).current_dir(dist_dir()))?;
    if !sum.status.success() {
        bail!("sha256sum {name} failed");
    }
    let checksum = dist_dir().join(format!("{name}.sha256"));
    fs::write(&checksum, &sum.stdout)?;
    checked(
        command("sha256sum")
            .args(["--check", "--quiet"])
            .arg(&checksum)
            .current_dir(dist_dir()),
    )?;
    Ok(Dist { binary, checksum })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamically_linked_program_is_not_static() {
        // This test's own executable: linked against libc, dynamically.
        let me = std::env::current_exe().unwrap();
        let linking = static_linking(&me).unwrap();
        assert!(
            linking
                .iter()
                .any(|l| l.starts_with("program interpreter /")),
            "{linking:?}"
        );
        assert!(
            linking.iter().any(|l| l.starts_with("needs libc.so")),
            "{linking:?}"
        );
    }

    #[test]
    fn only_changed_files_are_rewritten() {
        let base = std::env::temp_dir().join(format!("xtask-sync-{}", std::process::id()));
        let (from, to) = (base.join("from"), base.join("to"));
        fs::create_dir_all(from.join("src")).unwrap();
        fs::write(from.join("src/lib.rs"), "same").unwrap();
        fs::write(from.join("Cargo.toml"), "new").unwrap();
        fs::write(from.join(".cargo_vcs_info.json"), "{}").unwrap();
        fs::create_dir_all(to.join("src")).unwrap();
        fs::write(to.join("src/lib.rs"), "same").unwrap();
        fs::write(to.join("Cargo.toml"), "old").unwrap();
        fs::write(to.join("stale.rs"), "gone").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(to.join("src/lib.rs"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        sync_tree(&from, &to).unwrap();
        let modified = fs::metadata(to.join("src/lib.rs")).unwrap().modified();
        assert_eq!(modified.unwrap(), old, "an unchanged file was rewritten");
        assert_eq!(fs::read_to_string(to.join("Cargo.toml")).unwrap(), "new");
        assert!(!to.join("stale.rs").exists());
        assert!(!to.join(".cargo_vcs_info.json").exists());
        fs::remove_dir_all(&base).unwrap();
    }
}
