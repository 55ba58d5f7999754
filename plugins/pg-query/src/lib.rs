//! `pg-query`: runs one SQL statement from the config in a READ ONLY transaction with
//! a statement timeout, rolls it back, and judges the first column of the first row
//! (`measure: value`) or the number of rows (`measure: rows`) with Nagios ranges.
//!
//! Why it cannot write: the statement goes through the extended query protocol, which
//! takes exactly one statement (`COMMIT; DELETE …` is refused at Parse, before anything
//! runs); it runs inside `BEGIN READ ONLY` after a first `SELECT`, so PostgreSQL
//! refuses any write (SQLSTATE 25006) and any `SET TRANSACTION READ WRITE` (25001);
//! and the transaction is rolled back whatever happened. A procedure cannot `COMMIT`
//! inside it either. What READ ONLY does not cover is a function that opens a
//! connection of its own (dblink, postgres_fdw): give the check a role that cannot
//! write.

mod identifiers;

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::postgres::{Failure, QueryResult, Server, ServerError, Session};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Level, Report, Status, config, host, log};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "pg-query config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "postgres://user[:password]@host[:port]/database[?sslmode=MODE]; port defaults to 5432"},
    "sslmode": {"type": "string", "enum": ["disable", "prefer", "require", "verify-ca", "verify-full"], "description": "TLS as libpq's sslmode (default prefer; or ?sslmode= in the url). Unlike libpq, every mode that uses TLS has the host verify the certificate with the step's trust (`tls:`); verify-ca and verify-full also fail when the step turns verification off"},
    "password_secret": {"type": "string", "description": "Name of a granted secret holding the password (overrides a password in the URL)"},
    "query": {"type": "string", "description": "One SQL statement (no `;`-separated second one: the server refuses it). Runs in a READ ONLY transaction that is rolled back: a write fails with SQLSTATE 25006 and the check is UNKNOWN. Write values as $1, $2 (see `params`) and names as :\"name\" (see `identifiers`), never by pasting text into the SQL"},
    "params": {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}, "description": "Values bound to $1, $2, … (sent as text beside the SQL, never spliced into it)"},
    "identifiers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Table or column names put into the query where it says :\"NAME\" (outside string literals), double-quoted; each must be letters, digits and _ (optionally schema.name), so a runbook input cannot become SQL"},
    "measure": {"type": "string", "enum": ["value", "rows"], "default": "value", "description": "value: the first column of the first row, a number (or a boolean: 1/0); rows: the number of rows"},
    "warn": {"type": "string", "description": "Nagios range for the measured number that raises WARNING, e.g. \"0\" (any value above zero)"},
    "crit": {"type": "string", "description": "Nagios range for the measured number that raises CRITICAL"},
    "label": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "description": "Name of the metric (default: value, or rows with measure: rows)"},
    "timeout_ms": {"type": "integer", "minimum": 1, "description": "statement_timeout; default and maximum: the step's remaining time less a fifth"},
    "samples": {"type": "integer", "minimum": 0, "maximum": 50, "default": 5, "description": "How many rows to show in the details"},
    "max_rows": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100, "description": "How many rows the `rows` output carries (at most 48 KiB of them)"},
    "max_value_chars": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 200, "description": "Longer values are cut to this many characters (with …) in details and outputs"}
  },
  "required": ["url", "query"],
  "additionalProperties": false
}"#;

/// The `rows` output stops growing past this many bytes of JSON (the host keeps 64 KiB
/// of outputs per result).
const ROWS_OUTPUT_BYTES: usize = 48 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    sslmode: Option<String>,
    password_secret: Option<String>,
    query: String,
    #[serde(default)]
    params: Vec<Value>,
    #[serde(default)]
    identifiers: BTreeMap<String, String>,
    #[serde(default)]
    measure: Measure,
    warn: Option<String>,
    crit: Option<String>,
    label: Option<String>,
    timeout_ms: Option<u64>,
    #[serde(default = "default_samples")]
    samples: usize,
    #[serde(default = "default_max_rows")]
    max_rows: usize,
    #[serde(default = "default_max_value_chars")]
    max_value_chars: usize,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Measure {
    #[default]
    Value,
    Rows,
}

fn default_samples() -> usize {
    5
}
fn default_max_rows() -> usize {
    100
}
fn default_max_value_chars() -> usize {
    200
}

struct PgQuery;

impl Guest for PgQuery {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "pg-query",
            "Runs one read-only SQL statement (PostgreSQL) and judges its value or its row count",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(match Check::from_config(&config) {
            Ok(check) => check.run(),
            Err(message) => Report::unknown(message),
        })
    }
}

struct Check {
    server: Server,
    sql: String,
    params: Vec<Option<String>>,
    measure: Measure,
    thresholds: Thresholds,
    label: String,
    statement_timeout_ms: u64,
    timeout_capped: bool,
    samples: usize,
    max_rows: usize,
    max_value_chars: usize,
}

impl Check {
    fn from_config(json: &str) -> Result<Check, String> {
        let config: Config = config::parse(json)?;
        let server = Server::from_config(
            &config.url,
            config.sslmode.as_deref(),
            config.password_secret.as_deref(),
        )?;
        if config.query.trim().is_empty() {
            return Err(config::field_error("query", "is empty: give one SQL statement"));
        }
        let sql = identifiers::substitute(&config.query, &config.identifiers)?;
        let params = config
            .params
            .iter()
            .map(|value| match value {
                Value::Null => None,
                Value::String(text) => Some(text.clone()),
                other => Some(other.to_string()),
            })
            .collect();
        // Leave the plugin time to report after the server gives up on the statement.
        let budget = host::remaining_ms().saturating_sub(host::remaining_ms() / 5).max(1);
        let statement_timeout_ms = config.timeout_ms.map_or(budget, |ms| ms.min(budget));
        Ok(Check {
            server,
            sql,
            params,
            measure: config.measure,
            thresholds: Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?,
            label: config.label.unwrap_or_else(|| match config.measure {
                Measure::Value => "value".into(),
                Measure::Rows => "rows".into(),
            }),
            statement_timeout_ms,
            timeout_capped: config.timeout_ms.is_some_and(|ms| ms > budget),
            samples: config.samples,
            max_rows: config.max_rows,
            max_value_chars: config.max_value_chars,
        })
    }

    fn run(&self) -> Report {
        let (mut session, tls) = match self.server.connect("runbox pg-query") {
            Ok(connected) => connected,
            Err(failure) => return self.failed(failure),
        };
        log(
            Level::Debug,
            &format!(
                "connected ({}, sslmode={})",
                if tls { "TLS" } else { "plaintext" },
                self.server.sslmode
            ),
        );
        let result = self.query(&mut session);
        // Whatever happened, nothing is committed: the transaction is read-only and rolled back.
        let _ = session.query("ROLLBACK");
        session.terminate();
        let mut report = match result {
            Ok(result) => self.judge(&result),
            Err(failure) => self.failed(failure),
        };
        if let Some(note) = self.server.plaintext_note(tls) {
            report = report.detail(note);
        }
        if self.timeout_capped {
            report = report.detail(format!(
                "timeout_ms lowered to {} ms, below the step's deadline",
                self.statement_timeout_ms
            ));
        }
        report
    }

    fn query(&self, session: &mut Session) -> Result<QueryResult, Failure> {
        // The `SELECT 1` takes the transaction's first snapshot: after it, PostgreSQL
        // refuses `SET TRANSACTION READ WRITE` ("must be called before any query").
        session.query(&format!(
            "BEGIN TRANSACTION READ ONLY; SET LOCAL statement_timeout = {}; SELECT 1",
            self.statement_timeout_ms
        ))?;
        let params: Vec<Option<&str>> = self.params.iter().map(Option::as_deref).collect();
        let keep = self.max_rows.max(self.samples).max(1);
        session.query_one(&self.sql, &params, keep)
    }

    fn judge(&self, result: &QueryResult) -> Report {
        let count = result.row_count;
        let first = result.rows.first().and_then(|row| row.first()).cloned().flatten();
        let value = match self.measure {
            Measure::Rows => count as f64,
            Measure::Value => match scalar(result) {
                Ok(value) => value,
                Err(why) => return self.describe(Report::unknown(why), result).output("row_count", &count),
            },
        };
        log(Level::Debug, &format!("{} = {value} ({count} rows)", self.label));
        let summary = match self.measure {
            Measure::Value => format!("{} = {} ({})", self.label, number_text(value), rows_text(count)),
            Measure::Rows => format!("{} = {}", self.label, rows_text(count)),
        };
        let report = Report::new(Status::Ok, summary)
            .judged_metric(&self.label, value, "", &self.thresholds)
            .output("value", &json_number(value))
            .output("row_count", &count)
            .output("first_value", &first.map(|text| self.cut(&text)));
        self.describe(report, result)
    }

    /// Adds the sample rows to the details and the `rows` output.
    fn describe(&self, mut report: Report, result: &QueryResult) -> Report {
        let names = column_names(result);
        for row in result.rows.iter().take(self.samples) {
            let cells: Vec<String> = names
                .iter()
                .zip(row)
                .map(|(name, value)| match value {
                    Some(text) => format!("{name}={}", self.cut(text)),
                    None => format!("{name}=NULL"),
                })
                .collect();
            report = report.detail(cells.join(", "));
        }
        if result.row_count > self.samples.min(result.rows.len()) as u64 && self.samples > 0 {
            report = report.detail(format!("… {} rows in all", result.row_count));
        }
        let mut rows = Vec::new();
        let mut bytes = 2;
        for row in result.rows.iter().take(self.max_rows) {
            let object: Map<String, Value> = names
                .iter()
                .zip(row)
                .map(|(name, value)| {
                    (
                        name.clone(),
                        value.as_ref().map_or(Value::Null, |text| Value::String(self.cut(text))),
                    )
                })
                .collect();
            let object = Value::Object(object);
            bytes += object.to_string().len() + 1;
            if bytes > ROWS_OUTPUT_BYTES {
                break;
            }
            rows.push(object);
        }
        if (rows.len() as u64) < result.row_count {
            report = report.output("rows_truncated", &true);
        }
        report.output("rows", &rows)
    }

    fn cut(&self, text: &str) -> String {
        match text.char_indices().nth(self.max_value_chars) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.to_string(),
        }
    }

    fn failed(&self, failure: Failure) -> Report {
        match self.server.unreachable(failure) {
            Ok(report) => report,
            Err(error) => self.refused(&error).output("sqlstate", &error.code),
        }
    }

    /// An error PostgreSQL gave about the statement: CRITICAL when the server is in
    /// trouble (timeout, shutting down, out of resources), UNKNOWN when the query is
    /// wrong or was refused (a write, a second statement): the check could not measure.
    fn refused(&self, error: &ServerError) -> Report {
        let code = error.code.as_str();
        match code {
            "57014" => Report::critical(format!(
                "the query was cancelled after {} ms (statement_timeout): {error}",
                self.statement_timeout_ms
            )),
            "25006" | "25001" => Report::unknown(format!(
                "config field `query`: refused, pg-query runs it in a READ ONLY transaction and nothing was changed: {error}"
            )),
            "42601" if error.message.contains("multiple commands") => Report::unknown(format!(
                "config field `query`: refused, one statement only (the extended protocol runs none of a text with two): {error}"
            )),
            "3D000" => Report::unknown(format!("config field `url`: {error}")),
            "08P01" if error.message.contains("parameters") => {
                Report::unknown(format!("config field `params`: {error}"))
            }
            code if code.starts_with("42") && !self.params.is_empty() => Report::unknown(format!(
                "config field `query` (or a value in `params` it reads as a name): {error}"
            )),
            code if code.starts_with("42") => Report::unknown(format!("config field `query`: {error}")),
            code if code.starts_with("22") && !self.params.is_empty() => {
                Report::unknown(format!("config field `params` (or `query`): {error}"))
            }
            code if code.starts_with("57") || code.starts_with("08") || code.starts_with("53") => {
                Report::critical(format!("{}: server unavailable: {error}", self.server.display))
            }
            _ => Report::unknown(format!("query failed: {error}")),
        }
    }
}

/// The first column of the first row as a number (booleans as 1/0).
fn scalar(result: &QueryResult) -> Result<f64, String> {
    let Some(row) = result.rows.first() else {
        return Err("the query returned no rows, and `measure: value` needs one (use measure: rows, or an aggregate such as count(*))".into());
    };
    let column = result.columns.first();
    match row.first() {
        None => Err("the query returned no columns".into()),
        Some(None) => Err("the first column of the first row is NULL (wrap it in COALESCE(…, 0) if none means zero)".into()),
        Some(Some(text)) => match (column.map(|c| c.type_oid), text.as_str()) {
            (Some(BOOL_OID), "t") => Ok(1.0),
            (Some(BOOL_OID), "f") => Ok(0.0),
            (_, text) => text.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                format!(
                    "the first column of the first row ({}) is {:?}, not a number: select a number, or use measure: rows",
                    column.map_or("?", |c| c.name.as_str()),
                    text.chars().take(80).collect::<String>()
                )
            }),
        },
    }
}

const BOOL_OID: u32 = 16;

/// Column names for the row objects, a repeated name getting `_2`, `_3`.
fn column_names(result: &QueryResult) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for column in &result.columns {
        let mut name = column.name.clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{}_{n}", column.name);
        }
        names.push(name);
    }
    names
}

fn json_number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9e15 {
        Value::from(value as i64)
    } else {
        Value::from(value)
    }
}

fn number_text(value: f64) -> String {
    json_number(value).to_string()
}

fn rows_text(count: u64) -> String {
    if count == 1 {
        "1 row".into()
    } else {
        format!("{count} rows")
    }
}

runbox_plugin_sdk::export_check!(PgQuery);

#[cfg(test)]
mod tests {
    use super::*;
    use runbox_plugin_sdk::postgres::Column;

    fn result(columns: &[(&str, u32)], rows: &[&[Option<&str>]]) -> QueryResult {
        QueryResult {
            columns: columns
                .iter()
                .map(|(name, oid)| Column {
                    name: name.to_string(),
                    type_oid: *oid,
                })
                .collect(),
            rows: rows
                .iter()
                .map(|row| row.iter().map(|v| v.map(str::to_string)).collect())
                .collect(),
            row_count: rows.len() as u64,
            tag: String::new(),
        }
    }

    #[test]
    fn the_scalar_is_the_first_column_of_the_first_row() {
        assert_eq!(scalar(&result(&[("n", 20)], &[&[Some("42")], &[Some("1")]])), Ok(42.0));
        assert_eq!(scalar(&result(&[("x", 1700)], &[&[Some("1.50")]])), Ok(1.5));
        assert_eq!(scalar(&result(&[("b", 16)], &[&[Some("t")]])), Ok(1.0));
        assert_eq!(scalar(&result(&[("b", 16)], &[&[Some("f")]])), Ok(0.0));
        for (bad, why) in [
            (result(&[("n", 20)], &[]), "returned no rows"),
            (result(&[("n", 20)], &[&[None]]), "is NULL"),
            (
                result(&[("name", 25)], &[&[Some("abc")]]),
                "(name) is \"abc\", not a number",
            ),
            (result(&[("x", 1700)], &[&[Some("NaN")]]), "not a number"),
        ] {
            let err = scalar(&bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn repeated_column_names_stay_apart_and_numbers_print_plainly() {
        let r = result(&[("?column?", 23), ("?column?", 23), ("a", 25)], &[]);
        assert_eq!(column_names(&r), ["?column?", "?column?_2", "a"]);
        assert_eq!(number_text(3.0), "3");
        assert_eq!(number_text(2.5), "2.5");
        assert_eq!(rows_text(1), "1 row");
    }
}
