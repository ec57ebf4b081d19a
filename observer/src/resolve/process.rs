//! The target process as `/proc` shows it: is it there, what does it run,
//! what is mapped where.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::pid_namespace::{own_namespace_pid, ObserverNamespace};
use super::safe_file::{open_trusted, Refused, SafeFile, TargetRoot};
use crate::error::UserError;

/// A live process chosen by PID.
#[derive(Debug, Clone)]
pub struct Process {
    /// Its PID in the observer's PID namespace, as the user gave it.
    pub pid: u32,
    /// Its PID in its own PID namespace when that is not the observer's (a
    /// process in a container, observed from the host).
    pub namespace_pid: Option<u32>,
    /// What `/proc/PID/exe` points to, for people (may end in " (deleted)").
    pub exe_display: String,
    /// For a child we launched that has not run `exec` yet: the program
    /// it will run. Until then nothing of it is mapped, and `/proc/PID/exe`
    /// is still this observer.
    pub before_exec: Option<PathBuf>,
}

impl Process {
    /// Checks that `pid` names a running user-space process we may inspect.
    pub fn open(pid: u32) -> Result<Self> {
        // A PID means nothing if /proc counts another namespace's.
        ObserverNamespace::current()?;
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(UserError::new(format!(
                "no process with PID {pid}: check the number (e.g. `pgrep -f NAME`)"
            ))
            .into());
        }
        let exe_display = match fs::read_link(proc_dir.join("exe")) {
            Ok(target) => target.to_string_lossy().into_owned(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(UserError::new(format!(
                    "PID {pid} has no executable (a kernel thread or a zombie): attach to a user-space process"
                ))
                .into())
            }
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(UserError::new(refused_access(pid, may_inspect_any_process())).into())
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read /proc/{pid}/exe"));
            }
        };
        if let Some(tgid) = thread_group(pid).filter(|&tgid| tgid != pid) {
            return Err(UserError::new(format!(
                "{pid} is a thread of process {tgid}, not a process: attach to --pid {tgid}"
            ))
            .into());
        }
        Ok(Self {
            pid,
            namespace_pid: own_namespace_pid(pid),
            exe_display,
            before_exec: None,
        })
    }

    /// A child we forked that will `exec` `program` but has not yet: named
    /// after what it is about to run (in our own PID namespace, as every
    /// child we fork is).
    pub fn paused_child(pid: u32, program: &std::path::Path) -> Self {
        Self {
            pid,
            namespace_pid: None,
            exe_display: program.display().to_string(),
            before_exec: Some(program.to_path_buf()),
        }
    }

    /// A child we launched that has run `exec`: as `/proc` shows it, or,
    /// when it already exited (a command that fails at once), named after
    /// the program it ran, so that its session still reports.
    pub fn launched_child(pid: u32, program: &std::path::Path) -> Self {
        Self::open(pid).unwrap_or_else(|_| Self::paused_child(pid, program))
    }

    /// A path through which the kernel and we can open the very executable
    /// the process runs, even if it was deleted or lives in another mount
    /// namespace.
    pub fn exe_path(&self) -> PathBuf {
        match &self.before_exec {
            // The program we are about to run: we named it ourselves.
            Some(program) => program.clone(),
            None => PathBuf::from(format!("/proc/{}/exe", self.pid)),
        }
    }

    /// The executable's path as the process sees it (inside its root),
    /// when `/proc/PID/exe` names one: `$ORIGIN` for its dynamic linker.
    pub fn exe_path_in_root(&self) -> Option<PathBuf> {
        let path = self
            .exe_display
            .strip_suffix(" (deleted)")
            .unwrap_or(&self.exe_display);
        path.starts_with('/').then(|| PathBuf::from(path))
    }

    /// The value of `name` in the environment the process started with
    /// (`/proc/PID/environ`, read up to 1 MiB): what its dynamic linker
    /// read at start, whatever the program changed since.
    pub fn initial_env(&self, name: &str) -> Option<String> {
        use std::io::Read as _;
        let mut environ = Vec::new();
        fs::File::open(format!("/proc/{}/environ", self.pid))
            .ok()?
            .take(1 << 20)
            .read_to_end(&mut environ)
            .ok()?;
        let prefix = format!("{name}=");
        environ
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }

    /// The process's filesystem view and file-system credentials, inside
    /// which every path it names is opened (see [`TargetRoot`]).
    pub fn root(&self) -> Result<TargetRoot> {
        TargetRoot::of_process(self.pid)
            .with_context(|| format!("cannot open /proc/{}/root", self.pid))
    }

    /// True while the process exists and is not a zombie.
    pub fn is_alive(&self) -> bool {
        match fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => !matches!(process_state(&stat), Some('Z') | Some('X')),
            Err(_) => false,
        }
    }

    /// The executable, file-backed mappings.
    pub fn executable_mappings(&self) -> Result<Vec<Mapping>> {
        if self.before_exec.is_some() {
            // What is mapped is still this observer's image, not the
            // program's: the program's objects are all still to be loaded.
            return Ok(Vec::new());
        }
        let maps = fs::read_to_string(format!("/proc/{}/maps", self.pid))
            .with_context(|| format!("cannot read /proc/{}/maps", self.pid))?;
        Ok(maps
            .lines()
            .filter_map(Mapping::parse)
            .filter(|m| m.executable && m.path.starts_with('/'))
            .collect())
    }
}

/// Why `/proc/PID/exe` could not be read: missing privileges, or a kernel
/// that refuses even a process holding them.
fn refused_access(pid: u32, privileged: bool) -> String {
    if privileged {
        format!(
            "the kernel refuses access to PID {pid} even though this observer runs with \
             CAP_SYS_PTRACE (as root): the process is not dumpable, holds capabilities this \
             observer lacks, belongs to another user namespace or is protected by a security \
             module, so it cannot be observed"
        )
    } else {
        format!("not allowed to inspect PID {pid}: run as root or with CAP_SYS_PTRACE")
    }
}

/// True when this process holds CAP_SYS_PTRACE, which lets it inspect any
/// process the kernel does not protect beyond the usual checks.
fn may_inspect_any_process() -> bool {
    const CAP_SYS_PTRACE: u32 = 19;
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|effective| effective & (1 << CAP_SYS_PTRACE) != 0)
}

/// The process `id` belongs to (its own ID unless `id` names a thread:
/// `/proc` answers for thread IDs too).
fn thread_group(id: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{id}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// The state letter of `/proc/PID/stat` (after the parenthesised name,
/// which may itself contain spaces and parentheses).
fn process_state(stat: &str) -> Option<char> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.trim_start().chars().next()
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    pub executable: bool,
    pub inode: u64,
    pub path: String,
}

impl Mapping {
    /// Parses `start-end perms offset dev inode [path]`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_ascii_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let offset = fields.next()?;
        let _device = fields.next()?;
        let inode = fields.next()?.parse().ok()?;
        // The path is the rest of the line; it may contain spaces.
        let path = line
            .splitn(6, |c: char| c.is_ascii_whitespace())
            .nth(5)
            .map(str::trim)
            .unwrap_or("")
            .to_string();
        Some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            file_offset: u64::from_str_radix(offset, 16).ok()?,
            executable: perms.as_bytes().get(2) == Some(&b'x'),
            inode,
            path,
        })
    }

    pub fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// Opens the file behind this mapping of process `pid`: the kernel's
    /// own reference (`/proc/PID/map_files/START-END`), else the path as the
    /// target names it, inside its `root` (never the same path on the host).
    pub fn open_file(&self, pid: u32, root: Option<&TargetRoot>) -> Result<SafeFile, Refused> {
        let map_files = format!("/proc/{pid}/map_files/{:x}-{:x}", self.start, self.end);
        match (open_trusted(Path::new(&map_files)), root) {
            (Ok(file), _) => Ok(file),
            (Err(_), Some(root)) => root.open(Path::new(&self.path)),
            (Err(err), None) => Err(err),
        }
    }

    /// The file offset of `address`, which must be inside this mapping.
    pub fn file_offset_of(&self, address: u64) -> u64 {
        address - self.start + self.file_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let m = Mapping::parse(
            "55d0c0a00000-55d0c0b00000 r-xp 0003e000 fd:01 1234   /opt/my app/bin (deleted)",
        )
        .unwrap();
        assert_eq!(m.start, 0x55d0c0a00000);
        assert_eq!(m.file_offset, 0x3e000);
        assert!(m.executable);
        assert_eq!(m.inode, 1234);
        assert_eq!(m.path, "/opt/my app/bin (deleted)");
        assert_eq!(m.file_offset_of(0x55d0c0a00010), 0x3e010);
        let anon = Mapping::parse("7ffd0000-7ffd1000 rw-p 00000000 00:00 0").unwrap();
        assert!(!anon.executable);
        assert_eq!(anon.path, "");
    }

    #[test]
    fn state_after_a_name_with_parentheses() {
        assert_eq!(process_state("12 (a) b) S 1 2"), Some('S'));
        assert_eq!(process_state("12 (x) Z 1"), Some('Z'));
    }

    #[test]
    fn missing_pid_is_a_user_error() {
        let err = Process::open(u32::MAX - 1).unwrap_err();
        assert!(err.downcast_ref::<UserError>().is_some());
        assert!(err.to_string().contains("no process with PID"));
    }

    #[test]
    fn a_thread_id_is_not_a_process() {
        let (sender, receiver) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            sender.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = stopped.recv();
        });
        let tid = receiver.recv().unwrap();
        let err = Process::open(tid).unwrap_err();
        stop.send(()).unwrap();
        thread.join().unwrap();
        assert!(err.downcast_ref::<UserError>().is_some());
        let me = std::process::id();
        assert_eq!(
            err.to_string(),
            format!("{tid} is a thread of process {me}, not a process: attach to --pid {me}")
        );
    }

    #[test]
    fn refused_access_tells_privileges_from_protection() {
        assert_eq!(
            refused_access(7, false),
            "not allowed to inspect PID 7: run as root or with CAP_SYS_PTRACE"
        );
        let protected = refused_access(1, true);
        assert!(
            protected.starts_with("the kernel refuses access to PID 1 even though"),
            "{protected}"
        );
        assert!(protected.ends_with("so it cannot be observed"));
    }

    #[test]
    fn own_process_is_alive_and_mapped() {
        let me = Process::open(std::process::id()).unwrap();
        assert!(me.is_alive());
        let maps = me.executable_mappings().unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(maps.iter().any(|m| std::path::Path::new(&m.path) == exe));
    }
}
