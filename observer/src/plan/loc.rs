//! The location language: where a probe finds a value (a size, a buffer id).
//!
//! ```text
//! loc  := term [('+' | '-') int]
//! term := 'arg' N        N = 0..5: the argument registers at function entry
//!                        (x86-64: rdi rsi rdx rcx r8 r9; arm64: x0..x5)
//!       | 'ret' ['.0']   rax (arm64: x0) when the function returns
//!       | 'ret.1'        rdx (arm64: x1) when the function returns: bytes
//!                        8..16 of a 16-byte result (the key of an
//!                        `Option<usize>`)
//!       | REGISTER       a general register where the probe fires (release
//!                        only: inlined release sites); x86-64: rax rbx rcx
//!                        rdx rsi rdi rbp rsp r8..r15, arm64: x0..x30 sp
//!       | '*' term       the u64 in target memory at term
//!       | '*(' loc ')'   the u64 in target memory at loc
//!       | int            a literal (sizes of fixed-size pools)
//! int  := decimal | 0x hex
//! halves := REGISTER ':' REGISTER
//!                        an 8-byte value split over two registers where the
//!                        probe fires: the low 4 bytes in the first, the high
//!                        4 in the second (a `(u32, u32)` key, as DWARF's
//!                        `DW_OP_piece 4` pairs describe it); a whole
//!                        location on its own
//! ```
//!
//! A location compiles to [`observer_ebpf::Loc`]: a base register followed
//! by up to [`MAX_LOC_STEPS`] "add an offset, then read 8 bytes" steps and a
//! final offset, which is what the eBPF side evaluates.

use std::fmt;

use observer_ebpf::{
    Loc, LOC_BASE_ARG_COUNT, LOC_BASE_CONST, LOC_BASE_REGISTER, LOC_BASE_RESULT_SLOT, LOC_BASE_RET,
    LOC_BASE_RET_HIGH, MAX_LOC_STEPS,
};

/// Whether the hidden result slot is a saved register besides the
/// arguments (arm64's x8), named `arch::HIDDEN_RESULT`, rather than an
/// argument (x86-64's arg0).
const RESULT_SLOT_HAS_ITS_OWN_NAME: bool = after_the_arguments(LOC_BASE_RESULT_SLOT);

/// Whether saved register `base` is past the arguments.
const fn after_the_arguments(base: u8) -> bool {
    base >= LOC_BASE_ARG_COUNT
}

/// General registers by DWARF number (the observer's processor's).
pub use crate::arch::REGISTER_NAMES;

/// A location that failed to parse, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad location '{text}': {reason}; write argN (N=0..5), ret, ret.1, *X, *(X+K) or a number")]
pub struct LocError {
    pub text: String,
    pub reason: String,
}

/// A parsed location; `Display` prints it back in canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    compiled: Loc,
}

impl Location {
    /// The literal 0: no value (an id that needs no scope).
    pub const ZERO: Location = Location {
        compiled: Loc::ZERO,
    };

    /// The literal `value` (below 2^63, so it prints back as it parses).
    pub fn literal(value: u64) -> Self {
        let mut compiled = Loc::ZERO;
        compiled.final_offset = (value & (u64::MAX >> 1)) as i64;
        Self { compiled }
    }

    /// The literal 1 (one element, for sizes that are not counts).
    pub const ONE: Location = Location {
        compiled: Loc {
            final_offset: 1,
            ..Loc::ZERO
        },
    };

    /// Parses `text` (see the module documentation for the grammar).
    pub fn parse(text: &str) -> Result<Self, LocError> {
        let error = |reason: String| LocError {
            text: text.to_string(),
            reason,
        };
        if let Some((low, high)) = text.trim().split_once(':') {
            return halves(low.trim(), high.trim()).map_err(error);
        }
        let mut parser = Parser {
            rest: text.trim(),
            steps: Vec::new(),
            pending_offset: 0,
            open_stars: 0,
        };
        let base = parser.loc().map_err(error)?;
        if !parser.rest.trim().is_empty() {
            return Err(error(format!("unexpected '{}'", parser.rest.trim())));
        }
        // `0-5` would be a size of 2^64 - 5 bytes, which no pool hands
        // out, and has no canonical form to print back.
        if base == LOC_BASE_CONST && parser.pending_offset < 0 {
            return Err(error("a literal cannot be negative".into()));
        }
        if parser.steps.len() > MAX_LOC_STEPS {
            return Err(error(format!(
                "{} dereferences, at most {MAX_LOC_STEPS} are supported",
                parser.steps.len()
            )));
        }
        let mut offsets = [0i64; MAX_LOC_STEPS];
        offsets[..parser.steps.len()].copy_from_slice(&parser.steps);
        Ok(Self {
            compiled: Loc {
                base,
                steps: parser.steps.len() as u8,
                high_half: 0,
                _pad: [0; 5],
                offsets,
                final_offset: parser.pending_offset,
            },
        })
    }

    /// The form the eBPF programs evaluate.
    pub fn compiled(&self) -> Loc {
        self.compiled
    }

    /// True when the location reads `ret` (only valid where a return is seen).
    pub fn reads_return(&self) -> bool {
        self.compiled.needs_return()
    }

    /// True when the location reads a general register directly (valid only
    /// where the probe fires, i.e. for release).
    pub fn reads_register(&self) -> bool {
        self.compiled.base >= LOC_BASE_REGISTER || self.compiled.high_half != 0
    }

    /// True for a literal: no register, no memory.
    pub fn is_constant(&self) -> bool {
        self.compiled.base == LOC_BASE_CONST
    }
}

/// `low:high`: two registers holding the halves of an 8-byte value.
fn halves(low: &str, high: &str) -> Result<Location, String> {
    let register = |name: &str| {
        REGISTER_NAMES
            .iter()
            .position(|r| *r == name)
            .map(|n| LOC_BASE_REGISTER + n as u8)
            .ok_or_else(|| {
                format!(
                    "'{name}': both halves of 'low:high' must be registers ({} … {})",
                    REGISTER_NAMES[0],
                    REGISTER_NAMES[REGISTER_NAMES.len() - 1]
                )
            })
    };
    let mut compiled = Loc::ZERO;
    compiled.base = register(low)?;
    compiled.high_half = register(high)?;
    Ok(Location { compiled })
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loc = &self.compiled;
        if loc.high_half >= LOC_BASE_REGISTER {
            let name = |base: u8| REGISTER_NAMES[usize::from(base - LOC_BASE_REGISTER)];
            return write!(f, "{}:{}", name(loc.base), name(loc.high_half));
        }
        let mut text = match loc.base {
            LOC_BASE_RET => "ret".to_string(),
            LOC_BASE_RET_HIGH => "ret.1".to_string(),
            LOC_BASE_CONST => return write!(f, "{}", loc.final_offset),
            n if n >= LOC_BASE_REGISTER => {
                REGISTER_NAMES[usize::from(n - LOC_BASE_REGISTER)].into()
            }
            n if RESULT_SLOT_HAS_ITS_OWN_NAME && n == LOC_BASE_RESULT_SLOT => {
                crate::arch::HIDDEN_RESULT.into()
            }
            n => format!("arg{n}"),
        };
        for &offset in &loc.offsets[..loc.steps as usize] {
            text = match offset {
                0 => format!("*{text}"),
                o if o > 0 => format!("*({text}+{o})"),
                o => format!("*({text}-{})", o.unsigned_abs()),
            };
        }
        match loc.final_offset {
            0 => write!(f, "{text}"),
            o if o > 0 => write!(f, "{text}+{o}"),
            o => write!(f, "{text}-{}", o.unsigned_abs()),
        }
    }
}

/// Recursive-descent parser. Offsets are folded as they are read: every
/// dereference consumes the offset accumulated since the previous one.
struct Parser<'a> {
    rest: &'a str,
    steps: Vec<i64>,
    pending_offset: i64,
    /// Dereferences entered whose operand is still being read.
    open_stars: usize,
}

impl Parser<'_> {
    fn loc(&mut self) -> Result<u8, String> {
        let base = self.term()?;
        self.skip_spaces();
        let negative = match self.rest.chars().next() {
            Some('+') => false,
            Some('-') => true,
            _ => return Ok(base),
        };
        self.rest = &self.rest[1..];
        let value = self.integer()?;
        let value = if negative { -value } else { value };
        self.pending_offset = self
            .pending_offset
            .checked_add(value)
            .ok_or("offset overflows 64 bits")?;
        Ok(base)
    }

    fn term(&mut self) -> Result<u8, String> {
        self.skip_spaces();
        if let Some(after_star) = self.rest.strip_prefix('*') {
            // Refuse before recursing: a pasted `****…` must not exhaust
            // the stack.
            if self.steps.len() + self.open_stars >= MAX_LOC_STEPS {
                return Err(format!(
                    "more than {MAX_LOC_STEPS} dereferences, at most {MAX_LOC_STEPS} are supported"
                ));
            }
            self.open_stars += 1;
            self.rest = after_star.trim_start();
            let base = if let Some(inner) = self.rest.strip_prefix('(') {
                self.rest = inner;
                let base = self.loc()?;
                self.skip_spaces();
                self.rest = self.rest.strip_prefix(')').ok_or("missing ')'")?;
                base
            } else {
                self.term()?
            };
            if base == LOC_BASE_CONST {
                return Err("cannot dereference a number".into());
            }
            self.open_stars -= 1;
            self.steps.push(std::mem::take(&mut self.pending_offset));
            return Ok(base);
        }
        // A saved register of its own for the hidden result slot (arm64's
        // x8 at entry); x86-64's is arg0, which `argN` already names.
        if RESULT_SLOT_HAS_ITS_OWN_NAME {
            if let Some(after) = self.rest.strip_prefix(crate::arch::HIDDEN_RESULT) {
                self.rest = after;
                self.reject_identifier_tail()?;
                return Ok(LOC_BASE_RESULT_SLOT);
            }
        }
        if let Some(after) = self.rest.strip_prefix("arg") {
            let digit = after.chars().next().ok_or("argN needs N")?;
            let n = digit
                .to_digit(10)
                .filter(|&n| n < u32::from(LOC_BASE_ARG_COUNT))
                .ok_or_else(|| format!("arg{digit}: {}", crate::arch::ARGUMENT_LIMIT))?;
            self.rest = &after[1..];
            self.reject_identifier_tail()?;
            return Ok(n as u8);
        }
        if let Some(after) = self.rest.strip_prefix("ret") {
            // `ret.N`: which 8 bytes of a result returned in registers.
            let (base, after) = match after.strip_prefix('.') {
                Some(half) => match half.chars().next() {
                    Some('0') => (LOC_BASE_RET, &half[1..]),
                    Some('1') => (LOC_BASE_RET_HIGH, &half[1..]),
                    _ => {
                        let [low, high] = crate::arch::RETURN_REGISTERS;
                        return Err(format!(
                            "ret.N: only ret.0 ({low}) and ret.1 ({high}) hold a returned value"
                        ));
                    }
                },
                None => (LOC_BASE_RET, after),
            };
            self.rest = after;
            self.reject_identifier_tail()?;
            return Ok(base);
        }
        // Longest names first, so r1x never reads as r1.
        let mut names: Vec<(usize, &str)> = REGISTER_NAMES.iter().copied().enumerate().collect();
        names.sort_by_key(|(_, name)| std::cmp::Reverse(name.len()));
        for (number, name) in names {
            if let Some(after) = self.rest.strip_prefix(name) {
                if !after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                    self.rest = after;
                    return Ok(LOC_BASE_REGISTER + number as u8);
                }
            }
        }
        if self.rest.starts_with(|c: char| c.is_ascii_digit()) {
            self.pending_offset = self.integer()?;
            return Ok(LOC_BASE_CONST);
        }
        match self.rest.chars().next() {
            None => Err("unexpected end".into()),
            Some(c) => Err(format!("unexpected '{c}'")),
        }
    }

    fn integer(&mut self) -> Result<i64, String> {
        self.skip_spaces();
        let (digits, radix) = match self.rest.strip_prefix("0x") {
            Some(hex) => (hex, 16),
            None => (self.rest, 10),
        };
        let end = digits
            .find(|c: char| !c.is_digit(radix))
            .unwrap_or(digits.len());
        if end == 0 {
            return Err("expected a number".into());
        }
        let value = i64::from_str_radix(&digits[..end], radix)
            .map_err(|_| format!("number '{}' does not fit 63 bits", &digits[..end]))?;
        self.rest = &digits[end..];
        Ok(value)
    }

    fn reject_identifier_tail(&self) -> Result<(), String> {
        match self.rest.chars().next() {
            Some(c) if c.is_alphanumeric() || c == '_' => Err(format!("unexpected '{c}'")),
            _ => Ok(()),
        }
    }

    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(text: &str) -> Loc {
        Location::parse(text).unwrap().compiled()
    }

    #[test]
    fn registers() {
        assert_eq!(compiled("arg0").base, 0);
        assert_eq!(compiled("arg5").base, 5);
        assert_eq!(compiled("ret").base, LOC_BASE_RET);
        assert_eq!(compiled(" arg2 ").steps, 0);
    }

    #[test]
    fn the_second_return_register() {
        assert_eq!(compiled("ret.1").base, LOC_BASE_RET_HIGH);
        assert_eq!(compiled("ret.0"), compiled("ret"));
        assert!(Location::parse("ret.1").unwrap().reads_return());
        assert_eq!(Location::parse("ret.0").unwrap().to_string(), "ret");
        assert_eq!(
            Location::parse("*(ret.1+8)").unwrap().to_string(),
            "*(ret.1+8)"
        );
        for (text, reason) in [
            ("ret.2", "only ret.0"),
            ("ret.", "only ret.0"),
            ("ret.10", "unexpected '0'"),
        ] {
            let err = Location::parse(text).unwrap_err();
            assert!(err.reason.contains(reason), "{text}: {}", err.reason);
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing_into_it() {
        for text in ["*****arg0", &"*(".repeat(100_000), &"*".repeat(100_000)] {
            let err = Location::parse(text).unwrap_err();
            assert!(err.to_string().contains("at most 4 are supported"), "{err}");
        }
        assert_eq!(compiled("****arg0").steps, 4);
        assert_eq!(compiled("*(*(*(*(arg0+8)+8)+8)+8)").steps, 4);
    }

    #[test]
    fn odd_text_is_an_error_not_a_panic() {
        for text in [
            "",
            "*",
            "*(",
            "*()",
            ")",
            "arg",
            "arg9",
            "arg٣",
            "0x",
            "0xg",
            "+",
            "arg0+",
            "arg0+-1",
            "arg0+99999999999999999999",
            "arg0+0x7fffffffffffffff+1",
            "é",
            "ret ret",
            "*-1",
            "rax+",
            "r1x",
            "\u{0}",
        ] {
            assert!(Location::parse(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn dereferences_fold_offsets() {
        let loc = compiled("*(*(arg0+8)+16)-4");
        assert_eq!(loc.base, 0);
        assert_eq!(loc.steps, 2);
        assert_eq!(&loc.offsets[..2], &[8, 16]);
        assert_eq!(loc.final_offset, -4);
        let loc = compiled("**arg1");
        assert_eq!((loc.steps, loc.offsets[0], loc.offsets[1]), (2, 0, 0));
        assert_eq!(compiled("*(ret+0x18)").offsets[0], 0x18);
        assert_eq!(compiled("*arg0+8").final_offset, 8);
    }

    #[test]
    fn general_registers() {
        let loc = compiled("*(rbx+8)");
        assert_eq!(loc.base, LOC_BASE_REGISTER + 3);
        assert_eq!(compiled("r12").base, LOC_BASE_REGISTER + 12);
        assert_eq!(compiled("r8").base, LOC_BASE_REGISTER + 8);
        assert!(Location::parse("rbx").unwrap().reads_register());
        assert!(!Location::parse("arg1").unwrap().reads_register());
        assert_eq!(
            Location::parse("*(r15+16)").unwrap().to_string(),
            "*(r15+16)"
        );
    }

    #[test]
    fn literals() {
        let loc = compiled("4096");
        assert_eq!((loc.base, loc.final_offset), (LOC_BASE_CONST, 4096));
        assert!(Location::parse("0x100").unwrap().is_constant());
    }

    /// Found by fuzzing: `04-410` parsed as the literal -406, printed as
    /// `-406`, which does not parse.
    #[test]
    fn negative_literals_are_refused() {
        for text in ["04-410", "0-1", "0x10-0x11"] {
            let err = Location::parse(text).unwrap_err();
            assert_eq!(err.reason, "a literal cannot be negative", "{text}");
        }
        assert_eq!(compiled("4096-96").final_offset, 4000);
        assert_eq!(Location::parse("5-5").unwrap().to_string(), "0");
        assert_eq!(compiled("arg0-8").final_offset, -8);
    }

    #[test]
    fn canonical_display_round_trips() {
        for text in [
            "arg0",
            "ret",
            "*arg1",
            "*(arg0+8)",
            "*(*(ret+8)+16)-4",
            "ret.1",
            "*(arg2-8)",
            "256",
        ] {
            let shown = Location::parse(text).unwrap().to_string();
            assert_eq!(shown, text);
            assert_eq!(Location::parse(&shown).unwrap().compiled(), compiled(text));
        }
    }

    #[test]
    fn every_argument_register_is_named_and_the_next_refused() {
        let last = LOC_BASE_ARG_COUNT - 1;
        let text = format!("*(arg{last}+8)");
        let loc = compiled(&text);
        assert_eq!((loc.base, loc.steps, loc.offsets[0]), (last, 1, 8));
        assert_eq!(Location::parse(&text).unwrap().to_string(), text);
        let beyond = format!("arg{LOC_BASE_ARG_COUNT}");
        let err = Location::parse(&beyond).unwrap_err();
        assert!(err.reason.contains(crate::arch::ARGUMENT_LIMIT), "{err}");
    }

    #[test]
    fn the_hidden_result_slot_is_the_register_saved_for_it() {
        // What `keys::value_at` asks for a large result: the slot's address
        // as the entry saved it (x86-64: arg0; arm64: x8), read at return.
        let text = format!("*({}+24)", crate::arch::HIDDEN_RESULT);
        let location = Location::parse(&text).unwrap();
        let loc = location.compiled();
        assert_eq!(
            (loc.base, loc.steps, loc.offsets[0]),
            (LOC_BASE_RESULT_SLOT, 1, 24)
        );
        assert!(!location.reads_register() && !location.reads_return());
        assert_eq!(location.to_string(), text);
        assert!(Location::parse(&format!("{}x", crate::arch::HIDDEN_RESULT)).is_err());
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (text, reason) in [
            ("", "unexpected end"),
            ("arg9", crate::arch::ARGUMENT_LIMIT),
            ("argx", crate::arch::ARGUMENT_LIMIT),
            ("rzx", "unexpected 'r'"),
            ("*(arg0+8", "missing ')'"),
            ("arg0+", "expected a number"),
            ("arg0 arg1", "unexpected 'arg1'"),
            ("*5", "cannot dereference a number"),
            ("*****arg0", "at most 4"),
            ("ret2", "unexpected '2'"),
            ("arg0+0xZZ", "expected a number"),
            ("arg0+99999999999999999999", "does not fit"),
        ] {
            let err = Location::parse(text).unwrap_err();
            assert!(err.reason.contains(reason), "{text}: {}", err.reason);
            assert!(err
                .to_string()
                .starts_with(&format!("bad location '{text}'")));
        }
    }
}
