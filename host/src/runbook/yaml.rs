//! YAML parsed into a tree that remembers where each node is, so every problem found
//! later (by serde or by validation) can be reported with its line.
//!
//! Scalars follow the YAML 1.2 core schema: plain `true`/`false`, `null`/`~`/empty,
//! integers and floats become those types; anything quoted stays a string.

use serde_json::{Map, Number, Value};
use std::collections::{BTreeMap, HashMap};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A node and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Line of the node's first character.
    pub line: usize,
    /// The node.
    pub value: NodeValue,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with its keys (as strings) in document order.
    Map(Vec<(String, Node)>),
}

/// A syntax or structure error, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Most nodes a document may expand to. Aliases copy the anchored node, so a small file
/// can otherwise expand exponentially ("billion laughs"); a real runbook has hundreds.
pub const MAX_NODES: usize = 100_000;

/// Deepest nesting of sequences and mappings a document may have (a runbook needs ~6).
pub const MAX_DEPTH: usize = 64;

/// Parses one YAML document.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    // yaml-rust2 puts the end of a text without a final line break on the line after the
    // last, and with it an empty value or an error there: report the last line instead.
    let last_line = 1 + text.matches(['\n', '\r']).count() - text.matches("\r\n").count();
    let mut builder = Builder {
        last_line,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|err| YamlError {
        line: err.marker().line().min(last_line),
        message: err.info().to_string(),
    })?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root.unwrap_or(Node {
        line: 1,
        value: NodeValue::Null,
    }))
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<String>, usize)>,
    pending_key: Vec<Option<(String, usize)>>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<YamlError>,
    /// Nodes materialised so far, aliases counted at their expanded size.
    nodes: usize,
    /// Line of the text's last line (1-based; line breaks are LF, CRLF or CR, as in YAML).
    last_line: usize,
}

impl Node {
    /// Number of nodes in this subtree.
    fn size(&self) -> usize {
        1 + match &self.value {
            NodeValue::Seq(items) => items.iter().map(Node::size).sum(),
            NodeValue::Map(entries) => entries.iter().map(|(_, node)| node.size()).sum(),
            _ => 0,
        }
    }
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, _, _)) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut parent.value {
            NodeValue::Seq(items) => items.push(node),
            NodeValue::Map(entries) => {
                let slot = self.pending_key.last_mut().expect("a map has a key slot");
                match slot.take() {
                    None => {
                        let key = match &node.value {
                            NodeValue::String(text) => text.clone(),
                            NodeValue::Number(n) => n.to_string(),
                            NodeValue::Bool(b) => b.to_string(),
                            NodeValue::Null => "null".to_string(),
                            _ => {
                                self.error.get_or_insert(YamlError {
                                    line: node.line,
                                    message: "a mapping key must be a plain value".into(),
                                });
                                String::new()
                            }
                        };
                        if entries.iter().any(|(existing, _)| *existing == key) {
                            self.error.get_or_insert(YamlError {
                                line: node.line,
                                message: format!("duplicate key `{key}`"),
                            });
                        }
                        *slot = Some((key, node.line));
                    }
                    Some((key, _)) => entries.push((key, node)),
                }
            }
            _ => unreachable!("only collections are on the stack"),
        }
    }
}

impl Builder {
    /// Counts `added` nodes; false (with the error recorded) past [`MAX_NODES`].
    fn count(&mut self, added: usize, line: usize) -> bool {
        self.nodes = self.nodes.saturating_add(added);
        if self.nodes > MAX_NODES {
            self.error.get_or_insert(YamlError {
                line,
                message: format!("the document expands to more than {MAX_NODES} nodes (through aliases?)"),
            });
            return false;
        }
        true
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line().min(self.last_line);
        // After an error, the rest of the document is not built (it may be huge).
        if self.error.is_some() {
            return;
        }
        let opens = matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
        if opens && self.stack.len() >= MAX_DEPTH {
            self.error = Some(YamlError {
                line,
                message: format!("nested more than {MAX_DEPTH} levels deep"),
            });
            return;
        }
        if (matches!(event, Event::Scalar(..)) || opens) && !self.count(1, line) {
            return;
        }
        match event {
            Event::Scalar(text, style, anchor, _) => {
                // An empty value is marked where the next token starts (the next line, or
                // past the end of the text): a mapping's empty value is on its key's line.
                let line = match self.pending_key.last() {
                    Some(Some((_, key_line))) if text.is_empty() && style == TScalarStyle::Plain => *key_line,
                    _ => line,
                };
                let value = if style == TScalarStyle::Plain {
                    plain_scalar(&text)
                } else {
                    NodeValue::String(text)
                };
                self.push_value(Node { line, value }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push((
                    Node {
                        line,
                        value: NodeValue::Seq(Vec::new()),
                    },
                    None,
                    anchor,
                ));
                self.pending_key.push(None);
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push((
                    Node {
                        line,
                        value: NodeValue::Map(Vec::new()),
                    },
                    None,
                    anchor,
                ));
                self.pending_key.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, _, anchor) = self.stack.pop().expect("balanced events");
                self.pending_key.pop();
                self.push_value(node, anchor);
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor).map(Node::size) {
                Some(size) => {
                    if self.count(size, line) {
                        let node = self.anchors[&anchor].clone();
                        self.push_value(Node { line, ..node }, 0);
                    }
                }
                None => {
                    self.error.get_or_insert(YamlError {
                        line,
                        message: "alias to an unknown anchor".into(),
                    });
                }
            },
            _ => {}
        }
    }
}

fn plain_scalar(text: &str) -> NodeValue {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => NodeValue::Null,
        "true" | "True" | "TRUE" => NodeValue::Bool(true),
        "false" | "False" | "FALSE" => NodeValue::Bool(false),
        _ => {
            if let Ok(int) = text.parse::<i64>() {
                NodeValue::Number(int.into())
            } else if let Some(float) = text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(Number::from_f64)
                && text.chars().any(|c| c.is_ascii_digit())
            {
                NodeValue::Number(float)
            } else {
                NodeValue::String(text.to_string())
            }
        }
    }
}

impl Node {
    /// The node as JSON (what serde deserializes from).
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Number(n) => Value::Number(n.clone()),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }

    /// Line of every node by path (`steps[2].with.url`; the root is `""`).
    pub fn lines(&self) -> BTreeMap<String, usize> {
        let mut lines = BTreeMap::new();
        self.collect_lines(String::new(), &mut lines);
        lines
    }

    fn collect_lines(&self, path: String, lines: &mut BTreeMap<String, usize>) {
        match &self.value {
            NodeValue::Seq(items) => {
                for (index, item) in items.iter().enumerate() {
                    item.collect_lines(format!("{path}[{index}]"), lines);
                }
            }
            NodeValue::Map(entries) => {
                for (key, value) in entries {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    value.collect_lines(child, lines);
                }
            }
            _ => {}
        }
        lines.insert(path, self.line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_into_json_with_lines() {
        let text = "name: demo\nsteps:\n  - id: a\n    with:\n      port: 6379\n      ratio: 0.5\n      quoted: '10'\n      flag: true\n      none: ~\n  - id: b\n";
        let node = parse(text).unwrap();
        assert_eq!(
            node.to_json(),
            json!({"name": "demo", "steps": [{"id": "a", "with": {"port": 6379, "ratio": 0.5, "quoted": "10", "flag": true, "none": null}}, {"id": "b"}]})
        );
        let lines = node.lines();
        assert_eq!(lines["steps[0]"], 3);
        assert_eq!(lines["steps[0].with.port"], 5);
        assert_eq!(lines["steps[1].id"], 10);
    }

    #[test]
    fn anchors_and_aliases_are_copied() {
        let node = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(node.to_json(), json!({"base": {"x": 1}, "other": {"x": 1}}));
    }

    #[test]
    fn alias_expansion_is_bounded() {
        // Nine levels of nine aliases each would expand to 9^9 (387 million) nodes.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = format!("*a{}", level - 1);
            let items = [prev.as_str(); 9].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let err = parse(&text).unwrap_err();
        assert!(
            err.message
                .contains("expands to more than 100000 nodes (through aliases?)"),
            "{err:?}"
        );
        assert!(err.line >= 5 && err.line <= 7, "{err:?}");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("a: {}{}", "[".repeat(MAX_DEPTH + 10), "]".repeat(MAX_DEPTH + 10));
        let err = parse(&deep).unwrap_err();
        assert_eq!(err.message, "nested more than 64 levels deep");
        let fine = format!("a: {}{}", "[".repeat(MAX_DEPTH - 2), "]".repeat(MAX_DEPTH - 2));
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn empty_values_and_errors_at_the_end_are_on_lines_of_the_text() {
        // Found by fuzzing (fuzz/fuzz_targets/runbook.rs): `b` was on line 3 of 2, and an
        // empty value was on the line after its key.
        assert_eq!(parse("x: y\nb:").unwrap().lines()["b"], 2);
        assert_eq!(parse("x: y\r\nb:").unwrap().lines()["b"], 2);
        assert_eq!(parse("x: y\nb:\n").unwrap().lines()["b"], 2);
        let lines = parse("a:\nb: 1").unwrap().lines();
        assert_eq!((lines["a"], lines["b"]), (1, 2));
        assert_eq!(parse("a:\n  - x\n  -").unwrap().lines()["a[1]"], 3);
        assert_eq!(parse("a: [").unwrap_err().line, 1);
    }

    #[test]
    fn errors_carry_the_line() {
        let err = parse("name: demo\nsteps:\n  - id: a\n   bad: [\n").unwrap_err();
        assert!(err.line >= 4, "{err:?}");
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            err,
            YamlError {
                line: 3,
                message: "duplicate key `a`".into()
            }
        );
    }
}
