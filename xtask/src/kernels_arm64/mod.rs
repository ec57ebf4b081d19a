//! `cargo xtask kernels --arch aarch64`: the static arm64 observer in VMs
//! booted with Debian's arm64 kernels (6.12 from bookworm-backports, 6.1
//! from bookworm) under QEMU's software emulation; the last step of
//! `cargo xtask test` (docs/arm64.md).
//!
//! Each VM runs `observer doctor` and `observer run` with `auto`
//! locations on a small C pool program (`pool.c`) built four ways: with
//! frame pointers, with signed return addresses too, signed without frame
//! pointers, and without unwind tables. It passes when doctor runs and
//! every run infers the locations, loads its programs, counts exactly,
//! and gives the leak its whole, right stack (`findings`); then README's
//! demo and the kernel-side end-to-end tests.
//!
//! Cached under `~/.cache/pool-observer/kernels`, next to the x86-64
//! kernels: the arm64 packages (`aarch64-*`), fetched with a private apt
//! configuration ([`debian`]), and a debootstrapped arm64 root file system
//! ([`rootfs`]). Results in `target/kernels/aarch64-<kernel>/`.

mod debian;
mod demo;
mod e2e;
mod findings;
mod guest;
mod initramfs;
mod modules;
mod rootfs;
mod target;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::cmd::root;
use debian::Apt;

/// One arm64 kernel of the matrix.
struct Kernel {
    /// For people, and the cache and results directories.
    name: &'static str,
    /// The Debian suite carrying it.
    suite: &'static str,
    /// Regex of the image package (newest wins).
    package: &'static str,
    /// Modules the guest loads for 9p over virtio-pci (with what they
    /// depend on): where virtio_pci is a module (6.1), it comes first.
    modules: &'static [&'static str],
}

const MATRIX: [Kernel; 2] = [
    Kernel {
        name: "6.12",
        suite: "bookworm-backports",
        package: r"^linux-image-6\.12\.[0-9.]+\+deb12-arm64$",
        modules: &["9pnet_virtio", "9p"],
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
        package: r"^linux-image-6\.1\.0-[0-9]+-arm64$",
        modules: &["virtio_pci", "9pnet_virtio", "9p"],
    },
];

/// Host programs this needs, with the Debian package providing each.
const HOST_PACKAGES: [(&str, &str); 7] = [
    ("qemu-system-arm", "/usr/bin/qemu-system-aarch64"),
    ("debootstrap", "/usr/sbin/debootstrap"),
    ("binfmt-support", "/usr/sbin/update-binfmts"),
    ("cpio", "/usr/bin/cpio"),
    ("xz-utils", "/usr/bin/xz"),
    ("zstd", "/usr/bin/zstd"),
    ("kmod", "/usr/bin/kmod"),
];

/// What the VMs need, fetched and built: each kernel to boot with its
/// `vmlinuz` and initramfs, and the root file system.
pub struct Prepared {
    kernels: Vec<(&'static Kernel, PathBuf, PathBuf)>,
    rootfs: PathBuf,
}

/// Fetches and builds (or finds cached) everything the arm64 kernels named
/// in `only` (all when empty) need besides the observer.
pub fn prepare(only: &[String]) -> Result<Prepared> {
    if let Some(unknown) = only.iter().find(|o| !MATRIX.iter().any(|k| k.name == *o)) {
        bail!("no arm64 kernel {unknown} (there are 6.12 and 6.1)");
    }
    ensure_host_packages()?;
    let cache = crate::kernels::cache_dir()?;
    let busybox = fetch_busybox(&cache)?;
    let mut kernels = Vec::new();
    for kernel in MATRIX
        .iter()
        .filter(|k| only.is_empty() || only.iter().any(|o| o == k.name))
    {
        let (package_root, vmlinuz) = fetch_kernel(&cache, kernel)?;
        let initrd = cache.join(format!("aarch64-{}/initrd.img", kernel.name));
        initramfs::build(&busybox, &package_root, kernel.modules, &root(), &initrd)?;
        kernels.push((kernel, vmlinuz, initrd));
    }
    let rootfs = rootfs::ensure(&cache)?;
    rootfs::mount_point(&rootfs, &root())?;
    Ok(Prepared { kernels, rootfs })
}

/// Boots each prepared kernel with `observer`, the static arm64 binary of
/// `cargo xtask dist`, and `e2e`, the cross-built end-to-end test binary
/// (the arm64 target programs built, see [`crate::test::kernels_arm64`]),
/// and fails unless every one showed what is claimed.
///
/// The VMs run at the same time: each emulates one processor on one host
/// thread, so on a machine with two cores or more two VMs take about as
/// long as the slower one alone (docs/arm64.md has the measurements).
pub fn run(prepared: &Prepared, observer: &Path, e2e: &Path) -> Result<()> {
    let binaries = Binaries { observer, e2e };
    let outcomes = std::thread::scope(|scope| {
        let runs: Vec<_> = prepared
            .kernels
            .iter()
            .map(|(kernel, vmlinuz, initrd)| {
                let binaries = &binaries;
                let rootfs = &prepared.rootfs;
                let run =
                    scope.spawn(move || run_kernel(kernel, vmlinuz, initrd, rootfs, binaries));
                (kernel.name, run)
            })
            .collect();
        runs.into_iter()
            .map(|(name, run)| {
                run.join()
                    .unwrap_or_else(|_| Err(anyhow!("the thread running arm64 {name} panicked")))
                    .with_context(|| format!("arm64 kernel {name}"))
                    .map(|outcome| (name, outcome))
            })
            .collect::<Vec<_>>()
    });
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for outcome in outcomes {
        let (name, (passed, row)) = outcome?;
        if !passed {
            failed.push(name);
        }
        rows.push(row);
    }
    println!("\narm64 kernels:\n{}", rows.join("\n"));
    if !failed.is_empty() {
        bail!("the arm64 kernels failed on {}", failed.join(", "));
    }
    Ok(())
}

/// QEMU for arm64, debootstrap and the tools packing the initramfs.
fn ensure_host_packages() -> Result<()> {
    crate::kernels::ensure_host_packages("kernels (aarch64)", &HOST_PACKAGES)
}

/// Debian's static arm64 busybox, extracted once; returns the package root.
fn fetch_busybox(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("aarch64-busybox");
    let root = dir.join("root");
    if root.join("bin/busybox").exists() {
        return Ok(root);
    }
    remove_ours(&dir)?;
    let apt = Apt::open(cache, "bookworm")?;
    apt.download_and_extract("busybox-static", &dir)
}

/// The kernel's extracted package (once) and its `vmlinuz`.
fn fetch_kernel(cache: &Path, kernel: &Kernel) -> Result<(PathBuf, PathBuf)> {
    let dir = cache.join(format!("aarch64-{}", kernel.name));
    let root = dir.join("root");
    if let Some(vmlinuz) = vmlinuz(&root) {
        return Ok((root, vmlinuz));
    }
    remove_ours(&dir)?;
    let apt = Apt::open(cache, kernel.suite)?;
    let package = apt.newest(kernel.package)?;
    apt.download_and_extract(&package, &dir)?;
    let vmlinuz = vmlinuz(&root).with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
    Ok((root, vmlinuz))
}

fn vmlinuz(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// Removes `dir`, made by an earlier, interrupted run of this module.
fn remove_ours(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}

/// The arm64 binaries the guest runs.
struct Binaries<'a> {
    /// The static observer.
    observer: &'a Path,
    /// The end-to-end test binary.
    e2e: &'a Path,
}

/// Boots one kernel and reads what its run showed; the row for people and
/// whether what is claimed held.
fn run_kernel(
    kernel: &Kernel,
    vmlinuz: &Path,
    initrd: &Path,
    rootfs: &Path,
    binaries: &Binaries,
) -> Result<(bool, String)> {
    let started = Instant::now();
    let out = prepare_output(kernel, binaries)?;
    guest::write_script(&out, &out.join("bin/e2e"))?;
    let booted = guest::boot(vmlinuz, initrd, rootfs, &out)?;
    let results = std::fs::read_to_string(out.join("results.txt")).unwrap_or_default();
    let release = vmlinuz
        .file_name()
        .map(|name| {
            name.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_string()
        })
        .unwrap_or_default();
    let (passed, lines) = if results.contains(guest::DONE) {
        judge(&out, &results)
    } else {
        (
            false,
            vec![format!(
                "the VM did not finish; console: {}",
                console_tail(&out)
            )],
        )
    };
    let findings = format!(
        "\n# findings (host)\nVM {:.0} s, with the targets' builds {:.0} s\n{}\n{}\n",
        booted.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        lines.join("\n"),
        if passed { "PASS" } else { "FAIL" }
    );
    append(&out.join("results.txt"), &findings)?;
    Ok((
        passed,
        format!(
            "aarch64 {} ({release}): {} in {:.0} s (VM)\n  {}",
            kernel.name,
            if passed { "PASS" } else { "FAIL" },
            booted.as_secs_f64(),
            lines.join("\n  ")
        ),
    ))
}

/// Doctor's and each run's findings; passed when all hold.
fn judge(out: &Path, results: &str) -> (bool, Vec<String>) {
    let doctor_text = std::fs::read_to_string(out.join("doctor.txt")).unwrap_or_default();
    let (mut passed, doctor) = findings::doctor(results, &doctor_text);
    let mut lines = vec![doctor];
    for variant in &target::VARIANTS {
        let run = findings::run(out, results, variant);
        passed &= run.passed;
        lines.push(run.line);
    }
    let (demo_passed, demo) = demo::judge(out, results);
    passed &= demo_passed;
    lines.push(demo);
    let (tests_passed, tests) = e2e::judge(out, results);
    passed &= tests_passed;
    lines.extend(tests);
    (passed, lines)
}

/// A fresh `target/kernels/aarch64-<kernel>/` with `bin/`: copies of the
/// observer and the e2e test binary (a build during the run cannot replace
/// them) and the pool target's builds the guest runs.
fn prepare_output(kernel: &Kernel, binaries: &Binaries) -> Result<PathBuf> {
    let out = crate::kernels::results_root().join(format!("aarch64-{}", kernel.name));
    remove_ours(&out)?;
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    for (binary, name) in [(binaries.observer, "observer"), (binaries.e2e, "e2e")] {
        std::fs::copy(binary, bin.join(name))
            .with_context(|| format!("cannot copy {}", binary.display()))?;
    }
    target::build_all(&bin)?;
    Ok(out)
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The console's last lines, for a VM that did not finish.
fn console_tail(out: &Path) -> String {
    let console = std::fs::read_to_string(out.join("console.log")).unwrap_or_default();
    let lines: Vec<&str> = console.lines().rev().take(8).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
