//! `${{ … }}` templates in step `with` values, grants, `env` and `for_each`.
//!
//! - `inputs.NAME`, `env.NAME`: known before the run starts.
//! - `steps.ID.outputs.NAME`, `steps.ID.status`, `steps.ID.summary` and `item` /
//!   `item.FIELD`: known only when the step is about to run (an earlier step's output,
//!   status or summary, the current `for_each` item); only `with` and `for_each` may use
//!   them, never a grant.
//! - `secrets.NAME`: never substituted here. It stays in the config as the placeholder
//!   `${{ secrets.NAME }}`, and the host replaces it in the plugin's outgoing HTTP
//!   request headers, so the plugin never holds the value.
//!
//! A string that is exactly one template takes the value's own JSON type (so
//! `port: ${{ inputs.port }}` stays a number); templates inside a longer string are
//! interpolated as text. Rendering is one pass: a substituted value is data, never
//! scanned for templates again, so an input or an output that contains `${{ … }}`
//! cannot inject a reference.

use serde_json::Value;

/// One reference found in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `inputs.NAME`
    Input(String),
    /// `env.NAME`
    Env(String),
    /// `steps.ID.outputs.NAME`
    Output {
        /// The step.
        step: String,
        /// The output.
        name: String,
    },
    /// `steps.ID.status` or `steps.ID.summary`: how an earlier step ended, as `when:`
    /// reads it (a `for_each` step: its worst item, and "N items, M run").
    Step {
        /// The step.
        step: String,
        /// Which of its fields.
        field: StepField,
    },
    /// `item` (`None`) or `item.FIELD` of the current `for_each` item.
    Item(Option<String>),
    /// `secrets.NAME`: the host fills it in outgoing HTTP request headers.
    Secret(String),
}

/// The fields of an earlier step a template can read besides its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepField {
    /// `ok`, `warning`, `critical`, `unknown` or `skipped`.
    Status,
    /// Its one-line summary.
    Summary,
}

impl StepField {
    /// Its name in a template.
    pub fn name(self) -> &'static str {
        match self {
            StepField::Status => "status",
            StepField::Summary => "summary",
        }
    }
}

impl Reference {
    /// Whether its value is known only when the step runs.
    pub fn is_runtime(&self) -> bool {
        matches!(
            self,
            Reference::Output { .. } | Reference::Step { .. } | Reference::Item(_)
        )
    }

    /// The placeholder a secret reference stays as: `${{ secrets.NAME }}`.
    pub fn secret_placeholder(name: &str) -> String {
        format!("${{{{ secrets.{name} }}}}")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Input(name) => write!(f, "${{{{ inputs.{name} }}}}"),
            Reference::Env(name) => write!(f, "${{{{ env.{name} }}}}"),
            Reference::Output { step, name } => write!(f, "${{{{ steps.{step}.outputs.{name} }}}}"),
            Reference::Step { step, field } => write!(f, "${{{{ steps.{step}.{} }}}}", field.name()),
            Reference::Item(None) => write!(f, "${{{{ item }}}}"),
            Reference::Item(Some(field)) => write!(f, "${{{{ item.{field} }}}}"),
            Reference::Secret(name) => write!(f, "${{{{ secrets.{name} }}}}"),
        }
    }
}

/// What a template does to its value before it is written: `${{ item | url }}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// One URL path segment or query value: every byte but `A-Z a-z 0-9 - . _ ~`
    /// percent-encoded, and a value of `.` or `..` refused (a URL parser reads those as
    /// path steps even when encoded). An empty value stays empty: guard it with `when`.
    Url,
}

impl Filter {
    fn apply(self, value: Value, reference: &Reference) -> Result<Value, String> {
        let text = match value {
            Value::String(text) => text,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!(
                    "`{reference}` is {}, not text: `| url` takes a string or a number",
                    crate::text::truncate(&crate::text::visible(&other.to_string()), 60)
                ));
            }
        };
        if matches!(text.as_str(), "." | "..") {
            return Err(format!(
                "`{reference}` is `{text}`, which cannot be one URL path segment"
            ));
        }
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        Ok(Value::String(out))
    }
}

/// A piece of a parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Ref(Reference, Option<Filter>),
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
        let (expression, filter) = match expression.split_once('|') {
            None => (expression, None),
            Some((expression, filter)) if filter.trim() == "url" => (expression.trim(), Some(Filter::Url)),
            Some((_, filter)) => {
                return Err(format!(
                    "`| {}` is not a template filter (there is one: `| url`, for a URL path segment or query value)",
                    crate::text::truncate(&crate::text::visible(filter.trim()), 40)
                ));
            }
        };
        let reference = parse_reference(expression).ok_or_else(|| {
            format!(
                "`${{{{ {} }}}}` is not a template this runbook can use (write `${{{{ inputs.NAME }}}}`, `${{{{ env.NAME }}}}`, `${{{{ steps.ID.outputs.NAME }}}}`, `${{{{ steps.ID.status }}}}`, `${{{{ steps.ID.summary }}}}`, `${{{{ item }}}}`, `${{{{ item.FIELD }}}}` or `${{{{ secrets.NAME }}}}`)",
                crate::text::truncate(&crate::text::visible(expression), 80)
            )
        })?;
        if filter.is_some() && matches!(reference, Reference::Secret(_)) {
            return Err(format!(
                "`{reference}` takes no filter: it stays a placeholder for the host to fill in HTTP headers"
            ));
        }
        pieces.push(Piece::Ref(reference, filter));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

fn parse_reference(expression: &str) -> Option<Reference> {
    if expression == "item" {
        return Some(Reference::Item(None));
    }
    let (root, rest) = expression.split_once('.')?;
    Some(match root {
        "inputs" if valid_name(rest) => Reference::Input(rest.to_string()),
        "env" if valid_name(rest) => Reference::Env(rest.to_string()),
        "secrets" if valid_name(rest) => Reference::Secret(rest.to_string()),
        "item" if valid_name(rest) => Reference::Item(Some(rest.to_string())),
        "steps" => {
            let (step, rest) = rest.split_once('.')?;
            if !valid_name(step) {
                return None;
            }
            let step = step.to_string();
            match rest {
                "status" => Reference::Step {
                    step,
                    field: StepField::Status,
                },
                "summary" => Reference::Step {
                    step,
                    field: StepField::Summary,
                },
                _ => {
                    let name = rest.strip_prefix("outputs.")?;
                    if !valid_name(name) {
                        return None;
                    }
                    Reference::Output {
                        step,
                        name: name.to_string(),
                    }
                }
            }
        }
        _ => return None,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every reference in `text`, or the syntax error.
pub fn references(text: &str) -> Result<Vec<Reference>, String> {
    Ok(pieces(text)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Ref(reference, _) => Some(reference),
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
    let value_of = |reference: &Reference, filter: &Option<Filter>| match filter {
        None => resolve(reference),
        Some(filter) => filter.apply(resolve(reference)?, reference),
    };
    if let [Piece::Ref(reference, filter)] = pieces.as_slice() {
        return value_of(reference, filter);
    }
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(&text),
            Piece::Ref(reference, filter) => match value_of(&reference, &filter)? {
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
            ("${{ secret.pw }}", "`${{ secret.pw }}` is not a template"),
            ("${{ steps.a.metrics.b }}", "is not a template"),
            ("${{ steps.a.status.x }}", "is not a template"),
            ("${{ steps.a.attempts }}", "is not a template"),
            ("${{ steps.a.outputs. }}", "is not a template"),
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
        assert_eq!(
            references("${{steps.find.outputs.job_ids}} ${{ steps.find.status }}${{steps.find.summary}} ${{ item }} ${{ item.id }} ${{ secrets.key }}").unwrap(),
            vec![
                Reference::Output {
                    step: "find".into(),
                    name: "job_ids".into()
                },
                Reference::Step {
                    step: "find".into(),
                    field: StepField::Status
                },
                Reference::Step {
                    step: "find".into(),
                    field: StepField::Summary
                },
                Reference::Item(None),
                Reference::Item(Some("id".into())),
                Reference::Secret("key".into()),
            ]
        );
    }

    #[test]
    fn the_url_filter_keeps_a_value_inside_its_path_segment() {
        let resolve = |reference: &Reference| -> Result<Value, String> {
            match reference {
                Reference::Item(None) => Ok(json!("../../admin/drop?all=1#x y")),
                Reference::Item(Some(field)) if field == "n" => Ok(json!(42)),
                Reference::Item(Some(field)) if field == "dots" => Ok(json!("..")),
                Reference::Item(Some(field)) if field == "list" => Ok(json!(["a"])),
                other => Err(format!("unexpected {other:?}")),
            }
        };
        assert_eq!(
            render("/jobs/${{ item | url }}/replay", &resolve).unwrap(),
            json!("/jobs/..%2F..%2Fadmin%2Fdrop%3Fall%3D1%23x%20y/replay")
        );
        assert_eq!(render("${{item.n|url}}", &resolve).unwrap(), json!("42"));
        let err = render("/jobs/${{ item.dots | url }}", &resolve).unwrap_err();
        assert!(err.contains("cannot be one URL path segment"), "{err}");
        let err = render("/jobs/${{ item.list | url }}", &resolve).unwrap_err();
        assert!(err.contains("not text"), "{err}");
        let err = references("${{ item | upper }}").unwrap_err();
        assert!(err.contains("`| upper` is not a template filter"), "{err}");
        let err = references("${{ secrets.k | url }}").unwrap_err();
        assert!(err.contains("takes no filter"), "{err}");
    }

    #[test]
    fn substituted_values_are_never_scanned_again() {
        // An output (or input) holding template text is data: one pass, no re-expansion.
        let resolve = |reference: &Reference| -> Result<Value, String> {
            match reference {
                Reference::Output { .. } => Ok(json!("${{ secrets.key }} ${{ inputs.port }}")),
                Reference::Secret(name) => Ok(json!(Reference::secret_placeholder(name))),
                other => Err(format!("unexpected {other:?}")),
            }
        };
        assert_eq!(
            render("id=${{ steps.a.outputs.x }}", &resolve).unwrap(),
            json!("id=${{ secrets.key }} ${{ inputs.port }}")
        );
        assert_eq!(
            render("Bearer ${{secrets.key}}", &resolve).unwrap(),
            json!("Bearer ${{ secrets.key }}")
        );
    }
}
