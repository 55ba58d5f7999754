//! `http-health`: GET (or HEAD) a health endpoint such as `/health` or `/health/ready`,
//! expect a status, optionally a JSON body field or a plain-text body (ASP.NET Core's
//! default health-check writer answers `Healthy`, `Degraded` or `Unhealthy`), and judge
//! the latency.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::http::{self, Failure};
use runbox_plugin_sdk::report::severity;
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "http-health config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "http(s)://host[:port]/path, e.g. http://api.internal:8080/health/ready"},
    "method": {"type": "string", "enum": ["GET", "HEAD"], "default": "GET"},
    "expect_status": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "default": [200], "description": "Statuses that count as healthy"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "json_field": {"type": "string", "description": "Dotted path into the JSON body, e.g. \"status\" or \"checks.db.status\""},
    "json_equals": {"description": "Value json_field must have (any JSON value)"},
    "body_status": {"type": "object", "additionalProperties": {"type": "string", "enum": ["ok", "warning", "critical", "unknown"]}, "minProperties": 1, "description": "Judge a plain-text body: the whole body (surrounding whitespace trimmed, case-sensitive) maps to a status, e.g. {\"Healthy\": \"ok\", \"Degraded\": \"warning\", \"Unhealthy\": \"critical\"} for ASP.NET Core's default health-check writer. Applies when the HTTP status is expected; a body that is none of the keys is CRITICAL. Not with json_field"},
    "warn": {"type": "string", "description": "Nagios range for latency_ms that raises WARNING"},
    "crit": {"type": "string", "description": "Nagios range for latency_ms that raises CRITICAL"},
    "max_body_bytes": {"type": "integer", "minimum": 0, "default": 1048576},
    "follow_redirects": {"type": "integer", "minimum": 0, "maximum": 10, "default": 0, "description": "How many redirects to follow (each hop is checked against the grants)"}
  },
  "required": ["url"],
  "dependentRequired": {"json_equals": ["json_field"], "json_field": ["json_equals"]},
  "not": {"required": ["json_field", "body_status"]},
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_status")]
    expect_status: Vec<u16>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    json_field: Option<String>,
    json_equals: Option<Value>,
    #[serde(default)]
    body_status: BTreeMap<String, BodyStatus>,
    warn: Option<String>,
    crit: Option<String>,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(default)]
    follow_redirects: usize,
}

/// A status a plain-text body can map to (`body_status`).
#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
enum BodyStatus {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl From<BodyStatus> for Status {
    fn from(status: BodyStatus) -> Status {
        match status {
            BodyStatus::Ok => Status::Ok,
            BodyStatus::Warning => Status::Warning,
            BodyStatus::Critical => Status::Critical,
            BodyStatus::Unknown => Status::Unknown,
        }
    }
}

fn default_method() -> String {
    "GET".into()
}
fn default_status() -> Vec<u16> {
    vec![200]
}
fn default_max_body() -> usize {
    1 << 20
}

struct HttpHealth;

impl Guest for HttpHealth {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "http-health",
            "Checks an HTTP health endpoint: status, optional JSON body condition, latency",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        let config: Config = match config::parse(&config) {
            Ok(config) => config,
            Err(message) => return Ok(Report::unknown(message)),
        };
        if config.json_field.is_some() && !config.body_status.is_empty() {
            return Ok(Report::unknown(config::field_error(
                "body_status",
                "judges a plain-text body; it cannot be combined with json_field",
            )));
        }
        if let Err(err) = http::Target::parse(&config.url) {
            return Ok(Report::unknown(config::field_error("url", err)));
        }
        let thresholds = match Thresholds::parse(config.warn.as_deref(), config.crit.as_deref()) {
            Ok(thresholds) => thresholds,
            Err(message) => return Ok(Report::unknown(message)),
        };
        Ok(check(&config, &thresholds))
    }
}

fn check(config: &Config, thresholds: &Thresholds) -> Report {
    let headers: Vec<(String, String)> = config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let started = Instant::now();
    let response = match http::send_following(
        &config.method,
        &config.url,
        &headers,
        None,
        config.max_body_bytes,
        config.follow_redirects,
    ) {
        Ok((response, _hops)) => response,
        Err(Failure::Denied) => {
            return Report::critical(format!("{} {}: {}", config.method, config.url, Failure::Denied));
        }
        Err(failure) => {
            return Report::critical(format!("{} {}: {failure}", config.method, config.url));
        }
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let line = format!(
        "{} {} → {} in {latency_ms:.1} ms",
        config.method, config.url, response.status
    );
    let mut report = Report::new(Status::Ok, line.clone())
        .judged_metric("latency_ms", latency_ms, "ms", thresholds)
        .metric("status_code", f64::from(response.status), "");
    if !config.expect_status.contains(&response.status) {
        report.status = Status::Critical;
        report.summary = format!("{line}, expected {}", list(&config.expect_status));
        let body = response.text().split_whitespace().collect::<Vec<_>>().join(" ");
        if !body.is_empty() {
            report = report.detail(format!("body: {}", body.chars().take(200).collect::<String>()));
        }
        return report;
    }
    if let (Some(field), Some(expected)) = (&config.json_field, &config.json_equals) {
        let body: Value = match serde_json::from_slice(&response.body) {
            Ok(body) => body,
            Err(err) => {
                report.status = Status::Critical;
                report.summary = format!("{line}, but the body is not JSON ({err})");
                return report;
            }
        };
        let actual = field.split('.').try_fold(&body, |value, key| value.get(key));
        match actual {
            Some(actual) if actual == expected => report = report.detail(format!("{field} = {actual}")),
            Some(actual) => {
                report.status = Status::Critical;
                report.summary = format!("{line}, but {field} is {actual} (expected {expected})");
            }
            None => {
                report.status = Status::Critical;
                report.summary = format!("{line}, but the body has no field {field}");
            }
        }
    }
    if !config.body_status.is_empty() {
        let (status, said) = judge_body(&config.body_status, &response.text());
        if severity(status) > severity(report.status) {
            report.status = status;
        }
        report.summary = format!("{line}: {said}");
        report = report.detail(format!("body: {said}"));
        if status == Status::Ok && report.status != Status::Ok {
            report.summary = format!("{} (latency outside threshold)", report.summary);
        }
        return report;
    }
    if report.status != Status::Ok && report.summary == line {
        report.summary = format!("{line} (latency outside threshold)");
    }
    report
}

/// The status `body_status` gives a plain-text body, and the body as the report shows
/// it: itself when it is a known word, else what it was and what was expected.
fn judge_body(map: &BTreeMap<String, BodyStatus>, body: &str) -> (Status, String) {
    let trimmed = body.trim();
    match map.get(trimmed) {
        Some(status) => (Status::from(*status), trimmed.to_string()),
        None => {
            let shown: String = trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
            let shown: String = shown.chars().take(120).collect();
            let expected = map.keys().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ");
            (Status::Critical, format!("the body is \"{shown}\", none of {expected}"))
        }
    }
}

fn list(statuses: &[u16]) -> String {
    statuses.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ")
}

runbox_plugin_sdk::export_check!(HttpHealth);

#[cfg(test)]
mod tests {
    use super::*;

    fn aspnet() -> BTreeMap<String, BodyStatus> {
        serde_json::from_str(r#"{"Healthy": "ok", "Degraded": "warning", "Unhealthy": "critical"}"#).unwrap()
    }

    #[test]
    fn a_plain_text_body_maps_to_its_status() {
        // (body, status, what the report says)
        let table: &[(&str, Status, &str)] = &[
            ("Healthy", Status::Ok, "Healthy"),
            ("Healthy\n", Status::Ok, "Healthy"),
            ("  Degraded ", Status::Warning, "Degraded"),
            ("Unhealthy", Status::Critical, "Unhealthy"),
            (
                "healthy",
                Status::Critical,
                "the body is \"healthy\", none of \"Degraded\", \"Healthy\", \"Unhealthy\"",
            ),
            (
                "{\"status\": \"ready\"}",
                Status::Critical,
                "the body is \"{\"status\": \"ready\"}\", none of \"Degraded\", \"Healthy\", \"Unhealthy\"",
            ),
            (
                "",
                Status::Critical,
                "the body is \"\", none of \"Degraded\", \"Healthy\", \"Unhealthy\"",
            ),
        ];
        for (body, status, said) in table {
            assert_eq!(judge_body(&aspnet(), body), (*status, said.to_string()), "{body:?}");
        }
    }

    #[test]
    fn body_status_reads_from_config_and_refuses_unknown_statuses() {
        let config: Config = config::parse(
            r#"{"url": "http://h/health/ready", "body_status": {"Healthy": "ok", "Degraded": "warning"}}"#,
        )
        .unwrap();
        assert_eq!(config.body_status.get("Degraded"), Some(&BodyStatus::Warning));
        let err = config::parse::<Config>(r#"{"url": "http://h", "body_status": {"Healthy": "fine"}}"#)
            .err()
            .unwrap();
        assert!(err.contains("body_status"), "{err}");
        // The schema says the same: the host refuses such a config before running.
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let statuses = &schema["properties"]["body_status"]["additionalProperties"]["enum"];
        assert_eq!(statuses, &serde_json::json!(["ok", "warning", "critical", "unknown"]));
    }
}
