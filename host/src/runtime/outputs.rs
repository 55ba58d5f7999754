//! Step outputs (contract 0.2.0): named JSON values a plugin hands to later steps.
//!
//! They are data from a plugin that flows into other plugins' configs, `when`
//! conditions and `for_each` lists, so the host accepts them only in bounded form: at
//! most [`MAX_OUTPUTS`] of them, [`MAX_OUTPUT_BYTES`] of JSON in all, names that are
//! plain identifiers, and every string redacted of the run's secrets (a plugin cannot
//! launder a secret it was given into a step that was not given it). They are never
//! templates: a value is substituted as data, never scanned for `${{ … }}` again.

use super::bindings::Output;
use crate::capabilities::secrets::Redactor;
use serde_json::Value;
use std::collections::BTreeMap;

/// Most outputs a result keeps.
pub const MAX_OUTPUTS: usize = 32;
/// Most JSON text, all outputs together.
pub const MAX_OUTPUT_BYTES: usize = 64 << 10;
/// Longest output name.
pub const MAX_NAME_BYTES: usize = 64;
/// Deepest nesting of lists and objects in a value.
pub const MAX_DEPTH: usize = 16;

/// Whether `name` can name an output: `snake_case`, starting with a letter.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The outputs to keep, and a note for each one dropped (shown in the result's details).
pub fn accept(outputs: Vec<Output>, redactor: &Redactor) -> (BTreeMap<String, Value>, Vec<String>) {
    let mut kept = BTreeMap::new();
    let mut notes = Vec::new();
    let mut bytes = 0;
    let count = outputs.len();
    for (i, output) in outputs.into_iter().enumerate() {
        if i >= MAX_OUTPUTS {
            notes.push(format!(
                "{} further outputs dropped (cap is {MAX_OUTPUTS})",
                count - MAX_OUTPUTS
            ));
            break;
        }
        // Only a note shows the name, so only a note pays for making it safe to show.
        let shown = || {
            crate::text::truncate(&crate::text::visible(&redactor.redact(&output.name)), MAX_NAME_BYTES).into_owned()
        };
        if !is_valid_name(&output.name) {
            notes.push(format!(
                "output `{}` dropped: an output name is snake_case (a-z, 0-9, _; starting with a letter), at most {MAX_NAME_BYTES} bytes",
                shown()
            ));
            continue;
        }
        if kept.contains_key(&output.name) {
            notes.push(format!("output `{}` repeated: the first value is kept", shown()));
            continue;
        }
        if bytes + output.value.len() > MAX_OUTPUT_BYTES {
            notes.push(format!(
                "output `{}` dropped: the outputs pass {} KiB of JSON",
                shown(),
                MAX_OUTPUT_BYTES >> 10
            ));
            continue;
        }
        let value: Value = match serde_json::from_str(&output.value) {
            Ok(value) => value,
            Err(err) => {
                notes.push(format!("output `{}` dropped: its value is not JSON ({err})", shown()));
                continue;
            }
        };
        if depth(&value) > MAX_DEPTH {
            notes.push(format!(
                "output `{}` dropped: nested deeper than {MAX_DEPTH} lists or objects",
                shown()
            ));
            continue;
        }
        bytes += output.value.len();
        kept.insert(output.name, redacted(value, redactor));
    }
    (kept, notes)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn redacted(value: Value, redactor: &Redactor) -> Value {
    match value {
        Value::String(text) => Value::String(redactor.redact(&text).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(|item| redacted(item, redactor)).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (redactor.redact(&key).into_owned(), redacted(item, redactor)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn output(name: &str, value: &str) -> Output {
        Output {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn keeps_valid_outputs_and_says_why_it_drops_the_rest() {
        let redactor = Redactor::default();
        let (kept, notes) = accept(
            vec![
                output("job_ids", r#"["a","b"]"#),
                output("count", "2"),
                output("Bad-Name", "1"),
                output("count", "3"),
                output("broken", "[1,"),
                output("deep", &format!("{}{}", "[".repeat(40), "]".repeat(40))),
            ],
            &redactor,
        );
        assert_eq!(kept.get("job_ids"), Some(&json!(["a", "b"])));
        assert_eq!(kept.get("count"), Some(&json!(2)));
        assert_eq!(kept.len(), 2, "{kept:?}");
        let notes = notes.join("\n");
        for expected in [
            "`Bad-Name` dropped",
            "`count` repeated",
            "`broken` dropped",
            "`deep` dropped",
        ] {
            assert!(notes.contains(expected), "{expected}: {notes}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_values_and_keys() {
        let redactor = Redactor::new(["hunter2-token".to_string()]);
        let (kept, _) = accept(
            vec![output("leak", r#"{"hunter2-token": ["x hunter2-token y", 1]}"#)],
            &redactor,
        );
        assert_eq!(kept["leak"], json!({"[REDACTED]": ["x [REDACTED] y", 1]}));
    }

    #[test]
    fn caps_count_and_size() {
        let redactor = Redactor::default();
        let many: Vec<Output> = (0..40).map(|i| output(&format!("o{i}"), "1")).collect();
        let (kept, notes) = accept(many, &redactor);
        assert_eq!(kept.len(), MAX_OUTPUTS);
        assert!(notes[0].contains("8 further outputs dropped"), "{notes:?}");
        let big = format!("\"{}\"", "x".repeat(40 << 10));
        let (kept, notes) = accept(vec![output("a", &big), output("b", &big)], &redactor);
        assert_eq!(kept.len(), 1);
        assert!(notes[0].contains("`b` dropped: the outputs pass 64 KiB"), "{notes:?}");
    }
}
