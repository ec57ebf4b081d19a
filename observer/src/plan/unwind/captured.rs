//! The walker's steps judged on real stacks: this test captures its own
//! registers and a copy of its stack at the bottom of a deep, varied call
//! chain on a thread of its own, walks the copy on the host with the tables
//! the observer builds for the objects mapped (this test binary, the C
//! library) and the walker's own code (`observer_ebpf::walk_step`: the
//! row search, the step by a row, the frame-pointer rules where no row
//! applies), and compares every return address with what an independent
//! unwinder finds for the same stack at the same moment: the C runtime's
//! `_Unwind_Backtrace` (libgcc), which reads `.eh_frame` itself.
//!
//! x86-64 only: the capture is a few instructions of x86-64 assembly, and
//! arm64 builds of the unit tests are not run (the arm64 walker is judged
//! row by row in `judge.rs`, and in arm64 VMs end to end).

use std::collections::HashMap;
use std::ffi::c_void;
use std::hint::black_box;

use observer_ebpf::frame_rules::X86_64Frames;
use observer_ebpf::loc_eval::ReadUser;
use observer_ebpf::walk_step::{caller_by_frame_pointer, caller_by_row, Memory, Step};
use observer_ebpf::{InFlight, WalkState, MAX_FRAMES, MAX_NESTED_ALLOCS};

use super::{pages, ObjectTable, X86_64Row};
use crate::resolve::elf::ElfInfo;
use crate::resolve::process::{Mapping, Process};

/// What the capture saw: the registers where it stood, the stack from
/// there to the end of its mapping, and libgcc's return addresses.
struct Captured {
    pc: u64,
    sp: u64,
    bp: u64,
    stack: Vec<u8>,
    /// `_Unwind_GetIP` of every frame `_Unwind_Backtrace` reported:
    /// `libgcc_trace`'s, the capturing function's, then return addresses.
    libgcc: Vec<u64>,
}

impl ReadUser for Captured {
    fn read_u64(&self, address: u64) -> Option<u64> {
        let at = usize::try_from(address.checked_sub(self.sp)?).ok()?;
        let bytes = self.stack.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

impl Memory for Captured {
    fn is_trampoline(&self, _value: u64) -> bool {
        false
    }
}

unsafe extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(context: *mut c_void, argument: *mut c_void) -> i32,
        argument: *mut c_void,
    ) -> i32;
    fn _Unwind_GetIP(context: *mut c_void) -> usize;
}

/// `_Unwind_Backtrace`'s callback: collects each frame's IP.
extern "C" fn collect_ip(context: *mut c_void, argument: *mut c_void) -> i32 {
    // SAFETY: `argument` is the `Vec<u64>` `libgcc_trace` passed, alive
    // and not otherwise borrowed during the call; `context` is libgcc's
    // own, valid for the callback.
    unsafe {
        let ips = &mut *argument.cast::<Vec<u64>>();
        ips.push(_Unwind_GetIP(context) as u64);
    }
    0 // _URC_NO_REASON: go on.
}

/// libgcc's return addresses from the caller of this function up.
#[inline(never)]
fn libgcc_trace() -> Vec<u64> {
    let mut ips: Vec<u64> = Vec::new();
    // SAFETY: the callback matches libgcc's `_Unwind_Trace_Fn` and only
    // touches `ips` through the pointer, which outlives the call.
    unsafe { _Unwind_Backtrace(collect_ip, (&raw mut ips).cast()) };
    ips
}

/// Captures the registers here, the stack above them and libgcc's view
/// of the same frames.
#[inline(never)]
fn capture() -> Captured {
    let (pc, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers into outputs; touches neither memory
    // nor the stack nor the flags.
    unsafe {
        std::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let stack_end = maps
        .lines()
        .filter_map(Mapping::parse)
        .find(|mapping| mapping.contains(sp))
        .expect("the stack pointer is in a mapping")
        .end;
    // SAFETY: [sp, stack_end) is the rest of this thread's stack mapping:
    // mapped, readable, and (above sp) the frames of this function and its
    // callers, which nothing frees while it runs.
    let stack =
        unsafe { std::slice::from_raw_parts(sp as *const u8, (stack_end - sp) as usize) }.to_vec();
    let libgcc = libgcc_trace();
    Captured {
        pc,
        sp,
        bp,
        stack,
        libgcc,
    }
}

/// A call chain whose frames differ in shape: plain recursion, a frame
/// with a large array, a closure called through a `dyn` reference, a
/// generic instance. Every call is followed by work, so none is a tail
/// call the compiler could turn into a jump.
#[inline(never)]
fn descend(depth: u32) -> Captured {
    let captured = match depth {
        0 => capture(),
        _ => match depth % 4 {
            0 => large_frame(depth - 1),
            1 => through_dyn(&|d| descend(d), depth - 1),
            2 => generic::<u16>(depth - 1),
            _ => descend(depth - 1),
        },
    };
    black_box(captured)
}

#[inline(never)]
fn large_frame(depth: u32) -> Captured {
    let mut scratch = [0u8; 4096];
    scratch[depth as usize % 4096] = 1;
    let captured = descend(black_box(depth + u32::from(black_box(&scratch)[0]) - 1));
    black_box(&scratch);
    captured
}

#[inline(never)]
fn through_dyn(next: &dyn Fn(u32) -> Captured, depth: u32) -> Captured {
    black_box(next(depth))
}

#[inline(never)]
fn generic<T: From<u8> + Copy>(depth: u32) -> Captured {
    let value = black_box(T::from(3));
    let captured = descend(depth);
    black_box(value);
    captured
}

/// One object's tables, where it is mapped.
struct Tabled {
    start: u64,
    end: u64,
    bias: u64,
    rows: std::sync::Arc<Vec<X86_64Row>>,
    index: std::sync::Arc<Vec<(u32, u32, u32)>>,
}

/// The tables of every executable mapping of this process, built as the
/// observer builds them for a target.
fn tables() -> Vec<Tabled> {
    let process = Process::open(std::process::id()).unwrap();
    let mut built: HashMap<String, (std::sync::Arc<Vec<_>>, std::sync::Arc<Vec<_>>)> =
        HashMap::new();
    let mut out = Vec::new();
    for mapping in process.executable_mappings().unwrap() {
        if !mapping.path.starts_with('/') {
            continue;
        }
        let Ok(info) = ElfInfo::read(std::path::Path::new(&mapping.path)) else {
            continue;
        };
        let Some(bias) = info.load_bias(mapping.start, mapping.end, mapping.file_offset) else {
            continue;
        };
        let (rows, index) = built
            .entry(mapping.path.clone())
            .or_insert_with(|| {
                let data = std::fs::read(&mapping.path).unwrap();
                let table = ObjectTable::<X86_64Row>::encoded_from_elf(&data).unwrap();
                let index = pages(&table.rows, 0);
                (table.rows.into(), index.into())
            })
            .clone();
        out.push(Tabled {
            start: mapping.start,
            end: mapping.end,
            bias,
            rows,
            index,
        });
    }
    out
}

/// The row in effect at `pc`, found as the walker finds it.
fn find_row(tables: &[Tabled], pc: u64) -> Option<X86_64Row> {
    let object = tables.iter().find(|t| (t.start..t.end).contains(&pc))?;
    super::find_row(&object.rows, &object.index, pc.wrapping_sub(object.bias))
}

/// How the host walk ended, and its frames (return addresses after the
/// first frame's pc).
#[derive(Debug)]
struct Walked {
    frames: Vec<u64>,
    /// The caller's CFA at each step: x86-64 keeps the return address
    /// just below it.
    cfas: Vec<u64>,
    last: Step,
    by_frame_pointer: usize,
}

/// Walks `captured` as the eBPF walker does frame by frame: the row at the
/// frame (at `pc − 1` above the first, a return address pointing after
/// its call), its step, and the frame-pointer rules where no row applies.
fn walk(captured: &Captured, tables: &[Tabled]) -> Walked {
    let mut state = WalkState {
        pc: captured.pc,
        sp: captured.sp,
        bp: captured.bp,
        ..WalkState::default()
    };
    let in_flight = [InFlight::default(); MAX_NESTED_ALLOCS];
    let mut walked = Walked {
        frames: vec![captured.pc],
        cfas: Vec::new(),
        last: Step::NoRow,
        by_frame_pointer: 0,
    };
    while walked.frames.len() < MAX_FRAMES {
        let first = walked.frames.len() == 1;
        let lookup = if first { state.pc } else { state.pc - 1 };
        let mut step = match find_row(tables, lookup) {
            Some(row) => {
                caller_by_row::<X86_64Frames, _, _>(&mut state, &row, first, &in_flight, captured)
            }
            None => Step::NoRow,
        };
        if step == Step::NoRow {
            walked.by_frame_pointer += 1;
            step =
                caller_by_frame_pointer::<X86_64Frames, _>(&mut state, first, &in_flight, captured);
        }
        walked.last = step;
        match step {
            Step::Moved { .. } if state.pc != 0 => {
                walked.frames.push(state.pc);
                walked.cfas.push(state.sp);
            }
            _ => break,
        }
    }
    walked
}

/// [`descend`]`(depth)` captured on a thread of its own (8 MiB of stack).
fn captured_on_a_thread(depth: u32) -> Captured {
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || descend(depth))
        .unwrap()
        .join()
        .unwrap()
}

impl Captured {
    /// libgcc's return addresses: after its first two frames
    /// (`libgcc_trace` and `capture`, at its call of libgcc_trace), and
    /// without its last, past the thread's start (whose return address is
    /// undefined), which reports an IP of 0; the walk ends before it.
    fn libgcc_return_addresses(&self) -> &[u64] {
        match &self.libgcc[2..] {
            [rest @ .., 0] => rest,
            all => all,
        }
    }
}

/// A 120-frame chain (two frames a level in a debug build) on a thread of its own, down to the C library's
/// thread start: the host walk's return addresses are libgcc's, one for
/// one, and the walk ends where libgcc's does, at the stack's end.
#[test]
fn captured_stacks_walk_as_libgcc_unwinds_them() {
    let captured = captured_on_a_thread(70);
    let tables = tables();
    let walked = walk(&captured, &tables);
    assert_eq!(
        walked.last,
        Step::End,
        "the walk reached the stack's end: {walked:?}"
    );
    // From capture's caller on, both list return addresses.
    let ours = &walked.frames[1..];
    let theirs = captured.libgcc_return_addresses();
    assert!(ours.len() > 120, "{} frames", ours.len());
    assert_eq!(ours, theirs, "the walk's return addresses and libgcc's");
    assert_eq!(walked.by_frame_pointer, 0, "every frame has its row");
}

/// The judge can fail: the same stack with one return-address slot changed
/// far from the capture gives a different walk from there on.
#[test]
fn a_changed_return_address_changes_the_walk() {
    let mut captured = captured_on_a_thread(40);
    let tables = tables();
    let before = walk(&captured, &tables);
    // The 20th frame's return address: the slot below its CFA.
    let slot = before.cfas[19] - 8;
    let at = (slot - captured.sp) as usize;
    assert_eq!(captured.read_u64(slot), Some(before.frames[20]));
    captured.stack[at..at + 8].copy_from_slice(&0x1234u64.to_le_bytes());
    let after = walk(&captured, &tables);
    assert_eq!(after.frames[..20], before.frames[..20]);
    assert_ne!(after.frames, before.frames);
    assert_ne!(&after.frames[1..], captured.libgcc_return_addresses());
}
