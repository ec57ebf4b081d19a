//! Waking the session when the target's dynamic linker changes its list
//! of loaded objects (`dlopen`, `dlclose`), so that a library is tabled
//! and symbolized as soon as it is mapped, not at the next `--interval`
//! tick. The wake-ups come from the probe on `_dl_debug_state` (see
//! [`crate::attach::Attachment::watch_loads`]) through a ring buffer whose
//! records carry nothing: one or many unread, the session refreshes once.

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

/// The ring buffer of wake-ups, registered with the runtime.
pub struct LoadWatch {
    events: AsyncFd<RingBuf<MapData>>,
}

impl LoadWatch {
    /// Watches `events` (from [`crate::attach::Attachment::take_load_events`]).
    pub fn new(events: RingBuf<MapData>) -> Result<Self> {
        // SAFETY: the ring buffer owns its map's fd, which stays open and
        // keeps its number until the ring buffer is dropped, which only
        // happens when the AsyncFd is dropped.
        let events =
            unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
                .map_err(|err| err.into_parts().1)
                .context("cannot register the dynamic linker's wake-ups with tokio")?;
        Ok(Self { events })
    }

    /// Waits for wake-ups and consumes every one there is. Readiness is
    /// cleared before reading, so a record written while they are read
    /// makes the next wait return at once.
    async fn changed(&mut self) -> Result<()> {
        let mut guard = self
            .events
            .readable_mut()
            .await
            .context("cannot wait for the dynamic linker's wake-ups")?;
        guard.clear_ready();
        let events = guard.get_inner_mut();
        while events.next().is_some() {}
        Ok(())
    }
}

/// The next change of loaded objects; never, without a watch.
pub async fn next_change(watch: Option<&mut LoadWatch>) -> Result<()> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}
