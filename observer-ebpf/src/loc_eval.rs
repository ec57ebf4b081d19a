//! Evaluating a compiled location ([`Loc`]) where a probe fires: the code
//! the eBPF programs run for every id, size, scope and result test, here so
//! that the host runs the very same code and judges it against gimli's
//! DWARF evaluation (the observer's `resolve/places.rs` tests: real
//! location expressions, decoded, compiled, evaluated both ways).
//!
//! `#[inline(always)]` and generic over the registers ([`Registers`]) and
//! memory ([`ReadUser`]): the programs compile it to what they ran before
//! it moved here.

use crate::{
    saved_register, Loc, LOC_BASE_CONST, LOC_BASE_REGISTER, LOC_BASE_RET, LOC_BASE_RET_HIGH,
    LOC_BASE_SAVED_COUNT, MAX_LOC_STEPS,
};

/// A location that cannot be evaluated where it is: a register that is
/// not there (a register base at a return), memory that cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotEvaluable;

/// Reads of the target's memory, 8 bytes at a time.
pub trait ReadUser {
    /// The 8 bytes at `address`; `None` where they cannot be read.
    fn read_u64(&self, address: u64) -> Option<u64>;
}

/// The registers where a probe fires, by DWARF number.
pub trait Registers {
    /// General register `number` (x86-64: 0–15; arm64: 0–30 x0–x30, 31
    /// sp); `Err` for any other.
    fn register(&self, number: u8) -> Result<u64, NotEvaluable>;
}

/// The two return registers (`ret`, `ret.1`).
pub type Returned = [u64; 2];

/// One field of a map value, read where it is used. Volatile, so the
/// compiler never copies a whole value of locations onto the BPF stack (it
/// did: hundreds of bytes, past the 512 the verifiers of Linux 6.1 and
/// 6.12 allow a call chain).
#[inline(always)]
pub fn field<T: Copy>(value: &T) -> T {
    // SAFETY: a valid, aligned reference.
    unsafe { core::ptr::read_volatile(value) }
}

/// Evaluates `loc` (see [`Loc`]): `saved` are the registers the allocate
/// call's entry saved, `ret` its return registers, `registers` those where
/// the probe fires (`None` at a return: register bases fail there).
#[inline(always)]
pub fn evaluate<G: Registers, M: ReadUser>(
    loc: &Loc,
    saved: &[u64; LOC_BASE_SAVED_COUNT as usize],
    ret: Returned,
    registers: Option<&G>,
    memory: &M,
) -> Result<u64, NotEvaluable> {
    let mut value = match (field(&loc.base), registers) {
        (LOC_BASE_RET, _) => ret[0],
        (LOC_BASE_RET_HIGH, _) => ret[1],
        (LOC_BASE_CONST, _) => 0,
        (base, _) if base < LOC_BASE_SAVED_COUNT => saved_register(saved, base)?,
        (base, Some(registers)) if base >= LOC_BASE_REGISTER => {
            registers.register(base - LOC_BASE_REGISTER)?
        }
        _ => return Err(NotEvaluable),
    };
    let steps = field(&loc.steps) as usize;
    let mut step = 0;
    while step < MAX_LOC_STEPS {
        if step >= steps {
            break;
        }
        let address = value.wrapping_add(field(&loc.offsets[step]) as u64);
        value = memory.read_u64(address).ok_or(NotEvaluable)?;
        step += 1;
    }
    let value = value.wrapping_add(field(&loc.final_offset) as u64);
    match (field(&loc.high_half), registers) {
        (0, _) => Ok(value),
        (high, Some(registers)) if high >= LOC_BASE_REGISTER => {
            let high = registers.register(high - LOC_BASE_REGISTER)?;
            Ok((value & 0xffff_ffff) | (high << 32))
        }
        _ => Err(NotEvaluable),
    }
}
