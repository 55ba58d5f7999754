//! `redis-ping`: connects to Redis, authenticates, selects the database, sends PING
//! and reports the round-trip latency; optionally the server's role and client count.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::redis::{Connection, Reply};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::url::{ServiceUrl, redact};
use runbox_plugin_sdk::{Info, Level, Report, Status, config, log, secret};
use serde::Deserialize;
use std::io;
use std::time::Instant;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "redis-ping config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "redis://[user[:password]@]host[:port][/db]; port defaults to 6379, db to 0"},
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
        Info {
            name: "redis-ping".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Checks that a Redis server answers PING, and how fast".into(),
            config_schema: SCHEMA.into(),
        }
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(match Target::from_config(&config) {
            Ok(target) => target.check(),
            Err(message) => Report::unknown(message),
        })
    }
}

/// Everything the check needs, validated.
struct Target {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    db: u32,
    thresholds: Thresholds,
    info: bool,
    display: String,
}

impl Target {
    fn from_config(json: &str) -> Result<Target, String> {
        let config: Config = config::parse(json)?;
        let url = ServiceUrl::parse(&config.url, &["redis"]).map_err(|err| config::field_error("url", err))?;
        let db = match url.path.as_str() {
            "" => 0,
            path => path
                .parse::<u32>()
                .map_err(|_| config::field_error("url", format!("database \"{path}\" is not a number")))?,
        };
        let password = match &config.password_secret {
            Some(name) => Some(secret(name).map_err(|err| config::field_error("password_secret", err))?),
            None => url.password,
        };
        Ok(Target {
            display: redact(&config.url),
            host: url.host,
            port: url.port.unwrap_or(6379),
            user: url.user,
            password,
            db,
            thresholds: Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?,
            info: config.info,
        })
    }

    fn check(&self) -> Report {
        let connected = Instant::now();
        let mut conn = match Connection::open(&self.host, self.port) {
            Ok(conn) => conn,
            Err(err) => {
                return Report::critical(format!("cannot connect to {}: {}", self.display, describe(&err)));
            }
        };
        let connect_ms = millis(connected);
        match self.session(&mut conn, connect_ms) {
            Ok(report) => report,
            Err(Failure::Auth(message)) => Report::critical(format!("authentication failed: {message}")),
            Err(Failure::Io(err)) => Report::critical(format!("{}: {}", self.display, describe(&err))),
            Err(Failure::Server(message)) => Report::critical(format!("{}: server error: {message}", self.display)),
        }
    }

    fn session(&self, conn: &mut Connection, connect_ms: f64) -> Result<Report, Failure> {
        if let Some(password) = &self.password {
            let reply = match &self.user {
                Some(user) => conn.call(&["AUTH", user, password])?,
                None => conn.call(&["AUTH", password])?,
            };
            if let Reply::Error(message) = reply {
                return Err(Failure::Auth(message));
            }
        }
        if self.db != 0 {
            let reply = conn.call(&["SELECT", &self.db.to_string()])?;
            reply.into_result().map_err(|message| self.server_error(message))?;
        }
        let sent = Instant::now();
        let reply = conn.call(&["PING"])?;
        let latency_ms = millis(sent);
        match reply {
            Reply::Simple(pong) if pong == "PONG" => {}
            other => return Err(self.unexpected("PING", other)),
        }
        log(Level::Debug, &format!("PING answered in {latency_ms:.3} ms"));

        let mut report = Report::new(Status::Ok, format!("PONG from {} in {latency_ms:.2} ms", self.display))
            .judged_metric("latency_ms", latency_ms, "ms", &self.thresholds)
            .metric("connect_ms", connect_ms, "ms");
        if self.info {
            let text = match conn.call(&["INFO"])? {
                Reply::Bulk(Some(text)) => text,
                other => return Err(self.unexpected("INFO", other)),
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

    fn unexpected(&self, command: &str, reply: Reply) -> Failure {
        match reply {
            Reply::Error(message) => self.server_error(message),
            other => Failure::Server(format!("unexpected reply to {command}: {other:?}")),
        }
    }

    fn server_error(&self, message: String) -> Failure {
        if message.starts_with("NOAUTH") || message.starts_with("WRONGPASS") {
            Failure::Auth(message)
        } else {
            Failure::Server(message)
        }
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

fn describe(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::PermissionDenied => "connection not permitted by the sandbox".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out waiting for the server".into(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => "connection closed by the server".into(),
        _ => err.to_string(),
    }
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

runbox_plugin_sdk::export_check!(RedisPing);
