//! The S3 server-access-log line parser (`s3log::fields`, `s3log::parse`) and the time
//! parser it uses (`time::parse_clf`).
//!
//! Asserts: no panic; fields written back in the documented form (`-` for empty, quoted
//! with `\` escapes otherwise; `[-]` for the one value only a bracketed field can hold)
//! split into the same fields; a parsed record agrees with the
//! line's fields (at least 11; time from field 3, operation 7, status 10 within 100–599,
//! error code 11); a time written as `DD/Mon/YYYY:HH:MM:SS ±HHMM` parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runbox_plugin_sdk::s3log;
use runbox_plugin_sdk::time::{Utc, parse_clf};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = data.first_chunk::<8>() {
        check_time_round_trip(i64::from_le_bytes(*bytes));
    }
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_clf(line);
    let fields = s3log::fields(line);
    if let Ok(fields) = &fields {
        let written: Vec<String> = fields
            .iter()
            .map(|field| match field {
                None => "-".to_string(),
                // Only a bracketed field is `-` as a value.
                Some(value) if value == "-" => "[-]".to_string(),
                Some(value) => format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")),
            })
            .collect();
        let written = written.join(" ");
        assert_eq!(s3log::fields(&written).as_ref(), Ok(fields), "{written}");
    }
    if let Ok(record) = s3log::parse(line) {
        let fields = fields.expect("a line that parses splits into fields");
        assert!(fields.len() >= 11);
        assert_eq!(Some(record.time), fields[2].as_deref().and_then(parse_clf));
        assert_eq!(Some(&record.operation), fields[6].as_ref());
        assert_eq!(
            record.status,
            fields[9].as_deref().map(|text| text.parse::<u16>().unwrap())
        );
        assert!(record.status.is_none_or(|status| (100..600).contains(&status)));
        assert_eq!(record.error_code, fields[10]);
    }
});

/// Unix seconds from years 1 to 9999, in access-log form with an offset, parse back.
fn check_time_round_trip(seed: i64) {
    const FIRST: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = FIRST + seed.rem_euclid(LAST - FIRST + 1);
    let offset_minutes = (seed >> 40).rem_euclid(24 * 60) - 12 * 60;
    let local = Utc::from_unix(secs + offset_minutes * 60);
    if !(1..=9999).contains(&local.year) {
        return;
    }
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let text = format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        local.day,
        MONTHS[local.month as usize - 1],
        local.year,
        local.hour,
        local.minute,
        local.second,
        offset_minutes.abs() / 60,
        offset_minutes.abs() % 60
    );
    assert_eq!(parse_clf(&text), Some(secs), "{text}");
}
