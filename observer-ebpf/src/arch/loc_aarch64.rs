//! arm64's numbering of [`Loc::base`](crate::Loc::base) (AAPCS64): eight
//! argument registers x0–x7, and x8, the indirect-result register, which
//! holds a large result's hidden return slot at entry and nothing useful
//! at the return. The entry saves x0–x8 (contiguous in `user_pt_regs`), so
//! x8 is saved slot 8, after the arguments.

/// Bases `0..LOC_BASE_ARG_COUNT` are `arg0`…`arg7` (x0–x7).
pub const LOC_BASE_ARG_COUNT: u8 = 8;
/// Bases `0..LOC_BASE_SAVED_COUNT` are the registers an allocate's entry
/// saves for its return: x0–x7 and x8.
pub const LOC_BASE_SAVED_COUNT: u8 = 9;
/// The base of the hidden result pointer saved at entry: x8.
pub const LOC_BASE_RESULT_SLOT: u8 = 8;
/// The return register (x0) when the function returns.
pub const LOC_BASE_RET: u8 = 9;
/// The constant 0; with `final_offset` a literal.
pub const LOC_BASE_CONST: u8 = 10;
/// The second return register (x1) when the function returns.
pub const LOC_BASE_RET_HIGH: u8 = 11;

/// Saved register `base` (below `LOC_BASE_SAVED_COUNT`), by constant
/// indices: the verifier is spared a variable offset into the stack.
#[inline(always)]
pub fn saved_register(
    saved: &[u64; LOC_BASE_SAVED_COUNT as usize],
    base: u8,
) -> Result<u64, crate::loc_eval::NotEvaluable> {
    Ok(match base {
        0 => saved[0],
        1 => saved[1],
        2 => saved[2],
        3 => saved[3],
        4 => saved[4],
        5 => saved[5],
        6 => saved[6],
        7 => saved[7],
        8 => saved[8],
        _ => return Err(crate::loc_eval::NotEvaluable),
    })
}
