//! The observer must never leave anything in the target: probes go away
//! when it exits, normally or killed.

use aya::programs::loaded_programs;
use observer::resolve::elf::ElfInfo;
use observer::resolve::process::Process;
use observer_ebpf::names;

use crate::support::*;

/// Where the first byte of `function` is mapped in `pid`.
pub fn runtime_address(pid: u32, function: &str) -> u64 {
    let process = Process::open(pid).unwrap();
    let elf = ElfInfo::read(&process.exe_path()).unwrap();
    let symbol = elf
        .functions
        .iter()
        .find(|f| f.demangled == function)
        .unwrap_or_else(|| panic!("{function} not found"));
    let offset = elf.file_offset(symbol.address).unwrap();
    let exe = std::fs::read_link(process.exe_path()).unwrap();
    let mapping = process
        .executable_mappings()
        .unwrap()
        .into_iter()
        .find(|m| {
            std::path::Path::new(&m.path) == exe
                && (m.file_offset..m.file_offset + (m.end - m.start)).contains(&offset)
        })
        .expect("mapping of the function");
    mapping.start + offset - mapping.file_offset
}

/// True while a program of ours is loaded anywhere in the kernel (names
/// are truncated to 15 characters by the kernel).
fn our_programs_loaded() -> bool {
    let ours: Vec<&str> = [
        names::PROG_ALLOC_ENTER,
        names::PROG_ALLOC_RETURN,
        names::PROG_RELEASE_ENTER,
    ]
    .iter()
    .map(|n| &n[..n.len().min(15)])
    .collect();
    loaded_programs()
        .filter_map(Result::ok)
        .any(|p| p.name_as_str().is_some_and(|name| ours.contains(&name)))
}

pub fn detaching_leaves_no_probe_behind() {
    let gateway = Gateway::start();
    let pid = gateway.pid();
    let probed: Vec<(u64, u8)> = [ALLOC, RELEASE]
        .iter()
        .map(|f| {
            let address = runtime_address(pid, f);
            (address, byte_in_memory(pid, address))
        })
        .collect();
    for (_, original) in &probed {
        assert_ne!(*original, BREAKPOINT);
    }
    let is_patched = || {
        probed
            .iter()
            .any(|(address, _)| byte_in_memory(pid, *address) == BREAKPOINT)
    };
    let is_restored = || {
        probed
            .iter()
            .all(|(address, original)| byte_in_memory(pid, *address) == *original)
    };
    assert!(
        !our_programs_loaded(),
        "another observer is running; run these tests alone"
    );

    // Normal exit.
    let observer = Observer::attach(pid, &[]);
    assert!(
        probed
            .iter()
            .all(|(address, _)| byte_in_memory(pid, *address) == BREAKPOINT),
        "while attached the kernel's breakpoint is in the target's code"
    );
    assert!(our_programs_loaded());
    gateway.chat(3, 1);
    let (status, _) = observer.stop();
    assert!(status.success());
    eventually("probes removed after a normal exit", || {
        is_restored() && !our_programs_loaded()
    });
    gateway.chat(3, 1);

    // SIGKILL: the kernel closes the observer's fds and removes the probes.
    let observer = Observer::attach(pid, &[]);
    assert!(is_patched());
    observer.kill();
    eventually("probes removed after SIGKILL", || {
        is_restored() && !our_programs_loaded()
    });
    gateway.chat(3, 1);
    assert_eq!(
        gateway.stop(),
        9,
        "the gateway kept serving: 9 sessions, 9 leaked buffers"
    );
}

/// Kernel log lines the kernel writes when it gives up removing a uprobe.
pub fn leaked_uprobes_logged() -> usize {
    let output = std::process::Command::new("dmesg")
        .output()
        .expect("dmesg: the kernel log is how a leaked uprobe shows");
    assert!(
        output.status.success(),
        "dmesg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("leaking uprobe"))
        .count()
}

/// SIGKILL at every moment of attaching: the uprobes are registered by a
/// child that a signal to the observer cannot interrupt, so the kernel
/// never gives up removing one, and nothing stays in the target.
pub fn a_kill_while_attaching_leaks_nothing() {
    let gateway = Gateway::start();
    let pid = gateway.pid();
    let probed: Vec<(u64, u8)> = [ALLOC, RELEASE]
        .iter()
        .map(|f| {
            let address = runtime_address(pid, f);
            (address, byte_in_memory(pid, address))
        })
        .collect();
    let leaked_before = leaked_uprobes_logged();
    // How long attaching takes here, to spread the kills over it.
    let started = std::time::Instant::now();
    let first = Observer::attach(pid, &[]);
    let attach_time = started.elapsed();
    first.kill();
    for step in 0..24u32 {
        let delay = attach_time.mul_f64(0.4 + 0.03 * f64::from(step));
        let mut child = observer()
            .args(["attach", "--pid", &pid.to_string()])
            .args(SPEC)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start observer");
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        remove_killed_session_socket(pid);
        eventually("probes removed after a kill while attaching", || {
            probed
                .iter()
                .all(|(address, original)| byte_in_memory(pid, *address) == *original)
                && !our_programs_loaded()
        });
    }
    assert_eq!(
        leaked_uprobes_logged(),
        leaked_before,
        "the kernel logged 'leaking uprobe'"
    );
    gateway.chat(3, 1);
    assert_eq!(gateway.stop(), 3, "the gateway kept serving");
}
