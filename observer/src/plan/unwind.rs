//! Compact unwind tables from `.eh_frame`, for the in-kernel stack walker.
//!
//! Production Rust binaries have no frame pointers in user code, so the
//! kernel's frame-pointer walk stops after a frame or two. Every Rust (and
//! C) binary carries `.eh_frame` for unwinding, though: for every address,
//! how to find the caller's stack pointer (the CFA), the return address and
//! the saved frame pointer. This module turns it into sorted rows that the
//! eBPF walker binary-searches (`observer_ebpf::Row`, each processor's own
//! encoding); the design follows the idea of the OpenTelemetry eBPF
//! profiler's "stack deltas" (rows found through a 64 KiB page index, a
//! bounded search within the page), with our own encoding.
//!
//! A frame needs three rules: the CFA as the stack or frame pointer plus an
//! offset (or x86-64's PLT expression), where the return address is, and
//! where the frame pointer was saved (or that it is unchanged).
//!
//! - x86-64: the return address is at CFA − 8, always (`call` pushed it);
//!   rbp is saved at a multiple of 8 near the CFA.
//! - arm64: x30 (the return address) and x29 are saved where the prologue
//!   chooses, at byte offsets from the CFA the row gives; before x30 is
//!   saved (at a function's entry, in a leaf) it is still in x30. Functions
//!   built with pointer authentication mark where x30 is signed
//!   (`DW_CFA_AARCH64_negate_ra_state`, read as gimli's AArch64 vendor
//!   extension); the walker strips signatures from every return address,
//!   so the rows need not say. PLT entries have no FDE (binutils emits
//!   none for arm64's): they move neither sp nor x30, and only a walk's
//!   first frame can be in one, where the walker takes x30 without a row.
//!
//! Rows with other rules are kept as [`row_kind::UNSUPPORTED`] so the
//! walker knows it must fall back to frame pointers there, and so is
//! every row of an FDE whose instructions cannot be evaluated; an
//! undefined return address marks an entry point ([`row_kind::END`]),
//! where a stack is complete.

use std::borrow::Cow;
use std::fmt::Debug;

use anyhow::{Context as _, Result};
use gimli::{
    AArch64, CfaRule, EhFrame, LittleEndian, Register, RegisterRule, UnwindSection as _, Vendor,
    X86_64,
};
use object::{Object as _, ObjectSection as _};
use observer_ebpf::frame_rules::{Aarch64Frames, FrameRules, X86_64Frames};
use observer_ebpf::{aarch64, row_kind, x86_64, Row, UnwindRow, PAGE_SHIFT};

/// Each processor's rows, for building either's tables on any host.
pub use observer_ebpf::{aarch64::UnwindRow as Aarch64Row, x86_64::UnwindRow as X86_64Row};

/// The DWARF expression glibc and binutils emit for 16-byte PLT entries:
/// `rsp + 8 + ((rip & 15) >= THRESHOLD) << 3`; the threshold byte varies.
const PLT_EXPRESSION_PREFIX: [u8; 6] = [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a];
const PLT_EXPRESSION_SUFFIX: [u8; 4] = [0x2a, 0x33, 0x24, 0x22];
const DW_OP_LIT10: u8 = 0x3a;
const DW_OP_LIT11: u8 = 0x3b;

/// The unwind rows of one ELF object, sorted by address, in the encoding
/// `R` (the processor observed's, [`UnwindRow`], unless a test asks for
/// another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTable<R = UnwindRow> {
    pub rows: Vec<R>,
    /// Rows whose rules could not be expressed (counted, not fatal).
    pub unsupported_rows: usize,
}

impl<R> Default for ObjectTable<R> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            unsupported_rows: 0,
        }
    }
}

impl ObjectTable {
    /// Builds the table of an ELF file's `.eh_frame`, for the processor
    /// observed. An object without `.eh_frame`, or of another processor,
    /// gets an empty table (the walker uses frame pointers).
    pub fn from_elf(data: &[u8]) -> Result<Self> {
        Self::encoded_from_elf(data)
    }
}

impl<R: Encoding> ObjectTable<R> {
    /// [`ObjectTable::from_elf`] in the encoding `R`.
    pub fn encoded_from_elf(data: &[u8]) -> Result<Self> {
        let file = object::File::parse(data).context("not an ELF file")?;
        if file.architecture() != R::MACHINE.architecture {
            return Ok(Self::default());
        }
        let Some(section) = file.section_by_name(".eh_frame") else {
            return Ok(Self::default());
        };
        let bytes: Cow<[u8]> = crate::resolve::elf::section_bytes(&section)?;
        let mut eh_frame = EhFrame::new(&bytes, LittleEndian);
        eh_frame.set_vendor(R::MACHINE.vendor);
        let mut bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = file.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        let mut builder = Builder::default();
        let mut context = gimli::UnwindContext::new();
        let mut entries = eh_frame.entries(&bases);
        let mut fde_rows = Vec::new();
        while let Some(entry) = entries.next().context("walking .eh_frame")? {
            let gimli::CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) =
                partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
            else {
                continue;
            };
            let Ok(mut rows) = fde.rows(&eh_frame, &bases, &mut context) else {
                continue;
            };
            let return_address = fde.cie().return_address_register();
            fde_rows.clear();
            let evaluated = loop {
                match rows.next_row() {
                    Ok(Some(row)) => fde_rows.push((
                        row.start_address(),
                        compact_row::<R, _>(row, return_address, &eh_frame),
                    )),
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            if evaluated {
                for &(address, row) in &fde_rows {
                    builder.push(address, row);
                }
            } else {
                // An instruction we cannot evaluate: the rows before it
                // would cover the addresses after it, wrongly.
                builder.push(fde.initial_address(), R::of_kind(row_kind::UNSUPPORTED));
            }
            builder.gap(fde.end_address());
        }
        Ok(builder.finish())
    }
}

/// What an encoding needs to know of the processor whose `.eh_frame` it
/// reads.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub architecture: object::Architecture,
    /// gimli's reading of vendor CFA instructions (arm64's
    /// `DW_CFA_AARCH64_negate_ra_state`).
    pub vendor: Vendor,
    pub stack_pointer: Register,
    pub frame_pointer: Register,
    /// Whether the return address lives in a register until saved (arm64's
    /// x30): "same value" is then a rule; on x86-64 it is not one.
    pub link_register: bool,
}

/// x86-64: rsp, rbp, and the return address pushed by `call`.
pub const X86_64_MACHINE: Machine = Machine {
    architecture: object::Architecture::X86_64,
    vendor: Vendor::Default,
    stack_pointer: X86_64::RSP,
    frame_pointer: X86_64::RBP,
    link_register: false,
};

/// arm64: sp, x29, and the return address in x30.
pub const AARCH64_MACHINE: Machine = Machine {
    architecture: object::Architecture::Aarch64,
    vendor: Vendor::AArch64,
    stack_pointer: AArch64::SP,
    frame_pointer: AArch64::X29,
    link_register: true,
};

/// One row's rules, whatever the encoding: what [`Encoding::encode`]
/// packs and [`Row`] gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// [`row_kind::CFA_SP`], [`row_kind::CFA_FP`], or x86-64's PLT kinds.
    pub kind: u8,
    pub cfa_offset: i64,
    /// The frame pointer was saved at CFA + this; `None`: unchanged.
    pub fp_offset: Option<i64>,
    /// The return address was saved at CFA + this; `None`: it is in the
    /// link register (or, on x86-64, where `call` put it: CFA − 8).
    pub ra_offset: Option<i64>,
}

/// A processor's row type (`observer_ebpf::{x86_64, aarch64}`): how it
/// encodes rules.
pub trait Encoding: Row + Copy + Debug + PartialEq {
    /// The processor whose `.eh_frame` these rows describe.
    const MACHINE: Machine;
    /// Its frame rules, with which the walker steps by these rows.
    type Frames: FrameRules;
    /// The row for `rule`, or `None` where the encoding cannot say it.
    fn encode(rule: &Rule) -> Option<Self>;
    /// A row of a kind that carries no rule ([`row_kind::GAP`], `END`,
    /// `UNSUPPORTED`).
    fn of_kind(kind: u8) -> Self;
    fn set_pc(&mut self, pc: u32);
}

impl Encoding for x86_64::UnwindRow {
    const MACHINE: Machine = X86_64_MACHINE;
    type Frames = X86_64Frames;

    fn encode(rule: &Rule) -> Option<Self> {
        if !matches!(rule.ra_offset, None | Some(-8)) {
            return None;
        }
        let rbp_offset_words = match rule.fp_offset {
            None => 0,
            Some(offset) if offset % 8 == 0 && offset != 0 => i8::try_from(offset / 8).ok()?,
            Some(_) => return None,
        };
        Some(Self {
            pc: 0,
            cfa_offset: i16::try_from(rule.cfa_offset).ok()?,
            rbp_offset_words,
            kind: rule.kind,
        })
    }

    fn of_kind(kind: u8) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    fn set_pc(&mut self, pc: u32) {
        self.pc = pc;
    }
}

impl Encoding for aarch64::UnwindRow {
    const MACHINE: Machine = AARCH64_MACHINE;
    type Frames = Aarch64Frames;

    fn encode(rule: &Rule) -> Option<Self> {
        if !matches!(rule.kind, row_kind::CFA_SP | row_kind::CFA_FP) {
            return None;
        }
        // 0 means "not saved" in the row; nothing is saved at the CFA.
        let saved = |offset: Option<i64>| match offset {
            None => Some(0),
            Some(0) => None,
            Some(offset) => i16::try_from(offset).ok(),
        };
        Some(Self {
            pc: 0,
            cfa_offset: i16::try_from(rule.cfa_offset).ok()?,
            fp_offset: saved(rule.fp_offset)?,
            ra_offset: saved(rule.ra_offset)?,
            kind: rule.kind,
            _pad: [0; 5],
        })
    }

    fn of_kind(kind: u8) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    fn set_pc(&mut self, pc: u32) {
        self.pc = pc;
    }
}

struct Builder<R> {
    rows: Vec<(u64, R)>,
    unsupported: usize,
}

impl<R> Default for Builder<R> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            unsupported: 0,
        }
    }
}

impl<R: Encoding> Builder<R> {
    fn push(&mut self, address: u64, row: R) {
        if row.kind() == row_kind::UNSUPPORTED {
            self.unsupported += 1;
        }
        self.rows.push((address, row));
    }

    fn gap(&mut self, address: u64) {
        self.rows.push((address, R::of_kind(row_kind::GAP)));
    }

    /// Sorts, drops gaps that another FDE's first row covers, merges runs
    /// of identical rules, and drops addresses beyond 4 GiB.
    fn finish(mut self) -> ObjectTable<R> {
        // Real rows sort after a gap at the same address, so they win.
        self.rows
            .sort_by_key(|(address, row)| (*address, row.kind() != row_kind::GAP));
        let mut rows: Vec<R> = Vec::with_capacity(self.rows.len());
        for (address, mut row) in self.rows {
            let Ok(pc) = u32::try_from(address) else {
                continue;
            };
            row.set_pc(pc);
            match rows.last_mut() {
                Some(last) if last.pc() == pc => *last = row,
                Some(last) if same_rule(last, &row) => {}
                _ => rows.push(row),
            }
        }
        ObjectTable {
            rows,
            unsupported_rows: self.unsupported,
        }
    }
}

/// True when two rows say the same (their addresses aside).
fn same_rule<R: Encoding>(a: &R, b: &R) -> bool {
    let (mut a, mut b) = (*a, *b);
    a.set_pc(0);
    b.set_pc(0);
    a == b
}

/// One gimli row in the encoding `R`; `return_address` is the CIE's
/// return-address column (x86-64's RA, arm64's x30).
fn compact_row<R: Encoding, T: gimli::Reader>(
    row: &gimli::UnwindTableRow<T::Offset>,
    return_address: Register,
    eh_frame: &EhFrame<T>,
) -> R {
    match rule_of(row, return_address, eh_frame, &R::MACHINE) {
        Ok(rule) => R::encode(&rule).unwrap_or_else(|| R::of_kind(row_kind::UNSUPPORTED)),
        Err(kind) => R::of_kind(kind),
    }
}

/// The rules of a gimli row, or the kind of a row without rules
/// ([`row_kind::END`], [`row_kind::UNSUPPORTED`]).
fn rule_of<T: gimli::Reader>(
    row: &gimli::UnwindTableRow<T::Offset>,
    return_address: Register,
    eh_frame: &EhFrame<T>,
    machine: &Machine,
) -> std::result::Result<Rule, u8> {
    let unsupported = Err(row_kind::UNSUPPORTED);
    let ra_offset = match row.register(return_address) {
        Some(RegisterRule::Undefined) => return Err(row_kind::END),
        None => None,
        Some(RegisterRule::SameValue) if machine.link_register => None,
        Some(RegisterRule::Offset(offset)) => Some(offset),
        Some(_) => return unsupported,
    };
    let (kind, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let kind = if *register == machine.stack_pointer {
                row_kind::CFA_SP
            } else if *register == machine.frame_pointer {
                row_kind::CFA_FP
            } else {
                return unsupported;
            };
            (kind, *offset)
        }
        CfaRule::Expression(expression) if machine.architecture == X86_64_MACHINE.architecture => {
            let bytes = expression
                .get(eh_frame)
                .ok()
                .and_then(|e| e.0.to_slice().ok().map(|s| s.into_owned()));
            match bytes.as_deref().and_then(plt_kind) {
                Some(kind) => (kind, 0),
                None => return unsupported,
            }
        }
        CfaRule::Expression(_) => return unsupported,
    };
    let fp_offset = match row.register(machine.frame_pointer) {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => None,
        Some(RegisterRule::Offset(offset)) => Some(offset),
        Some(_) => return unsupported,
    };
    Ok(Rule {
        kind,
        cfa_offset,
        fp_offset,
        ra_offset,
    })
}

/// The rules a row gives back (for checks and people).
pub fn rule_of_row<R: Row>(row: &R) -> Rule {
    let saved = |offset: i16| (offset != 0).then_some(i64::from(offset));
    Rule {
        kind: row.kind(),
        cfa_offset: i64::from(row.cfa_offset()),
        fp_offset: saved(row.fp_offset()),
        ra_offset: saved(row.ra_offset()),
    }
}

/// Recognises the PLT's CFA expression and its threshold.
fn plt_kind(expression: &[u8]) -> Option<u8> {
    let rest = expression.strip_prefix(&PLT_EXPRESSION_PREFIX[..])?;
    let (&threshold, suffix) = rest.split_first()?;
    if suffix != PLT_EXPRESSION_SUFFIX {
        return None;
    }
    match threshold {
        DW_OP_LIT11 => Some(row_kind::PLT_11),
        DW_OP_LIT10 => Some(row_kind::PLT_10),
        _ => None,
    }
}

/// The page index of one object's rows, which start at `base` in the
/// global row array: for every 64 KiB page its rows touch, the first row in
/// effect at the page start and the count through the page's last row.
pub fn pages<R: Row>(rows: &[R], base: u32) -> Vec<(u32, u32, u32)> {
    let Some((first, last)) = rows.first().zip(rows.last()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for page in first.pc() >> PAGE_SHIFT..=last.pc() >> PAGE_SHIFT {
        let start = page << PAGE_SHIFT;
        let end = start.checked_add(1 << PAGE_SHIFT);
        // The row in effect at `start` is the last one at or before it.
        let from = rows.partition_point(|r| r.pc() <= start).saturating_sub(1);
        let to = match end {
            Some(end) => rows.partition_point(|r| r.pc() < end),
            None => rows.len(),
        };
        if to > from {
            out.push((page, base + from as u32, (to - from) as u32));
        }
    }
    out
}

/// The row in effect at `vaddr` in an object's `rows` with page index
/// `index` ([`pages`]), found as the walker finds it: the page, then the
/// walker's own binary search (`walk_step::search_rows`). For the judges.
#[cfg(test)]
fn find_row<R: Row>(rows: &[R], index: &[(u32, u32, u32)], vaddr: u64) -> Option<R> {
    let vaddr = u32::try_from(vaddr).ok()?;
    let page = vaddr >> PAGE_SHIFT;
    let &(_, first, count) = index.iter().find(|(p, _, _)| *p == page)?;
    observer_ebpf::walk_step::search_rows(first, count, vaddr, |at| rows.get(at as usize).copied())
}

#[cfg(all(test, target_arch = "x86_64"))]
mod captured;
#[cfg(test)]
pub(crate) mod judge;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pc: u32, kind: u8, cfa_offset: i16, rbp: i8) -> x86_64::UnwindRow {
        x86_64::UnwindRow {
            pc,
            cfa_offset,
            rbp_offset_words: rbp,
            kind,
        }
    }

    #[test]
    fn own_binary_has_rows_for_its_functions() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let table = ObjectTable::from_elf(&exe).unwrap();
        assert!(table.rows.len() > 1000, "{} rows", table.rows.len());
        assert!(
            table.rows.windows(2).all(|w| w[0].pc() < w[1].pc()),
            "sorted, unique"
        );
        // A function entry: CFA = sp + 8 with the return address at CFA − 8
        // (x86-64), CFA = sp with the return address in x30 (arm64).
        let elf = crate::resolve::elf::ElfInfo::read(&std::env::current_exe().unwrap()).unwrap();
        let me = elf
            .functions
            .iter()
            .find(|f| {
                f.demangled
                    .ends_with("unwind::tests::own_binary_has_rows_for_its_functions")
            })
            .unwrap();
        let at = table
            .rows
            .partition_point(|r| u64::from(r.pc()) <= me.address)
            - 1;
        let entry = rule_of_row(&table.rows[at]);
        let expected = if cfg!(target_arch = "aarch64") {
            (row_kind::CFA_SP, 0, None)
        } else {
            (row_kind::CFA_SP, 8, Some(-8))
        };
        assert_eq!(
            (entry.kind, entry.cfa_offset, entry.ra_offset),
            expected,
            "{:?}",
            table.rows[at]
        );
        assert!(
            table.rows.iter().any(|r| r.kind() == row_kind::END),
            "_start ends stacks"
        );
    }

    #[test]
    fn builder_merges_and_lets_functions_cover_gaps() {
        let mut builder = Builder::default();
        builder.push(0x1000, row(0, row_kind::CFA_SP, 8, 0));
        builder.push(0x1001, row(0, row_kind::CFA_SP, 16, 0));
        builder.push(0x1004, row(0, row_kind::CFA_FP, 16, -2));
        builder.push(0x1010, row(0, row_kind::CFA_FP, 16, -2));
        builder.gap(0x1020);
        builder.push(0x1020, row(0, row_kind::CFA_SP, 8, 0));
        builder.gap(0x1030);
        let table = builder.finish();
        let pcs: Vec<u32> = table.rows.iter().map(|r| r.pc).collect();
        assert_eq!(pcs, vec![0x1000, 0x1001, 0x1004, 0x1020, 0x1030]);
        assert_eq!(table.rows[3].kind, row_kind::CFA_SP);
        assert_eq!(table.rows[4].kind, row_kind::GAP);
    }

    #[test]
    fn recognises_the_plt_expression() {
        let mut plt = PLT_EXPRESSION_PREFIX.to_vec();
        plt.push(DW_OP_LIT11);
        plt.extend(PLT_EXPRESSION_SUFFIX);
        assert_eq!(plt_kind(&plt), Some(row_kind::PLT_11));
        plt[6] = DW_OP_LIT10;
        assert_eq!(plt_kind(&plt), Some(row_kind::PLT_10));
        plt.push(0);
        assert_eq!(plt_kind(&plt), None);
    }

    #[test]
    fn pages_start_with_the_row_in_effect() {
        let rows = vec![
            row(0x0_fff0, row_kind::CFA_SP, 8, 0),
            row(0x1_0010, row_kind::CFA_SP, 16, 0),
            row(0x3_0000, row_kind::GAP, 0, 0),
        ];
        let index = pages(&rows, 100);
        assert_eq!(
            index,
            vec![(0, 100, 1), (1, 100, 2), (2, 101, 1), (3, 102, 1)]
        );
    }

    /// What each encoding can say: x86-64's return address only at
    /// CFA − 8 and rbp within 127 words; arm64's x29 and x30 anywhere a
    /// 16-bit byte offset reaches, and x30 not yet saved.
    #[test]
    fn encodings_say_what_they_can() {
        let gcc_frame = Rule {
            kind: row_kind::CFA_SP,
            cfa_offset: 4160,
            fp_offset: Some(-4160),
            ra_offset: Some(-4152),
        };
        let row = aarch64::UnwindRow::encode(&gcc_frame).unwrap();
        assert_eq!(rule_of_row(&row), gcc_frame);
        assert_eq!(x86_64::UnwindRow::encode(&gcc_frame), None);
        let entry = Rule {
            kind: row_kind::CFA_SP,
            cfa_offset: 0,
            fp_offset: None,
            ra_offset: None,
        };
        let row = aarch64::UnwindRow::encode(&entry).unwrap();
        assert_eq!(row.ra_offset(), 0, "still in x30");
        assert_eq!(rule_of_row(&row), entry);
        let x86 = Rule {
            kind: row_kind::CFA_FP,
            cfa_offset: 16,
            fp_offset: Some(-16),
            ra_offset: Some(-8),
        };
        let row = x86_64::UnwindRow::encode(&x86).unwrap();
        assert_eq!(
            (row.rbp_offset_words, row.fp_offset(), row.ra_offset()),
            (-2, -16, -8)
        );
        assert_eq!(rule_of_row(&row), x86);
        for unsaid in [
            Rule {
                cfa_offset: 1 << 15,
                ..gcc_frame
            },
            Rule {
                ra_offset: Some(0),
                ..gcc_frame
            },
            Rule {
                kind: row_kind::PLT_11,
                ..gcc_frame
            },
        ] {
            assert_eq!(aarch64::UnwindRow::encode(&unsaid), None, "{unsaid:?}");
        }
    }
}
