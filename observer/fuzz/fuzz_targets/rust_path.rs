//! Rust paths (`observer::resolve::pattern`): what `--alloc` / `--release`
//! name, and every demangled symbol name of a target's files, which its
//! author chose. Any text parses, matches and prints without a panic, and
//! a parsed path matches itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::resolve::pattern::{demangle, RustPath};

fuzz_target!(|data: &[u8]| {
    let Some(text) = observer_fuzz::text(data) else {
        return;
    };
    let path = RustPath::parse(text);
    let _ = (
        path.without_generics(),
        path.last_ident(),
        path.is_generic(),
        path.wildcarded(),
        path.enclosing_function(),
    );
    if path.last_ident().is_some() {
        assert!(path.matches(&path), "{text:?} does not match itself");
        assert!(path.matches_ignoring_generics(&path));
    }
    let symbol = RustPath::parse(&demangle(text));
    let _ = (path.matches(&symbol), symbol.to_string());
});
