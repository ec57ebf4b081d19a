//! Accept loop and process-wide settings.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bufpool::BufPool;
use tokio::net::TcpListener;

use crate::session::Session;

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns on per-session debug lines on stderr.
pub fn enable_debug() {
    DEBUG.store(true, Ordering::Relaxed);
}

pub fn debug(message: fmt::Arguments<'_>) {
    if DEBUG.load(Ordering::Relaxed) {
        eprintln!("debug: {message}");
    }
}

/// Accepts connections until the future is dropped.
pub async fn serve(listener: TcpListener, pool: Arc<BufPool>) -> std::io::Result<()> {
    let next_id = AtomicU64::new(1);
    loop {
        let (stream, peer) = listener.accept().await?;
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(id, stream, Arc::clone(&pool));
        tokio::spawn(async move {
            if let Err(err) = session.run().await {
                debug(format_args!("session {id} from {peer}: {err}"));
            }
        });
    }
}
