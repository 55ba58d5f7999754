//! Table and column names given in the config (`identifiers`), put into the query where
//! it says `:"name"` (psql's syntax for an identifier variable). A name is validated
//! (letters, digits and `_`, at most 63 bytes, one optional `schema.` part) and then
//! double-quoted, so a runbook input cannot turn into SQL. Values never need this:
//! they go as bind parameters (`params`, `$1`).

use runbox_plugin_sdk::config::field_error;
use std::collections::BTreeMap;

/// Quotes a validated name: `app.session_events` becomes `"app"."session_events"`.
pub fn quote(field: &str, name: &str) -> Result<String, String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|part| !is_plain(part)) {
        return Err(field_error(
            field,
            format!(
                "{name:?} is not a plain SQL name: use letters, digits and `_` (not starting with a digit, at most 63 bytes), optionally `schema.name`"
            ),
        ));
    }
    Ok(parts
        .iter()
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join("."))
}

fn is_plain(part: &str) -> bool {
    let mut chars = part.chars();
    part.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces each `:"name"` of `query` (outside string literals) by the quoted value of
/// `identifiers[name]`. A declared name the query never uses is an error (a typo would
/// otherwise go unnoticed); a `:"other"` that names no declared identifier is left
/// as it is.
pub fn substitute(query: &str, identifiers: &BTreeMap<String, String>) -> Result<String, String> {
    if identifiers.is_empty() {
        return Ok(query.to_string());
    }
    let mut quoted = BTreeMap::new();
    for (name, value) in identifiers {
        quoted.insert(name.as_str(), quote(&format!("identifiers.{name}"), value)?);
    }
    let mut used = std::collections::BTreeSet::new();
    let mut out = String::with_capacity(query.len());
    let mut in_string = false;
    let mut rest = query;
    while let Some(c) = rest.chars().next() {
        if c == '\'' {
            in_string = !in_string;
        } else if !in_string
            && let Some(after) = rest.strip_prefix(":\"")
            && let Some(end) = after.find('"')
            && let Some(value) = quoted.get(&after[..end])
        {
            used.insert(&after[..end]);
            out.push_str(value);
            rest = &after[end + 1..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if let Some(unused) = quoted.keys().find(|name| !used.contains(*name)) {
        return Err(field_error(
            &format!("identifiers.{unused}"),
            format!("the query never says :\"{unused}\"; remove it or use it"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn plain_names_are_quoted_and_anything_else_is_refused() {
        // (name, quoted or None)
        let table: &[(&str, Option<&str>)] = &[
            ("session_events", Some("\"session_events\"")),
            ("_t1", Some("\"_t1\"")),
            ("app.session_events", Some("\"app\".\"session_events\"")),
            ("Seq", Some("\"Seq\"")),
            ("", None),
            ("1abc", None),
            ("a.b.c", None),
            ("events; DROP TABLE users", None),
            ("x\"y", None),
            ("a b", None),
            ("é", None),
            ("a.", None),
        ];
        for (name, expected) in table {
            match (quote("identifiers.table", name), expected) {
                (Ok(quoted), Some(expected)) => assert_eq!(quoted, *expected),
                (Err(err), None) => assert!(err.starts_with("config field `identifiers.table`: "), "{err}"),
                (got, _) => panic!("{name:?}: {got:?}"),
            }
        }
        assert!(quote("t", &"a".repeat(64)).is_err());
        assert!(quote("t", &"a".repeat(63)).is_ok());
    }

    #[test]
    fn placeholders_outside_literals_are_replaced() {
        let ids = map(&[("table", "session_events"), ("column", "seq")]);
        assert_eq!(
            substitute(r#"SELECT max(:"column") FROM :"table" WHERE note <> ':"table"'"#, &ids).unwrap(),
            r#"SELECT max("seq") FROM "session_events" WHERE note <> ':"table"'"#
        );
        // An undeclared `:"x"` stays (JSON in a cast, psql-like text).
        let ids = map(&[("table", "t")]);
        assert_eq!(
            substitute(r#"SELECT 1 FROM :"table", :"x""#, &ids).unwrap(),
            r#"SELECT 1 FROM "t", :"x""#
        );
        let err = substitute("SELECT 1", &ids).unwrap_err();
        assert!(
            err.starts_with("config field `identifiers.table`: the query never says"),
            "{err}"
        );
        let err = substitute(r#"SELECT * FROM :"table""#, &map(&[("table", "t; DELETE FROM t")])).unwrap_err();
        assert!(err.contains("is not a plain SQL name"), "{err}");
        assert_eq!(
            substitute("SELECT ':\"a\"'", &BTreeMap::new()).unwrap(),
            "SELECT ':\"a\"'"
        );
    }
}
