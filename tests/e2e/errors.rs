//! Bad input: one clear line, exit status 2, nothing attached.

use crate::support::*;

/// Runs the observer against the gateway with `args` replacing parts of
/// the spec, and returns (exit code, stderr lines).
fn run_observer(pid: &str, args: &[&str], privileged: bool) -> (Option<i32>, Vec<String>) {
    let mut spec: Vec<String> = SPEC.iter().map(|s| s.to_string()).collect();
    for pair in args.chunks(2) {
        let at = spec
            .iter()
            .position(|s| s == pair[0])
            .expect("flag in spec");
        spec[at + 1] = pair[1].to_string();
    }
    let mut command = if privileged {
        observer()
    } else {
        let mut setpriv = std::process::Command::new("setpriv");
        setpriv
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--inh-caps=-all", "--bounding-set=-all"])
            .arg(env!("CARGO_BIN_EXE_observer"));
        setpriv
    };
    let output = command
        .args(["attach", "--pid", pid, "--duration", "2s"])
        .args(&spec)
        .output()
        .expect("run observer");
    let stderr = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    (output.status.code(), stderr)
}

pub fn bad_input_gets_one_line_and_exit_2() {
    let gateway = Gateway::start();
    let pid = gateway.pid().to_string();
    let cases: [(&str, &[&str], bool, &str); 8] = [
        ("4194304", &[], true, "no process with PID 4194304"),
        (
            &pid,
            &["--alloc", "nope::Pool::allocate"],
            true,
            "no function 'nope::Pool::allocate'",
        ),
        (
            &pid,
            &["--alloc", "BufPool::alocate"],
            true,
            "did you mean bufpool::BufPool::allocate",
        ),
        (
            &pid,
            &["--alloc", "allocate"],
            true,
            "'allocate' is ambiguous",
        ),
        (
            &pid,
            &["--alloc", "leaky_gateway::protocol::parse_header"],
            true,
            "inlined at",
        ),
        (&pid, &["--release-id", "ret"], true, "reads ret"),
        (
            &pid,
            &["--size", "*(arg9+8)"],
            true,
            "bad location '*(arg9+8)'",
        ),
        (&pid, &[], false, "needs root, or CAP_BPF and CAP_PERFMON"),
    ];
    for (target, args, privileged, expected) in cases {
        let (code, stderr) = run_observer(target, args, privileged);
        assert_eq!(code, Some(2), "{args:?}: {stderr:?}");
        assert!(
            stderr[0].contains(expected),
            "{args:?}: expected '{expected}' in {stderr:?}"
        );
        if !stderr[0].starts_with("error: invalid value") {
            // clap adds a usage hint after its own line; ours is alone.
            assert_eq!(stderr.len(), 1, "{args:?}: {stderr:?}");
            assert!(stderr[0].starts_with("observer: error: "), "{stderr:?}");
        }
    }
    gateway.chat(2, 1);
    assert_eq!(
        gateway.stop(),
        2,
        "nothing attached, the gateway served as before"
    );
}
