//! The Prometheus endpoint, judged by Debian's Prometheus: a real server
//! scrapes the observer during a gateway session and its query API gives
//! the leaked bytes exactly; `promtool check metrics` accepts a scrape;
//! the observer's own cost is there.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const LEAKED_PER_SESSION: i64 = 256;

/// A query string, percent-encoded.
fn encode_query(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of `query` in Prometheus now: the one series' value.
fn query(prometheus: &str, query: &str) -> Option<f64> {
    let (status, body) = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", encode_query(query)),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    let answer: Value = serde_json::from_str(&body).ok()?;
    let result = answer["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

pub fn prometheus_scrapes_the_exact_leaked_bytes() {
    let gateway = Gateway::start();
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let observer = Observer::attach(
        gateway.pid(),
        &["--metrics", &port.to_string(), "--interval", "200ms"],
    );
    let announced = format!("observer: metrics at http://{metrics}/metrics");
    eventually("the endpoint is announced", || {
        observer.stderr().contains(&announced)
    });
    let cycles = 40;
    gateway.chat(cycles, 2);
    let leaked = cycles as i64 * LEAKED_PER_SESSION;

    // OpenMetrics for those who ask for it, as Prometheus does.
    let accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n";
    let (status, openmetrics) = http_get_with(&metrics, "/metrics", accept).unwrap();
    assert_eq!(status, 200);
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE pool_observer_allocations counter\n"));
    // The classic text format otherwise: one scrape, checked by promtool.
    let (status, payload) = http_get(&metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        payload.contains(&format!("pool_observer_outstanding_bytes {leaked}\n")),
        "{payload}"
    );
    let (checked, said) = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .output_with_stdin(payload.as_bytes());
    assert!(checked.success(), "promtool check metrics: {said}");
    // Every counter of the kernel's table, and the observer's cost.
    for info in &observer_ebpf::COUNTERS {
        assert!(
            payload.contains(&format!("pool_observer_{}", info.name)),
            "{}",
            info.name
        );
    }
    assert!(
        payload.contains("pool_observer_probe_hits_total "),
        "{payload}"
    );
    assert!(
        payload.contains("pool_observer_cpu_seconds_total{source="),
        "{payload}"
    );
    assert!(
        payload.contains("pool_observer_kernel_memory_bytes "),
        "{payload}"
    );
    assert!(
        payload.contains("pool_observer_program_cpu_seconds_total{program=\"pool_alloc_enter\"}"),
        "{payload}"
    );
    assert_eq!(http_get(&metrics, "/").unwrap().0, 404);

    // A real Prometheus server, on loopback, scraping every 500ms.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n  - job_name: observer\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let _prometheus = Guarded(
        Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    eventually_within(
        "Prometheus has the outstanding bytes",
        Duration::from_secs(60),
        || query(&web, "pool_observer_outstanding_bytes") == Some(leaked as f64),
    );
    let site = "pool_observer_site_outstanding_bytes{label=~\".*say_goodbye.*\"}";
    assert_eq!(query(&web, site), Some(leaked as f64));
    let healthy = "sum(pool_observer_site_outstanding_bytes{label=~\".*converse.*\"})";
    assert_eq!(query(&web, healthy), Some(0.0));
    // Cycles while Prometheus watches: it sees the new total.
    gateway.chat(10, 1);
    eventually_within(
        "Prometheus sees the growth",
        Duration::from_secs(30),
        || {
            query(&web, "pool_observer_outstanding_bytes")
                == Some((leaked + 10 * LEAKED_PER_SESSION) as f64)
        },
    );
    assert_eq!(query(&web, "up{job=\"observer\"}"), Some(1.0));
    // The observer's kernel memory on the gateway: within issue 10's bound
    // (28.8 MB, what it held before its per-thread tables grew with the
    // threads instead of being preallocated).
    let memory = query(&web, "pool_observer_kernel_memory_bytes").expect("kernel memory");
    assert!((1_048_576.0..=28_800_000.0).contains(&memory), "{memory}");
    eprintln!("kernel memory on the gateway: {:.1} MB", memory / 1e6);
    let (status, _) = observer.stop();
    assert!(status.success());
}

pub fn a_metrics_port_in_use_is_refused_before_attaching() {
    let gateway = Gateway::start();
    let probed = ProbedBytes::of(gateway.pid());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let pid = gateway.pid().to_string();
    let (code, _, stderr) =
        observer_command(&[&["attach", "--pid", &pid, "--metrics", &port][..], &SPEC].concat());
    assert_eq!(code, Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!(
            "observer: error: --metrics 127.0.0.1:{port}: the address is in use"
        )),
        "{stderr}"
    );
    probed.assert_unchanged("port in use");
    let (code, _, stderr) = observer_command(
        &[
            &["attach", "--pid", &pid, "--metrics", "localhost:x"][..],
            &SPEC,
        ]
        .concat(),
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("is not an address to serve metrics on"),
        "{stderr}"
    );
}

/// Runs a command with `input` on its stdin: (status, stderr and stdout).
trait WithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> (std::process::ExitStatus, String);
}

impl WithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> (std::process::ExitStatus, String) {
        use std::io::Write as _;
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        (output.status, text)
    }
}
