//! Decoding a target's machine code: the callers of a function
//! (`plan::callers::find`: calls, tail calls, GOT slots, addresses taken)
//! and whether a panic can unwind through it (`plan::unwinding::through`).
//! Any bytes give an answer, never a panic or a hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::plan::{callers, unwinding};

/// Functions of an input looked at, at most.
const FUNCTIONS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some(elf) = observer_fuzz::elf_info(data) else {
        return;
    };
    let functions = &elf.functions[..elf.functions.len().min(FUNCTIONS)];
    let targets: Vec<u64> = functions.iter().map(|f| f.address).collect();
    let found = callers::find(&elf, &targets);
    for call in found.calls.iter().chain(&found.tail_calls) {
        assert!(targets.contains(&call.callee), "{call:?} calls no target");
        let _ = call.return_address();
    }
    for function in functions {
        let _ = unwinding::through(&elf, function);
    }
});
