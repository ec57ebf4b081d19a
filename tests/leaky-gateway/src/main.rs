//! `leaky-gateway [--listen ADDR] [--workers N] [--debug]`
//!
//! Prints `listening on ADDR` once it accepts connections; stops on SIGINT or
//! SIGTERM and prints the pool's own outstanding counters.

use std::process::ExitCode;
use std::sync::Arc;

use bufpool::BufPool;
use leaky_gateway::server;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

// The allocator a service switches to, added the way its users add it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    listen: String,
    workers: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        listen: "127.0.0.1:7878".into(),
        workers: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => options.listen = args.next().ok_or("--listen needs an address")?,
            "--workers" => {
                let value = args.next().ok_or("--workers needs a number")?;
                options.workers = value
                    .parse()
                    .map_err(|_| format!("bad --workers {value}"))?;
            }
            "--debug" => server::enable_debug(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("leaky-gateway: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("leaky-gateway: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> std::io::Result<()> {
    let listener = TcpListener::bind(&options.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let pool = Arc::new(BufPool::new());
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = server::serve(listener, Arc::clone(&pool)) => result?,
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    println!(
        "stopped; pool outstanding: {} buffers, {} bytes",
        pool.outstanding_buffers(),
        pool.outstanding_bytes()
    );
    Ok(())
}
