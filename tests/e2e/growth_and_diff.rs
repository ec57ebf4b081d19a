//! The story's other questions, live: spike or slow growth? how much per
//! connect/disconnect? (growth classification, marks and diffs, --older-than)

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

pub fn disconnect_site_reads_as_steady_growth() {
    let gateway = Gateway::start();
    let mut observer = Observer::attach(gateway.pid(), &["--interval", "100ms"]);
    for _ in 0..6 {
        gateway.chat(20, 2);
        std::thread::sleep(Duration::from_millis(250));
    }
    let report = observer.report();
    let leak = site_through(&report, "say_goodbye");
    assert_eq!(int(&leak["buffers"]), 120);
    let growth = &leak["growth"];
    assert_eq!(growth["trend"], "steady-growth", "{growth:#}");
    assert!(growth["samples"].as_u64().unwrap() >= 10, "{growth:#}");
    assert!(growth["bytes_per_min"].as_f64().unwrap() > 0.0);
    for site in sites(&report)
        .iter()
        .filter(|s| !has_frame(s, "say_goodbye"))
    {
        assert_ne!(
            site["growth"]["trend"], "steady-growth",
            "healthy site grows: {site:#}"
        );
    }
    assert_eq!(report["growth"]["trend"], "steady-growth");
    let (status, _) = observer.stop();
    assert!(status.success());
}

pub fn marks_and_diff_give_bytes_per_cycle() {
    let gateway = Gateway::start();
    let pid = gateway.pid();
    let observer = Observer::attach(pid, &[]);
    let socket = format!("/run/observer/{pid}.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "control socket is owner-only");

    gateway.chat(20, 2);
    let marked = observer.control(pid, &["mark", "before"]);
    assert!(marked.contains("mark 'before'"), "{marked}");
    let cycles = 100;
    gateway.chat(cycles, 2);
    observer.control(pid, &["mark", "after"]);

    let per = cycles.to_string();
    let json = observer.control(
        pid,
        &["diff", "before", "after", "--per", &per, "--format", "json"],
    );
    let diff: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(diff["per"], cycles);
    assert_eq!(
        diff["sites"].as_array().unwrap().len(),
        1,
        "only the leak changed: {diff:#}"
    );
    let site = &diff["sites"][0];
    assert_eq!(site["delta"]["bytes_per_cycle"], 256.0);
    assert_eq!(site["delta"]["buffers_per_cycle"], 1.0);
    assert!(has_frame(site, "say_goodbye"));
    let text = observer.control(pid, &["diff", "before", "after", "--per", &per]);
    assert!(text.contains("+256 B (1 buffer) per cycle"), "{text}");

    let report: Value =
        serde_json::from_str(&observer.control(pid, &["report", "--format", "json"])).unwrap();
    assert_eq!(report["reason"], "control");
    let folded = observer.control(pid, &["report", "--format", "folded"]);
    let line = folded.lines().next().expect("one folded line");
    assert!(
        line.ends_with(&format!(";{ALLOC} {}", (cycles + 20) * 256)),
        "{line}"
    );

    let (code, _, stderr) =
        observer_command(&["diff", "before", "nope", "--pid", &pid.to_string()]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("no mark 'nope' (marks so far: before, after)"),
        "{stderr}"
    );
    let (status, _) = observer.stop();
    assert!(status.success());
    assert!(
        !std::path::Path::new(&socket).exists(),
        "socket removed on exit"
    );
}

pub fn older_than_keeps_in_flight_buffers_out() {
    let gateway = Gateway::start();
    let mut observer = Observer::attach(gateway.pid(), &["--older-than", "2s"]);
    gateway.chat(30, 1);
    let young = observer.report();
    let leak = site_through(&young, "say_goodbye");
    assert_eq!(int(&leak["buffers"]), 0, "younger than 2s: in flight");
    assert_eq!(int(&leak["in_flight_buffers"]), 30);
    assert_eq!(young["older_than_secs"], 2.0);
    std::thread::sleep(Duration::from_millis(2500));
    let old = observer.report();
    let leak = site_through(&old, "say_goodbye");
    assert_eq!(int(&leak["buffers"]), 30);
    assert_eq!(int(&leak["in_flight_buffers"]), 0);
    let (status, _) = observer.stop();
    assert!(status.success());
}
