//! Servers written on popular pool and slab crates, used as their users
//! use them, each leaking a known number of items on an error path:
//! `keys` — results that are integer keys and enums (sharded-slab,
//! slotmap); `inlined` — pools the compiler inlines into their callers,
//! guards released on Drop, and the fat-LTO gateway (object-pool, slab).

mod inlined;
mod keys;

pub use inlined::*;
pub use keys::*;

use serde_json::Value;

use crate::support::*;

/// What a server leaked, as the report must show it.
struct Planted<'a> {
    /// The function whose allocating line the leak's stack shows.
    function: &'a str,
    /// Its source file (from the repository's root) and the text on that
    /// line.
    source: &'a str,
    line_text: &'a str,
    buffers: i64,
    bytes_each: i64,
    /// Every allocation and release the round made.
    allocations: i64,
    releases: i64,
}

/// The planted leak is the top site, exactly, at the allocating line, and
/// every other call was matched: nothing unknown, nothing unread.
fn assert_planted(report: &Value, planted: &Planted) {
    let leak = site_through(report, planted.function);
    assert_eq!(leak["rank"], 1, "{report:#}");
    assert_eq!(int(&leak["buffers"]), planted.buffers, "{leak:#}");
    assert_eq!(
        int(&leak["bytes"]),
        planted.buffers * planted.bytes_each,
        "{leak:#}"
    );
    let frame = frames(leak)
        .iter()
        .find(|f| f["function"] == planted.function)
        .unwrap_or_else(|| panic!("no {} frame: {leak:#}", planted.function));
    assert!(
        frame["file"].as_str().unwrap().ends_with(planted.source),
        "{frame}"
    );
    assert_eq!(
        frame["line"],
        source_line(planted.source, planted.line_text)
    );
    let counters = &report["counters"];
    assert_eq!(
        int(&counters["allocations"]),
        planted.allocations,
        "{counters:#}"
    );
    assert_eq!(int(&counters["releases"]), planted.releases, "{counters:#}");
    for lost in [
        "unknown_releases",
        "alloc_id_read_errors",
        "release_id_read_errors",
        "entries_without_return",
        "reallocated_ids",
    ] {
        assert_eq!(int(&counters[lost]), 0, "{lost}: {counters:#}");
    }
    assert_accounting_balances(report);
}
