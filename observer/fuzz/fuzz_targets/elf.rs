//! ELF files as the observer first reads them, from bytes a target (or
//! whoever wrote its libraries and debug files) chose: the cheap layout
//! read for every mapped library (`ElfLayout::parse`, and the copy with
//! its debug links hidden from the symbolizer), and the full read of an
//! executable (`ElfInfo::parse`: symbols, segments, GOT slots, entry).
//! Any bytes are an error or a value, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::resolve::elf::{without_link_sections, ElfInfo, ElfLayout};

/// A mapping as `/proc/PID/maps` shows a PIE's first one.
const MAPPING: (u64, u64, u64) = (0x5555_5555_4000, 0x5555_5557_8000, 0);

fuzz_target!(|data: &[u8]| {
    layout(data);
    if let Some(elf) = observer_fuzz::elf_info(data) {
        info(&elf);
    }
});

fn layout(data: &[u8]) {
    let Ok(layout) = ElfLayout::parse(data.to_vec()) else {
        return;
    };
    let (start, end, offset) = MAPPING;
    let _ = layout.load_bias(start, end, offset);
    for file_offset in [0, 0x1000, data.len() as u64 / 2] {
        let _ = layout.address_of_file_offset(file_offset);
    }
    // The copy given to the symbolizer must name no other file.
    match without_link_sections(data) {
        Some(copy) => {
            assert_eq!(copy.len(), data.len());
            let cleaned = ElfLayout::parse(copy).expect("the cleaned copy still parses");
            assert!(!cleaned.links_elsewhere, "a link section kept its name");
        }
        None => assert!(!layout.links_elsewhere, "link sections left in place"),
    }
}

fn info(elf: &ElfInfo) {
    let (start, end, offset) = MAPPING;
    let _ = elf.load_bias(start, end, offset);
    let _ = elf.entry_point();
    let _ = elf.dwarf_data();
    for function in elf.functions.iter().take(64) {
        let _ = elf.function_containing(function.address);
        let _ = elf.file_offset(function.address);
        let _ = elf.bytes_at(function.address, function.size as usize);
    }
    for slot in elf.got_slots().keys().take(64) {
        assert!(elf.in_got(*slot), "GOT slot {slot:#x} is not in the GOT");
    }
}
