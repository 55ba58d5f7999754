//! The Nagios threshold parser (`Range::parse`, `Thresholds::parse`), and `alerts` and
//! `status` on what it parses. The input is the warning range; after a newline, the
//! critical range.
//!
//! Asserts: a range keeps the text as written (trimmed) and re-parses from it to the same
//! range; NaN always alerts; the finite bounds written belong to the range (they alert only
//! when inverted); `@R` alerts exactly where `R` does not; `status` is CRITICAL when the
//! critical range alerts, else WARNING when the warning range does, else OK; an error
//! names its config field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runbox_plugin_sdk::Status;
use runbox_plugin_sdk::threshold::{Range, Thresholds};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (warn, crit) = match text.split_once('\n') {
        Some((warn, crit)) => (warn, Some(crit)),
        None => (text, None),
    };
    let values = sample_values(text);
    for range in [warn].into_iter().chain(crit) {
        if let Ok(range) = Range::parse(range) {
            check_range(&range, &values);
        }
    }
    let warn = (!warn.is_empty()).then_some(warn);
    match Thresholds::parse(warn, crit) {
        Ok(thresholds) => {
            for &value in &values {
                let alerts = |range: &Option<Range>| range.as_ref().is_some_and(|range| range.alerts(value));
                let expected = if alerts(&thresholds.crit) {
                    Status::Critical
                } else if alerts(&thresholds.warn) {
                    Status::Warning
                } else {
                    Status::Ok
                };
                assert_eq!(thresholds.status(value), expected, "{thresholds:?} at {value}");
            }
        }
        Err(err) => assert!(
            err.starts_with("config field `warn`: ") || err.starts_with("config field `crit`: "),
            "{err}"
        ),
    }
});

/// Values to probe: fixed ones, every number in the input, and their neighbours.
fn sample_values(text: &str) -> Vec<f64> {
    let mut values = vec![
        f64::NEG_INFINITY,
        -1e300,
        -1.0,
        -0.0,
        0.0,
        0.5,
        1.0,
        10.0,
        1e300,
        f64::INFINITY,
    ];
    for token in text.split(|c: char| c.is_whitespace() || matches!(c, ':' | '@' | '~')) {
        if let Ok(value) = token.parse::<f64>()
            && !value.is_nan()
        {
            values.extend([value, value.next_down(), value.next_up()]);
        }
    }
    values
}

fn check_range(range: &Range, values: &[f64]) {
    let text = range.as_str();
    assert_eq!(range.to_string(), text);
    assert_eq!(text, text.trim());
    assert_eq!(Range::parse(text).as_ref(), Ok(range), "re-parse of {text:?}");
    assert!(range.alerts(f64::NAN));

    let (inside, body) = match text.strip_prefix('@') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let bounds: Vec<&str> = match body.split_once(':') {
        Some((start, end)) => vec![start, end],
        None => vec![body],
    };
    for bound in bounds {
        if let Ok(value) = bound.parse::<f64>() {
            assert_eq!(range.alerts(value), inside, "{text:?}: bound {value} is in the range");
        }
    }
    if !inside {
        let inverted = Range::parse(&format!("@{text}")).expect("`@R` parses when `R` does");
        for &value in values {
            assert_eq!(inverted.alerts(value), !range.alerts(value), "@{text:?} at {value}");
        }
    }
}
