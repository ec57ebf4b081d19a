//! Compact unwind tables from `.eh_frame`, for the in-kernel stack walker.
//!
//! Production Rust binaries have no frame pointers in user code, so the
//! kernel's frame-pointer walk stops after a frame or two. Every Rust (and
//! C) binary carries `.eh_frame` for unwinding, though: for every address,
//! how to find the caller's stack pointer (the CFA), the return address and
//! the saved frame pointer. This module turns it into sorted 8-byte rows
//! ([`UnwindRow`]) that the eBPF walker binary-searches; the design follows
//! the idea of the OpenTelemetry eBPF profiler's "stack deltas" (rows found
//! through a 64 KiB page index, a bounded search within the page), with our
//! own encoding.
//!
//! On x86-64 a frame needs only three rules: the CFA as rsp or rbp plus an
//! offset (or the PLT's fixed expression), the return address at CFA − 8,
//! and where rbp was saved (or that it is unchanged). Rows with other rules
//! are kept as [`row_kind::UNSUPPORTED`] so the walker knows it must fall
//! back to frame pointers there; an undefined return address marks an entry
//! point ([`row_kind::END`]), where a stack is complete.

use std::borrow::Cow;

use anyhow::{Context as _, Result};
use gimli::{CfaRule, EhFrame, LittleEndian, RegisterRule, UnwindSection as _, X86_64};
use object::{Object as _, ObjectSection as _};
use observer_ebpf::{row_kind, UnwindRow, PAGE_SHIFT};

/// The DWARF expression glibc and binutils emit for 16-byte PLT entries:
/// `rsp + 8 + ((rip & 15) >= THRESHOLD) << 3`; the threshold byte varies.
const PLT_EXPRESSION_PREFIX: [u8; 6] = [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a];
const PLT_EXPRESSION_SUFFIX: [u8; 4] = [0x2a, 0x33, 0x24, 0x22];
const DW_OP_LIT10: u8 = 0x3a;
const DW_OP_LIT11: u8 = 0x3b;

/// The unwind rows of one ELF object, sorted by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectTable {
    pub rows: Vec<UnwindRow>,
    /// FDEs whose rows could not all be expressed (counted, not fatal).
    pub unsupported_rows: usize,
}

impl ObjectTable {
    /// Builds the table of an ELF file's `.eh_frame`. An object without
    /// `.eh_frame` gets an empty table (the walker uses frame pointers).
    pub fn from_elf(data: &[u8]) -> Result<Self> {
        let file = object::File::parse(data).context("not an ELF file")?;
        let Some(section) = file.section_by_name(".eh_frame") else {
            return Ok(Self::default());
        };
        let bytes: Cow<[u8]> = section.uncompressed_data().context("reading .eh_frame")?;
        let eh_frame = EhFrame::new(&bytes, LittleEndian);
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
            while let Ok(Some(row)) = rows.next_row() {
                let compact = compact_row(row, &eh_frame);
                builder.push(row.start_address(), compact);
            }
            builder.gap(fde.end_address());
        }
        Ok(builder.finish())
    }
}

#[derive(Default)]
struct Builder {
    rows: Vec<(u64, UnwindRow)>,
    unsupported: usize,
}

impl Builder {
    fn push(&mut self, address: u64, row: UnwindRow) {
        if row.kind == row_kind::UNSUPPORTED {
            self.unsupported += 1;
        }
        self.rows.push((address, row));
    }

    fn gap(&mut self, address: u64) {
        self.rows.push((address, UnwindRow::default()));
    }

    /// Sorts, drops gaps that another FDE's first row covers, merges runs
    /// of identical rules, and drops addresses beyond 4 GiB.
    fn finish(mut self) -> ObjectTable {
        // Real rows sort after a gap at the same address, so they win.
        self.rows
            .sort_by_key(|(address, row)| (*address, row.kind != row_kind::GAP));
        let mut rows: Vec<UnwindRow> = Vec::with_capacity(self.rows.len());
        for (address, mut row) in self.rows {
            let Ok(pc) = u32::try_from(address) else {
                continue;
            };
            row.pc = pc;
            match rows.last_mut() {
                Some(last) if last.pc == pc => *last = row,
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

fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    (a.kind, a.cfa_offset, a.rbp_offset_words) == (b.kind, b.cfa_offset, b.rbp_offset_words)
}

/// One gimli row in our encoding.
fn compact_row<R: gimli::Reader>(
    row: &gimli::UnwindTableRow<R::Offset>,
    eh_frame: &EhFrame<R>,
) -> UnwindRow {
    let unsupported = UnwindRow {
        kind: row_kind::UNSUPPORTED,
        ..UnwindRow::default()
    };
    match row.register(X86_64::RA) {
        Some(RegisterRule::Undefined) => {
            return UnwindRow {
                kind: row_kind::END,
                ..UnwindRow::default()
            }
        }
        None | Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return unsupported,
    }
    let (kind, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let kind = match *register {
                X86_64::RSP => row_kind::CFA_RSP,
                X86_64::RBP => row_kind::CFA_RBP,
                _ => return unsupported,
            };
            match i16::try_from(*offset) {
                Ok(offset) => (kind, offset),
                Err(_) => return unsupported,
            }
        }
        CfaRule::Expression(expression) => {
            let bytes = expression
                .get(eh_frame)
                .ok()
                .and_then(|e| e.0.to_slice().ok().map(|s| s.into_owned()));
            match bytes.as_deref().and_then(plt_kind) {
                Some(kind) => (kind, 0),
                None => return unsupported,
            }
        }
    };
    let rbp_offset_words = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => 0,
        Some(RegisterRule::Offset(offset)) if offset % 8 == 0 && offset != 0 => {
            match i8::try_from(offset / 8) {
                Ok(words) => words,
                Err(_) => return unsupported,
            }
        }
        Some(_) => return unsupported,
    };
    UnwindRow {
        pc: 0,
        cfa_offset,
        rbp_offset_words,
        kind,
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
pub fn pages(rows: &[UnwindRow], base: u32) -> Vec<(u32, u32, u32)> {
    let Some((first, last)) = rows.first().zip(rows.last()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for page in first.pc >> PAGE_SHIFT..=last.pc >> PAGE_SHIFT {
        let start = page << PAGE_SHIFT;
        let end = start.checked_add(1 << PAGE_SHIFT);
        // The row in effect at `start` is the last one at or before it.
        let from = rows.partition_point(|r| r.pc <= start).saturating_sub(1);
        let to = match end {
            Some(end) => rows.partition_point(|r| r.pc < end),
            None => rows.len(),
        };
        if to > from {
            out.push((page, base + from as u32, (to - from) as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pc: u32, kind: u8, cfa_offset: i16, rbp: i8) -> UnwindRow {
        UnwindRow {
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
            table.rows.windows(2).all(|w| w[0].pc < w[1].pc),
            "sorted, unique"
        );
        // A function entry: CFA = rsp + 8, return address at CFA - 8.
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
            .partition_point(|r| u64::from(r.pc) <= me.address)
            - 1;
        assert_eq!(
            (table.rows[at].kind, table.rows[at].cfa_offset),
            (row_kind::CFA_RSP, 8),
            "{:?}",
            table.rows[at]
        );
        assert!(
            table.rows.iter().any(|r| r.kind == row_kind::END),
            "_start ends stacks"
        );
    }

    #[test]
    fn builder_merges_and_lets_functions_cover_gaps() {
        let mut builder = Builder::default();
        builder.push(0x1000, row(0, row_kind::CFA_RSP, 8, 0));
        builder.push(0x1001, row(0, row_kind::CFA_RSP, 16, 0));
        builder.push(0x1004, row(0, row_kind::CFA_RBP, 16, -2));
        builder.push(0x1010, row(0, row_kind::CFA_RBP, 16, -2));
        builder.gap(0x1020);
        builder.push(0x1020, row(0, row_kind::CFA_RSP, 8, 0));
        builder.gap(0x1030);
        let table = builder.finish();
        let pcs: Vec<u32> = table.rows.iter().map(|r| r.pc).collect();
        assert_eq!(pcs, vec![0x1000, 0x1001, 0x1004, 0x1020, 0x1030]);
        assert_eq!(table.rows[3].kind, row_kind::CFA_RSP);
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
            row(0x0_fff0, row_kind::CFA_RSP, 8, 0),
            row(0x1_0010, row_kind::CFA_RSP, 16, 0),
            row(0x3_0000, row_kind::GAP, 0, 0),
        ];
        let index = pages(&rows, 100);
        assert_eq!(
            index,
            vec![(0, 100, 1), (1, 100, 2), (2, 101, 1), (3, 102, 1)]
        );
    }
}
