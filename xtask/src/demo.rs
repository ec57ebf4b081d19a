//! `cargo xtask demo`: the leak story, solved live.
//!
//! Starts the leaky gateway, lets traffic run (those leaks happen before the
//! observer exists and must not be reported), attaches the observer by PID,
//! drives `sessions` more connect/chat/disconnect sessions, then stops the
//! observer (which prints its report) and the gateway (which prints its own
//! private counter, for comparison).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::arch::Arch;
use crate::cmd::{checked, root, signal, Guarded};
use crate::setup;
use crate::targets::{build_observer, build_targets, targets_dir, Variant};

/// Sessions before the observer attaches.
pub const WARM_UP_SESSIONS: usize = 50;

/// Sessions while attached, as README shows them.
pub const SESSIONS: usize = 200;

/// How the observer is attached to the gateway built for `arch`: the
/// pool's functions and where size and ids are (the allocate returns its
/// 24-byte `PooledBuf` through a hidden result pointer: see
/// [`Arch::hidden_result`]), then the live view's settings.
pub fn observer_args(arch: Arch) -> Vec<String> {
    let result = arch.hidden_result();
    [
        "--alloc",
        "bufpool::BufPool::allocate",
        "--size",
        &format!("*({result}+8)"),
        "--alloc-id",
        &format!("*{result}"),
        "--release",
        "bufpool::BufPool::release",
        "--release-id",
        "*arg1",
        "--interval",
        "1s",
        "--top",
        "2",
        "--frames",
        "70",
    ]
    .map(String::from)
    .to_vec()
}

/// How `chat-load` drives `sessions` sessions at the gateway's `address`.
pub fn chat_args(address: &str, sessions: usize) -> Vec<String> {
    let sessions = sessions.to_string();
    [
        "--addr",
        address,
        "--sessions",
        &sessions,
        "--messages",
        "5",
        "--concurrency",
        "20",
    ]
    .map(str::to_string)
    .to_vec()
}

pub fn run(sessions: usize) -> Result<()> {
    setup::run()?;
    build_observer(true)?;
    build_targets(Variant::Leaky)?;

    let (gateway, address) = start_gateway()?;
    println!(
        "demo: gateway pid {} listening on {address}",
        gateway.0.id()
    );
    chat(&address, WARM_UP_SESSIONS, "before the observer attaches")?;

    let observer_path = root().join("target/release/observer");
    let mut observer = Command::new(&observer_path);
    observer
        .args(["attach", "--pid", &gateway.0.id().to_string()])
        .args(observer_args(Arch::host()))
        .current_dir(root())
        .stderr(Stdio::piped());
    println!("demo: $ {}", shell_words(&observer));
    let mut observer = Guarded(observer.spawn().context("cannot start the observer")?);
    wait_for_attach(&mut observer.0)?;

    chat(&address, sessions, "while attached")?;
    std::thread::sleep(Duration::from_millis(1200));
    println!("demo: stopping the observer (SIGINT); it prints its report:\n");
    signal(&observer.0, libc::SIGINT)?;
    let status = observer.0.wait()?;
    if !status.success() {
        bail!("the observer failed: {status}");
    }
    stop_gateway(gateway)?;
    println!(
        "demo: {WARM_UP_SESSIONS} sessions leaked before the observer attached; it reports only \
         what it saw: the {sessions} disconnects while attached."
    );
    Ok(())
}

fn start_gateway() -> Result<(Guarded, String)> {
    let mut child = Command::new(targets_dir(Variant::Leaky).join("leaky-gateway"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the leaky gateway")?;
    let stdout = child.stdout.take().context("gateway stdout")?;
    let guard = Guarded(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().context("gateway printed nothing")??;
    let address = first
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected gateway output: {first}"))?
        .to_string();
    // Keep draining its stdout so it never blocks, and echo the final line.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("gateway: {line}");
        }
    });
    Ok((guard, address))
}

fn stop_gateway(mut gateway: Guarded) -> Result<()> {
    signal(&gateway.0, libc::SIGINT)?;
    gateway.0.wait()?;
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

fn chat(address: &str, sessions: usize, when: &str) -> Result<()> {
    println!("demo: {sessions} sessions connect, chat and disconnect ({when})");
    checked(
        Command::new(targets_dir(Variant::Leaky).join("chat-load"))
            .args(chat_args(address, sessions))
            .stdout(Stdio::null()),
    )
}

/// Forwards the observer's stderr and returns once it says it is attached.
fn wait_for_attach(observer: &mut Child) -> Result<()> {
    let stderr = observer.stderr.take().context("observer stderr")?;
    let (attached_tx, attached_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.starts_with("observer: attached") {
                let _ = attached_tx.send(());
            }
        }
    });
    attached_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the observer did not attach within 30 s")
}

fn shell_words(command: &Command) -> String {
    let program = command.get_program().to_string_lossy();
    let program = program.rsplit('/').next().unwrap_or(&program).to_string();
    let args = command.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.contains(['*', '(', ' ']) {
            format!("'{a}'")
        } else {
            a.into_owned()
        }
    });
    std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}
