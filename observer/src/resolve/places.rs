//! Where a value is at one address, from a DWARF location expression, in
//! the forms optimised Rust code uses for values the observer reads: a
//! register, memory at a register plus an offset (frame-base relative
//! included), a register plus an offset as the value itself, and
//! composites of such pieces (a struct split over registers).
//!
//! The result is said in the location language, so the kernel side can
//! evaluate it where the probe fires.

use crate::plan::loc::REGISTER_NAMES;

/// One part of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The bytes are in this register (DWARF numbering).
    Register(u16),
    /// The bytes are in memory at this register plus the offset.
    Memory { register: u16, offset: i64 },
    /// The value is this register plus the offset (`DW_OP_stack_value`):
    /// typically a pointer to something on the stack.
    Computed { register: u16, offset: i64 },
}

/// A part and the bytes of the value it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Offset of the part's first byte in the value.
    pub offset: u64,
    /// Its size; `None` for a whole value (no `DW_OP_piece`).
    pub size: Option<u64>,
    pub part: Part,
}

/// Where a value is: its pieces (pieces DWARF leaves undescribed are
/// missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub pieces: Vec<Piece>,
}

impl Place {
    /// The location of the 8 bytes at `offset` inside the value, if DWARF
    /// describes them.
    pub fn word_at(&self, offset: u64) -> Option<String> {
        let Some(piece) = self.piece_holding(offset) else {
            return self.halves_at(offset);
        };
        let inside = i64::try_from(offset - piece.offset).ok()?;
        match piece.part {
            Part::Memory { register, offset } => {
                Some(memory(register, offset.checked_add(inside)?))
            }
            Part::Register(register) if inside == 0 => Some(name(register).to_string()),
            Part::Computed { register, offset } if inside == 0 => Some(sum(register, offset)),
            _ => None,
        }
    }

    /// The location of the 8 bytes at `offset` inside what this value (a
    /// pointer) points to.
    pub fn through_pointer(&self, offset: u64) -> Option<String> {
        let piece = self.piece_holding(0)?;
        let offset = i64::try_from(offset).ok()?;
        match piece.part {
            Part::Register(register) => Some(memory(register, offset)),
            Part::Computed {
                register,
                offset: base,
            } => Some(memory(register, base.checked_add(offset)?)),
            Part::Memory {
                register,
                offset: at,
            } => {
                let pointer = memory(register, at);
                Some(match offset {
                    0 => format!("*{pointer}"),
                    o if o > 0 => format!("*({pointer}+{o})"),
                    o => format!("*({pointer}-{})", o.unsigned_abs()),
                })
            }
        }
    }

    /// The 8 bytes at `offset` as two 4-byte register pieces (`low:high`),
    /// the way optimised code keeps a `(u32, u32)` key.
    fn halves_at(&self, offset: u64) -> Option<String> {
        let register_at = |at: u64| {
            self.pieces.iter().find_map(|p| match p.part {
                Part::Register(register) if p.offset == at && p.size == Some(4) => Some(register),
                _ => None,
            })
        };
        let low = register_at(offset)?;
        let high = register_at(offset.checked_add(4)?)?;
        Some(format!("{}:{}", name(low), name(high)))
    }

    fn piece_holding(&self, offset: u64) -> Option<&Piece> {
        // Sizes and offsets come from the target's DWARF: no arithmetic on
        // them may overflow.
        let end = offset.checked_add(8)?;
        self.pieces.iter().find(|p| {
            p.offset <= offset
                && p.size
                    .is_none_or(|size| p.offset.checked_add(size).is_some_and(|e| end <= e))
        })
    }
}

fn name(register: u16) -> &'static str {
    REGISTER_NAMES[usize::from(register)]
}

fn sum(register: u16, offset: i64) -> String {
    match offset {
        0 => name(register).to_string(),
        o if o > 0 => format!("{}+{o}", name(register)),
        o => format!("{}-{}", name(register), o.unsigned_abs()),
    }
}

fn memory(register: u16, offset: i64) -> String {
    match offset {
        0 => format!("*{}", name(register)),
        _ => format!("*({})", sum(register, offset)),
    }
}

/// Decodes a location expression; `frame_base` is the register the
/// enclosing function's `DW_AT_frame_base` names (for `DW_OP_fbreg`).
/// `None` when it uses anything else (arithmetic, entry values, implicit
/// values), which the kernel side could not evaluate.
pub fn decode(bytes: &[u8], frame_base: Option<u16>) -> Option<Place> {
    const REG0: u8 = 0x50;
    const BREG0: u8 = 0x70;
    const REGX: u8 = 0x90;
    const FBREG: u8 = 0x91;
    const PIECE: u8 = 0x93;
    const STACK_VALUE: u8 = 0x9f;
    let mut reader = gimli::EndianSlice::new(bytes, gimli::LittleEndian);
    let mut pieces = Vec::new();
    let mut part: Option<Part> = None;
    let mut offset = 0u64;
    use gimli::Reader as _;
    while !reader.is_empty() {
        let op = reader.read_u8().ok()?;
        match op {
            // DW_OP_reg0..31 and breg0..31; only general registers
            // (x86-64's first 16 numbers, arm64's x0–x30 and sp) are kept.
            REG0..=0x6f => part = Some(Part::Register(general(u64::from(op - REG0))?)),
            REGX => part = Some(Part::Register(general(reader.read_uleb128().ok()?)?)),
            BREG0..=0x8f => {
                part = Some(Part::Memory {
                    register: general(u64::from(op - BREG0))?,
                    offset: reader.read_sleb128().ok()?,
                })
            }
            FBREG => {
                part = Some(Part::Memory {
                    register: frame_base?,
                    offset: reader.read_sleb128().ok()?,
                })
            }
            STACK_VALUE => match part? {
                Part::Memory { register, offset } => {
                    part = Some(Part::Computed { register, offset })
                }
                _ => return None,
            },
            PIECE => {
                let size = reader.read_uleb128().ok()?;
                if let Some(part) = part.take() {
                    pieces.push(Piece {
                        offset,
                        size: Some(size),
                        part,
                    });
                }
                offset = offset.checked_add(size)?;
            }
            _ => return None,
        }
        if let Some(Part::Register(register)) = part {
            usize::from(register)
                .lt(&REGISTER_NAMES.len())
                .then_some(())?;
        }
    }
    if let Some(part) = part {
        if !pieces.is_empty() {
            // A trailing location without its piece size is malformed.
            return None;
        }
        pieces.push(Piece {
            offset: 0,
            size: None,
            part,
        });
    }
    (!pieces.is_empty()).then_some(Place { pieces })
}

/// A general register's DWARF number, or `None` for vector registers.
fn general(number: u64) -> Option<u16> {
    u16::try_from(number)
        .ok()
        .filter(|&n| usize::from(n) < REGISTER_NAMES.len())
}

/// The register a `DW_AT_frame_base` expression names (rustc emits
/// `DW_OP_reg7` (rsp), or `DW_OP_reg6` (rbp) with frame pointers; on arm64
/// `DW_OP_reg31` (sp) or `DW_OP_reg29`).
pub fn frame_base_register(bytes: &[u8]) -> Option<u16> {
    match *bytes {
        [op] if (0x50..0x70).contains(&op) => general(u64::from(op - 0x50)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_past_fifteen_are_the_processors_general_ones_or_refused() {
        // DW_OP_breg31 +168: arm64's sp; on x86-64, 31 is no general
        // register (DWARF's 16+ are the return address and vector ones).
        let place = decode(&[0x8f, 0xa8, 0x01], None);
        let is_general = REGISTER_NAMES.len() > 31;
        assert_eq!(place.is_some(), is_general, "{place:?}");
        if let Some(place) = place {
            assert_eq!(place.word_at(0).as_deref(), Some("*(sp+168)"));
        }
        // DW_OP_reg19: arm64's x19.
        assert_eq!(decode(&[0x63], None).is_some(), REGISTER_NAMES.len() > 19);
        assert_eq!(frame_base_register(&[0x6f]).is_some(), is_general);
    }

    #[test]
    fn a_guard_on_the_stack_is_read_at_its_field() {
        // DW_OP_fbreg +160, frame base rsp: a 32-byte guard whose buffer
        // pointer is at offset 8.
        let place = decode(&[0x91, 0xa0, 0x01], Some(7)).unwrap();
        assert_eq!(place.word_at(8).as_deref(), Some("*(rsp+168)"));
        assert_eq!(place.word_at(0).as_deref(), Some("*(rsp+160)"));
    }

    #[test]
    fn a_pointer_to_the_guard_is_followed() {
        // self: &mut Guard in rdi, or computed as rsp+160.
        let in_register = decode(&[0x55], None).unwrap();
        assert_eq!(in_register.through_pointer(8).as_deref(), Some("*(rdi+8)"));
        let computed = decode(&[0x77, 0xa0, 0x01, 0x9f], None).unwrap();
        assert_eq!(computed.through_pointer(8).as_deref(), Some("*(rsp+168)"));
        let spilled = decode(&[0x77, 0x10], None).unwrap();
        assert_eq!(
            spilled.through_pointer(8).as_deref(),
            Some("*(*(rsp+16)+8)")
        );
        assert_eq!(spilled.through_pointer(0).as_deref(), Some("**(rsp+16)"));
    }

    #[test]
    fn pieces_in_registers_are_found_by_offset() {
        // rbx for bytes 0..8, nothing for 8..16, r14 for 16..24.
        let place = decode(&[0x53, 0x93, 8, 0x93, 8, 0x5e, 0x93, 8], None).unwrap();
        assert_eq!(place.word_at(0).as_deref(), Some("rbx"));
        assert_eq!(place.word_at(8), None);
        assert_eq!(place.word_at(16).as_deref(), Some("r14"));
    }

    #[test]
    fn hostile_sizes_and_offsets_do_not_overflow() {
        // DW_OP_breg7 i64::MAX: the word 8 bytes further cannot be said.
        let mut bytes = vec![0x77];
        bytes.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
        let place = decode(&bytes, None).unwrap();
        assert_eq!(place.word_at(8), None);
        // Two pieces of u64::MAX bytes.
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let mut bytes = vec![0x53, 0x93];
        bytes.extend(huge);
        bytes.extend([0x5e, 0x93]);
        bytes.extend(huge);
        assert_eq!(decode(&bytes, None), None);
        let one_piece = decode(&[0x53, 0x93, 0x08], None).unwrap();
        assert_eq!(one_piece.word_at(u64::MAX - 4), None);
    }

    #[test]
    fn what_the_kernel_cannot_evaluate_is_refused() {
        // DW_OP_entry_value, DW_OP_lit0 + stack_value, fbreg without base.
        assert_eq!(decode(&[0xa3, 1, 0x55, 0x9f], None), None);
        assert_eq!(decode(&[0x30, 0x9f], None), None);
        assert_eq!(decode(&[0x91, 0x10], None), None);
        assert_eq!(decode(&[0x55, 0x9f], None), None);
    }
}
