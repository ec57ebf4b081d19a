//! What a process does besides serving, which an observer must notice:
//! threads still waiting inside the pool when the program ends, helper
//! processes it starts, and a replacement of its program (exec).

use std::sync::Arc;
use std::time::Duration;

use bufpool::{BufPool, WaitingPool};

/// Workers that find the bounded pool empty wait inside `take`.
const WAITERS: usize = 3;

/// `count` workers each take a buffer and keep it; `WAITERS` more find
/// the pool empty and wait in `take`, where the end of the program finds
/// them.
pub fn exit_while_waiting(count: usize) -> usize {
    let pool = Arc::new(WaitingPool::new(count, 256));
    // A first buffer goes round trip before the workers start.
    let first = pool.take();
    pool.give(first);
    for _ in 0..count + WAITERS {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || {
            // Held for the rest of the program: never given back.
            let _kept = pool.take();
        });
    }
    // Long enough for every worker to be either holding or waiting.
    std::thread::sleep(Duration::from_millis(300));
    count
}

/// Leaks `count` buffers, then starts helper processes (fork and exec of
/// `true`), as servers spawn helpers.
pub fn spawn_helpers(count: usize) -> usize {
    let pool = BufPool::new();
    // Never released: a pooled buffer is not given back on drop.
    for _ in 0..count {
        let _ = pool.allocate(100);
    }
    for _ in 0..2 {
        let _ = std::process::Command::new("true").status();
    }
    count
}

/// The program's last act in `spawn_helpers` mode: it replaces itself
/// with `true`, as a re-executing upgrade does.
pub fn replace_program() {
    use std::os::unix::process::CommandExt as _;
    let error = std::process::Command::new("true").exec();
    eprintln!("exec true: {error}");
}
