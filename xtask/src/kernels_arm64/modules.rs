//! The kernel modules the guest loads for 9p, taken from the kernel
//! package: found by name, put in load order from their own `depends`
//! field (`modinfo`; the package ships no modules.dep, depmod makes it at
//! install), and decompressed for busybox's insmod.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{checked, command, output};

/// A module file of the package.
pub struct Module {
    pub name: String,
    pub file: PathBuf,
}

/// `wanted` and every module they depend on, dependencies first.
pub fn load_order(kernel: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    let mut order = Vec::new();
    for name in wanted {
        visit(kernel, name, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

fn visit(kernel: &Path, name: &str, path: &mut Vec<String>, order: &mut Vec<Module>) -> Result<()> {
    if order.iter().any(|module| module.name == name) {
        return Ok(());
    }
    if path.iter().any(|seen| seen == name) {
        bail!(
            "modules depend on each other in a cycle: {}",
            path.join(" -> ")
        );
    }
    let file = find(kernel, name)?;
    path.push(name.to_string());
    for dependency in depends(&file)? {
        visit(kernel, &dependency, path, order)?;
    }
    path.pop();
    order.push(Module {
        name: name.to_string(),
        file,
    });
    Ok(())
}

/// The module's `depends` field, by name.
fn depends(file: &Path) -> Result<Vec<String>> {
    let info = output(command("modinfo").args(["-F", "depends"]).arg(file))?;
    if !info.status.success() {
        bail!(
            "modinfo cannot read {}: {}",
            file.display(),
            String::from_utf8_lossy(&info.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&info.stdout)
        .trim()
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect())
}

/// `NAME.ko` (possibly compressed) under the package's modules tree.
fn find(kernel: &Path, name: &str) -> Result<PathBuf> {
    let tops = [kernel.join("lib/modules"), kernel.join("usr/lib/modules")];
    let mut pending: Vec<PathBuf> = tops.into_iter().filter(|dir| dir.exists()).collect();
    let wanted = format!("{name}.ko");
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|file| {
                let file = file.to_string_lossy();
                file == wanted
                    || file
                        .strip_prefix(&wanted)
                        .is_some_and(|ext| ext.starts_with('.'))
            }) {
                return Ok(path);
            }
        }
    }
    bail!("the kernel package has no module {name}")
}

/// Copies a module to `to`, decompressing `.xz` and `.zst` (busybox's
/// insmod takes plain ELF).
pub fn decompress(from: &Path, to: &Path) -> Result<()> {
    let tool = match from.extension().and_then(|ext| ext.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        _ => {
            std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
            return Ok(());
        }
    };
    let out = std::fs::File::create(to)?;
    checked(command(tool).args(["-dc"]).arg(from).stdout(out))
        .with_context(|| format!("cannot decompress {}", from.display()))
}
