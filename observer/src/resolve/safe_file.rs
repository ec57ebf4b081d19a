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
//!   without `openat2` such paths are refused, never opened another way);
//! - [`open_trusted`] for paths the user gave (`--debug-file`, `observer
//!   inspect BINARY`, `observer run`'s program) and for the kernel's own
//!   references to a file (`/proc/PID/map_files/…`, `/proc/PID/exe`).
//!
//! Either way the result must be a regular file (checked with `fstat` on
//! the opened descriptor, so it cannot be swapped in between), is opened
//! with `O_NONBLOCK | O_NOCTTY | O_CLOEXEC` (opening a FIFO or a terminal
//! never blocks or adopts it), and is read only up to [`MAX_FILE_BYTES`].

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
    #[error("{0}")]
    Io(#[source] io::Error),
}

impl Refused {
    /// True when there simply was nothing there (the usual outcome for
    /// most candidate paths, not worth reporting).
    pub fn is_missing(&self) -> bool {
        matches!(self, Refused::Missing)
    }

    fn from_open_error(err: io::Error) -> Self {
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

/// Opens a path the user gave, or one of the kernel's own references to a
/// file (`/proc/PID/map_files/START-END`, `/proc/PID/exe`): symbolic links
/// are followed, but the result must be a regular file within the bound.
pub fn open_trusted(path: &Path) -> Result<SafeFile, Refused> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
        .map_err(Refused::from_open_error)?;
    SafeFile::checked(file)
}

/// The root directory of a target's filesystem view (`/proc/PID/root`),
/// inside which every path the target names is resolved.
#[derive(Debug)]
pub struct TargetRoot {
    directory: OwnedFd,
    /// For messages: `/proc/PID/root` or `/`.
    display: PathBuf,
}

impl TargetRoot {
    /// The root of process `pid` (its chroot or mount namespace included).
    pub fn of_process(pid: u32) -> io::Result<Self> {
        Self::at(Path::new(&format!("/proc/{pid}/root")))
    }

    /// The observer's own root, for programs it is about to run and files
    /// the user named (their debug links are still the file's say).
    pub fn host() -> io::Result<Self> {
        Self::at(Path::new("/"))
    }

    fn at(path: &Path) -> io::Result<Self> {
        // O_PATH: a handle on the directory for openat2, nothing more. The
        // magic link /proc/PID/root itself is the kernel's and is followed.
        let directory = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self {
            directory: directory.into(),
            display: path.to_path_buf(),
        })
    }

    /// Where paths are resolved, for messages.
    pub fn display(&self) -> &Path {
        &self.display
    }

    /// Opens `path` as the target would see it, confined to its root: `..`
    /// stops at the root, absolute symbolic links start from it, and /proc
    /// magic links are refused. Needs openat2(2) (Linux ≥ 5.6); without it
    /// the answer is [`Refused::NoOpenat2`], never a less careful open.
    pub fn open(&self, path: &Path) -> Result<SafeFile, Refused> {
        let relative = path.strip_prefix("/").unwrap_or(path);
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let name = CString::new(relative.as_os_str().as_bytes())
            .map_err(|_| Refused::Io(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let fd = openat2_in_root(&self.directory, &name).map_err(Refused::from_open_error)?;
        SafeFile::checked(File::from(fd))
    }
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(root, name, O_RDONLY | OPEN_FLAGS, RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS)`, retried when the kernel reports a concurrent
/// rename that could have let the walk escape (EAGAIN).
fn openat2_in_root(root: &OwnedFd, name: &CString) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (libc::O_RDONLY | OPEN_FLAGS) as u64,
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
        let root = TargetRoot::at(dir.path()).unwrap();
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
        let root = TargetRoot::at(dir.path()).unwrap();
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
        let root = TargetRoot::at(Path::new("/")).unwrap();
        let inside = dir.path().join("magic");
        let err = root.open(&inside).unwrap_err();
        assert!(matches!(err, Refused::LinkLoop), "{err}");
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = planted_root();
        mkfifo(&dir.path().join("fifo"));
        let root = TargetRoot::at(dir.path()).unwrap();
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
        assert!(open_trusted(&dir.path().join("none")).unwrap_err().is_missing());
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
    fn the_fd_path_reopens_the_same_file() {
        let dir = planted_root();
        let file = open_trusted(&dir.path().join("inside/data")).unwrap();
        assert_eq!(std::fs::read(file.fd_path()).unwrap(), b"inside");
    }
}
