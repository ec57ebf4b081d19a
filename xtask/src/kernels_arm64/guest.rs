//! One boot of an arm64 kernel under `qemu-system-aarch64 -M virt -cpu
//! max,pauth-impdef=on` with software emulation (this machine has no
//! usable KVM, and is not arm64), and the script it runs: `observer
//! doctor`, then `observer run` on each target build with `auto`
//! locations, each result line appended to `results.txt` in the output
//! directory.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::cmd::{command, root};

use super::initramfs::REPO_TAG;
use super::rootfs::OUT_MOUNT;
use super::target::{LEAKS, ROUNDS, VARIANTS};

/// Longest a VM may run before it counts as hung: the pool runs, the demo
/// and six end-to-end tests, every instruction emulated. Measured: 245–459
/// s, 718 s with one test hung until its own 300 s timeout, on a loaded
/// machine. Twenty minutes keeps `cargo xtask test` (about 51 minutes
/// before the arm64 step) inside CI's 90 even when a VM hangs for good.
const VM_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The last line the script writes.
pub const DONE: &str = "guest: done";

/// The locations given to `observer run`: every one `auto`, inferred
/// from the C program's DWARF with arm64's registers (the end-to-end
/// tests give theirs explicitly); [`super::findings`] checks what was
/// inferred.
pub const LOCATIONS: &[&str] = &[
    "--alloc",
    "pool_get",
    "--size",
    "auto",
    "--alloc-id",
    "auto",
    "--release",
    "pool_put",
    "--release-id",
    "auto",
];

/// Writes `guest.sh` into `out` (mounted at [`OUT_MOUNT`] in the guest):
/// doctor, the pool runs, README's demo, then the kernel-side end-to-end
/// tests with `e2e`, the cross-built test binary (a path in `out/bin`).
pub fn write_script(out: &Path, e2e: &Path) -> Result<()> {
    let mut script = format!(
        "cd {OUT_MOUNT}\nexport HOME={OUT_MOUNT} TMPDIR=/tmp PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         echo \"kernel: $(uname -r -m)\" >> results.txt\n\
         ./bin/observer doctor > doctor.txt 2>&1; echo \"doctor: exit $?\" >> results.txt\n"
    );
    for variant in &VARIANTS {
        let name = variant.name;
        script.push_str(&format!(
            "started=$(date +%s)\n\
             ./bin/observer run {locations} --format json -o report-{name}.json \
             -- ./bin/{name} {ROUNDS} {LEAKS} > run-{name}.log 2>&1\n\
             echo \"run {name}: exit $? in $(( $(date +%s) - started )) s\" >> results.txt\n",
            locations = LOCATIONS.join(" "),
        ));
    }
    let observer = format!("{OUT_MOUNT}/bin/observer");
    script.push_str(&super::demo::script(&observer));
    let e2e = Path::new(OUT_MOUNT).join(e2e.strip_prefix(out)?);
    script.push_str(&super::e2e::script(&e2e, &observer));
    script.push_str(&format!("echo '{DONE}' >> results.txt\n"));
    std::fs::write(out.join("guest.sh"), script)
        .with_context(|| format!("cannot write {}/guest.sh", out.display()))
}

/// Boots `vmlinuz` with `initrd`, the root file system, the repository
/// (read-only: the tests read its sources, the targets are in its
/// `target/`) and `out` shared over 9p; the console goes to
/// `out/console.log`. Returns how long the VM ran.
pub fn boot(vmlinuz: &Path, initrd: &Path, rootfs: &Path, out: &Path) -> Result<Duration> {
    let started = Instant::now();
    let console = std::fs::File::create(out.join("console.log"))?;
    let virtfs = |path: &Path, tag: &str, extra: &str| {
        format!(
            "local,path={},mount_tag={tag},security_model=none{extra}",
            path.display()
        )
    };
    // At the priority of everything else, as the x86-64 VMs: at nice 19
    // a VM got a few percent of a core next to any normal-priority work
    // and its tests' waits ran out (docs/arm64.md, "Hangs").
    let status = command("timeout")
        .args(["-k", "10"])
        .arg(VM_TIMEOUT.as_secs().to_string())
        .args([
            "qemu-system-aarch64",
            "-M",
            "virt",
            "-cpu",
            "max,pauth-impdef=on",
        ])
        .args(["-smp", "1", "-m", "2G", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyAMA0 rdinit=/init panic=-1 quiet"])
        .arg("-virtfs")
        .arg(virtfs(rootfs, "rootfs", ",readonly=on"))
        .arg("-virtfs")
        .arg(virtfs(&root(), REPO_TAG, ",readonly=on"))
        .arg("-virtfs")
        .arg(virtfs(out, "out", ""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-aarch64")
        .and_then(|mut child| {
            // Through a pipe: QEMU garbles a regular file as its stdout.
            let mut pipe = child.stdout.take().context("no stdout")?;
            let mut console = console;
            std::io::copy(&mut pipe, &mut console)?;
            Ok(child.wait()?)
        })?;
    let took = started.elapsed();
    println!(
        "kernels (aarch64): the VM ran {:.0} s ({status})",
        took.as_secs_f64()
    );
    Ok(took)
}
