//! Idempotent machine set-up: the nightly toolchain's `rust-src` (for
//! `-Z build-std=core`) and `bpf-linker`, linked against the nightly
//! toolchain's own libLLVM because the distribution's LLVM is too old;
//! the musl target of the toolchain running this, for the static binary
//! (`cargo xtask dist`; no crate of the observer compiles C code, so
//! musl's C toolchain is not needed), and, only when `dist` builds for
//! another processor ([`cross`]), that processor's musl target, a cross
//! linker and a user-mode emulator; and the real consumers the
//! end-to-end tests judge the output formats with, from Debian's
//! packages: `go tool pprof` (golang-go), Prometheus and `promtool`
//! (prometheus), tmux; musl-gcc (musl-tools) for a C test program built
//! against musl; and
//! `cargo-fuzz` (the fuzz targets build with nightly).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::arch::Arch;
use crate::cmd::{cargo_home, checked, command, output};

/// The toolchain eBPF programs and fuzz targets are built with.
pub const TOOLCHAIN: &str = "nightly";

pub fn run() -> Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_target(Arch::host().musl_target())?;
    ensure_consumers()?;
    ensure_cargo_fuzz()?;
    Ok(())
}

/// Each program the format tests run, and the Debian package providing it.
const CONSUMERS: [(&str, &str); 5] = [
    ("go", "golang-go"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("tmux", "tmux"),
    // A C program against musl, for `--preset libc` on musl's C library.
    ("musl-gcc", "musl-tools"),
];

/// Installs the Debian packages of the consumers that are missing (none
/// when all are there; `apt-get update` only when something is).
fn ensure_consumers() -> Result<()> {
    let mut missing: Vec<&str> = CONSUMERS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|&(_, package)| package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        println!("setup: go, prometheus, promtool, tmux, musl-gcc: present");
        return Ok(());
    }
    apt_install(&missing)?;
    if let Some((program, package)) = CONSUMERS.iter().find(|(program, _)| !on_path(program)) {
        bail!("{package} is installed but provides no `{program}` on PATH");
    }
    Ok(())
}

/// Installs Debian packages (`apt-get update` first: the caller found
/// something missing).
fn apt_install(packages: &[&str]) -> Result<()> {
    println!(
        "setup: installing {} from Debian's packages",
        packages.join(" ")
    );
    checked(command("apt-get").args(["update", "-qq"]))?;
    checked(
        command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages),
    )
}

/// What building the static binary for `arch` needs beyond [`run`]: its
/// musl target and, when it is not this machine's processor, the cross
/// linker and the emulator that runs its binaries here (Debian packages;
/// the host's dpkg architectures are left alone).
pub fn cross(arch: Arch) -> Result<()> {
    ensure_target(arch.musl_target())?;
    let Some(cross) = arch.cross()? else {
        return Ok(());
    };
    let missing: Vec<&str> = cross
        .packages
        .iter()
        .copied()
        .filter(|package| !package_installed(package))
        .collect();
    if missing.is_empty() {
        println!("setup: {}: present", cross.packages.join(" "));
    } else {
        apt_install(&missing)?;
    }
    for program in [cross.gcc, cross.runner] {
        if !on_path(program) {
            bail!(
                "{} are installed but provide no `{program}` on PATH",
                cross.packages.join(" ")
            );
        }
    }
    Ok(())
}

/// True when dpkg lists `package` as installed.
fn package_installed(package: &str) -> bool {
    output(command("dpkg-query").args(["--show", "--showformat=${Status}", package])).is_ok_and(
        |probe| {
            probe.status.success() && String::from_utf8_lossy(&probe.stdout).ends_with(" installed")
        },
    )
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
/// The standard library of `target` for the toolchain that runs this task
/// (rustup passes its choice on in `RUSTUP_TOOLCHAIN`), which builds the
/// dist.
pub(crate) fn ensure_target(target: &str) -> Result<()> {
    let installed = output(command("rustup").args(["target", "list", "--installed"]))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == target)
    {
        println!("setup: {target}: present");
        return Ok(());
    }
    println!("setup: {target}: installing");
    checked(command("rustup").args(["target", "add", target]))
}

fn ensure_nightly() -> Result<()> {
    let probe = output(command("rustup").args(["run", TOOLCHAIN, "rustc", "--version"]))?;
    if !probe.status.success() {
        bail!(
            "the `{TOOLCHAIN}` toolchain is missing; eBPF programs need it (`rustup toolchain install {TOOLCHAIN}`)"
        );
    }
    println!(
        "setup: {TOOLCHAIN}: {}",
        String::from_utf8_lossy(&probe.stdout).trim()
    );
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(command("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        TOOLCHAIN,
    ]))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.starts_with("rust-src"))
    {
        println!("setup: rust-src: present");
        return Ok(());
    }
    println!("setup: rust-src: installing for {TOOLCHAIN}");
    checked(command("rustup").args(["component", "add", "rust-src", "--toolchain", TOOLCHAIN]))
}

fn ensure_bpf_linker() -> Result<()> {
    let libllvm = nightly_libllvm()?;
    let shim = cargo_home().join("bpf-linker-llvm");
    let probe = output(command("bpf-linker").arg("--version"));
    if let Ok(probe) = &probe {
        if probe.status.success() && shim_points_to(&shim, &libllvm) {
            println!(
                "setup: {}: present",
                String::from_utf8_lossy(&probe.stdout).trim()
            );
            return Ok(());
        }
    }
    let major = llvm_major()?;
    println!(
        "setup: bpf-linker: building against {} (LLVM {major}), about two minutes",
        libllvm.display()
    );
    make_shim(&shim, &libllvm)?;
    checked(
        command("cargo")
            .env("LLVM_PREFIX", &shim)
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major}")]),
    )
}

/// `cargo fuzz`, which runs the fuzz targets (`cargo xtask fuzz`).
fn ensure_cargo_fuzz() -> Result<()> {
    let probe = output(command("cargo").args(["fuzz", "--version"]));
    if let Ok(probe) = &probe {
        if probe.status.success() {
            println!(
                "setup: {}: present",
                String::from_utf8_lossy(&probe.stdout).trim()
            );
            return Ok(());
        }
    }
    println!("setup: cargo-fuzz: installing, about a minute");
    checked(command("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// The nightly toolchain's shared libLLVM.
fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot =
        output(command("rustup").args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"]))?;
    let lib = Path::new(String::from_utf8_lossy(&sysroot.stdout).trim()).join("lib");
    fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))
}

fn llvm_major() -> Result<String> {
    let version = output(command("rustup").args(["run", TOOLCHAIN, "rustc", "-vV"]))?;
    String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
        .context("rustc -vV printed no LLVM version")
}

/// `$CARGO_HOME/bpf-linker-llvm/lib/` holds `libLLVM.so` (the name the
/// build links against) and the soname the binary loads through its rpath.
fn make_shim(shim: &Path, libllvm: &Path) -> Result<()> {
    let lib = shim.join("lib");
    fs::create_dir_all(&lib)?;
    let soname = libllvm
        .file_name()
        .context("libLLVM path has a file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(soname)] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(libllvm, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    Ok(())
}

fn shim_points_to(shim: &Path, libllvm: &Path) -> bool {
    let soname = libllvm.file_name().unwrap_or_default();
    fs::read_link(shim.join("lib").join(soname)).is_ok_and(|target| target == libllvm)
}
