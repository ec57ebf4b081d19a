//! `/proc/PID/maps` lines (`observer::resolve::process::Mapping::parse`):
//! the kernel writes the numbers, but the path at the end is whatever the
//! target named its files. Any line is a mapping or `None`, never a panic,
//! and a parsed mapping written back the kernel's way parses the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::resolve::process::Mapping;

fuzz_target!(|data: &[u8]| {
    let Some(text) = observer_fuzz::text(data) else {
        return;
    };
    for line in text.lines() {
        let Some(mapping) = Mapping::parse(line) else {
            continue;
        };
        let perms = if mapping.executable { "r-xp" } else { "rw-p" };
        let written = format!(
            "{:x}-{:x} {perms} {:08x} 00:00 {} {}",
            mapping.start, mapping.end, mapping.file_offset, mapping.inode, mapping.path
        );
        assert_eq!(
            Mapping::parse(&written).as_ref(),
            Some(&mapping),
            "{line:?} written back as {written:?}"
        );
        if mapping.contains(mapping.start) {
            assert_eq!(mapping.file_offset_of(mapping.start), mapping.file_offset);
        }
    }
});
