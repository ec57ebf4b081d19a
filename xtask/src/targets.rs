//! Builds the observer and the target programs under `tests/`.

use std::path::PathBuf;

use anyhow::Result;

use crate::arch::Arch;
use crate::cmd::{cargo, checked, root};

/// A build of the target programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As the story had it, built like a production service: `cargo build
    /// --release`, no frame pointers.
    Leaky,
    /// With the story's fix (`--features leaky-gateway/fixed-disconnect`).
    Fixed,
    /// The leaky build with `-C force-frame-pointers=yes`, for comparing the
    /// frame-pointer walker with the unwinder (`cargo xtask bench`).
    FramePointers,
}

impl Variant {
    fn target_dir(self) -> PathBuf {
        root().join(match self {
            Variant::Leaky => "target/targets/release",
            Variant::Fixed => "target/targets/fixed",
            Variant::FramePointers => "target/targets/frame-pointers",
        })
    }

    fn rustflags(self) -> &'static str {
        match self {
            Variant::FramePointers => "-C force-frame-pointers=yes",
            Variant::Leaky | Variant::Fixed => "",
        }
    }
}

/// Where a variant's binaries end up.
pub fn targets_dir(variant: Variant) -> PathBuf {
    targets_dir_for(variant, Arch::host())
}

/// Where a variant's binaries for `arch` end up: cargo puts a build for
/// another processor under its target's name.
pub fn targets_dir_for(variant: Variant, arch: Arch) -> PathBuf {
    cross_subdir(variant.target_dir(), arch).join("release")
}

/// `dir`, or for another processor than this machine's, its gnu target's
/// directory in `dir`.
fn cross_subdir(dir: PathBuf, arch: Arch) -> PathBuf {
    if arch == Arch::host() {
        dir
    } else {
        dir.join(arch.gnu_target())
    }
}

/// `cargo build --release` of the `tests/` workspace.
pub fn build_targets(variant: Variant) -> Result<()> {
    build_targets_for(variant, Arch::host())
}

/// [`build_targets`] for `arch`. For another processor (its VMs, which run
/// the kernel-side end-to-end tests) only what those tests start: the
/// gateway, its load generator and `pool-bench`.
pub fn build_targets_for(variant: Variant, arch: Arch) -> Result<()> {
    println!("xtask: building the target programs ({variant:?}, {arch})");
    let mut command = cargo();
    command
        .args(["build", "--release", "--manifest-path", "tests/Cargo.toml"])
        .arg("--target-dir")
        .arg(variant.target_dir())
        .env("RUSTFLAGS", variant.rustflags());
    if variant == Variant::Fixed {
        command.args(["--features", "leaky-gateway/fixed-disconnect"]);
    }
    if arch != Arch::host() {
        command.args(["--target", arch.gnu_target()]).args([
            "--package",
            "leaky-gateway",
            "--package",
            "pool-bench",
        ]);
        arch.cross_link(&mut command, arch.gnu_target())?;
    }
    checked(&mut command)
}

/// How `leak-corpus` is built for the corpus tests: the ways production
/// binaries are shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusBuild {
    /// `cargo build --release` with no debug info at all.
    Stock,
    /// `debug = "line-tables-only"`.
    LineTables,
    /// Full DWARF moved to `debug/.build-id/xx/rest.debug`, binary stripped.
    Split,
    /// Stock, with `panic = "abort"`, as many services ship.
    PanicAbort,
}

impl CorpusBuild {
    pub const ALL: [CorpusBuild; 4] = [
        CorpusBuild::Stock,
        CorpusBuild::LineTables,
        CorpusBuild::Split,
        CorpusBuild::PanicAbort,
    ];

    fn name(self) -> &'static str {
        match self {
            CorpusBuild::Stock => "corpus-stock",
            CorpusBuild::LineTables => "corpus-line-tables",
            CorpusBuild::Split => "corpus-split",
            CorpusBuild::PanicAbort => "corpus-panic-abort",
        }
    }

    fn debug(self) -> &'static str {
        match self {
            CorpusBuild::Stock | CorpusBuild::PanicAbort => "false",
            CorpusBuild::LineTables => "line-tables-only",
            CorpusBuild::Split => "full",
        }
    }

    fn panic(self) -> &'static str {
        match self {
            CorpusBuild::PanicAbort => "abort",
            _ => "unwind",
        }
    }
}

/// Where the corpus builds live (`corpus-*/release/leak-corpus`, and the
/// split build's debug tree in `corpus-split/debug`).
pub fn corpus_dir() -> PathBuf {
    corpus_dir_for(Arch::host())
}

/// [`corpus_dir`] of `arch`'s builds, laid out the same way.
pub fn corpus_dir_for(arch: Arch) -> PathBuf {
    cross_subdir(root().join("target/targets"), arch)
}

/// The servers built on real pool crates, under `tests/real-crates/`.
pub const REAL_CRATE_SERVERS: [&str; 5] = [
    "lifeguard-server",
    "pool-server",
    "sharded-slab-server",
    "slab-server",
    "slotmap-server",
];

/// How the real-crate servers are built: the way `auto` needs, and the
/// way `cargo build --release` ships them by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealCratesBuild {
    /// `debug = 2`: full DWARF, types included.
    Full,
    /// Cargo's release default: no debug information.
    Stock,
}

impl RealCratesBuild {
    pub const ALL: [RealCratesBuild; 2] = [RealCratesBuild::Full, RealCratesBuild::Stock];

    /// Its directory under [`corpus_dir`]; binaries are in `release/`.
    pub fn name(self) -> &'static str {
        match self {
            RealCratesBuild::Full => "real-crates-full",
            RealCratesBuild::Stock => "real-crates-stock",
        }
    }

    fn debug(self) -> &'static str {
        match self {
            RealCratesBuild::Full => "full",
            RealCratesBuild::Stock => "false",
        }
    }
}

/// Builds `leak-corpus` every [`CorpusBuild`] way.
pub fn build_corpus() -> Result<()> {
    for build in CorpusBuild::ALL {
        build_corpus_for(build, Arch::host())?;
    }
    Ok(())
}

/// Builds `leak-corpus` the `build` way for `arch`, into
/// `corpus_dir_for(arch)/NAME/release/leak-corpus`.
pub fn build_corpus_for(build: CorpusBuild, arch: Arch) -> Result<()> {
    println!("xtask: building leak-corpus ({build:?}, {arch})");
    let target_dir = corpus_dir_for(arch).join(build.name());
    let mut command = cargo();
    command
        .args(["build", "--release", "--manifest-path", "tests/Cargo.toml"])
        .args(["--package", "leak-corpus", "--target-dir"])
        .arg(&target_dir)
        .env("RUSTFLAGS", "")
        .env("CARGO_PROFILE_RELEASE_DEBUG", build.debug())
        .env("CARGO_PROFILE_RELEASE_PANIC", build.panic());
    if arch != Arch::host() {
        command.args(["--target", arch.gnu_target()]);
        arch.cross_link(&mut command, arch.gnu_target())?;
    }
    checked(&mut command)?;
    if arch != Arch::host() {
        // Where the tests look (and the report names): NAME/release/, not
        // cargo's NAME/TARGET/release/ (which holds only host build scripts
        // and dependencies).
        let release = target_dir.join("release");
        std::fs::create_dir_all(&release)?;
        std::fs::copy(
            cross_subdir(target_dir.clone(), arch).join("release/leak-corpus"),
            release.join("leak-corpus"),
        )?;
    }
    if build == CorpusBuild::Split {
        split_debug_info(&target_dir, "leak-corpus")?;
    }
    Ok(())
}

/// The demo gateway built as size- and speed-minded services ship it:
/// `lto = "fat"`, `codegen-units = 1`, full debug info in the binary.
/// Across crates, LTO inlines the pool's functions into their callers.
pub fn build_lto_gateway() -> Result<()> {
    println!("xtask: building leaky-gateway (fat LTO, one codegen unit, debug = 2)");
    checked(
        cargo()
            .args(["build", "--release", "--manifest-path", "tests/Cargo.toml"])
            .args(["--package", "leaky-gateway", "--target-dir"])
            .arg(corpus_dir().join("lto"))
            .env("RUSTFLAGS", "")
            .env("CARGO_PROFILE_RELEASE_LTO", "fat")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "full"),
    )
}

/// Builds every server of `tests/real-crates/` each [`RealCratesBuild`]
/// way (`corpus_dir()/real-crates-*/release/`), and the `debug = 2` build
/// split into a stripped binary and its debug file (`real-crates-split`).
pub fn build_real_crates() -> Result<()> {
    for build in RealCratesBuild::ALL {
        println!("xtask: building the servers on real pool crates ({build:?})");
        let mut command = cargo();
        command
            .args(["build", "--release", "--manifest-path", "tests/Cargo.toml"])
            .arg("--target-dir")
            .arg(corpus_dir().join(build.name()))
            .env("RUSTFLAGS", "")
            .env("CARGO_PROFILE_RELEASE_DEBUG", build.debug());
        for server in REAL_CRATE_SERVERS {
            command.args(["--package", server]);
        }
        checked(&mut command)?;
    }
    split_real_crates()
}

/// The `debug = 2` servers as distributions ship them
/// (`corpus_dir()/real-crates-split`): stripped, their DWARF in
/// `debug/.build-id/xx/rest.debug`.
fn split_real_crates() -> Result<()> {
    let full = corpus_dir()
        .join(RealCratesBuild::Full.name())
        .join("release");
    let split = corpus_dir().join("real-crates-split");
    std::fs::create_dir_all(split.join("release"))?;
    for server in REAL_CRATE_SERVERS {
        let copy = split.join("release").join(server);
        // A fresh copy each time: the split below strips it in place.
        std::fs::copy(full.join(server), &copy)?;
        split_debug_info(&split, server)?;
    }
    Ok(())
}

/// A named group of target programs and how to build it.
type Build = (&'static str, fn() -> Result<()>);

/// Builds the named groups of target programs (all when none is named).
pub fn build_named(only: &[String]) -> Result<()> {
    let builds: [Build; 6] = [
        ("leaky", || build_targets(Variant::Leaky)),
        ("fixed", || build_targets(Variant::Fixed)),
        ("corpus", build_corpus),
        ("real-crates", build_real_crates),
        ("lto", build_lto_gateway),
        ("allocators", || {
            build_allocator_targets()?;
            build_allocator_gateways()
        }),
    ];
    if let Some(unknown) = only
        .iter()
        .find(|name| !builds.iter().any(|(known, _)| known == name))
    {
        anyhow::bail!(
            "no target group '{unknown}': name some of {}",
            builds.map(|(name, _)| name).join(", ")
        );
    }
    for (name, build) in builds {
        if only.is_empty() || only.iter().any(|o| o == name) {
            build()?;
        }
    }
    Ok(())
}

/// The C programs of `tests/allocators/`, in [`corpus_dir`]`/allocators`:
/// libc's allocator observed in the shared object, not the executable
/// (`libc-leak`: malloc and free; `libc-mixed`: every libc allocate
/// function, for `--preset libc`; also linked statically and against
/// musl: `libc-mixed-static`, `libc-mixed-musl`), and a pool in a library loaded later
/// (`dlopen-pool`, which dlopens `libdlpool.so` from its own directory
/// through its RUNPATH `$ORIGIN`).
/// `-fno-builtin` keeps gcc from folding a malloc/free pair away.
pub fn build_allocator_targets() -> Result<()> {
    build_allocator_targets_for(Arch::host())
}

/// [`build_allocator_targets`] for `arch`, by its C compiler, into
/// `corpus_dir_for(arch)/allocators`; musl's build only for this machine's
/// processor (Debian ships `musl-gcc` for it alone).
pub fn build_allocator_targets_for(arch: Arch) -> Result<()> {
    println!("xtask: building the allocator targets ({arch})");
    let out = corpus_dir_for(arch).join("allocators");
    std::fs::create_dir_all(&out)?;
    let source = |name: &str| root().join(format!("tests/allocators/{name}.c"));
    let gcc = arch.gcc()?;
    for program in ["libc-leak", "libc-mixed", "c-pool"] {
        checked(
            crate::cmd::command(gcc)
                .args(["-O1", "-g", "-fno-builtin", "-o"])
                .arg(out.join(program))
                .arg(source(program)),
        )?;
    }
    // libc-mixed again with the C library elsewhere: linked statically
    // (glibc's allocator in the executable) and against musl (its
    // dynamic linker is its C library).
    checked(
        crate::cmd::command(gcc)
            .args(["-O1", "-g", "-fno-builtin", "-static", "-o"])
            .arg(out.join("libc-mixed-static"))
            .arg(source("libc-mixed")),
    )?;
    if arch == Arch::host() {
        checked(
            crate::cmd::command("musl-gcc")
                .args(["-O1", "-g", "-fno-builtin", "-o"])
                .arg(out.join("libc-mixed-musl"))
                .arg(source("libc-mixed")),
        )?;
    }
    checked(
        crate::cmd::command(gcc)
            .args(["-O1", "-g", "-fno-builtin", "-fPIC", "-shared", "-o"])
            .arg(out.join("libdlpool.so"))
            .arg(source("libdlpool")),
    )?;
    checked(
        crate::cmd::command(gcc)
            .args([
                "-O1",
                "-g",
                "-fno-builtin",
                "-Wl,--enable-new-dtags,-rpath,$ORIGIN",
            ])
            .arg("-o")
            .arg(out.join("dlopen-pool"))
            .arg(source("dlopen-pool")),
    )?;
    Ok(())
}

/// The allocators services switch to, as gateway features.
pub const GATEWAY_ALLOCATORS: [&str; 2] = ["jemalloc", "mimalloc"];

/// The demo gateway built once with each of [`GATEWAY_ALLOCATORS`] as its
/// global allocator (`corpus_dir()/gateway-ALLOCATOR/release/`), for the
/// allocator presets. jemalloc is built from its C sources: minutes, once.
pub fn build_allocator_gateways() -> Result<()> {
    for allocator in GATEWAY_ALLOCATORS {
        println!("xtask: building leaky-gateway with {allocator}");
        checked(
            cargo()
                .args(["build", "--release", "--manifest-path", "tests/Cargo.toml"])
                .args(["--package", "leaky-gateway", "--features", allocator])
                .arg("--target-dir")
                .arg(corpus_dir().join(format!("gateway-{allocator}")))
                .env("RUSTFLAGS", ""),
        )?;
    }
    Ok(())
}

/// What distributions do: keep the DWARF in a file named by build id,
/// strip the binary of everything (symbol table included).
/// Runs again only when cargo produced a new, unstripped binary.
fn split_debug_info(target_dir: &std::path::Path, program: &str) -> Result<()> {
    let binary = target_dir.join("release").join(program);
    let sections = crate::cmd::output(crate::cmd::command("readelf").arg("-S").arg(&binary))?;
    if !String::from_utf8_lossy(&sections.stdout).contains(".debug_info") {
        return Ok(());
    }
    let build_id = build_id(&binary)?;
    let debug = target_dir
        .join("debug/.build-id")
        .join(&build_id[..2])
        .join(format!("{}.debug", &build_id[2..]));
    std::fs::create_dir_all(debug.parent().expect("has a parent"))?;
    checked(
        crate::cmd::command("objcopy")
            .arg("--only-keep-debug")
            .arg(&binary)
            .arg(&debug),
    )?;
    checked(
        crate::cmd::command("objcopy")
            .arg("--strip-all")
            .arg(&binary),
    )
}

/// The GNU build id, as `readelf -n` prints it.
fn build_id(binary: &std::path::Path) -> Result<String> {
    let notes = crate::cmd::output(crate::cmd::command("readelf").arg("-n").arg(binary))?;
    String::from_utf8_lossy(&notes.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("Build ID: "))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{} has no build id", binary.display()))
}

/// Runs the target programs' own unit tests (in the leaky variant's build).
pub fn test_targets() -> Result<()> {
    checked(
        cargo()
            .args(["test", "--release", "--manifest-path", "tests/Cargo.toml"])
            .arg("--target-dir")
            .arg(Variant::Leaky.target_dir())
            .env("RUSTFLAGS", Variant::Leaky.rustflags()),
    )
}

/// Builds the observer (and its eBPF object) in the given profile.
pub fn build_observer(release: bool) -> Result<()> {
    println!("xtask: building the observer");
    let mut command = cargo();
    command.args(["build", "--package", "pool-observer"]);
    if release {
        command.arg("--release");
    }
    checked(&mut command)
}
