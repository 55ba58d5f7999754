//! Secrets the plugin never sees: a step's config holds `${{ secrets.NAME }}` where a
//! secret belongs in an HTTP request header (`headers: {authorization: "Bearer ${{
//! secrets.api_key }}"}`), the plugin copies that text into its request, and the host
//! replaces it with the value in the request it sends, after the network policy allowed
//! that request ([`super::http`]). The plugin never holds the value: `host.secret`
//! refuses it, and so does every grant that would carry it (see
//! [`super::secrets::HostOnlyValues`]).
//!
//! Only request header *values* are filled: never header names, the URL, the body or
//! trailers. A placeholder is found exactly as [`crate::runbook::template`] finds a
//! reference: from a `${{` to the next `}}`, whitespace around the expression ignored,
//! the expression `secrets.NAME`. A placeholder for a secret that is not one of the
//! step's header secrets, a value an HTTP header cannot carry (control characters), a
//! value over [`MAX_VALUE_BYTES`] or more than [`MAX_PLACEHOLDERS_PER_REQUEST`]
//! placeholders refuse the whole request, before anything is sent.

use http::{HeaderMap, HeaderValue};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Placeholders one request's headers may hold. A real request needs one or two; the cap
/// bounds what a plugin can make the host build (this many values of at most
/// [`MAX_VALUE_BYTES`] each) whatever the length of its headers, and does not depend on
/// the secrets' lengths, so a refusal tells the plugin nothing about a value.
pub const MAX_PLACEHOLDERS_PER_REQUEST: usize = 8;

/// Longest value the host puts in a header (servers commonly refuse request heads over
/// 8 KiB altogether).
pub const MAX_VALUE_BYTES: usize = 8 << 10;

/// One `${{ secrets.NAME }}` placeholder in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'a> {
    /// Where its `${{` starts (a byte offset).
    pub start: usize,
    /// Just past its `}}`.
    pub end: usize,
    /// The secret's name.
    pub name: &'a str,
}

/// Every placeholder in `text`, in order. As [`crate::runbook::template`] reads a
/// template: each `${{` runs to the next `}}`; the text between, trimmed, is a
/// placeholder when it is `secrets.NAME` with NAME of ASCII letters, digits, `_` and
/// `-`. Anything else (`${{ inputs.x }}`, an unclosed `${{`, bytes that are not UTF-8)
/// is plain text. One pass over `text`: each byte is looked at a bounded number of times.
pub fn placeholders(text: &[u8]) -> Placeholders<'_> {
    Placeholders { text, at: 0 }
}

/// The iterator of [`placeholders`].
#[derive(Debug, Clone)]
pub struct Placeholders<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Placeholders<'a> {
    type Item = Placeholder<'a>;

    fn next(&mut self) -> Option<Placeholder<'a>> {
        while self.at < self.text.len() {
            let Some(open) = find(&self.text[self.at..], b"${{").map(|i| self.at + i) else {
                break;
            };
            let inner = open + 3;
            let Some(close) = find(&self.text[inner..], b"}}").map(|i| inner + i) else {
                // No `}}` anywhere after: nothing further can be a placeholder.
                break;
            };
            self.at = close + 2;
            if let Some(name) = secret_name(&self.text[inner..close]) {
                return Some(Placeholder {
                    start: open,
                    end: close + 2,
                    name,
                });
            }
        }
        self.at = self.text.len();
        None
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The NAME of an expression `secrets.NAME` (whitespace around it ignored).
fn secret_name(expression: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(expression).ok()?.trim().strip_prefix("secrets.")?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some(name)
}

/// The names of the secrets placeholders in every string value inside `value` (object
/// keys are not looked at, as the runbook's templates do not look at them).
pub fn names_in(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::String(text) => {
            out.extend(placeholders(text.as_bytes()).map(|found| found.name.to_string()));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| names_in(item, out)),
        serde_json::Value::Object(map) => map.values().for_each(|item| names_in(item, out)),
        _ => {}
    }
}

/// The header secrets of one step, with their values, and the names of its other
/// secrets (which the plugin reads itself; named in refusals). Its `Debug` shows names only.
#[derive(Clone, Default)]
pub struct HeaderSecrets {
    values: Vec<(String, String)>,
    readable: Vec<String>,
}

impl fmt::Debug for HeaderSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderSecrets")
            .field("names", &self.values.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("readable", &self.readable)
            .finish()
    }
}

/// Why [`HeaderSecrets::fill`] refused a request. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A placeholder names a secret that is not one of the step's header secrets.
    NotGranted {
        /// The header.
        header: String,
        /// The name in the placeholder (cut to a grantable name's length).
        name: String,
        /// Whether the step grants it for the plugin to read (`host.secret`).
        readable: bool,
    },
    /// The secret's value holds a control character, which a header value cannot carry.
    ControlCharacter {
        /// The header.
        header: String,
        /// The secret.
        name: String,
    },
    /// The secret's value is over [`MAX_VALUE_BYTES`].
    TooLong {
        /// The header.
        header: String,
        /// The secret.
        name: String,
    },
    /// The headers hold more than [`MAX_PLACEHOLDERS_PER_REQUEST`] placeholders.
    TooMany,
}

impl Refusal {
    /// What the request was, after "HTTP GET to DESTINATION".
    pub fn attempt(&self) -> String {
        match self {
            Refusal::NotGranted { header, name, .. }
            | Refusal::ControlCharacter { header, name }
            | Refusal::TooLong { header, name } => {
                format!("with `${{{{ secrets.{name} }}}}` in header `{header}`")
            }
            Refusal::TooMany => format!("with more than {MAX_PLACEHOLDERS_PER_REQUEST} secrets in its headers"),
        }
    }

    /// Why it was refused and what to do.
    pub fn remedy(&self) -> String {
        match self {
            Refusal::NotGranted {
                name, readable: false, ..
            } => format!(
                "the step grants no secret `{name}` for the host to put in HTTP headers — grant it under the step's `secrets:` (runbox check: `--secret {name}=env:VAR`) and write `${{{{ secrets.{name} }}}}` in the step's `with:` (a `--with` value)"
            ),
            Refusal::NotGranted {
                name, readable: true, ..
            } => format!(
                "secret `{name}` is granted for the plugin to read, not for the host to put in HTTP headers — write `${{{{ secrets.{name} }}}}` in the step's `with:` (a `--with` value) to have the host fill it in"
            ),
            Refusal::ControlCharacter { name, .. } => format!(
                "the value of secret `{name}` holds a control character (CR, LF, NUL, ...), which an HTTP header cannot carry; nothing was sent — fix the secret"
            ),
            Refusal::TooLong { name, .. } => format!(
                "the value of secret `{name}` is over {MAX_VALUE_BYTES} bytes, more than the host puts in a header; nothing was sent"
            ),
            Refusal::TooMany => format!(
                "a request's headers may hold at most {MAX_PLACEHOLDERS_PER_REQUEST} `${{{{ secrets.NAME }}}}` placeholders; nothing was sent"
            ),
        }
    }
}

impl HeaderSecrets {
    /// The step's header secrets `names`, with their values taken from `secrets` (all
    /// the step's secrets, resolved; the others are the plugin's to read).
    pub fn new(names: &[String], secrets: &HashMap<String, String>) -> HeaderSecrets {
        let values = names
            .iter()
            .filter_map(|name| Some((name.clone(), secrets.get(name)?.clone())))
            .collect();
        let mut readable: Vec<String> = secrets.keys().filter(|name| !names.contains(name)).cloned().collect();
        readable.sort();
        HeaderSecrets { values, readable }
    }

    /// The same, naming `readable` as the secrets the plugin reads itself (by default
    /// every secret of the step but the header secrets; the sandbox leaves out those it
    /// withholds too).
    pub fn with_readable<'a>(mut self, readable: impl IntoIterator<Item = &'a String>) -> HeaderSecrets {
        self.readable = readable.into_iter().cloned().collect();
        self.readable.sort();
        self
    }

    /// Replaces every placeholder in every header value of `headers` with its secret's
    /// value (each filled value marked sensitive), and returns the secrets it put in,
    /// with their headers. Refused, `headers` must not be sent: some may be filled.
    pub fn fill(&self, headers: &mut HeaderMap) -> Result<Vec<(String, String)>, Refusal> {
        let mut filled: Vec<(String, String)> = Vec::new();
        for (header, value) in headers.iter_mut() {
            let bytes = value.as_bytes();
            let mut found = placeholders(bytes).peekable();
            if found.peek().is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(bytes.len());
            let mut at = 0;
            for placeholder in found {
                let name = placeholder.name;
                let refusal_name = || crate::text::cut(name.to_string(), super::secrets::MAX_NAME_BYTES);
                let Some((_, secret)) = self.values.iter().find(|(granted, _)| granted == name) else {
                    return Err(Refusal::NotGranted {
                        header: header.to_string(),
                        name: refusal_name(),
                        readable: self.readable.iter().any(|readable| readable == name),
                    });
                };
                if filled.len() == MAX_PLACEHOLDERS_PER_REQUEST {
                    return Err(Refusal::TooMany);
                }
                if secret.len() > MAX_VALUE_BYTES {
                    return Err(Refusal::TooLong {
                        header: header.to_string(),
                        name: refusal_name(),
                    });
                }
                if secret.bytes().any(|byte| byte < 0x20 || byte == 0x7f) {
                    return Err(Refusal::ControlCharacter {
                        header: header.to_string(),
                        name: refusal_name(),
                    });
                }
                out.extend_from_slice(&bytes[at..placeholder.start]);
                out.extend_from_slice(secret.as_bytes());
                at = placeholder.end;
                filled.push((header.to_string(), name.to_string()));
            }
            out.extend_from_slice(&bytes[at..]);
            // The rest of the value was a valid header value and the secret holds no
            // control character; checked again all the same.
            let Ok(mut new) = HeaderValue::from_bytes(&out) else {
                let name = filled.last().map(|(_, name)| name.clone()).unwrap_or_default();
                return Err(Refusal::ControlCharacter {
                    header: header.to_string(),
                    name,
                });
            };
            new.set_sensitive(true);
            *value = new;
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn names(text: &str) -> Vec<&str> {
        placeholders(text.as_bytes()).map(|found| found.name).collect()
    }

    #[test]
    fn placeholders_are_found_as_templates_find_references() {
        for (text, expected) in [
            ("Bearer ${{ secrets.key }}", vec!["key"]),
            ("${{secrets.key}}", vec!["key"]),
            ("${{   secrets.key\t}}", vec!["key"]),
            ("${{\u{3000}secrets.key\u{a0}}}", vec!["key"]),
            (
                "${{ secrets.a }}:${{ secrets.b-2 }}${{secrets.C_3}}",
                vec!["a", "b-2", "C_3"],
            ),
            ("${{ secrets.a }}}", vec!["a"]),
            ("$${{ secrets.a }}", vec!["a"]),
            // Not placeholders: other references, bad names, split or unclosed braces.
            ("${{ inputs.key }}", vec![]),
            ("${{ secrets. }}", vec![]),
            ("${{ secrets.a.b }}", vec![]),
            ("${{ secrets.a b }}", vec![]),
            ("${{ secret.key }}", vec![]),
            ("${{ SECRETS.key }}", vec![]),
            ("${ { secrets.key }}", vec![]),
            ("${{ secrets.key } }", vec![]),
            ("${{ secrets.key }", vec![]),
            ("{{ secrets.key }}", vec![]),
            ("$ {{ secrets.key }}", vec![]),
            ("${{ secrets.key", vec![]),
            // From a `${{` to the next `}}`: a `${{` inside one is part of its expression.
            ("${{ ${{ secrets.a }}", vec![]),
            ("${{ x }}${{ secrets.a }}", vec!["a"]),
        ] {
            assert_eq!(names(text), expected, "{text:?}");
            // The runbook's parser agrees wherever it accepts the text.
            if let Ok(references) = crate::runbook::template::references(text) {
                let secrets: Vec<String> = references
                    .into_iter()
                    .filter_map(|reference| match reference {
                        crate::runbook::template::Reference::Secret(name) => Some(name),
                        _ => None,
                    })
                    .collect();
                assert_eq!(secrets, expected, "template.rs reads {text:?} differently");
            }
        }
        let text = "x ${{ secrets.k }} y";
        let found: Vec<Placeholder> = placeholders(text.as_bytes()).collect();
        assert_eq!(
            found,
            [Placeholder {
                start: 2,
                end: 18,
                name: "k"
            }]
        );
        // Bytes that are not UTF-8 around or inside are plain text.
        assert_eq!(
            placeholders(b"\xff${{ secrets.k }}\xfe")
                .map(|f| f.name)
                .collect::<Vec<_>>(),
            ["k"]
        );
        assert_eq!(placeholders(b"${{ secrets.\xffk }}").count(), 0);
    }

    #[test]
    fn names_are_collected_from_string_values_only() {
        let mut found = BTreeSet::new();
        let config = serde_json::json!({
            "headers": {"authorization": "Bearer ${{ secrets.a }}", "${{ secrets.key_name }}": "x"},
            "list": ["${{secrets.b}}", 1, null],
            "url": "http://h/${{ secrets.c }}",
        });
        names_in(&config, &mut found);
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    fn secrets(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn step() -> HeaderSecrets {
        HeaderSecrets::new(
            &["k".to_string(), "other".to_string(), "bad".to_string()],
            &secrets(&[
                ("k", "tok-123"),
                ("other", "o${{ secrets.k }}o"),
                ("bad", "a\r\nx-injected: 1"),
                ("plain", "plain-value"),
            ]),
        )
    }

    #[test]
    fn fills_every_placeholder_in_header_values_only() {
        let mut map = headers(&[
            ("authorization", b"Bearer ${{ secrets.k }}"),
            ("x-both", b"${{secrets.k}}:${{  secrets.other }}"),
            ("x-both", b"second ${{ secrets.k }} value"),
            ("x-plain", b"no placeholder, ${{ inputs.k }}, ${{ secrets.k"),
        ]);
        let filled = step().fill(&mut map).unwrap();
        assert_eq!(map["authorization"], "Bearer tok-123");
        assert!(map["authorization"].is_sensitive());
        let both: Vec<&HeaderValue> = map.get_all("x-both").iter().collect();
        // A filled value is never scanned again: `other`'s value keeps its text.
        assert_eq!(both[0], "tok-123:o${{ secrets.k }}o");
        assert_eq!(both[1], "second tok-123 value");
        assert_eq!(map["x-plain"], "no placeholder, ${{ inputs.k }}, ${{ secrets.k");
        assert!(!map["x-plain"].is_sensitive());
        assert_eq!(filled.len(), 4);
        assert!(filled.contains(&("authorization".into(), "k".into())));
    }

    #[test]
    fn placeholders_for_other_names_refuse_the_request() {
        for (value, name, readable) in [
            (&b"Bearer ${{ secrets.plain }}"[..], "plain", true),
            (b"${{ secrets.nope }}", "nope", false),
            (b"${{ secrets.k }} ${{ secrets.nope }}", "nope", false),
        ] {
            let mut map = headers(&[("authorization", value)]);
            let refusal = step().fill(&mut map).unwrap_err();
            assert_eq!(
                refusal,
                Refusal::NotGranted {
                    header: "authorization".into(),
                    name: name.into(),
                    readable
                }
            );
            assert!(refusal.remedy().contains(&format!("`${{{{ secrets.{name} }}}}`")));
        }
        // A secret the sandbox withholds (say, the TLS client key) is not named readable.
        let mut map = headers(&[("x", b"${{ secrets.plain }}")]);
        let withheld = step().with_readable(&[]);
        assert!(matches!(
            withheld.fill(&mut map),
            Err(Refusal::NotGranted { readable: false, .. })
        ));
        // Without any header secret, every placeholder is refused.
        let none = HeaderSecrets::new(&[], &secrets(&[("plain", "plain-value")]));
        let mut map = headers(&[("x", b"${{ secrets.plain }}")]);
        assert!(matches!(
            none.fill(&mut map),
            Err(Refusal::NotGranted { readable: true, .. })
        ));
        // A name of 30,000 bytes is cut in the refusal.
        let long = format!("${{{{ secrets.{} }}}}", "n".repeat(30_000));
        let mut map = headers(&[("x", long.as_bytes())]);
        let Err(Refusal::NotGranted { name, .. }) = none.fill(&mut map) else {
            panic!("not refused")
        };
        assert!(name.len() <= super::super::secrets::MAX_NAME_BYTES + '…'.len_utf8());
    }

    #[test]
    fn a_value_a_header_cannot_carry_refuses_the_request() {
        let mut map = headers(&[("authorization", b"Bearer ${{ secrets.bad }}")]);
        let refusal = step().fill(&mut map).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::ControlCharacter {
                header: "authorization".into(),
                name: "bad".into()
            }
        );
        assert!(!refusal.remedy().contains("injected") && !refusal.attempt().contains("injected"));
        for bad in ["\0", "\t", "\x7f", "\n", "\r", "a\x1bb"] {
            let secrets = HeaderSecrets::new(&["s".into()], &secrets(&[("s", bad)]));
            let mut map = headers(&[("x", b"${{ secrets.s }}")]);
            assert!(
                matches!(secrets.fill(&mut map), Err(Refusal::ControlCharacter { .. })),
                "{bad:?}"
            );
        }
        // Non-ASCII text is fine in a header value (sent as its UTF-8 bytes).
        let secrets_ok = HeaderSecrets::new(&["s".into()], &secrets(&[("s", "clé")]));
        let mut map = headers(&[("x", b"${{ secrets.s }}")]);
        secrets_ok.fill(&mut map).unwrap();
        assert_eq!(map["x"].as_bytes(), "clé".as_bytes());
    }

    /// Work and memory are bounded whatever the plugin sends: a 32 KiB value of `${{`,
    /// of `${{ }}` pairs, or of placeholders, and at most 8 values of at most 8 KiB.
    #[test]
    fn huge_header_values_are_bounded_work() {
        let long = "v".repeat(MAX_VALUE_BYTES);
        let step = HeaderSecrets::new(
            &["k".into(), "long".into(), "longer".into()],
            &secrets(&[("k", "tok"), ("long", &long), ("longer", &format!("{long}v"))]),
        );
        let started = std::time::Instant::now();
        for junk in ["${{", "${{ }}", "${{ secrets. }}", "}}${{", "$"] {
            let value = junk.repeat((32 << 10) / junk.len());
            let mut map = headers(&[("x", value.as_bytes())]);
            assert_eq!(step.fill(&mut map).unwrap().len(), 0, "{junk}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Placeholders over the cap, in one value or across headers: refused.
        let many = "${{ secrets.k }}".repeat(2000);
        let mut map = headers(&[("x", many.as_bytes())]);
        assert_eq!(step.fill(&mut map), Err(Refusal::TooMany));
        let eight = "${{ secrets.k }}".repeat(4);
        let mut map = headers(&[("a", eight.as_bytes()), ("b", eight.as_bytes())]);
        assert_eq!(step.fill(&mut map).unwrap().len(), 8);
        let mut map = headers(&[
            ("a", eight.as_bytes()),
            ("b", eight.as_bytes()),
            ("c", b"${{ secrets.k }}"),
        ]);
        assert_eq!(step.fill(&mut map), Err(Refusal::TooMany));
        // Eight of the longest value are fine; one byte more is refused.
        let longs = "${{ secrets.long }}".repeat(8);
        let mut map = headers(&[("x", longs.as_bytes())]);
        step.fill(&mut map).unwrap();
        assert_eq!(map["x"].len(), 8 * MAX_VALUE_BYTES);
        let mut map = headers(&[("x", b"${{ secrets.longer }}")]);
        assert!(matches!(step.fill(&mut map), Err(Refusal::TooLong { .. })));
    }

    #[test]
    fn debug_shows_names_never_values() {
        let shown = format!("{:?}", step());
        assert!(shown.contains("\"k\"") && shown.contains("\"plain\""), "{shown}");
        assert!(!shown.contains("tok-123") && !shown.contains("plain-value"), "{shown}");
    }
}
