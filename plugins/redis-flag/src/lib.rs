//! `redis-flag` (mitigation): set or clear one Redis key, optionally with a TTL — the
//! switch many services read to pause enqueueing or block new sessions. The plan reads
//! the current value and says what will change; apply makes the change. Over TLS for
//! `rediss://` URLs.

use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::redis::{self, Connection, Reply};
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "redis-flag config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "redis://[user[:password]@]host[:port][/db], or rediss:// for TLS (the step's `tls:` says what to trust); port defaults to 6379, db to 0"},
    "password_secret": {"type": "string"},
    "key": {"type": "string", "description": "The flag's key, e.g. queue:enqueue-paused"},
    "action": {"type": "string", "enum": ["set", "clear"], "default": "set"},
    "value": {"type": "string", "default": "1", "description": "Value to set"},
    "ttl_seconds": {"type": "integer", "minimum": 1, "description": "Expire the flag after this many seconds (set only)"}
  },
  "required": ["url", "key"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    password_secret: Option<String>,
    key: String,
    #[serde(default = "default_action")]
    action: String,
    #[serde(default = "default_value")]
    value: String,
    ttl_seconds: Option<u64>,
}

fn default_action() -> String {
    "set".into()
}
fn default_value() -> String {
    "1".into()
}

struct RedisFlag;

impl Guest for RedisFlag {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "redis-flag",
            "Sets or clears a Redis flag key (optionally with a TTL)",
            SCHEMA
        )
    }

    fn plan(config: String) -> Result<Plan, String> {
        let (config, mut conn) = connect(&config)?;
        let current = current(&mut conn, &config.key)?;
        let change = match config.action.as_str() {
            "clear" => format!("DEL {} (was: {current})", config.key),
            _ => format!(
                "SET {} {:?}{} (was: {current})",
                config.key,
                config.value,
                config.ttl_seconds.map(|ttl| format!(" EX {ttl}")).unwrap_or_default()
            ),
        };
        let summary = match config.action.as_str() {
            "clear" => format!("clear {} (now {current})", config.key),
            _ => format!("set {} = {:?} (now {current})", config.key, config.value),
        };
        Ok(Plan {
            summary,
            changes: vec![change],
            destructive: false,
        })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        let (config, mut conn) = connect(&config)?;
        let before = current(&mut conn, &config.key)?;
        let reply = match config.action.as_str() {
            "clear" => conn.call(&["DEL", &config.key]),
            _ => match config.ttl_seconds {
                Some(ttl) => conn.call(&["SET", &config.key, &config.value, "EX", &ttl.to_string()]),
                None => conn.call(&["SET", &config.key, &config.value]),
            },
        }
        .map_err(|err| err.to_string())?;
        if let Reply::Error(message) = reply {
            return Ok(Outcome {
                outputs: Vec::new(),
                status: Status::Critical,
                summary: format!("{} {}: {message}", config.action, config.key),
                changes: vec![],
            });
        }
        let after = current(&mut conn, &config.key)?;
        Ok(Outcome {
            outputs: Vec::new(),
            status: Status::Ok,
            summary: format!("{}: {before} → {after}", config.key),
            changes: vec![format!("{}: {before} → {after}", config.key)],
        })
    }
}

fn connect(json: &str) -> Result<(Config, Connection), String> {
    let config: Config = config::parse(json)?;
    let target = redis::Target::from_config(&config.url, config.password_secret.as_deref())?;
    let conn = target.connect().map_err(|err| format!("{}: {err}", target.display))?;
    Ok((config, conn))
}

/// The key's value and TTL, as text for a plan.
fn current(conn: &mut Connection, key: &str) -> Result<String, String> {
    let value = conn.call(&["GET", key]).map_err(|err| err.to_string())?;
    let ttl = conn
        .call(&["TTL", key])
        .map_err(|err| err.to_string())?
        .integer()
        .unwrap_or(-2);
    Ok(match value {
        Reply::Bulk(None) => "unset".into(),
        Reply::Bulk(Some(value)) if ttl >= 0 => format!("{value:?}, expires in {ttl} s"),
        Reply::Bulk(Some(value)) => format!("{value:?}"),
        Reply::Error(message) => return Err(format!("GET {key}: {message}")),
        other => format!("{other:?}"),
    })
}

runbox_plugin_sdk::export_mitigation!(RedisFlag);
