//! Waits on a target's answer that end, when the answer does not come,
//! with what every thread of the processes involved was doing: a test
//! that waits forever says nothing (tests hung four times in the arm64
//! VMs, see docs/arm64.md "Hangs"), and the thread states tell a starved machine
//! (threads runnable, CPU times moving) from a thread stuck in the kernel
//! (its wait channel and kernel stack) or a user-space deadlock (every
//! thread sleeping in futex or epoll).

use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

use crate::support::children_of;

/// How long before the second look at the threads: CPU times that moved
/// in between mean the process still runs.
const SECOND_LOOK: Duration = Duration::from_secs(3);

/// Waits for `child` until `limit`; panics with the thread states of
/// every process this test started when it has not exited by then (the
/// child is killed). `what` names the wait in the message.
pub fn output_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let stdout = child.stdout.take().map(read_on_a_thread);
    let stderr = child.stderr.take().map(read_on_a_thread);
    let status = wait_within(&mut child, limit).unwrap_or_else(|| {
        let states = states_twice();
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish in {} s; {states}", limit.as_secs())
    });
    let joined = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default()
    };
    Output {
        status,
        stdout: joined(stdout),
        stderr: joined(stderr),
    }
}

/// Panics with the thread states of every process this test started
/// after `what` did not come in `limit`.
pub fn stalled(what: &str, limit: Duration) -> ! {
    panic!(
        "{what} did not come in {} s; {}",
        limit.as_secs(),
        states_twice()
    )
}

fn read_on_a_thread(
    mut pipe: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// `child`'s exit status once it exits; `None` when it has not in `limit`.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every thread of the processes this one started (and theirs), looked
/// at twice [`SECOND_LOOK`] apart.
fn states_twice() -> String {
    let pids = descendants(std::process::id());
    let first = threads_of(&pids);
    std::thread::sleep(SECOND_LOOK);
    let second = threads_of(&pids);
    format!(
        "threads then:\n{first}threads {} s later:\n{second}",
        SECOND_LOOK.as_secs()
    )
}

/// The processes below `root`, parents before their children.
fn descendants(root: u32) -> Vec<u32> {
    let mut found = children_of(root);
    let mut next = 0;
    while let Some(&parent) = found.get(next) {
        found.extend(children_of(parent));
        next += 1;
    }
    found
}

/// One block per thread of each process: its name, state and CPU ticks
/// (from `stat`), wait channel and kernel stack (root only; empty
/// otherwise).
fn threads_of(pids: &[u32]) -> String {
    let mut text = String::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            text.push_str(&format!("process {pid}: gone\n"));
            continue;
        };
        for task in tasks.flatten() {
            text.push_str(&thread_state(&task.path()));
        }
    }
    text
}

fn thread_state(task: &std::path::Path) -> String {
    let read = |name: &str| std::fs::read_to_string(task.join(name)).unwrap_or_default();
    let stat = read("stat");
    // After the parenthesised name: state is field 3, utime and stime 14
    // and 15 (proc(5)).
    let (name, rest) = stat
        .rsplit_once(") ")
        .map(|(head, rest)| (head.split_once(" (").map_or("", |h| h.1), rest))
        .unwrap_or(("?", ""));
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or("?");
    let mut block = format!(
        "  {} {name}: state {} utime {} stime {} wchan {}\n",
        task.display(),
        field(3),
        field(14),
        field(15),
        read("wchan")
    );
    for frame in read("stack").lines() {
        block.push_str(&format!("    {frame}\n"));
    }
    block
}
