//! Can a panic unwind through a function? Proven from the program, where
//! possible, so plain uretprobes can be used without risk.
//!
//! A uretprobe replaces the return address of the call in flight with the
//! kernel's trampoline, for which the unwinder has no unwind information:
//! a panic unwinding through that frame aborts the process. It cannot,
//! when either the program cannot start an unwind at all (built with
//! `panic = "abort"`: nothing in it refers to `_Unwind_RaiseException`),
//! or nothing the function calls, transitively, can panic or throw. The
//! second is decided on the machine code: direct calls are followed,
//! calls through the GOT are named by their relocations, and any other
//! indirect call (a trait object, a function pointer) counts as "may
//! panic".

use std::collections::{BTreeMap, VecDeque};

use object::{Object as _, ObjectSymbol as _};

use crate::arch::decode::{Flow, Instruction};
use crate::resolve::elf::{ElfInfo, FunctionSymbol, GotSlot};
use crate::resolve::pattern::RustPath;

/// Functions decoded at most while looking for a way to unwind: beyond
/// it, the answer is "may unwind".
const FUNCTION_BUDGET: usize = 4096;

/// Imports that start or continue an unwind.
const UNWINDING_IMPORTS: [&str; 7] = [
    "_Unwind_RaiseException",
    "_Unwind_Resume",
    "_Unwind_ForcedUnwind",
    "_Unwind_Resume_or_Rethrow",
    "__cxa_throw",
    "__cxa_rethrow",
    "pthread_exit",
];

/// Where Rust's panics start, by demangled path prefix: reaching one is
/// reaching a panic, said plainly.
const PANIC_ENTRIES: [&str; 8] = [
    "core::panicking::",
    "std::panicking::",
    "std::panic::resume_unwind",
    "core::option::unwrap_failed",
    "core::option::expect_failed",
    "core::result::unwrap_failed",
    "alloc::raw_vec::handle_error",
    "__rustc::__rust_start_panic",
];

/// The answer for one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unwinding {
    /// No unwind can pass through: why.
    Impossible(String),
    /// One can: how (a call path, or what could not be followed).
    Possible(String),
}

impl Unwinding {
    pub fn is_possible(&self) -> bool {
        matches!(self, Unwinding::Possible(_))
    }
}

/// Decides whether a panic can unwind through `function`.
pub fn through(elf: &ElfInfo, function: &FunctionSymbol) -> Unwinding {
    if !program_can_unwind(elf) {
        return Unwinding::Impossible(
            "the program cannot start an unwind: nothing in it refers to \
             _Unwind_RaiseException (built with panic = \"abort\")"
                .into(),
        );
    }
    let got = elf.got_slots();
    Search::new(elf, &got).run(function)
}

/// True when the program imports or defines `_Unwind_RaiseException`.
pub fn program_can_unwind(elf: &ElfInfo) -> bool {
    let Ok(file) = object::File::parse(&*elf.data) else {
        return true;
    };
    file.symbols().chain(file.dynamic_symbols()).any(|s| {
        s.name()
            .is_ok_and(|n| n.starts_with("_Unwind_RaiseException"))
    })
}

/// A breadth-first walk over the calls reachable from a function, keeping
/// for each function who first called it (for the explanation).
struct Search<'a> {
    elf: &'a ElfInfo,
    got: &'a BTreeMap<u64, GotSlot>,
    called_by: BTreeMap<u64, u64>,
    queue: VecDeque<u64>,
}

/// What one instruction of a searched function does to the search.
enum Callee {
    Function(u64),
    Found(String),
    None,
}

impl<'a> Search<'a> {
    fn new(elf: &'a ElfInfo, got: &'a BTreeMap<u64, GotSlot>) -> Self {
        Self {
            elf,
            got,
            called_by: BTreeMap::new(),
            queue: VecDeque::new(),
        }
    }

    fn run(mut self, start: &FunctionSymbol) -> Unwinding {
        self.called_by.insert(start.address, start.address);
        self.queue.push_back(start.address);
        let mut visited = 0;
        while let Some(address) = self.queue.pop_front() {
            visited += 1;
            if visited > FUNCTION_BUDGET {
                return Unwinding::Possible(format!(
                    "it reaches more than {FUNCTION_BUDGET} functions, too many to prove that none panics"
                ));
            }
            let Some(function) = self.elf.function_containing(address) else {
                return self.found(address, "calls code no symbol describes".into());
            };
            let name = display_name(function);
            if PANIC_ENTRIES.iter().any(|p| name.starts_with(p)) {
                return self.found(address, "which panics".into());
            }
            if let Some(why) = self.scan(function) {
                return why;
            }
        }
        Unwinding::Impossible(format!(
            "nothing it calls ({visited} functions, all followed) can panic or throw"
        ))
    }

    /// Queues the functions `function` calls; stops at the first call that
    /// can unwind.
    fn scan(&mut self, function: &FunctionSymbol) -> Option<Unwinding> {
        let code = self
            .elf
            .bytes_at(function.address, function.size.max(1) as usize)?;
        for instruction in crate::arch::ISA.sweep(code, function.address) {
            match self.callee(&instruction, function) {
                Callee::Function(target) => {
                    if let std::collections::btree_map::Entry::Vacant(entry) =
                        self.called_by.entry(target)
                    {
                        entry.insert(function.address);
                        self.queue.push_back(target);
                    }
                }
                Callee::Found(why) => return Some(self.found(function.address, why)),
                Callee::None => {}
            }
        }
        None
    }

    fn callee(&self, instruction: &Instruction, function: &FunctionSymbol) -> Callee {
        let inside = |target: u64| {
            target >= function.address && target < function.address + function.size.max(1)
        };
        match instruction.flow {
            Flow::Call | Flow::Branch | Flow::ConditionalBranch => match instruction.target {
                Some(target) if !inside(target) => Callee::Function(target),
                _ => Callee::None,
            },
            Flow::IndirectCall | Flow::IndirectBranch => {
                if let Some(slot) = instruction.memory {
                    return match self.got.get(&slot) {
                        Some(GotSlot::Local(target)) => Callee::Function(*target),
                        Some(GotSlot::Import(name))
                            if UNWINDING_IMPORTS.contains(&name.as_str()) =>
                        {
                            Callee::Found(format!("calls {name}"))
                        }
                        Some(GotSlot::Import(_)) => Callee::None,
                        None => Callee::Found(format!(
                            "makes an indirect call at {:#x} whose target is not known",
                            instruction.address
                        )),
                    };
                }
                if instruction.flow == Flow::IndirectBranch {
                    // A jump table inside the function.
                    return Callee::None;
                }
                Callee::Found(format!(
                    "makes an indirect call at {:#x} (a trait object or function pointer) that may panic",
                    instruction.address
                ))
            }
            _ => Callee::None,
        }
    }

    /// The answer, with the call path from the start to `address`.
    fn found(&self, address: u64, why: String) -> Unwinding {
        let mut path = Vec::new();
        let mut at = address;
        while let Some(&caller) = self.called_by.get(&at) {
            if let Some(function) = self.elf.function_containing(at) {
                path.push(display_name(function));
            }
            if caller == at || path.len() > 12 {
                break;
            }
            at = caller;
        }
        path.reverse();
        path.dedup();
        let separator = if why.starts_with("which") { ", " } else { ": " };
        Unwinding::Possible(format!("{}{separator}{why}", path.join(" → ")))
    }
}

fn display_name(function: &FunctionSymbol) -> String {
    RustPath::parse(&function.demangled).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_can_unwind_and_its_panics_are_found() {
        let exe = std::env::current_exe().unwrap();
        let elf = ElfInfo::read(&exe).unwrap();
        assert!(program_can_unwind(&elf));
        let panicking = elf
            .functions
            .iter()
            .find(|f| f.demangled.ends_with("unwinding::tests::panics_sometimes"))
            .expect("the helper below");
        let verdict = through(&elf, panicking);
        assert!(verdict.is_possible(), "{verdict:?}");
        let Unwinding::Possible(why) = verdict else {
            unreachable!()
        };
        assert!(why.contains("panics_sometimes"), "{why}");
    }

    #[test]
    fn a_function_that_calls_nothing_cannot_unwind() {
        let exe = std::env::current_exe().unwrap();
        let elf = ElfInfo::read(&exe).unwrap();
        let leaf = elf
            .functions
            .iter()
            .find(|f| f.demangled.ends_with("unwinding::tests::adds"))
            .expect("the helper below");
        assert!(matches!(through(&elf, leaf), Unwinding::Impossible(_)));
    }

    #[inline(never)]
    fn panics_sometimes(value: u64) -> u64 {
        assert!(value != 7, "seven");
        value + 1
    }

    #[inline(never)]
    fn adds(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    #[test]
    fn helpers_behave() {
        assert_eq!(panics_sometimes(std::hint::black_box(1)), 2);
        assert_eq!(adds(std::hint::black_box(1), 2), 3);
    }
}
