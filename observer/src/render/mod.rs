//! Stage 7 — render a report for a person (text), a machine (JSON), a
//! flame graph tool (folded) or a profiler (pprof), and deliver it to
//! stdout or a file.

pub mod chart;
pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod json;
pub mod pprof;
pub mod text;

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::analyse::Report;
use crate::error::UserError;

/// Output format of reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// For a person.
    Text,
    /// One line of JSON per report (docs/report-format.md).
    Json,
    /// One `outermost;…;innermost bytes` line per site, for flame graph tools.
    Folded,
    /// A gzipped pprof profile (`go tool pprof`, Pyroscope, Parca): binary,
    /// so written to `--output FILE` (or a redirected stdout).
    Pprof,
}

impl Format {
    /// True for formats whose output is not text (never sent to a
    /// terminal, and base64-encoded over the control socket).
    pub fn is_binary(self) -> bool {
        matches!(self, Format::Pprof)
    }
}

/// Renders and delivers reports.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub format: Format,
    /// Replace this file with each report; stdout when `None`.
    pub output: Option<PathBuf>,
    /// Sites shown in text reports.
    pub top: usize,
    /// Frames shown per site in text reports.
    pub frames: usize,
}

impl Reporter {
    /// The report in this reporter's format (UTF-8 text, except pprof).
    pub fn render(&self, report: &Report) -> Result<Vec<u8>> {
        Ok(match self.format {
            Format::Text => text::render(report, self.top, self.frames).into_bytes(),
            Format::Json => json::render(report)?.into_bytes(),
            Format::Folded => folded::render(report).into_bytes(),
            Format::Pprof => pprof::render(report)?,
        })
    }

    /// Writes `report`: to stdout (a JSON report is one line, so a stream of
    /// reports is JSON Lines), or atomically replacing the output file.
    pub fn emit(&self, report: &Report) -> Result<()> {
        deliver(self.output.as_deref(), &self.render(report)?)
    }
}

/// Writes `contents` to `output` (replacing it atomically) or to stdout.
pub fn deliver(output: Option<&Path>, contents: &[u8]) -> Result<()> {
    match output {
        Some(path) => replace_file(path, contents),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(contents)?;
            stdout.flush().context("writing the report to stdout")
        }
    }
}

/// Refuses to send `format`'s binary output to a terminal, where it would
/// only garble the screen: the user should redirect it or name a file.
pub fn check_binary_destination(format: Format, output: Option<&Path>) -> Result<()> {
    use std::io::IsTerminal as _;
    if format.is_binary() && output.is_none() && std::io::stdout().is_terminal() {
        return Err(UserError::new(
            "--format pprof writes a binary profile: give --output FILE, or redirect stdout to a file",
        )
        .into());
    }
    Ok(())
}

/// Replaces `path` with `contents` so that a reader never sees half a
/// report, and so that nobody who can write to its directory can turn the
/// write against another file: the contents go to a fresh temporary file
/// with an unpredictable name, created exclusively in the same directory
/// (`O_CREAT | O_EXCL`: an existing name or a planted symbolic link is never
/// opened), which is then renamed over `path` (a symbolic link at `path` is
/// replaced, not followed). On failure only that temporary file is removed.
pub fn replace_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut temporary = temporary_next_to(path)?;
    let written = temporary
        .write_all(contents)
        .and_then(|()| temporary.flush())
        .with_context(|| format!("cannot write {}", temporary.path().display()));
    if let Err(err) = written {
        remove_own_temporary(temporary);
        return Err(err);
    }
    temporary.persist(path).map(drop).map_err(|err| {
        let message = format!("cannot replace {} ({})", path.display(), err.error);
        remove_own_temporary(err.file);
        anyhow::anyhow!(message)
    })
}

/// Checks, before anything is attached, that each report destination can be
/// written the way [`replace_file`] writes it: not a directory, in an
/// existing directory where a temporary file can be created (one is, and
/// removed again). The error names the option and says what to do.
pub fn check_destinations(destinations: &[(&str, Option<&Path>)]) -> Result<()> {
    for (option, path) in destinations {
        if let Some(path) = path {
            check_destination(option, path)?;
        }
    }
    Ok(())
}

fn check_destination(option: &str, path: &Path) -> Result<()> {
    let problem = |what: String| -> anyhow::Error {
        UserError::new(format!("{option} {}: {what}", path.display())).into()
    };
    if path.is_dir() {
        return Err(problem(
            "is a directory: give a file name to write to".into(),
        ));
    }
    let directory = directory_of(path);
    if !directory.is_dir() {
        return Err(problem(format!(
            "directory {} does not exist: create it or choose another path",
            directory.display()
        )));
    }
    let probe = temporary_next_to(path).map_err(|err| {
        problem(format!(
            "cannot create a file in {} ({}): choose a writable directory",
            directory.display(),
            err.root_cause()
        ))
    })?;
    remove_own_temporary(probe);
    Ok(())
}

/// The directory `path` is in (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A new, exclusively created file with a random name beside `path`.
/// Mode 0666 less the umask, as a file written any other way would get.
fn temporary_next_to(path: &Path) -> Result<tempfile::NamedTempFile> {
    let directory = directory_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(directory)
        .with_context(|| format!("cannot create a temporary file in {}", directory.display()))
}

/// Removes the temporary file, but only if its name still leads to the
/// file we created: someone who can write to the directory may have put
/// something else there, and that is not ours to delete.
fn remove_own_temporary(temporary: tempfile::NamedTempFile) {
    let Ok((file, name)) = temporary.keep() else {
        return;
    };
    let ours = file.metadata().ok();
    let there = std::fs::symlink_metadata(&name).ok();
    if let (Some(ours), Some(there)) = (ours, there) {
        if (ours.dev(), ours.ino()) == (there.dev(), there.ino()) {
            let _ = std::fs::remove_file(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        replace_file(&path, b"one").unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names_in(dir.path()), ["report.json"]);
    }

    #[test]
    fn planted_links_are_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim_dir = tempfile::tempdir().unwrap();
        let victim = victim_dir.path().join("root-only");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("report.json");
        // The old predictable temporary name, and the destination itself.
        symlink(&victim, dir.path().join("report.json.tmp")).unwrap();
        symlink(&victim, &path).unwrap();
        replace_file(&path, b"report").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), b"report");
        assert_eq!(
            std::fs::read_link(dir.path().join("report.json.tmp")).unwrap(),
            victim,
            "what someone else put there stays"
        );
    }

    #[test]
    fn a_failed_replace_removes_only_its_own_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        let err = replace_file(&path, b"report").unwrap_err();
        assert!(err.to_string().contains("cannot replace"), "{err:#}");
        assert_eq!(names_in(dir.path()), ["taken"]);
        assert_eq!(names_in(&path), ["inside"]);
    }

    #[test]
    fn bad_destinations_are_named_with_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/report.json");
        let cases = [
            (missing.as_path(), "does not exist"),
            (dir.path(), "is a directory"),
        ];
        for (path, expected) in cases {
            let err = check_destinations(&[("--chart", Some(path))]).unwrap_err();
            let user = err.downcast_ref::<UserError>().expect("a user error");
            let text = user.to_string();
            assert!(text.starts_with("--chart "), "{text}");
            assert!(text.contains(expected), "{text}");
        }
        let fine = dir.path().join("chart.svg");
        check_destinations(&[("--output", Some(&fine)), ("--flamegraph", None)]).unwrap();
        assert!(names_in(dir.path()).is_empty(), "the check leaves nothing");
    }

    #[test]
    fn an_unwritable_directory_is_found_before_writing() {
        // Root writes anywhere; a read-only file system stops it too.
        let err =
            check_destinations(&[("--output", Some(Path::new("/proc/report.json")))]).unwrap_err();
        let text = err.downcast_ref::<UserError>().unwrap().to_string();
        assert!(text.contains("cannot create a file in /proc"), "{text}");
    }
}
