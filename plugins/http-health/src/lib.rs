//! `http-health`: GET (or HEAD) a health endpoint such as `/health` or `/health/ready`,
//! expect a status, optionally a JSON body field, and judge the latency.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::http::{self, Failure};
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
    "warn": {"type": "string", "description": "Nagios range for latency_ms that raises WARNING"},
    "crit": {"type": "string", "description": "Nagios range for latency_ms that raises CRITICAL"},
    "max_body_bytes": {"type": "integer", "minimum": 0, "default": 1048576},
    "follow_redirects": {"type": "integer", "minimum": 0, "maximum": 10, "default": 0, "description": "How many redirects to follow (each hop is checked against the grants)"}
  },
  "required": ["url"],
  "dependentRequired": {"json_equals": ["json_field"], "json_field": ["json_equals"]},
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
    warn: Option<String>,
    crit: Option<String>,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(default)]
    follow_redirects: usize,
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
    if report.status != Status::Ok && report.summary == line {
        report.summary = format!("{line} (latency outside threshold)");
    }
    report
}

fn list(statuses: &[u16]) -> String {
    statuses.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ")
}

runbox_plugin_sdk::export_check!(HttpHealth);
