//! The guest's initramfs: Debian's static arm64 busybox, the kernel's 9p
//! modules (decompressed, loaded in order by insmod) and an init that
//! mounts the root file system read-only and the output directory
//! read-write over 9p, the kernel's file systems the observer needs
//! (proc, sys, dev, tracefs, bpffs; tmpfs on /tmp and /run), then runs
//! the output directory's `guest.sh` in a chroot and powers off.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::cmd::{checked, command};

use super::rootfs::OUT_MOUNT;

/// The 9p tag of the repository, mounted read-only at its own path (where
/// the e2e test binary looks for the sources and the targets it names).
pub const REPO_TAG: &str = "repo";

/// Builds `into` (a gzip'd newc cpio archive) from the extracted busybox
/// and kernel packages: the modules `wanted` and what they depend on; its
/// init mounts `repo` (the repository's path) too.
pub fn build(
    busybox: &Path,
    kernel: &Path,
    wanted: &[&str],
    repo: &Path,
    into: &Path,
) -> Result<()> {
    let staging = into.with_extension("d");
    if staging.exists() {
        // Ours: left by an earlier build of this archive.
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    for dir in ["bin", "modules", "newroot"] {
        std::fs::create_dir_all(staging.join(dir))?;
    }
    std::fs::copy(busybox.join("bin/busybox"), staging.join("bin/busybox"))
        .context("the busybox-static package has no bin/busybox")?;
    let modules = super::modules::load_order(kernel, wanted)?;
    for module in &modules {
        super::modules::decompress(
            &module.file,
            &staging.join(format!("modules/{}.ko", module.name)),
        )?;
    }
    let names: Vec<&str> = modules.iter().map(|module| module.name.as_str()).collect();
    let init = staging.join("init");
    std::fs::write(&init, init_script(&names, repo))?;
    make_executable(&init)?;
    checked(
        command("sh")
            .arg("-c")
            .arg("find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > \"$0\"")
            .arg(into)
            .current_dir(&staging),
    )
    .context("cannot pack the initramfs")
}

fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// The init: every step that fails says so on the console. The tmpfs
/// mounts come before the repository's: a repository under /tmp (a clone
/// made there) would otherwise be hidden by the guest's own /tmp; its
/// mount point is made in the tmpfs then (elsewhere the read-only root
/// file system has it, see [`super::rootfs::mount_point`]).
fn init_script(modules: &[&str], repo: &Path) -> String {
    let nine_p = "-t 9p -o trans=virtio,version=9p2000.L";
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mkdir -p /proc /sys /dev\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         for module in {modules}; do insmod /modules/$module.ko || echo \"init: insmod $module failed\"; done\n\
         mount {nine_p},ro rootfs /newroot || echo 'init: cannot mount the root file system'\n\
         mount {nine_p} out /newroot{OUT_MOUNT} || echo 'init: cannot mount the output directory'\n\
         mount -t tmpfs tmpfs /newroot/tmp\n\
         mount -t tmpfs tmpfs /newroot/run\n\
         [ -d /newroot{repo} ] || mkdir -p /newroot{repo}\n\
         mount {nine_p},ro {REPO_TAG} /newroot{repo} || echo 'init: cannot mount the repository'\n\
         ip link set lo up || echo 'init: no loopback'\n\
         mount -t proc proc /newroot/proc\n\
         mount -t sysfs sysfs /newroot/sys\n\
         mount -t devtmpfs devtmpfs /newroot/dev\n\
         mount -t tracefs tracefs /newroot/sys/kernel/tracing\n\
         mount -t bpf bpf /newroot/sys/fs/bpf\n\
         chroot /newroot /bin/sh {OUT_MOUNT}/guest.sh\n\
         echo \"init: guest.sh exited with $?\"\n\
         sync\n\
         poweroff -f\n",
        modules = modules.join(" "),
        repo = repo.display(),
    )
}
