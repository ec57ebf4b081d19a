//! The location evaluator judged by gimli's DWARF evaluation, on real
//! location expressions: every `DW_AT_location` of this test binary and of
//! the C library's debug file (when the host has it: Debian's libc6-dbg)
//! that [`decode`] reads is turned into the location language
//! ([`Place::word_at`]), parsed and compiled as the planner does
//! ([`Location`]), and evaluated by the evaluator the eBPF programs run
//! (`observer_ebpf::loc_eval::evaluate`) on made-up registers and memory.
//! gimli evaluates the original expression on the same registers and
//! memory; the first 8 bytes of the value must be the same.
//!
//! x86-64 only: the register names and the host's objects are x86-64's
//! (arm64 locations are compiled and evaluated by the same code, with the
//! numbering `observer_ebpf`'s tests pin for both).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use gimli::{EndianSlice, LittleEndian};
use object::Object as _;
use observer_ebpf::loc_eval::{evaluate, NotEvaluable, ReadUser, Registers};
use observer_ebpf::LOC_BASE_SAVED_COUNT;

use super::places::{decode, frame_base_register, Place};
use crate::arch::ARGUMENT_REGISTERS;
use crate::plan::loc::Location;

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// Made-up registers: each a distinct value.
fn register(number: u16) -> u64 {
    0x7ffd_0000_0000 + u64::from(number) * 0x1_0010 + 0x28
}

/// Made-up memory: every 8-byte word a value of its own.
fn memory(address: u64) -> u64 {
    address.rotate_left(23) ^ 0x10c0_0000_0000_c001
}

struct MadeUp;

impl Registers for MadeUp {
    fn register(&self, number: u8) -> Result<u64, NotEvaluable> {
        Ok(register(u16::from(number)))
    }
}

impl ReadUser for MadeUp {
    fn read_u64(&self, address: u64) -> Option<u64> {
        Some(memory(address))
    }
}

/// What was judged in one object.
#[derive(Debug, Default)]
struct Verdict {
    /// Expressions seen.
    expressions: usize,
    /// Of those, the ones the observer reads (decoded, a word at 0).
    read: usize,
    /// Of those, the ones compared with gimli's value.
    compared: usize,
}

/// Judges every location expression of `path`'s DWARF (at most `limit`).
fn judge(path: &Path, limit: usize) -> Verdict {
    let data = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let file = object::File::parse(&*data).unwrap();
    let sections = gimli::DwarfSections::load(|id| -> Result<Cow<[u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|section| super::elf::section_bytes(&section).ok())
            .unwrap_or(Cow::Borrowed(&[])))
    })
    .unwrap();
    let dwarf = sections.borrow(|section| EndianSlice::new(section, LittleEndian));
    let mut verdict = Verdict::default();
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let unit = dwarf.unit(header).unwrap();
        let mut entries = unit.entries();
        // The frame base of the innermost enclosing subprogram, by depth.
        let mut frame_bases: Vec<(isize, Option<u16>)> = Vec::new();
        while let Some(entry) = entries.next_dfs().unwrap() {
            let depth = entry.depth();
            frame_bases.retain(|(at, _)| *at < depth);
            if entry.tag() == gimli::DW_TAG_subprogram {
                let base = match entry.attr_value(gimli::DW_AT_frame_base) {
                    Some(gimli::AttributeValue::Exprloc(expression)) => {
                        frame_base_register(expression.0.slice())
                    }
                    _ => None,
                };
                frame_bases.push((depth, base));
            }
            let Some(value) = entry.attr_value(gimli::DW_AT_location) else {
                continue;
            };
            let frame_base = frame_bases.last().and_then(|(_, base)| *base);
            for expression in expressions(&dwarf, &unit, value) {
                verdict.expressions += 1;
                judge_one(&expression, frame_base, unit.encoding(), &mut verdict);
            }
            if verdict.expressions >= limit {
                return verdict;
            }
        }
    }
    verdict
}

/// The expressions of a `DW_AT_location` value: one, or a list's.
fn expressions<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    unit: &gimli::Unit<Slice<'a>>,
    value: gimli::AttributeValue<Slice<'a>>,
) -> Vec<Vec<u8>> {
    if let gimli::AttributeValue::Exprloc(expression) = value {
        return vec![expression.0.to_vec()];
    }
    let mut out = Vec::new();
    if let Ok(Some(mut list)) = dwarf.attr_locations(unit, value) {
        while let Ok(Some(location)) = list.next() {
            out.push(location.data.0.to_vec());
        }
    }
    out
}

/// Compares one expression's first word, evaluated both ways.
fn judge_one(
    bytes: &[u8],
    frame_base: Option<u16>,
    encoding: gimli::Encoding,
    verdict: &mut Verdict,
) {
    let Some(text) = decode(bytes, frame_base).and_then(|place: Place| place.word_at(0)) else {
        return;
    };
    verdict.read += 1;
    let location = Location::parse(&text)
        .unwrap_or_else(|err| panic!("{bytes:02x?}: the observer's own text {text:?}: {err}"));
    let mut saved = [0u64; LOC_BASE_SAVED_COUNT as usize];
    for (slot, number) in saved.iter_mut().zip(ARGUMENT_REGISTERS) {
        *slot = register(number);
    }
    let ours = evaluate(&location.compiled(), &saved, [0, 0], Some(&MadeUp), &MadeUp);
    let Some(expected) = by_gimli(bytes, frame_base, encoding) else {
        return;
    };
    verdict.compared += 1;
    assert_eq!(
        ours,
        Ok(expected),
        "{bytes:02x?} (frame base {frame_base:?}) read as {text:?}: the evaluator and gimli disagree"
    );
}

/// The first 8 bytes of the value gimli finds, or `None` where they are
/// not one word it can give (partly undescribed, bytes, an implicit
/// pointer).
fn by_gimli(bytes: &[u8], frame_base: Option<u16>, encoding: gimli::Encoding) -> Option<u64> {
    let expression = gimli::Expression(EndianSlice::new(bytes, LittleEndian));
    let mut evaluation = expression.evaluation(encoding);
    let mut result = evaluation.evaluate().ok()?;
    loop {
        result = match result {
            gimli::EvaluationResult::Complete => break,
            gimli::EvaluationResult::RequiresRegister {
                register: number, ..
            } => evaluation
                .resume_with_register(gimli::Value::Generic(register(number.0)))
                .ok()?,
            gimli::EvaluationResult::RequiresMemory {
                address, size: 8, ..
            } => evaluation
                .resume_with_memory(gimli::Value::Generic(memory(address)))
                .ok()?,
            gimli::EvaluationResult::RequiresFrameBase => evaluation
                .resume_with_frame_base(register(frame_base?))
                .ok()?,
            _ => return None,
        };
    }
    let word = |location: &gimli::Location<Slice<'_>>| match *location {
        gimli::Location::Register { register: number } => Some(register(number.0)),
        gimli::Location::Address { address } => Some(memory(address)),
        gimli::Location::Value {
            value: gimli::Value::Generic(value),
        } => Some(value),
        _ => None,
    };
    match evaluation.as_result() {
        [first, ..] if first.size_in_bits.is_none_or(|bits| bits >= 64) => word(&first.location),
        // Two 4-byte halves in registers: the low halves of both.
        [low, high, ..] if low.size_in_bits == Some(32) && high.size_in_bits == Some(32) => {
            let (low, high) = (word(&low.location)?, word(&high.location)?);
            Some((low & 0xffff_ffff) | (high << 32))
        }
        _ => None,
    }
}

/// The C library's separate debug file, by its build id.
fn libc_debug_file() -> Option<PathBuf> {
    let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").ok()?;
    let file = object::File::parse(&*data).ok()?;
    let id = file.build_id().ok()??;
    let hex: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
    let path = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ));
    path.exists().then_some(path)
}

/// Real expressions (this debug test binary: frame-base slots and
/// registers; the optimised C library: registers, offsets, pieces, stack
/// values) evaluate to what gimli finds.
#[test]
fn locations_evaluate_as_gimli_evaluates_them() {
    let exe = std::env::current_exe().unwrap();
    let verdict = judge(&exe, 200_000);
    eprintln!("the test binary: {verdict:?}");
    assert!(verdict.compared > 1_000, "{verdict:?}");
    match libc_debug_file() {
        Some(path) => {
            let verdict = judge(&path, 200_000);
            eprintln!("{}: {verdict:?}", path.display());
            assert!(verdict.compared > 1_000, "{verdict:?}");
        }
        None => eprintln!("no debug file for the C library (Debian's libc6-dbg): not judged"),
    }
}
