//! Stage 1 — resolve targets: the process, its executable, and every copy
//! of the functions the user named.

pub mod debuginfo;
pub mod dwarf;
pub mod elf;
pub mod inlined_result;
pub mod libraries;
pub mod loader;
pub mod object;
pub mod pattern;
pub mod pid_namespace;
pub mod places;
#[cfg(all(test, target_arch = "x86_64"))]
mod places_judge;
pub mod process;
pub mod safe_file;
pub mod signature;
pub mod unwinder;

use std::collections::BTreeMap;
use std::fmt;

use elf::{ElfInfo, FunctionSymbol};
use pattern::RustPath;

/// Every out-of-line copy of one function the user named.
#[derive(Debug, Clone)]
pub struct ResolvedFunction {
    /// What the user wrote.
    pub pattern: String,
    /// The demangled name shared by the copies (generic arguments erased
    /// when the copies differ only in them).
    pub name: String,
    pub copies: Vec<FunctionSymbol>,
}

/// Why a function pattern could not be resolved to probe-able code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{}", not_found_message(.pattern, .exe, .hints))]
    NotFound {
        pattern: String,
        exe: String,
        hints: Vec<String>,
    },
    #[error(
        "'{pattern}' is ambiguous in {exe}: it matches {}; write more of the path",
        .candidates.join(", ")
    )]
    Ambiguous {
        pattern: String,
        exe: String,
        candidates: Vec<String>,
    },
}

fn not_found_message(pattern: &str, exe: &str, hints: &[String]) -> String {
    let mut message = format!("no function '{pattern}' in {exe}");
    for hint in hints {
        message.push_str("; ");
        message.push_str(hint);
    }
    message
}

/// Finds every copy of the function `pattern` names in `elf`.
///
/// Copies are grouped by their path with generic arguments erased: one
/// group means one function (possibly several monomorphized copies), more
/// than one group is ambiguous.
pub fn resolve_function(
    elf: &ElfInfo,
    exe_display: &str,
    pattern: &str,
) -> Result<ResolvedFunction, ResolveError> {
    let wanted = RustPath::parse(pattern);
    let mut groups: BTreeMap<String, Vec<FunctionSymbol>> = BTreeMap::new();
    for function in &elf.functions {
        let path = RustPath::parse(&function.demangled);
        if wanted.matches(&path) {
            groups
                .entry(path.without_generics())
                .or_default()
                .push(function.clone());
        }
    }
    match groups.len() {
        0 => Err(ResolveError::NotFound {
            pattern: pattern.to_string(),
            exe: exe_display.to_string(),
            hints: not_found_hints(elf, &wanted),
        }),
        1 => {
            let (erased, mut copies) = groups.into_iter().next().expect("one group");
            copies.sort_by_key(|c| c.address);
            copies.dedup_by_key(|c| c.address);
            let name = if copies.len() == 1 {
                RustPath::parse(&copies[0].demangled).to_string()
            } else {
                erased
            };
            Ok(ResolvedFunction {
                pattern: pattern.to_string(),
                name,
                copies,
            })
        }
        _ => Err(ResolveError::Ambiguous {
            pattern: pattern.to_string(),
            exe: exe_display.to_string(),
            candidates: groups
                .iter()
                .map(|(name, copies)| match copies.len() {
                    1 => name.clone(),
                    n => format!("{name} ({n} copies)"),
                })
                .collect(),
        }),
    }
}

/// What to tell the user when nothing matched, most useful first.
fn not_found_hints(elf: &ElfInfo, wanted: &RustPath) -> Vec<String> {
    let paths: Vec<RustPath> = elf
        .functions
        .iter()
        .map(|f| RustPath::parse(&f.demangled))
        .collect();
    if let Some(hint) = generic_hint(&paths, wanted).or_else(|| body_hint(&paths, wanted)) {
        return vec![hint];
    }
    let mut hints = Vec::new();
    match dwarf::find_inlined(elf, wanted) {
        Ok(Some(inlined)) => hints.push(format!(
            "{inlined}, with no out-of-line copy: its inlined instances are followed (as \
             --alloc and as --release, with auto locations) only with full DWARF: build with \
             debug = 2, or give its debug file with --debug-file"
        )),
        Ok(None) => {}
        Err(err) => hints.push(format!("(could not read its DWARF: {err:#})")),
    }
    if !elf.has_symtab {
        hints.push("the binary is stripped (no .symtab): attach to an unstripped build".into());
    } else if !elf.has_debug_info && hints.is_empty() {
        hints.push(
            "if it exists in the source it was probably inlined into its callers; the binary has \
             no DWARF to confirm it, and inlined functions are followed only with full DWARF: \
             build with debug = 2, or give its debug file with --debug-file"
                .into(),
        );
    }
    let similar = similar_names(&paths, wanted);
    if !similar.is_empty() {
        hints.push(format!("did you mean {}", similar.join(", ")));
    }
    hints
}

/// The user left out `<*>` on a generic.
fn generic_hint(paths: &[RustPath], wanted: &RustPath) -> Option<String> {
    let copies: Vec<&RustPath> = paths
        .iter()
        .filter(|p| p.is_generic() && wanted.matches_ignoring_generics(p))
        .collect();
    let first = copies.first()?;
    Some(format!(
        "it is generic: write '{}' to attach to all {} copies",
        first.wildcarded(),
        copies.len()
    ))
}

/// The user named an async fn (or a fn returning a closure) whose body is a
/// separate function.
fn body_hint(paths: &[RustPath], wanted: &RustPath) -> Option<String> {
    let body = paths.iter().find(|p| {
        p.enclosing_function()
            .is_some_and(|function| wanted.matches(&function))
    })?;
    Some(format!(
        "its body is the separate function '{body}' (an async fn or closure): probe that"
    ))
}

/// Up to five distinct functions with the same or a nearly same last
/// path segment.
fn similar_names(paths: &[RustPath], wanted: &RustPath) -> Vec<String> {
    let Some(last) = wanted.last_ident() else {
        return Vec::new();
    };
    let tolerance = (last.len() / 4).clamp(1, 3);
    let mut names: Vec<(usize, String)> = paths
        .iter()
        .filter_map(|p| {
            let ident = p.last_ident()?;
            // The distance is at least the difference in characters (at
            // most 4 bytes each): skip the quadratic comparison of a long
            // pasted name when that alone is too far.
            if ident.len().abs_diff(last.len()) > tolerance * 4 {
                return None;
            }
            let distance = pattern::edit_distance(ident, last);
            (distance <= tolerance).then(|| (distance, p.to_string()))
        })
        .collect();
    names.sort();
    names.dedup_by(|a, b| a.1 == b.1);
    names.into_iter().take(5).map(|(_, name)| name).collect()
}

impl fmt::Display for ResolvedFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if self.copies.len() > 1 {
            write!(f, " ({} copies)", self.copies.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_with(names: &[&str]) -> ElfInfo {
        let mut elf = ElfInfo::read(&std::env::current_exe().unwrap()).unwrap();
        elf.functions = names
            .iter()
            .enumerate()
            .map(|(i, name)| FunctionSymbol {
                mangled: name.to_string(),
                demangled: name.to_string(),
                address: 0x1000 + i as u64 * 0x10,
                size: 0x10,
            })
            .collect();
        elf.has_debug_info = false;
        elf
    }

    #[test]
    fn one_function_one_copy() {
        let elf = elf_with(&["bufpool::BufPool::allocate", "bufpool::BufPool::release"]);
        let f = resolve_function(&elf, "exe", "BufPool::allocate").unwrap();
        assert_eq!(f.name, "bufpool::BufPool::allocate");
        assert_eq!(f.copies.len(), 1);
    }

    #[test]
    fn generic_copies_are_one_function() {
        let elf = elf_with(&["<p::Pool<u32>>::get", "<p::Pool<u64>>::get", "p::other"]);
        let f = resolve_function(&elf, "exe", "p::Pool<*>::get").unwrap();
        assert_eq!(f.name, "p::Pool::get");
        assert_eq!(f.copies.len(), 2);
        let err = resolve_function(&elf, "exe", "p::Pool::get").unwrap_err();
        assert!(err.to_string().contains("write 'p::Pool<*>::get'"), "{err}");
    }

    #[test]
    fn typos_and_async_bodies_get_hints() {
        let elf = elf_with(&["a::Pool::allocate", "a::Session::greet::{{closure}}"]);
        let err = resolve_function(&elf, "x", "a::Pool::alocate").unwrap_err();
        assert!(
            err.to_string().contains("did you mean a::Pool::allocate"),
            "{err}"
        );
        let err = resolve_function(&elf, "x", "Session::greet").unwrap_err();
        assert!(
            err.to_string()
                .contains("body is the separate function 'a::Session::greet::{{closure}}'"),
            "{err}"
        );
    }

    #[test]
    fn ambiguous_lists_candidates() {
        let elf = elf_with(&["a::Pool::allocate", "b::Arena::allocate"]);
        let err = resolve_function(&elf, "/bin/x", "allocate").unwrap_err();
        assert!(matches!(err, ResolveError::Ambiguous { .. }));
        assert_eq!(
            err.to_string(),
            "'allocate' is ambiguous in /bin/x: it matches a::Pool::allocate, \
             b::Arena::allocate; write more of the path"
        );
    }

    #[test]
    fn not_found_suggests_same_named_functions() {
        let elf = elf_with(&["a::Pool::allocate", "a::Pool::release"]);
        let err = resolve_function(&elf, "/bin/x", "b::Pool::allocate").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("no function 'b::Pool::allocate' in /bin/x"),
            "{text}"
        );
        assert!(text.contains("did you mean a::Pool::allocate"), "{text}");
        assert!(text.contains("probably inlined"), "{text}");
    }
}
