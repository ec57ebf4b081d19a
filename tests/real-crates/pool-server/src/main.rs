//! `pool-server`: a small line-protocol key/value server whose request
//! buffers come from an `object_pool::Pool<Vec<u8>>`, returned to the
//! pool when their guard drops.
//!
//! Prints `listening on ADDR`, then serves each connection on its own
//! thread until stdin closes. Requests are `SET key value`, `GET key` and
//! `DEL key`, one per line; every reply is one line. A request it cannot
//! parse is kept, with its buffer, in a list of rejected requests "for
//! the operator to look at", which nothing ever empties: each bad request
//! keeps one pooled buffer out of the pool for good.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;

use object_pool::{Pool, Reusable};

/// How much a request buffer holds before it grows.
const BUFFER_CAPACITY: usize = 4096;

/// What every connection shares.
struct Server {
    buffers: Pool<Vec<u8>>,
    store: Mutex<HashMap<String, String>>,
}

/// Requests that could not be parsed, kept with their bytes.
type Rejected<'a> = Vec<Reusable<'a, Vec<u8>>>;

enum Request<'r> {
    Set(&'r str, &'r str),
    Get(&'r str),
    Del(&'r str),
}

fn parse(line: &[u8]) -> Result<Request<'_>, &'static str> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8")?;
    let mut words = text.trim_end().splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("SET"), Some(key), Some(value)) if !key.is_empty() => Ok(Request::Set(key, value)),
        (Some("GET"), Some(key), None) if !key.is_empty() => Ok(Request::Get(key)),
        (Some("DEL"), Some(key), None) if !key.is_empty() => Ok(Request::Del(key)),
        _ => Err("malformed request"),
    }
}

impl Server {
    fn execute(&self, request: Request<'_>) -> String {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        match request {
            Request::Set(key, value) => {
                store.insert(key.to_string(), value.to_string());
                "OK".to_string()
            }
            Request::Get(key) => store.get(key).cloned().unwrap_or_else(|| "NIL".to_string()),
            Request::Del(key) => match store.remove(key) {
                Some(_) => "OK".to_string(),
                None => "NIL".to_string(),
            },
        }
    }

    /// Serves one connection until the client closes it.
    fn serve<'s>(
        &'s self,
        stream: TcpStream,
        rejected: &Mutex<Rejected<'s>>,
    ) -> std::io::Result<()> {
        // Replies are small and answer each request: send them at once.
        stream.set_nodelay(true)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        loop {
            let mut buffer = self.buffers.pull(|| Vec::with_capacity(BUFFER_CAPACITY));
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer)? == 0 {
                return Ok(());
            }
            let reply = match parse(&buffer) {
                Ok(request) => self.execute(request),
                Err(why) => {
                    let reply = format!("ERR {why}");
                    rejected
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(buffer);
                    reply
                }
            };
            writeln!(writer, "{reply}")?;
        }
    }
}

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening on {}", listener.local_addr()?);
    let server = Server {
        buffers: Pool::new(16, || Vec::with_capacity(BUFFER_CAPACITY)),
        store: Mutex::new(HashMap::new()),
    };
    let rejected = Mutex::new(Rejected::new());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Stop when whoever started the server closes its stdin.
            let mut line = String::new();
            while std::io::stdin()
                .lock()
                .read_line(&mut line)
                .is_ok_and(|n| n > 0)
            {
                line.clear();
            }
            std::process::exit(0);
        });
        for stream in listener.incoming() {
            let stream = stream?;
            let (server, rejected) = (&server, &rejected);
            scope.spawn(move || {
                if let Err(err) = server.serve(stream, rejected) {
                    eprintln!("connection: {err}");
                }
            });
        }
        Ok(())
    })
}
