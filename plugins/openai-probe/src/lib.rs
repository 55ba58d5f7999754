//! `openai-probe`: is the OpenAI API usable with our key and our model? It sends
//! `GET {base_url}/v1/models/{model}` and, with `completion: true`, a one-token chat
//! completion (`POST {base_url}/v1/chat/completions`, `max_tokens: 1`; grant
//! `POST https://api.openai.com`: a check may POST only where its grant lists the method).
//!
//! The API key never reaches the plugin: the step's config says
//! `headers: {authorization: "Bearer ${{ secrets.openai_api_key }}"}` and the host
//! puts the value into the request after the grant check (docs/runbooks.md, "Secrets
//! the plugin never sees").
//!
//! Failures are told apart by status and OpenAI's error `code`, and named in the output
//! `failure`: 401/403 → `auth` (CRITICAL "key rejected"); 404 → `model`; 429 with
//! `insufficient_quota` → `quota` (CRITICAL: waiting does not help, billing does);
//! other 429s → `rate_limit` (WARNING by default: the key and model work and requests
//! get through again when the window resets; `rate_limit_status: critical` to page);
//! 5xx or unreachable → `unavailable` (CRITICAL: a provider outage); anything else →
//! `unexpected`.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::http::{self, Failure, Response};
use runbox_plugin_sdk::report::severity;
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "openai-probe config",
  "type": "object",
  "properties": {
    "base_url": {"type": "string", "default": "https://api.openai.com", "description": "scheme://host[:port][/prefix] of the OpenAI-compatible API; /v1/... is appended (a trailing /v1 is accepted). Grant it; with completion, grant `POST <base_url>`"},
    "model": {"type": "string", "description": "Model id the application uses, e.g. gpt-4o-mini (the app's model config)"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Request headers; put the key here as a host-injected secret: {authorization: \"Bearer ${{ secrets.openai_api_key }}\"} with `secrets: {openai_api_key: env:OPENAI_API_KEY}`. Add openai-organization / openai-project here too"},
    "completion": {"type": "boolean", "default": false, "description": "Also send a one-token chat completion (max_tokens 1): proves the model generates, costs one token"},
    "prompt": {"type": "string", "default": "ping", "description": "The completion's user message"},
    "rate_limit_status": {"type": "string", "enum": ["warning", "critical"], "default": "warning", "description": "Status of a 429 that is a rate limit (rate_limit_exceeded); a 429 insufficient_quota is always CRITICAL"},
    "warn": {"type": "string", "description": "Nagios range for latency_ms (the models request) that raises WARNING"},
    "crit": {"type": "string", "description": "Nagios range for latency_ms that raises CRITICAL"},
    "completion_warn": {"type": "string", "description": "Nagios range for completion_ms that raises WARNING"},
    "completion_crit": {"type": "string", "description": "Nagios range for completion_ms that raises CRITICAL"}
  },
  "required": ["model"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_base_url")]
    base_url: String,
    model: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    completion: bool,
    #[serde(default = "default_prompt")]
    prompt: String,
    #[serde(default = "default_rate_limit_status")]
    rate_limit_status: String,
    warn: Option<String>,
    crit: Option<String>,
    completion_warn: Option<String>,
    completion_crit: Option<String>,
}

fn default_base_url() -> String {
    "https://api.openai.com".into()
}
fn default_prompt() -> String {
    "ping".into()
}
fn default_rate_limit_status() -> String {
    "warning".into()
}

/// What went wrong, as the output `failure` names it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Auth,
    Model,
    RateLimit,
    Quota,
    Unavailable,
    Unexpected,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Auth => "auth",
            Kind::Model => "model",
            Kind::RateLimit => "rate_limit",
            Kind::Quota => "quota",
            Kind::Unavailable => "unavailable",
            Kind::Unexpected => "unexpected",
        }
    }
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
fn error_fields(body: &Value) -> (String, String) {
    let error = &body["error"];
    let code = error["code"]
        .as_str()
        .or_else(|| error["type"].as_str())
        .unwrap_or("")
        .to_string();
    let message = error["message"].as_str().unwrap_or("").trim().to_string();
    (code, message)
}

/// Classifies a non-2xx answer by its status and OpenAI's error code.
fn classify(status: u16, code: &str) -> Kind {
    match status {
        401 | 403 => Kind::Auth,
        404 => Kind::Model,
        429 if code == "insufficient_quota" => Kind::Quota,
        429 => Kind::RateLimit,
        500..=599 => Kind::Unavailable,
        _ => Kind::Unexpected,
    }
}

struct OpenAiProbe;

impl Guest for OpenAiProbe {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "openai-probe",
            "Checks that the OpenAI API accepts the key and serves the model (optionally a one-token completion)",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(probe(&config).unwrap_or_else(Report::unknown))
    }
}

/// One request's result: the response and its latency, or the report that ends the check.
fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<(Response, f64), Report> {
    let started = Instant::now();
    match http::send(method, url, headers, body, 4 << 20) {
        Ok(response) => Ok((response, started.elapsed().as_secs_f64() * 1000.0)),
        Err(Failure::Denied) => Err(Report::unknown(format!("{method} {url}: {}", Failure::Denied))),
        Err(failure) => Err(
            Report::critical(format!("OpenAI API unreachable: {method} {url}: {failure}"))
                .output("failure", &Kind::Unavailable.name()),
        ),
    }
}

/// The report for a failed answer, naming what failed in words and in `failure`.
fn failed(config: &Config, what: &str, response: &Response) -> Report {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let (code, message) = error_fields(&body);
    let kind = classify(response.status, &code);
    let said = match (code.is_empty(), message.is_empty()) {
        (true, true) => format!("{}", response.status),
        (false, true) => format!("{} {code}", response.status),
        (true, false) => format!("{}: {message}", response.status),
        (false, false) => format!("{} {code}: {message}", response.status),
    };
    let summary = match kind {
        Kind::Auth => format!("key rejected by the OpenAI API ({what}: {said})"),
        Kind::Model => format!(
            "model {} unknown or not allowed for this key ({what}: {said})",
            config.model
        ),
        Kind::Quota => format!("quota exhausted: billing or plan limit reached ({what}: {said})"),
        Kind::RateLimit => format!("rate limited ({what}: {said})"),
        Kind::Unavailable => format!("OpenAI API error, provider outage? ({what}: {said})"),
        Kind::Unexpected => format!("unexpected answer ({what}: {said})"),
    };
    let status = match kind {
        Kind::RateLimit if config.rate_limit_status == "warning" => Status::Warning,
        _ => Status::Critical,
    };
    let mut report = Report::new(status, summary).output("failure", &kind.name());
    for header in [
        "retry-after",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "x-request-id",
    ] {
        if let Some(value) = response.header(header) {
            report = report.detail(format!("{header}: {value}"));
        }
    }
    report
}

fn probe(json: &str) -> Result<Report, String> {
    let config: Config = config::parse(json)?;
    let base = config.base_url.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
    http::Target::parse(&base).map_err(|err| config::field_error("base_url", err))?;
    if config.model.trim().is_empty() {
        return Err(config::field_error(
            "model",
            "is empty: name the model the application uses",
        ));
    }
    let thresholds = Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?;
    let completion_thresholds = Thresholds::parse(config.completion_warn.as_deref(), config.completion_crit.as_deref())
        .map_err(|err| {
            err.replace("`warn`", "`completion_warn`")
                .replace("`crit`", "`completion_crit`")
        })?;
    let mut headers: Vec<(String, String)> = config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();

    let models_url = format!("{base}/v1/models/{}", http::path_segment(&config.model));
    let (response, latency_ms) = match request("GET", &models_url, &headers, None) {
        Ok(answer) => answer,
        Err(report) => return Ok(report),
    };
    if response.status != 200 {
        return Ok(failed(&config, "GET /v1/models", &response).metric("latency_ms", latency_ms, "ms"));
    }
    let model: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    if model["id"] != config.model.as_str() {
        return Ok(Report::critical(format!(
            "GET /v1/models/{} answered 200 but not with that model: {}",
            config.model,
            response.text().chars().take(200).collect::<String>()
        ))
        .output("failure", &Kind::Unexpected.name()));
    }
    let owner = model["owned_by"].as_str().unwrap_or("?");
    let mut report = Report::new(
        Status::Ok,
        format!(
            "model {} available (owned by {owner}) in {latency_ms:.0} ms",
            config.model
        ),
    )
    .judged_metric("latency_ms", latency_ms, "ms", &thresholds);

    if config.completion {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let body = json!({
            "model": config.model,
            "messages": [{"role": "user", "content": config.prompt}],
            "max_tokens": 1,
        })
        .to_string();
        let url = format!("{base}/v1/chat/completions");
        let (response, completion_ms) = match request("POST", &url, &headers, Some(body.as_bytes())) {
            Ok(answer) => answer,
            Err(failure) => return Ok(failure.metric("latency_ms", latency_ms, "ms")),
        };
        if response.status != 200 {
            return Ok(failed(&config, "POST /v1/chat/completions", &response)
                .metric("latency_ms", latency_ms, "ms")
                .metric("completion_ms", completion_ms, "ms"));
        }
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let Some(choice) = answer["choices"].get(0) else {
            return Ok(Report::critical(format!(
                "POST /v1/chat/completions answered 200 without choices: {}",
                response.text().chars().take(200).collect::<String>()
            ))
            .output("failure", &Kind::Unexpected.name()));
        };
        let tokens = answer["usage"]["completion_tokens"].as_f64().unwrap_or(0.0);
        report.summary = format!(
            "{}; one-token completion in {completion_ms:.0} ms (finish_reason {})",
            report.summary,
            choice["finish_reason"].as_str().unwrap_or("?")
        );
        report = report
            .judged_metric("completion_ms", completion_ms, "ms", &completion_thresholds)
            .metric("completion_tokens", tokens, "");
    }
    if severity(report.status) > severity(Status::Ok) {
        report.summary = format!("{} (slow)", report.summary);
    }
    Ok(report)
}

runbox_plugin_sdk::export_check!(OpenAiProbe);

#[cfg(test)]
mod tests {
    use super::*;

    /// Statuses and error codes as OpenAI sends them, and what each is called.
    #[test]
    fn classifies_openai_errors() {
        let table: &[(u16, &str, Kind)] = &[
            (401, "invalid_api_key", Kind::Auth),
            (403, "unsupported_country_region_territory", Kind::Auth),
            (404, "model_not_found", Kind::Model),
            (429, "insufficient_quota", Kind::Quota),
            (429, "rate_limit_exceeded", Kind::RateLimit),
            (429, "", Kind::RateLimit),
            (500, "", Kind::Unavailable),
            (503, "", Kind::Unavailable),
            (400, "unsupported_parameter", Kind::Unexpected),
        ];
        for (status, code, kind) in table {
            assert_eq!(classify(*status, code), *kind, "{status} {code}");
        }
        let body = json!({"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}});
        assert_eq!(
            error_fields(&body),
            (
                "insufficient_quota".to_string(),
                "You exceeded your current quota.".to_string()
            )
        );
        // A 5xx's code is null; its type names it.
        let body = json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}});
        assert_eq!(error_fields(&body).0, "server_error");
    }
}
