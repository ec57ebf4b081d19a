//! A request handler on a pool with a byte budget. Requests the budget
//! cannot cover make the pool's `allocate` panic, and the server catches
//! every handler's panic and goes on, as servers do (`catch_unwind` around
//! a handler, or simply a tokio task). A request with a malformed body
//! returns early, skipping the release: that buffer leaks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bufpool::{BudgetPool, BUDGET_BUFFER};

/// Buffers at once; the leaked ones stay far below it.
const BUDGET: usize = 4096;
/// A body that fits a buffer.
const SMALL: usize = 300;
/// Larger than a buffer: its allocation always fails.
const HUGE: usize = 2 * BUDGET_BUFFER;
/// Oversized requests per leaked one.
const PANICS_PER_LEAK: usize = 80;

/// Panics the handlers raised, counted by the panic hook (a server would
/// log them and keep going).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// A request: how big its buffer must be, and whether its body is valid.
#[derive(Clone, Copy)]
struct Request {
    size: usize,
    malformed: bool,
}

#[derive(Debug)]
struct Malformed;

/// Takes a buffer, fills it, checks the body, gives the buffer back. A
/// malformed body returns before the release.
fn handle(pool: &BudgetPool, request: Request) -> Result<usize, Malformed> {
    let mut buf = pool.allocate(request.size);
    let _ = buf.put_slice(&[0x42; 16]);
    if request.malformed {
        return Err(Malformed);
    }
    let written = buf.len();
    pool.release(buf);
    Ok(written)
}

/// `leaks` malformed requests, `PANICS_PER_LEAK` times as many oversized
/// ones, and well-formed ones in between.
fn requests(leaks: usize) -> Vec<Request> {
    let mut all = Vec::new();
    for _ in 0..leaks {
        for index in 0..PANICS_PER_LEAK {
            all.push(Request {
                size: HUGE,
                malformed: false,
            });
            if index % 8 == 0 {
                all.push(Request {
                    size: SMALL,
                    malformed: false,
                });
            }
        }
        all.push(Request {
            size: SMALL,
            malformed: true,
        });
    }
    all
}

fn count_panics() {
    std::panic::set_hook(Box::new(|_| {
        PANICS.fetch_add(1, Ordering::Relaxed);
    }));
}

fn report(pool: &BudgetPool, handled: usize) -> usize {
    eprintln!(
        "budget: {handled} requests served, {} handler panics caught, {} buffers in use",
        PANICS.load(Ordering::Relaxed),
        pool.in_use()
    );
    pool.in_use()
}

/// Every request in `catch_unwind`, on this thread.
pub fn run(leaks: usize) -> usize {
    count_panics();
    let pool = BudgetPool::new(BUDGET);
    let mut handled = 0;
    for request in requests(leaks) {
        if let Ok(Ok(_)) = catch_unwind(AssertUnwindSafe(|| handle(&pool, request))) {
            handled += 1;
        }
    }
    report(&pool, handled)
}

/// Every request in its own tokio task, on a multi-threaded runtime.
pub fn run_tokio(leaks: usize) -> usize {
    count_panics();
    let pool = Arc::new(BudgetPool::new(BUDGET));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    let handled = runtime.block_on(async {
        let mut tasks = Vec::new();
        for request in requests(leaks) {
            let pool = Arc::clone(&pool);
            tasks.push(tokio::spawn(async move { handle(&pool, request) }));
        }
        let mut handled = 0;
        for task in tasks {
            if let Ok(Ok(_)) = task.await {
                handled += 1;
            }
        }
        handled
    });
    report(&pool, handled)
}
