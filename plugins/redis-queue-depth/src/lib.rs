//! `redis-queue-depth`: how deep the work queues are. LLEN of lists (RQ, Sidekiq,
//! Celery queues) and, for streams, each consumer group's pending count and lag. Metrics:
//! each depth by name, `depth` (the lists' total) and `deepest` (the largest of them
//! all). Over TLS for `rediss://` URLs.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::redis::{self, Connection, Reply};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config, describe_io};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "redis-queue-depth config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "redis://[user[:password]@]host[:port][/db], or rediss:// for TLS (the step's `tls:` says what to trust); port defaults to 6379, db to 0"},
    "password_secret": {"type": "string"},
    "lists": {"type": "array", "items": {"type": "string"}, "description": "List keys whose length is the queue depth"},
    "streams": {"type": "array", "items": {"type": "object", "properties": {"stream": {"type": "string"}, "group": {"type": "string"}}, "required": ["stream", "group"], "additionalProperties": false}},
    "warn": {"type": "string", "description": "Nagios range applied to each depth (list length, group pending and lag)"},
    "crit": {"type": "string"}
  },
  "required": ["url"],
  "anyOf": [{"required": ["lists"]}, {"required": ["streams"]}],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    password_secret: Option<String>,
    #[serde(default)]
    lists: Vec<String>,
    #[serde(default)]
    streams: Vec<StreamGroup>,
    warn: Option<String>,
    crit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamGroup {
    stream: String,
    group: String,
}

struct QueueDepth;

impl Guest for QueueDepth {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "redis-queue-depth",
            "Queue depth in Redis: list lengths and stream consumer-group pending/lag",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(check(&config).unwrap_or_else(Report::unknown))
    }
}

fn check(json: &str) -> Result<Report, String> {
    let config: Config = config::parse(json)?;
    let target = redis::Target::from_config(&config.url, config.password_secret.as_deref())?;
    let thresholds = Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?;
    let shown = target.display.clone();
    let mut conn = match target.connect_or_report() {
        Ok(conn) => conn,
        Err(report) => return Ok(report),
    };
    let call = |conn: &mut Connection, args: &[&str]| -> Result<Reply, Report> {
        conn.call(args)
            .map_err(|err| Report::critical(format!("{shown}: {}", describe_io(&err))))
    };
    let mut run = || -> Result<Report, Report> {
        let mut report = Report::new(Status::Ok, String::new());
        let mut total = 0.0;
        let mut deepest: Option<(String, f64)> = None;
        let mut note = |name: String, value: f64| {
            if deepest.as_ref().is_none_or(|(_, d)| value > *d) {
                deepest = Some((name, value));
            }
        };
        for list in &config.lists {
            let depth = match call(&mut conn, &["LLEN", list])? {
                Reply::Integer(n) => n as f64,
                Reply::Error(message) => {
                    return Err(Report::unknown(format!("LLEN {list}: {message} (is `{list}` a list?)")));
                }
                other => {
                    return Err(Report::unknown(format!("LLEN {list}: unexpected reply {other:?}")));
                }
            };
            total += depth;
            note(list.clone(), depth);
            report = report.judged_metric(list, depth, "", &thresholds);
        }
        for entry in &config.streams {
            let groups = match call(&mut conn, &["XINFO", "GROUPS", &entry.stream])? {
                Reply::Array(Some(groups)) => groups,
                Reply::Error(message) => {
                    return Err(Report::unknown(format!("XINFO GROUPS {}: {message}", entry.stream)));
                }
                other => {
                    return Err(Report::unknown(format!(
                        "XINFO GROUPS {}: unexpected reply {other:?}",
                        entry.stream
                    )));
                }
            };
            let group = groups.iter().find_map(|group| {
                let Reply::Array(Some(fields)) = group else {
                    return None;
                };
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|kv| kv[0].text() == Some(name))
                        .map(|kv| kv[1].clone())
                };
                (field("name")?.text() == Some(entry.group.as_str())).then(|| (field("pending"), field("lag")))
            });
            let Some((pending, lag)) = group else {
                return Err(Report::unknown(format!(
                    "stream `{}` has no consumer group `{}`",
                    entry.stream, entry.group
                )));
            };
            let prefix = format!("{}.{}", entry.stream, entry.group);
            if let Some(pending) = pending.and_then(|p| p.integer()) {
                note(format!("{prefix} pending"), pending as f64);
                report = report.judged_metric(&format!("{prefix}.pending"), pending as f64, "", &thresholds);
            }
            // `lag` is null when Redis cannot compute it (entries deleted under the group).
            if let Some(lag) = lag.and_then(|l| l.integer()) {
                note(format!("{prefix} lag"), lag as f64);
                report = report.judged_metric(&format!("{prefix}.lag"), lag as f64, "", &thresholds);
            }
        }
        if !config.lists.is_empty() {
            report = report.metric("depth", total, "");
        }
        // One name for the worst depth whatever the queues are called, so that a `when`
        // can compare it with a limit when the stream and group names are inputs.
        if let Some((_, depth)) = &deepest {
            report = report.metric("deepest", *depth, "");
        }
        report.summary = match deepest {
            Some((name, depth)) => format!("deepest: {name} = {depth}; lists total {total}"),
            None => "no queues measured".into(),
        };
        if report.status != Status::Ok {
            report.summary = format!("{} (outside threshold)", report.summary);
        }
        Ok(report)
    };
    Ok(run().unwrap_or_else(|report| report))
}

runbox_plugin_sdk::export_check!(QueueDepth);
