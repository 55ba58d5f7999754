//! `${{ inputs.NAME }}` and `${{ env.NAME }}` in step `with` values and grants.
//!
//! A string that is exactly one template takes the value's own JSON type (so
//! `port: ${{ inputs.port }}` stays a number); templates inside a longer string are
//! interpolated as text.

use serde_json::Value;

/// One reference found in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `inputs.NAME`
    Input(String),
    /// `env.NAME`
    Env(String),
}

/// A piece of a parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Ref(Reference),
}

/// Splits `text` into literal text and references; the error says what is wrong.
fn pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `${{{{` in \"{text}\""))?;
        let expression = after[..end].trim();
        let reference = match expression.split_once('.') {
            Some(("inputs", name)) if valid_name(name) => Reference::Input(name.to_string()),
            Some(("env", name)) if valid_name(name) => Reference::Env(name.to_string()),
            _ => {
                return Err(format!(
                    "`${{{{ {expression} }}}}` is not a template this runbook can use (write `${{{{ inputs.NAME }}}}` or `${{{{ env.NAME }}}}`)"
                ));
            }
        };
        pieces.push(Piece::Ref(reference));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every reference in `text`, or the syntax error.
pub fn references(text: &str) -> Result<Vec<Reference>, String> {
    Ok(pieces(text)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Ref(reference) => Some(reference),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Every reference in every string inside `value`, with the syntax errors.
pub fn references_in(value: &Value, out: &mut Vec<Result<Reference, String>>) {
    match value {
        Value::String(text) => match references(text) {
            Ok(found) => out.extend(found.into_iter().map(Ok)),
            Err(err) => out.push(Err(err)),
        },
        Value::Array(items) => items.iter().for_each(|item| references_in(item, out)),
        Value::Object(map) => map.values().for_each(|item| references_in(item, out)),
        _ => {}
    }
}

/// Substitutes references in `text` using `resolve`.
pub fn render(text: &str, resolve: &dyn Fn(&Reference) -> Result<Value, String>) -> Result<Value, String> {
    let pieces = pieces(text)?;
    if let [Piece::Ref(reference)] = pieces.as_slice() {
        return resolve(reference);
    }
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(&text),
            Piece::Ref(reference) => match resolve(&reference)? {
                Value::String(text) => out.push_str(&text),
                Value::Null => {}
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

/// Substitutes references in every string inside `value`.
pub fn render_value(value: &Value, resolve: &dyn Fn(&Reference) -> Result<Value, String>) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) => render(text, resolve)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_value(item, resolve))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| Ok((key.clone(), render_value(item, resolve)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(reference: &Reference) -> Result<Value, String> {
        match reference {
            Reference::Input(name) if name == "port" => Ok(json!(6379)),
            Reference::Input(name) if name == "host" => Ok(json!("cache.internal")),
            Reference::Env(name) if name == "TEAM" => Ok(json!("payments")),
            other => Err(format!("no value for {other:?}")),
        }
    }

    #[test]
    fn renders_whole_values_with_their_type_and_interpolates_text() {
        assert_eq!(render("${{ inputs.port }}", &resolve).unwrap(), json!(6379));
        assert_eq!(
            render("redis://${{inputs.host}}:${{ inputs.port }}/0", &resolve).unwrap(),
            json!("redis://cache.internal:6379/0")
        );
        assert_eq!(
            render("team ${{ env.TEAM }}", &resolve).unwrap(),
            json!("team payments")
        );
        assert_eq!(render("plain", &resolve).unwrap(), json!("plain"));
        let rendered = render_value(&json!({"a": ["${{ inputs.port }}"], "b": 1}), &resolve).unwrap();
        assert_eq!(rendered, json!({"a": [6379], "b": 1}));
    }

    #[test]
    fn bad_templates_are_reported() {
        for (text, expected) in [
            ("${{ inputs.port ", "unclosed"),
            ("${{ secrets.pw }}", "`${{ secrets.pw }}` is not a template"),
            ("${{ inputs. }}", "is not a template"),
            ("${{ port }}", "is not a template"),
        ] {
            let err = references(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        assert_eq!(
            references("${{ inputs.a }}-${{ env.B }}").unwrap(),
            vec![Reference::Input("a".into()), Reference::Env("B".into())]
        );
    }
}
