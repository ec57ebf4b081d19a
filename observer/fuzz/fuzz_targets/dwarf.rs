//! The DWARF readers run on a target's binary or debug file: inlined
//! instances (`find_inlined`, `inlined_calls`), DWARF's names of generic
//! copies (`names_by_linkage`), signatures (`signature_at`) and an inlined
//! allocate's result at its exits (`inlined_allocs`, which decodes location
//! expressions). Any bytes give an error or an answer, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::resolve::dwarf::{find_inlined, names_by_linkage};
use observer::resolve::inlined_result::{inlined_allocs, Flow};
use observer::resolve::pattern::RustPath;
use observer::resolve::signature::{inlined_calls, signature_at};

/// Functions looked up in every input: those of the generated seeds (see
/// `cargo xtask fuzz`), whatever the symbol table holds is added.
const NAMES: [&str; 2] = ["release", "allocate"];

/// Symbols of an input looked at, at most.
const SYMBOLS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some(elf) = observer_fuzz::elf_info(data) else {
        return;
    };
    if !elf.has_debug_info {
        return;
    }
    let symbols = elf.functions.iter().take(SYMBOLS);
    let names = NAMES
        .iter()
        .map(|name| name.to_string())
        .chain(symbols.clone().map(|f| f.demangled.clone()));
    for name in names {
        let wanted = RustPath::parse(&name);
        let _ = find_inlined(&elf, &wanted);
        let _ = inlined_calls(&elf, &wanted, |ranges| {
            ranges.iter().map(|range| range.start).take(4).collect()
        });
        // Exits at the ends of the ranges, reached from their starts.
        let _ = inlined_allocs(&elf, &wanted, |ranges| Flow {
            entries: ranges.iter().map(|range| range.start).take(4).collect(),
            exits: ranges.iter().map(|range| range.end).take(4).collect(),
            after_calls: ranges.iter().map(|range| range.end).take(1).collect(),
            edges: ranges
                .iter()
                .map(|range| (range.end, range.start))
                .take(4)
                .collect(),
        });
    }
    let mangled: Vec<&str> = symbols.clone().map(|f| f.mangled.as_str()).collect();
    let _ = names_by_linkage(&elf, &mangled);
    for function in symbols {
        let _ = signature_at(&elf, function.address);
    }
});
