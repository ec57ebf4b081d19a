//! The control socket of a running session: `observer mark`, `observer
//! report` and `observer diff` from another shell.
//!
//! A Unix stream socket, mode 0600 in a 0700 directory, that also checks
//! each peer's credentials (root or the observer's own user). One request
//! per connection: a JSON line in, a JSON line out.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use crate::error::UserError;
use crate::render::Format;

/// Where sessions put their sockets unless `--control` says otherwise.
pub const SOCKET_DIR: &str = "/run/observer";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Remember the per-site counts now under `name`.
    Mark { name: String },
    /// A report, rendered in `format`.
    Report { format: Format },
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
}

/// The default socket of the session observing `pid`.
pub fn default_path(pid: u32) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{pid}.sock"))
}

/// A bound control socket; the file is removed on drop.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path`, replacing a stale socket left by a killed observer and
    /// refusing one that another live session answers on.
    pub fn bind(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(UserError::new(format!(
                    "another observer answers on {}: stop it, or give this one --control PATH",
                    path.display()
                ))
                .into());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection from an allowed peer with its request; `Err`
    /// for a refused peer or a malformed request (already answered).
    pub async fn next_request(&self) -> Result<(UnixStream, Request)> {
        let (mut stream, _) = self.listener.accept().await?;
        let peer = stream.peer_cred()?.uid();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if peer != 0 && peer != me {
            respond(
                &mut stream,
                false,
                format!("uid {peer} may not control this session"),
            )
            .await;
            anyhow::bail!("refused a control connection from uid {peer}");
        }
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(&mut stream);
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .context("control client sent nothing")??;
        match serde_json::from_str(&line) {
            Ok(request) => Ok((stream, request)),
            Err(err) => {
                respond(&mut stream, false, format!("bad request: {err}")).await;
                Err(err).context("bad control request")
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends the one-line answer; a client that went away is not our problem.
pub async fn respond(stream: &mut UnixStream, ok: bool, output: String) {
    let mut line = serde_json::to_string(&Response { ok, output }).unwrap_or_default();
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
pub fn call(path: &Path, request: &Request) -> Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|err| {
        UserError::new(format!(
            "cannot reach the observer session at {} ({err}): is it still running?",
            path.display()
        ))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .context("reading the session's answer")?;
    let response: Response =
        serde_json::from_str(&answer).context("the session's answer is not a response")?;
    if response.ok {
        Ok(response.output)
    } else {
        Err(UserError::new(response.output).into())
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

    #[tokio::test(flavor = "current_thread")]
    async fn socket_is_private_and_answers() {
        let dir = std::env::temp_dir().join(format!("observer-control-{}", std::process::id()));
        let path = dir.join("t.sock");
        let server = ControlServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let client_path = path.clone();
        let client = tokio::task::spawn_blocking(move || {
            call(&client_path, &Request::Mark { name: "x".into() })
        });
        let (mut stream, request) = server.next_request().await.unwrap();
        assert_eq!(request, Request::Mark { name: "x".into() });
        respond(&mut stream, true, "marked x".into()).await;
        assert_eq!(client.await.unwrap().unwrap(), "marked x");
        assert!(
            ControlServer::bind(&path).is_err(),
            "a live session is not replaced"
        );
        drop(server);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
