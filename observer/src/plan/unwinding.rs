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
//! calls through the GOT, directly or by a PLT stub, are named by their
//! relocations, and any other indirect call (a trait object, a function
//! pointer) counts as "may panic".

use std::collections::{BTreeMap, VecDeque};

use object::{Object as _, ObjectSymbol as _};

use crate::arch::decode::{Flow, Instruction, Isa};
use crate::resolve::elf::{ElfInfo, FunctionSymbol, GotSlot};
use crate::resolve::pattern::RustPath;

/// Functions decoded at most while looking for a way to unwind: beyond
/// it, the answer is "may unwind".
const FUNCTION_BUDGET: usize = 4096;

/// The longest PLT stub decoded: x86-64's are 16 bytes (`jmp *slot`
/// first; with IBT `endbr64; bnd jmp *slot`), arm64's 16 (four
/// instructions, the `br x17` last).
const PLT_STUB_BYTES: usize = 16;

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
    through_decoded_by(crate::arch::ISA, elf, function)
}

/// [`through`], reading machine code of `isa`: the observer's own
/// processor's, or, in tests, the other one's (both decoders are always
/// built).
fn through_decoded_by(isa: Isa, elf: &ElfInfo, function: &FunctionSymbol) -> Unwinding {
    if !program_can_unwind(elf) {
        return Unwinding::Impossible(
            "the program cannot start an unwind: nothing in it refers to \
             _Unwind_RaiseException (built with panic = \"abort\")"
                .into(),
        );
    }
    let got = elf.got_slots();
    Search::new(isa, elf, &got).run(function)
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
    isa: Isa,
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
    fn new(isa: Isa, elf: &'a ElfInfo, got: &'a BTreeMap<u64, GotSlot>) -> Self {
        Self {
            isa,
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
                match self.plt_stub(address) {
                    Some(Callee::Function(target)) => self.queue_call(address, target),
                    Some(Callee::Found(why)) => return self.found(address, why),
                    Some(Callee::None) => {}
                    None => return self.found(address, "calls code no symbol describes".into()),
                }
                continue;
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
        for instruction in self.isa.sweep(code, function.address) {
            match self.callee(&instruction, function) {
                Callee::Function(target) => self.queue_call(function.address, target),
                Callee::Found(why) => return Some(self.found(function.address, why)),
                Callee::None => {}
            }
        }
        None
    }

    /// Queues `target`, called from `caller`, unless already seen.
    fn queue_call(&mut self, caller: u64, target: u64) {
        if let std::collections::btree_map::Entry::Vacant(entry) = self.called_by.entry(target) {
            entry.insert(caller);
            self.queue.push_back(target);
        }
    }

    /// What a call to a PLT stub at `address` reaches: the stub's jump
    /// through its GOT slot (x86-64's `jmp *slot(%rip)`, arm64's `adrp
    /// x16; ldr x17, [x16, #off]; add; br x17`), judged as a call through
    /// that slot. Rust on arm64 calls other objects' functions this way
    /// (x86-64 Rust through the GOT directly), and C everywhere. `None`
    /// when `address` is in no PLT or its stub names no slot.
    fn plt_stub(&self, address: u64) -> Option<Callee> {
        if !self.elf.in_plt(address) {
            return None;
        }
        let code = self.elf.bytes_at(address, PLT_STUB_BYTES)?;
        let slot = self
            .isa
            .sweep(code, address)
            .take_while(|i| !matches!(i.flow, Flow::Return | Flow::Trap))
            .find(|i| i.flow == Flow::IndirectBranch)?
            .memory?;
        Some(self.through_slot(slot, address))
    }

    /// A call or jump at `at` through the GOT slot `slot`.
    fn through_slot(&self, slot: u64, at: u64) -> Callee {
        match self.got.get(&slot) {
            Some(GotSlot::Local(target)) => Callee::Function(*target),
            Some(GotSlot::Import(name)) if UNWINDING_IMPORTS.contains(&name.as_str()) => {
                Callee::Found(format!("calls {name}"))
            }
            Some(GotSlot::Import(_)) => Callee::None,
            None => Callee::Found(format!(
                "makes an indirect call at {at:#x} whose target is not known"
            )),
        }
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
                    return self.through_slot(slot, instruction.address);
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

    /// A C program calling an import that cannot unwind (`puts`) and one
    /// that starts an unwind, both through PLT stubs.
    const PLT_PROGRAM: &str = "#include <stdio.h>\n\
        extern int _Unwind_RaiseException(void *);\n\
        __attribute__((noinline)) void quiet(void) { puts(\"quiet\"); }\n\
        __attribute__((noinline)) void thrower(void) { _Unwind_RaiseException(0); }\n\
        int main(int argc, char **argv) { (void)argv; if (argc > 5) thrower(); quiet(); return 0; }\n";

    /// The verdicts for `quiet` and `thrower` of [`PLT_PROGRAM`] built by
    /// `compiler` and read as `isa`.
    fn plt_verdicts(compiler: &str, isa: Isa) -> [Unwinding; 2] {
        let flags = ["-O1", "-g", "-fno-optimize-sibling-calls", "-lgcc_s"];
        let (_dir, binary) = crate::test_c::compile(compiler, PLT_PROGRAM, "plt", &flags);
        let data = std::fs::read(&binary).unwrap();
        let elf = ElfInfo::parse_of_any_processor(&binary, data.into()).unwrap();
        ["quiet", "thrower"].map(|name| {
            let function = elf.functions.iter().find(|f| f.demangled == name).unwrap();
            through_decoded_by(isa, &elf, function)
        })
    }

    /// Calls through PLT stubs reach the import the stub's GOT slot is
    /// filled with: `puts` cannot unwind, `_Unwind_RaiseException` does
    /// (before, both were "calls code no symbol describes"). x86-64's
    /// stub (`jmp *slot(%rip)`) by this machine's compiler, arm64's
    /// (`adrp; ldr x17; add; br x17`, how Rust on arm64 calls other
    /// objects' functions) by the cross compiler.
    #[test]
    fn calls_through_plt_stubs_reach_their_import() {
        let mut builds = vec![("cc", crate::arch::ISA)];
        if crate::arch::ISA == Isa::X86_64 {
            builds.extend(
                crate::plan::unwind::judge::arm64_compiler("arm64 PLT stubs are not followed")
                    .map(|compiler| (compiler, Isa::Aarch64)),
            );
        }
        for (compiler, isa) in builds {
            let [quiet, thrower] = plt_verdicts(compiler, isa);
            assert!(
                matches!(quiet, Unwinding::Impossible(_)),
                "{isa:?}: {quiet:?}"
            );
            assert_eq!(
                thrower,
                Unwinding::Possible("thrower: calls _Unwind_RaiseException".into()),
                "{isa:?}"
            );
        }
    }

    #[test]
    fn helpers_behave() {
        assert_eq!(panics_sometimes(std::hint::black_box(1)), 2);
        assert_eq!(adds(std::hint::black_box(1), 2), 3);
    }
}
