//! Drives a chat gateway with real sessions.
//!
//! `chat-load --addr ADDR [--sessions N] [--messages M] [--concurrency C] [--hold]`
//!
//! Every session connects, says hello, sends M messages (each acknowledged),
//! says bye and waits until the server closes the connection, so when the
//! command returns the server has finished with every session. With `--hold`
//! the sessions stay open after chatting until a line (or EOF) arrives on
//! stdin; `holding N sessions` is printed once they are all open.

use std::io;
use std::process::ExitCode;
use std::sync::Arc;

use leaky_gateway::protocol::{parse_header, PacketKind, SubType, HEADER_LEN};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

struct Options {
    addr: String,
    sessions: usize,
    messages: usize,
    concurrency: usize,
    hold: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        addr: String::new(),
        sessions: 1,
        messages: 3,
        concurrency: 16,
        hold: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            let value = args.next().ok_or(format!("{name} needs a number"))?;
            value.parse().map_err(|_| format!("bad {name} {value}"))
        };
        match arg.as_str() {
            "--addr" => options.addr = args.next().ok_or("--addr needs an address")?,
            "--sessions" => options.sessions = number("--sessions")?,
            "--messages" => options.messages = number("--messages")?,
            "--concurrency" => options.concurrency = number("--concurrency")?.max(1),
            "--hold" => options.hold = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.addr.is_empty() {
        return Err("--addr is required".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("chat-load: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chat-load: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> io::Result<()> {
    let options = Arc::new(options);
    // With --hold every session must be open before anyone may leave, so the
    // limit on concurrent sessions does not apply.
    let permits = if options.hold {
        options.sessions.max(1)
    } else {
        options.concurrency
    };
    let limit = Arc::new(Semaphore::new(permits));
    let all_open = Arc::new(Barrier::new(options.sessions + 1));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    for index in 0..options.sessions {
        let options = Arc::clone(&options);
        let limit = Arc::clone(&limit);
        let all_open = Arc::clone(&all_open);
        let mut release = release_rx.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            let mut stream = TcpStream::connect(&options.addr).await?;
            chat(&mut stream, index, options.messages).await?;
            if options.hold {
                all_open.wait().await;
                let _ = release.wait_for(|go| *go).await;
            }
            leave(&mut stream).await
        });
    }
    if options.hold {
        all_open.wait().await;
        println!("holding {} sessions", options.sessions);
        let mut line = String::new();
        BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await?;
        let _ = release_tx.send(true);
    }
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        if let Err(err) = joined.map_err(io::Error::other).and_then(|result| result) {
            eprintln!("chat-load: session failed: {err}");
            failures += 1;
        }
    }
    println!(
        "sessions {} messages {} failures {failures}",
        options.sessions, options.messages
    );
    if failures > 0 {
        return Err(io::Error::other(format!("{failures} sessions failed")));
    }
    Ok(())
}

async fn chat(stream: &mut TcpStream, index: usize, messages: usize) -> io::Result<()> {
    send(
        stream,
        PacketKind::Hello,
        Some(SubType::Text),
        format!("client-{index}").as_bytes(),
    )
    .await?;
    expect(stream, PacketKind::Welcome).await?;
    for message in 0..messages {
        let text = format!("message {message} from client-{index}");
        send(
            stream,
            PacketKind::Message,
            Some(SubType::Text),
            text.as_bytes(),
        )
        .await?;
        expect(stream, PacketKind::Ack).await?;
    }
    Ok(())
}

/// Says bye and waits until the server closes the connection.
async fn leave(stream: &mut TcpStream) -> io::Result<()> {
    send(stream, PacketKind::Bye, None, &[]).await?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await?;
    Ok(())
}

async fn send(
    stream: &mut TcpStream,
    kind: PacketKind,
    sub_type: Option<SubType>,
    payload: &[u8],
) -> io::Result<()> {
    let mut frame = vec![kind as u8, sub_type.map_or(0, |s| s as u8)];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await
}

async fn expect(stream: &mut TcpStream, wanted: PacketKind) -> io::Result<()> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await?;
    let (kind, _, len) = parse_header(&header).map_err(io::Error::other)?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    if kind != wanted {
        return Err(io::Error::other(format!(
            "expected {wanted:?}, got {kind:?}"
        )));
    }
    Ok(())
}
