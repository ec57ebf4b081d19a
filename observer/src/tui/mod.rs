//! `observer top`: the session shown live in the terminal — top sites by
//! outstanding bytes with growth, totals, counters and the observer's
//! cost, refreshed every `--interval` — with keys to sort, expand a site's
//! stack, set a mark and show the change since it, and quit (which
//! detaches and prints the final report).
//!
//! The terminal is put back on every way out: [`Tui`] restores it when
//! dropped (quit, a stop signal, an error), and a panic hook restores it
//! before the panic is printed. Keys are read on a thread of their own and
//! handed to the session's loop, which never blocks on the terminal.

pub mod state;
pub mod view;

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::analyse::Report;
use crate::error::UserError;
use state::{Action, Key, State};

/// Fails unless stdin and stdout are a terminal (the view needs one).
pub fn check_terminal() -> Result<()> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        return Ok(());
    }
    Err(UserError::new(
        "observer top needs a terminal on stdin and stdout: run it in one, or use `observer attach`",
    )
    .into())
}

/// The live view: the terminal, the keys, and what is shown.
pub struct Tui {
    terminal: Option<DefaultTerminal>,
    keys: mpsc::UnboundedReceiver<Key>,
    stop_keys: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub state: State,
    /// The allocate function, left out of site names.
    pool_function: String,
    last: Option<Report>,
}

impl Tui {
    /// Takes over the terminal (raw mode, alternate screen, a panic hook
    /// that gives it back) and starts reading keys.
    pub fn start(pool_function: &str) -> Result<Self> {
        let terminal = ratatui::try_init().map_err(|err| {
            ratatui::restore();
            anyhow::Error::new(err).context("cannot take over the terminal")
        })?;
        let (sender, keys) = mpsc::unbounded_channel();
        let stop_keys = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop_keys);
            std::thread::spawn(move || read_keys(&sender, &stop))
        };
        Ok(Self {
            terminal: Some(terminal),
            keys,
            stop_keys,
            reader: Some(reader),
            state: State::default(),
            pool_function: pool_function.to_string(),
            last: None,
        })
    }

    /// The next key pressed.
    pub async fn next_key(&mut self) -> Option<Key> {
        self.keys.recv().await
    }

    /// Applies a key and redraws; says what the session must do.
    pub fn key(&mut self, key: Key) -> Result<Action> {
        let sites = self.last.as_ref().map_or(0, |r| r.sites.len());
        let action = self.state.handle(key, sites);
        self.redraw()?;
        Ok(action)
    }

    /// Shows `report` from now on.
    pub fn show(&mut self, report: Report) -> Result<()> {
        let rows = report.sites.len();
        self.state.selected = self.state.selected.min(rows.saturating_sub(1));
        self.last = Some(report);
        self.redraw()
    }

    pub fn redraw(&mut self) -> Result<()> {
        let (Some(terminal), Some(report)) = (self.terminal.as_mut(), self.last.as_ref()) else {
            return Ok(());
        };
        terminal
            .draw(|frame| view::draw(frame, report, &self.state, &self.pool_function))
            .context("cannot draw the live view")?;
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.stop_keys.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        // The terminal shows its cursor again when dropped; then raw mode
        // and the alternate screen go.
        drop(self.terminal.take());
        ratatui::restore();
    }
}

/// Polls the terminal for keys until told to stop (the poll's timeout is
/// how often it looks at `stop`).
fn read_keys(sender: &mpsc::UnboundedSender<Key>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let Ok(Event::Key(pressed)) = event::read() else {
            continue;
        };
        if pressed.kind == KeyEventKind::Release {
            continue;
        }
        let ctrl_c =
            pressed.code == KeyCode::Char('c') && pressed.modifiers.contains(KeyModifiers::CONTROL);
        let key = match pressed.code {
            _ if ctrl_c => Key::Quit,
            KeyCode::Up | KeyCode::Char('k') => Key::Up,
            KeyCode::Down | KeyCode::Char('j') => Key::Down,
            KeyCode::Enter | KeyCode::Char('e') | KeyCode::Char(' ') => Key::Expand,
            KeyCode::Char('s') => Key::Sort,
            KeyCode::Char('m') => Key::Mark,
            KeyCode::Char('d') => Key::Diff,
            KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
            _ => continue,
        };
        if sender.send(key).is_err() {
            return;
        }
    }
}
