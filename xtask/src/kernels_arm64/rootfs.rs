//! The guest's root file system: a minimal Debian bookworm for arm64 made
//! by debootstrap (`--variant=minbase`) with [`INCLUDE`]'s packages, cached
//! until what it is built from changes. Its first stage unpacks
//! on this machine; the second runs the packages' arm64 scripts in a
//! chroot, which takes qemu-user through binfmt_misc. Registering an
//! interpreter is host-wide: when qemu-aarch64 is not enabled already it
//! is enabled for the second stage only, said so, and disabled again.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{checked, command};

/// Debian's mirror, as for the kernel packages.
const MIRROR: &str = "http://deb.debian.org/debian";
/// Debian's archive keys: debootstrap checks the suite's Release with them.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The suite of the root file system.
const SUITE: &str = "bookworm";
/// Where the guest's init mounts the writable output directory.
pub const OUT_MOUNT: &str = "/out";
/// Packages beyond minbase. `libc6-dbg`: glibc's separate debug files
/// (`/usr/lib/debug/.build-id/…`), which the observer finds inside the
/// target's root by build id. Debian's arm64 libc.so.6 is stripped of its
/// local symbols, so without them a thread's outermost frames
/// (`start_thread`, `thread_start` of `clone3.S`) have no name; with them
/// the guest names them as a user's machine with the package does.
const INCLUDE: &[&str] = &["libc6-dbg"];

/// The root file system under `cache`, built when missing, left
/// unfinished by an interrupted build, or built from other packages than
/// these (its marker file records what it was built from).
pub fn ensure(cache: &Path) -> Result<PathBuf> {
    let rootfs = cache.join("aarch64-rootfs");
    let done = cache.join("aarch64-rootfs.done");
    let recipe = recipe();
    let built_from = std::fs::read_to_string(&done).ok();
    if built_from.as_deref() == Some(recipe.as_str()) {
        return Ok(rootfs);
    }
    if rootfs.exists() {
        // Ours: made by an earlier run of this function, which stopped
        // before writing `done`, or built from another recipe.
        println!(
            "kernels (aarch64): removing {} ({})",
            rootfs.display(),
            if built_from.is_some() {
                "built from other packages"
            } else {
                "unfinished"
            }
        );
        // The marker goes first: a removal that stops half-way leaves an
        // unfinished tree, which the next run removes again.
        if built_from.is_some() {
            std::fs::remove_file(&done)
                .with_context(|| format!("cannot remove {}", done.display()))?;
        }
        std::fs::remove_dir_all(&rootfs)
            .with_context(|| format!("cannot remove {}", rootfs.display()))?;
    }
    let started = std::time::Instant::now();
    first_stage(&rootfs)?;
    second_stage(&rootfs)?;
    std::fs::create_dir_all(rootfs.join(OUT_MOUNT.trim_start_matches('/')))?;
    std::fs::write(&done, &recipe).with_context(|| format!("cannot write {}", done.display()))?;
    println!(
        "kernels (aarch64): root file system built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(rootfs)
}

/// Makes `path` (absolute) a directory in `rootfs`, for the guest's init
/// to mount something at: the root file system is mounted read-only.
pub fn mount_point(rootfs: &Path, path: &Path) -> Result<()> {
    let inside = rootfs.join(path.strip_prefix("/").unwrap_or(path));
    std::fs::create_dir_all(&inside).with_context(|| format!("cannot create {}", inside.display()))
}

/// What the root file system is built from, as its marker file records
/// it: a change here rebuilds it.
fn recipe() -> String {
    format!(
        "debootstrap --arch=arm64 --variant=minbase --include={} {SUITE} {MIRROR}\n",
        INCLUDE.join(",")
    )
}

fn first_stage(rootfs: &Path) -> Result<()> {
    println!(
        "kernels (aarch64): debootstrap --foreign {SUITE} arm64 (minbase, with {})",
        INCLUDE.join(", ")
    );
    checked(
        command("debootstrap")
            .args(["--foreign", "--arch=arm64", "--variant=minbase"])
            .arg(format!("--include={}", INCLUDE.join(",")))
            .arg(format!("--keyring={KEYRING}"))
            .arg(SUITE)
            .arg(rootfs)
            .arg(MIRROR),
    )
    .context("debootstrap's first stage failed")
}

fn second_stage(rootfs: &Path) -> Result<()> {
    let binfmt = Binfmt::enable()?;
    println!("kernels (aarch64): debootstrap --second-stage under qemu-user");
    let result = checked(
        command("chroot")
            .arg(rootfs)
            .args(["/debootstrap/debootstrap", "--second-stage"]),
    )
    .context("debootstrap's second stage failed");
    binfmt.restore()?;
    result
}

/// The binfmt_misc registration of qemu-aarch64, and what this run changed
/// to have it.
struct Binfmt {
    mounted: bool,
    enabled: bool,
}

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
const BINFMT_ENTRY: &str = "/proc/sys/fs/binfmt_misc/qemu-aarch64";

impl Binfmt {
    /// Makes arm64 executables run through qemu-user, recording what had
    /// to change.
    fn enable() -> Result<Binfmt> {
        let mut state = Binfmt {
            mounted: false,
            enabled: false,
        };
        if !Path::new(BINFMT_DIR).join("register").exists() {
            println!(
                "kernels (aarch64): mounting binfmt_misc on {BINFMT_DIR} (host-wide, undone after)"
            );
            checked(command("mount").args(["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR]))?;
            state.mounted = true;
        }
        let enabled = std::fs::read_to_string(BINFMT_ENTRY)
            .is_ok_and(|entry| entry.lines().next() == Some("enabled"));
        if enabled {
            println!("kernels (aarch64): qemu-aarch64 already enabled in binfmt_misc");
        } else {
            println!("kernels (aarch64): enabling qemu-aarch64 in binfmt_misc (host-wide, for the second stage only)");
            let enabling = checked(command("update-binfmts").args(["--enable", "qemu-aarch64"]));
            if let Err(err) = enabling {
                state.restore()?;
                return Err(err);
            }
            state.enabled = true;
        }
        if !Path::new(BINFMT_ENTRY).exists() {
            state.restore()?;
            bail!("{BINFMT_ENTRY} is missing after enabling it");
        }
        Ok(state)
    }

    /// Undoes what [`Binfmt::enable`] changed.
    fn restore(self) -> Result<()> {
        if self.enabled {
            println!("kernels (aarch64): disabling qemu-aarch64 in binfmt_misc again");
            checked(command("update-binfmts").args(["--disable", "qemu-aarch64"]))?;
        }
        if self.mounted {
            checked(command("umount").arg(BINFMT_DIR))?;
        }
        Ok(())
    }
}
