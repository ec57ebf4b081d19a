//! The shipped binary (`cargo xtask dist`), as the people who attach to a
//! production host use it: copied alone into an empty directory, run with
//! an empty environment, where no source tree, toolchain or
//! `/run/observer` exists.

use std::path::PathBuf;
use std::process::Command;

use crate::ci_gate::{leak_check_with, CYCLES};
use crate::support::*;

/// Set by `cargo xtask test` to the binary `cargo xtask dist` built.
pub const DIST_VARIABLE: &str = "OBSERVER_DIST_BINARY";

const CODEC: &str = "tests/leaky-gateway/src/codec.rs";
const FRAME_BUFFER: i64 = 256;

/// Whether this run has a dist binary to test.
pub fn dist_binary_given() -> Result<(), String> {
    match std::env::var_os(DIST_VARIABLE) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{DIST_VARIABLE} is not set: `cargo xtask test` builds the static binary and sets it"
        )),
    }
}

fn dist_binary() -> PathBuf {
    let path = PathBuf::from(std::env::var_os(DIST_VARIABLE).unwrap());
    assert!(
        path.is_file(),
        "{DIST_VARIABLE}: no file {}",
        path.display()
    );
    path
}

/// The copy, alone in a fresh directory (it even starts with that
/// directory as the root); a private, empty `/run` (a
/// mount namespace of its own, so this host's `/run` is left alone); the
/// environment emptied as `env -i PATH=/usr/bin:/bin` does. It attaches,
/// reports the exact leak, serves its control socket from the `/run` it
/// made itself, and leaves nothing in the gateway.
pub fn the_static_binary_runs_alone_from_an_empty_directory() {
    let directory = tempfile::tempdir().unwrap();
    let copy = directory.path().join("observer");
    std::fs::copy(dist_binary(), &copy).unwrap();
    let listing: Vec<_> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(listing, ["observer"], "the copy is alone");
    // With that directory as the root, there is no loader and no libc:
    // only a static binary starts there.
    let chrooted = Command::new("chroot")
        .arg(directory.path())
        .args(["/observer", "--version"])
        .output()
        .unwrap();
    assert!(
        chrooted.status.success(),
        "{}",
        String::from_utf8_lossy(&chrooted.stderr)
    );
    assert!(String::from_utf8_lossy(&chrooted.stdout).starts_with("observer "));

    let gateway = Gateway::start();
    let probed = ProbedBytes::of(gateway.pid());
    let before_attach = 20;
    gateway.chat(before_attach, 2);

    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /run && exec env -i PATH=/usr/bin:/bin ./observer "$@""#)
        .arg("sh")
        .args(attach_arguments(gateway.pid(), &SPEC, &[]))
        .current_dir(directory.path());
    // unshare and sh exec: the child is the observer.
    let mut observer = Observer::spawn(command, |child| child);
    let socket = format!("/run/observer/{}.sock", gateway.pid());
    eventually("its control socket, made in an empty /run", || {
        observer.stderr().iter().any(|line| line.contains(&socket))
    });
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", observer.pid())).unwrap(),
        copy,
        "the copy is what runs"
    );
    let environment = std::fs::read(format!("/proc/{}/environ", observer.pid())).unwrap();
    assert_eq!(environment, b"PATH=/usr/bin:/bin\0");

    let cycles = 60;
    gateway.chat(cycles, 3);
    let report = observer.report();
    assert_eq!(report["target"]["pid"], gateway.pid());
    let leak = site_through(&report, "say_goodbye");
    assert_eq!(leak["rank"], 1, "the leak is the top site");
    assert_eq!(int(&leak["buffers"]), cycles as i64);
    assert_eq!(int(&leak["bytes"]), cycles as i64 * FRAME_BUFFER);
    assert_eq!(frames(leak)[0]["function"], ALLOC);
    let encoder = frames(leak)
        .iter()
        .find(|f| f["function"] == "leaky_gateway::codec::Encoder::encode")
        .unwrap_or_else(|| panic!("no encoder frame: {leak:#}"));
    assert!(encoder["file"].as_str().unwrap().ends_with(CODEC));
    assert_eq!(encoder["line"], source_line(CODEC, ".allocate("));
    for stack in leak["stacks"].as_array().unwrap() {
        assert_eq!(stack["ending"], "complete", "{leak:#}");
    }
    for site in sites(&report) {
        if !has_frame(site, "say_goodbye") {
            assert_eq!(int(&site["buffers"]), 0, "healthy site: {site:#}");
        }
    }
    assert_accounting_balances(&report);

    // A client in the observer's mount namespace, where its socket is.
    let client = Command::new("nsenter")
        .args(["--target", &observer.pid().to_string(), "--mount", "--"])
        .arg(&copy)
        .args(["report", "--format", "json", "--pid"])
        .arg(gateway.pid().to_string())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let over_socket: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    assert_eq!(over_socket["reason"], "control");
    assert_eq!(int(&over_socket["outstanding"]["buffers"]), cycles as i64);

    let (status, last) = observer.stop();
    assert!(status.success(), "{status}");
    let seen = int(&last["outstanding"]["buffers"]);
    assert_eq!(seen, cycles as i64);
    probed.assert_unchanged("after the static binary detached");
    assert_eq!(gateway.stop(), before_attach as i64 + seen);
}

/// docs/ci.md's job: the binary and its checksum file copied together,
/// the checksum checked, then the CI script run with it: the leaky
/// gateway fails the run with exactly its disconnect leak.
pub fn the_static_binary_checks_out_and_gates_a_ci_run() {
    let directory = tempfile::tempdir().unwrap();
    let binary = dist_binary();
    let name = binary.file_name().unwrap();
    let checksum = binary.with_file_name(format!("{}.sha256", name.to_string_lossy()));
    for file in [&binary, &checksum] {
        std::fs::copy(file, directory.path().join(file.file_name().unwrap())).unwrap();
    }
    let check = Command::new("sha256sum")
        .arg("--check")
        .arg(checksum.file_name().unwrap())
        .current_dir(directory.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let run = leak_check_with(&directory.path().join(name), &targets_dir(), &[]);
    assert_eq!(run.code, Some(1), "leak found means exit 1: {}", run.stderr);
    let verdict = &run.report["verdict"];
    assert_eq!(verdict["leak_found"], true);
    assert_eq!(int(&verdict["counted_buffers"]), CYCLES as i64);
    assert_eq!(int(&verdict["counted_bytes"]), CYCLES as i64 * FRAME_BUFFER);
    assert_eq!(run.report["command"]["exit_code"], 0);
    let leak = site_through(&run.report, "say_goodbye");
    assert_eq!(int(&leak["judgement"]["counted_buffers"]), CYCLES as i64);
}
