//! The control socket of a running session: `observer mark`, `observer
//! report` and `observer diff` from another shell.
//!
//! A Unix stream socket, mode 0600, that also checks each peer's
//! credentials (root or the observer's own user). One request per
//! connection: a JSON line in (at most [`MAX_REQUEST_BYTES`], within a few
//! seconds), a JSON line out. Binary output (a pprof profile) travels
//! base64-encoded in that line, marked `"encoding":"base64"`, and the
//! client decodes it before writing it out. Each connection is served by its own task,
//! which hands the parsed request to the session and waits for its answer,
//! so a slow client never holds up the session; at most
//! [`MAX_CONNECTIONS`] are served at once.
//!
//! The observer never removes what it did not create: a path that holds
//! anything but a stale socket of its own user is refused, and on exit the
//! socket is removed only if the path still leads to the very socket it
//! bound. The default directory, [`SOCKET_DIR`], is created mode 0700 and
//! used only while it is a real directory of ours that nobody else may use.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::UserError;
use crate::render::Format;

/// Where sessions put their sockets unless `--control` says otherwise.
pub const SOCKET_DIR: &str = "/run/observer";

/// The longest request line accepted; real requests are under 200 bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Connections served at once; more are answered "busy" and closed.
pub const MAX_CONNECTIONS: usize = 8;

/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client has to take its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Remember the per-site counts now under `name`.
    Mark { name: String },
    /// A report, rendered in `format`; with `mark`, the profile as it was
    /// at that mark (pprof only).
    Report {
        format: Format,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mark: Option<String>,
    },
    /// Changes from mark `from` to mark `to` (or now), divided by `per`.
    Diff {
        from: String,
        to: Option<String>,
        per: Option<u64>,
        format: Format,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// The rendered result, or the error in one line.
    pub output: String,
    /// `base64` when `output` encodes binary output; absent for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// What a request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Text(String),
    /// Binary output, such as a gzipped pprof profile.
    Binary(Vec<u8>),
}

impl Payload {
    /// The payload as it is written out.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Payload::Text(text) => text.into_bytes(),
            Payload::Binary(bytes) => bytes,
        }
    }
}

const BASE64: &str = "base64";

/// The default socket of the session observing `pid`.
pub fn default_path(pid: u32) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{pid}.sock"))
}

/// A request from an allowed peer, waiting for the session's answer.
#[derive(Debug)]
pub struct Incoming {
    pub request: Request,
    reply: oneshot::Sender<Response>,
}

impl Incoming {
    /// Answers the client (its task writes the line); a client that went
    /// away is not our problem.
    pub fn answer(self, ok: bool, output: String) {
        let _ = self.reply.send(Response {
            ok,
            output,
            encoding: None,
        });
    }

    /// Answers with the request's result: text as it is, binary output
    /// base64-encoded, an error as its one line.
    pub fn answer_with(self, result: Result<Payload>) {
        use base64::Engine as _;
        match result {
            Ok(Payload::Text(text)) => self.answer(true, text),
            Ok(Payload::Binary(bytes)) => {
                let _ = self.reply.send(Response {
                    ok: true,
                    output: base64::engine::general_purpose::STANDARD.encode(bytes),
                    encoding: Some(BASE64.into()),
                });
            }
            Err(err) => self.answer(false, crate::error::one_line(&err)),
        }
    }
}

/// A bound control socket serving connections in the background; the
/// socket is removed on drop if it is still the one bound.
pub struct ControlServer {
    path: PathBuf,
    /// (device, inode) of the socket we bound.
    bound: (u64, u64),
    requests: mpsc::Receiver<Incoming>,
    accept: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    /// Binds `path`, replacing only a stale socket of our own user (a
    /// killed observer's), refusing one that another live session answers
    /// on and anything that is not a socket. Must run inside the tokio
    /// runtime: connections are served by tasks.
    pub fn bind(path: &Path) -> Result<Self> {
        remove_stale_socket(path)?;
        let listener = bind_owner_only(path)?;
        let bound = our_socket(path)?;
        let (sender, requests) = mpsc::channel(MAX_CONNECTIONS);
        let accept = tokio::spawn(accept_loop(listener, sender));
        Ok(Self {
            path: path.to_path_buf(),
            bound,
            requests,
            accept,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next request from an allowed, well-formed client. Refused
    /// peers and malformed requests are answered by their tasks.
    pub async fn next_request(&mut self) -> Option<Incoming> {
        self.requests.recv().await
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.accept.abort();
        let still_ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.bound);
        if still_ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes [`SOCKET_DIR`] if it is missing (mode 0700), and accepts it only
/// if it is a directory (not a link to one) owned by us that nobody else
/// may enter; otherwise says what is wrong with it.
pub fn ensure_socket_dir() -> Result<PathBuf> {
    let dir = Path::new(SOCKET_DIR);
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("cannot create {SOCKET_DIR}")),
    }
    let metadata =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot inspect {SOCKET_DIR}"))?;
    let problem = if !metadata.file_type().is_dir() {
        Some(format!(
            "it is a {}, not a directory",
            kind(&metadata.file_type())
        ))
    } else if metadata.uid() != effective_uid() {
        Some(format!("it belongs to uid {}", metadata.uid()))
    } else if metadata.permissions().mode() & 0o077 != 0 {
        Some(format!(
            "its mode is {:o}, open to others",
            metadata.permissions().mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(UserError::new(format!(
            "not using {SOCKET_DIR}: {problem}; remove it, or give --control PATH"
        ))
        .into()),
        None => Ok(dir.to_path_buf()),
    }
}

/// Removes a stale socket of ours at `path`; refuses anything else.
fn remove_stale_socket(path: &Path) -> Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    };
    let refuse = |what: String| -> anyhow::Error {
        UserError::new(format!(
            "{} is {what}, not a stale observer socket: the observer replaces nothing else; \
             remove it or give --control another path",
            path.display()
        ))
        .into()
    };
    if !metadata.file_type().is_socket() {
        return Err(refuse(format!("a {}", kind(&metadata.file_type()))));
    }
    if metadata.uid() != effective_uid() {
        return Err(refuse(format!("a socket of uid {}", metadata.uid())));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(UserError::new(format!(
            "another observer answers on {}: stop it, or give this one --control PATH",
            path.display()
        ))
        .into());
    }
    // Only if nothing replaced it since we looked.
    if our_socket(path).is_ok_and(|now| now == (metadata.dev(), metadata.ino())) {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    Ok(())
}

/// Binds a socket that only its owner may connect to from the start
/// (bind creates it under the umask, so there is no window before a chmod).
fn bind_owner_only(path: &Path) -> Result<UnixListener> {
    // SAFETY: umask only swaps the process's file-creation mask; it is
    // restored right after bind, before anything else creates files.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the mask we found.
    unsafe { libc::umask(previous) };
    bound.with_context(|| format!("cannot listen on {}", path.display()))
}

/// (device, inode) of the socket at `path`, if it is a socket of ours.
fn our_socket(path: &Path) -> Result<(u64, u64)> {
    let metadata = std::fs::symlink_metadata(path)?;
    anyhow::ensure!(
        metadata.file_type().is_socket() && metadata.uid() == effective_uid(),
        "{} is not our socket",
        path.display()
    );
    Ok((metadata.dev(), metadata.ino()))
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn kind(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_file() {
        "regular file"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Accepts connections and serves each in its own task, at most
/// [`MAX_CONNECTIONS`] at once.
async fn accept_loop(listener: UnixListener, requests: mpsc::Sender<Incoming>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of descriptors or the like: give it a moment to pass.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(async move {
                let busy = "busy: too many control connections, try again".to_string();
                let _ =
                    tokio::time::timeout(ANSWER_TIMEOUT, respond(&mut stream, false, busy)).await;
            });
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            if let Err(err) = serve(stream, requests).await {
                eprintln!("observer: control socket: {err:#}");
            }
            drop(slot);
        });
    }
}

/// One connection: peer check, one bounded request line, the session's
/// answer.
async fn serve(mut stream: UnixStream, requests: mpsc::Sender<Incoming>) -> Result<()> {
    let peer = stream.peer_cred()?.uid();
    let me = effective_uid();
    if peer != 0 && peer != me {
        let refusal = format!("uid {peer} may not control this session");
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, respond(&mut stream, false, refusal)).await;
        anyhow::bail!("refused a control connection from uid {peer}");
    }
    let request = match read_request(&mut stream).await {
        Ok(request) => request,
        Err(err) => {
            let message = format!("bad request: {err:#}");
            let _ =
                tokio::time::timeout(ANSWER_TIMEOUT, respond(&mut stream, false, message)).await;
            return Err(err.context("bad control request"));
        }
    };
    let (reply, answer) = oneshot::channel();
    requests
        .send(Incoming { request, reply })
        .await
        .context("the session stopped")?;
    let response = answer.await.context("the session stopped")?;
    tokio::time::timeout(ANSWER_TIMEOUT, send_response(&mut stream, &response))
        .await
        .context("control client did not take its answer")
}

/// Reads one request line of at most [`MAX_REQUEST_BYTES`], within
/// [`REQUEST_TIMEOUT`].
async fn read_request(stream: &mut UnixStream) -> Result<Request> {
    let mut line = Vec::new();
    let limited = (&mut *stream).take(MAX_REQUEST_BYTES as u64 + 1);
    let mut reader = tokio::io::BufReader::new(limited);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .context("sent no complete request in time")??;
    parse_request(&line)
}

/// Parses one request line as the server receives it from a client: at
/// most [`MAX_REQUEST_BYTES`] of JSON, holding only what the command line
/// lets through. Pure, so that it can be fuzzed.
pub fn parse_request(line: &[u8]) -> Result<Request> {
    if line.len() > MAX_REQUEST_BYTES {
        anyhow::bail!("longer than {MAX_REQUEST_BYTES} bytes");
    }
    within_bounds(serde_json::from_slice(line)?)
}

/// A client may send anything, not only what `observer mark` and `observer
/// diff` check: mark names (kept for the whole session, printed in every
/// diff) and `per` are held to the command line's bounds here too.
fn within_bounds(request: Request) -> Result<Request> {
    use crate::cli::values::{cycles, mark_name};
    let name = |name: String| mark_name(&name).map_err(anyhow::Error::msg);
    Ok(match request {
        Request::Mark { name: mark } => Request::Mark { name: name(mark)? },
        Request::Report { format, mark } => Request::Report {
            format,
            mark: mark.map(name).transpose()?,
        },
        Request::Diff {
            from,
            to,
            per,
            format,
        } => Request::Diff {
            from: name(from)?,
            to: to.map(name).transpose()?,
            per: per
                .map(|per| cycles(&per.to_string()).map_err(anyhow::Error::msg))
                .transpose()?,
            format,
        },
    })
}

/// Sends a one-line text answer.
async fn respond(stream: &mut UnixStream, ok: bool, output: String) {
    let response = Response {
        ok,
        output,
        encoding: None,
    };
    send_response(stream, &response).await;
}

/// Sends the one-line answer; a client that went away is not our problem.
async fn send_response(stream: &mut UnixStream, response: &Response) {
    let mut line = serde_json::to_string(response).unwrap_or_default();
    line.push('\n');
    let _ = stream.write_all(line.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Finds the socket to talk to: `--control`, else the one of `--pid`, else
/// the only one in [`SOCKET_DIR`].
pub fn find_socket(control: Option<&Path>, pid: Option<u32>) -> Result<PathBuf> {
    if let Some(path) = control {
        return Ok(path.to_path_buf());
    }
    if let Some(pid) = pid {
        return Ok(default_path(pid));
    }
    let sockets: Vec<PathBuf> = std::fs::read_dir(SOCKET_DIR)
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match sockets.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(UserError::new(format!(
            "no observer session found in {SOCKET_DIR}: start `observer attach`, or give --control PATH"
        ))
        .into()),
        many => Err(UserError::new(format!(
            "several observer sessions ({}): say which with --pid or --control",
            many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
        .into()),
    }
}

/// Sends `request` to the session at `path` and returns its answer.
pub fn call(path: &Path, request: &Request) -> Result<Payload> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|err| {
        UserError::new(format!(
            "cannot reach the observer session at {} ({err}): is it still running?",
            path.display()
        ))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    // A session that turns us away (busy) answers before reading: its
    // answer is worth more than the error of our write.
    let sent = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    if answer.is_empty() {
        sent.context("sending the request")?;
        read.context("reading the session's answer")?;
    }
    parse_response(&answer)
}

/// Reads the session's answer line as the client receives it: its output,
/// or the error it reports (a [`UserError`]).
pub fn parse_response(line: &str) -> Result<Payload> {
    let response: Response =
        serde_json::from_str(line).context("the session's answer is not a response")?;
    if !response.ok {
        return Err(UserError::new(response.output).into());
    }
    match response.encoding.as_deref() {
        None => Ok(Payload::Text(response.output)),
        Some(BASE64) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(response.output.trim())
                .map(Payload::Binary)
                .context("the session's binary answer is not valid base64")
        }
        Some(other) => anyhow::bail!("the session answered in an unknown encoding '{other}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let request = Request::Diff {
            from: "a".into(),
            to: None,
            per: Some(100),
            format: Format::Text,
        };
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            line,
            r#"{"command":"diff","from":"a","to":null,"per":100,"format":"text"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
    }

    /// Found by fuzzing: the session took mark names the command line
    /// refuses (any length up to the line's, control characters) and a
    /// `per` of 0 from whoever wrote to the socket.
    #[test]
    fn requests_hold_what_the_command_line_would_send() {
        let long = "B".repeat(65);
        for line in [
            format!(r#"{{"command":"mark","name":"{long}"}}"#),
            r#"{"command":"mark","name":"a\u001b[31mred"}"#.to_string(),
            r#"{"command":"mark","name":"  "}"#.to_string(),
            r#"{"command":"diff","from":"a","to":"b\n","per":1,"format":"text"}"#.to_string(),
            r#"{"command":"diff","from":"a","to":null,"per":0,"format":"text"}"#.to_string(),
        ] {
            let err = parse_request(line.as_bytes()).unwrap_err().to_string();
            assert!(
                err.contains("mark name") || err.contains("whole number"),
                "{line}: {err}"
            );
        }
        assert_eq!(
            parse_request(br#"{"command":"mark","name":" before "}"#).unwrap(),
            Request::Mark {
                name: "before".into()
            }
        );
    }

    /// Serves `server`'s requests by echoing them as marks, until dropped.
    fn answer_marks(mut server: ControlServer) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(incoming) = server.next_request().await {
                let answer = format!("{:?}", incoming.request);
                incoming.answer(true, answer);
            }
        })
    }

    fn call_blocking(path: &Path, request: Request) -> tokio::task::JoinHandle<Result<String>> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            call(&path, &request)
                .map(|payload| String::from_utf8(payload.into_bytes()).expect("a text answer"))
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn socket_is_private_and_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let mut server = ControlServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let client = call_blocking(&path, Request::Mark { name: "x".into() });
        let incoming = server.next_request().await.unwrap();
        assert_eq!(incoming.request, Request::Mark { name: "x".into() });
        incoming.answer(true, "marked x".into());
        assert_eq!(client.await.unwrap().unwrap(), "marked x");
        let err = ControlServer::bind(&path)
            .err()
            .expect("a live session is not replaced");
        assert!(
            err.to_string().contains("another observer answers"),
            "{err}"
        );
        drop(server);
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn binary_answers_cross_as_base64_and_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let mut server = ControlServer::bind(&path).unwrap();
        let request = Request::Report {
            format: Format::Pprof,
            mark: Some("before".into()),
        };
        let client = {
            let (path, request) = (path.clone(), request.clone());
            tokio::task::spawn_blocking(move || call(&path, &request))
        };
        let incoming = server.next_request().await.unwrap();
        assert_eq!(incoming.request, request);
        let profile = vec![0x1f, 0x8b, 0, 0xff, b'\n', 0x80];
        incoming.answer_with(Ok(Payload::Binary(profile.clone())));
        assert_eq!(client.await.unwrap().unwrap(), Payload::Binary(profile));
    }

    #[test]
    fn old_clients_requests_still_parse() {
        let request: Request =
            serde_json::from_str(r#"{"command":"report","format":"json"}"#).unwrap();
        assert_eq!(
            request,
            Request::Report {
                format: Format::Json,
                mark: None
            }
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_stale_sockets_of_ours_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep me").unwrap();
        let err = ControlServer::bind(&file)
            .err()
            .expect("a regular file is refused");
        assert!(err.downcast_ref::<UserError>().is_some(), "{err}");
        assert!(err.to_string().contains("a regular file"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = ControlServer::bind(&link).err().expect("a link is refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A stale socket (its observer was killed) is replaced.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let server = ControlServer::bind(&stale).unwrap();
        drop(server);
        assert!(!stale.exists());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_exit_only_our_own_socket_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = ControlServer::bind(&path).unwrap();
        // Someone replaced it meanwhile: theirs stays.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"theirs").unwrap();
        drop(server);
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn long_and_silent_clients_are_cut_off_and_others_served() {
        use tokio::io::AsyncWriteExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let session = answer_marks(ControlServer::bind(&path).unwrap());
        // Silent: holds a connection open and sends nothing.
        let _silent = UnixStream::connect(&path).await.unwrap();
        // Too long: a line without end.
        let mut long = UnixStream::connect(&path).await.unwrap();
        let _ = long.write_all(&vec![b'x'; MAX_REQUEST_BYTES * 4]).await;
        let mut answer = String::new();
        tokio::io::BufReader::new(&mut long)
            .read_line(&mut answer)
            .await
            .unwrap();
        let response: Response = serde_json::from_str(&answer).unwrap();
        assert!(!response.ok);
        assert!(
            response.output.contains("longer than 4096 bytes"),
            "{}",
            response.output
        );
        // Meanwhile a well-behaved client is answered at once.
        let answered = call_blocking(&path, Request::Mark { name: "y".into() });
        let answer = tokio::time::timeout(Duration::from_secs(3), answered).await;
        assert!(answer.unwrap().unwrap().unwrap().contains("Mark"));
        session.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_beyond_the_cap_are_turned_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let session = answer_marks(ControlServer::bind(&path).unwrap());
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(UnixStream::connect(&path).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = call_blocking(&path, Request::Mark { name: "z".into() });
        let err = refused.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("busy"), "{err}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let served = call_blocking(&path, Request::Mark { name: "z".into() });
        assert!(served.await.unwrap().unwrap().contains("Mark"));
        session.abort();
    }
}
