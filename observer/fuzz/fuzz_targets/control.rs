//! A line on the control socket, read by both ends: the session parses
//! it as a client's request (any local user of the observer's uid may
//! send one), a client as the session's answer. Either is an error or a
//! value, never a panic; an accepted request is one the command line could
//! have sent (its names and numbers within the same bounds), and it
//! survives being sent again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::cli::values;
use observer::session::control::{self, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = control::parse_request(data) {
        within_command_line_bounds(&request);
        let line = serde_json::to_vec(&request).expect("a request serializes");
        let again = control::parse_request(&line).expect("a serialized request parses");
        assert_eq!(again, request);
    }
    if let Some(text) = observer_fuzz::text(data) {
        let _ = control::parse_response(text).map_err(|err| err.to_string());
    }
});

/// What `observer mark`, `report --mark` and `diff` check before sending.
fn within_command_line_bounds(request: &Request) {
    let name = |name: &str| {
        assert_eq!(
            values::mark_name(name).as_deref(),
            Ok(name),
            "accepted mark name {name:?}"
        );
    };
    match request {
        Request::Mark { name: mark } => name(mark),
        Request::Report { mark, .. } => {
            if let Some(mark) = mark {
                name(mark);
            }
        }
        Request::Diff { from, to, per, .. } => {
            name(from);
            if let Some(to) = to {
                name(to);
            }
            if let Some(per) = per {
                assert!(
                    values::cycles(&per.to_string()).is_ok(),
                    "accepted --per {per}"
                );
            }
        }
    }
}
