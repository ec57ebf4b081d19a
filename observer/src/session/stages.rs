//! The steps before a session starts — reading the target's symbols and
//! debug information, building unwind tables, loading and attaching the
//! eBPF programs — are slow and synchronous (seconds on a big binary, the
//! verifier's time for the programs). Each runs on a blocking thread while
//! the async thread waits for it or for SIGINT/SIGTERM/SIGHUP, whichever
//! comes first, so a stop signal is acted on at once at every moment.
//!
//! An interrupted step is abandoned: its thread may go on reading files
//! until the process exits, and whatever it produces is dropped (an
//! [`Attachment`](crate::attach::Attachment) detaches when dropped; the
//! kernel removes the probes of a process that exits in any case). Only a
//! uprobe registration in progress is waited for, and no later one may
//! start, so that every probe is this process's when it exits
//! ([`stop_registering`](crate::attach::registrar::stop_registering)).

use std::fmt;

use anyhow::{anyhow, Result};

use super::Signals;
use crate::error::UserError;

/// A step before the session starts, as the interrupted line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Symbols, debug information and probe sites of the target.
    Planning,
    /// The mapped objects' debug information, for symbolizing stacks.
    Symbolizing,
    /// Unwind tables from `.eh_frame` for the in-kernel stack walker.
    UnwindTables,
    /// Loading the eBPF programs (the verifier) and attaching the uprobes.
    Attaching,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Planning => "reading the target's symbols and planning the probes",
            Self::Symbolizing => "reading the target's debug information",
            Self::UnwindTables => "building unwind tables",
            Self::Attaching => "loading and attaching the eBPF programs",
        })
    }
}

impl Signals {
    /// Runs `work` on a blocking thread and returns its result, unless a
    /// stop signal arrives first: then `work` is abandoned and the result is
    /// a [`UserError`] naming `stage` and the signal.
    pub async fn stage<T, W>(&mut self, stage: Stage, work: W) -> Result<T>
    where
        T: Send + 'static,
        W: FnOnce() -> Result<T> + Send + 'static,
    {
        let work = tokio::task::spawn_blocking(work);
        tokio::select! {
            // A signal that arrived while the previous step ran wins over a
            // step that happens to be done already.
            biased;
            signal = self.next_stop() => {
                // Blocking this thread is fine: the session is over, and a
                // registrar child runs for well under a second.
                crate::attach::registrar::stop_registering();
                Err(interrupted(stage, signal))
            }
            joined = work => match joined {
                Ok(result) => result,
                Err(err) => match err.try_into_panic() {
                    // A bug in the step: keep the panic's message and status.
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(err) => Err(anyhow!(err).context(format!("{stage} did not finish"))),
                },
            },
        }
    }

    /// Waits for SIGINT, SIGTERM or SIGHUP and names it.
    async fn next_stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// The one line for a session stopped before it started.
pub fn interrupted(stage: Stage, signal: &str) -> anyhow::Error {
    UserError::new(format!(
        "interrupted by {signal} while {stage}; nothing was left attached"
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raise(signal: libc::c_int) {
        // SAFETY: raise has no memory-safety preconditions; the signal's
        // disposition is tokio's handler, installed by `Signals::install`.
        assert_eq!(unsafe { libc::raise(signal) }, 0);
    }

    // One test: the signal it raises would reach every `Signals` alive in
    // this process, including a concurrent test's.
    #[tokio::test(flavor = "current_thread")]
    async fn a_step_gives_its_result_unless_a_stop_signal_comes_first() {
        let mut signals = Signals::install().unwrap();
        let value = signals.stage(Stage::Planning, || Ok(7)).await.unwrap();
        assert_eq!(value, 7);
        let err = signals
            .stage(Stage::Planning, || -> Result<()> {
                Err(UserError::new("no function 'x'").into())
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no function 'x'");

        let (_keep_open, never) = std::sync::mpsc::channel::<()>();
        raise(libc::SIGTERM);
        let err = signals
            .stage(Stage::Attaching, move || {
                let _ = never.recv();
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(
            crate::error::one_line(&err),
            "interrupted by SIGTERM while loading and attaching the eBPF programs; nothing was left attached"
        );
    }
}
