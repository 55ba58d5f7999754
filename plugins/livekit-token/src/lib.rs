//! `livekit-token`: mints an HS256 access token the way LiveKit's server SDKs do
//! (`iss` = API key, `sub` = identity, `nbf`, `exp`, `video` grants), with the API
//! secret from a granted secret only, and calls the RoomService over Twirp
//! (`POST {url}/twirp/livekit.RoomService/ListRooms`) to prove the API accepts it. A
//! check only reads unless its grant lists the method, so the step grants
//! `POST https://livekit.example.com` (ListRooms changes nothing; Twirp POSTs every call).
//! `mode: mint-only` mints and verifies the token without any network (for "token
//! generation errors").
//!
//! A failure carries the output `failure`: `credentials` (401/403: a rotated or
//! mistyped key pair), `unavailable` (unreachable, or a 5xx: an outage) or `unexpected`,
//! so a runbook can act on an outage without acting on its own bad credentials.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::http::{self, Failure};
use runbox_plugin_sdk::jwt::{mint, verify};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config, secret, time};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Instant;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "livekit-token config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "LiveKit server URL, e.g. https://livekit.example.com (not needed for mint-only)"},
    "api_key": {"type": "string", "description": "LiveKit API key (the token's issuer)"},
    "api_secret_secret": {"type": "string", "default": "livekit_api_secret", "description": "Name of the granted secret holding the API secret"},
    "mode": {"type": "string", "enum": ["api", "mint-only"], "default": "api"},
    "identity": {"type": "string", "default": "runbox-probe"},
    "room": {"type": "string", "description": "Room for a roomJoin grant (mint-only)"},
    "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 300},
    "warn": {"type": "string", "description": "Nagios range for latency_ms that raises WARNING"},
    "crit": {"type": "string"}
  },
  "required": ["api_key"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: Option<String>,
    api_key: String,
    #[serde(default = "default_secret")]
    api_secret_secret: String,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_identity")]
    identity: String,
    room: Option<String>,
    #[serde(default = "default_ttl")]
    ttl_seconds: i64,
    warn: Option<String>,
    crit: Option<String>,
}

fn default_secret() -> String {
    "livekit_api_secret".into()
}
fn default_mode() -> String {
    "api".into()
}
fn default_identity() -> String {
    "runbox-probe".into()
}
fn default_ttl() -> i64 {
    300
}

struct LiveKitToken;

impl Guest for LiveKitToken {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "livekit-token",
            "Mints a LiveKit access token and checks that the RoomService API accepts it",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(check(&config).unwrap_or_else(Report::unknown))
    }
}

fn check(json: &str) -> Result<Report, String> {
    let config: Config = config::parse(json)?;
    let api_secret = secret(&config.api_secret_secret).map_err(|err| config::field_error("api_secret_secret", err))?;
    let thresholds = Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?;
    let now = time::now();
    let mut video = match config.mode.as_str() {
        "mint-only" => json!({"roomJoin": true}),
        _ => json!({"roomList": true}),
    };
    if let Some(room) = &config.room {
        video["room"] = json!(room);
    }
    let claims = json!({
        "iss": config.api_key,
        "sub": config.identity,
        "jti": config.identity,
        "nbf": now,
        "exp": now + config.ttl_seconds,
        "video": video,
    });
    let token = mint(&claims, api_secret.as_bytes());
    if let Err(why) = verify(&token, api_secret.as_bytes(), &config.api_key, now) {
        return Ok(Report::critical(format!(
            "token generation failed: the minted token does not verify ({why})"
        )));
    }
    if config.mode == "mint-only" {
        return Ok(Report::new(
            Status::Ok,
            format!(
                "minted and verified an HS256 token for {} (valid {} s)",
                config.identity, config.ttl_seconds
            ),
        )
        .metric("token_bytes", token.len() as f64, "B"));
    }

    let url = config
        .url
        .as_deref()
        .ok_or_else(|| config::field_error("url", "required unless mode is mint-only"))?;
    let endpoint = format!("{}/twirp/livekit.RoomService/ListRooms", url.trim_end_matches('/'));
    let headers = vec![
        ("authorization".to_string(), format!("Bearer {token}")),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let started = Instant::now();
    let response = match http::send("POST", &endpoint, &headers, Some(b"{}"), 4 << 20) {
        Ok(response) => response,
        Err(Failure::Denied) => return Ok(Report::critical(format!("POST {endpoint}: {}", Failure::Denied))),
        Err(failure) => {
            return Ok(
                Report::critical(format!("LiveKit API unreachable: POST {endpoint}: {failure}"))
                    .output("failure", &"unavailable"),
            );
        }
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    // Twirp errors are {"code": "...", "msg": "..."}.
    let twirp = |body: &Value| {
        format!(
            "{} {}: {}",
            response.status,
            body["code"].as_str().unwrap_or("?"),
            body["msg"].as_str().unwrap_or("")
        )
    };
    match response.status {
        200 => {
            let rooms = body["rooms"].as_array().map_or(0, Vec::len);
            let mut report = Report::new(
                Status::Ok,
                format!("ListRooms accepted the token in {latency_ms:.1} ms: {rooms} rooms"),
            )
            .judged_metric("latency_ms", latency_ms, "ms", &thresholds)
            .metric("rooms", rooms as f64, "");
            if report.status != Status::Ok {
                report.summary = format!("{} (slow)", report.summary);
            }
            Ok(report)
        }
        401 | 403 => Ok(
            Report::critical(format!("credentials rejected by LiveKit ({})", twirp(&body)))
                .metric("latency_ms", latency_ms, "ms")
                .output("failure", &"credentials"),
        ),
        status if status >= 500 => {
            Ok(Report::critical(format!("LiveKit API error ({})", twirp(&body))).output("failure", &"unavailable"))
        }
        _ => Ok(
            Report::critical(format!("unexpected answer from ListRooms ({})", twirp(&body)))
                .output("failure", &"unexpected"),
        ),
    }
}

runbox_plugin_sdk::export_check!(LiveKitToken);
