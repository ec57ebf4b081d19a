//! Waking the session when the target's dynamic linker changes its list
//! of loaded objects (`dlopen`, `dlclose`), so that a library is tabled
//! and symbolized as soon as it is mapped, not at the next `--interval`
//! tick. The wake-ups come from the probe on `_dl_debug_state` (see
//! [`crate::attach::Attachment::watch_loads`]) through a ring buffer whose
//! records carry nothing: one or many unread, the session refreshes once.

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::resolve::process::Process;

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

/// A library the probes were placed in before the target loaded it (see
/// [`crate::plan::ProbePlan::not_loaded`]): every report says so while
/// the target has not mapped it, since its probes cannot have seen a call.
pub struct AwaitedLibrary {
    /// Its path in the target.
    path: String,
    /// The inode of the file the probes are in.
    inode: u64,
    /// Seen mapped once: never said again (it may be unloaded later, but
    /// its calls were seen).
    seen: std::cell::Cell<bool>,
}

impl AwaitedLibrary {
    /// The library `plan` waits for, if any.
    pub fn of(plan: &crate::plan::ProbePlan) -> Option<Self> {
        let (path, file) = plan.not_loaded.as_ref()?;
        Some(Self {
            path: path.clone(),
            inode: file.inode(),
            seen: std::cell::Cell::new(false),
        })
    }

    /// Looks whether `process` maps the library now (called whenever the
    /// session catches up with the target's mappings; a process that is
    /// gone leaves what was seen before).
    pub fn look(&self, process: &Process) {
        if self.seen.get() {
            return;
        }
        if let Ok(mappings) = process.executable_mappings() {
            self.seen
                .set(mappings.iter().any(|m| m.inode == self.inode));
        }
    }

    /// The report's warning while `process` has not mapped the library.
    /// Probe `hits` mean it was mapped (every function of a session is in
    /// this one object), even if the process is gone by now (a command
    /// `run` started that has already exited).
    pub fn warning(&self, process: &Process, hits: u64) -> Option<String> {
        if hits > 0 {
            self.seen.set(true);
        }
        self.look(process);
        (!self.seen.get()).then(|| {
            format!(
                "{} has not been loaded by the process: its probes wait for it and have seen \
                 no call",
                self.path
            )
        })
    }
}
