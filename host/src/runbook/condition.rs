//! `when` conditions: a small expression language over earlier steps' results and
//! the runbook's inputs.
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | compare
//! compare := operand ( ("==" | "!=" | "<" | "<=" | ">" | ">=") operand )?
//! operand := "(" expr ")" | 'string' | "string" | number | true | false | path
//! path    := steps.ID.status | steps.ID.summary | steps.ID.attempts
//!          | steps.ID.metrics.NAME | inputs.NAME   (NAME may contain `.` and `:`)
//! ```
//!
//! A status is one of `ok`, `warning`, `critical`, `unknown`, `skipped`. A missing value
//! (a metric the step did not report) equals nothing and orders with nothing. A value on
//! its own is true unless it is missing, `false`, `0`, `''`, an empty list or an empty
//! object (so `steps.find.outputs.job_ids` reads "there are some").

use serde_json::Value;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Literal(Value),
    /// A path to a value.
    Path(Vec<String>),
    /// `!e`
    Not(Box<Expr>),
    /// `a && b`
    And(Box<Expr>, Box<Expr>),
    /// `a || b`
    Or(Box<Expr>, Box<Expr>),
    /// `a OP b`
    Compare(Box<Expr>, Op, Box<Expr>),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Num(f64),
    Ident(String),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => (tokens.push(Token::Open), i += 1).1,
            ')' => (tokens.push(Token::Close), i += 1).1,
            '&' if next == Some('&') => (tokens.push(Token::And), i += 2).1,
            '|' if next == Some('|') => (tokens.push(Token::Or), i += 2).1,
            '=' if next == Some('=') => (tokens.push(Token::Op(Op::Eq)), i += 2).1,
            '!' if next == Some('=') => (tokens.push(Token::Op(Op::Ne)), i += 2).1,
            '!' => (tokens.push(Token::Not), i += 1).1,
            '<' if next == Some('=') => (tokens.push(Token::Op(Op::Le)), i += 2).1,
            '<' => (tokens.push(Token::Op(Op::Lt)), i += 1).1,
            '>' if next == Some('=') => (tokens.push(Token::Op(Op::Ge)), i += 2).1,
            '>' => (tokens.push(Token::Op(Op::Gt)), i += 1).1,
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| format!("unclosed string at column {}", i + 1))?;
                tokens.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            c if c.is_ascii_digit() || (c == '-' && next.is_some_and(|d| d.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == 'e' || chars[i] == '_')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().filter(|&&d| d != '_').collect();
                tokens.push(Token::Num(
                    text.parse().map_err(|_| format!("`{text}` is not a number"))?,
                ));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-' | '.' | ':'))
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected `{other}` at column {}", i + 1)),
        }
    }
    Ok(tokens)
}

/// Parses a condition; the error says what is wrong and where.
pub fn parse(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut parser = ExprParser { tokens, at: 0 };
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(format!(
            "unexpected `{}` after a complete condition",
            describe(&parser.tokens[parser.at])
        ));
    }
    Ok(expr)
}

fn describe(token: &Token) -> String {
    match token {
        Token::Str(s) => format!("'{s}'"),
        Token::Num(n) => n.to_string(),
        Token::Ident(i) => i.clone(),
        Token::Op(op) => format!("{op:?}"),
        Token::And => "&&".into(),
        Token::Or => "||".into(),
        Token::Not => "!".into(),
        Token::Open => "(".into(),
        Token::Close => ")".into(),
    }
}

struct ExprParser {
    tokens: Vec<Token>,
    at: usize,
}

impl ExprParser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::Not) {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let left = self.operand()?;
        if let Some(Token::Op(op)) = self.peek().cloned() {
            self.at += 1;
            return Ok(Expr::Compare(Box::new(left), op, Box::new(self.operand()?)));
        }
        Ok(left)
    }

    fn operand(&mut self) -> Result<Expr, String> {
        let token = self
            .peek()
            .cloned()
            .ok_or("the condition ends where a value was expected")?;
        self.at += 1;
        Ok(match token {
            Token::Open => {
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("missing `)`".into());
                }
                self.at += 1;
                inner
            }
            Token::Str(s) => Expr::Literal(Value::String(s)),
            Token::Num(n) => Expr::Literal(
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
            ),
            Token::Ident(word) if word == "true" => Expr::Literal(Value::Bool(true)),
            Token::Ident(word) if word == "false" => Expr::Literal(Value::Bool(false)),
            Token::Ident(path) => Expr::Path(path.split('.').map(String::from).collect()),
            other => {
                return Err(format!("unexpected `{}` where a value was expected", describe(&other)));
            }
        })
    }
}

impl Expr {
    /// Every path the condition reads.
    pub fn paths(&self) -> Vec<&[String]> {
        match self {
            Expr::Literal(_) => vec![],
            Expr::Path(path) => vec![path.as_slice()],
            Expr::Not(e) => e.paths(),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(a, _, b) => [a.paths(), b.paths()].concat(),
        }
    }

    /// Evaluates to true or false; `lookup` gives a path's value (`None`: missing).
    pub fn eval(&self, lookup: &dyn Fn(&[String]) -> Option<Value>) -> bool {
        truthy(&self.value(lookup))
    }

    fn value(&self, lookup: &dyn Fn(&[String]) -> Option<Value>) -> Option<Value> {
        match self {
            Expr::Literal(value) => Some(value.clone()),
            Expr::Path(path) => lookup(path),
            Expr::Not(e) => Some(Value::Bool(!e.eval(lookup))),
            Expr::And(a, b) => Some(Value::Bool(a.eval(lookup) && b.eval(lookup))),
            Expr::Or(a, b) => Some(Value::Bool(a.eval(lookup) || b.eval(lookup))),
            Expr::Compare(a, op, b) => Some(Value::Bool(compare(a.value(lookup), *op, b.value(lookup)))),
        }
    }
}

fn truthy(value: &Option<Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        // An output that is an empty list (no failed jobs) is false: `when:
        // steps.find.outputs.job_ids` reads "when there are any".
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn compare(a: Option<Value>, op: Op, b: Option<Value>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        // A missing value equals nothing and orders with nothing.
        return op == Op::Ne;
    };
    if let (Some(x), Some(y)) = (as_number(&a), as_number(&b))
        && (matches!(a, Value::Number(_)) || matches!(b, Value::Number(_)))
    {
        return match op {
            Op::Eq => x == y,
            Op::Ne => x != y,
            Op::Lt => x < y,
            Op::Le => x <= y,
            Op::Gt => x > y,
            Op::Ge => x >= y,
        };
    }
    match (op, &a, &b) {
        (Op::Eq, _, _) => a == b,
        (Op::Ne, _, _) => a != b,
        (_, Value::String(x), Value::String(y)) => match op {
            Op::Lt => x < y,
            Op::Le => x <= y,
            Op::Gt => x > y,
            _ => x >= y,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup(path: &[String]) -> Option<Value> {
        match path.join(".").as_str() {
            "steps.redis.status" => Some(json!("critical")),
            "steps.backlog.metrics.depth" => Some(json!(1500)),
            "steps.backlog.metrics.queue:failed" => Some(json!(3)),
            "steps.backlog.attempts" => Some(json!(2)),
            "inputs.env" => Some(json!("prod")),
            "inputs.limit" => Some(json!("1000")),
            "steps.find.outputs.none" => Some(json!([])),
            "steps.find.outputs.some" => Some(json!(["j1"])),
            "steps.find.outputs.ids" => Some(json!({})),
            _ => None,
        }
    }

    #[test]
    fn evaluates_conditions() {
        let table: &[(&str, bool)] = &[
            ("steps.redis.status == 'critical'", true),
            ("steps.redis.status != \"critical\"", false),
            ("steps.backlog.metrics.depth > 1000", true),
            ("steps.backlog.metrics.depth > inputs.limit", true),
            ("steps.backlog.metrics.depth <= 1_500", true),
            (
                "steps.redis.status == 'critical' && steps.backlog.metrics.depth < 1000",
                false,
            ),
            ("steps.redis.status == 'ok' || (inputs.env == 'prod' && !false)", true),
            ("!(steps.backlog.attempts >= 2)", false),
            ("steps.backlog.metrics.missing > 0", false),
            ("steps.backlog.metrics.missing < 0", false),
            ("steps.backlog.metrics.missing != 0", true),
            ("true", true),
            ("-1 < 0", true),
            ("steps.backlog.metrics.queue:failed > 2", true),
            ("steps.find.outputs.none", false),
            ("steps.find.outputs.some", true),
            ("!steps.find.outputs.none && steps.find.outputs.ids", false),
        ];
        for (text, expected) in table {
            let expr = parse(text).unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(expr.eval(&lookup), *expected, "{text}");
        }
    }

    #[test]
    fn reports_syntax_errors() {
        for (text, expected) in [
            ("steps.a.status == 'ok", "unclosed string"),
            ("steps.a.status = 'ok'", "unexpected `=`"),
            ("(steps.a.status == 'ok'", "missing `)`"),
            ("steps.a.status ==", "ends where a value was expected"),
            ("a b", "unexpected `b` after a complete condition"),
            ("", "ends where a value was expected"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn lists_the_paths_it_reads() {
        let expr = parse("steps.a.status == 'ok' && inputs.x > steps.b.metrics.m").unwrap();
        let paths: Vec<String> = expr.paths().iter().map(|p| p.join(".")).collect();
        assert_eq!(paths, ["steps.a.status", "inputs.x", "steps.b.metrics.m"]);
    }
}
