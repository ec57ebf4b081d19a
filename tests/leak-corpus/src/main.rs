//! `leak-corpus deep|generic|inlined|budget|budget-tokio|exit-while-waiting|spawn [--count N]`
//!
//! Prints `ready`, waits for a line on stdin, does its work, prints
//! `done`, and exits when stdin closes. Each mode leaks pool buffers from
//! a known place, the way real code does:
//! - `deep`: a recursive-descent parser for nested lists takes a scratch
//!   buffer for every number and loses it when a number is malformed (the
//!   `?` returns before the release), 40 levels down;
//! - `generic`: a message router with one generic pool per message type
//!   forgets to give back the envelopes of messages it drops;
//! - `inlined`: a packet reassembler drops the frames of fragments with a
//!   bad checksum; the pool's `put` is inlined into every caller;
//! - `budget`, `budget-tokio`: a request handler on a pool with a byte
//!   budget whose `allocate` panics for requests it cannot cover (80 per
//!   leak); the panics are caught (`catch_unwind`, or tokio tasks), and a
//!   malformed request returns before its release;
//! - `exit-while-waiting`: workers keep buffers of a bounded pool and more
//!   wait inside its `take` when the program ends;
//! - `spawn`: leaks, starts helper processes, and when told to stop
//!   replaces itself with another program (exec).

mod budget;
mod frames;
mod lifecycle;
mod parser;
mod router;

use std::io::BufRead as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let count: usize = match (args.next().as_deref(), args.next()) {
        (Some("--count"), Some(n)) => n.parse().unwrap_or(0),
        _ => 25,
    };
    let work: fn(usize) -> usize = match mode.as_str() {
        "deep" => parser::run,
        "generic" => router::run,
        "inlined" => frames::run,
        "budget" => budget::run,
        "budget-tokio" => budget::run_tokio,
        "exit-while-waiting" => lifecycle::exit_while_waiting,
        "spawn" => lifecycle::spawn_helpers,
        _ => {
            eprintln!(
                "usage: leak-corpus deep|generic|inlined|budget|budget-tokio|exit-while-waiting|spawn [--count N]"
            );
            return ExitCode::from(2);
        }
    };
    println!("ready");
    let stdin = std::io::stdin();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);
    let leaked = work(count);
    println!("done, {leaked} buffers outstanding in the pool");
    while stdin.lock().read_line(&mut line).is_ok_and(|n| n > 0) {
        line.clear();
    }
    if mode == "spawn" {
        lifecycle::replace_program();
    }
    ExitCode::SUCCESS
}
