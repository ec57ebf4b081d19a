//! `slab-server`: a small line-protocol job server that tracks the jobs in
//! flight in a `slab::Slab`, keyed by the slab's `usize` keys.
//!
//! Prints `listening on ADDR`, then serves each connection on its own
//! thread until stdin closes. A request is `JOB name weight`; the reply is
//! `DONE key name total` with the job's slab key and the total weight of
//! the jobs in flight. A job whose weight does not parse is answered with
//! an error by an early return that skips the removal: its slab entry
//! stays in flight for good.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, MutexGuard};

use slab::Slab;

/// A job being worked on.
struct Job {
    name: String,
    weight: u64,
}

/// Every job in flight, on every connection.
struct Jobs {
    in_flight: Mutex<Slab<Job>>,
}

impl Jobs {
    /// Runs one request: registers the job, works it, retires it.
    fn run(&self, request: &str) -> Result<String, String> {
        let mut words = request.split_whitespace();
        let name = words.next().filter(|w| *w == "JOB").and(words.next());
        let name = name.ok_or_else(|| format!("not a job: {request}"))?;
        let key = self.lock().insert(Job {
            name: name.to_string(),
            weight: 0,
        });
        let weight: u64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("job {key}: bad weight"))?;
        let total = {
            let mut in_flight = self.lock();
            in_flight[key].weight = weight;
            in_flight.iter().map(|(_, job)| job.weight).sum::<u64>()
        };
        let job = self.lock().remove(key);
        Ok(format!("DONE {key} {} {total}", job.name))
    }

    fn lock(&self) -> MutexGuard<'_, Slab<Job>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves one connection until the client closes it.
    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        // Replies are small and answer each request: send them at once.
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        for line in reader.lines() {
            let reply = match self.run(&line?) {
                Ok(done) => done,
                Err(why) => format!("ERR {why}"),
            };
            writeln!(writer, "{reply}")?;
        }
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening on {}", listener.local_addr()?);
    let jobs = Jobs {
        in_flight: Mutex::new(Slab::with_capacity(64)),
    };
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
            let jobs = &jobs;
            scope.spawn(move || {
                if let Err(err) = jobs.serve(stream) {
                    eprintln!("connection: {err}");
                }
            });
        }
        Ok(())
    })
}
