//! Where an inlined instance sits in its caller, shared by the planning of
//! inlined releases ([`super::inlined`]) and inlined allocates
//! ([`super::inlined_alloc`]): the function symbol holding its code, a
//! label people recognise, and a probe at one of its places.

use std::ops::Range;

use super::site::decode_first;
use super::ProbeSite;
use crate::resolve::elf::{ElfInfo, FunctionSymbol};
use crate::resolve::pattern::RustPath;

/// The function symbol whose code holds an instance with these ranges.
pub fn caller_of<'e>(elf: &'e ElfInfo, ranges: &[Range<u64>]) -> Option<&'e FunctionSymbol> {
    elf.function_containing(ranges.iter().map(|r| r.start).min()?)
}

/// Where an instance sits, for people: the inlined call it is part of
/// (`via`), if any, and the function symbol holding its code.
pub fn caller_label(elf: &ElfInfo, ranges: &[Range<u64>], via: Option<&str>) -> String {
    let symbol = caller_of(elf, ranges).map_or_else(
        || format!("code at {:#x}", ranges.first().map_or(0, |r| r.start)),
        function_name,
    );
    match via {
        Some(via) if via != symbol => format!("{via} (in {symbol})"),
        _ => symbol,
    }
}

/// A function's path as people write it (no hash, no `<impl …>` noise).
pub fn function_name(function: &FunctionSymbol) -> String {
    RustPath::parse(&function.demangled).to_string()
}

/// A probe at `address` of an instance of `name` inlined in `caller`,
/// with attach cookie `index`; `None` when the address is not in a
/// loadable segment. The caller fills in what the probe reads there.
pub fn site_at(
    elf: &ElfInfo,
    name: &str,
    address: u64,
    caller: &str,
    index: usize,
) -> Option<ProbeSite> {
    let file_offset = elf.file_offset(address)?;
    let bytes = elf.bytes_at(address, 16).unwrap_or_default();
    Some(ProbeSite {
        cookie: u32::try_from(index).ok()?,
        symbol: FunctionSymbol {
            mangled: format!("{name} inlined at {address:#x}"),
            demangled: name.to_string(),
            address,
            size: 0,
        },
        file_offset,
        first_instruction: decode_first(bytes, address),
        label: Some(format!("inlined in {caller}")),
        release_id: None,
        release_scope: None,
        exit: None,
        call: None,
        probe_address: address,
    })
}
