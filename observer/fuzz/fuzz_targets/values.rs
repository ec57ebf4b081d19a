//! The command line's value parsers (observer/src/cli/values.rs): any text
//! is a value within its documented bounds or an error line, never a panic.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use observer::cli::values;

fuzz_target!(|data: &[u8]| {
    let Some(text) = observer_fuzz::text(data) else {
        return;
    };
    durations(text);
    numbers(text);
    names(text);
});

fn durations(text: &str) {
    let year = Duration::from_secs(365 * 24 * 3600);
    for (parsed, min, max) in [
        (
            values::session_duration(text),
            Duration::from_millis(1),
            year,
        ),
        (values::age(text), Duration::from_millis(1), year),
        (
            values::interval(text),
            Duration::from_millis(100),
            Duration::from_secs(24 * 3600),
        ),
    ] {
        if let Ok(duration) = parsed {
            assert!(
                (min..=max).contains(&duration),
                "{text:?} gave {duration:?}, outside {min:?}..={max:?}"
            );
        }
    }
}

fn numbers(text: &str) {
    if let Ok(pid) = values::pid(text) {
        assert!(
            pid >= 1 && i32::try_from(pid).is_ok(),
            "{text:?}: pid {pid}"
        );
    }
    if let Ok(entries) = values::live_entries(text) {
        assert!((1..=values::MAX_LIVE_ENTRIES).contains(&u64::from(entries)));
    }
    if let Ok(sites) = values::shown_sites(text) {
        assert!((1..=1_000_000).contains(&sites));
    }
    if let Ok(frames) = values::shown_frames(text) {
        assert!((1..=10_000).contains(&frames));
    }
    if let Ok(depth) = values::group_depth(text) {
        assert!(depth <= 10_000);
    }
    if let Ok(threshold) = values::threshold(text) {
        assert!(i64::try_from(threshold).is_ok());
    }
    if let Ok(cycles) = values::cycles(text) {
        assert!((1..=1_000_000_000_000).contains(&cycles));
    }
}

fn names(text: &str) {
    if let Ok(path) = values::function_path(text) {
        assert!(!path.is_empty() && path.len() <= values::MAX_FUNCTION_PATH);
        assert!(!path.chars().any(char::is_control), "{path:?}");
    }
    if let Ok(name) = values::mark_name(text) {
        assert!(!name.is_empty() && name.chars().count() <= values::MAX_MARK_NAME);
        assert!(!name.chars().any(char::is_control), "{name:?}");
    }
}
