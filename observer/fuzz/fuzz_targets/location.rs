//! The location language (`--size`, `--alloc-id`, `--release-id`): any
//! text is an error or a location, never a panic, and a location printed
//! back parses to the same compiled value (`Display` is what reports and
//! `inspect` show, and what people paste back).

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::plan::loc::Location;
use observer::plan::LocSpec;

fuzz_target!(|data: &[u8]| {
    let Some(text) = observer_fuzz::text(data) else {
        return;
    };
    let spec = LocSpec::parse(text);
    let parsed = Location::parse(text);
    match (&spec, &parsed) {
        (Ok(LocSpec::Auto), _) => assert_eq!(text.trim(), "auto"),
        (Ok(LocSpec::Given(given)), Ok(location)) => assert_eq!(given, location),
        (Err(spec_error), Err(error)) => assert_eq!(spec_error, error),
        _ => panic!("LocSpec and Location disagree on {text:?}: {spec:?} vs {parsed:?}"),
    }
    let Ok(location) = parsed else {
        return;
    };
    let shown = location.to_string();
    let again = Location::parse(&shown)
        .unwrap_or_else(|err| panic!("{text:?} printed as {shown:?}, which does not parse: {err}"));
    assert_eq!(
        again.compiled(),
        location.compiled(),
        "{text:?} printed as {shown:?} compiles differently"
    );
    assert_eq!(again.to_string(), shown, "printing is not canonical");
    let _ = (
        location.reads_return(),
        location.reads_register(),
        location.is_constant(),
    );
});
