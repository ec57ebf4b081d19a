//! Unwind tables from a file's `.eh_frame` (`ObjectTable::from_elf`), built
//! for the executable and every library a target maps, and their page
//! index, in each processor's encoding (a file of the other processor
//! gets an empty table): any bytes give an error or a table the kernel's
//! walker can binary-search (sorted, one row per address), never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::plan::unwind::{pages, Aarch64Row, Encoding, ObjectTable, X86_64Row};

fn check<R: Encoding>(data: &[u8]) {
    let Ok(table) = ObjectTable::<R>::encoded_from_elf(data) else {
        return;
    };
    assert!(
        table.rows.windows(2).all(|w| w[0].pc() < w[1].pc()),
        "rows not sorted and unique"
    );
    for (page, first, count) in pages(&table.rows, 0) {
        let rows = &table.rows[first as usize..(first + count) as usize];
        assert!(!rows.is_empty(), "page {page:#x} indexes no row");
    }
}

fuzz_target!(|data: &[u8]| {
    check::<X86_64Row>(data);
    check::<Aarch64Row>(data);
});
