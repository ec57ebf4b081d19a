//! Servers written on popular pool and slab crates, used as their users
//! use them, each leaking a known number of items on an error path:
//! `keys` — results that are integer keys and enums (sharded-slab,
//! slotmap); `inlined` — pools the compiler inlines into their callers,
//! guards released on Drop, and the fat-LTO gateway (object-pool, slab).

mod inlined;
mod keys;

pub use inlined::*;
pub use keys::*;
