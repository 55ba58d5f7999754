//! Plugin config schemas. A schema is what a plugin's `info()` returns, so it is hostile
//! input: before jsonschema compiles it, it is checked against limits that bound what
//! compiling it and validating configs with it can cost the host, in memory and in time.
//! A schema over a limit is refused with the limit and what to change.
//!
//! - At most [`MAX_SCHEMA_BYTES`] of JSON, nested at most [`MAX_DEPTH`] deep.
//! - `$ref` only to a JSON pointer into the schema itself (`#/$defs/port`). Nothing is
//!   fetched: jsonschema's `resolve-http` and `resolve-file` features are off, and a
//!   retriever that refuses every URI is installed as well. `$id`, `$dynamicRef` and
//!   `$recursiveRef` are refused (they change what a pointer means), and `$schema` is
//!   one of drafts 6, 7, 2019-09 or 2020-12, at the top only.
//! - No cycle of `$ref`s, and at most [`MAX_EXPANDED_NODES`] JSON values and
//!   [`MAX_DEPTH`] levels once every `$ref` is replaced by what it points to: jsonschema
//!   compiles a referenced schema again where it is referenced, so a cycle grows the host
//!   for as long as validation runs, and a chain of refs can double the work at each link.
//! - At most [`MAX_PATTERNS`] regular expressions (`pattern`, `patternProperties`), each
//!   at most [`MAX_PATTERN_BYTES`], compiled by the linear-time `regex` engine within
//!   [`REGEX_SIZE_LIMIT`]: no look-around or back-references, so no backtracking.
//!
//! jsonschema also checks a schema against its draft's meta-schema, with a validator it
//! keeps for the life of the process and that compiles another copy of the meta-schema
//! (about 4 MiB) for every distinct path of nested keywords it meets: a 4 KiB schema
//! cost 1 GiB. So the plugin's schema is compiled as a resource behind a one-line `$ref`
//! root, and each of its subschemas is checked against the meta-schema alone, with the
//! schemas nested in it taken out (their shapes are checked here).

use serde_json::{Map, Value};
use std::collections::HashMap;

/// Largest config schema, as JSON text (the first-party plugins' are under 2 KiB).
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;

/// Deepest nesting of JSON values in a schema, counted through `$ref`s too (the
/// first-party plugins' are at most 6).
pub const MAX_DEPTH: usize = 32;

/// Most JSON values in a schema once every `$ref` is replaced by its target (the
/// first-party plugins' have at most 72).
pub const MAX_EXPANDED_NODES: u64 = 10_000;

/// Most regular expressions in a schema (`pattern` values and `patternProperties` keys).
pub const MAX_PATTERNS: usize = 32;

/// Longest regular expression in a schema.
pub const MAX_PATTERN_BYTES: usize = 256;

/// Largest compiled regular expression, and largest lazy-DFA cache of one (the `regex`
/// crate's `size_limit` and `dfa_size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 256 << 10;

/// The URI the plugin's schema is registered under; nothing is ever fetched from it.
const SCHEMA_URI: &str = "https://plugin.runbox.invalid/config-schema.json";

/// Keywords whose value is a schema, a map of schemas or a list of schemas (drafts 6 to
/// 2020-12 together). The meta-schema check takes them out; their shape is checked here.
const SCHEMA_VALUED: &[&str] = &[
    "additionalItems",
    "additionalProperties",
    "contains",
    "contentSchema",
    "else",
    "if",
    "items",
    "not",
    "propertyNames",
    "then",
    "unevaluatedItems",
    "unevaluatedProperties",
];
const SCHEMA_MAPS: &[&str] = &[
    "$defs",
    "definitions",
    "dependencies",
    "dependentSchemas",
    "patternProperties",
    "properties",
];
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// Drafts a schema may declare in `$schema` (without a trailing `#`).
const DRAFTS: &[&str] = &[
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "http://json-schema.org/draft-07/schema",
    "http://json-schema.org/draft-06/schema",
];

/// Parses, checks and compiles a plugin's config schema. The error says which limit the
/// schema breaks, where (a JSON pointer), and what to change.
pub fn compile(text: &str) -> Result<(Value, jsonschema::Validator), String> {
    let schema = parse(text)?;
    check(&schema)?;
    let validator = build(&schema)?;
    Ok((schema, validator))
}

/// Parses a config schema without checking it: for a schema whose exact text passed
/// [`compile`]'s checks before (the compile cache records that), whose [`build`] can
/// wait until a config is validated.
pub fn parse(text: &str) -> Result<Value, String> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(format!(
            "its config schema is {} KiB of JSON; the limit is {} KiB",
            text.len().div_ceil(1024),
            MAX_SCHEMA_BYTES >> 10
        ));
    }
    serde_json::from_str(text).map_err(|err| format!("its config schema is not JSON: {err}"))
}

/// Compiles a schema that passed the checks. jsonschema checks the one-line root
/// against the 2020-12 meta-schema, which it compiles once per process: a few
/// milliseconds, so a process that validates no config never builds a validator.
pub fn build(schema: &Value) -> Result<jsonschema::Validator, String> {
    let resource = jsonschema::Resource::from_contents(schema.clone())
        .map_err(|err| format!("its config schema is not a valid JSON Schema: {err}"))?;
    pattern_options(jsonschema::options())
        .with_retriever(NoRetrieval)
        .with_resource(SCHEMA_URI, resource)
        .build(&serde_json::json!({ "$ref": SCHEMA_URI }))
        .map_err(|err| {
            let at = err.schema_path.to_string();
            let at = at.strip_prefix("/$ref").unwrap_or(&at);
            format!("its config schema is not a valid JSON Schema{}: {err}", at_pointer(at))
        })
}

/// Refuses every URI: a config schema is self-contained, and nothing is fetched for it.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("runbox fetches nothing for a config schema (`{}`)", uri.as_str()).into())
    }
}

/// Every limit of the module documentation, checked without compiling anything but
/// the regular expressions.
fn check(schema: &Value) -> Result<(), String> {
    if let Some(draft) = schema.get("$schema") {
        let known = draft.as_str().map(|draft| draft.trim_end_matches('#'));
        if !known.is_some_and(|draft| DRAFTS.contains(&draft)) {
            return Err(format!(
                "its config schema declares `$schema: {draft}`; runbox supports JSON Schema 2020-12, 2019-09, draft-07 and draft-06 (omit `$schema` for 2020-12)"
            ));
        }
    }
    let mut walk = Walk::default();
    walk.node(schema, &mut Vec::new())?;
    expanded_size(schema, &walk.refs)?;
    check_shapes(schema, schema.get("$schema"), &mut Vec::new())
}

/// Checks the subschema `value` (at `path`) against its draft's meta-schema with the
/// schemas nested in it taken out, checks that the keywords holding those have the
/// right shape, and checks the nested schemas in turn.
fn check_shapes<'a>(value: &'a Value, draft: Option<&Value>, path: &mut Vec<Step<'a>>) -> Result<(), String> {
    let Value::Object(map) = value else {
        return match value {
            Value::Bool(_) => Ok(()),
            other => Err(malformed(
                path,
                &format!("{other} is not a schema (an object or a boolean)"),
            )),
        };
    };
    let mut shallow = Map::new();
    let mut nested: Vec<(Step<'a>, Option<Step<'a>>, &'a Value)> = Vec::new();
    for (key, item) in map {
        let step = || Step::Key(key);
        if SCHEMA_VALUED.contains(&key.as_str()) {
            match item {
                Value::Array(items) if key == "items" => {
                    nested.extend(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| (step(), Some(Step::Index(i)), item)),
                    );
                }
                _ => nested.push((step(), None, item)),
            }
        } else if SCHEMA_MAPS.contains(&key.as_str()) {
            let Value::Object(entries) = item else {
                path.push(step());
                return Err(malformed(path, &format!("{item} is not an object")));
            };
            for (name, entry) in entries {
                // `dependencies` maps a property to a schema or to a list of names.
                if !(key == "dependencies" && entry.is_array()) {
                    nested.push((step(), Some(Step::Key(name)), entry));
                }
            }
        } else if SCHEMA_LISTS.contains(&key.as_str()) {
            match item {
                Value::Array(items) if !items.is_empty() => {
                    nested.extend(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| (step(), Some(Step::Index(i)), item)),
                    );
                }
                _ => {
                    path.push(step());
                    return Err(malformed(path, &format!("{item} is not a non-empty array of schemas")));
                }
            }
        } else {
            shallow.insert(key.clone(), item.clone());
        }
    }
    if let Some(draft) = draft {
        shallow.insert("$schema".into(), draft.clone());
    }
    if let Err(err) = jsonschema::meta::validate(&Value::Object(shallow)) {
        let mut at = pointer(path);
        at.push_str(&err.instance_path.to_string());
        return Err(format!(
            "its config schema is not a valid JSON Schema{}: {err}",
            at_pointer(&at)
        ));
    }
    for (keyword, inner, item) in nested {
        let depth = path.len();
        path.push(keyword);
        path.extend(inner);
        check_shapes(item, draft, path)?;
        path.truncate(depth);
    }
    Ok(())
}

fn malformed(path: &[Step<'_>], reason: &str) -> String {
    format!(
        "its config schema is not a valid JSON Schema{}: {reason}",
        at_pointer(&pointer(path))
    )
}

/// The JSON pointer of the value at address `target` in `root`.
fn pointer_to(root: &Value, target: &Value) -> Option<String> {
    fn find<'a>(value: &'a Value, target: &Value, path: &mut Vec<Step<'a>>) -> bool {
        if std::ptr::eq(value, target) {
            return true;
        }
        match value {
            Value::Object(map) => map.iter().any(|(key, item)| {
                path.push(Step::Key(key));
                let found = find(item, target, path);
                if !found {
                    path.pop();
                }
                found
            }),
            Value::Array(items) => items.iter().enumerate().any(|(index, item)| {
                path.push(Step::Index(index));
                let found = find(item, target, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    find(root, target, &mut path).then(|| format!("#{}", pointer(&path)))
}

/// A step of a JSON pointer.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `steps` as a JSON pointer (`/properties/url`).
fn pointer(steps: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in steps {
        out.push('/');
        match step {
            Step::Key(key) => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Step::Index(index) => out.push_str(&index.to_string()),
        }
    }
    out
}

/// " at `/a/b`", or nothing for the root.
fn at_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" at `{pointer}`")
    }
}

/// The first walk: depth, keywords that are refused, `$ref` targets, regular expressions.
#[derive(Default)]
struct Walk<'a> {
    /// Each object holding a `$ref`, by address, with the value it refers to.
    refs: HashMap<*const Value, &'a Value>,
    root: Option<&'a Value>,
    patterns: usize,
}

impl<'a> Walk<'a> {
    fn node(&mut self, value: &'a Value, path: &mut Vec<Step<'a>>) -> Result<(), String> {
        let root = *self.root.get_or_insert(value);
        if path.len() >= MAX_DEPTH {
            return Err(format!(
                "its config schema nests deeper than {MAX_DEPTH} levels{}; flatten it",
                at_pointer(&pointer(path))
            ));
        }
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    path.push(Step::Key(key));
                    self.keyword(root, value, key, item, path)?;
                    self.node(item, path)?;
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    path.push(Step::Index(index));
                    self.node(item, path)?;
                    path.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks `key: item` of the object `parent` (`path` ends at `key`). Keywords are
    /// recognised wherever they appear, even inside `enum` or `default` values: that
    /// refuses a few odd schemas, never lets a keyword through unchecked.
    fn keyword(
        &mut self,
        root: &'a Value,
        parent: &'a Value,
        key: &str,
        item: &'a Value,
        path: &[Step<'a>],
    ) -> Result<(), String> {
        let Value::String(text) = item else {
            if key == "patternProperties"
                && let Value::Object(patterns) = item
            {
                for pattern in patterns.keys() {
                    self.pattern(pattern, path)?;
                }
            }
            return Ok(());
        };
        match key {
            "$ref" => {
                let target = resolve(root, text).ok_or_else(|| {
                    format!(
                        "its config schema has `$ref: {text}`{}; a `$ref` must be a JSON pointer into the schema itself, such as `#/$defs/NAME`",
                        at_pointer(&pointer(path))
                    )
                })?;
                self.refs.insert(parent, target);
            }
            "$id" | "$dynamicRef" | "$recursiveRef" => {
                return Err(format!(
                    "its config schema uses `{key}`{}; config schemas must be self-contained: refer to their parts with `$ref: \"#/$defs/NAME\"`",
                    at_pointer(&pointer(path))
                ));
            }
            "$schema" if path.len() > 1 => {
                return Err(format!(
                    "its config schema has `$schema`{}; declare the draft once, at the top",
                    at_pointer(&pointer(path))
                ));
            }
            "pattern" => self.pattern(text, path)?,
            _ => {}
        }
        Ok(())
    }

    fn pattern(&mut self, pattern: &str, path: &[Step<'a>]) -> Result<(), String> {
        self.patterns += 1;
        let at = at_pointer(&pointer(path));
        if self.patterns > MAX_PATTERNS {
            return Err(format!(
                "its config schema has more than {MAX_PATTERNS} regular expressions (`pattern`, `patternProperties`){at}"
            ));
        }
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "its config schema has a regular expression of {} bytes{at}; the limit is {MAX_PATTERN_BYTES}",
                pattern.len()
            ));
        }
        // Compiled the way jsonschema compiles `pattern` (ECMA-262 syntax translated to
        // the `regex` crate's, under the same limits), so the check matches what runs.
        pattern_options(jsonschema::options())
            .build(&serde_json::json!({ "pattern": pattern }))
            .map(drop)
            .map_err(|_| {
                format!(
                    "its config schema has the regular expression `{pattern}`{at}, which runbox cannot use: it must be valid for the linear-time `regex` engine (no look-around or back-references) and compile to at most {} KiB",
                    REGEX_SIZE_LIMIT >> 10
                )
            })
    }
}

/// `options` with the linear-time `regex` engine, under [`REGEX_SIZE_LIMIT`].
fn pattern_options(options: jsonschema::ValidationOptions) -> jsonschema::ValidationOptions {
    options.with_pattern_options(
        jsonschema::PatternOptions::regex()
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT),
    )
}

/// What `reference` (`#`, or `#` and a JSON pointer, percent-encoded or not) points to
/// in `root`.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let fragment = reference.strip_prefix('#')?;
    let decoded = percent_decode(fragment)?;
    if decoded.is_empty() {
        return Some(root);
    }
    let mut node = root;
    for token in decoded.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        node = match node {
            Value::Object(map) => map.get(&token)?,
            Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Size and depth of the schema with every `$ref` replaced by its target, without
/// building it: each value's expansion is computed once (depth-first, iteratively, so a
/// long chain of refs cannot overflow the stack), and a `$ref` back to a value whose
/// expansion is in progress is a cycle.
fn expanded_size(root: &Value, refs: &HashMap<*const Value, &Value>) -> Result<(), String> {
    #[derive(Clone, Copy)]
    enum State {
        InProgress,
        Done { nodes: u64, depth: u64 },
    }
    let mut state: HashMap<*const Value, State> = HashMap::new();
    // (value, whether its children are done)
    let mut stack: Vec<(&Value, bool)> = vec![(root, false)];
    while let Some((value, expanded)) = stack.pop() {
        let key = value as *const Value;
        let targets = || {
            let nested: Box<dyn Iterator<Item = &Value>> = match value {
                Value::Object(map) => Box::new(map.values()),
                Value::Array(items) => Box::new(items.iter()),
                _ => Box::new(std::iter::empty()),
            };
            nested.chain(refs.get(&key).copied())
        };
        if !expanded {
            match state.get(&key) {
                Some(State::Done { .. }) => continue,
                Some(State::InProgress) => unreachable!("pushed once while in progress"),
                None => {}
            }
            state.insert(key, State::InProgress);
            stack.push((value, true));
            for next in targets() {
                match state.get(&(next as *const Value)) {
                    Some(State::InProgress) => {
                        return Err(format!(
                            "its config schema has a cycle of `$ref`s through `{}`; config schemas cannot be recursive (spell out the levels a config needs)",
                            pointer_to(root, next).unwrap_or_default()
                        ));
                    }
                    Some(State::Done { .. }) => {}
                    None => stack.push((next, false)),
                }
            }
            continue;
        }
        let (mut nodes, mut depth) = (1u64, 1u64);
        for next in targets() {
            let Some(State::Done {
                nodes: more,
                depth: deeper,
            }) = state.get(&(next as *const Value)).copied()
            else {
                unreachable!("children are done before their parent")
            };
            nodes = nodes.saturating_add(more);
            depth = depth.max(deeper.saturating_add(1));
        }
        state.insert(key, State::Done { nodes, depth });
    }
    let Some(State::Done { nodes, depth }) = state.get(&(root as *const Value)).copied() else {
        unreachable!("the root is done last")
    };
    if nodes > MAX_EXPANDED_NODES {
        return Err(format!(
            "its config schema has {} values once its `$ref`s are expanded; the limit is {MAX_EXPANDED_NODES} (refer to fewer, smaller definitions)",
            if nodes == u64::MAX {
                "too many".to_string()
            } else {
                nodes.to_string()
            }
        ));
    }
    if depth > MAX_DEPTH as u64 {
        return Err(format!(
            "its config schema nests deeper than {MAX_DEPTH} levels once its `$ref`s are expanded; flatten it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile_value(schema: &Value) -> Result<jsonschema::Validator, String> {
        compile(&schema.to_string()).map(|(_, validator)| validator)
    }

    /// `{"items": {"items": … {"type": "string"} … }}`, `levels` deep.
    fn nested(keyword: &str, levels: usize) -> Value {
        (0..levels).fold(json!({"type": "string"}), |inner, _| json!({ keyword: inner }))
    }

    /// Each definition refers twice to the next: `links` links expand to 2^links copies.
    fn doubling(links: usize) -> Value {
        let mut defs = Map::new();
        for i in 0..links {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(format!("d{i}"), json!({"allOf": [{"$ref": next}, {"$ref": next}]}));
        }
        defs.insert(format!("d{links}"), json!({"type": "string"}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    #[test]
    fn ordinary_schemas_compile_and_validate() {
        let good = [
            json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                "properties": {"url": {"type": "string", "pattern": "^redis://\\w{1,63}(:\\d+)?$"},
                    "db": {"type": "integer", "minimum": 0}, "keys": {"type": "array", "items": {"type": "string"}}},
                "required": ["url"], "additionalProperties": false}),
            json!({"$defs": {"port": {"type": "integer", "maximum": 65535}},
                "properties": {"a": {"$ref": "#/$defs/port"}, "b": {"$ref": "#/%24defs/port"}}}),
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"x": {"type": "string"}},
                "items": [{"$ref": "#/definitions/x"}], "dependencies": {"a": ["b"], "c": {"required": ["d"]}}}),
            json!({"patternProperties": {"^x-[a-z]+$": {"type": "string"}}, "unevaluatedProperties": false}),
            json!({"enum": [{"$ref": "#/$defs/x"}], "$defs": {"x": {}}}),
            json!(true),
            doubling(8),
            nested("items", MAX_DEPTH - 2),
        ];
        for schema in good {
            compile_value(&schema).unwrap_or_else(|err| panic!("{schema}: {err}"));
        }
        let validator = compile_value(&json!({"$defs": {"port": {"type": "integer", "maximum": 65535}},
            "type": "object", "properties": {"port": {"$ref": "#/$defs/port"}}, "required": ["host"]}))
        .unwrap();
        let problems = crate::config::violations_of(&validator, &json!({"port": 70000}));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("config field `port`: 70000 is greater than")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("\"host\" is a required property")),
            "{problems:?}"
        );
    }

    #[test]
    fn schemas_over_a_limit_are_refused_with_what_to_change() {
        let mut cyclic_defs = Map::new();
        for i in 0..40 {
            cyclic_defs.insert(
                format!("a{i}"),
                json!({"items": {"$ref": format!("#/$defs/a{}", i + 1)}}),
            );
        }
        cyclic_defs.insert("a40".into(), json!({"type": "string"}));
        let many_patterns: Map<String, Value> = (0..=MAX_PATTERNS)
            .map(|i| (format!("p{i}"), json!({"pattern": format!("^{i}$")})))
            .collect();
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"description": "x".repeat(MAX_SCHEMA_BYTES)}),
                "KiB of JSON; the limit is 64 KiB",
            ),
            (nested("items", 40), "nests deeper than 32 levels at `/items/items"),
            (
                json!({"$ref": "https://attacker.example/schema.json"}),
                "a `$ref` must be a JSON pointer into the schema itself",
            ),
            (json!({"$ref": "file:///etc/passwd"}), "must be a JSON pointer"),
            (json!({"$ref": "#/$defs/missing"}), "`$ref: #/$defs/missing` at `/$ref`"),
            (
                json!({"$ref": "#anchor", "$anchor": "anchor"}),
                "must be a JSON pointer",
            ),
            (
                json!({"$id": "https://x.example/", "type": "string"}),
                "uses `$id` at `/$id`; config schemas must be self-contained",
            ),
            (json!({"$dynamicRef": "#meta"}), "uses `$dynamicRef`"),
            (json!({"$recursiveRef": "#"}), "uses `$recursiveRef`"),
            (
                json!({"$schema": "http://json-schema.org/draft-04/schema#"}),
                "runbox supports JSON Schema 2020-12",
            ),
            (
                json!({"$schema": "https://attacker.example/meta"}),
                "runbox supports JSON Schema 2020-12",
            ),
            (
                json!({"items": {"$schema": "http://json-schema.org/draft-04/schema#"}}),
                "declare the draft once, at the top",
            ),
            (json!({"$ref": "#"}), "cycle of `$ref`s through `#`"),
            (
                json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
                "cycle of `$ref`s",
            ),
            (
                json!({"type": "object", "properties": {"child": {"$ref": "#"}}}),
                "config schemas cannot be recursive",
            ),
            (
                json!({"allOf": [{"$ref": "#/allOf/1"}, {"not": {"$ref": "#/allOf/0"}}]}),
                "cycle of `$ref`s",
            ),
            (doubling(12), "values once its `$ref`s are expanded; the limit is 10000"),
            (doubling(70), "has too many values once its `$ref`s are expanded"),
            (
                json!({"$defs": cyclic_defs, "$ref": "#/$defs/a0"}),
                "nests deeper than 32 levels once its `$ref`s are expanded",
            ),
            (json!({"properties": many_patterns}), "more than 32 regular expressions"),
            (json!({"pattern": "^(?=a)b"}), "no look-around or back-references"),
            (json!({"pattern": "(a)\\1"}), "no look-around or back-references"),
            (json!({"patternProperties": {"(?<=x)y": {}}}), "at `/patternProperties`"),
            (json!({"pattern": "[^x]{1,2000}"}), "compile to at most 256 KiB"),
            (
                json!({"pattern": "a".repeat(MAX_PATTERN_BYTES + 1)}),
                "regular expression of 257 bytes",
            ),
            (json!({"minLength": -1}), "not a valid JSON Schema at `/minLength`"),
            (
                json!({"properties": {"a": {"type": "nope"}}}),
                "not a valid JSON Schema at `/properties/a/type`",
            ),
            (json!({"items": 5}), "at `/items`: 5 is not a schema"),
            (
                json!({"allOf": []}),
                "at `/allOf`: [] is not a non-empty array of schemas",
            ),
            (json!({"properties": []}), "at `/properties`: [] is not an object"),
            (json!("string"), "\"string\" is not a schema"),
        ];
        let started = std::time::Instant::now();
        for (schema, expected) in cases {
            let text = schema.to_string();
            match compile(&text) {
                Ok(_) => panic!("accepted {}", &text[..text.len().min(200)]),
                Err(err) => assert!(err.contains(expected), "{expected:?} not in {err:?}"),
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(compile("{").unwrap_err().contains("its config schema is not JSON"));
    }

    /// jsonschema's process-wide meta-schema validator compiles a copy of the meta-schema
    /// (~4 MiB) per distinct path of nested keywords; compiled behind a `$ref`, a schema
    /// with a hundred such paths takes milliseconds (it took seconds and ~400 MiB).
    #[test]
    fn distinct_keyword_paths_do_not_each_cost_a_meta_schema() {
        fn branches(levels: usize) -> Value {
            if levels == 0 {
                return json!({"type": "string"});
            }
            json!({"items": branches(levels - 1), "not": branches(levels - 1)})
        }
        let started = std::time::Instant::now();
        compile_value(&branches(7)).unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
