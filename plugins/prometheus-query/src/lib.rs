//! `prometheus-query`: one instant PromQL query (`GET {url}/api/v1/query?query=…`)
//! judged by Nagios ranges. A scalar is one value; a vector is judged series by series,
//! the worst wins, and the offending series' labels are in the details. An empty
//! vector is `empty_status` (default UNKNOWN, "no data": a query that matches nothing
//! proves nothing). Prometheus's own error (bad PromQL, a query timeout) is UNKNOWN with
//! its text, and so is a Prometheus that cannot be reached: the check could not look.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::http::{self, Failure};
use runbox_plugin_sdk::report::severity;
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "prometheus-query config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "Prometheus base URL, e.g. http://prometheus.internal:9090 (grant it); /api/v1/query is appended"},
    "query": {"type": "string", "minLength": 1, "description": "Instant PromQL query; its result must be a scalar or an instant vector"},
    "warn": {"type": "string", "description": "Nagios range for each value that raises WARNING (e.g. 0.05 for a failure ratio above 5 %)"},
    "crit": {"type": "string", "description": "Nagios range for each value that raises CRITICAL"},
    "empty_status": {"type": "string", "enum": ["ok", "warning", "critical", "unknown"], "default": "unknown", "description": "Status of an empty vector (no series matched)"},
    "metric": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "default": "value", "description": "Name of the metric reported per series (value, value_1, ...; at most 32 series)"},
    "label": {"type": "string", "description": "What the value is, for the summary (e.g. \"generation failure ratio\"); default: the query"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Request headers, e.g. {authorization: \"Bearer ${{ secrets.prom_token }}\"} (host-injected secret)"},
    "time": {"type": "string", "description": "Evaluation time (RFC 3339 or Unix seconds); default: now"}
  },
  "required": ["url", "query"],
  "additionalProperties": false
}"#;

/// At most this many series become metrics (the host keeps 64 per result).
const MAX_METRICS: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    query: String,
    warn: Option<String>,
    crit: Option<String>,
    #[serde(default = "default_empty")]
    empty_status: String,
    #[serde(default = "default_metric")]
    metric: String,
    label: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    time: Option<String>,
}

fn default_empty() -> String {
    "unknown".into()
}
fn default_metric() -> String {
    "value".into()
}

/// One value of the result: its labels (`{job="api"}`, empty for a scalar) and number.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    labels: String,
    value: f64,
}

/// Reads Prometheus's answer (`{"status": "success", "data": {"resultType", "result"}}`)
/// into samples; an error answer or a result that is neither scalar nor vector is the
/// error text.
fn samples(body: &Value) -> Result<Vec<Sample>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "Prometheus: {}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("no error text")
        ));
    }
    let data = &body["data"];
    // A value is [timestamp, "text"]; the text may be "NaN", "+Inf", "-Inf".
    let number = |pair: &Value| -> Result<f64, String> {
        let text = pair[1].as_str().ok_or("a value is not [time, \"number\"]")?;
        text.parse::<f64>()
            .map_err(|_| format!("value {text:?} is not a number"))
    };
    match data["resultType"].as_str() {
        Some("scalar") => Ok(vec![Sample {
            labels: String::new(),
            value: number(&data["result"])?,
        }]),
        Some("vector") => data["result"]
            .as_array()
            .ok_or("vector result is not a list")?
            .iter()
            .map(|series| {
                Ok(Sample {
                    labels: labels(&series["metric"]),
                    value: number(&series["value"])?,
                })
            })
            .collect(),
        Some(other) => Err(format!(
            "result type {other}: give a query whose result is a scalar or an instant vector (no range selector [5m] on its own; wrap it, e.g. rate(x[5m]))"
        )),
        None => Err("Prometheus answered without data.resultType".into()),
    }
}

/// `{a="1", b="2"}` (sorted, as a BTreeMap gives them), `{}` for none.
fn labels(metric: &Value) -> String {
    let Some(map) = metric.as_object() else {
        return "{}".into();
    };
    let sorted: BTreeMap<_, _> = map.iter().collect();
    let inner: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), |s| format!("{s:?}"))))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

fn status_named(name: &str) -> Status {
    match name {
        "ok" => Status::Ok,
        "warning" => Status::Warning,
        "critical" => Status::Critical,
        _ => Status::Unknown,
    }
}

/// Judges the samples: the worst series sets the status and the summary; every
/// series outside OK is a detail line with its labels.
fn judge(config: &Config, thresholds: &Thresholds, samples: &[Sample]) -> Report {
    let what = config.label.clone().unwrap_or_else(|| config.query.clone());
    if samples.is_empty() {
        return Report::new(
            status_named(&config.empty_status),
            format!("no data: {what} matched no series"),
        )
        .metric("series", 0.0, "");
    }
    // The first series of the worst status.
    let worst = samples.iter().fold(&samples[0], |worst, sample| {
        if severity(thresholds.status(sample.value)) > severity(thresholds.status(worst.value)) {
            sample
        } else {
            worst
        }
    });
    let worst_status = thresholds.status(worst.value);
    let mut report = Report::new(Status::Ok, String::new());
    for (index, sample) in samples.iter().take(MAX_METRICS).enumerate() {
        let name = if index == 0 {
            config.metric.clone()
        } else {
            format!("{}_{index}", config.metric)
        };
        report = report.judged_metric(&name, sample.value, "", thresholds);
    }
    // Series past the metric cap still count.
    if severity(worst_status) > severity(report.status) {
        report.status = worst_status;
    }
    let offending: Vec<&Sample> = samples
        .iter()
        .filter(|s| thresholds.status(s.value) != Status::Ok)
        .collect();
    let shown = |s: &Sample| {
        if s.labels.is_empty() {
            format!("{}", s.value)
        } else {
            format!("{} {}", s.labels, s.value)
        }
    };
    report.summary = match (samples.len(), offending.len()) {
        (1, 0) => format!("{what} = {}", worst.value),
        (n, 0) => format!("{what}: all {n} series within thresholds"),
        (1, _) => format!("{what} = {} ({})", worst.value, range_text(thresholds, worst_status)),
        (n, k) => format!("{what}: {k} of {n} series outside thresholds; worst {}", shown(worst)),
    };
    for sample in &offending {
        let word = match thresholds.status(sample.value) {
            Status::Critical => "CRITICAL",
            _ => "WARNING",
        };
        report = report.detail(format!("{word}: {}", shown(sample)));
    }
    if samples.len() > MAX_METRICS {
        report = report.detail(format!(
            "{} series; metrics for the first {MAX_METRICS} only",
            samples.len()
        ));
    }
    report.metric("series", samples.len() as f64, "")
}

fn range_text(thresholds: &Thresholds, status: Status) -> String {
    match status {
        Status::Critical => format!("outside crit {}", thresholds.crit.as_ref().map_or("", |r| r.as_str())),
        Status::Warning => format!("outside warn {}", thresholds.warn.as_ref().map_or("", |r| r.as_str())),
        _ => String::new(),
    }
}

struct PrometheusQuery;

impl Guest for PrometheusQuery {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "prometheus-query",
            "Runs an instant PromQL query and judges the result (scalar or each series) with thresholds",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(query(&config).unwrap_or_else(Report::unknown))
    }
}

fn query(json: &str) -> Result<Report, String> {
    let config: Config = config::parse(json)?;
    let base = config.url.trim_end_matches('/');
    http::Target::parse(base).map_err(|err| config::field_error("url", err))?;
    let thresholds = Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?;
    let mut pairs = vec![("query", config.query.as_str())];
    if let Some(time) = &config.time {
        pairs.push(("time", time));
    }
    let url = format!("{base}/api/v1/query?{}", http::query_string(&pairs));
    let headers: Vec<(String, String)> = config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let response = match http::send("GET", &url, &headers, None, 8 << 20) {
        Ok(response) => response,
        Err(Failure::Denied) => return Ok(Report::unknown(format!("GET {base}/api/v1/query: {}", Failure::Denied))),
        Err(failure) => {
            return Ok(Report::unknown(format!(
                "Prometheus unreachable: GET {base}/api/v1/query: {failure}"
            )));
        }
    };
    let body: Value = match serde_json::from_slice(&response.body) {
        Ok(body) => body,
        Err(_) => {
            return Ok(Report::unknown(format!(
                "GET {base}/api/v1/query → {}, not Prometheus's JSON: {}",
                response.status,
                response.text().chars().take(200).collect::<String>()
            )));
        }
    };
    match samples(&body) {
        Ok(samples) => Ok(judge(&config, &thresholds, &samples)),
        Err(error) => Ok(Report::unknown(format!("{error} (HTTP {})", response.status))),
    }
}

runbox_plugin_sdk::export_check!(PrometheusQuery);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(empty: &str) -> Config {
        serde_json::from_value(json!({"url": "http://p:9090", "query": "up", "empty_status": empty})).unwrap()
    }

    #[test]
    fn reads_scalars_vectors_and_errors() {
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1.5, "0.25"]}});
        assert_eq!(
            samples(&scalar).unwrap(),
            [Sample {
                labels: String::new(),
                value: 0.25
            }]
        );
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"job": "b", "__name__": "up"}, "value": [1.5, "1"]},
            {"metric": {}, "value": [1.5, "NaN"]}]}});
        let got = samples(&vector).unwrap();
        assert_eq!(got[0].labels, r#"{__name__="up", job="b"}"#);
        assert!(got[1].value.is_nan());
        let error = json!({"status": "error", "errorType": "bad_data", "error": "1:4: parse error: unexpected"});
        assert_eq!(
            samples(&error).unwrap_err(),
            "Prometheus: bad_data: 1:4: parse error: unexpected"
        );
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(samples(&matrix).unwrap_err().contains("instant vector"));
    }

    #[test]
    fn worst_series_wins_and_empty_is_configurable() {
        let thresholds = Thresholds::parse(Some("1"), Some("5")).unwrap();
        let series = |pairs: &[(&str, f64)]| -> Vec<Sample> {
            pairs
                .iter()
                .map(|(l, v)| Sample {
                    labels: l.to_string(),
                    value: *v,
                })
                .collect()
        };
        let report = judge(
            &config("unknown"),
            &thresholds,
            &series(&[("{a=\"1\"}", 0.5), ("{a=\"2\"}", 7.0), ("{a=\"3\"}", 2.0)]),
        );
        assert_eq!(report.status, Status::Critical);
        assert!(report.summary.contains("2 of 3 series"), "{}", report.summary);
        assert!(report.summary.contains("{a=\"2\"} 7"), "{}", report.summary);
        assert_eq!(report.details.len(), 2);
        let report = judge(&config("unknown"), &thresholds, &series(&[("", 0.5)]));
        assert_eq!((report.status, report.summary.as_str()), (Status::Ok, "up = 0.5"));
        assert_eq!(judge(&config("unknown"), &thresholds, &[]).status, Status::Unknown);
        assert_eq!(judge(&config("ok"), &thresholds, &[]).status, Status::Ok);
    }
}
