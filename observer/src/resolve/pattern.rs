//! Matching a user's function path (`bufpool::BufPool::allocate`,
//! `Pool<*>::get`) against demangled Rust symbol names.
//!
//! Both sides are split into path segments at `::` outside angle brackets.
//! A pattern matches when its segments equal the *last* segments of the
//! symbol's path, so `BufPool::allocate` matches `bufpool::BufPool::allocate`.
//! Generic arguments must be spelled or wildcarded: `Pool<*>` matches
//! `Pool<u32>` and `Pool<T>`, plain `Pool` matches only a non-generic `Pool`.

use std::fmt;

/// One segment of a Rust path: an identifier and its generic arguments
/// (without the angle brackets), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    ident: String,
    generics: Option<String>,
}

/// A parsed, comparable Rust path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustPath {
    segments: Vec<Segment>,
}

impl RustPath {
    /// Splits a demangled name (hash already removed) into segments.
    ///
    /// Inherent-impl paths as v0 demangling prints them, `<a::T>::f`, become
    /// `a::T::f`; trait impls `<a::T as b::Tr>::f` also become `a::T::f`, which
    /// is how people name a method. Turbofish `f::<u8>` becomes `f<u8>`.
    pub fn parse(name: &str) -> Self {
        let mut segments = Vec::new();
        for raw in split_top_level(name.trim()) {
            push_segment(&mut segments, raw);
        }
        Self { segments }
    }

    /// The path with every generic argument list removed: the name shared
    /// by all copies of one generic function.
    pub fn without_generics(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.ident.as_str())
            .collect::<Vec<_>>()
            .join("::")
    }

    /// The last segment's identifier (`allocate` for `a::B::allocate`).
    pub fn last_ident(&self) -> Option<&str> {
        self.segments.last().map(|s| s.ident.as_str())
    }

    /// Whether `self`, used as a pattern, names `symbol`.
    pub fn matches(&self, symbol: &RustPath) -> bool {
        self.matches_with(symbol, segment_matches)
    }

    /// Like [`matches`](Self::matches) but ignoring generic arguments on both
    /// sides; used to suggest a `<*>` the user left out.
    pub fn matches_ignoring_generics(&self, symbol: &RustPath) -> bool {
        self.matches_with(symbol, |p, s| p.ident == s.ident)
    }

    fn matches_with(&self, symbol: &RustPath, eq: impl Fn(&Segment, &Segment) -> bool) -> bool {
        if self.segments.is_empty() || self.segments.len() > symbol.segments.len() {
            return false;
        }
        let tail = &symbol.segments[symbol.segments.len() - self.segments.len()..];
        self.segments.iter().zip(tail).all(|(p, s)| eq(p, s))
    }

    /// For an async fn's or closure's body (`f::{{closure}}`,
    /// `f::{async_fn#0}`, `f::{closure#1}`): the path of the function that
    /// creates it.
    pub fn enclosing_function(&self) -> Option<RustPath> {
        let last = self.segments.last()?;
        let is_body = last.ident.starts_with('{') && last.ident.ends_with('}');
        (is_body && self.segments.len() > 1).then(|| RustPath {
            segments: self.segments[..self.segments.len() - 1].to_vec(),
        })
    }

    /// True when some segment has generic arguments.
    pub fn is_generic(&self) -> bool {
        self.segments.iter().any(|s| s.generics.is_some())
    }

    /// This path with `<*>` on every segment that has generic arguments.
    pub fn wildcarded(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s.generics {
                Some(_) => format!("{}<*>", s.ident),
                None => s.ident.clone(),
            })
            .collect::<Vec<_>>()
            .join("::")
    }
}

impl fmt::Display for RustPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("::")?;
            }
            f.write_str(&segment.ident)?;
            if let Some(generics) = &segment.generics {
                write!(f, "<{generics}>")?;
            }
        }
        Ok(())
    }
}

fn segment_matches(pattern: &Segment, symbol: &Segment) -> bool {
    if pattern.ident != symbol.ident {
        return false;
    }
    match (&pattern.generics, &symbol.generics) {
        (None, None) => true,
        (Some(p), Some(s)) => arguments_match(p, s, 0),
        _ => false,
    }
}

/// Whether the generic arguments `symbol` fit the pattern's `pattern`
/// (both without their angle brackets): `*` alone fits any list; else
/// argument by argument, each `*` fitting one type and each path fitting
/// the types it names the way function paths do (its last segments, so
/// `drop_in_place<object_pool::Reusable<*>>` selects the guard's glue and
/// not every `drop_in_place`).
fn arguments_match(pattern: &str, symbol: &str, nesting: usize) -> bool {
    if pattern.trim() == "*" {
        return true;
    }
    let patterns = split_arguments(pattern);
    let symbols = split_arguments(symbol);
    patterns.len() == symbols.len()
        && patterns
            .iter()
            .zip(&symbols)
            .all(|(p, s)| type_matches(p, s, nesting))
}

/// One generic argument against one type.
fn type_matches(pattern: &str, symbol: &str, nesting: usize) -> bool {
    let pattern = pattern.trim();
    if pattern == "*" {
        return true;
    }
    if normalize_spaces(pattern) == normalize_spaces(symbol) {
        return true;
    }
    // Only a path with generics of its own needs the recursive match; a
    // symbol's nesting is the target's choice, so its depth is bounded.
    if !pattern.contains('<') || nesting >= MAX_IMPL_NESTING {
        return false;
    }
    let (pattern, symbol) = (RustPath::parse(pattern), RustPath::parse(symbol));
    if pattern.segments.is_empty() || pattern.segments.len() > symbol.segments.len() {
        return false;
    }
    let tail = &symbol.segments[symbol.segments.len() - pattern.segments.len()..];
    pattern.segments.iter().zip(tail).all(|(p, s)| {
        p.ident == s.ident
            && match (&p.generics, &s.generics) {
                (None, None) => true,
                (Some(p), Some(s)) => arguments_match(p, s, nesting + 1),
                _ => false,
            }
    })
}

/// Splits generic arguments at the commas outside brackets.
fn split_arguments(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                pieces.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces
}

fn normalize_spaces(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Impl prefixes unwrapped one inside the other at most (`<<a::T as
/// b::Tr>::U as c::Tr>::f` takes two). Each level rescans the name, so a
/// symbol name of deeply nested brackets (a target chooses its own) would
/// cost quadratic time and deep recursion; deeper ones stay one segment.
const MAX_IMPL_NESTING: usize = 16;

/// Appends one `::`-separated piece, unwrapping `<T>` / `<T as Tr>` impl
/// prefixes and attaching turbofish arguments to the previous segment.
fn push_segment(segments: &mut Vec<Segment>, raw: &str) {
    push_nested(segments, raw, 0);
}

/// [`push_segment`] for a piece inside `nesting` impl prefixes.
fn push_nested(segments: &mut Vec<Segment>, raw: &str, nesting: usize) {
    let raw = raw.trim();
    if raw.is_empty() {
        return;
    }
    if let Some(inner) = raw.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        if segments.is_empty() && nesting < MAX_IMPL_NESTING {
            // `<a::T>` or `<a::T as b::Tr>` at the start: an impl's self type.
            let self_type = match find_top_level(inner, " as ") {
                Some(at) => &inner[..at],
                None => inner,
            };
            for piece in split_top_level(self_type) {
                push_nested(segments, piece, nesting + 1);
            }
            return;
        }
        if let Some(last) = segments.last_mut() {
            // `f::<u8>`: generic arguments of the previous segment.
            last.generics = Some(inner.to_string());
            return;
        }
    }
    let (ident, generics) = match raw.find('<') {
        Some(open) if raw.ends_with('>') => {
            (&raw[..open], Some(raw[open + 1..raw.len() - 1].to_string()))
        }
        _ => (raw, None),
    };
    segments.push(Segment {
        ident: ident.to_string(),
        generics,
    });
}

/// Splits at `::` that are not inside `<>`, `()` or `[]`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            // `->` in fn pointer types is not a closing bracket.
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' | b')' | b']' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                pieces.push(&text[start..i]);
                i += 2;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    pieces.push(&text[start..]);
    pieces
}

/// Byte index of `needle` at bracket depth 0.
fn find_top_level(text: &str, needle: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            _ if depth == 0 && text[i..].starts_with(needle) => return Some(i),
            _ => {}
        }
    }
    None
}

/// Edit distance between two identifiers, for "did you mean".
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Demangles a symbol name (legacy `_ZN…` or v0 `_R…`) without its hash and
/// crate disambiguators; non-Rust names are returned unchanged.
pub fn demangle(symbol: &str) -> String {
    match rustc_demangle::try_demangle(symbol) {
        Ok(demangled) => format!("{demangled:#}"),
        Err(_) => symbol.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> RustPath {
        RustPath::parse(text)
    }

    #[test]
    fn demangles_legacy_and_v0_without_hashes() {
        assert_eq!(
            demangle("_ZN7bufpool7BufPool8allocate17h0123456789abcdefE"),
            "bufpool::BufPool::allocate"
        );
        // v0: <bufpool[abcd]::BufPool>::allocate
        assert_eq!(
            demangle("_RNvMs_Cs4cSBRyjAxMh_7bufpoolNtB4_7BufPool8allocate"),
            "<bufpool::BufPool>::allocate"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
    }

    #[test]
    fn odd_patterns_parse_without_panicking() {
        let nested = format!("{}x{}", "<".repeat(2000), ">".repeat(2000));
        let symbol = path("a::Pool<u8>::get");
        for text in [
            "",
            "::",
            "<>",
            "<",
            ">",
            "a<",
            "a>",
            "<*>",
            "Pool<*",
            "Pool<*>>",
            "::::a",
            "a::",
            "<a as>::f",
            "<<a>>::f",
            "f::<>",
            "->",
            "a<->",
            "é::ü",
            &nested,
        ] {
            let pattern = path(text);
            let _ = pattern.matches(&symbol);
            let _ = pattern.matches_ignoring_generics(&symbol);
            let _ = (
                pattern.wildcarded(),
                pattern.to_string(),
                pattern.enclosing_function(),
            );
        }
    }

    /// Found while writing the fuzz target, confirmed by running it on such
    /// a name (the fuzzer had not grown one): 30 000 nested `<` took two
    /// minutes, each level rescanning the rest, and deeper nesting would
    /// overflow the stack.
    #[test]
    fn deeply_nested_impl_prefixes_cost_linear_time() {
        let depth = 200_000;
        let nested = format!("{}x{}::f", "<".repeat(depth), ">".repeat(depth));
        let started = std::time::Instant::now();
        let parsed = path(&nested);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(parsed.last_ident(), Some("f"));
        assert_eq!(
            path("<<a::T as b::Tr>::U as c::Tr>::f").to_string(),
            "a::T::U::f"
        );
    }

    #[test]
    fn suffix_matching_at_segment_boundaries() {
        let symbol = path("bufpool::BufPool::allocate");
        assert!(path("bufpool::BufPool::allocate").matches(&symbol));
        assert!(path("BufPool::allocate").matches(&symbol));
        assert!(path("allocate").matches(&symbol));
        assert!(!path("Pool::allocate").matches(&symbol));
        assert!(!path("ufPool::allocate").matches(&symbol));
        assert!(!path("bufpool::BufPool").matches(&symbol));
        assert!(!path("x::bufpool::BufPool::allocate").matches(&symbol));
    }

    #[test]
    fn v0_impl_paths_are_unwrapped() {
        let inherent = path("<bufpool::BufPool>::allocate");
        assert_eq!(inherent.to_string(), "bufpool::BufPool::allocate");
        assert!(path("bufpool::BufPool::allocate").matches(&inherent));
        let trait_impl = path("<bufpool::Buf as core::ops::drop::Drop>::drop");
        assert!(path("bufpool::Buf::drop").matches(&trait_impl));
    }

    #[test]
    fn generics_need_a_wildcard_or_exact_arguments() {
        let symbol = path("<bufpool::Pool<u32>>::allocate");
        assert!(!path("bufpool::Pool::allocate").matches(&symbol));
        assert!(path("bufpool::Pool::allocate").matches_ignoring_generics(&symbol));
        assert!(path("Pool<*>::allocate").matches(&symbol));
        assert!(path("Pool<u32>::allocate").matches(&symbol));
        assert!(!path("Pool<u64>::allocate").matches(&symbol));
        assert!(path("Pool<*>::allocate").matches(&path("bufpool::Pool<T>::allocate")));
        assert_eq!(symbol.wildcarded(), "bufpool::Pool<*>::allocate");
        assert_eq!(symbol.without_generics(), "bufpool::Pool::allocate");
    }

    #[test]
    fn a_type_argument_selects_only_its_copies() {
        let guard = path("core::ptr::drop_in_place<object_pool::Reusable<alloc::vec::Vec<u8>>>");
        let other = path("core::ptr::drop_in_place<alloc::vec::Vec<u8>>");
        for pattern in [
            "drop_in_place<object_pool::Reusable<*>>",
            "drop_in_place<Reusable<*>>",
            "core::ptr::drop_in_place<object_pool::Reusable<alloc::vec::Vec<u8>>>",
            "drop_in_place<*>",
        ] {
            assert!(path(pattern).matches(&guard), "{pattern}");
        }
        assert!(!path("drop_in_place<object_pool::Reusable<*>>").matches(&other));
        assert!(!path("drop_in_place<other::Reusable<*>>").matches(&guard));
        // One argument per argument.
        let map = path("a::Map<u32, a::Entry<u8>>::get");
        assert!(path("Map<*, Entry<*>>::get").matches(&map));
        assert!(!path("Map<Entry<*>>::get").matches(&map));
    }

    #[test]
    fn nested_generics_and_turbofish() {
        let symbol = path("<a::Map<alloc::vec::Vec<u8>, (u8, u16)>>::get::<u8>");
        assert_eq!(symbol.without_generics(), "a::Map::get");
        assert!(path("Map<*>::get<*>").matches(&symbol));
        assert!(path("a::Map<Vec<u8>,(u8,u16)>::get<u8>")
            .matches(&path("a::Map<Vec<u8>, (u8, u16)>::get<u8>")));
        let closure = path("leaky_gateway::session::Session::run::{closure#0}");
        assert_eq!(closure.last_ident(), Some("{closure#0}"));
    }

    #[test]
    fn closure_bodies_know_their_function() {
        let body = path("leaky_gateway::session::Session::say_goodbye::{{closure}}");
        let function = body.enclosing_function().unwrap();
        assert!(path("Session::say_goodbye").matches(&function));
        assert!(path("a::b").enclosing_function().is_none());
    }

    #[test]
    fn fn_pointer_arrows_do_not_close_brackets() {
        let symbol = path("<a::Cb<fn(u8) -> u8>>::call");
        assert_eq!(symbol.without_generics(), "a::Cb::call");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("allocate", "alocate"), 1);
        assert_eq!(edit_distance("release", "relaese"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn empty_pattern_matches_nothing() {
        assert!(!path("").matches(&path("a::b")));
    }
}
