//! Debian's arm64 packages on this x86-64 machine, without touching the
//! host's dpkg: a private apt configuration (`APT_CONFIG`) whose only
//! architecture is arm64, with its own sources, lists, cache and an empty
//! status file, under the kernels' cache. apt checks each suite's signed
//! Release file against Debian's archive keyring, as for the host.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::cmd::{checked, command, output};

/// A private apt for arm64 packages of one Debian suite.
pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// Writes the configuration under `cache` (once) and refreshes the
    /// suite's package lists.
    pub fn open(cache: &Path, suite: &str) -> Result<Apt> {
        let dir = cache.join(format!("apt-arm64-{suite}"));
        for sub in ["lists/partial", "cache/archives/partial", "none"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        std::fs::write(dir.join("sources.list"), crate::kernels::sources(suite))?;
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        std::fs::write(dir.join("apt.conf"), config(&dir))?;
        let apt = Apt { dir };
        checked(apt.command("apt-get").args(["update", "-qq"]))
            .with_context(|| format!("cannot refresh the arm64 lists of {suite}"))?;
        Ok(apt)
    }

    /// The newest package whose name matches `pattern` (a regex), leaving
    /// out debug and unsigned images.
    pub fn newest(&self, pattern: &str) -> Result<String> {
        let found = output(
            self.command("apt-cache")
                .args(["search", "--names-only", pattern]),
        )?;
        let mut names: Vec<String> = String::from_utf8_lossy(&found.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next().map(str::to_string))
            .filter(|name| !name.contains("-dbg") && !name.contains("unsigned"))
            .collect();
        names.sort_by_key(|name| crate::kernels::version_key(name));
        names
            .pop()
            .with_context(|| format!("no arm64 package matches {pattern}"))
    }

    /// Downloads `package` into `dir` (which must be empty or new) and
    /// extracts it into `dir/root`.
    pub fn download_and_extract(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        println!("kernels (aarch64): downloading {package}");
        checked(
            self.command("apt-get")
                .args(["download", "-qq", package])
                .current_dir(dir),
        )?;
        let deb = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .with_context(|| format!("downloading {package} left no .deb"))?;
        let root = dir.join("root");
        checked(command("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        Ok(root)
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut command = command(program);
        command.env("APT_CONFIG", self.dir.join("apt.conf"));
        command
    }
}

/// The configuration: arm64 only, every directory apt writes or reads
/// state from inside `dir`.
fn config(dir: &Path) -> String {
    let at = |name: &str| dir.join(name).display().to_string();
    format!(
        "APT::Architecture \"arm64\";\n\
         APT::Architectures {{ \"arm64\"; }};\n\
         APT::Sandbox::User \"root\";\n\
         Dir::Etc::sourcelist \"{}\";\n\
         Dir::Etc::sourceparts \"{}\";\n\
         Dir::State::Lists \"{}\";\n\
         Dir::State::status \"{}\";\n\
         Dir::Cache \"{}\";\n",
        at("sources.list"),
        at("none"),
        at("lists"),
        at("status"),
        at("cache"),
    )
}
