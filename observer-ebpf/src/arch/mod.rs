//! The one place the eBPF programs know which processor the target runs
//! on: its registers in a probe's snapshot (`pt_regs`), its calling
//! convention (argument and return registers, where a call keeps its
//! return address) and the frame layout the unwinder falls back on.
//!
//! Chosen once, by `bpf_target_arch` (the architecture of the kernel the
//! programs are loaded into: the observer's build passes its own target's;
//! this crate's build script supplies the host's when no build does, as
//! aya-ebpf's bindings do). Each architecture's module provides the same
//! functions, all `#[inline(always)]` so that the programs compile to
//! plain loads from the register snapshot:
//!
//! | item | meaning |
//! |---|---|
//! | `pc`, `sp`, `fp` | instruction, stack and frame pointer |
//! | `link_register` | the return-address register (`None` where a call pushes it) |
//! | `returned` | the two return registers (`ret`, `ret.1`) |
//! | `register` | a general register by its DWARF number (locations) |
//! | `entry_registers` | the registers an entry saves for locations (arguments; arm64 also x8); one of them by its base is the library's `saved_register` |
//! | `entry_call_slot` | what identifies a call at its callee's first instruction |
//! | `return_address_at_entry` | the callee's return address at its first instruction (defined here, from `link_register` or the slot) |
//! | `pending_call_slot` | the same identity before a call instruction or after the return |
//! | `call_of_cfa` | the same identity, from the callee frame's CFA (a uretprobe's trampoline found in a walk) |
//! | `call_is_below` | whether a call was made below a given frame (calls a panic unwound) |
//! | `strip_return_address` | a return address without pointer-authentication bits |
//! | `TRAMPOLINE_HINTS` | where the kernel maps the uretprobe trampoline before it is learned |
//! | `REPAIRS_RETURN_ADDRESSES` | whether the panic repair can put return addresses back |
//! | `caller_is_above` | whether a row's CFA is plausible for the stack pointer |
//! | `frame_record`, `chain_goes_up`, `CHAIN_STEP_OFFSETS`, `SP_MAY_BE_UNKNOWN` | the frame-pointer chain's step, its check, where it reads, whether it tells the caller's sp |
//! | `return_address_slot_at_entry`, `ENTRY_RA_OFFSET` | where the return address is at a callee's first instruction (a slot, or the link register) |
//! | `caller_sp_at_entry` | the caller's stack pointer at a callee's first instruction |
//!
//! The frame rules (`strip_return_address` down to `caller_sp_at_entry`)
//! are pure address arithmetic: they live in the library
//! (`observer_ebpf::frame_rules`), re-exported here, so that the host runs
//! the walker's steps (`observer_ebpf::walk_step`) with them too.
//!
//! Where a frame saved its return address and frame pointer comes from
//! its unwind row (`observer_ebpf::Row`: each processor's row type).
//!
//! Argument registers are read through aya's `ProbeContext::arg`, which
//! follows the same `bpf_target_arch` (x86-64: rdi rsi rdx rcx r8 r9;
//! arm64: x0–x7).
//!
//! The location numbering itself (how many registers are saved, where
//! `ret` is) is shared with userspace, so it lives in the library:
//! `loc_x86_64.rs` and `loc_aarch64.rs` here, chosen the same way.
//!
//! What the kernel side still lacks on arm64 (x6 and x7, x8) is listed in
//! docs/arm64.md.

#[cfg(bpf_target_arch = "aarch64")]
mod aarch64;
#[cfg(bpf_target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(bpf_target_arch = "x86_64")]
mod x86_64;
#[cfg(bpf_target_arch = "x86_64")]
pub use x86_64::*;

/// The observed processor's frame rules, for the walker's steps
/// (`observer_ebpf::walk_step`), which are generic over them.
pub use observer_ebpf::frame_rules::Observed as Frames;

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("the observer's eBPF programs support bpf_target_arch x86_64 and aarch64");

/// What a function returned, in its two return registers (`ret`, `ret.1`).
pub type Returned = [u64; 2];

/// At a callee's first instruction: its return address, from the link
/// register where the architecture has one, else read from the slot the
/// call pushed it into (0 when unreadable); stripped as the walk records
/// return addresses.
#[inline(always)]
pub fn return_address_at_entry(regs: &aya_ebpf::bindings::pt_regs) -> u64 {
    link_register(regs)
        .or_else(|| crate::read_user(return_address_slot_at_entry(sp(regs))?))
        .map(strip_return_address)
        .unwrap_or(0)
}

/// One `u64` slot of a probe's register snapshot, read with a helper
/// rather than a field load: the verifier forbids loads through a context
/// pointer moved by a variable offset, which is what a slot chosen at run
/// time compiles to.
///
/// # Safety
/// `slot` must be below the number of `u64`s in `pt_regs`.
#[inline(always)]
unsafe fn snapshot_slot(regs: &aya_ebpf::bindings::pt_regs, slot: usize) -> Result<u64, ()> {
    let base = regs as *const aya_ebpf::bindings::pt_regs as *const u64;
    // SAFETY: guaranteed by the caller: the address is inside the probe's
    // register snapshot; the helper checks the read.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(base.add(slot)) }.map_err(|_| ())
}
