//! Where control enters an inlined instance.
//!
//! An inlined function's code is scattered over address ranges inside its
//! caller, and the lowest address is often not where it starts: LLVM moves
//! blocks (a loop's tail, a cold path) and rustc emits no DW_AT_entry_pc.
//! The addresses that run once per call are those control reaches from
//! outside the instance: the targets of the caller's edges into its ranges.
//! Symmetrically, control leaves an instance by the edges from its ranges
//! to the rest of the caller: where an inlined allocate's result is ready.

use std::ops::Range;

use iced_x86::{Decoder, DecoderOptions, FlowControl};

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
pub fn entries(code: &[u8], code_address: u64, ranges: &[Range<u64>]) -> Entries {
    let inside = |address: u64| ranges.iter().any(|r| r.contains(&address));
    let mut addresses = Vec::new();
    let mut computed_jumps = false;
    if inside(code_address) {
        addresses.push(code_address);
    }
    let mut decoder = Decoder::with_ip(64, code, code_address, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            continue;
        }
        if inside(instruction.ip()) {
            continue;
        }
        let next = instruction.next_ip();
        let (falls_through, target) = match instruction.flow_control() {
            FlowControl::Next | FlowControl::Call | FlowControl::IndirectCall => (true, None),
            FlowControl::ConditionalBranch => (true, Some(instruction.near_branch_target())),
            FlowControl::UnconditionalBranch => (false, Some(instruction.near_branch_target())),
            FlowControl::IndirectBranch => {
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
pub fn exits(code: &[u8], code_address: u64, ranges: &[Range<u64>]) -> Exits {
    let inside = |address: u64| ranges.iter().any(|r| r.contains(&address));
    let code_range = code_address..code_address + code.len() as u64;
    let leaves = |address: u64| !inside(address) && code_range.contains(&address);
    let mut exits = Exits::default();
    let mut decoder = Decoder::with_ip(64, code, code_address, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() || !inside(instruction.ip()) {
            continue;
        }
        let next = instruction.next_ip();
        let (falls_through, target) = match instruction.flow_control() {
            FlowControl::Next => (true, None),
            FlowControl::ConditionalBranch => (true, Some(instruction.near_branch_target())),
            FlowControl::UnconditionalBranch => (false, Some(instruction.near_branch_target())),
            FlowControl::Call | FlowControl::IndirectCall => {
                if leaves(next) {
                    exits.after_calls.push(next);
                    exits.edges.push((next, instruction.ip()));
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
                exits.edges.push((successor, instruction.ip()));
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

/// `address`, or the first instruction after the padding (`nop`s) that
/// starts there: alignment padding before a loop head is often where
/// control first falls into an instance, and the kernel refuses to probe
/// its long forms (segment prefixes).
pub fn past_padding(code: &[u8], code_address: u64, address: u64) -> u64 {
    let Some(start) = address.checked_sub(code_address) else {
        return address;
    };
    let Some(rest) = code.get(start as usize..) else {
        return address;
    };
    let mut decoder = Decoder::with_ip(64, rest, address, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.mnemonic() != iced_x86::Mnemonic::Nop {
            return instruction.ip();
        }
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let found = entries(&code, 0x1000, std::slice::from_ref(&(0x1002..0x1004)));
        assert_eq!(found.addresses, vec![0x1003]);
        assert!(!found.computed_jumps);
    }

    #[test]
    fn falling_into_a_range_is_an_entry_and_computed_jumps_are_noticed() {
        // nop; nop (inlined); jmp rax
        let code = [0x90, 0x90, 0xff, 0xe0];
        let found = entries(&code, 0x2000, std::slice::from_ref(&(0x2001..0x2002)));
        assert_eq!(found.addresses, vec![0x2001]);
        assert!(found.computed_jumps);
    }

    #[test]
    fn code_inside_the_instance_is_not_an_entry_to_itself() {
        // nop (outside); nop; jmp back to 0x3001 (both inside)
        let code = [0x90, 0x90, 0xeb, 0xfd];
        let found = entries(&code, 0x3000, std::slice::from_ref(&(0x3001..0x3004)));
        assert_eq!(found.addresses, vec![0x3001]);
    }

    #[test]
    fn exits_are_edges_out_of_the_instance_and_returns_of_calls_that_end_it() {
        // 0x00 nop (caller); 0x01 jne 0x06 (inlined); 0x03 call 0x03+5+0
        // (inlined, ends its range: never returns); 0x08 nop; 0x06..
        // Layout: [0x90, 0x75, 0x03, 0xe8, 0, 0, 0, 0, 0x90]
        let code = [0x90, 0x75, 0x03, 0xe8, 0, 0, 0, 0, 0x90];
        // Instance: 0x4001..0x4008 (jne and call).
        let found = exits(&code, 0x4000, std::slice::from_ref(&(0x4001..0x4008)));
        // jne's target 0x4006 is inside; its fall-through 0x4003 inside;
        // the call's return (0x4008) may be an exit or never happen.
        assert_eq!(found.addresses, Vec::<u64>::new());
        assert_eq!(found.after_calls, vec![0x4008]);
        // Instance: only the jne: both its successors are outside.
        let found = exits(&code, 0x4000, std::slice::from_ref(&(0x4001..0x4003)));
        assert_eq!(found.addresses, vec![0x4003, 0x4006]);
    }

    #[test]
    fn padding_is_skipped() {
        // nop; xchg ax,ax (66 90); xor eax,eax
        let code = [0x90, 0x66, 0x90, 0x31, 0xc0];
        assert_eq!(past_padding(&code, 0x5000, 0x5000), 0x5003);
        assert_eq!(past_padding(&code, 0x5000, 0x5003), 0x5003);
    }
}
