//! Nagios threshold ranges (`10`, `10:`, `~:10`, `10:20`, `@10:20`).
//!
//! A range names the values that are *fine*; a value outside it raises the alert.
//! A leading `@` inverts that: the alert fires for values inside the range. See the
//! Nagios plugin development guidelines, "Threshold and ranges".

use crate::Status;
use std::fmt;

/// A parsed Nagios range.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    start: f64,
    end: f64,
    inside: bool,
    text: String,
}

impl Range {
    /// Parses the Nagios range syntax; the error says what is wrong with the text.
    pub fn parse(text: &str) -> Result<Range, String> {
        let original = text.trim();
        if original.is_empty() {
            return Err("empty range".into());
        }
        let (inside, body) = match original.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, original),
        };
        let (start, end) = match body.split_once(':') {
            None => (0.0, parse_bound(body, original)?),
            Some((start, end)) => {
                let start = if start == "~" {
                    f64::NEG_INFINITY
                } else if start.is_empty() {
                    0.0
                } else {
                    parse_bound(start, original)?
                };
                let end = if end.is_empty() {
                    f64::INFINITY
                } else {
                    parse_bound(end, original)?
                };
                (start, end)
            }
        };
        if start > end {
            return Err(format!("range \"{original}\": start {start} is greater than end {end}"));
        }
        Ok(Range {
            start,
            end,
            inside,
            text: original.to_string(),
        })
    }

    /// True when `value` should raise the alert this range guards.
    pub fn alerts(&self, value: f64) -> bool {
        if value.is_nan() {
            return true;
        }
        let within = self.start <= value && value <= self.end;
        if self.inside { within } else { !within }
    }

    /// The range as the operator wrote it (used in perfdata).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_bound(bound: &str, original: &str) -> Result<f64, String> {
    match bound.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(format!(
            "range \"{original}\": \"{bound}\" is not a number (expected forms: 10, 10:, ~:10, 10:20, @10:20)"
        )),
    }
}

/// A warning and a critical range applied to one value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// Range outside of which the value is a WARNING.
    pub warn: Option<Range>,
    /// Range outside of which the value is CRITICAL (checked first).
    pub crit: Option<Range>,
}

impl Thresholds {
    /// Parses optional warning and critical ranges; errors name the config field.
    pub fn parse(warn: Option<&str>, crit: Option<&str>) -> Result<Thresholds, String> {
        let parse = |field: &str, text: Option<&str>| {
            text.map(Range::parse)
                .transpose()
                .map_err(|err| crate::config::field_error(field, err))
        };
        Ok(Thresholds {
            warn: parse("warn", warn)?,
            crit: parse("crit", crit)?,
        })
    }

    /// The status these thresholds give `value`.
    pub fn status(&self, value: f64) -> Status {
        if self.crit.as_ref().is_some_and(|range| range.alerts(value)) {
            Status::Critical
        } else if self.warn.as_ref().is_some_and(|range| range.alerts(value)) {
            Status::Warning
        } else {
            Status::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_follow_the_nagios_table() {
        // (range, value, alerts)
        let table: &[(&str, f64, bool)] = &[
            ("10", -1.0, true),
            ("10", 0.0, false),
            ("10", 10.0, false),
            ("10", 10.5, true),
            ("10:", 9.9, true),
            ("10:", 1e9, false),
            ("~:10", -1e9, false),
            ("~:10", 11.0, true),
            ("10:20", 9.0, true),
            ("10:20", 15.0, false),
            ("10:20", 21.0, true),
            ("@10:20", 15.0, true),
            ("@10:20", 10.0, true),
            ("@10:20", 9.0, false),
            ("@10:20", 21.0, false),
            ("5.5", 5.6, true),
            (":5", 5.0, false),
        ];
        for (text, value, expected) in table {
            let range = Range::parse(text).unwrap();
            assert_eq!(range.alerts(*value), *expected, "range {text} value {value}");
        }
    }

    #[test]
    fn bad_ranges_are_rejected_with_the_text() {
        for bad in ["", "abc", "10:5", "@", "1:2:3", "~", "nan", "inf", "10:x"] {
            let err = Range::parse(bad).unwrap_err();
            assert!(err.contains("range") || err.contains("empty"), "{bad}: {err}");
        }
    }

    #[test]
    fn critical_wins_over_warning() {
        let t = Thresholds::parse(Some("10"), Some("20")).unwrap();
        assert_eq!(t.status(5.0), Status::Ok);
        assert_eq!(t.status(15.0), Status::Warning);
        assert_eq!(t.status(25.0), Status::Critical);
        let err = Thresholds::parse(Some("x"), None).unwrap_err();
        assert!(err.starts_with("config field `warn`"), "{err}");
    }
}
