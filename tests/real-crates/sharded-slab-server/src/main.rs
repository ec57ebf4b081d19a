//! A session server in miniature with two listeners (public and admin),
//! each with its own bounded `sharded_slab::Slab` of sessions (a table
//! refuses connections when full, and both tables hand out the same
//! keys): every connection gets a session, removed when the connection
//! closes. A failed handshake returns early and forgets to remove its
//! session: that is the leak.
//!
//! Driven through stdin/stdout like the other test targets: prints
//! `ready`, waits for a line, serves one round of traffic, prints `done`
//! with what it did, and stays alive until stdin closes.

use std::io::{BufRead, Write};

use sharded_slab::{Config, Slab};

/// A table of at most 96 live sessions per thread (pages of 32 and 64).
struct Bounded;

impl Config for Bounded {
    const MAX_PAGES: usize = 2;
    const INITIAL_PAGE_SIZE: usize = 32;
}

/// What the server keeps about a connection.
#[derive(Debug)]
struct Session {
    peer: [u8; 16],
    port: u16,
    authenticated: bool,
    bytes_in: u64,
}

/// Connections served in one round.
const CONNECTIONS: u64 = 400;
/// Two connections in every twenty fail their handshake, one on each
/// listener.
const FAILING: [u64; 2] = [3, 8];
/// Connections held open at once in the burst that fills the table.
const BURST: usize = 106;

struct Listener {
    sessions: Slab<Session, Bounded>,
}

#[derive(Debug)]
enum HandshakeError {
    BadGreeting,
}

impl Listener {
    /// Accepts a connection: a session, or `None` when the table is full.
    fn accept(&self, connection: u64) -> Option<usize> {
        let mut peer = [0u8; 16];
        peer[..8].copy_from_slice(&connection.to_be_bytes());
        self.sessions.insert(Session {
            peer,
            port: 40000 + (connection % 1000) as u16,
            authenticated: false,
            bytes_in: 0,
        })
    }

    /// Serves one connection from accept to close.
    fn serve(&self, connection: u64) -> Result<u64, HandshakeError> {
        let Some(key) = self.accept(connection) else {
            return Ok(0);
        };
        // The bug: on a bad greeting the session is never removed.
        self.handshake(key, connection)?;
        let served = self.sessions.get(key).map_or(0, |s| {
            s.bytes_in + u64::from(s.authenticated) + u64::from(s.port) + u64::from(s.peer[7])
        });
        self.sessions.remove(key);
        Ok(served)
    }

    fn handshake(&self, _key: usize, connection: u64) -> Result<(), HandshakeError> {
        if FAILING.contains(&(connection % 20)) {
            return Err(HandshakeError::BadGreeting);
        }
        Ok(())
    }

    /// Many clients at once: more than the table holds, so some are
    /// turned away; all of those let in are closed again.
    fn burst(&self) -> usize {
        let keys: Vec<Option<usize>> = (0..BURST as u64)
            .map(|c| self.accept(1_000_000 + c))
            .collect();
        let refused = keys.iter().filter(|k| k.is_none()).count();
        for key in keys.into_iter().flatten() {
            self.sessions.remove(key);
        }
        refused
    }
}

fn main() {
    let public = Listener {
        sessions: Slab::new_with_config::<Bounded>(),
    };
    let admin = Listener {
        sessions: Slab::new_with_config::<Bounded>(),
    };
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    println!("ready");
    std::io::stdout().flush().unwrap();
    if lines.next().is_none() {
        return;
    }
    let refused = public.burst();
    let mut failed = 0;
    for connection in 0..CONNECTIONS {
        let listener = if connection % 2 == 0 { &public } else { &admin };
        if let Err(error) = listener.serve(connection) {
            failed += 1;
            if failed == 1 {
                eprintln!("connection {connection}: {error:?}");
            }
        }
    }
    println!("done: {failed} handshakes failed, {refused} refused");
    std::io::stdout().flush().unwrap();
    while lines.next().is_some() {}
}
