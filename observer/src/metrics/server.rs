//! A minimal HTTP/1.1 server for `/metrics` on the session's tokio
//! runtime. Each connection is served by its own task, which reads one
//! bounded request head, asks the session for the exposition through a
//! channel and writes it back; so a slow or stuck client never holds up
//! the session, and the session is never blocked by the network.
//!
//! Bounds: a request head of at most [`MAX_REQUEST_BYTES`] sent within
//! [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] served at once (more
//! are answered 503 and closed), one request per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::UserError;

/// The longest request head accepted (Prometheus sends about 300 bytes).
pub const MAX_REQUEST_BYTES: usize = 8192;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// How long a client has to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client has to take its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A scrape waiting for the session's exposition.
#[derive(Debug)]
pub struct Scrape {
    reply: oneshot::Sender<Option<String>>,
}

impl Scrape {
    /// Hands the exposition to the connection's task.
    pub fn answer(self, exposition: String) {
        let _ = self.reply.send(Some(exposition));
    }

    /// The session could not read what to show: the scrape fails (500).
    pub fn fail(self) {
        let _ = self.reply.send(None);
    }
}

/// The bound endpoint, serving in the background once started.
pub struct MetricsServer {
    address: SocketAddr,
    scrapes: mpsc::Receiver<Scrape>,
    accept: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `address` (before anything is attached, so that a taken port
    /// is the user's to fix, not a session lost) and starts serving. Must
    /// run inside the tokio runtime.
    pub fn bind(address: SocketAddr) -> Result<Self> {
        let listener = std::net::TcpListener::bind(address).map_err(|err| {
            let why = match err.kind() {
                std::io::ErrorKind::AddrInUse => "the address is in use: choose another port",
                std::io::ErrorKind::AddrNotAvailable => {
                    "no interface of this machine has that address"
                }
                std::io::ErrorKind::PermissionDenied => "permission denied",
                _ => "cannot listen there",
            };
            UserError::new(format!("--metrics {address}: {why} ({err})"))
        })?;
        listener
            .set_nonblocking(true)
            .context("cannot make the metrics socket non-blocking")?;
        let address = listener.local_addr()?;
        let listener =
            TcpListener::from_std(listener).context("cannot serve the metrics socket")?;
        let (sender, scrapes) = mpsc::channel(MAX_CONNECTIONS);
        let accept = tokio::spawn(accept_loop(listener, sender));
        Ok(Self {
            address,
            scrapes,
            accept,
        })
    }

    /// Where it listens (with the port the kernel chose for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The next scrape for the session to answer.
    pub async fn next_scrape(&mut self) -> Option<Scrape> {
        self.scrapes.recv().await
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, scrapes: mpsc::Sender<Scrape>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of descriptors or the like: give it a moment to pass.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(async move {
                let busy = response(503, "text/plain", "too many connections\n");
                let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
                    let _ = stream.write_all(&busy).await;
                    let _ = stream.shutdown().await;
                    // Closing with the request unread would reset the
                    // connection before the client reads the answer.
                    let _ = read_head(&mut stream).await;
                })
                .await;
            });
            continue;
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            serve(stream, scrapes).await;
            drop(slot);
        });
    }
}

/// One connection: one request, one answer, then close.
async fn serve(mut stream: TcpStream, scrapes: mpsc::Sender<Scrape>) {
    let answer = match read_head(&mut stream).await {
        Err(status) => response(status, "text/plain", "bad request\n"),
        Ok(head) => match route(&head) {
            Route::Metrics { head_only } => match exposition(&scrapes).await {
                Some(Some(text)) => {
                    let (content_type, text) = if wants_openmetrics(&head) {
                        (super::CONTENT_TYPE, text)
                    } else {
                        (super::CLASSIC_CONTENT_TYPE, super::classic_text(&text))
                    };
                    let mut answer = response(200, content_type, &text);
                    if head_only {
                        answer.truncate(answer.len() - text.len());
                    }
                    answer
                }
                Some(None) => response(500, "text/plain", "the observer could not read its maps\n"),
                None => response(503, "text/plain", "the session has ended\n"),
            },
            Route::Error(status, text) => response(status, "text/plain", text),
        },
    };
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Asks the session for the exposition: `None` when the session is gone,
/// `Some(None)` when it failed to read it.
async fn exposition(scrapes: &mpsc::Sender<Scrape>) -> Option<Option<String>> {
    let (reply, answer) = oneshot::channel();
    scrapes.send(Scrape { reply }).await.ok()?;
    answer.await.ok()
}

/// True when the request's Accept header names OpenMetrics.
fn wants_openmetrics(head: &str) -> bool {
    head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value
                    .to_ascii_lowercase()
                    .contains("application/openmetrics-text")
        })
    })
}

enum Route {
    Metrics { head_only: bool },
    Error(u16, &'static str),
}

/// What the request line asks for.
fn route(head: &str) -> Route {
    let mut words = head.lines().next().unwrap_or("").split_ascii_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head_only: false },
        ("HEAD", "/metrics") => Route::Metrics { head_only: true },
        (_, "/metrics") => Route::Error(405, "only GET and HEAD\n"),
        _ => Route::Error(404, "the metrics are at /metrics\n"),
    }
}

/// Reads the request head (up to the blank line), bounded in size and time;
/// `Err` is the status to answer with.
async fn read_head(stream: &mut TcpStream) -> Result<String, u16> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.map_err(|_| 400u16)?;
            if n == 0 {
                return Err(400u16);
            }
            head.extend_from_slice(&chunk[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(());
            }
            if head.len() > MAX_REQUEST_BYTES {
                return Err(431);
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| 408u16)??;
    String::from_utf8(head).map_err(|_| 400)
}

fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// Answers every scrape with `text` until dropped.
    fn session(mut server: MetricsServer, text: &'static str) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(scrape) = server.next_scrape().await {
                scrape.answer(text.into());
            }
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serves_metrics_and_refuses_the_rest() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = server.address();
        let session = session(server, "pool_observer_x 1\n# EOF\n");
        let openmetrics =
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n";
        let answer = get(address, openmetrics).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Content-Type: application/openmetrics-text"));
        assert!(
            answer.ends_with("\r\n\r\npool_observer_x 1\n# EOF\n"),
            "{answer}"
        );
        let answer = get(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            answer.contains("Content-Type: text/plain; version=0.0.4"),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\npool_observer_x 1\n"), "{answer}");
        let answer = get(address, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = get(address, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        let long = vec![b'x'; MAX_REQUEST_BYTES * 2];
        let answer = get(address, &long).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        session.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_taken_port_is_the_users_to_fix() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let err = MetricsServer::bind(address).err().expect("port in use");
        let user = err.downcast_ref::<UserError>().expect("a user error");
        assert!(user.to_string().contains("in use"), "{user}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn silent_clients_do_not_hold_up_others() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = server.address();
        let session = session(server, "ok\n");
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS - 1 {
            silent.push(TcpStream::connect(address).await.unwrap());
        }
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            get(address, b"GET /metrics HTTP/1.0\r\n\r\n"),
        )
        .await
        .expect("served while others are silent");
        assert!(answer.ends_with("ok\n"));
        silent.push(TcpStream::connect(address).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = get(address, b"GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        session.abort();
    }
}
