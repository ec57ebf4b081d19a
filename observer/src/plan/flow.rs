//! Where control enters an inlined instance.
//!
//! An inlined function's code is scattered over address ranges inside its
//! caller, and the lowest address is often not where it starts: LLVM moves
//! blocks (a loop's tail, a cold path) and rustc emits no DW_AT_entry_pc.
//! The addresses that run once per call are those control reaches from
//! outside the instance: the targets of the caller's edges into its ranges.
//! Symmetrically, control leaves an instance by the edges from its ranges
//! to the rest of the caller: where an inlined allocate's result is ready.

use std::collections::BTreeSet;
use std::ops::Range;

use crate::arch::decode::{Flow, Instruction, Isa};

/// The instructions of an inlined instance that control reaches from the
/// rest of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entries {
    /// Sorted addresses.
    pub addresses: Vec<u64>,
    /// The caller has computed jumps (jump tables), whose targets are not
    /// known here: entries through them would be missed.
    pub computed_jumps: bool,
}

/// Entries of the instance covering `ranges`, in the caller whose machine
/// code is `code`, starting at `code_address`.
pub fn entries(isa: Isa, code: &[u8], code_address: u64, ranges: &[Range<u64>]) -> Entries {
    let inside = |address: u64| ranges.iter().any(|r| r.contains(&address));
    let mut addresses = Vec::new();
    let mut computed_jumps = false;
    if inside(code_address) {
        addresses.push(code_address);
    }
    for instruction in isa.sweep(code, code_address) {
        if instruction.flow == Flow::Invalid {
            continue;
        }
        if inside(instruction.address) {
            continue;
        }
        let next = instruction.next();
        let (falls_through, target) = match instruction.flow {
            Flow::Next | Flow::Call | Flow::IndirectCall => (true, None),
            Flow::ConditionalBranch => (true, instruction.target),
            Flow::Branch => (false, instruction.target),
            Flow::IndirectBranch => {
                computed_jumps = true;
                (false, None)
            }
            // ret, ud2, int3 padding, and the rest end a path here.
            _ => (false, None),
        };
        for successor in [falls_through.then_some(next), target]
            .into_iter()
            .flatten()
        {
            if inside(successor) {
                addresses.push(successor);
            }
        }
    }
    addresses.sort_unstable();
    addresses.dedup();
    Entries {
        addresses,
        computed_jumps,
    }
}

/// Where control leaves an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exits {
    /// The caller's instructions outside the instance that an instruction
    /// inside falls or jumps to.
    pub addresses: Vec<u64>,
    /// Returns of calls that end a range of the instance (an out-of-line
    /// helper finishing the call, or a function that never returns, such
    /// as a panic: the code cannot tell which).
    pub after_calls: Vec<u64>,
    /// Each exit with the instruction inside the instance control leaves
    /// from: `(exit, from)`.
    pub edges: Vec<(u64, u64)>,
}

/// Where control leaves the instance covering `ranges`. Jumps out of the
/// caller (tail calls) are not exits: the result then is not the caller's.
pub fn exits(isa: Isa, code: &[u8], code_address: u64, ranges: &[Range<u64>]) -> Exits {
    let inside = |address: u64| ranges.iter().any(|r| r.contains(&address));
    let code_range = code_address..code_address + code.len() as u64;
    let leaves = |address: u64| !inside(address) && code_range.contains(&address);
    let mut exits = Exits::default();
    for instruction in isa.sweep(code, code_address) {
        if instruction.flow == Flow::Invalid || !inside(instruction.address) {
            continue;
        }
        let next = instruction.next();
        let (falls_through, target) = match instruction.flow {
            Flow::Next => (true, None),
            Flow::ConditionalBranch => (true, instruction.target),
            Flow::Branch => (false, instruction.target),
            Flow::Call | Flow::IndirectCall => {
                if leaves(next) {
                    exits.after_calls.push(next);
                    exits.edges.push((next, instruction.address));
                }
                (false, None)
            }
            _ => (false, None),
        };
        for successor in [falls_through.then_some(next), target]
            .into_iter()
            .flatten()
        {
            if leaves(successor) {
                exits.addresses.push(successor);
                exits.edges.push((successor, instruction.address));
            }
        }
    }
    for list in [&mut exits.addresses, &mut exits.after_calls] {
        list.sort_unstable();
        list.dedup();
    }
    let addresses = exits.addresses.clone();
    exits.after_calls.retain(|a| !addresses.contains(a));
    exits
}

/// The caller's instructions ordinary flow reaches from its first one
/// (calls taken to return): landing pads, which only the unwinder jumps
/// to when a call panics, are left out. `None` when a computed jump makes
/// that unknowable.
pub fn ordinary_flow(isa: Isa, code: &[u8], code_address: u64) -> Option<BTreeSet<u64>> {
    let end = code_address + code.len() as u64;
    let mut seen = BTreeSet::new();
    let mut pending = vec![code_address];
    while let Some(at) = pending.pop() {
        if !(code_address..end).contains(&at) || !seen.insert(at) {
            continue;
        }
        let Some(instruction) = isa.decode_at(code, code_address, at) else {
            continue;
        };
        let next = instruction.next();
        match instruction.flow {
            Flow::Next | Flow::Call | Flow::IndirectCall => pending.push(next),
            Flow::ConditionalBranch => {
                pending.push(next);
                pending.extend(instruction.target);
            }
            Flow::Branch => pending.extend(instruction.target),
            Flow::IndirectBranch => return None,
            _ => {}
        }
    }
    Some(seen)
}

/// The exits a call can return through: those left from an instruction
/// ordinary flow reaches (`reached`, from [`ordinary_flow`]; `None` keeps
/// all), and that do not trap (`ud2` after a call that never returns).
/// The others never hand a result to the caller.
pub fn ordinary_exits(
    isa: Isa,
    code: &[u8],
    code_address: u64,
    reached: Option<&BTreeSet<u64>>,
    mut exits: Exits,
) -> Exits {
    let traps = |address: u64| {
        isa.decode_at(code, code_address, address)
            .is_some_and(|i| i.flow == Flow::Trap)
    };
    let reached_from = |from: &u64| reached.is_none_or(|reached| reached.contains(from));
    exits
        .edges
        .retain(|(exit, from)| reached_from(from) && !traps(*exit));
    let kept = |address: &u64| exits.edges.iter().any(|(exit, _)| exit == address);
    let addresses: Vec<u64> = exits.addresses.iter().copied().filter(kept).collect();
    let after_calls: Vec<u64> = exits.after_calls.iter().copied().filter(kept).collect();
    exits.addresses = addresses;
    exits.after_calls = after_calls;
    exits
}

/// Longest detour followed, in instructions.
const MAX_DETOUR: usize = 8;

/// The instance's ranges with its detours added: the short runs of caller
/// code (as DWARF attributes them) that control passes through in the
/// middle of a call — straight-line instructions and jumps leading
/// straight back into the instance, no call, no branch elsewhere. LLVM
/// leaves such runs when it merges blocks (a shared `lea; jmp` tail).
/// Taken as the instance's own, they are neither a place the call ends
/// nor one it starts, so one call is one entry and one exit.
pub fn with_detours(
    isa: Isa,
    code: &[u8],
    code_address: u64,
    ranges: &[Range<u64>],
) -> Vec<Range<u64>> {
    let mut extended = ranges.to_vec();
    for (exit, _) in exits(isa, code, code_address, ranges).edges {
        if let Some(detour) = detour_from(isa, code, code_address, ranges, exit) {
            extended.extend(detour);
        }
    }
    extended
}

/// The instructions control runs through from `start` (outside the
/// instance) when they lead straight back into it.
fn detour_from(
    isa: Isa,
    code: &[u8],
    code_address: u64,
    ranges: &[Range<u64>],
    start: u64,
) -> Option<Vec<Range<u64>>> {
    let inside = |address: u64| ranges.iter().any(|r| r.contains(&address));
    let mut visited = Vec::new();
    let mut at = start;
    for _ in 0..MAX_DETOUR {
        let instruction: Instruction = isa.decode_at(code, code_address, at)?;
        visited.push(at..instruction.next());
        at = match instruction.flow {
            Flow::Next => instruction.next(),
            Flow::Branch => instruction.target?,
            _ => return None,
        };
        if inside(at) {
            return Some(visited);
        }
    }
    None
}

/// `address`, or the first instruction after the padding (`nop`s) that
/// starts there: alignment padding before a loop head is often where
/// control first falls into an instance, and the kernel refuses to probe
/// its long forms (segment prefixes).
pub fn past_padding(isa: Isa, code: &[u8], code_address: u64, address: u64) -> u64 {
    let Some(start) = address.checked_sub(code_address) else {
        return address;
    };
    let Some(rest) = code.get(start as usize..) else {
        return address;
    };
    for instruction in isa.sweep(rest, address) {
        if !instruction.padding {
            return instruction.address;
        }
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: Isa = Isa::X86_64;

    /// A loop whose body jumps over an inlined block placed at the lowest
    /// address, then jumps back into its middle:
    ///
    /// ```text
    /// 0x00 jmp 0x04        (over the block)
    /// 0x02 nop             block, never fallen into
    /// 0x03 nop             block
    /// 0x04 jne 0x03        caller: into the block's middle
    /// 0x06 ret
    /// ```
    #[test]
    fn entries_are_branch_targets_not_the_lowest_address() {
        let code = [0xeb, 0x02, 0x90, 0x90, 0x75, 0xfd, 0xc3];
        let found = entries(X86, &code, 0x1000, std::slice::from_ref(&(0x1002..0x1004)));
        assert_eq!(found.addresses, vec![0x1003]);
        assert!(!found.computed_jumps);
    }

    #[test]
    fn falling_into_a_range_is_an_entry_and_computed_jumps_are_noticed() {
        // nop; nop (inlined); jmp rax
        let code = [0x90, 0x90, 0xff, 0xe0];
        let found = entries(X86, &code, 0x2000, std::slice::from_ref(&(0x2001..0x2002)));
        assert_eq!(found.addresses, vec![0x2001]);
        assert!(found.computed_jumps);
    }

    #[test]
    fn code_inside_the_instance_is_not_an_entry_to_itself() {
        // nop (outside); nop; jmp back to 0x3001 (both inside)
        let code = [0x90, 0x90, 0xeb, 0xfd];
        let found = entries(X86, &code, 0x3000, std::slice::from_ref(&(0x3001..0x3004)));
        assert_eq!(found.addresses, vec![0x3001]);
    }

    #[test]
    fn exits_are_edges_out_of_the_instance_and_returns_of_calls_that_end_it() {
        // 0x00 nop (caller); 0x01 jne 0x06 (inlined); 0x03 call 0x03+5+0
        // (inlined, ends its range: never returns); 0x08 nop; 0x06..
        // Layout: [0x90, 0x75, 0x03, 0xe8, 0, 0, 0, 0, 0x90]
        let code = [0x90, 0x75, 0x03, 0xe8, 0, 0, 0, 0, 0x90];
        // Instance: 0x4001..0x4008 (jne and call).
        let found = exits(X86, &code, 0x4000, std::slice::from_ref(&(0x4001..0x4008)));
        // jne's target 0x4006 is inside; its fall-through 0x4003 inside;
        // the call's return (0x4008) may be an exit or never happen.
        assert_eq!(found.addresses, Vec::<u64>::new());
        assert_eq!(found.after_calls, vec![0x4008]);
        // Instance: only the jne: both its successors are outside.
        let found = exits(X86, &code, 0x4000, std::slice::from_ref(&(0x4001..0x4003)));
        assert_eq!(found.addresses, vec![0x4003, 0x4006]);
    }

    /// The lifeguard relay's `Pool::new`: a check, a two-instruction run
    /// DWARF gives to the caller (`lea; jmp`), then the rest of the call.
    ///
    /// ```text
    /// 0x00 cmp rax, rbx   instance
    /// 0x03 jne 0x0b       instance: out, a real exit
    /// 0x05 lea r14,[rax]  caller (the detour)
    /// 0x08 jmp 0x0c       caller (the detour), back in
    /// 0x0a nop            caller
    /// 0x0b ret            caller
    /// 0x0c nop            instance
    /// 0x0d nop            caller: the call's end
    /// ```
    #[test]
    fn a_detour_through_caller_code_is_neither_an_exit_nor_an_entry() {
        let code = [
            0x48, 0x39, 0xd8, 0x75, 0x06, 0x4c, 0x8d, 0x30, 0xeb, 0x02, 0x90, 0xc3, 0x90, 0x90,
        ];
        let ranges = [0x6000..0x6005, 0x600c..0x600d];
        let before = exits(X86, &code, 0x6000, &ranges);
        assert_eq!(before.addresses, vec![0x6005, 0x600b, 0x600d]);
        let ranges = with_detours(X86, &code, 0x6000, &ranges);
        assert_eq!(
            exits(X86, &code, 0x6000, &ranges).addresses,
            vec![0x600b, 0x600d]
        );
        assert_eq!(entries(X86, &code, 0x6000, &ranges).addresses, vec![0x6000]);
    }

    /// ```text
    /// 0x00 call 0x05      instance (may panic: its landing pad is 0x07)
    /// 0x05 jmp 0x0b       instance: out, the call's end
    /// 0x07 jmp 0x0c       instance, landing pad: out, only when unwinding
    /// 0x09 jmp 0x0d       instance: out, to a trap
    /// 0x0b ret            caller
    /// 0x0c ret            caller
    /// 0x0d ud2            caller
    /// ```
    #[test]
    fn exits_only_unwinding_or_trapping_reaches_are_not_returns() {
        let code = [
            0xe8, 0x00, 0x00, 0x00, 0x00, 0xeb, 0x04, 0xeb, 0x03, 0xeb, 0x02, 0xc3, 0xc3, 0x0f,
            0x0b,
        ];
        let ranges = std::slice::from_ref(&(0x7000..0x700b));
        let all = exits(X86, &code, 0x7000, ranges);
        assert_eq!(all.addresses, vec![0x700b, 0x700c, 0x700d]);
        let reached = ordinary_flow(X86, &code, 0x7000).expect("no computed jump");
        assert!(!reached.contains(&0x7007), "the landing pad");
        let returns = ordinary_exits(X86, &code, 0x7000, Some(&reached), all);
        assert_eq!(returns.addresses, vec![0x700b]);
        assert_eq!(returns.edges, vec![(0x700b, 0x7005)]);
    }

    #[test]
    fn padding_is_skipped() {
        // nop; xchg ax,ax (66 90); xor eax,eax
        let code = [0x90, 0x66, 0x90, 0x31, 0xc0];
        assert_eq!(past_padding(X86, &code, 0x5000, 0x5000), 0x5003);
        assert_eq!(past_padding(X86, &code, 0x5000, 0x5003), 0x5003);
    }
}
