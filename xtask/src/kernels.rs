//! `cargo xtask kernels`: the end-to-end tests that matter for the kernel
//! side, run in throw-away VMs booted with Debian's long-term kernels (the
//! host's root file system shared read-only, one writable directory for
//! results), because a verifier that accepts the programs on this kernel
//! may refuse them on the ones production runs.
//!
//! Everything comes from the registries this machine reaches and is cached
//! under `~/.cache/pool-observer/kernels`: Debian's `qemu-system-x86`,
//! `busybox-static`, `kmod` and `udev`; virtme-ng from PyPI in a private
//! virtualenv; the kernel packages, fetched with a private apt
//! configuration that leaves the host's sources untouched. KVM is not usable
//! on these machines (the machine is itself a VM), so QEMU emulates: a boot
//! takes tens of seconds, and the tests run one VM at a time with a subset
//! chosen to fit CI's time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::arch::Arch;
use crate::cmd::{cargo, checked, command, output, root};
use crate::targets::{corpus_dir, targets_dir, Variant};

/// One kernel of the matrix.
struct Kernel {
    /// For people, and the cache directory.
    name: &'static str,
    /// The Debian suite carrying it.
    suite: &'static str,
    /// Regex of the image package (newest wins).
    package: &'static str,
    expect: Expect,
}

/// What the observer must do on a kernel.
#[derive(Clone, Copy)]
enum Expect {
    /// Pass these end-to-end tests (filters, each run on its own).
    Works(&'static [&'static str]),
    /// Refuse to start with one line containing this.
    Refuses(&'static str),
}

/// The kernel side, tested on each kernel that can run it: the demo's
/// exact report, the corpus on a stock build, the CI gate, detaching,
/// panics through a probed allocate (repaired on these kernels, which
/// are not locked down), and libc's allocator through its preset (several
/// functions' locations per probe, realloc, an allocator's own calls).
pub(crate) const KERNEL_SIDE: &[&str] = &[
    "allocators::preset_libc_gives_the_exact_leak_through_realloc_and_memalign",
    "leak_report::disconnect_leak_is_reported_by_allocating_stack",
    "corpus::stock_build_without_debug_info",
    "ci_gate::leaky_gateway_fails_the_run_with_the_disconnect_site",
    "detach::detaching_leaves_no_probe_behind",
    "panics::panics_caught_by_catch_unwind_leave_the_target_running",
    "panics::repaired_uretprobes_let_panics_unwind",
];

const MATRIX: [Kernel; 3] = [
    Kernel {
        name: "5.10",
        suite: "bullseye",
        package: r"^linux-image-5\.10\.0-[0-9]+-amd64$",
        expect: Expect::Refuses("Linux 5.15"),
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
        package: r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        expect: Expect::Works(KERNEL_SIDE),
    },
    Kernel {
        name: "6.12",
        suite: "bookworm-backports",
        package: r"^linux-image-6\.12\.[0-9.]+\+deb12-amd64$",
        expect: Expect::Works(KERNEL_SIDE),
    },
];

/// README's generated table of tested kernels.
const README_SECTION: &str = "cargo xtask kernels --update-readme";

/// Longest a VM may run before it counts as hung.
const VM_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// Runs the matrix (or the kernels named in `only`) with `dist`, the static
/// binary, as the observer; the targets and the corpus must be built.
/// Each kernel's results stay in `target/kernels/<kernel>/`, the table in
/// `target/kernels/matrix.md`.
pub fn run(only: &[String], dist: &Path, update_readme: bool) -> Result<()> {
    let cache = cache_dir()?;
    ensure_packages()?;
    let virtme = ensure_virtme(&cache)?;
    let e2e = e2e_binary(Arch::host())?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for kernel in MATRIX
        .iter()
        .filter(|k| only.is_empty() || only.iter().any(|o| o == k.name))
    {
        let started = Instant::now();
        let image = fetch_kernel(&cache, kernel)?;
        let outcome = run_kernel(&virtme, &image, kernel, dist, &e2e);
        let took = started.elapsed();
        let line = match &outcome {
            Ok(summary) => format!(
                "| {} | {} | ok | {summary} | {:.0} s |",
                kernel.name,
                image.release,
                took.as_secs_f64()
            ),
            Err(err) => {
                failed.push(kernel.name);
                format!(
                    "| {} | {} | FAILED | {err:#} | {:.0} s |",
                    kernel.name,
                    image.release,
                    took.as_secs_f64()
                )
            }
        };
        println!("{line}");
        rows.push(line);
    }
    let table = format!(
        "| kernel | package | result | what ran | time |\n|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("\n{table}");
    std::fs::write(results_root().join("matrix.md"), &table)?;
    if update_readme && failed.is_empty() {
        crate::cmd::replace_readme_section(
            README_SECTION,
            &format!(
                "Run by `cargo xtask kernels --update-readme` on {}: each kernel booted by \
                 virtme-ng in QEMU without KVM (every instruction emulated; 1 CPU, 2 GiB) on \
                 this host's root file system, with the static binary of `cargo xtask dist` \
                 copied alone into an empty directory as the observer. Costs under emulation \
                 tell kernels apart, not what a real CPU pays (see the cost table).\n\n{table}",
                crate::bench::today()
            ),
        )?;
        println!("README.md's kernel table updated");
    }
    if !failed.is_empty() {
        bail!("the kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

/// `~/.cache/pool-observer/kernels`, created if missing.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let dir = Path::new(&home).join(".cache/pool-observer/kernels");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Debian's QEMU and what virtme-ng needs in the guest.
fn ensure_packages() -> Result<()> {
    ensure_host_packages(
        "kernels",
        &[
            ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
            ("busybox-static", "/bin/busybox"),
            ("kmod", "/usr/bin/kmod"),
            ("udev", "/usr/bin/udevadm"),
        ],
    )
}

/// Installs the Debian packages of `packages` (package, a file it
/// provides) whose file is missing; `apt-get update` only when one is.
/// `who` says, for people, which task installs them.
pub(crate) fn ensure_host_packages(who: &str, packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("{who}: installing {}", missing.join(" "));
    checked(command("apt-get").args(["update", "-qq"]))?;
    checked(
        command("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// virtme-ng in a private virtualenv; returns `virtme-run`.
fn ensure_virtme(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join("venv");
    let run = venv.join("bin/virtme-run");
    if run.exists() {
        return Ok(run);
    }
    println!("kernels: installing virtme-ng");
    checked(command("python3").args(["-m", "venv"]).arg(&venv))?;
    checked(
        command(venv.join("bin/pip").to_str().context("path")?).args([
            "install",
            "-q",
            "virtme-ng",
        ]),
    )?;
    Ok(run)
}

/// Where the VMs' results are kept.
pub(crate) fn results_root() -> PathBuf {
    root().join("target/kernels")
}

/// A fresh results directory for `kernel`, writable by the VM, holding the
/// static observer copied alone into an empty directory (`bin/`): what
/// someone copying it to a host would have.
fn prepare_results(kernel: &Kernel, dist: &Path) -> Result<(PathBuf, PathBuf)> {
    let out = results_root().join(kernel.name);
    if out.exists() {
        // Ours: made by an earlier run of this function.
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("cannot remove {}", out.display()))?;
    }
    for dir in ["tmp", "bin"] {
        std::fs::create_dir_all(out.join(dir))
            .with_context(|| format!("cannot create {}", out.join(dir).display()))?;
    }
    let observer = out.join("bin/observer");
    std::fs::copy(dist, &observer)
        .with_context(|| format!("cannot copy {} into the VM's directory", dist.display()))?;
    Ok((out, observer))
}

/// The end-to-end test binary for `arch`, built now.
///
/// For another processor it is built as that processor's static binary of
/// `cargo xtask dist` is (release, its musl target, dist's target
/// directory, without the workspace's flags), so the dependencies dist
/// compiled are reused: the test's dev-dependencies enable no other
/// feature of them. A cold debug build for the glibc target took 742 s;
/// after dist, this one compiles only the two workspace crates, the
/// test and libtest-mimic. Static, it runs on any root file system.
///
/// Its `observer` (the test's `CARGO_BIN_EXE_observer`) replaces dist's
/// as cargo's copy in `<target>/release/`; harmless: dist publishes its
/// own copy before this runs, and cargo puts its build back there at
/// dist's next build, even one with nothing to compile.
pub(crate) fn e2e_binary(arch: Arch) -> Result<PathBuf> {
    let mut build = cargo();
    build
        .args(["test", "-p", "pool-observer", "--test", "e2e", "--no-run"])
        .args(["--message-format", "json"]);
    if arch != Arch::host() {
        let target = arch.musl_target();
        build
            .args(["--release", "--target", target])
            .arg("--target-dir")
            .arg(crate::dist::target_dir())
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        arch.cross_link(&mut build, target)?;
    }
    let built = output(&mut build)?;
    if !built.status.success() {
        bail!(
            "cannot build the end-to-end tests: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "e2e")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo did not name the e2e test binary")
}

/// An extracted kernel package.
struct Image {
    release: String,
    vmlinuz: PathBuf,
}

/// Downloads (once) and extracts the newest image package of the kernel.
fn fetch_kernel(cache: &Path, kernel: &Kernel) -> Result<Image> {
    let dir = cache.join(kernel.name);
    if let Some(image) = extracted(&dir)? {
        return Ok(image);
    }
    let apt = cache.join(format!("apt-{}", kernel.suite));
    private_apt(&apt, kernel.suite)?;
    let found = output(command("apt-cache").args(apt_options(&apt)).args([
        "search",
        "--names-only",
        kernel.package,
    ]))?;
    let mut packages: Vec<String> = String::from_utf8_lossy(&found.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .filter(|name| !name.contains("-dbg") && !name.contains("unsigned"))
        .collect();
    packages.sort_by_key(|name| version_key(name));
    let package = packages
        .last()
        .with_context(|| format!("no package matches {} in {}", kernel.package, kernel.suite))?;
    println!("kernels: downloading {package} ({})", kernel.suite);
    std::fs::create_dir_all(&dir)?;
    checked(
        command("apt-get")
            .args(apt_options(&apt))
            .args(["download", package])
            .current_dir(&dir),
    )?;
    let deb = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("the download left no .deb")?;
    checked(
        command("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")),
    )?;
    // virtme-run looks for the modules next to the kernel: ROOT/lib/modules.
    let usr_modules = dir.join("root/usr/lib/modules");
    let lib = dir.join("root/lib");
    if usr_modules.exists() && !lib.join("modules").exists() {
        std::fs::create_dir_all(&lib)?;
        std::os::unix::fs::symlink("../usr/lib/modules", lib.join("modules"))?;
    }
    extracted(&dir)?.context("the package has no /boot/vmlinuz")
}

/// A numeric sort key of a package name (`linux-image-6.1.0-57-amd64`).
pub(crate) fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect()
}

fn extracted(dir: &Path) -> Result<Option<Image>> {
    let boot = dir.join("root/boot");
    let Ok(entries) = std::fs::read_dir(&boot) else {
        return Ok(None);
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok(Some(Image {
                release: release.to_string(),
                vmlinuz: path.clone(),
            }));
        }
    }
    Ok(None)
}

/// An apt configuration of its own for `suite`, on the host's mirror.
fn private_apt(dir: &Path, suite: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join("lists/partial"))?;
    std::fs::create_dir_all(dir.join("cache/archives/partial"))?;
    std::fs::create_dir_all(dir.join("none"))?;
    std::fs::write(dir.join("sources.list"), sources(suite))?;
    checked(
        command("apt-get")
            .args(apt_options(dir))
            .args(["update", "-qq"]),
    )
}

/// The suite with its updates and security archives (where the newest
/// kernel packages of a stable release are), on Debian's mirror.
pub(crate) fn sources(suite: &str) -> String {
    let keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
    let mut lines = vec![format!(
        "deb {keyring} http://deb.debian.org/debian {suite} main"
    )];
    if !suite.ends_with("-backports") {
        lines.push(format!(
            "deb {keyring} http://deb.debian.org/debian {suite}-updates main"
        ));
        lines.push(format!(
            "deb {keyring} http://deb.debian.org/debian-security {suite}-security main"
        ));
    }
    lines.join("\n") + "\n"
}

fn apt_options(dir: &Path) -> Vec<String> {
    let at = |name: &str| dir.join(name).display().to_string();
    vec![
        "-o".into(),
        format!("Dir::Etc::sourcelist={}", at("sources.list")),
        "-o".into(),
        format!("Dir::Etc::sourceparts={}", at("none")),
        "-o".into(),
        format!("Dir::State::Lists={}", at("lists")),
        "-o".into(),
        format!("Dir::Cache={}", at("cache")),
        "-o".into(),
        "APT::Sandbox::User=root".into(),
    ]
}

/// Boots the kernel with a script that runs what the kernel is expected to
/// do, and checks the results it left in the writable directory.
fn run_kernel(
    virtme: &Path,
    image: &Image,
    kernel: &Kernel,
    dist: &Path,
    e2e: &Path,
) -> Result<String> {
    let (out, observer) = prepare_results(kernel, dist)?;
    // The VM runs copies: a build during the matrix (it takes minutes)
    // replaces the files in target/, and a replaced xtask binary's own path
    // then ends in " (deleted)", which no shell line can run.
    let e2e = frozen_copy(e2e, "e2e", &out)?;
    // This very binary, readable through /proc even once replaced.
    let xtask = frozen_copy(Path::new("/proc/self/exe"), "xtask", &out)?;
    let script = guest_script(kernel, &out, &observer, &e2e, &xtask)?;
    std::fs::write(out.join("guest.sh"), script)?;
    let status = command("timeout")
        .args(["-k", "10", &VM_TIMEOUT.as_secs().to_string()])
        .arg(virtme)
        .arg("--kimg")
        .arg(&image.vmlinuz)
        .args([
            "--mods",
            "auto",
            "--memory",
            "2G",
            "--cpus",
            "1",
            "--disable-kvm",
        ])
        .arg("--rwdir")
        .arg(&out)
        .arg("--script-sh")
        .arg(format!("sh {}/guest.sh", out.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(out.join("console.log"))?)
        .stderr(std::process::Stdio::null())
        .status()
        .context("cannot start virtme-run")?;
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let results = read("results.txt");
    if !results.contains("guest: done") {
        bail!(
            "the VM did not finish ({status}); console: {}",
            read("console.log")
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let summary = check_results(kernel, &results)?;
    match kernel.expect {
        Expect::Works(_) => Ok(format!(
            "{summary}; {}; {}",
            doctor_findings(&read("doctor.txt")),
            bench_summary(&read("bench.jsonl"))?
        )),
        Expect::Refuses(_) => Ok(summary),
    }
}

/// What `observer doctor` found about the probes' cost on this kernel.
fn doctor_findings(doctor: &str) -> String {
    let found = |what: &str| {
        doctor
            .lines()
            .find(|line| line.contains(what))
            .map_or("?", |line| {
                if line.trim_start().starts_with("yes") {
                    "yes"
                } else {
                    "no"
                }
            })
    };
    format!(
        "push emulated: {}, uretprobe syscall: {}, writing user memory: {}",
        found("emulated at a probe site"),
        found("uretprobe system call"),
        found("writing user memory")
    )
}

/// The quick benchmark's floors and ratios, from its JSON lines.
fn bench_summary(lines: &str) -> Result<String> {
    let cells: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let median = |label: &str| {
        cells
            .iter()
            .find(|c| c["cell"].as_str().is_some_and(|l| l.ends_with(label)))
            .and_then(|c| c["median_ns"].as_f64())
    };
    let ratio = |label: &str| {
        cells
            .iter()
            .find(|c| c["cell"].as_str().is_some_and(|l| l.ends_with(label)))
            .and_then(|c| c["ratio_to_floor"].as_f64())
    };
    let (Some(alone), Some(uret_floor), Some(site_floor)) = (
        median("nothing"),
        median("probe floor (uretprobe)"),
        median("probe floor (call-sites)"),
    ) else {
        bail!("the benchmark gave no results (see bench.log)");
    };
    let (Some(uret), Some(sites)) = (
        ratio("observer (uretprobe, dwarf walker)"),
        ratio("observer (call-sites, dwarf walker)"),
    ) else {
        bail!("the benchmark gave no observer results (see bench.log)");
    };
    Ok(format!(
        "probe floor per pair over the program alone (emulated CPU): uretprobe {:.1} µs, \
         call sites {:.1} µs; observer {uret:.2}× / {sites:.2}× the floor",
        (uret_floor - alone) / 1000.0,
        (site_floor - alone) / 1000.0
    ))
}

/// `binary` copied into the VM's `bin/` directory under `out`, as `name`.
fn frozen_copy(binary: &Path, name: &str, out: &Path) -> Result<PathBuf> {
    let copy = out.join("bin").join(name);
    std::fs::copy(binary, &copy)
        .with_context(|| format!("cannot copy {} into the VM's directory", binary.display()))?;
    Ok(copy)
}

fn guest_script(
    kernel: &Kernel,
    out: &Path,
    observer: &Path,
    e2e: &Path,
    xtask: &Path,
) -> Result<String> {
    let out = out.display();
    let mut script = format!(
        "ip link set lo up\ncd {root}\nexport HOME={out} TMPDIR={out}/tmp OBSERVER_BIN={observer}\n\
         export OBSERVER_TARGETS_DIR={targets} OBSERVER_FIXED_TARGETS_DIR={fixed} OBSERVER_CORPUS_DIR={corpus}\n\
         {observer} doctor > {out}/doctor.txt 2>&1; echo \"doctor: exit $?\" >> {out}/results.txt\n",
        root = root().display(),
        observer = observer.display(),
        targets = targets_dir(Variant::Leaky).display(),
        fixed = targets_dir(Variant::Fixed).display(),
        corpus = corpus_dir().display(),
    );
    match kernel.expect {
        Expect::Works(tests) => {
            for test in tests {
                script.push_str(&format!(
                    "{e2e} --exact {test} > {out}/e2e.log 2>&1; echo \"test {test}: exit $?\" >> {out}/results.txt; \
                     grep -E 'test result|ignored|panicked' {out}/e2e.log | head -3 >> {out}/results.txt\n",
                    e2e = e2e.display()
                ));
            }
            script.push_str(&format!(
                "{xtask} bench --quick-with {observer} --results {out}/bench.jsonl > {out}/bench.log 2>&1; \
                 echo \"bench: exit $?\" >> {out}/results.txt\n",
                xtask = xtask.display(),
                observer = observer.display()
            ));
        }
        Expect::Refuses(_) => {
            script.push_str(&format!(
                "{observer} attach --pid 1 --alloc a --size 8 --alloc-id ret --release r --release-id arg0 \
                 > /dev/null 2> {out}/refusal.txt; echo \"attach: exit $?\" >> {out}/results.txt; \
                 sed 's/^/refusal: /' {out}/refusal.txt >> {out}/results.txt\n",
                observer = observer.display()
            ));
        }
    }
    script.push_str(&format!("echo 'guest: done' >> {out}/results.txt\n"));
    Ok(script)
}

fn check_results(kernel: &Kernel, results: &str) -> Result<String> {
    match kernel.expect {
        Expect::Works(tests) => {
            let failed: Vec<&str> = tests
                .iter()
                .filter(|test| !results.contains(&format!("test {test}: exit 0")))
                .copied()
                .collect();
            if !failed.is_empty() {
                bail!(
                    "failed: {}; results: {}",
                    failed.join(", "),
                    results.replace('\n', " | ")
                );
            }
            let ignored = results.lines().filter(|l| l.contains("ignored (")).count();
            Ok(format!(
                "{} kernel-side tests passed ({ignored} ignored)",
                tests.len()
            ))
        }
        Expect::Refuses(words) => {
            let refusal: Vec<&str> = results
                .lines()
                .filter_map(|l| l.strip_prefix("refusal: "))
                .collect();
            let one_line = refusal.len() == 1 && refusal[0].contains(words);
            if !results.contains("doctor: exit 2")
                || !results.contains("attach: exit 2")
                || !one_line
            {
                bail!(
                    "expected a one-line refusal naming {words} (exit 2); results: {}",
                    results.replace('\n', " | ")
                );
            }
            Ok(format!("refused at start in one line: {}", refusal[0]))
        }
    }
}
