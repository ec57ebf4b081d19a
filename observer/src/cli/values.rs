//! Value parsers for the command line: every value is checked here, before
//! anything is read or attached, and a bad one is refused with a line that
//! says what was wrong and what to write instead.

use std::time::Duration;

use crate::error::UserError;
use crate::plan::{LocSpec, Location};

/// Longest `--alloc` / `--release` path accepted. Real demangled paths with
/// spelled-out generics stay far below; the limit keeps matching and "did
/// you mean" cheap whatever is pasted.
pub const MAX_FUNCTION_PATH: usize = 4096;

/// Longest mark name: it is shown in every diff header.
pub const MAX_MARK_NAME: usize = 64;

/// Largest kernel live-buffer table: the kernel preallocates about 100
/// bytes per entry, so this is already over a gigabyte of kernel memory.
pub const MAX_LIVE_ENTRIES: u64 = 1 << 24;

/// Largest PID the kernel can hand out is below 2^22; anything that does not
/// fit a `pid_t` is certainly no PID (and must never reach `kill(2)` as a
/// negative number).
const MAX_PID: u64 = i32::MAX as u64;

/// Longest `--duration` / `--older-than`: a year. Far beyond any session,
/// and well inside what the clocks can add without overflowing.
const MAX_SPAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// `--interval` bounds: every tick reads the kernel's tables and prints a
/// status line, so not more often than ten times a second.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// One location per function: `given` holds one for all `functions`, or
/// one for each, in their order.
pub fn per_function(
    flag: &str,
    given: &[LocSpec],
    functions: usize,
    function_flag: &str,
) -> anyhow::Result<Vec<LocSpec>> {
    match given.len() {
        1 => Ok(vec![given[0]; functions]),
        n if n == functions => Ok(given.to_vec()),
        n => Err(UserError::new(format!(
            "{n} {flag} for {functions} {function_flag}: give one {flag} for all of them, or \
             one per {function_flag} in the same order"
        ))
        .into()),
    }
}

/// A location of a function after the first, which must be written out:
/// `auto` reads DWARF off the first function only.
pub fn explicit(flag: &str, function: &str, spec: LocSpec) -> anyhow::Result<Location> {
    match spec {
        LocSpec::Given(location) => Ok(location),
        LocSpec::Auto => Err(UserError::new(format!(
            "{flag} auto for {function}: `auto` applies to the first function only; write its \
             location out (argN, ret, *X…)"
        ))
        .into()),
    }
}

/// `--duration`: how long to stay attached.
pub fn session_duration(text: &str) -> Result<Duration, String> {
    duration_within(text, Duration::from_millis(1), MAX_SPAN)
}

/// `--older-than`: the age from which an outstanding buffer counts.
pub fn age(text: &str) -> Result<Duration, String> {
    duration_within(text, Duration::from_millis(1), MAX_SPAN)
}

/// `--interval`: the sampling and status-line period.
pub fn interval(text: &str) -> Result<Duration, String> {
    duration_within(text, MIN_INTERVAL, MAX_INTERVAL)
}

/// `500ms`, `30s`, `5m`, `2h`, or a bare number of seconds, within
/// `min..=max`.
pub fn duration_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let text = text.trim();
    let must_be_positive = || format!("'{text}' must be positive: write e.g. 30s, 5m, 500ms");
    let seconds = match text.strip_prefix('-') {
        Some(magnitude) => {
            return Err(match unsigned_seconds(magnitude) {
                Ok(_) => must_be_positive(),
                Err(_) => not_a_duration(text),
            })
        }
        None => unsigned_seconds(text)?,
    };
    if seconds == 0.0 {
        return Err(must_be_positive());
    }
    // Anything that does not fit a `Duration` (overflow, infinity) is
    // refused, never rounded or panicked on.
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("'{text}' is too long: at most {}", human(max)))?;
    if duration < min {
        return Err(format!("'{text}' is too short: at least {}", human(min)));
    }
    if duration > max {
        return Err(format!("'{text}' is too long: at most {}", human(max)));
    }
    Ok(duration)
}

/// The seconds a duration without sign stands for.
fn unsigned_seconds(text: &str) -> Result<f64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| not_a_duration(text))?;
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}': use ms, s, m or h"
            ))
        }
    };
    Ok(value * seconds_per_unit)
}

fn not_a_duration(text: &str) -> String {
    format!("'{text}' is not a duration: write e.g. 30s, 5m, 500ms")
}

/// The shortest unit that states `duration` exactly (bounds are round).
fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// `--pid`: a process ID.
pub fn pid(text: &str) -> Result<u32, String> {
    let pid = whole_number(text, 1, MAX_PID).map_err(|_| {
        format!("'{text}' is not a PID: give the number of a running process (e.g. from `pgrep -f NAME`)")
    })?;
    Ok(pid as u32)
}

/// `--max-live`: entries of the kernel's live-buffer table.
pub fn live_entries(text: &str) -> Result<u32, String> {
    Ok(whole_number(text, 1, MAX_LIVE_ENTRIES)? as u32)
}

/// `--top`: sites shown.
pub fn shown_sites(text: &str) -> Result<usize, String> {
    Ok(whole_number(text, 1, 1_000_000)? as usize)
}

/// `--frames`: frames shown per site.
pub fn shown_frames(text: &str) -> Result<usize, String> {
    Ok(whole_number(text, 1, 10_000)? as usize)
}

/// `--group-depth`: 0 means the whole stack.
pub fn group_depth(text: &str) -> Result<usize, String> {
    Ok(whole_number(text, 0, 10_000)? as usize)
}

/// `--max-bytes`, `--max-buffers`: compared with signed totals, so at most
/// `i64::MAX`.
pub fn threshold(text: &str) -> Result<u64, String> {
    whole_number(text, 0, i64::MAX as u64)
}

/// `diff --per`: the number of cycles run between two marks.
pub fn cycles(text: &str) -> Result<u64, String> {
    whole_number(text, 1, 1_000_000_000_000)
}

/// A whole number within `min..=max`; anything else (a sign, a fraction,
/// too many digits) gets the same line naming the range.
pub fn whole_number(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let trimmed = text.trim();
    trimmed
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("'{text}' is not a whole number from {min} to {max}"))
}

/// `--alloc`, `--release`, `inspect FUNCTION`: a Rust path such as
/// `crate::Type::method` or `Pool<*>::get`.
pub fn function_path(text: &str) -> Result<String, String> {
    let hint = "give a path such as crate::Type::method, or Pool<*>::get for a generic";
    if text.trim().is_empty() {
        return Err(format!("the function path is empty: {hint}"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "the function path {text:?} contains control characters: {hint}"
        ));
    }
    if text.len() > MAX_FUNCTION_PATH {
        return Err(format!(
            "the function path is {} bytes long, at most {MAX_FUNCTION_PATH} are accepted: {hint}",
            text.len()
        ));
    }
    Ok(text.trim().to_string())
}

/// `--metrics`: where to serve /metrics. A bare port means loopback, so
/// that the endpoint is not exposed to the network unless asked for.
pub fn metrics_address(text: &str) -> Result<std::net::SocketAddr, String> {
    let text = text.trim();
    let hint = "give a port (e.g. 9464, served on 127.0.0.1), HOST:PORT or [IPV6]:PORT";
    if let Ok(port) = text.parse::<u16>() {
        if port == 0 {
            return Err(format!("'{text}' is not a port to serve on: {hint}"));
        }
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let address: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("'{text}' is not an address to serve metrics on: {hint}"))?;
    if address.port() == 0 {
        return Err(format!("'{text}' has no port to serve on: {hint}"));
    }
    Ok(address)
}

/// `--max-overhead`: percent of one CPU, above 0 and at most 10000 (the
/// probes run on every CPU the target's threads run on).
pub fn overhead_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{text}' is not a percentage: write e.g. 1 or 0.5"))?;
    if !(value > 0.0 && value <= 10_000.0) {
        return Err(format!(
            "'{text}' is out of range: a percentage of one CPU above 0 and at most 10000"
        ));
    }
    Ok(value)
}

/// A mark's name (`observer mark NAME`, `observer diff FROM TO`).
pub fn mark_name(text: &str) -> Result<String, String> {
    let hint = format!("use 1 to {MAX_MARK_NAME} printable characters, e.g. before or after-100");
    if text.trim().is_empty() {
        return Err(format!("the mark name is empty: {hint}"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "the mark name {text:?} contains control characters: {hint}"
        ));
    }
    if text.chars().count() > MAX_MARK_NAME {
        return Err(format!("the mark name is too long: {hint}"));
    }
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(session_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(session_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            session_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(session_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(session_duration("1.5h").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn malformed_durations_say_how_to_write_one() {
        assert!(session_duration("5x").unwrap_err().contains("unknown unit"));
        for text in ["s", ".", "1.2.3s", "nan", "inf", "NaN s", "", "1e400"] {
            let err = session_duration(text).unwrap_err();
            assert!(
                err.contains("not a duration") || err.contains("unknown unit"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn zero_and_negative_durations_must_be_positive() {
        for text in ["0", "0s", "-1s", "-0", "-5m", "-0.5"] {
            assert!(
                age(text).unwrap_err().contains("must be positive"),
                "{text}"
            );
        }
        assert!(age("-x").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn durations_out_of_bounds_name_the_bound() {
        let err = session_duration("99999999999999999999999").unwrap_err();
        assert!(err.contains("too long: at most 8760h"), "{err}");
        let err = session_duration("1".repeat(400).as_str()).unwrap_err();
        assert!(err.contains("too long"), "{err}");
        let err = interval("0.0000000001").unwrap_err();
        assert!(err.contains("too short: at least 100ms"), "{err}");
        let err = interval("50ms").unwrap_err();
        assert!(err.contains("at least 100ms"), "{err}");
        let err = interval("25h").unwrap_err();
        assert!(err.contains("at most 24h"), "{err}");
        let err = session_duration("0.0001ms").unwrap_err();
        assert!(err.contains("at least 1ms"), "{err}");
        assert_eq!(interval("100ms").unwrap(), MIN_INTERVAL);
        assert_eq!(session_duration("8760h").unwrap(), MAX_SPAN);
    }

    #[test]
    fn pids_are_positive_and_fit_a_pid_t() {
        assert_eq!(pid("1").unwrap(), 1);
        assert_eq!(pid("4194304").unwrap(), 4194304);
        for text in ["0", "-1", "4294967295", "2147483648", "12abc", "", "1.0"] {
            assert!(pid(text).unwrap_err().contains("is not a PID"), "{text}");
        }
    }

    #[test]
    fn numbers_name_their_range() {
        assert_eq!(live_entries("1").unwrap(), 1);
        assert_eq!(live_entries("16777216").unwrap(), 1 << 24);
        assert_eq!(
            live_entries("0").unwrap_err(),
            "'0' is not a whole number from 1 to 16777216"
        );
        assert!(live_entries("4294967295").is_err());
        assert!(cycles("0").unwrap_err().contains("from 1 to"));
        assert!(shown_sites("0").is_err());
        assert!(shown_frames("99999999999999999999999").is_err());
        assert_eq!(group_depth("0").unwrap(), 0);
        assert_eq!(threshold("9223372036854775807").unwrap(), i64::MAX as u64);
        assert!(threshold("9223372036854775808").is_err());
        assert!(threshold("-1").is_err());
    }

    #[test]
    fn function_paths_are_checked_before_matching() {
        assert_eq!(
            function_path(" bufpool::BufPool::allocate ").unwrap(),
            "bufpool::BufPool::allocate"
        );
        assert!(function_path("").unwrap_err().contains("empty"));
        assert!(function_path("  ").unwrap_err().contains("empty"));
        assert!(function_path("a\nb").unwrap_err().contains("control"));
        let long = "<".repeat(MAX_FUNCTION_PATH + 1);
        assert!(function_path(&long).unwrap_err().contains("at most 4096"));
    }

    #[test]
    fn metrics_addresses_default_to_loopback() {
        assert_eq!(
            metrics_address("9464").unwrap().to_string(),
            "127.0.0.1:9464"
        );
        assert_eq!(
            metrics_address("0.0.0.0:9000").unwrap().to_string(),
            "0.0.0.0:9000"
        );
        assert_eq!(metrics_address("[::1]:80").unwrap().to_string(), "[::1]:80");
        for bad in ["0", "70000", "localhost:9464", "1.2.3.4", "1.2.3.4:0", ""] {
            assert!(metrics_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overhead_is_a_positive_percentage() {
        assert_eq!(overhead_percent("1").unwrap(), 1.0);
        assert_eq!(overhead_percent("0.5%").unwrap(), 0.5);
        for bad in ["0", "-1", "nan", "inf", "x", "10001"] {
            assert!(overhead_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mark_names_are_short_and_printable() {
        assert_eq!(mark_name("before").unwrap(), "before");
        assert_eq!(mark_name("after 100 cycles").unwrap(), "after 100 cycles");
        assert!(mark_name("").unwrap_err().contains("empty"));
        assert!(mark_name("a\u{1b}[31mred").unwrap_err().contains("control"));
        assert!(mark_name(&"x".repeat(65)).unwrap_err().contains("too long"));
    }
}
