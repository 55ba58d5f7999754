//! `http-action` (mitigation): one HTTP request that changes something, such as
//! `POST /jobs/{id}/replay` or `POST /admin/sessions/block`. The plan states the request
//! without sending anything; apply sends it and checks the status.

use runbox_plugin_sdk::http;
use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config};
use serde::Deserialize;
use std::collections::BTreeMap;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "http-action config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "http(s)://host[:port]/path"},
    "method": {"type": "string", "enum": ["POST", "PUT", "PATCH", "DELETE"], "default": "POST"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "body": {"type": "string", "description": "Request body (send JSON as text and set content-type)"},
    "expect_status": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "default": [200, 201, 202, 204]},
    "destructive": {"type": "boolean", "default": false, "description": "Say so in the plan when the action cannot be undone"}
  },
  "required": ["url"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default = "default_expect")]
    expect_status: Vec<u16>,
    #[serde(default)]
    destructive: bool,
}

fn default_method() -> String {
    "POST".into()
}
fn default_expect() -> Vec<u16> {
    vec![200, 201, 202, 204]
}

struct HttpAction;

impl Guest for HttpAction {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "http-action",
            "Sends one HTTP request that changes something (e.g. replay failed jobs)",
            SCHEMA
        )
    }

    fn plan(config: String) -> Result<Plan, String> {
        let config = parse(&config)?;
        let body = config
            .body
            .as_deref()
            .map(|b| format!(" with a {}-byte body", b.len()))
            .unwrap_or_default();
        Ok(Plan {
            summary: format!("{} {}", config.method, config.url),
            changes: vec![format!(
                "{} {}{body}, expecting {}",
                config.method,
                config.url,
                statuses(&config.expect_status)
            )],
            destructive: config.destructive,
        })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        let config = parse(&config)?;
        let headers: Vec<(String, String)> = config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let line = format!("{} {}", config.method, config.url);
        let response = match http::send(
            &config.method,
            &config.url,
            &headers,
            config.body.as_deref().map(str::as_bytes),
            1 << 20,
        ) {
            Ok(response) => response,
            Err(failure) => {
                return Ok(Outcome {
                    outputs: Vec::new(),
                    status: Status::Critical,
                    summary: format!("{line}: {failure}"),
                    changes: vec![],
                });
            }
        };
        if config.expect_status.contains(&response.status) {
            Ok(Outcome {
                outputs: Vec::new(),
                status: Status::Ok,
                summary: format!("{line} → {}", response.status),
                changes: vec![format!("{line} → {}", response.status)],
            })
        } else {
            let body = response.text().split_whitespace().collect::<Vec<_>>().join(" ");
            Ok(Outcome {
                outputs: Vec::new(),
                status: Status::Critical,
                summary: format!(
                    "{line} → {}, expected {}: {}",
                    response.status,
                    statuses(&config.expect_status),
                    body.chars().take(200).collect::<String>()
                ),
                changes: vec![],
            })
        }
    }
}

fn parse(json: &str) -> Result<Config, String> {
    let config: Config = config::parse(json)?;
    http::Target::parse(&config.url).map_err(|err| config::field_error("url", err))?;
    Ok(config)
}

fn statuses(list: &[u16]) -> String {
    list.iter().map(u16::to_string).collect::<Vec<_>>().join("/")
}

runbox_plugin_sdk::export_mitigation!(HttpAction);
