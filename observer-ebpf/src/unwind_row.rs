//! Rows of the compact unwind tables: from a row's address until the next
//! row's, how to find the caller's frame. Derived from `.eh_frame` by the
//! observer at attach (`plan/unwind.rs`), binary-searched by the walker.
//!
//! Each processor has its own encoding, as small as its rules allow; both
//! are defined here whatever the build, so that the observer can build
//! (and its tests check) either one on any host. [`UnwindRow`] is the one
//! of the processor observed: the eBPF programs' `bpf_target_arch`, in
//! userspace the build's own `target_arch` (the observer observes its own
//! processor's programs). Both sides read a row only through [`Row`].
//!
//! - x86-64 ([`x86_64::UnwindRow`], 8 bytes): the return address is
//!   always at CFA − 8, where `call` pushed it; the row says where rbp was
//!   saved, in words.
//! - arm64 ([`aarch64::UnwindRow`], 16 bytes): `bl` pushes nothing; x30
//!   (the return address) and x29 (the frame pointer) are saved where the
//!   prologue chooses, often far below the CFA (GCC puts the frame record
//!   at the bottom of the frame: 4% of glibc's rows have it more than
//!   1016 bytes down, beyond what a signed byte of words reaches), so both
//!   offsets are 16-bit byte offsets; until x30 is saved (a function's
//!   entry, a leaf) the return address is still in x30.

/// [`Row::kind`] values.
pub mod row_kind {
    /// No FDE covers this address (between functions).
    pub const GAP: u8 = 0;
    /// CFA = stack pointer (rsp, sp) + offset.
    pub const CFA_SP: u8 = 1;
    /// CFA = frame pointer (rbp, x29) + offset.
    pub const CFA_FP: u8 = 2;
    /// x86-64 PLT entry: CFA = rsp + 8 + ((pc & 15) >= 11 ? 8 : 0).
    pub const PLT_11: u8 = 3;
    /// x86-64 PLT entry with threshold 10.
    pub const PLT_10: u8 = 4;
    /// Return address undefined: an entry point, the stack ends here.
    pub const END: u8 = 5;
    /// A rule we do not implement (CFA in another register, expressions,
    /// registers saved in registers or out of the encoding's reach).
    pub const UNSUPPORTED: u8 = 6;
}

/// What a walker reads from a row, whichever the processor.
pub trait Row: Copy {
    /// The object's ELF virtual address where the row starts (low 32
    /// bits; objects above 4 GiB are not tabled).
    fn pc(&self) -> u32;
    /// [`row_kind`].
    fn kind(&self) -> u8;
    /// CFA = base register (see [`row_kind`]) + this.
    fn cfa_offset(&self) -> i16;
    /// The caller's frame pointer (rbp, x29) was saved at CFA + this
    /// (bytes); 0: it is unchanged.
    fn fp_offset(&self) -> i16;
    /// The return address was saved at CFA + this (bytes; always −8 on
    /// x86-64); 0: it is still in the link register (arm64's x30, before
    /// the prologue saved it or in a leaf), usable at the walk's first
    /// frame only.
    fn ra_offset(&self) -> i16;
}

/// x86-64's rows.
pub mod x86_64 {
    use super::Row;

    /// One row (8 bytes).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct UnwindRow {
        pub pc: u32,
        /// CFA = rsp or rbp (see [`super::row_kind`]) + this.
        pub cfa_offset: i16,
        /// rbp was saved at CFA + 8 × this; 0 = rbp unchanged.
        pub rbp_offset_words: i8,
        pub kind: u8,
    }

    const _: () = assert!(size_of::<UnwindRow>() == 8);
    const _: () = assert!(core::mem::offset_of!(UnwindRow, cfa_offset) == 4);
    const _: () = assert!(core::mem::offset_of!(UnwindRow, rbp_offset_words) == 6);
    const _: () = assert!(core::mem::offset_of!(UnwindRow, kind) == 7);

    impl Row for UnwindRow {
        #[inline(always)]
        fn pc(&self) -> u32 {
            self.pc
        }

        #[inline(always)]
        fn kind(&self) -> u8 {
            self.kind
        }

        #[inline(always)]
        fn cfa_offset(&self) -> i16 {
            self.cfa_offset
        }

        #[inline(always)]
        fn fp_offset(&self) -> i16 {
            // At most 127 × 8: no overflow.
            i16::from(self.rbp_offset_words) * 8
        }

        /// `call` pushed it just below the CFA (rows where it is elsewhere
        /// are [`super::row_kind::UNSUPPORTED`]).
        #[inline(always)]
        fn ra_offset(&self) -> i16 {
            -8
        }
    }
}

/// arm64's rows.
pub mod aarch64 {
    use super::Row;

    /// One row (16 bytes: a multiple of 8, the kernel's stride for array
    /// elements, which userspace writes through mmap).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct UnwindRow {
        pub pc: u32,
        /// CFA = sp or x29 (see [`super::row_kind`]) + this.
        pub cfa_offset: i16,
        /// x29 was saved at CFA + this (bytes); 0 = x29 unchanged.
        pub fp_offset: i16,
        /// x30, the return address, was saved at CFA + this (bytes); 0 =
        /// not saved: it is still in x30.
        pub ra_offset: i16,
        pub kind: u8,
        pub _pad: [u8; 5],
    }

    const _: () = assert!(size_of::<UnwindRow>() == 16);
    const _: () = assert!(core::mem::offset_of!(UnwindRow, cfa_offset) == 4);
    const _: () = assert!(core::mem::offset_of!(UnwindRow, fp_offset) == 6);
    const _: () = assert!(core::mem::offset_of!(UnwindRow, ra_offset) == 8);
    const _: () = assert!(core::mem::offset_of!(UnwindRow, kind) == 10);

    impl Row for UnwindRow {
        #[inline(always)]
        fn pc(&self) -> u32 {
            self.pc
        }

        #[inline(always)]
        fn kind(&self) -> u8 {
            self.kind
        }

        #[inline(always)]
        fn cfa_offset(&self) -> i16 {
            self.cfa_offset
        }

        #[inline(always)]
        fn fp_offset(&self) -> i16 {
            self.fp_offset
        }

        #[inline(always)]
        fn ra_offset(&self) -> i16 {
            self.ra_offset
        }
    }
}

/// The rows of the processor observed (see the module's documentation).
#[cfg(any(
    bpf_target_arch = "aarch64",
    all(not(target_arch = "bpf"), target_arch = "aarch64")
))]
pub use aarch64::UnwindRow;
/// The rows of the processor observed (see the module's documentation).
#[cfg(not(any(
    bpf_target_arch = "aarch64",
    all(not(target_arch = "bpf"), target_arch = "aarch64")
)))]
pub use x86_64::UnwindRow;

// Userspace writes rows through mmap at `size_of` strides; the kernel
// places array elements 8-byte aligned.
const _: () = assert!(size_of::<UnwindRow>().is_multiple_of(8));
