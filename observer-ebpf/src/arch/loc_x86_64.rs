//! x86-64's numbering of [`Loc::base`](crate::Loc::base) (System V): six
//! argument registers saved at entry (rdi, rsi, rdx, rcx, r8, r9), and a
//! large result's hidden return slot addressed by rdi, which is `arg0`
//! (so it needs no saved register of its own).
//!
//! These values are the encoding every earlier observer used: they must not
//! change (the shared tests pin them byte for byte).

/// Bases `0..LOC_BASE_ARG_COUNT` are `arg0`…`arg5` (rdi rsi rdx rcx r8 r9).
pub const LOC_BASE_ARG_COUNT: u8 = 6;
/// Bases `0..LOC_BASE_SAVED_COUNT` are the registers an allocate's entry
/// saves for its return: the arguments only.
pub const LOC_BASE_SAVED_COUNT: u8 = 6;
/// The base of the hidden result pointer saved at entry: `arg0` (rdi).
pub const LOC_BASE_RESULT_SLOT: u8 = 0;
/// The return register (rax) when the function returns.
pub const LOC_BASE_RET: u8 = 6;
/// The constant 0; with `final_offset` a literal.
pub const LOC_BASE_CONST: u8 = 7;
/// The second return register (rdx) when the function returns.
pub const LOC_BASE_RET_HIGH: u8 = 8;

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
        _ => return Err(crate::loc_eval::NotEvaluable),
    })
}
