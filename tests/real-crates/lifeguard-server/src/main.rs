//! `lifeguard-server`: a small single-threaded line relay whose message
//! buffers come from a `lifeguard::Pool<Vec<u8>>` and go back to it when
//! their `Recycled` smart pointer drops.
//!
//! Prints `listening on ADDR`, then serves one connection after another
//! on its only thread until stdin closes. A message is `MSG channel text`;
//! the reply is `SENT channel n` with the number of messages relayed so
//! far on that channel. A message without a channel is put on a
//! dead-letter queue "for the operator to replay", which nothing ever
//! drains: each bad message keeps one recycled buffer out of the pool for
//! good.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};

use lifeguard::{Pool, Recycled};

/// How much a message buffer holds before it grows.
const BUFFER_CAPACITY: usize = 2048;

/// Everything the relay keeps between connections.
struct Relay<'p> {
    buffers: &'p Pool<Vec<u8>>,
    relayed: HashMap<String, u64>,
    dead_letters: Vec<Recycled<'p, Vec<u8>>>,
}

impl<'p> Relay<'p> {
    /// Relays one message, or tells why it cannot.
    fn relay(&mut self, message: Recycled<'p, Vec<u8>>) -> String {
        let channel = std::str::from_utf8(&message)
            .ok()
            .and_then(|text| text.trim_end().strip_prefix("MSG "))
            .and_then(|rest| rest.split_once(' '))
            .map(|(channel, _)| channel)
            .filter(|channel| !channel.is_empty())
            .map(str::to_string);
        let Some(channel) = channel else {
            self.dead_letters.push(message);
            return "ERR no channel".to_string();
        };
        let count = self.relayed.entry(channel.clone()).or_default();
        *count += 1;
        format!("SENT {channel} {count}")
    }

    /// Serves one connection until the client closes it.
    fn serve(&mut self, stream: TcpStream) -> std::io::Result<()> {
        // Replies are small and answer each message: send them at once.
        stream.set_nodelay(true)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        loop {
            let mut message = self.buffers.new();
            if reader.read_until(b'\n', &mut message)? == 0 {
                return Ok(());
            }
            let reply = self.relay(message);
            writeln!(writer, "{reply}")?;
        }
    }
}

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening on {}", listener.local_addr()?);
    std::thread::spawn(|| {
        // Stop when whoever started the server closes its stdin.
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(0);
    });
    let buffers = lifeguard::pool()
        .with(lifeguard::StartingSize(16))
        .with(lifeguard::MaxSize(64))
        .with(lifeguard::Supplier(|| Vec::with_capacity(BUFFER_CAPACITY)))
        .build();
    let mut relay = Relay {
        buffers: &buffers,
        relayed: HashMap::new(),
        dead_letters: Vec::new(),
    };
    for stream in listener.incoming() {
        if let Err(err) = relay.serve(stream?) {
            eprintln!("connection: {err}");
        }
    }
    Ok(())
}
