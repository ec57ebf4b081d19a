//! The observer runs as root next to processes it does not trust: files it
//! writes cannot be redirected by whoever can write to their directory,
//! files a target names (its debug link) cannot make it read the host's
//! secrets, hang or fill memory, and its control socket neither deletes
//! what is not its own nor lets one client hold it up.

use std::ffi::CString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The corpus's pool spec (`deep` mode).
const DEEP: [&str; 10] = [
    "--alloc",
    "bufpool::BufPool::allocate",
    "--size",
    RESULT_SIZE,
    "--alloc-id",
    RESULT_ID,
    "--release",
    "bufpool::BufPool::release",
    "--release-id",
    "*arg1",
];
const LEAKS: i64 = 25;

fn corpus_dir() -> PathBuf {
    std::env::var_os("OBSERVER_CORPUS_DIR")
        .map(PathBuf::from)
        .expect("OBSERVER_CORPUS_DIR is not set: run the tests with `cargo xtask test`")
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fresh directory that the unprivileged target may enter.
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o755);
    dir
}

/// A root-only file (mode 0600) standing for the host's secrets.
fn canary(dir: &Path) -> PathBuf {
    let path = dir.join("canary");
    std::fs::write(&path, b"root only").unwrap();
    set_mode(&path, 0o600);
    path
}

/// Watches `path` for opens and reads: true once the observer touched it.
struct OpenWatch(std::os::fd::OwnedFd);

impl OpenWatch {
    fn new(path: &Path) -> Self {
        use std::os::fd::FromRawFd as _;
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let name = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `fd` is our inotify descriptor, `name` a valid C string.
        let watch =
            unsafe { libc::inotify_add_watch(fd, name.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) };
        assert!(watch >= 0);
        // SAFETY: the fd is new and owned by nothing else.
        Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    fn touched(&self) -> bool {
        let mut file = std::fs::File::from(self.0.try_clone().unwrap());
        let mut events = [0u8; 4096];
        matches!(file.read(&mut events), Ok(n) if n > 0)
    }
}

/// A copy of the stock (no DWARF) `leak-corpus` in its own directory whose
/// `.gnu_debuglink` names `leak-corpus.debug`, which `plant` then turns
/// into something hostile; run as nobody, like an untrusted service.
struct HostileTarget {
    _dir: tempfile::TempDir,
    child: Guarded,
    stdin: ChildStdin,
    stdout: std::io::Lines<BufReader<ChildStdout>>,
}

impl HostileTarget {
    fn start(plant: impl FnOnce(&Path)) -> Self {
        let dir = shared_tempdir();
        let binary = dir.path().join("leak-corpus");
        let link = dir.path().join("leak-corpus.debug");
        // objcopy reads the named file for the CRC: a regular one first.
        std::fs::write(&link, b"placeholder").unwrap();
        let status = Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", link.display()))
            .arg(corpus_dir().join("corpus-stock/release/leak-corpus"))
            .arg(&binary)
            .status()
            .expect("objcopy (binutils)");
        assert!(status.success());
        set_mode(&binary, 0o755);
        std::fs::remove_file(&link).unwrap();
        plant(&link);
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary)
            .arg("deep")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the hostile target");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(stdout.next().unwrap().unwrap(), "ready");
        Self {
            _dir: dir,
            child: Guarded(child),
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn run(&mut self) {
        self.stdin.write_all(b"go\n").unwrap();
        let done = self.stdout.next().unwrap().unwrap();
        assert!(done.starts_with("done"), "{done}");
    }
}

/// Observes the hostile target: the observer must attach, report the leak
/// (symbol names from the binary itself) and say why the link was not
/// used. Returns the executable's debug-info entry and the report's warnings.
fn observe_hostile(plant: impl FnOnce(&Path)) -> (Value, Vec<String>) {
    let mut target = HostileTarget::start(plant);
    let mut observer = Observer::attach_with(target.pid(), &DEEP, &[]);
    target.run();
    let report = observer.report();
    let (status, _) = observer.stop();
    assert!(status.success());
    let leak = &sites(&report)[0];
    assert_eq!(int(&leak["buffers"]), LEAKS, "{report:#}");
    assert!(
        has_frame(leak, "leak_corpus::parser::Parser::parse_value"),
        "{leak:#}"
    );
    let exe = report["debug_info"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["module"].as_str().unwrap().ends_with("/leak-corpus"))
        .expect("the executable's debug info")
        .clone();
    assert_eq!(exe["source"], "none", "{exe:#}");
    let warnings = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    (exe, warnings)
}

fn rejection(exe: &Value) -> String {
    let rejected = exe["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len(), 1, "{exe:#}");
    let line = rejected[0].as_str().unwrap().to_string();
    assert!(line.starts_with("debug link target "), "{line}");
    assert!(line.contains("/leak-corpus.debug"), "{line}");
    line
}

pub fn a_debug_link_to_a_fifo_neither_hangs_nor_stops_the_session() {
    let (exe, warnings) = observe_hostile(|link| {
        let name = CString::new(link.as_os_str().as_bytes()).unwrap();
        // SAFETY: `name` is a valid C string.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o666) }, 0);
    });
    assert!(
        rejection(&exe).ends_with("a FIFO, not a regular file"),
        "{exe:#}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("a FIFO")),
        "{warnings:?}"
    );
}

pub fn a_debug_link_to_a_root_only_host_file_is_not_opened() {
    let secrets = shared_tempdir();
    let canary = canary(secrets.path());
    let watch = OpenWatch::new(&canary);
    let (exe, _) = observe_hostile(|link| symlink(&canary, link).unwrap());
    assert!(
        rejection(&exe).ends_with("the target's own user may not read it"),
        "{exe:#}"
    );
    assert!(!watch.touched(), "the observer opened the canary");
    assert_eq!(std::fs::read(&canary).unwrap(), b"root only");
}

pub fn a_debug_link_to_dev_zero_is_not_read() {
    let (exe, _) = observe_hostile(|link| symlink("/dev/zero", link).unwrap());
    assert!(
        rejection(&exe).ends_with("a character device, not a regular file"),
        "{exe:#}"
    );
}

pub fn planted_links_in_the_output_directory_are_not_followed() {
    let secrets = tempfile::tempdir().unwrap();
    let canary = canary(secrets.path());
    let out = tempfile::tempdir().unwrap();
    let planted = [
        "report.json.tmp",
        "chart.svg.tmp",
        "flame.svg.tmp",
        "chart.svg",
    ];
    for name in planted {
        symlink(&canary, out.path().join(name)).unwrap();
    }
    let gateway = Gateway::start();
    let report = out.path().join("report.json");
    let chart = out.path().join("chart.svg");
    let flame = out.path().join("flame.svg");
    let observer = Observer::attach(
        gateway.pid(),
        &[
            "--output",
            report.to_str().unwrap(),
            "--chart",
            chart.to_str().unwrap(),
            "--flamegraph",
            flame.to_str().unwrap(),
        ],
    );
    gateway.chat(10, 1);
    signal(observer.pid(), libc::SIGINT);
    eventually("the observer writes its files and exits", || {
        std::fs::metadata(&flame).is_ok() && std::fs::metadata(&report).is_ok()
    });
    observer_exits(observer);
    assert_eq!(std::fs::read(&canary).unwrap(), b"root only");
    let written: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(int(&written["outstanding"]["buffers"]), 10);
    for file in [&report, &chart, &flame] {
        let metadata = std::fs::symlink_metadata(file).unwrap();
        assert!(metadata.is_file(), "{} replaced by a file", file.display());
    }
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "chart.svg",
            "chart.svg.tmp",
            "flame.svg",
            "flame.svg.tmp",
            "report.json",
            "report.json.tmp"
        ],
        "no temporary file left, the planted links untouched"
    );
    for name in ["report.json.tmp", "chart.svg.tmp", "flame.svg.tmp"] {
        assert_eq!(std::fs::read_link(out.path().join(name)).unwrap(), canary);
    }
    gateway.stop();
}

fn observer_exits(observer: Observer) {
    let pid = observer.pid();
    eventually("the observer exits", || {
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true);
        !alive || zombie
    });
    drop(observer);
}

/// `observer attach` on the gateway with `extra`: (exit code, stderr lines).
fn attach_briefly(pid: u32, extra: &[&str]) -> (Option<i32>, Vec<String>) {
    let pid = pid.to_string();
    let mut args = vec!["attach", "--pid", pid.as_str(), "--duration", "2s"];
    args.extend(SPEC);
    args.extend(extra);
    let (code, _, stderr) = observer_command(&args);
    (code, stderr.lines().map(str::to_string).collect())
}

pub fn bad_destinations_are_reported_before_attaching() {
    let out = tempfile::tempdir().unwrap();
    let missing = out.path().join("missing/report.json");
    let gateway = Gateway::start();
    let cases: [(&str, &Path, &str); 3] = [
        ("--output", &missing, "does not exist"),
        ("--chart", out.path(), "is a directory"),
        ("--flamegraph", &missing, "does not exist"),
    ];
    for (option, path, expected) in cases {
        let (code, stderr) = attach_briefly(gateway.pid(), &[option, path.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{option}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{option}: {stderr:?}");
        assert!(
            stderr[0].starts_with(&format!("observer: error: {option} ")),
            "{stderr:?}"
        );
        assert!(stderr[0].contains(expected), "{stderr:?}");
    }
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing written"
    );
    gateway.chat(2, 1);
    assert_eq!(
        gateway.stop(),
        2,
        "nothing attached, the gateway served as before"
    );
}

pub fn control_on_an_existing_file_leaves_it_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let gateway = Gateway::start();
    let (code, stderr) = attach_briefly(gateway.pid(), &["--control", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr:?}");
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].contains("is a regular file, not a stale observer socket"),
        "{stderr:?}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    gateway.chat(2, 1);
    assert_eq!(gateway.stop(), 2, "nothing attached");
}

pub fn an_over_long_control_request_is_refused_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let socket_arg = socket.to_str().unwrap();
    let gateway = Gateway::start();
    let observer = Observer::attach(gateway.pid(), &["--control", socket_arg]);
    // A slow client that never finishes its line must not hold anything up.
    let _idle = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let mut long = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = long.write_all(&vec![b'x'; 1 << 20]);
    let mut answer = String::new();
    BufReader::new(&long).read_line(&mut answer).unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(
        answer["output"]
            .as_str()
            .unwrap()
            .contains("longer than 4096 bytes"),
        "{answer}"
    );
    gateway.chat(3, 1);
    let (code, stdout, stderr) = observer_command(&["mark", "after", "--control", socket_arg]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("mark 'after'"), "{stdout}");
    assert!(stdout.contains("3 buffers"), "{stdout}");
    let (status, report) = observer.stop();
    assert!(status.success());
    assert_eq!(int(&report["outstanding"]["buffers"]), 3);
    assert!(!socket.exists(), "its own socket removed on exit");
    gateway.stop();
}
