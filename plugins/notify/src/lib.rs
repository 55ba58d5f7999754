//! `notify` (mitigation): posts one message to a Slack-compatible incoming webhook
//! (`{"text": …}`) or a generic JSON webhook (`{"title", "text", "severity", "source"}`).
//! The plan shows the exact body and where it goes and sends nothing; apply sends that
//! body once and checks the status.
//!
//! A Slack webhook URL is itself a secret: whoever has it can post to the channel. So
//! give it as `url_secret` (the name of a granted secret holding the whole URL); the
//! plan, the outcome and every report then show only its `scheme://host`, and the step
//! grants only that host (`allow: [https://hooks.slack.com]`). `url` is for endpoints
//! whose URL is not secret (they authenticate with a header: `headers:
//! {authorization: "Bearer ${{ secrets.NAME }}"}`, filled in by the host); a
//! `hooks.slack.com/services/…` URL in `url` is refused.

use runbox_plugin_sdk::http;
use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config, secret};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "notify config",
  "type": "object",
  "properties": {
    "format": {"type": "string", "enum": ["slack", "generic"], "default": "slack", "description": "slack: {\"text\": ...} (Slack, Mattermost, Rocket.Chat incoming webhooks); generic: {\"title\", \"text\", \"severity\", \"source\": \"runbox\"}"},
    "url": {"type": "string", "description": "Webhook URL that is not itself a secret (shown in the plan). Not for Slack webhook URLs: use url_secret"},
    "url_secret": {"type": "string", "description": "Name of a granted secret holding the whole webhook URL (a Slack webhook URL is a credential); plans and reports show only its scheme://host. Grant that host in allow"},
    "text": {"type": "string", "minLength": 1, "description": "The message"},
    "title": {"type": "string", "description": "A heading (slack: a bold first line)"},
    "severity": {"type": "string", "enum": ["info", "warning", "critical"], "description": "Severity (slack: a [WARNING]/[CRITICAL] prefix; generic: the severity field)"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Request headers; a token as a host-injected secret: {authorization: \"Bearer ${{ secrets.NAME }}\"}"},
    "expect_status": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "default": [200, 201, 202, 204]}
  },
  "required": ["text"],
  "oneOf": [{"required": ["url"]}, {"required": ["url_secret"]}],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_format")]
    format: String,
    url: Option<String>,
    url_secret: Option<String>,
    text: String,
    title: Option<String>,
    severity: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_expect")]
    expect_status: Vec<u16>,
}

fn default_format() -> String {
    "slack".into()
}
fn default_expect() -> Vec<u16> {
    vec![200, 201, 202, 204]
}

/// Where the message goes: the URL to send to, and how reports may show it.
struct Destination {
    url: String,
    shown: String,
}

fn destination(config: &Config) -> Result<Destination, String> {
    match (&config.url, &config.url_secret) {
        (Some(url), None) => {
            let target = http::Target::parse(url).map_err(|err| config::field_error("url", err))?;
            if target.authority.eq_ignore_ascii_case("hooks.slack.com")
                && target.path_with_query.starts_with("/services/")
            {
                return Err(config::field_error(
                    "url",
                    "a Slack webhook URL is a secret (anyone holding it can post): grant it with `secrets: {slack_webhook_url: env:VAR}` and name it in `url_secret` instead",
                ));
            }
            Ok(Destination {
                url: url.clone(),
                shown: url.clone(),
            })
        }
        (None, Some(name)) => {
            let url = secret(name).map_err(|err| config::field_error("url_secret", err))?;
            let origin = http::origin(url.trim()).ok_or_else(|| {
                config::field_error("url_secret", format!("secret `{name}` does not hold an http(s) URL"))
            })?;
            Ok(Destination {
                url: url.trim().to_string(),
                shown: format!("{origin}/… (URL from secret `{name}`)"),
            })
        }
        _ => Err(config::field_error("url", "give exactly one of `url` and `url_secret`")),
    }
}

/// The request body, the same in plan and apply.
fn body(config: &Config) -> String {
    match config.format.as_str() {
        "generic" => {
            let mut body = json!({"text": config.text, "source": "runbox"});
            if let Some(title) = &config.title {
                body["title"] = json!(title);
            }
            if let Some(severity) = &config.severity {
                body["severity"] = json!(severity);
            }
            body.to_string()
        }
        _ => {
            let prefix = match config.severity.as_deref() {
                Some("warning") => "[WARNING] ",
                Some("critical") => "[CRITICAL] ",
                _ => "",
            };
            let text = match &config.title {
                Some(title) => format!("{prefix}*{title}*\n{}", config.text),
                None => format!("{prefix}{}", config.text),
            };
            json!({"text": text}).to_string()
        }
    }
}

/// The plan's change line: what is sent, where, with which body.
fn change(config: &Config, destination: &Destination, body: &str) -> String {
    format!("POST {} ({} format) body: {body}", destination.shown, config.format)
}

struct Notify;

impl Guest for Notify {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "notify",
            "Posts a message to a Slack-compatible incoming webhook or a generic JSON webhook",
            SCHEMA
        )
    }

    fn plan(config: String) -> Result<Plan, String> {
        let config: Config = config::parse(&config)?;
        let destination = destination(&config)?;
        let body = body(&config);
        Ok(Plan {
            summary: format!("post a {} message to {}", config.format, destination.shown),
            changes: vec![change(&config, &destination, &body)],
            destructive: false,
        })
    }

    fn apply(config: String, plan: Plan) -> Result<Outcome, String> {
        let config: Config = config::parse(&config)?;
        let destination = destination(&config)?;
        let body = body(&config);
        // Send only what was approved: the plan's body, byte for byte.
        if plan.changes != [change(&config, &destination, &body)] {
            return Err("the message differs from the approved plan; nothing was sent".into());
        }
        let mut headers: Vec<(String, String)> = config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let line = format!("POST {}", destination.shown);
        let response = match http::send("POST", &destination.url, &headers, Some(body.as_bytes()), 1 << 20) {
            Ok(response) => response,
            Err(failure) => return Ok(Outcome::new(Status::Critical, format!("{line}: {failure}"), vec![])),
        };
        if config.expect_status.contains(&response.status) {
            Ok(Outcome::new(
                Status::Ok,
                format!("posted the message: {line} → {}", response.status),
                vec![format!("{line} → {} ({} bytes)", response.status, body.len())],
            ))
        } else {
            // Slack answers in plain text (invalid_payload, invalid_token, no_service,
            // channel_is_archived); others may answer JSON.
            let text = response.text();
            let said = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
            Ok(Outcome::new(
                Status::Critical,
                format!(
                    "{line} → {}, expected {}: {}",
                    response.status,
                    config
                        .expect_status
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join("/"),
                    said.chars().take(200).collect::<String>()
                ),
                vec![],
            ))
        }
    }
}

runbox_plugin_sdk::export_mitigation!(Notify);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(value: Value) -> Config {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn bodies_per_format() {
        let slack = config(
            json!({"url": "http://h/x", "text": "Generation failing", "title": "OpenAI outage", "severity": "critical"}),
        );
        assert_eq!(
            body(&slack),
            r#"{"text":"[CRITICAL] *OpenAI outage*\nGeneration failing"}"#
        );
        let plain = config(json!({"url": "http://h/x", "text": "hi"}));
        assert_eq!(body(&plain), r#"{"text":"hi"}"#);
        let generic = config(json!({"url": "http://h/x", "format": "generic", "text": "t", "severity": "warning"}));
        let value: Value = serde_json::from_str(&body(&generic)).unwrap();
        assert_eq!(value, json!({"text": "t", "severity": "warning", "source": "runbox"}));
    }

    #[test]
    fn refuses_a_slack_url_in_the_open() {
        let slack = config(json!({"url": "https://hooks.slack.com/services/T0/B0/secret", "text": "x"}));
        let err = destination(&slack).err().unwrap();
        assert!(
            err.starts_with("config field `url`") && err.contains("url_secret"),
            "{err}"
        );
    }
}
