//! `pool-bench [--pairs N] [--depth D]`
//!
//! Prints `ready`, waits for a line on stdin (so a probe can be attached),
//! then allocates and releases N buffers, each from a call chain D frames
//! deep, prints `ns_per_pair X`, and exits when stdin is closed (so an
//! observer can be stopped while its target still lives).
//!
//! `pool-bench --keep N --stacks K [--order counting|bit-reversed]` (K ≤ 1024)
//!
//! Prints `ready`, waits for a line, then allocates N small buffers from K
//! different call chains (ten frames deep, told apart by the path taken
//! through two functions) and keeps them all: prints `kept N`, and holds
//! them until stdin is closed. What a report over a million outstanding
//! buffers is measured on. Buffer n takes path n mod K: counting, the
//! next buffer's chain differs from the last one's near the allocation;
//! bit-reversed (the path's ten bits in reverse order), far from it, with
//! the frames near the allocation the same.

use std::io::BufRead as _;
use std::time::Instant;

use bufpool::BufPool;

fn main() {
    let mut pairs: u64 = 200_000;
    let mut depth: u32 = 16;
    let mut keep: Option<u64> = None;
    let mut stacks: u32 = 1000;
    let mut reversed = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let text = args.next();
        if arg == "--order" {
            match text.as_deref() {
                Some("counting") => reversed = false,
                Some("bit-reversed") => reversed = true,
                _ => usage(),
            }
            continue;
        }
        let value = text.and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--pairs", Some(v)) => pairs = v,
            ("--depth", Some(v)) => depth = v as u32,
            ("--keep", Some(v)) => keep = Some(v),
            ("--stacks", Some(v)) if (1..=1 << PATH_BITS).contains(&v) => stacks = v as u32,
            _ => usage(),
        }
    }
    let pool = BufPool::new();
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if let Some(count) = keep {
        keep_buffers(&pool, count, stacks, reversed);
        return;
    }
    let started = Instant::now();
    let mut totals = [0u64; 4];
    for round in 0..pairs {
        descend(&pool, std::hint::black_box(depth), round, &mut totals);
    }
    let checksum = totals[3];
    let elapsed = started.elapsed();
    println!(
        "ns_per_pair {:.1} checksum {checksum}",
        elapsed.as_nanos() as f64 / pairs as f64
    );
    wait_for_end_of_input();
}

fn usage() -> ! {
    eprintln!(
        "usage: pool-bench [--pairs N] [--depth D] | --keep N [--stacks K] [--order counting|bit-reversed]"
    );
    std::process::exit(2);
}

/// Returns when stdin is closed.
fn wait_for_end_of_input() {
    let mut rest = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut rest)
        .is_ok_and(|read| read > 0)
    {}
}

/// Recurses `depth` times, then takes a buffer, writes to it and gives it
/// back: the allocating stack is `depth` frames deep. Each level hands its
/// own scratch to the next, so every level keeps a real frame.
fn descend(pool: &BufPool, depth: u32, round: u64, parent: &mut [u64; 4]) {
    let mut scratch = [round, u64::from(depth), 0, 0];
    if depth == 0 {
        let mut buf = pool.allocate(256);
        let _ = buf.put_slice(&round.to_le_bytes());
        scratch[2] = u64::from(buf.as_slice()[0]);
        pool.release(buf);
    } else {
        descend(pool, depth - 1, round.rotate_left(1), &mut scratch);
    }
    parent[3] = parent[3].wrapping_add(scratch[2]).wrapping_add(scratch[3]);
}

/// Levels of the call chains of `--keep`: 2^10 different paths.
const PATH_BITS: u64 = 10;

/// Allocates `count` buffers over `stacks` call chains (in bit-reversed
/// order of paths when `reversed`), then holds them until stdin closes.
fn keep_buffers(pool: &BufPool, count: u64, stacks: u32, reversed: bool) {
    let mut kept = Vec::with_capacity(count as usize);
    for n in 0..count {
        let mut path = (n % u64::from(stacks)) as u32;
        if reversed {
            path = path.reverse_bits() >> (u32::BITS - PATH_BITS as u32);
        }
        kept.push(left(pool, path, PATH_BITS as u32));
    }
    println!("kept {}", kept.len());
    let mut rest = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut rest)
        .is_ok_and(|read| read > 0)
    {}
    drop(kept);
}

/// One level of a call chain chosen by the bits of `path`: bit set goes
/// through `right`, clear through `left`.
fn left(pool: &BufPool, path: u32, level: u32) -> bufpool::PooledBuf {
    let scratch = std::hint::black_box([u64::from(path), u64::from(level)]);
    let buf = next_level(pool, path, level);
    std::hint::black_box(scratch);
    buf
}

fn right(pool: &BufPool, path: u32, level: u32) -> bufpool::PooledBuf {
    let scratch = std::hint::black_box([u64::from(level), u64::from(path)]);
    let buf = next_level(pool, path, level);
    std::hint::black_box(scratch);
    buf
}

fn next_level(pool: &BufPool, path: u32, level: u32) -> bufpool::PooledBuf {
    match level {
        0 => {
            // Not a tail call: the call's own return is where returns are
            // observed at call sites.
            let buf = pool.allocate(16);
            std::hint::black_box(&buf);
            buf
        }
        _ if path & (1 << (level - 1)) != 0 => right(pool, path, level - 1),
        _ => left(pool, path, level - 1),
    }
}
