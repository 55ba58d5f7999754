//! `redis-ping`: connects to Redis (over TLS for `rediss://`), authenticates, selects the
//! database, sends PING and reports the round-trip latency; optionally the server's role
//! and client count.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::redis::{self, Connection, LoginError, Reply};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Level, Report, Status, config, describe_io, log};
use serde::Deserialize;
use std::io;
use std::time::Instant;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "redis-ping config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "redis://[user[:password]@]host[:port][/db], or rediss:// for TLS (the step's `tls:` says what to trust); port defaults to 6379, db to 0"},
    "password_secret": {"type": "string", "description": "Name of a granted secret holding the password (overrides a password in the URL)"},
    "warn": {"type": "string", "description": "Nagios range for latency_ms that raises WARNING, e.g. \"50\""},
    "crit": {"type": "string", "description": "Nagios range for latency_ms that raises CRITICAL, e.g. \"200\""},
    "info": {"type": "boolean", "default": false, "description": "Also report the server's role and connected_clients (INFO)"}
  },
  "required": ["url"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    password_secret: Option<String>,
    warn: Option<String>,
    crit: Option<String>,
    #[serde(default)]
    info: bool,
}

struct RedisPing;

impl Guest for RedisPing {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "redis-ping",
            "Checks that a Redis server answers PING, and how fast",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(match Check::from_config(&config) {
            Ok(check) => check.check(),
            Err(message) => Report::unknown(message),
        })
    }
}

/// Everything the check needs, validated.
struct Check {
    target: redis::Target,
    thresholds: Thresholds,
    info: bool,
}

impl Check {
    fn from_config(json: &str) -> Result<Check, String> {
        let config: Config = config::parse(json)?;
        Ok(Check {
            target: redis::Target::from_config(&config.url, config.password_secret.as_deref())?,
            thresholds: Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?,
            info: config.info,
        })
    }

    fn check(&self) -> Report {
        let display = &self.target.display;
        let connected = Instant::now();
        let mut conn = match Connection::open(&self.target) {
            Ok(conn) => conn,
            Err(err) => return Report::critical(format!("cannot connect to {display}: {}", describe_io(&err))),
        };
        let connect_ms = millis(connected);
        let result = match conn.login(&self.target) {
            Ok(()) => self.session(&mut conn, connect_ms),
            Err(LoginError::Io(err)) => Err(Failure::Io(err)),
            Err(LoginError::Auth(message)) => Err(Failure::Auth(message)),
            Err(LoginError::Select(message)) => Err(Failure::Server(message)),
        };
        match result {
            Ok(report) => report,
            Err(Failure::Auth(message)) => Report::critical(format!("authentication failed: {message}")),
            Err(Failure::Io(err)) => Report::critical(format!("{display}: {}", describe_io(&err))),
            Err(Failure::Server(message)) => Report::critical(format!("{display}: server error: {message}")),
        }
    }

    fn session(&self, conn: &mut Connection, connect_ms: f64) -> Result<Report, Failure> {
        let sent = Instant::now();
        let reply = conn.call(&["PING"])?;
        let latency_ms = millis(sent);
        match reply {
            Reply::Simple(pong) if pong == "PONG" => {}
            other => return Err(unexpected("PING", other)),
        }
        log(Level::Debug, &format!("PING answered in {latency_ms:.3} ms"));

        let mut report = Report::new(
            Status::Ok,
            format!("PONG from {} in {latency_ms:.2} ms", self.target.display),
        )
        .judged_metric("latency_ms", latency_ms, "ms", &self.thresholds)
        .metric("connect_ms", connect_ms, "ms");
        if self.info {
            let text = match conn.call(&["INFO"])? {
                Reply::Bulk(Some(text)) => text,
                other => return Err(unexpected("INFO", other)),
            };
            let field = |name: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            };
            if let Some(role) = field("role") {
                report = report.detail(format!("role: {role}"));
            }
            if let Some(clients) = field("connected_clients").and_then(|value| value.parse::<f64>().ok()) {
                report = report.metric("connected_clients", clients, "");
            }
        }
        if report.status != Status::Ok {
            report.summary = format!("{} (latency outside threshold)", report.summary);
        }
        Ok(report)
    }
}

fn unexpected(command: &str, reply: Reply) -> Failure {
    match reply {
        Reply::Error(message) if message.starts_with("NOAUTH") || message.starts_with("WRONGPASS") => {
            Failure::Auth(message)
        }
        Reply::Error(message) => Failure::Server(message),
        other => Failure::Server(format!("unexpected reply to {command}: {other:?}")),
    }
}

enum Failure {
    Auth(String),
    Io(io::Error),
    Server(String),
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Failure {
        Failure::Io(err)
    }
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

runbox_plugin_sdk::export_check!(RedisPing);
