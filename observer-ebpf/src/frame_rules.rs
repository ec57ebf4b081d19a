//! Each processor's frame rules: where a call leaves its return address,
//! how a frame-pointer chain steps, what identifies a call from a frame's
//! CFA. Pure functions of addresses, shared by the eBPF programs (through
//! their `arch` module, which re-exports the observed processor's) and by
//! the host, which runs the walker's steps ([`crate::walk_step`]) with
//! either processor's rules whatever it runs on, to judge them.
//!
//! Both modules provide the same items; [`FrameRules`] names them for
//! code generic over the processor, [`Observed`] is the processor the
//! programs are built for (`bpf_target_arch`; in userspace the build's
//! own architecture, as for [`crate::UnwindRow`]).

pub mod aarch64;
pub mod x86_64;

/// A processor's frame rules, for code generic over it (the walker's
/// steps). See each module for what the items mean.
pub trait FrameRules {
    /// Whether a frame-pointer chain step can leave the caller's stack
    /// pointer unknown ([`crate::UNKNOWN_SP`]).
    const SP_MAY_BE_UNKNOWN: bool;
    /// Where a chain step read, from the caller's stack pointer.
    const CHAIN_STEP_OFFSETS: (i16, i16);
    /// Where the return address is at a callee's first instruction, from
    /// the caller's stack pointer (0: in the link register).
    const ENTRY_RA_OFFSET: i16;
    /// A return address without pointer-authentication bits.
    fn strip_return_address(value: u64) -> u64;
    /// What identifies the call whose return address a frame with this
    /// CFA saved.
    fn call_of_cfa(cfa: u64) -> u64;
    /// Whether a caller's CFA is plausible for the stack pointer.
    fn caller_is_above(cfa: u64, sp: u64, first: bool) -> bool;
    /// A chain step from frame pointer `fp`: the return address' slot,
    /// the saved frame pointer's slot, the caller's stack pointer.
    fn frame_record(fp: u64) -> (u64, u64, u64);
    /// Whether a chain step from `fp` to `saved_fp` may go on.
    fn chain_goes_up(fp: u64, saved_fp: u64) -> bool;
    /// At a callee's first instruction, the slot of its return address
    /// (`None`: the link register).
    fn return_address_slot_at_entry(sp: u64) -> Option<u64>;
    /// At a callee's first instruction, the caller's stack pointer.
    fn caller_sp_at_entry(sp: u64) -> u64;
}

/// Implements [`FrameRules`] for `$name` with the free items of `$module`.
macro_rules! frame_rules_of {
    ($name:ident, $module:ident) => {
        #[doc = concat!("The rules of [`", stringify!($module), "`].")]
        #[derive(Clone, Copy, Debug)]
        pub struct $name;

        impl FrameRules for $name {
            const SP_MAY_BE_UNKNOWN: bool = $module::SP_MAY_BE_UNKNOWN;
            const CHAIN_STEP_OFFSETS: (i16, i16) = $module::CHAIN_STEP_OFFSETS;
            const ENTRY_RA_OFFSET: i16 = $module::ENTRY_RA_OFFSET;

            #[inline(always)]
            fn strip_return_address(value: u64) -> u64 {
                $module::strip_return_address(value)
            }

            #[inline(always)]
            fn call_of_cfa(cfa: u64) -> u64 {
                $module::call_of_cfa(cfa)
            }

            #[inline(always)]
            fn caller_is_above(cfa: u64, sp: u64, first: bool) -> bool {
                $module::caller_is_above(cfa, sp, first)
            }

            #[inline(always)]
            fn frame_record(fp: u64) -> (u64, u64, u64) {
                $module::frame_record(fp)
            }

            #[inline(always)]
            fn chain_goes_up(fp: u64, saved_fp: u64) -> bool {
                $module::chain_goes_up(fp, saved_fp)
            }

            #[inline(always)]
            fn return_address_slot_at_entry(sp: u64) -> Option<u64> {
                $module::return_address_slot_at_entry(sp)
            }

            #[inline(always)]
            fn caller_sp_at_entry(sp: u64) -> u64 {
                $module::caller_sp_at_entry(sp)
            }
        }
    };
}

frame_rules_of!(X86_64Frames, x86_64);
frame_rules_of!(Aarch64Frames, aarch64);

/// The rules of the processor observed (see the module's documentation).
#[cfg(bpf_target_arch = "aarch64")]
pub type Observed = Aarch64Frames;
/// The rules of the processor observed (see the module's documentation).
#[cfg(not(bpf_target_arch = "aarch64"))]
pub type Observed = X86_64Frames;
