//! `cargo xtask test` and `cargo xtask lint`.

use std::time::Instant;

use anyhow::Result;

use crate::arch::Arch;
use crate::cmd::{cargo, checked, command};
use crate::targets::{
    build_allocator_gateways, build_allocator_targets, build_allocator_targets_for, build_corpus,
    build_corpus_for, build_lto_gateway, build_observer, build_real_crates, build_targets,
    build_targets_for, corpus_dir, targets_dir, test_targets, CorpusBuild, Variant,
};
use crate::{dist, fuzz, setup};

/// Set-up, build, then every test: unit tests of the observer, xtask and
/// the target programs, the end-to-end tests, which load real eBPF
/// programs into this kernel and therefore need root, and a short run of
/// every fuzz target (a finding fails the test, naming its reproducer).
///
/// The end-to-end tests run one at a time: they check that no program of
/// ours stays loaded after an observer exits, which a concurrently running
/// observer would falsify.
pub fn run() -> Result<()> {
    setup::run()?;
    build_observer(false)?;
    build_targets(Variant::Leaky)?;
    build_targets(Variant::Fixed)?;
    build_corpus()?;
    build_real_crates()?;
    build_lto_gateway()?;
    build_allocator_targets()?;
    build_allocator_gateways()?;
    // The shipped binaries are tested too: this machine's copied alone
    // into an empty directory and run with an empty environment; the
    // other processor's built (from a warm cache: seconds) and run under
    // emulation.
    let dist = dist::build(Arch::host())?;
    let mut cross_dists = Vec::new();
    for arch in Arch::ALL.into_iter().filter(|&arch| arch != Arch::host()) {
        setup::cross(arch)?;
        cross_dists.push((arch, dist::build(arch)?));
    }
    println!("xtask: unit tests of the target programs");
    test_targets()?;
    println!("xtask: observer unit and end-to-end tests");
    // The eBPF crate's programs build for the BPF target only; its shared
    // library (the walk cache's decisions) is tested on the host.
    checked(cargo().args(["test", "--package", "pool-observer-ebpf", "--lib"]))?;
    let mut tests = cargo();
    tests.args(["test", "--workspace", "--exclude", "pool-observer-ebpf"]);
    if Arch::host() != Arch::Aarch64 {
        // Its cross compiler is installed above (`setup::cross`): the
        // arm64 unwind tables are judged, never skipped.
        tests.env("OBSERVER_REQUIRE_CROSS_TOOLS", "1");
    }
    checked(
        tests
            .env("OBSERVER_TARGETS_DIR", targets_dir(Variant::Leaky))
            .env("OBSERVER_FIXED_TARGETS_DIR", targets_dir(Variant::Fixed))
            .env("OBSERVER_CORPUS_DIR", corpus_dir())
            .env("OBSERVER_DIST_BINARY", &dist.binary)
            .args(["--", "--test-threads=1"]),
    )?;
    println!(
        "xtask: fuzzing smoke run, {} s per target",
        fuzz::SMOKE_SECONDS
    );
    fuzz::smoke()?;
    println!("xtask: the kernel matrix (Debian's LTS kernels in VMs, the static binary)");
    crate::kernels::run(&[], &dist.binary, false)?;
    println!("xtask: the arm64 kernels (Debian's arm64 6.12 and 6.1 in emulated VMs)");
    let arm64 = match cross_dists
        .into_iter()
        .find(|(arch, _)| *arch == Arch::Aarch64)
    {
        Some((_, built)) => built.binary,
        // On an arm64 host, its own static binary.
        None => dist.binary,
    };
    run_kernels_arm64(&[], Some(arm64))
}

/// The kernel matrix, after building what it runs.
pub fn kernels(only: &[String], update_readme: bool) -> Result<()> {
    setup::run()?;
    build_observer(false)?;
    build_targets(Variant::Leaky)?;
    build_targets(Variant::Fixed)?;
    build_corpus()?;
    crate::targets::build_allocator_targets()?;
    let dist = dist::build(Arch::host())?;
    crate::kernels::run(only, &dist.binary, update_readme)
}

/// The arm64 kernels (`cargo xtask kernels --arch aarch64`; the last
/// step of [`run`]): the VMs' packages and root file system
/// first (downloads fail early), then, built once for all kernels, the
/// static arm64 binary (in [`run`], the one its dists built), the arm64
/// target programs the kernel-side tests start and the arm64 e2e test
/// binary, run in VMs of Debian's arm64 kernels.
pub fn kernels_arm64(only: &[String]) -> Result<()> {
    setup::run()?;
    setup::cross(Arch::Aarch64)?;
    run_kernels_arm64(only, None)
}

/// [`kernels_arm64`] after set-up, with `observer`, the static arm64
/// binary, when it is built already ([`run`] builds it with the other
/// dists); built after the VMs' preparation otherwise.
fn run_kernels_arm64(only: &[String], observer: Option<std::path::PathBuf>) -> Result<()> {
    let started = Instant::now();
    crate::setup::ensure_target(Arch::Aarch64.gnu_target())?;
    let prepared = crate::kernels_arm64::prepare(only)?;
    let observer = match observer {
        Some(built) => built,
        None => dist::build(Arch::Aarch64)?.binary,
    };
    let e2e = build_kernel_side(Arch::Aarch64)?;
    let ran = crate::kernels_arm64::run(&prepared, &observer, &e2e);
    println!(
        "xtask: the arm64 kernels took {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    ran
}

/// What the kernel-side end-to-end tests start, built for `arch`: the
/// gateway (leaky and fixed), the corpus' stock build, the C allocator
/// programs; then the e2e test binary itself, whose path it returns.
///
/// Each part's time is printed: they are what the arm64 step adds to CI.
fn build_kernel_side(arch: Arch) -> Result<std::path::PathBuf> {
    let started = Instant::now();
    build_targets_for(Variant::Leaky, arch)?;
    build_targets_for(Variant::Fixed, arch)?;
    build_corpus_for(CorpusBuild::Stock, arch)?;
    build_allocator_targets_for(arch)?;
    let targets = started.elapsed();
    println!("xtask: building the end-to-end test binary ({arch})");
    let e2e = crate::kernels::e2e_binary(arch)?;
    println!(
        "xtask: built for {arch}: the target programs in {:.0} s, the end-to-end test binary in {:.0} s",
        targets.as_secs_f64(),
        (started.elapsed() - targets).as_secs_f64()
    );
    Ok(e2e)
}

/// Formatting and clippy, as every commit should pass them (the fuzz
/// crate's too: it calls the parsers' public API).
pub fn lint() -> Result<()> {
    setup::run()?;
    checked(cargo().args(["fmt", "--all", "--check"]))?;
    checked(cargo().args([
        "fmt",
        "--all",
        "--check",
        "--manifest-path",
        "tests/Cargo.toml",
    ]))?;
    checked(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "pool-observer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    checked(cargo().args([
        "clippy",
        "--manifest-path",
        "tests/Cargo.toml",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    fuzz::lint()?;
    // The eBPF crate only builds for the BPF target, with nightly; once
    // per processor the observer is shipped for (its `src/arch/` modules).
    for arch in Arch::ALL {
        checked(
            command("rustup")
                .args([
                    "run",
                    "nightly",
                    "cargo",
                    "clippy",
                    "--package",
                    "pool-observer-ebpf",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--",
                    "-D",
                    "warnings",
                ])
                .env("AYA_BPF_TARGET_ARCH", arch.name()),
        )?;
    }
    Ok(())
}
