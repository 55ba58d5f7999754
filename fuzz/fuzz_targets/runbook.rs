//! The runbook parser: runbook text through everything `runbook::prepare::prepare` does
//! before it needs a plugin or a file: YAML with line numbers, the manifest schema, each
//! step's `when`, templates in `with`/`allow`/`env`, the grants they render to, secrets,
//! and the `timeout`/`retry.delay` durations. Any text is also tried directly as a
//! condition and as a template.
//!
//! Asserts: no panic; every node line is within the text; `!(C)` parses to the negation
//! of `C` and evaluates to its opposite; a template parses for `references` exactly when
//! it renders, and text without templates renders to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runbox::capabilities::network::Grant;
use runbox::capabilities::parse_env_grant;
use runbox::capabilities::secrets::SecretGrant;
use runbox::runbook::condition::{self, Expr};
use runbox::runbook::manifest::Manifest;
use runbox::runbook::template::{self, Reference};
use runbox::runbook::yaml;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_condition(text);
    check_template(text);

    let Ok(tree) = yaml::parse(text) else {
        return;
    };
    // Lines are 1-based and name a line of the text (an upper bound: every \n and \r breaks).
    let last_line = 1 + text.matches(['\n', '\r']).count();
    let lines = tree.lines();
    assert_eq!(lines.get(""), Some(&tree.line), "the root's line is under \"\"");
    for (path, line) in &lines {
        assert!((1..=last_line).contains(line), "`{path}` on line {line} of {last_line}");
    }
    let Ok(manifest) = serde_json::from_value::<Manifest>(tree.to_json()) else {
        return;
    };
    for input in manifest.inputs.values() {
        if let Some(default) = &input.default {
            check_template_value(default);
        }
    }
    for step in &manifest.steps {
        if let Some(when) = &step.when {
            check_condition(when);
        }
        if let Some(timeout) = &step.timeout {
            let _ = humantime::parse_duration(timeout);
        }
        if let Some(delay) = step.retry.as_ref().and_then(|retry| retry.delay.as_ref()) {
            let _ = humantime::parse_duration(delay);
        }
        for value in step.with.values() {
            check_template_value(value);
        }
        for grant in &step.allow {
            if let Ok(Value::String(rendered)) = template::render(grant, &resolve) {
                let _ = rendered.parse::<Grant>();
            }
        }
        for (name, source) in &step.secrets {
            let _ = SecretGrant::parse(&format!("{name}={source}"));
        }
        for (name, value) in &step.env {
            if let Ok(rendered) = template::render(value, &resolve) {
                let value = match rendered {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                let _ = parse_env_grant(&format!("{name}={value}"));
            }
        }
    }
});

/// A resolver that knows every name: inputs become numbers, env values strings.
fn resolve(reference: &Reference) -> Result<Value, String> {
    Ok(match reference {
        Reference::Input(name) => json!(name.len()),
        Reference::Env(name) => Value::String(format!("<{name}>")),
        // A value that is itself template text: rendering must not expand it again.
        Reference::Output { step, name } => Value::String(format!("${{{{ steps.{step}.outputs.{name} }}}}")),
        Reference::Step { step, field } => Value::String(format!("{step}:{}", field.name())),
        Reference::Item(field) => json!([field]),
        Reference::Secret(name) => Value::String(Reference::secret_placeholder(name)),
    })
}

/// A value for every path: some missing, some numbers, some strings.
fn lookup(path: &[String]) -> Option<Value> {
    match path.len() % 3 {
        0 => None,
        1 => Some(json!(path.concat().len())),
        _ => path.last().map(|last| Value::String(last.clone())),
    }
}

fn check_condition(text: &str) {
    let Ok(expr) = condition::parse(text) else {
        return;
    };
    let _ = expr.paths();
    let value = expr.eval(&lookup);
    let negated = condition::parse(&format!("!({text})")).expect("`!(C)` parses when `C` does");
    assert_eq!(negated, Expr::Not(Box::new(expr)), "`!({text})`");
    assert_eq!(negated.eval(&lookup), !value, "`!({text})` evaluates to the opposite");
}

fn check_template(text: &str) {
    let references = template::references(text);
    let rendered = template::render(text, &resolve);
    assert_eq!(references.is_ok(), rendered.is_ok(), "{text:?}: {rendered:?}");
    if references.is_ok_and(|found| found.is_empty()) {
        assert_eq!(
            rendered,
            Ok(Value::String(text.to_string())),
            "text without templates renders to itself"
        );
    }
}

fn check_template_value(value: &Value) {
    let mut found = Vec::new();
    template::references_in(value, &mut found);
    let rendered = template::render_value(value, &resolve);
    assert_eq!(
        found.iter().all(Result::is_ok),
        rendered.is_ok(),
        "{value}: {rendered:?}"
    );
}
