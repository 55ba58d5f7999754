//! `livekit-webhook`: does the application's webhook endpoint take LiveKit's webhooks,
//! and only those? It sends two test events the way LiveKit's server signs them
//! (livekit/protocol `webhook/url_notifier.go`): `POST`, `Content-Type:
//! application/webhook+json`, the event as protobuf JSON, and `Authorization: <JWT>` (no
//! `Bearer`), an HS256 token signed with the API secret whose claims are `iss` = the API
//! key, `nbf`, `exp` (5 minutes) and `sha256` = base64(SHA-256(body)). The first is
//! signed correctly and must be accepted (2xx); the second is signed with another
//! secret and must be refused (401 by default). A CRITICAL names the expectation that
//! failed, and the output `failure` says which: `rejects_valid` (the endpoint's key or
//! secret differ from LiveKit's, or it is broken), `accepts_invalid` (it does not verify
//! signatures), `both`, or `unreachable`.
//!
//! The correctly signed event *is* delivered: the application handles a `room_started`
//! (by default) for a room named `runbox-webhook-probe`. Choose `event` and `room` so
//! that handling it is harmless. Grant `POST https://app.example.com` (a check POSTs
//! only where its grant lists the method).

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::http::{self, Failure};
use runbox_plugin_sdk::jwt;
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config, secret, time};
use serde::Deserialize;
use serde_json::json;
use std::time::Instant;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "livekit-webhook config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "The application's LiveKit webhook endpoint, e.g. https://app.example.com/api/livekit/webhook (grant `POST https://app.example.com`)"},
    "api_key": {"type": "string", "minLength": 1, "description": "LiveKit API key that signs webhooks (the token's iss; LiveKit's webhook.api_key)"},
    "api_secret_secret": {"type": "string", "default": "livekit_api_secret", "description": "Name of the granted secret holding that key's API secret"},
    "event": {"type": "string", "enum": ["room_started", "room_finished", "participant_joined", "participant_left"], "default": "room_started", "description": "Event of the test webhooks (the good one is delivered: pick one the app handles harmlessly)"},
    "room": {"type": "string", "default": "runbox-webhook-probe", "description": "Room name in the test event"},
    "expect_status": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "description": "Statuses that accept the correctly signed webhook (default: any 2xx)"},
    "expect_bad_status": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "default": [401], "description": "Statuses that refuse the badly signed one"},
    "warn": {"type": "string", "description": "Nagios range for latency_ms (the good webhook) that raises WARNING"},
    "crit": {"type": "string", "description": "Nagios range for latency_ms that raises CRITICAL"}
  },
  "required": ["url", "api_key"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    api_key: String,
    #[serde(default = "default_secret")]
    api_secret_secret: String,
    #[serde(default = "default_event")]
    event: String,
    #[serde(default = "default_room")]
    room: String,
    expect_status: Option<Vec<u16>>,
    #[serde(default = "default_bad")]
    expect_bad_status: Vec<u16>,
    warn: Option<String>,
    crit: Option<String>,
}

fn default_secret() -> String {
    "livekit_api_secret".into()
}
fn default_event() -> String {
    "room_started".into()
}
fn default_room() -> String {
    "runbox-webhook-probe".into()
}
fn default_bad() -> Vec<u16> {
    vec![401]
}

/// The test event as LiveKit's server writes it (protojson of `livekit.WebhookEvent`:
/// camelCase names, 64-bit integers as strings).
fn event_body(event: &str, room: &str, now: i64) -> String {
    let mut body = json!({
        "event": event,
        "room": {
            "sid": "RM_runboxWebhookProbe",
            "name": room,
            "emptyTimeout": 300,
            "creationTime": now.to_string(),
        },
        "id": format!("EV_runbox{now}"),
        "createdAt": now.to_string(),
    });
    if event.starts_with("participant_") {
        body["participant"] = json!({
            "sid": "PA_runboxWebhookProbe",
            "identity": "runbox-webhook-probe",
            "state": "ACTIVE",
            "joinedAt": now.to_string(),
        });
    }
    body.to_string()
}

/// `Authorization` for `body`, as LiveKit signs it: HS256 with `secret`, `iss` = key,
/// valid for 5 minutes, `sha256` = base64(SHA-256(body)).
fn authorization(body: &str, api_key: &str, secret: &[u8], now: i64) -> String {
    jwt::mint(
        &json!({
            "iss": api_key,
            "nbf": now,
            "exp": now + 300,
            "sha256": jwt::sha256_base64(body.as_bytes()),
        }),
        secret,
    )
}

struct LiveKitWebhook;

impl Guest for LiveKitWebhook {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "livekit-webhook",
            "Sends a correctly and a badly signed LiveKit webhook; the endpoint must accept the first and refuse the second",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(check(&config).unwrap_or_else(Report::unknown))
    }
}

fn check(json: &str) -> Result<Report, String> {
    let config: Config = config::parse(json)?;
    http::Target::parse(&config.url).map_err(|err| config::field_error("url", err))?;
    let api_secret = secret(&config.api_secret_secret).map_err(|err| config::field_error("api_secret_secret", err))?;
    let thresholds = Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?;
    let now = time::now();
    let body = event_body(&config.event, &config.room, now);
    // The bad one: the same body and claims under a secret that is not the API secret.
    let wrong_secret = format!("not-{api_secret}");
    let send = |secret: &[u8]| {
        let headers = vec![
            ("content-type".to_string(), "application/webhook+json".to_string()),
            (
                "authorization".to_string(),
                authorization(&body, &config.api_key, secret, now),
            ),
        ];
        http::send("POST", &config.url, &headers, Some(body.as_bytes()), 1 << 20)
    };
    let started = Instant::now();
    let good = match send(api_secret.as_bytes()) {
        Ok(response) => response,
        Err(Failure::Denied) => return Ok(Report::unknown(format!("POST {}: {}", config.url, Failure::Denied))),
        Err(failure) => {
            return Ok(
                Report::critical(format!("webhook endpoint unreachable: POST {}: {failure}", config.url))
                    .output("failure", &"unreachable"),
            );
        }
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let bad = match send(wrong_secret.as_bytes()) {
        Ok(response) => response,
        Err(failure) => {
            return Ok(Report::critical(format!(
                "webhook endpoint unreachable for the second (badly signed) webhook: POST {}: {failure}",
                config.url
            ))
            .output("failure", &"unreachable"));
        }
    };
    let good_ok = match &config.expect_status {
        Some(list) => list.contains(&good.status),
        None => (200..300).contains(&good.status),
    };
    let bad_ok = config.expect_bad_status.contains(&bad.status);
    let expected_good = config
        .expect_status
        .as_ref()
        .map_or_else(|| "2xx".to_string(), |list| statuses(list));
    let excerpt = |response: &http::Response| {
        let text = response.text().split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            String::new()
        } else {
            format!(": {}", text.chars().take(160).collect::<String>())
        }
    };
    let rejected_good = format!(
        "rejected a correctly signed webhook ({}, expected {expected_good}{}): its LiveKit API key/secret differ from `{}`'s, or it fails on a valid event",
        good.status,
        excerpt(&good),
        config.api_key
    );
    let accepted_bad = format!(
        "accepted a badly signed webhook ({}, expected {}): it does not verify LiveKit's signature",
        bad.status,
        statuses(&config.expect_bad_status)
    );
    let lines = [
        format!("correctly signed {} → {}", config.event, good.status),
        format!("signed with a wrong secret → {}", bad.status),
    ];
    let mut report = match (good_ok, bad_ok) {
        (true, true) => Report::new(
            Status::Ok,
            format!(
                "accepts LiveKit-signed webhooks ({}) and refuses a bad signature ({}) in {latency_ms:.0} ms",
                good.status, bad.status
            ),
        ),
        (false, true) => {
            Report::critical(format!("webhook endpoint {rejected_good}")).output("failure", &"rejects_valid")
        }
        (true, false) => {
            Report::critical(format!("webhook endpoint {accepted_bad}")).output("failure", &"accepts_invalid")
        }
        (false, false) => Report::critical(format!("webhook endpoint {rejected_good}; and it {accepted_bad}"))
            .output("failure", &"both"),
    };
    for line in lines {
        report = report.detail(line);
    }
    let verdict = report.status;
    let mut report = report.judged_metric("latency_ms", latency_ms, "ms", &thresholds);
    if verdict == Status::Ok && report.status != Status::Ok {
        report.summary = format!("{} (slow)", report.summary);
    }
    Ok(report)
}

fn statuses(list: &[u16]) -> String {
    list.iter().map(u16::to_string).collect::<Vec<_>>().join("/")
}

runbox_plugin_sdk::export_check!(LiveKitWebhook);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn signs_the_body_it_sends() {
        let body = event_body("room_started", "r", 1_700_000_000);
        let token = authorization(&body, "APIkey", b"secret", 1_700_000_000);
        let claims = jwt::verify(&token, b"secret", "APIkey", 1_700_000_100).unwrap();
        assert_eq!(claims["sha256"], jwt::sha256_base64(body.as_bytes()));
        assert_eq!(claims["exp"], 1_700_000_300);
        let event: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(event["room"]["name"], "r");
        assert_eq!(event["createdAt"], "1700000000");
    }
}
