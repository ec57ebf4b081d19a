//! The tables judged by gimli's own unwinding, address by address.
//!
//! For an address of an object's code, gimli finds the FDE through the
//! binary-search table of `.eh_frame_hdr` (not the FDE walk the tables are
//! built from) and evaluates its instructions up to the address, giving
//! the row in effect there; the table gives its row through the page index
//! and the walker's own binary search (`observer_ebpf::walk_step::
//! search_rows`). gimli's row is applied to a made-up machine state
//! (registers, and memory whose every word holds a value derived from its
//! address) as an unwinder would apply it; the table's row is stepped from
//! the same state by the walker's own step (`walk_step::caller_by_row`, the
//! code the eBPF programs run, with the processor's frame rules): the
//! caller's CFA, return address and frame pointer must be the same, or the
//! table must say it cannot follow the rule (an unsupported row), or that
//! the stack ends, or the walker must refuse the step for the reason its
//! rules give (a CFA not above the stack pointer; a return address left in
//! the link register above the first frame). On arm64 the step after a
//! frame-record step (stack pointer unknown, CFA from x29) is judged too.
//! Addresses no FDE covers must have no row.
//!
//! Objects: this test binary and the C library it runs with (x86-64, or
//! whatever the host is), and, when Debian's `aarch64-linux-gnu-gcc` is
//! installed, arm64 programs it compiles here with the flags that matter
//! to the rows (frame pointers or not, signed return addresses, large and
//! dynamic frames, a leaf) and the arm64 C library, dynamic linker and
//! libgcc it links against. Without the cross compiler the arm64 part is
//! skipped (with a line saying so) unless `OBSERVER_REQUIRE_CROSS_TOOLS`
//! is set, as `cargo xtask test` does once it has installed it.

use std::path::{Path, PathBuf};

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, Register, RegisterRule,
    UnwindContext, UnwindSection as _,
};
use object::{Object as _, ObjectSection as _, SectionKind};
use observer_ebpf::frame_rules::FrameRules;
use observer_ebpf::loc_eval::ReadUser;
use observer_ebpf::walk_step::{caller_by_row, Memory, Step};
use observer_ebpf::{aarch64, row_kind, InFlight, WalkState, MAX_NESTED_ALLOCS, UNKNOWN_SP};

use super::{find_row, pages, Encoding, ObjectTable};

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// The registers a frame is unwound from.
#[derive(Debug, Clone, Copy)]
struct State {
    pc: u64,
    sp: u64,
    fp: u64,
    /// arm64's x30; unused on x86-64.
    lr: u64,
}

/// The caller, as an unwinder finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Frame {
        cfa: u64,
        ra: u64,
        fp: u64,
    },
    /// Return address undefined: an entry point.
    End,
}

/// Made-up memory: every 8-byte word a value of its own.
fn memory(address: u64) -> u64 {
    address.rotate_left(17) ^ 0x5eed_0000_0000_5eed
}

/// [`memory`], as the walker's steps read it; no trampoline anywhere.
struct MadeUp;

impl ReadUser for MadeUp {
    fn read_u64(&self, address: u64) -> Option<u64> {
        Some(memory(address))
    }
}

impl Memory for MadeUp {
    fn is_trampoline(&self, _value: u64) -> bool {
        false
    }
}

/// How far a judged object was covered.
#[derive(Debug, Default)]
struct Verdict {
    /// Addresses judged.
    addresses: usize,
    /// Of those, the ones an FDE covers.
    covered: usize,
    /// Of those, the ones whose row the table does not follow.
    unsupported: usize,
    unsupported_examples: Vec<String>,
}

/// Judges `R`'s table of the ELF file `data` at every instruction of its
/// code (every 4th byte on arm64, every byte on x86-64), or, for a large
/// object, at a stride keeping it to about 300 000 addresses. Panics at
/// the first address where the table and gimli disagree.
fn judge<R: Encoding>(name: &str, data: &[u8]) -> Verdict {
    let file = object::File::parse(data).unwrap();
    assert_eq!(file.architecture(), R::MACHINE.architecture, "{name}");
    let table = ObjectTable::<R>::encoded_from_elf(data).unwrap();
    let index = pages(&table.rows, 0);
    let section = |name: &str| file.section_by_name(name);
    let eh_frame_section = section(".eh_frame").unwrap();
    let hdr_section = section(".eh_frame_hdr").expect("an .eh_frame_hdr");
    let eh_frame_data = eh_frame_section.data().unwrap();
    let hdr_data = hdr_section.data().unwrap();
    let mut eh_frame = EhFrame::new(eh_frame_data, LittleEndian);
    eh_frame.set_vendor(R::MACHINE.vendor);
    let mut bases = BaseAddresses::default()
        .set_eh_frame(eh_frame_section.address())
        .set_eh_frame_hdr(hdr_section.address());
    if let Some(text) = section(".text") {
        bases = bases.set_text(text.address());
    }
    if let Some(got) = section(".got") {
        bases = bases.set_got(got.address());
    }
    let hdr = EhFrameHdr::new(hdr_data, LittleEndian)
        .parse(&bases, 8)
        .unwrap();
    let hdr_table = hdr.table().expect("a search table");
    let mut context = UnwindContext::new();
    let arm64 = R::MACHINE.architecture == object::Architecture::Aarch64;
    let code_bytes: u64 = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .map(|s| s.size())
        .sum();
    let alignment = if arm64 { 4 } else { 1 };
    // At most ~300k addresses per object; odd strides on x86-64 so that
    // every offset within instructions is met somewhere.
    let mut stride = (code_bytes / 300_000).max(1) * alignment;
    if !arm64 && stride > 1 && stride.is_multiple_of(2) {
        stride += 1;
    }
    let mut verdict = Verdict::default();
    for code in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let mut address = code.address();
        while address < code.address() + code.size() {
            verdict.addresses += 1;
            let expected = hdr_table.unwind_info_for_address(
                &eh_frame,
                &bases,
                &mut context,
                address,
                EhFrame::cie_from_offset,
            );
            let ours = find_row(&table.rows, &index, address);
            match expected {
                Err(gimli::Error::NoUnwindInfoForAddress) => assert!(
                    ours.is_none_or(|row| row.kind() == row_kind::GAP),
                    "{name} {address:#x}: no FDE, but the table has {ours:?}"
                ),
                Err(err) => panic!("{name} {address:#x}: gimli: {err}"),
                Ok(row) => {
                    verdict.covered += 1;
                    let row = row.clone();
                    let Some(ours) = ours else {
                        panic!("{name} {address:#x}: an FDE, but no row: {row:?}")
                    };
                    if ours.kind() == row_kind::UNSUPPORTED {
                        // Counted: the callers say how many are fine.
                        verdict.unsupported += 1;
                        if verdict.unsupported_examples.len() < 3 {
                            verdict
                                .unsupported_examples
                                .push(format!("{address:#x}: {row:?}"));
                        }
                    } else {
                        compare::<R>(name, address, &row, &ours, &eh_frame);
                    }
                }
            }
            address += stride;
        }
    }
    assert!(verdict.covered > 0, "{name}: no address has an FDE");
    verdict
}

/// Compares the caller both give, from frame states that tell the rules
/// apart (distinct registers; the first frame and further up).
fn compare<R: Encoding>(
    name: &str,
    address: u64,
    row: &gimli::UnwindTableRow<usize>,
    ours: &R,
    eh_frame: &EhFrame<Reader<'_>>,
) {
    let return_address = if R::MACHINE.architecture == object::Architecture::Aarch64 {
        gimli::AArch64::X30
    } else {
        gimli::X86_64::RA
    };
    for state in [
        State {
            pc: address,
            sp: 0x7ffc_0000_1000,
            fp: 0x7ffc_0000_2000,
            lr: 0x5555_0000_1234,
        },
        State {
            pc: address,
            sp: 0x7ffc_0000_1ff0,
            fp: 0x7ffc_0000_1ff0 + 0x40,
            lr: 0x5555_0000_4321,
        },
    ] {
        let expected =
            by_gimli(row, return_address, state, eh_frame, &R::MACHINE).unwrap_or_else(|why| {
                panic!("{name} {address:#x}: the table follows {ours:?}, gimli cannot: {why}")
            });
        for first in [true, false] {
            let (step, walk) = step_by_row(ours, state, first);
            let wanted = walker_should_give::<R>(expected, state, first, ours);
            assert_eq!(
                (step, walk),
                wanted,
                "{name} {address:#x} (first frame: {first}): the walker's step by {ours:?} \
                 and gimli's {row:?} disagree"
            );
        }
        if let Caller::Frame { cfa, .. } = expected {
            judge_after_frame_record::<R>(name, address, ours, state, cfa, expected);
        }
    }
}

/// The walker's step from `state` by `row` (as the walk's first frame or
/// further up), with no allocate call in flight.
fn step_by_row<R: Encoding>(row: &R, state: State, first: bool) -> (Step, Option<Caller>) {
    let mut walk = WalkState {
        pc: state.pc,
        sp: state.sp,
        bp: state.fp,
        lr: state.lr,
        ..WalkState::default()
    };
    let in_flight = [InFlight::default(); MAX_NESTED_ALLOCS];
    let step = caller_by_row::<R::Frames, R, _>(&mut walk, row, first, &in_flight, &MadeUp);
    let caller = matches!(step, Step::Moved { .. }).then_some(Caller::Frame {
        cfa: walk.sp,
        ra: walk.pc,
        fp: walk.bp,
    });
    (step, caller)
}

/// What the walker's step must give where gimli gives `expected`: the
/// same caller (its return address as the walker records it), or a
/// refusal its rules explain.
fn walker_should_give<R: Encoding>(
    expected: Caller,
    state: State,
    first: bool,
    row: &R,
) -> (Step, Option<Caller>) {
    let Caller::Frame { cfa, ra, fp } = expected else {
        return (Step::End, None);
    };
    // A CFA at or below the stack pointer is a corrupt walk to the walker;
    // so is a return address still in the link register above the first
    // frame, which the walker does not carry from frame to frame (the
    // frame below has made a call since, which overwrote it).
    if !R::Frames::caller_is_above(cfa, state.sp, first) || (row.ra_offset() == 0 && !first) {
        return (Step::Broken, None);
    }
    let ra = R::Frames::strip_return_address(ra);
    (
        Step::Moved { dwarf: true },
        Some(Caller::Frame { cfa, ra, fp }),
    )
}

/// arm64, after a frame-record step: the stack pointer is unknown and a
/// row that says where the frame saved x29 gives the CFA from x29, which
/// points at that slot in a frame that keeps a frame record. From a state
/// where it does, the walker must find gimli's caller without the stack
/// pointer; elsewhere it must leave the step to the chain.
fn judge_after_frame_record<R: Encoding>(
    name: &str,
    address: u64,
    row: &R,
    state: State,
    cfa: u64,
    expected: Caller,
) {
    if !R::Frames::SP_MAY_BE_UNKNOWN {
        return;
    }
    let uses_record = row.kind() == row_kind::CFA_SP && row.fp_offset() != 0;
    let mut walk = WalkState {
        pc: state.pc,
        sp: UNKNOWN_SP,
        // x29 points where the frame saved the caller's x29.
        bp: cfa.wrapping_add(row.fp_offset() as i64 as u64),
        lr: state.lr,
        ..WalkState::default()
    };
    let in_flight = [InFlight::default(); MAX_NESTED_ALLOCS];
    let step = caller_by_row::<R::Frames, R, _>(&mut walk, row, false, &in_flight, &MadeUp);
    let wanted = match (row.kind(), expected) {
        (row_kind::CFA_SP, _) if !uses_record => Step::NoRow,
        (_, _) if row.ra_offset() == 0 => Step::Broken,
        (row_kind::CFA_SP, Caller::Frame { ra, fp, .. }) => {
            assert_eq!(
                (walk.sp, walk.pc, walk.bp),
                (cfa, R::Frames::strip_return_address(ra), fp),
                "{name} {address:#x}: the CFA from x29 by {row:?}"
            );
            Step::Moved { dwarf: true }
        }
        // CFA from x29 needs no stack pointer: judged above.
        _ => return,
    };
    assert_eq!(
        step, wanted,
        "{name} {address:#x}: after a frame record, {row:?}"
    );
}

/// The caller by gimli's row: CFA from its rule (an expression evaluated
/// with gimli's evaluator), registers by their rules.
fn by_gimli(
    row: &gimli::UnwindTableRow<usize>,
    return_address: Register,
    state: State,
    eh_frame: &EhFrame<Reader<'_>>,
    machine: &super::Machine,
) -> Result<Caller, String> {
    let register = |number: Register| -> Result<u64, String> {
        if number == machine.stack_pointer {
            Ok(state.sp)
        } else if number == machine.frame_pointer {
            Ok(state.fp)
        } else if number == return_address && machine.link_register {
            Ok(state.lr)
        } else if machine.architecture == object::Architecture::X86_64
            && number == gimli::X86_64::RA
        {
            Ok(state.pc)
        } else {
            Err(format!("register {number:?} is not in the state"))
        }
    };
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset {
            register: base,
            offset,
        } => register(*base)?.wrapping_add(*offset as u64),
        CfaRule::Expression(expression) => {
            let expression = expression.get(eh_frame).map_err(|e| e.to_string())?;
            let encoding = gimli::Encoding {
                address_size: 8,
                format: gimli::Format::Dwarf32,
                version: 4,
            };
            let mut evaluation = expression.evaluation(encoding);
            let mut result = evaluation.evaluate().map_err(|e| e.to_string())?;
            loop {
                match result {
                    gimli::EvaluationResult::Complete => break,
                    gimli::EvaluationResult::RequiresRegister { register: r, .. } => {
                        let value = gimli::Value::Generic(register(r)?);
                        result = evaluation
                            .resume_with_register(value)
                            .map_err(|e| e.to_string())?;
                    }
                    other => return Err(format!("the CFA expression needs {other:?}")),
                }
            }
            match evaluation.as_result() {
                [gimli::Piece {
                    location: gimli::Location::Address { address },
                    ..
                }] => *address,
                other => return Err(format!("the CFA expression gives {other:?}")),
            }
        }
    };
    let rule_value = |number: Register, unchanged: u64| -> Result<Option<u64>, String> {
        match row.register(number) {
            None | Some(RegisterRule::SameValue) => Ok(Some(unchanged)),
            Some(RegisterRule::Undefined) => Ok(None),
            Some(RegisterRule::Offset(offset)) => Ok(Some(memory(cfa.wrapping_add(offset as u64)))),
            Some(other) => Err(format!("rule {other:?}")),
        }
    };
    let unchanged_ra = if machine.link_register {
        state.lr
    } else {
        // x86-64 has no return-address register: "unchanged" says nothing.
        match row.register(return_address) {
            None | Some(RegisterRule::SameValue) => {
                return Err("x86-64 return address without a rule".into())
            }
            _ => 0,
        }
    };
    let Some(ra) = rule_value(return_address, unchanged_ra)? else {
        return Ok(Caller::End);
    };
    let fp = rule_value(machine.frame_pointer, state.fp)?.unwrap_or(state.fp);
    Ok(Caller::Frame { cfa, ra, fp })
}

/// Reads a file the test judges.
fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The x86-64 tables: this test binary, and its C library.
#[cfg(target_arch = "x86_64")]
#[test]
fn x86_64_tables_agree_with_gimli() {
    let exe = std::env::current_exe().unwrap();
    use observer_ebpf::x86_64::UnwindRow;
    let verdict = judge::<UnwindRow>("the test binary", &read(&exe));
    eprintln!("the test binary: {verdict:?}");
    for library in [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ] {
        let path = Path::new(library);
        if path.exists() {
            let verdict = judge::<UnwindRow>(library, &read(path));
            eprintln!("{library}: {verdict:?}");
        }
    }
}

/// A C program with the frames that matter to arm64 rows: a leaf that
/// keeps x30, frames whose record GCC puts below 4 KiB of locals (beyond
/// a byte of words), a dynamic frame (CFA from x29), calls through
/// pointers, and enough callee-saved registers to save them in pairs.
const ARM64_PROGRAM: &str = r#"
#include <alloca.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }

__attribute__((noinline)) void *get(size_t size) { return malloc(size + (size_t)leaf((int)size)); }

__attribute__((noinline)) void *big_frame(size_t size)
{
	volatile char buffer[4096];
	buffer[size % sizeof buffer] = 1;
	return get(size + (size_t)buffer[0]);
}

__attribute__((noinline)) void *dynamic_frame(size_t size)
{
	char *scratch = alloca(size + 1);
	memset(scratch, 0, size + 1);
	return big_frame(size + (size_t)scratch[size]);
}

__attribute__((noinline)) long saves(long a, long b, long c, long d, long (*f)(long))
{
	long x = f(a), y = f(b), z = f(c), w = f(d);
	return x * y + z * w + f(x + y + z + w);
}

static long twice(long x) { return 2 * x; }

int main(int argc, char **argv)
{
	void *p = dynamic_frame((size_t)argc * 16);
	printf("%p %ld\n", p, saves(argc, argc + 1, argc + 2, argc + 3, twice));
	free(p);
	return argv[0][0] == 'x';
}
"#;

/// Builds of [`ARM64_PROGRAM`]: the flags that change the rows.
const ARM64_BUILDS: [(&str, &[&str]); 6] = [
    ("fp-O1", &["-O1", "-fno-omit-frame-pointer"]),
    ("fp-O2", &["-O2", "-fno-omit-frame-pointer"]),
    ("nofp-O2", &["-O2", "-fomit-frame-pointer"]),
    (
        "pac-O1",
        &[
            "-O1",
            "-fno-omit-frame-pointer",
            "-mbranch-protection=pac-ret",
        ],
    ),
    (
        "nofp-pac-O2",
        &[
            "-O2",
            "-fomit-frame-pointer",
            "-mbranch-protection=pac-ret+leaf",
        ],
    ),
    ("bti-pac-O0", &["-O0", "-mbranch-protection=standard"]),
];

/// Where Debian's arm64 cross C library is (libc6-arm64-cross).
const ARM64_LIBRARIES: [&str; 3] = [
    "/usr/aarch64-linux-gnu/lib/libc.so.6",
    "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1",
    "/usr/aarch64-linux-gnu/lib/libgcc_s.so.1",
];

/// Debian's arm64 cross compiler, or `None` after saying what is not
/// tested (`untested`) without it; required when
/// `OBSERVER_REQUIRE_CROSS_TOOLS` is set (`cargo xtask test` sets it).
pub(crate) fn arm64_compiler(untested: &str) -> Option<&'static str> {
    let compiler = "aarch64-linux-gnu-gcc";
    let found = std::process::Command::new(compiler)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var_os("OBSERVER_REQUIRE_CROSS_TOOLS").is_none(),
            "{compiler} is required (OBSERVER_REQUIRE_CROSS_TOOLS): Debian's gcc-aarch64-linux-gnu"
        );
        eprintln!("{untested}: no {compiler} (Debian's gcc-aarch64-linux-gnu)");
        return None;
    }
    Some(compiler)
}

/// The arm64 builds of [`ARM64_PROGRAM`] (in the directory returned with
/// them), or `None` (said) without the cross compiler.
fn arm64_builds() -> Option<(tempfile::TempDir, Vec<(&'static str, PathBuf)>)> {
    let compiler = arm64_compiler("the arm64 unwind tables are not judged")?;
    let dir = tempfile::tempdir().unwrap();
    let builds = ARM64_BUILDS
        .iter()
        .map(|(name, flags)| {
            let flags: Vec<&str> = ["-g", "-Wall", "-Werror"]
                .iter()
                .chain(*flags)
                .copied()
                .collect();
            let binary = crate::test_c::compile_in(&dir, compiler, ARM64_PROGRAM, name, &flags);
            (*name, binary)
        })
        .collect();
    Some((dir, builds))
}

/// The arm64 tables of programs built every way that matters, and of the
/// C library they run with, agree with gimli at every instruction.
#[test]
fn arm64_tables_agree_with_gimli() {
    let Some((_dir, builds)) = arm64_builds() else {
        return;
    };
    for (name, path) in &builds {
        let verdict = judge::<aarch64::UnwindRow>(name, &read(path));
        eprintln!("{name}: {verdict:?}");
        assert_eq!(
            verdict.unsupported, 0,
            "{name}: every rule GCC wrote is followed"
        );
    }
    for library in ARM64_LIBRARIES {
        let path = Path::new(library);
        if !path.exists() {
            continue;
        }
        let verdict = judge::<aarch64::UnwindRow>(library, &read(path));
        eprintln!("{library}: {verdict:?}");
        assert!(
            verdict.unsupported * 1000 <= verdict.covered,
            "{library}: {verdict:?}"
        );
    }
}

/// Signed return addresses (`paciasp` … `autiasp`) are read: gimli
/// evaluates `DW_CFA_AARCH64_negate_ra_state` only when told the vendor,
/// and the rows after it are the ones that say where x30 was saved. A
/// leaf keeps its return address in x30.
#[test]
fn arm64_signed_functions_have_their_rows() {
    let Some((_dir, builds)) = arm64_builds() else {
        return;
    };
    let (_, path) = builds.iter().find(|(name, _)| *name == "pac-O1").unwrap();
    let data = read(path);
    let table = ObjectTable::<aarch64::UnwindRow>::encoded_from_elf(&data).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let symbol = |wanted: &str| {
        use object::ObjectSymbol as _;
        elf.symbols()
            .find(|s| s.name() == Ok(wanted))
            .map(|s| (s.address(), s.size()))
            .unwrap()
    };
    for function in ["get", "big_frame", "dynamic_frame", "saves", "main"] {
        let (start, size) = symbol(function);
        let rows: Vec<_> = table
            .rows
            .iter()
            .filter(|r| u64::from(r.pc) >= start && u64::from(r.pc) < start + size)
            .collect();
        assert!(
            rows.iter().any(|r| r.ra_offset != 0),
            "{function}: no row saves x30: {rows:?}"
        );
    }
    let (leaf, _) = symbol("leaf");
    let at = table.rows.partition_point(|r| u64::from(r.pc) <= leaf) - 1;
    assert_eq!(table.rows[at].ra_offset, 0, "a leaf keeps x30");
    // 4 KiB of locals below... GCC's frame record at the bottom.
    let (big, size) = symbol("big_frame");
    assert!(
        table
            .rows
            .iter()
            .filter(|r| u64::from(r.pc) >= big && u64::from(r.pc) < big + size)
            .any(|r| r.ra_offset < -1016),
        "big_frame saves x30 beyond a byte of words"
    );
}
