//! Plugin config: built from `--config` and `--with`, validated against the plugin's
//! JSON Schema before the plugin runs.

use serde_json::{Map, Value};

/// Builds the config object from an optional JSON object and `KEY=VALUE` pairs.
///
/// A value is taken as a string when the schema says the property is a string;
/// otherwise it is parsed as JSON (`--with info=true`, `--with port=6379`), and taken
/// as a string if it is not JSON and the schema does not say otherwise.
pub fn build(schema: &Value, base: Option<&str>, pairs: &[String]) -> Result<Value, String> {
    let mut config = match base {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("--config must be a JSON object".into()),
            Err(err) => return Err(format!("--config is not valid JSON: {err}")),
        },
    };
    for pair in pairs {
        let (key, text) = pair
            .split_once('=')
            .ok_or_else(|| format!("--with `{pair}`: expected KEY=VALUE"))?;
        let declared = &schema["properties"][key]["type"];
        let types: Vec<&str> = match declared {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let value = if types.first() == Some(&"string") {
            Value::String(text.to_string())
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(value) => value,
                Err(_) if types.is_empty() || types.contains(&"string") => Value::String(text.to_string()),
                Err(_) => {
                    return Err(format!(
                        "--with {key}={text}: expected {} (as JSON)",
                        types.join(" or ")
                    ));
                }
            }
        };
        config.insert(key.to_string(), value);
    }
    Ok(Value::Object(config))
}

/// Converts top-level values to the type the schema declares where that is lossless:
/// a number or boolean where a string is wanted becomes its text, and text that parses
/// as the wanted number or boolean becomes one (templates render text and numbers).
pub fn coerce(schema: &Value, config: &mut Value) {
    let Value::Object(map) = config else { return };
    for (key, value) in map.iter_mut() {
        let wanted = match &schema["properties"][key]["type"] {
            Value::String(one) => one.as_str(),
            _ => continue,
        };
        let coerced = match (wanted, &*value) {
            ("string", Value::Number(n)) => Some(Value::String(n.to_string())),
            ("string", Value::Bool(b)) => Some(Value::String(b.to_string())),
            ("integer" | "number" | "boolean", Value::String(text)) => serde_json::from_str::<Value>(text.trim())
                .ok()
                .filter(|parsed| match wanted {
                    "integer" => parsed.is_i64() || parsed.is_u64(),
                    "number" => parsed.is_number(),
                    _ => parsed.is_boolean(),
                }),
            _ => None,
        };
        if let Some(coerced) = coerced {
            *value = coerced;
        }
    }
}

/// Violations listed at most; a schema can make one config violate it thousands of times.
const MAX_VIOLATIONS: usize = 20;

/// Bytes kept of one violation (jsonschema quotes the schema's `enum`, which the plugin chose).
const MAX_VIOLATION_BYTES: usize = 1024;

/// Every way `config` violates an already compiled schema (the first
/// [`MAX_VIOLATIONS`], each cut to [`MAX_VIOLATION_BYTES`]), each naming the field.
pub fn violations_of(validator: &jsonschema::Validator, config: &Value) -> Vec<String> {
    let mut errors = validator.iter_errors(config);
    let mut violations: Vec<String> = errors
        .by_ref()
        .take(MAX_VIOLATIONS)
        .map(|err| {
            let path = err.instance_path.to_string();
            let text = if path.is_empty() {
                format!("config: {err}")
            } else {
                format!(
                    "config field `{}`: {err}",
                    path.trim_start_matches('/').replace('/', ".")
                )
            };
            // The schema's words are the plugin's: one line, nothing a terminal acts on.
            crate::text::cut(crate::text::visible(&text).into_owned(), MAX_VIOLATION_BYTES)
        })
        .collect();
    if errors.next().is_some() {
        violations.push(format!(
            "config: … further violations not shown (the first {MAX_VIOLATIONS} are)"
        ));
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn violations(schema: &Value, config: &Value) -> Vec<String> {
        violations_of(&jsonschema::validator_for(schema).expect("a valid schema"), config)
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "url": {"type": "string"}, "info": {"type": "boolean"}, "db": {"type": "integer"}
        }, "required": ["url"], "additionalProperties": false})
    }

    #[test]
    fn values_follow_the_schema_types() {
        let config = build(&schema(), None, &["url=123".into(), "info=true".into(), "db=2".into()]).unwrap();
        assert_eq!(config, json!({"url": "123", "info": true, "db": 2}));
        let err = build(&schema(), None, &["db=two".into()]).unwrap_err();
        assert!(err.contains("expected integer"), "{err}");
        let merged = build(&schema(), Some(r#"{"url": "a", "db": 1}"#), &["db=3".into()]).unwrap();
        assert_eq!(merged, json!({"url": "a", "db": 3}));
        assert!(build(&schema(), Some("[1]"), &[]).is_err());
        assert!(build(&schema(), None, &["novalue".into()]).is_err());
    }

    #[test]
    fn coerces_to_the_declared_types() {
        let schema = json!({"type": "object", "properties": {"warn": {"type": "string"}, "db": {"type": "integer"}, "info": {"type": "boolean"}}});
        let mut config = json!({"warn": 1000, "db": "3", "info": "true", "other": 5});
        coerce(&schema, &mut config);
        assert_eq!(config, json!({"warn": "1000", "db": 3, "info": true, "other": 5}));
        let mut config = json!({"db": "three"});
        coerce(&schema, &mut config);
        assert_eq!(
            config,
            json!({"db": "three"}),
            "not lossless: left for the schema to reject"
        );
    }

    #[test]
    fn violations_name_the_field() {
        let problems = violations(&schema(), &json!({"url": 5, "extra": 1}));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with("config field `url`")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("extra")), "{problems:?}");
        let problems = violations(&schema(), &json!({}));
        assert!(problems[0].contains("\"url\" is a required property"), "{problems:?}");
        assert!(violations(&schema(), &json!({"url": "x"})).is_empty());
    }

    #[test]
    fn violations_are_capped_in_number_and_length() {
        let choices: Vec<String> = (0..1000).map(|i| format!("choice-{i}")).collect();
        let schema = json!({"type": "array", "items": {"enum": choices}});
        let config = json!(vec!["nope"; 100]);
        let problems = violations(&schema, &config);
        assert_eq!(problems.len(), MAX_VIOLATIONS + 1, "{problems:?}");
        assert!(
            problems.iter().all(|p| p.len() <= MAX_VIOLATION_BYTES + 3),
            "{problems:?}"
        );
        assert!(
            problems[0].starts_with("config field `0`: \"nope\" is not one of"),
            "{}",
            problems[0]
        );
        assert_eq!(
            problems[MAX_VIOLATIONS],
            "config: … further violations not shown (the first 20 are)"
        );
    }
}
