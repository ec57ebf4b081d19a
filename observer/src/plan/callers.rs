//! Who calls a function, found by decoding the program: every direct
//! `call` and tail `jmp` to it (also through the GOT, which is how Rust
//! calls a function of another crate in a PIE), and whether its address
//! is taken (then it may also be called through a pointer, which no
//! decoding can follow).
//!
//! Used where a function's own entry cannot carry a probe (the kernel
//! refuses its first instruction) or its return must not be hijacked: the
//! `call` instructions (which the kernel emulates) and the instructions
//! after them stand in for the function's entry and return.

use std::collections::{BTreeMap, BTreeSet};

use object::{Object as _, ObjectSection as _, RelocationTarget};

use crate::arch::decode::{Flow, Isa, Reg};
use crate::resolve::elf::{ElfInfo, FunctionSymbol, GotSlot};
use crate::resolve::pattern::RustPath;

/// One direct transfer of control to a target function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    /// Address of the `call` (or `jmp`) instruction.
    pub address: u64,
    /// Its length: the return address of a call is `address + length`.
    pub length: u8,
    /// The function called.
    pub callee: u64,
    /// The function the instruction is in, for people.
    pub caller: String,
}

impl CallSite {
    /// Where a call returns to.
    pub fn return_address(&self) -> u64 {
        self.address + u64::from(self.length)
    }
}

/// Every way the program reaches a set of functions that decoding can see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callers {
    /// `call` instructions, by address.
    pub calls: Vec<CallSite>,
    /// Tail calls (`jmp` to the function from another one): it returns to
    /// its caller's caller, which is not known here.
    pub tail_calls: Vec<CallSite>,
    /// Where the address is taken (code or data), so calls through
    /// pointers may exist, for people.
    pub address_taken: Vec<String>,
}

/// Finds the direct callers of the functions starting at `targets`.
pub fn find(elf: &ElfInfo, targets: &[u64]) -> Callers {
    let targets: BTreeSet<u64> = targets.iter().copied().collect();
    let got: BTreeMap<u64, u64> = elf
        .got_slots()
        .into_iter()
        .filter_map(|(slot, held)| match held {
            GotSlot::Local(address) if targets.contains(&address) => Some((slot, address)),
            _ => None,
        })
        .collect();
    let scan = Scan {
        isa: crate::arch::ISA,
        targets: &targets,
        got: &got,
    };
    let mut callers = Callers::default();
    let mut seen = BTreeSet::new();
    for function in &elf.functions {
        if function.size == 0 || !seen.insert(function.address) {
            continue;
        }
        let Some(code) = elf.bytes_at(function.address, function.size as usize) else {
            continue;
        };
        scan.function(function, code, &mut callers);
    }
    callers.address_taken.extend(data_references(elf, &targets));
    callers.calls.sort_by_key(|c| c.address);
    callers.tail_calls.sort_by_key(|c| c.address);
    callers
}

/// What a scan looks for: the target functions, and the GOT slots that
/// hold their addresses.
struct Scan<'a> {
    isa: Isa,
    targets: &'a BTreeSet<u64>,
    got: &'a BTreeMap<u64, u64>,
}

/// A target's address held in a register, from where it was loaded.
#[derive(Clone, Copy)]
struct Held {
    target: u64,
    loaded_at: u64,
    /// A call went through it.
    called: bool,
}

impl Scan<'_> {
    fn function(&self, function: &FunctionSymbol, code: &[u8], callers: &mut Callers) {
        let name = || RustPath::parse(&function.demangled).to_string();
        // Registers holding a target's address: compilers load a function
        // of another crate from the GOT once and call it through a register
        // in a loop. Followed in address order, which is how such loads and
        // calls are laid out; a wrong guess only costs a probe that never
        // matches a call.
        let mut held: BTreeMap<Reg, Held> = BTreeMap::new();
        let mut unused_loads = Vec::new();
        let is_target = |target: Option<u64>| target.filter(|t| self.targets.contains(t));
        for instruction in self.isa.sweep(code, function.address) {
            if instruction.flow == Flow::Invalid {
                continue;
            }
            let site = |callee| CallSite {
                address: instruction.address,
                length: instruction.length,
                callee,
                caller: name(),
            };
            let through_got = instruction
                .memory
                .and_then(|slot| self.got.get(&slot).copied());
            let through_register = instruction
                .register
                .and_then(|register| held.get_mut(&register));
            match instruction.flow {
                Flow::Call if is_target(instruction.target).is_some() => {
                    callers
                        .calls
                        .push(site(is_target(instruction.target).expect("checked")));
                }
                // Through a register first: arm64's `blr x16` also names
                // the slot x16 was loaded from.
                Flow::IndirectCall if through_register.is_some() => {
                    let held = through_register.expect("checked");
                    held.called = true;
                    let target = held.target;
                    callers.calls.push(site(target));
                }
                Flow::IndirectCall if through_got.is_some() => {
                    callers.calls.push(site(through_got.expect("checked")));
                }
                Flow::Branch
                    if is_target(instruction.target).is_some()
                        && !self.targets.contains(&function.address) =>
                {
                    let target = is_target(instruction.target).expect("checked");
                    callers.tail_calls.push(site(target));
                }
                Flow::IndirectBranch if through_got.is_some() => {
                    callers.tail_calls.push(site(through_got.expect("checked")));
                }
                _ => {
                    let taken = through_got.or_else(|| is_target(instruction.referenced));
                    if let Some(target) = taken {
                        match instruction.register {
                            Some(register) => {
                                retire(&mut held, register, &mut unused_loads);
                                held.insert(
                                    register,
                                    Held {
                                        target,
                                        loaded_at: instruction.address,
                                        called: false,
                                    },
                                );
                                continue;
                            }
                            None => unused_loads.push((instruction.address, target)),
                        }
                    }
                }
            }
            for register in instruction.written_registers() {
                retire(&mut held, register, &mut unused_loads);
            }
        }
        let left: Vec<Reg> = held.keys().copied().collect();
        for register in left {
            retire(&mut held, register, &mut unused_loads);
        }
        for (address, target) in unused_loads {
            callers
                .address_taken
                .push(format!("{} at {address:#x} ({target:#x})", name()));
        }
    }
}

/// Forgets what `register` held; a load no call went through is a taken
/// address (passed on as a pointer, stored, ...).
fn retire(held: &mut BTreeMap<Reg, Held>, register: Reg, unused: &mut Vec<(u64, u64)>) {
    if let Some(gone) = held.remove(&register) {
        if !gone.called {
            unused.push((gone.loaded_at, gone.target));
        }
    }
}

/// Pointers to the targets stored in data: relocations a PIE's loader
/// applies (vtables, function pointer tables), and aligned absolute words
/// in writable or read-only data of a fixed-address program.
fn data_references(elf: &ElfInfo, targets: &BTreeSet<u64>) -> Vec<String> {
    let Ok(file) = object::File::parse(&*elf.data) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(relocations) = file.dynamic_relocations() {
        for (offset, relocation) in relocations {
            // GOT slots are for calls; loads from them are found in code.
            if elf.in_got(offset) {
                continue;
            }
            let value = match relocation.target() {
                RelocationTarget::Absolute => relocation.addend() as u64,
                RelocationTarget::Symbol(index) => file
                    .symbol_by_index(index)
                    .map(|s| object::ObjectSymbol::address(&s))
                    .unwrap_or(0)
                    .wrapping_add(relocation.addend() as u64),
                _ => continue,
            };
            if targets.contains(&value) {
                found.push(format!("a pointer in data at {offset:#x}"));
            }
        }
    }
    if file.kind() == object::ObjectKind::Executable {
        for section in file.sections() {
            let name = section.name().unwrap_or("");
            if !matches!(name, ".data" | ".data.rel.ro" | ".rodata") {
                continue;
            }
            let Ok(bytes) = section.data() else { continue };
            for (index, word) in bytes.chunks_exact(8).enumerate() {
                let value = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                if targets.contains(&value) {
                    found.push(format!(
                        "a pointer in {name} at {:#x}",
                        section.address() + index as u64 * 8
                    ));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(name: &str, address: u64, size: u64) -> FunctionSymbol {
        FunctionSymbol {
            mangled: name.into(),
            demangled: name.into(),
            address,
            size,
        }
    }

    #[test]
    fn calls_tail_calls_and_taken_addresses_are_told_apart() {
        // 0x1000: call 0x2000 ; lea rax,[rip+0x2000-0x100c] ; jmp 0x2000
        let code = [
            0xe8, 0xfb, 0x0f, 0x00, 0x00, // call 0x2000
            0x48, 0x8d, 0x05, 0xf4, 0x0f, 0x00, 0x00, // lea rax, [rip+0xff4] = 0x2000
            0xe9, 0xef, 0x0f, 0x00, 0x00, // jmp 0x2000
        ];
        let mut callers = Callers::default();
        let targets = BTreeSet::from([0x2000]);
        let got = BTreeMap::new();
        let scan = Scan {
            isa: Isa::X86_64,
            targets: &targets,
            got: &got,
        };
        scan.function(&function("a::caller", 0x1000, 17), &code, &mut callers);
        assert_eq!(
            callers.calls,
            vec![CallSite {
                address: 0x1000,
                length: 5,
                callee: 0x2000,
                caller: "a::caller".into()
            }]
        );
        assert_eq!(callers.calls[0].return_address(), 0x1005);
        assert_eq!(callers.tail_calls.len(), 1);
        assert_eq!(callers.tail_calls[0].address, 0x100c);
        assert_eq!(callers.address_taken, vec!["a::caller at 0x1005 (0x2000)"]);
    }

    #[test]
    fn a_call_through_a_register_loaded_from_the_got_is_a_call() {
        // 0x1000: mov rbx,[rip+0x2000-0x1007] ; call rbx ; call rbx ; ret
        let code = [
            0x48, 0x8b, 0x1d, 0xf9, 0x0f, 0x00, 0x00, // mov rbx, [rip+0xff9] = [0x2000]
            0xff, 0xd3, // call rbx
            0xff, 0xd3, // call rbx
            0xc3,
        ];
        let mut callers = Callers::default();
        let targets = BTreeSet::from([0x5000]);
        let got = BTreeMap::from([(0x2000, 0x5000)]);
        let scan = Scan {
            isa: Isa::X86_64,
            targets: &targets,
            got: &got,
        };
        scan.function(&function("a::looping", 0x1000, 12), &code, &mut callers);
        let calls: Vec<(u64, u8)> = callers
            .calls
            .iter()
            .map(|c| (c.address, c.length))
            .collect();
        assert_eq!(calls, vec![(0x1007, 2), (0x1009, 2)]);
        assert!(callers.address_taken.is_empty(), "{callers:?}");
    }

    #[test]
    fn finds_the_callers_of_a_function_in_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let elf = ElfInfo::read(&exe).unwrap();
        let callee = elf
            .functions
            .iter()
            .find(|f| f.demangled.ends_with("plan::callers::find"))
            .expect("this module's find");
        let found = find(&elf, &[callee.address]);
        assert!(
            found
                .calls
                .iter()
                .any(|c| c.caller.contains("finds_the_callers_of_a_function")),
            "{found:?}"
        );
    }
}
