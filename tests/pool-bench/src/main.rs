//! `pool-bench [--pairs N] [--depth D]`
//!
//! Prints `ready`, waits for a line on stdin (so a probe can be attached),
//! then allocates and releases N buffers, each from a call chain D frames
//! deep, and prints `ns_per_pair X`.

use std::io::BufRead as _;
use std::time::Instant;

use bufpool::BufPool;

fn main() {
    let mut pairs: u64 = 200_000;
    let mut depth: u32 = 16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--pairs", Some(v)) => pairs = v,
            ("--depth", Some(v)) => depth = v as u32,
            _ => {
                eprintln!("usage: pool-bench [--pairs N] [--depth D]");
                std::process::exit(2);
            }
        }
    }
    let pool = BufPool::new();
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
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
