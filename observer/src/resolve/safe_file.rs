//! Opening files for an observer that runs as root next to processes it
//! does not trust.
//!
//! A target names files to the observer: the paths in its
//! `/proc/PID/maps`, its `.gnu_debuglink`, symbolic links inside its root.
//! Opened naively, such a path lets the target make root read the host's
//! `/etc/shadow`, hang on a FIFO, or fill memory from `/dev/zero`. So every
//! file read on a target's behalf is opened here, one of two ways:
//!
//! - [`TargetRoot::open`] for paths the target chose: resolved with
//!   `openat2(2)` and `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` relative to
//!   the target's root directory, so neither `..` nor an absolute symbolic
//!   link leaves it, and no `/proc` magic link is crossed (Linux ≥ 5.6;
//!   without `openat2` such paths are refused, never opened another way),
//!   with the target's file-system credentials, so a target that shares the
//!   host's root still cannot read through the observer what it could not
//!   read itself;
//! - [`open_trusted`] for paths the user gave (`--debug-file`, `observer
//!   inspect BINARY`, `observer run`'s program) and for the kernel's own
//!   references to a file (`/proc/PID/map_files/…`, `/proc/PID/exe`).
//!
//! Either way the path is first opened as an `O_PATH` handle, which opens
//! nothing: only when `fstat` on it shows a regular file within the bound is
//! that very inode opened for reading (through `/proc/self/fd`), with
//! `O_NONBLOCK | O_NOCTTY | O_CLOEXEC`. No FIFO, device or terminal is ever
//! opened, and files are read only up to [`MAX_FILE_BYTES`].

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The largest file the observer reads on anyone's behalf: 1 GiB.
///
/// Executables and debug files are read whole (symbols, DWARF, unwind
/// tables). Rust services built with full debug information reach a few
/// hundred MiB; the bound leaves room for those while capping what one
/// hostile file can make the observer allocate.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Flags every open here uses: never block on a FIFO or device, never
/// become the controlling terminal, never leak into a child.
const OPEN_FLAGS: libc::c_int = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// Why a file was not opened or read.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no such file")]
    Missing,
    #[error("a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("{size} bytes, over the {} MiB limit on files the observer reads", MAX_FILE_BYTES >> 20)]
    TooLarge { size: u64 },
    #[error(
        "too many symbolic links, or a /proc magic link, on the way (neither is followed for a target)"
    )]
    LinkLoop,
    #[error(
        "openat2(2) is unavailable (Linux ≥ 5.6 needed), so paths named by the target are not followed"
    )]
    NoOpenat2,
    #[error("the target's own user may not read it")]
    TargetMayNot,
    #[error("{0}")]
    Io(#[source] io::Error),
}

impl Refused {
    /// True when there simply was nothing there (the usual outcome for
    /// most candidate paths, not worth reporting).
    pub fn is_missing(&self) -> bool {
        matches!(self, Refused::Missing)
    }

    /// The same, for a file opened with a target's credentials: a denied
    /// permission is the target's, not ours.
    fn for_target(self) -> Self {
        match &self {
            Refused::Io(err)
                if matches!(err.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) =>
            {
                Refused::TargetMayNot
            }
            _ => self,
        }
    }

    pub(crate) fn from_open_error(err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Refused::Missing,
            Some(libc::ELOOP) => Refused::LinkLoop,
            Some(libc::ENOSYS) => Refused::NoOpenat2,
            _ => Refused::Io(err),
        }
    }
}

/// A regular file, opened safely, no larger than [`MAX_FILE_BYTES`] when
/// it was opened.
#[derive(Debug)]
pub struct SafeFile {
    file: File,
    size: u64,
    device: u64,
    inode: u64,
}

impl SafeFile {
    /// Checks what `file` really is (its descriptor, not a path).
    fn checked(file: File) -> Result<Self, Refused> {
        let metadata = file.metadata().map_err(Refused::Io)?;
        let kind = metadata.file_type();
        if !kind.is_file() {
            return Err(Refused::NotRegular(describe_type(&kind)));
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(Refused::TooLarge {
                size: metadata.len(),
            });
        }
        Ok(Self {
            file,
            size: metadata.len(),
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The inode, as `fstat` gave it when the file was opened.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The device, as `fstat` gave it when the file was opened.
    pub fn device(&self) -> u64 {
        self.device
    }

    /// The open file, for holding on to it.
    pub fn into_file(self) -> File {
        self.file
    }

    /// A path that reopens exactly this file (`/proc/self/fd/N`), for
    /// libraries that want a path; valid while `self` lives.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// The whole file, read from its start; refused if it grew past
    /// [`MAX_FILE_BYTES`] since it was opened. The allocation never
    /// exceeds the bound, whatever size the file claims.
    pub fn read_all(&self) -> Result<Vec<u8>, Refused> {
        self.read_at_most(MAX_FILE_BYTES)
    }

    fn read_at_most(&self, limit: u64) -> Result<Vec<u8>, Refused> {
        let mut data = Vec::with_capacity(self.size.min(limit) as usize);
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let offset = data.len() as u64;
            let n = match self.file.read_at(&mut chunk, offset) {
                Ok(0) => return Ok(data),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(Refused::Io(err)),
            };
            if offset + n as u64 > limit {
                return Err(Refused::TooLarge {
                    size: offset + n as u64,
                });
            }
            data.extend_from_slice(&chunk[..n]);
        }
    }
}

fn describe_type(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// A file that exists only in memory, holding `bytes`, sealed so that
/// nothing (not even we) can change or truncate it: for handing derived
/// bytes to a library that wants a path (`/proc/self/fd/N`).
pub fn sealed_memory_file(name: &str, bytes: &[u8]) -> io::Result<File> {
    use std::io::Write as _;
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create returns
    // a new descriptor or -1.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Opens a path the user gave, or one of the kernel's own references to a
/// file (`/proc/PID/map_files/START-END`, `/proc/PID/exe`): symbolic links
/// are followed, but the result must be a regular file within the bound.
pub fn open_trusted(path: &Path) -> Result<SafeFile, Refused> {
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map_err(Refused::from_open_error)?;
    open_for_reading(handle.into())
}

/// Turns a handle (`O_PATH`: nothing was opened for reading yet, so no
/// device or FIFO saw an open) into a readable regular file, checking what
/// it is before opening it.
fn open_for_reading(handle: OwnedFd) -> Result<SafeFile, Refused> {
    let handle = File::from(handle);
    let checked = SafeFile::checked(handle)?;
    // Reopening through /proc/self/fd opens exactly the inode the handle
    // holds, with the permission checks of the calling thread.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(checked.fd_path())
        .map_err(Refused::from_open_error)?;
    let reopened = SafeFile::checked(file)?;
    if (reopened.device, reopened.inode) != (checked.device, checked.inode) {
        return Err(Refused::Io(io::Error::other(
            "the file changed while opening",
        )));
    }
    Ok(reopened)
}

/// A directory inside which untrusted names are resolved — the root of a
/// target's filesystem view (`/proc/PID/root`), or a trusted directory
/// whose entries a target names — and the credentials to open them with.
#[derive(Debug)]
pub struct TargetRoot {
    directory: OwnedFd,
    /// For messages: `/proc/PID/root`, `/` or the directory.
    display: PathBuf,
    credentials: Credentials,
}

impl TargetRoot {
    /// The root of process `pid` (its chroot or mount namespace included),
    /// opened with its file-system credentials, so that it cannot read
    /// through the observer a file it could not read itself (a target
    /// sharing the host's root still names host files).
    pub fn of_process(pid: u32) -> io::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let credentials = Credentials::parse(&status)
            .ok_or_else(|| io::Error::other(format!("no credentials in /proc/{pid}/status")))?;
        Self::at(Path::new(&format!("/proc/{pid}/root")), credentials)
    }

    /// The observer's own root, with its own credentials: for a program it
    /// is about to run and files the user named (their debug links are
    /// still only the file's say, so they are confined all the same).
    pub fn host() -> io::Result<Self> {
        Self::confined_to(Path::new("/"))
    }

    /// A trusted directory (a debug directory) whose entries are named by
    /// a target: resolved inside it, with the observer's credentials.
    pub fn confined_to(directory: &Path) -> io::Result<Self> {
        Self::at(directory, Credentials::own()?)
    }

    fn at(path: &Path, credentials: Credentials) -> io::Result<Self> {
        // O_PATH: a handle on the directory for openat2, nothing more. The
        // magic link /proc/PID/root itself is the kernel's and is followed.
        let directory = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self {
            directory: directory.into(),
            display: path.to_path_buf(),
            credentials,
        })
    }

    /// Where paths are resolved, for messages.
    pub fn display(&self) -> &Path {
        &self.display
    }

    /// Opens `path` as the target would see it, confined to its root: `..`
    /// stops at the root, absolute symbolic links start from it, /proc
    /// magic links are refused, and permissions are checked with the
    /// target's credentials. Needs openat2(2) (Linux ≥ 5.6); without it the
    /// answer is [`Refused::NoOpenat2`], never a less careful open.
    pub fn open(&self, path: &Path) -> Result<SafeFile, Refused> {
        let relative = path.strip_prefix("/").unwrap_or(path);
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let name = CString::new(relative.as_os_str().as_bytes())
            .map_err(|_| Refused::Io(io::Error::from(io::ErrorKind::InvalidInput)))?;
        self.credentials
            .run_as(|| {
                let handle =
                    openat2_in_root(&self.directory, &name).map_err(Refused::from_open_error)?;
                open_for_reading(handle)
            })?
            .map_err(Refused::for_target)
    }
}

/// File-system credentials: who the kernel checks permissions for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credentials {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl Credentials {
    fn own() -> io::Result<Self> {
        let status = std::fs::read_to_string("/proc/thread-self/status")?;
        Self::parse(&status).ok_or_else(|| io::Error::other("no credentials in our own status"))
    }

    /// The file-system uid and gid (fourth of the `Uid:`/`Gid:` fields)
    /// and the supplementary groups of a `/proc/PID/status`.
    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
        let fourth =
            |name: &str| -> Option<u32> { field(name)?.split_whitespace().nth(3)?.parse().ok() };
        let groups = field("Groups:")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()
            .ok()?;
        Some(Self {
            uid: fourth("Uid:")?,
            gid: fourth("Gid:")?,
            groups,
        })
    }

    /// Runs `open` with these credentials: directly when they are ours,
    /// else on a short-lived thread that takes them on (Linux credentials
    /// are per thread; the thread ends with the open, so nothing else ever
    /// runs with them, and ours are never changed).
    fn run_as<T: Send>(&self, open: impl FnOnce() -> T + Send) -> Result<T, Refused> {
        if Credentials::own().is_ok_and(|own| own == *self) {
            return Ok(open());
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.assume_on_this_thread()?;
                    Ok(open())
                })
                .join()
                .unwrap_or_else(|_| Err(Refused::Io(io::Error::other("opening thread panicked"))))
        })
    }

    fn assume_on_this_thread(&self) -> Result<(), Refused> {
        let cannot = |what: &str| {
            Refused::Io(io::Error::other(format!(
                "cannot take on the target's {what} to open its files (needs root or CAP_SETUID/CAP_SETGID)"
            )))
        };
        // SAFETY: raw system calls that change only the calling thread's
        // credentials (glibc's setgroups would change every thread's);
        // `groups` outlives the call and its length is passed.
        let groups =
            unsafe { libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) };
        if groups != 0 {
            return Err(cannot("groups"));
        }
        // SAFETY: setfsgid/setfsuid change only this thread's file-system
        // ids; calling each twice reads back the value now in force.
        let (gid, uid) = unsafe {
            libc::setfsgid(self.gid);
            let gid = libc::setfsgid(self.gid);
            libc::setfsuid(self.uid);
            (gid, libc::setfsuid(self.uid))
        };
        if gid as libc::gid_t != self.gid {
            return Err(cannot("group"));
        }
        if uid as libc::uid_t != self.uid {
            return Err(cannot("user"));
        }
        Ok(())
    }
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(root, name, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
/// (a handle only: what it is gets checked before it is opened), retried
/// when the kernel reports a concurrent rename that could have let the
/// walk escape (EAGAIN).
fn openat2_in_root(root: &OwnedFd, name: &CString) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    for _ in 0..16 {
        // SAFETY: `root` is an open directory descriptor, `name` a valid
        // NUL-terminated string and `how` a fully initialised open_how whose
        // size is passed; the kernel reads both and returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                name.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root with `inside/data` (a regular file) and hostile links.
    fn planted_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("inside")).unwrap();
        std::fs::write(root.path().join("inside/data"), b"inside").unwrap();
        root
    }

    fn mkfifo(path: &Path) {
        let name = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `name` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_file_inside_the_root_is_read() {
        let dir = planted_root();
        let root = TargetRoot::confined_to(dir.path()).unwrap();
        let file = root.open(Path::new("/inside/data")).unwrap();
        assert_eq!(file.read_all().unwrap(), b"inside");
        let relative = root.open(Path::new("inside/data")).unwrap();
        assert_eq!(relative.inode(), file.inode());
    }

    #[test]
    fn absolute_links_and_dot_dots_stay_inside_the_root() {
        let dir = planted_root();
        // A host file with the same relative name as the one inside.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host").unwrap();
        symlink(outside.path().join("secret"), dir.path().join("absolute")).unwrap();
        let climb = format!("../../../../../../..{}", outside.path().display());
        symlink(format!("{climb}/secret"), dir.path().join("climbing")).unwrap();
        let root = TargetRoot::confined_to(dir.path()).unwrap();
        for path in ["/absolute", "/climbing", &format!("{climb}/secret")] {
            let err = root.open(Path::new(path)).unwrap_err();
            assert!(err.is_missing(), "{path}: {err}");
        }
        // The same absolute link resolves to the root's own copy when there is one.
        let inner = dir.path().join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(inner.join("secret"), b"inside copy").unwrap();
        let file = root.open(Path::new("/absolute")).unwrap();
        assert_eq!(file.read_all().unwrap(), b"inside copy");
    }

    #[test]
    fn magic_links_are_not_crossed() {
        let dir = planted_root();
        symlink("/proc/self/root/etc/passwd", dir.path().join("magic")).unwrap();
        let root = TargetRoot::host().unwrap();
        let inside = dir.path().join("magic");
        let err = root.open(&inside).unwrap_err();
        assert!(matches!(err, Refused::LinkLoop), "{err}");
    }

    #[test]
    fn a_target_reads_only_what_its_own_user_may() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = planted_root();
        let mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        mode(dir.path(), 0o755);
        mode(&dir.path().join("inside"), 0o755);
        mode(&dir.path().join("inside/data"), 0o644);
        let canary_dir = tempfile::tempdir().unwrap();
        let canary = canary_dir.path().join("canary");
        std::fs::write(&canary, b"root only").unwrap();
        mode(&canary, 0o600);
        mode(canary_dir.path(), 0o755);
        symlink(&canary, dir.path().join("inside/link")).unwrap();
        let nobody = Credentials {
            uid: 65534,
            gid: 65534,
            groups: Vec::new(),
        };
        let as_nobody = TargetRoot::at(Path::new("/"), nobody).unwrap();
        let inside = dir.path().join("inside");
        let err = as_nobody.open(&inside.join("link")).unwrap_err();
        assert!(matches!(err, Refused::TargetMayNot), "{err}");
        let data = as_nobody.open(&inside.join("data")).unwrap();
        assert_eq!(data.read_all().unwrap(), b"inside");
        // The observer's own credentials were never changed.
        assert_eq!(std::fs::read(&canary).unwrap(), b"root only");
        assert!(TargetRoot::host()
            .unwrap()
            .open(&inside.join("link"))
            .is_ok());
    }

    #[test]
    fn credentials_come_from_the_status_file() {
        let status =
            "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t20\t21\t22\t23\nGroups:\t4 27 \n";
        assert_eq!(
            Credentials::parse(status),
            Some(Credentials {
                uid: 1003,
                gid: 23,
                groups: vec![4, 27]
            })
        );
        assert_eq!(Credentials::parse("Uid:\t1\n"), None);
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = planted_root();
        mkfifo(&dir.path().join("fifo"));
        let root = TargetRoot::confined_to(dir.path()).unwrap();
        let err = root.open(Path::new("/fifo")).unwrap_err();
        assert!(matches!(err, Refused::NotRegular("FIFO")), "{err}");
        let err = open_trusted(&dir.path().join("fifo")).unwrap_err();
        assert!(matches!(err, Refused::NotRegular("FIFO")), "{err}");
        let err = open_trusted(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(err, Refused::NotRegular("character device")),
            "{err}"
        );
        let err = root.open(Path::new("/inside")).unwrap_err();
        assert!(matches!(err, Refused::NotRegular("directory")), "{err}");
        assert!(open_trusted(&dir.path().join("none"))
            .unwrap_err()
            .is_missing());
    }

    #[test]
    fn files_over_the_bound_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = File::create(&path).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let err = open_trusted(&path).unwrap_err();
        assert!(
            matches!(err, Refused::TooLarge { size } if size == MAX_FILE_BYTES + 1),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_grows_past_the_bound_after_opening_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing");
        std::fs::write(&path, b"small").unwrap();
        let opened = open_trusted(&path).unwrap();
        assert_eq!(opened.read_at_most(8).unwrap(), b"small");
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(16)
            .unwrap();
        let err = opened.read_at_most(8).unwrap_err();
        assert!(matches!(err, Refused::TooLarge { size: 16 }), "{err}");
    }

    #[test]
    fn memory_files_are_sealed() {
        let file = sealed_memory_file("test", b"bytes").unwrap();
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes");
        assert!(file.set_len(1).is_err(), "cannot shrink");
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(
            std::io::Write::write_all(&mut writer, b"x").is_err(),
            "cannot write"
        );
    }

    #[test]
    fn the_fd_path_reopens_the_same_file() {
        let dir = planted_root();
        let file = open_trusted(&dir.path().join("inside/data")).unwrap();
        assert_eq!(std::fs::read(file.fd_path()).unwrap(), b"inside");
    }
}
