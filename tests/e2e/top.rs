//! `observer top` in a real terminal (tmux): the gateway's leak site with
//! its bytes, the keys (expand, mark, diff, sort, quit), and nothing left
//! attached after quitting.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// A tmux session killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(name: &str, command: &str, directory: &Path) -> Self {
        let status = Command::new(tool("tmux"))
            .args([
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "-s",
                name,
                "-c",
            ])
            .arg(directory)
            .arg(command)
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session");
        Self { name: name.into() }
    }

    fn screen(&self) -> String {
        self.capture(&[])
    }

    /// The screen and what scrolled off it.
    fn history(&self) -> String {
        self.capture(&["-S", "-1000"])
    }

    fn capture(&self, extra: &[&str]) -> String {
        let output = Command::new(tool("tmux"))
            .args(["capture-pane", "-p", "-t", &self.name])
            .args(extra)
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new(tool("tmux"))
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the screen shows `text`; returns the screen.
    fn shows(&self, text: &str) -> String {
        let mut screen = String::new();
        eventually_within(text, Duration::from_secs(20), || {
            screen = self.screen();
            screen.contains(text)
        });
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

pub fn top_shows_the_leak_and_its_keys_work() {
    let gateway = Gateway::start();
    let pid = gateway.pid();
    let probed = ProbedBytes::of(pid);
    let dir = tempfile::tempdir().unwrap();
    let exit = dir.path().join("exit");
    let command = format!(
        "{} top --pid {pid} {} --interval 200ms; echo exit=$? > {}; sleep 600",
        env!("CARGO_BIN_EXE_observer"),
        SPEC.map(|arg| format!("'{arg}'")).join(" "),
        exit.display()
    );
    let tmux = Tmux::start(&format!("observer-top-{pid}"), &command, &repo_file(""));
    tmux.shows("observer top");
    let cycles = 40;
    gateway.chat(cycles, 2);
    let leak = cycles as i64 * 256;
    let screen = tmux.shows(&format!("{leak} B"));
    let row = screen
        .lines()
        .find(|l| l.contains(&format!("{leak} B")) && l.contains("say_goodbye"))
        .unwrap_or_else(|| panic!("no leak row:\n{screen}"));
    assert!(row.contains("Session::say_goodbye:126"), "{row}\n{screen}");
    assert!(row.contains(&format!(" {cycles} ")), "{row}");

    // Enter expands the selected (top) site's stack.
    tmux.keys(&["Enter"]);
    let screen = tmux.shows("stack of site #1");
    assert!(
        screen.contains("leaky_gateway::codec::Encoder::encode"),
        "{screen}"
    );
    assert!(screen.contains("codec.rs:58"), "{screen}");

    // m sets a mark, and the change since it is shown.
    tmux.keys(&["m"]);
    tmux.shows("mark 'm1'");
    gateway.chat(20, 1);
    let screen = tmux.shows(&format!("+{} B (+20)", 20 * 256));
    assert!(screen.contains("since mark"), "{screen}");
    // The mark is the session's too.
    let diff = Command::new(env!("CARGO_BIN_EXE_observer"))
        .args(["diff", "m1", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains("+5120 B"),
        "{diff:?}"
    );
    // d hides the change, s sorts by another column.
    tmux.keys(&["d"]);
    eventually_within("the diff column goes", Duration::from_secs(10), || {
        !tmux.screen().contains("since mark")
    });
    tmux.keys(&["s"]);
    tmux.shows("sorted by outstanding buffers");

    // q detaches: the final report is printed in the restored terminal.
    tmux.keys(&["q"]);
    eventually_within("observer top exits", Duration::from_secs(20), || {
        exit.exists()
    });
    let status = std::fs::read_to_string(&exit).unwrap();
    assert_eq!(status.trim(), "exit=0");
    let screen = tmux.screen();
    assert!(
        !screen.contains("observer top "),
        "the view is gone:\n{screen}"
    );
    let history = tmux.history();
    assert!(
        history.contains(&format!("observer: detached from pid {pid}")),
        "{history}"
    );
    assert!(
        history.contains("report: stopped"),
        "the final report:\n{history}"
    );
    probed.assert_unchanged("after quitting observer top");
    gateway.chat(1, 1);
}
