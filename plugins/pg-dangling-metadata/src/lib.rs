//! `pg-dangling-metadata`: after a retention job, counts the rows that expired but were
//! never deleted (`deleted IS NULL AND expires < now()`), and how long ago the oldest of
//! them expired. Runs in a READ ONLY transaction with a statement timeout below the
//! step's deadline, so it can never change data. TLS follows libpq's `sslmode`, except
//! that the host verifies the certificate in every mode that uses TLS.

mod sql;

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::postgres::{Failure, Server, Session};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Level, Report, Status, config, host, log};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "pg-dangling-metadata config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "postgres://user[:password]@host[:port]/database[?sslmode=MODE]; port defaults to 5432"},
    "sslmode": {"type": "string", "enum": ["disable", "prefer", "require", "verify-ca", "verify-full"], "description": "TLS as libpq's sslmode (default prefer; or ?sslmode= in the url). Unlike libpq, every mode that uses TLS has the host verify the certificate with the step's trust (`tls:`); verify-ca and verify-full also fail when the step turns verification off"},
    "password_secret": {"type": "string", "description": "Name of a granted secret holding the password (overrides a password in the URL)"},
    "schema": {"type": "string", "description": "Schema of the table (default: the search path)"},
    "table": {"type": "string", "default": "recordings"},
    "deleted_column": {"type": "string", "default": "deleted_at"},
    "expires_column": {"type": "string", "default": "expires_at"},
    "id_column": {"type": "string", "default": "id", "description": "Column whose values are listed as samples, if the table has it"},
    "where": {"type": "string", "description": "Extra SQL condition ANDed to the query, e.g. \"tenant_id = 42\"; a single expression, no `;`"},
    "warn": {"type": "string", "description": "Nagios range for the dangling count that raises WARNING, e.g. \"0\" (any row)"},
    "crit": {"type": "string", "description": "Nagios range for the dangling count that raises CRITICAL, e.g. \"1000\""},
    "age_warn": {"type": "string", "description": "Nagios range for oldest_age_s (seconds since the oldest dangling row expired)"},
    "age_crit": {"type": "string", "description": "Nagios range for oldest_age_s that raises CRITICAL"},
    "samples": {"type": "integer", "minimum": 0, "maximum": 50, "default": 5, "description": "How many sample ids to list"},
    "statement_timeout_ms": {"type": "integer", "minimum": 1, "description": "Statement timeout; default and maximum: the step's remaining time less a margin"}
  },
  "required": ["url"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    sslmode: Option<String>,
    password_secret: Option<String>,
    schema: Option<String>,
    #[serde(default = "default_table")]
    table: String,
    #[serde(default = "default_deleted")]
    deleted_column: String,
    #[serde(default = "default_expires")]
    expires_column: String,
    #[serde(default = "default_id")]
    id_column: String,
    #[serde(rename = "where")]
    condition: Option<String>,
    warn: Option<String>,
    crit: Option<String>,
    age_warn: Option<String>,
    age_crit: Option<String>,
    #[serde(default = "default_samples")]
    samples: u32,
    statement_timeout_ms: Option<u64>,
}

fn default_table() -> String {
    "recordings".into()
}
fn default_deleted() -> String {
    "deleted_at".into()
}
fn default_expires() -> String {
    "expires_at".into()
}
fn default_id() -> String {
    "id".into()
}
fn default_samples() -> u32 {
    5
}

struct PgDanglingMetadata;

impl Guest for PgDanglingMetadata {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "pg-dangling-metadata",
            "Counts rows past their expiry that were never deleted (PostgreSQL)",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(match Target::from_config(&config) {
            Ok(target) => target.check(),
            Err(message) => Report::unknown(message),
        })
    }
}

struct Target {
    server: Server,
    query: sql::DanglingQuery,
    count: Thresholds,
    age: Thresholds,
    samples: u32,
    statement_timeout_ms: u64,
}

impl Target {
    fn from_config(json: &str) -> Result<Target, String> {
        let config: Config = config::parse(json)?;
        let server = Server::from_config(
            &config.url,
            config.sslmode.as_deref(),
            config.password_secret.as_deref(),
        )?;
        let query = sql::DanglingQuery::new(
            config.schema.as_deref(),
            &config.table,
            &config.deleted_column,
            &config.expires_column,
            &config.id_column,
            config.condition.as_deref(),
        )?;
        // Leave the plugin time to report after the server gives up on the statement.
        let budget = host::remaining_ms().saturating_sub(host::remaining_ms() / 5).max(1);
        let statement_timeout_ms = config.statement_timeout_ms.map_or(budget, |ms| ms.min(budget));
        Ok(Target {
            server,
            query,
            count: Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?,
            age: Thresholds::parse(config.age_warn.as_deref(), config.age_crit.as_deref()).map_err(|err| {
                err.replace("field `warn`", "field `age_warn`")
                    .replace("field `crit`", "field `age_crit`")
            })?,
            samples: config.samples,
            statement_timeout_ms,
        })
    }

    fn check(&self) -> Report {
        let (mut session, tls) = match self.server.connect("runbox pg-dangling-metadata") {
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
        let result = self.measure(&mut session);
        // Whatever happened, nothing is committed: the transaction is read-only and rolled back.
        let _ = session.query("ROLLBACK");
        session.terminate();
        match result {
            Ok(report) => match self.server.plaintext_note(tls) {
                Some(note) => report.detail(note),
                None => report,
            },
            Err(failure) => self.failed(failure),
        }
    }

    fn measure(&self, session: &mut Session) -> Result<Report, Failure> {
        session.query(&format!(
            "BEGIN TRANSACTION READ ONLY; SET LOCAL statement_timeout = {}; SET LOCAL standard_conforming_strings = on",
            self.statement_timeout_ms
        ))?;
        let columns = session.query(&self.query.columns_sql())?;
        let columns: Vec<String> = columns
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect();
        if columns.is_empty() {
            return Ok(Report::unknown(format!(
                "table `{}` does not exist (or this user cannot see it)",
                self.query.table_name()
            )));
        }
        for (field, column) in [
            ("deleted_column", self.query.deleted()),
            ("expires_column", self.query.expires()),
        ] {
            if !columns.iter().any(|c| c == column) {
                return Ok(Report::unknown(format!(
                    "column `{column}` does not exist in table `{}` (config field `{field}`)",
                    self.query.table_name()
                )));
            }
        }
        let rows = session.query(&self.query.count_sql())?;
        let (count, oldest) = match rows.first().map(Vec::as_slice) {
            Some([Some(count), oldest]) => (
                count
                    .parse::<f64>()
                    .map_err(|_| Failure::Protocol(format!("count {count:?} is not a number")))?,
                oldest.as_deref().unwrap_or("0").parse::<f64>().unwrap_or(0.0),
            ),
            _ => return Err(Failure::Protocol("the count query returned no row".into())),
        };
        log(
            Level::Debug,
            &format!("{count} dangling rows, oldest expired {oldest:.0} s ago"),
        );

        let table = self.query.table_name();
        let summary = if count == 0.0 {
            format!("no dangling rows in {table}")
        } else {
            format!(
                "{count} dangling rows in {table}, the oldest expired {} ago",
                human_age(oldest)
            )
        };
        let mut report = Report::new(Status::Ok, summary)
            .judged_metric("dangling", count, "", &self.count)
            .judged_metric("oldest_age_s", oldest, "s", &self.age);
        if count > 0.0 && self.samples > 0 && columns.iter().any(|c| c == self.query.id()) {
            let ids: Vec<String> = session
                .query(&self.query.samples_sql(self.samples))?
                .into_iter()
                .filter_map(|row| row.into_iter().next().flatten())
                .collect();
            report = report.detail(format!("oldest dangling {}s: {}", self.query.id(), ids.join(", ")));
        }
        Ok(report)
    }

    fn failed(&self, failure: Failure) -> Report {
        match self.server.unreachable(failure) {
            Ok(report) => report,
            Err(error) => match error.code.as_str() {
                "57014" => Report::critical(format!(
                    "the query was cancelled after {} ms (statement_timeout): {}",
                    self.statement_timeout_ms, error.message
                )),
                "3D000" => Report::unknown(format!("config field `url`: {}", error.message)),
                "25006" => Report::unknown(format!(
                    "config field `where`: refused, the check is read-only: {}",
                    error.message
                )),
                code if code.starts_with("42") => Report::unknown(format!(
                    "query failed ({code}): {} — check `where` and the column names",
                    error.message
                )),
                code if code.starts_with("57") || code.starts_with("08") || code.starts_with("53") => {
                    Report::critical(format!(
                        "{}: server unavailable ({code}): {}",
                        self.server.display, error.message
                    ))
                }
                code => Report::unknown(format!("query failed ({code}): {}", error.message)),
            },
        }
    }
}

fn human_age(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

runbox_plugin_sdk::export_check!(PgDanglingMetadata);
