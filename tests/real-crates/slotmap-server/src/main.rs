//! A request server in miniature: each request in flight is kept in a
//! `slotmap::SlotMap` under its key while it is processed, and removed
//! when its response is sent. A request whose body fails to parse is
//! answered early and stays in the map: that is the leak.
//!
//! Driven through stdin/stdout like the other test targets: prints
//! `ready`, waits for a line, serves one round of traffic, prints `done`
//! with what it did, and stays alive until stdin closes.

use std::io::{BufRead, Write};

use slotmap::{DefaultKey, SlotMap};

/// A request being processed.
#[derive(Debug)]
struct Request {
    method: [u8; 8],
    path_hash: u64,
    content_length: u64,
    received_at: u64,
}

/// Requests served in one round.
const REQUESTS: u64 = 200;
/// Every fifth request has a body that does not parse.
const BAD_EVERY: u64 = 5;

#[derive(Debug)]
enum ParseError {
    BadBody,
}

struct Server {
    in_flight: SlotMap<DefaultKey, Request>,
    answered: u64,
}

impl Server {
    fn receive(&mut self, n: u64) -> DefaultKey {
        self.in_flight.insert(Request {
            method: *b"POST    ",
            path_hash: n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            content_length: n % 1500,
            received_at: n,
        })
    }

    fn handle(&mut self, n: u64) -> Result<(), ParseError> {
        let key = self.receive(n);
        self.parse_body(key)?;
        if let Some(request) = self.in_flight.remove(key) {
            self.answered += request.content_length
                + u64::from(request.method[0])
                + request.path_hash % 2
                + request.received_at % 2;
        }
        Ok(())
    }

    fn parse_body(&self, key: DefaultKey) -> Result<(), ParseError> {
        let request = &self.in_flight[key];
        if request.received_at % BAD_EVERY == 2 {
            return Err(ParseError::BadBody);
        }
        Ok(())
    }
}

fn main() {
    let mut server = Server {
        in_flight: SlotMap::new(),
        answered: 0,
    };
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    println!("ready");
    std::io::stdout().flush().unwrap();
    if lines.next().is_none() {
        return;
    }
    let mut bad = 0;
    for n in 0..REQUESTS {
        if let Err(error) = server.handle(n) {
            bad += 1;
            if bad == 1 {
                eprintln!("request {n}: {error:?}");
            }
        }
    }
    println!("done: {bad} bad requests, {} answered", server.answered);
    std::io::stdout().flush().unwrap();
    while lines.next().is_some() {}
}
