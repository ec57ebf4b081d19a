//! Starting and driving the gateway, the load generator and the observer.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stalls;

pub const ALLOC: &str = "bufpool::BufPool::allocate";
pub const RELEASE: &str = "bufpool::BufPool::release";
/// Where a function returning a value too large for registers gets its
/// hidden result pointer: the first argument on x86-64 (rdi), the
/// indirect-result register x8 as it was at entry on arm64. The id is the
/// value's first word, the size its second (a `PooledBuf`'s capacity).
#[cfg(target_arch = "x86_64")]
pub const RESULT_ID: &str = "*arg0";
#[cfg(target_arch = "x86_64")]
pub const RESULT_SIZE: &str = "*(arg0+8)";
#[cfg(target_arch = "aarch64")]
pub const RESULT_ID: &str = "*x8@entry";
#[cfg(target_arch = "aarch64")]
pub const RESULT_SIZE: &str = "*(x8@entry+8)";

/// The gateway's pool spec: `allocate(&self, size) -> PooledBuf` returns
/// its 24-byte `PooledBuf { ptr, capacity, len }` through a hidden return
/// slot ([`RESULT_ID`]); `release(&self, buf)` receives the buffer by
/// reference, its second argument.
pub const SPEC: [&str; 10] = [
    "--alloc",
    ALLOC,
    "--size",
    RESULT_SIZE,
    "--alloc-id",
    RESULT_ID,
    "--release",
    RELEASE,
    "--release-id",
    "*arg1",
];
/// Longest the tests wait for a step of a target or an observer (started,
/// attached, a report, a round of chat-load, an answer) before failing,
/// with every thread's state where it may be stuck: about a second on x86-64, up to
/// tens of seconds in the arm64 VMs, whose every instruction is emulated,
/// on a loaded machine (an attach took longer than the 30 s this was).
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// An attach slower than this is written to the test's log.
const SLOW_ATTACH: Duration = Duration::from_secs(5);

pub fn targets_dir() -> PathBuf {
    built_targets("OBSERVER_TARGETS_DIR")
}

/// The build of the gateway with the story's fix.
pub fn fixed_targets_dir() -> PathBuf {
    built_targets("OBSERVER_FIXED_TARGETS_DIR")
}

fn built_targets(variable: &str) -> PathBuf {
    let dir = std::env::var_os(variable).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{variable} is not set: run the tests with `cargo xtask test`, which builds the target programs")
    });
    assert!(
        dir.join("leaky-gateway").exists(),
        "no leaky-gateway in {}",
        dir.display()
    );
    dir
}

/// Runs `observer ARGS` to completion: (exit code, stdout, stderr).
pub fn observer_command(args: &[&str]) -> (Option<i32>, String, String) {
    let output = observer().args(args).output().expect("run observer");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(relative)
}

/// 1-based line number of the first line of `relative` containing `needle`.
pub fn source_line(relative: &str, needle: &str) -> u64 {
    let text = std::fs::read_to_string(repo_file(relative)).unwrap();
    let index = text
        .lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in {relative}"));
    index as u64 + 1
}

/// Removes the control socket a SIGKILLed observer of `target` left.
pub fn remove_killed_session_socket(target: u32) {
    let _ = std::fs::remove_file(format!("/run/observer/{target}.sock"));
}

/// A child killed on drop, so a failing test leaves nothing running.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `pool-bench` started with `args`, once it says `ready`: it starts its
/// work when `go` is written to `stdin`, and says what it did on `stdout`.
pub struct PoolBench {
    pub stdin: ChildStdin,
    pub stdout: Receiver<String>,
    child: Guarded,
}

impl PoolBench {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(targets_dir().join("pool-bench"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start pool-bench");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        let child = Guarded(child);
        let ready = stdout.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(ready, "ready");
        Self {
            stdin,
            stdout,
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Writes `go`: the work starts.
    pub fn go(&mut self) {
        writeln!(self.stdin, "go").unwrap();
    }
}

pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::kill(pid as libc::pid_t, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// The leaky gateway on a free loopback port.
pub struct Gateway {
    child: Guarded,
    /// The gateway's PID here (the child's, or one below it).
    pid: u32,
    pub address: String,
    stdout: Receiver<String>,
}

impl Gateway {
    pub fn start() -> Self {
        Self::spawn(Command::new(gateway_program()), |child| child)
    }

    /// Starts `command`, which runs the gateway (itself, or as a process
    /// below it whose PID `locate` finds from the child's once it
    /// listens), with its stdout as the command's.
    pub fn spawn(mut command: Command, locate: impl FnOnce(u32) -> u32) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start leaky-gateway");
        let stdout = lines_of(child.stdout.take().unwrap());
        let child = Guarded(child);
        let first = stdout
            .recv_timeout(TIMEOUT)
            .expect("gateway announces its address");
        let address = first
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        Self {
            pid: locate(child.0.id()),
            child,
            address,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stops it with SIGINT and returns the pool's own outstanding buffer
    /// count, which it prints on the way out.
    pub fn stop(mut self) -> i64 {
        signal(self.pid(), libc::SIGINT);
        let line = self
            .stdout
            .recv_timeout(TIMEOUT)
            .expect("gateway's final line");
        self.child.0.wait().unwrap();
        line.split("pool outstanding: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected final line: {line}"))
    }

    pub fn kill(&mut self) {
        self.child.0.kill().unwrap();
        self.child.0.wait().unwrap();
    }

    /// `sessions` clients connect, chat and leave; returns once the gateway
    /// has closed every one of them.
    pub fn chat(&self, sessions: usize, messages: usize) {
        let chat_load = Command::new(targets_dir().join("chat-load"))
            .args(["--addr", &self.address, "--sessions", &sessions.to_string()])
            .args(["--messages", &messages.to_string(), "--concurrency", "16"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chat-load");
        let what = format!("chat-load ({sessions} sessions of {messages} messages)");
        let output = stalls::output_within(chat_load, TIMEOUT, &what);
        assert!(
            output.status.success(),
            "chat-load: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Opens `sessions` sessions that chat and then stay connected.
    pub fn hold(&self, sessions: usize) -> Held {
        let mut child = Command::new(targets_dir().join("chat-load"))
            .args([
                "--addr",
                &self.address,
                "--sessions",
                &sessions.to_string(),
                "--hold",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run chat-load --hold");
        let stdout = lines_of(child.stdout.take().unwrap());
        let line = stdout
            .recv_timeout(TIMEOUT)
            .expect("chat-load says it holds");
        assert!(line.starts_with("holding"), "{line}");
        Held {
            child: Guarded(child),
        }
    }
}

/// Sessions kept open by `chat-load --hold`.
pub struct Held {
    child: Guarded,
}

impl Held {
    /// Lets the sessions say bye and waits until the gateway closed them.
    pub fn release(mut self) {
        self.child
            .0
            .stdin
            .take()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
        let status = self.child.0.wait().unwrap();
        assert!(status.success(), "chat-load --hold failed: {status}");
    }
}

/// The leaky gateway's executable.
pub fn gateway_program() -> PathBuf {
    targets_dir().join("leaky-gateway")
}

/// The one process whose parent is `parent`, once it exists.
pub fn only_child_of(parent: u32) -> u32 {
    let mut children = Vec::new();
    eventually(&format!("a child of {parent}"), || {
        children = children_of(parent);
        !children.is_empty()
    });
    assert_eq!(children.len(), 1, "children of {parent}: {children:?}");
    children[0]
}

/// The processes whose parent is `parent` (field 4 of /proc/PID/stat).
pub fn children_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after_name = &stat[stat.rfind(')').map_or(0, |end| end + 1)..];
            after_name.split_ascii_whitespace().nth(1) == Some(&parent)
        })
        .collect()
}

/// A running `observer attach` with JSON reports on stdout.
pub struct Observer {
    child: Guarded,
    /// The observer's PID here (the child's, or one below it).
    pid: u32,
    reports: Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Ends when the observer's stderr closes.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    /// Attaches to `pid` with the gateway's spec and waits until attached.
    pub fn attach(pid: u32, extra: &[&str]) -> Self {
        Self::attach_with(pid, &SPEC, extra)
    }

    /// Attaches to `pid` with the probe options `spec`.
    pub fn attach_with(pid: u32, spec: &[&str], extra: &[&str]) -> Self {
        let mut command = observer();
        command.args(attach_arguments(pid, spec, extra));
        Self::spawn(command, |child| child)
    }

    /// Starts `command`, which runs an observer given [`attach_arguments`]
    /// (itself, or as a process below it whose PID `locate` finds from
    /// the child's), and waits until it is attached.
    pub fn spawn(mut command: Command, locate: impl FnOnce(u32) -> u32) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start observer");
        let reports = lines_of(child.stdout.take().unwrap());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (attached_tx, attached_rx) = mpsc::channel();
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                // Kept before it is announced, so that a test told it is
                // attached finds the line.
                let attached = line.starts_with("observer: attached");
                sink.lock().unwrap().push(line);
                if attached {
                    let _ = attached_tx.send(());
                }
            }
        });
        let child_pid = child.id();
        let mut observer = Self {
            child: Guarded(child),
            pid: child_pid,
            reports,
            stderr_reader: Some(stderr_reader),
            stderr,
        };
        let started = Instant::now();
        match attached_rx.recv_timeout(TIMEOUT) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => observer.exited_unattached(),
            Err(mpsc::RecvTimeoutError::Timeout) => observer.still_attaching(),
        }
        let took = started.elapsed();
        if took > SLOW_ATTACH {
            // In the test's log: how close the arm64 VMs come to TIMEOUT.
            eprintln!("observer attached in {:.1} s", took.as_secs_f64());
        }
        observer.pid = locate(child_pid);
        observer
    }

    /// Fails the test for an observer that closed its stderr without
    /// saying it attached: it exited; its status and stderr say why.
    fn exited_unattached(&mut self) -> ! {
        let status = self.wait();
        panic!(
            "observer did not attach ({status}): {:?}",
            self.all_stderr()
        )
    }

    /// Fails the test for an observer still attaching after [`TIMEOUT`],
    /// with every thread's state. Never waits for it: an observer that
    /// attaches late runs until stopped, and waiting for its exit hung
    /// tests in the arm64 VMs until their timeout, saying nothing
    /// (docs/arm64.md, "Hangs").
    fn still_attaching(&mut self) -> ! {
        let stderr = self.stderr();
        stalls::stalled(
            &format!("observer's attach (stderr so far: {stderr:?})"),
            TIMEOUT,
        )
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Runs `observer ARGS --pid TARGET` against this session's control
    /// socket and returns its stdout; panics unless it exits with 0.
    pub fn control(&self, target: u32, args: &[&str]) -> String {
        let pid = target.to_string();
        let mut full = args.to_vec();
        full.extend(["--pid", &pid]);
        let (code, stdout, stderr) = observer_command(&full);
        assert_eq!(code, Some(0), "observer {full:?}: {stderr}");
        stdout
    }

    /// Asks for a report with SIGUSR1 and parses it.
    pub fn report(&mut self) -> Value {
        signal(self.pid(), libc::SIGUSR1);
        self.next_report()
    }

    fn next_report(&mut self) -> Value {
        let line = self
            .reports
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("no report; stderr: {:?}", self.stderr()));
        serde_json::from_str(&line).expect("a report is one line of JSON")
    }

    /// Stops it with SIGINT; returns its exit status and final report.
    pub fn stop(mut self) -> (ExitStatus, Value) {
        signal(self.pid(), libc::SIGINT);
        let report = self.next_report();
        (self.wait(), report)
    }

    /// Waits for it to exit on its own; returns its status and final report.
    pub fn wait_exit(mut self) -> (ExitStatus, Value) {
        let report = self.next_report();
        (self.wait(), report)
    }

    /// SIGKILL: the kernel drops the probes with the fds, but the control
    /// socket stays (a killed process removes nothing); the next session
    /// for that PID would replace it, and this removes it so a later test
    /// whose target reuses the PID finds none.
    pub fn kill(mut self) {
        self.child.0.kill().unwrap();
        self.child.0.wait().unwrap();
        let target = self.all_stderr().iter().find_map(|line| {
            let rest = line.strip_prefix("observer: attached to pid ")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        if let Some(target) = target {
            remove_killed_session_socket(target);
        }
    }

    /// Waits for it to exit on its own, when no report is expected;
    /// returns its status and all it said on stderr.
    pub fn exit_without_report(mut self) -> (ExitStatus, Vec<String>) {
        let status = self.wait();
        (status, self.all_stderr())
    }

    /// Waits for its last report and its exit; returns its status, the
    /// report and all it said on stderr.
    pub fn exit_with_report(mut self) -> (ExitStatus, Value, Vec<String>) {
        let report = self.next_report();
        let status = self.wait();
        (status, report, self.all_stderr())
    }

    /// Everything on stderr, once the observer has exited and the pipe is
    /// read to its end.
    fn all_stderr(&mut self) -> Vec<String> {
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().unwrap();
        }
        self.stderr()
    }

    fn wait(&mut self) -> ExitStatus {
        stalls::wait_within(&mut self.child.0, TIMEOUT)
            .unwrap_or_else(|| stalls::stalled("observer's exit", TIMEOUT))
    }
}

/// The observer under test: this build's, or `OBSERVER_BIN` (the kernel
/// matrix runs a release build in its VMs, where a debug build is slow).
pub fn observer() -> Command {
    Command::new(observer_path())
}

pub fn observer_path() -> PathBuf {
    std::env::var_os("OBSERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_observer")))
}

/// `attach --pid PID SPEC --format json EXTRA`: what [`Observer`] runs.
pub fn attach_arguments(pid: u32, spec: &[&str], extra: &[&str]) -> Vec<String> {
    let pid = pid.to_string();
    ["attach", "--pid", &pid]
        .iter()
        .chain(spec)
        .chain(&["--format", "json"])
        .chain(extra)
        .map(|arg| arg.to_string())
        .collect()
}

/// `--alloc ALLOC --release RELEASE` with every location `auto`, as a
/// user names a pool's functions in the source.
pub fn auto_spec<'a>(alloc: &'a str, release: &'a str) -> [&'a str; 10] {
    [
        "--alloc",
        alloc,
        "--release",
        release,
        "--size",
        "auto",
        "--alloc-id",
        "auto",
        "--release-id",
        "auto",
    ]
}

/// The lines of `pipe`, as they come, read on a thread.
pub fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The sites of a report.
pub fn sites(report: &Value) -> &Vec<Value> {
    report["sites"].as_array().expect("sites array")
}

/// True when one of the site's frames is a function whose name contains `name`.
pub fn has_frame(site: &Value, name: &str) -> bool {
    frames(site)
        .iter()
        .any(|f| f["function"].as_str().is_some_and(|n| n.contains(name)))
}

pub fn frames(site: &Value) -> &Vec<Value> {
    site["frames"].as_array().expect("frames array")
}

/// The one site whose stack passes through `name`.
pub fn site_through<'a>(report: &'a Value, name: &str) -> &'a Value {
    let matching: Vec<&Value> = sites(report)
        .iter()
        .filter(|s| has_frame(s, name))
        .collect();
    assert_eq!(matching.len(), 1, "sites through {name}: {report:#}");
    matching[0]
}

pub fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

/// Once the target is quiet: allocations − releases − reallocated ids is
/// the outstanding count, the sites add up to it, every allocate call
/// ended in exactly one of the outcomes the counter table declares, and
/// nothing was lost.
pub fn assert_accounting_balances(report: &Value) {
    assert_counters_add_up(report);
    let c = &report["counters"];
    for info in observer_ebpf::COUNTERS
        .iter()
        .filter(|info| info.kind == observer_ebpf::CounterKind::Lost)
    {
        assert_eq!(int(&c[info.name]), 0, "{}: {c:#}", info.name);
    }
}

/// The balance of [`assert_accounting_balances`] without requiring that
/// nothing was lost: what was lost is counted where it belongs.
pub fn assert_counters_add_up(report: &Value) {
    let c = &report["counters"];
    let balance = int(&c["allocations"]) - int(&c["releases"]) - int(&c["reallocated_ids"]);
    assert_eq!(balance, int(&report["outstanding"]["buffers"]), "{c:#}");
    let site_sum: i64 = sites(report).iter().map(|s| int(&s["buffers"])).sum();
    assert_eq!(site_sum, int(&report["outstanding"]["buffers"]));
    for site in sites(report) {
        assert!(
            int(&site["buffers"]) >= 0 && int(&site["bytes"]) >= 0,
            "negative site {site:#}"
        );
    }
    let outcomes: i64 = observer_ebpf::ALLOC_CALL_OUTCOMES
        .iter()
        .map(|&index| int(&c[observer_ebpf::COUNTERS[index as usize].name]))
        .sum();
    assert_eq!(
        outcomes,
        int(&c["alloc_calls"]),
        "every allocate call has one outcome: {c:#}"
    );
}

/// The byte at `address` in `pid`'s memory.
pub fn byte_in_memory(pid: u32, address: u64) -> u8 {
    let mut mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    mem.seek(SeekFrom::Start(address)).unwrap();
    let mut byte = [0u8; 1];
    mem.read_exact(&mut byte).unwrap();
    byte[0]
}

/// Polls `condition` for up to five seconds.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first bytes of the gateway's probed functions, to tell whether a
/// probe (an int3) was left in its code.
pub struct ProbedBytes {
    pid: u32,
    original: Vec<(u64, u8)>,
}

/// The first byte of the breakpoint a uprobe writes over an instruction:
/// x86-64's `int3`.
#[cfg(target_arch = "x86_64")]
pub const BREAKPOINT: u8 = 0xcc;
/// arm64's uprobe breakpoint is `brk #0x5` (0xd42000a0, little-endian in
/// memory: this is its first byte).
#[cfg(target_arch = "aarch64")]
pub const BREAKPOINT: u8 = 0xa0;

impl ProbedBytes {
    /// Reads them now, while nothing is attached.
    pub fn of(pid: u32) -> Self {
        let original: Vec<(u64, u8)> = [ALLOC, RELEASE]
            .iter()
            .map(|function| {
                let address = crate::detach::runtime_address(pid, function);
                (address, byte_in_memory(pid, address))
            })
            .collect();
        assert!(original.iter().all(|&(_, byte)| byte != BREAKPOINT));
        Self { pid, original }
    }

    /// Panics unless every byte is what it was.
    pub fn assert_unchanged(&self, case: &str) {
        for &(address, byte) in &self.original {
            assert_eq!(
                byte_in_memory(self.pid, address),
                byte,
                "{case}: the byte at {address:#x} changed (a breakpoint left behind?)"
            );
        }
    }
}

/// A program the consumer tests run (`go`, `promtool`, `prometheus`,
/// `tmux`): `cargo xtask setup` installs them from Debian's packages.
pub fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: `cargo xtask setup` installs it (apt-get install golang-go prometheus tmux)"
        )
    })
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `address` (HTTP/1.0, no keep-alive): status and body.
pub fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(address, path, "")
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
pub fn http_get_with(address: &str, path: &str, headers: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\n{headers}\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `condition` until `timeout`.
pub fn eventually_within(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
