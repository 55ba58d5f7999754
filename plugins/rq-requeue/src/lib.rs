//! `rq-requeue` (mitigation): requeue failed RQ (python-rq) jobs exactly as RQ's own
//! `rq requeue` does (rq 2.x, `FailedJobRegistry.requeue`, checked against rq 2.12.0):
//! ZREM the id from `rq:failed:QUEUE` (nothing more happens if it was not there), then in
//! one transaction clear the job's `started_at`, `ended_at` and `exc_info`, mark it
//! `queued` with a fresh `enqueued_at`, renew its TTL if it has one, and RPUSH it onto
//! `rq:queue:ORIGIN` (the queue it came from), where a worker picks it up.
//!
//! The plan reads, changes nothing, and lists each job it will requeue; apply requeues
//! only the jobs the approved plan lists, so a failure that arrives between plan and
//! apply is not swept in with `all: true`.

use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::redis::{self, Connection, Reply};
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config, time};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "rq-requeue config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "redis://[user[:password]@]host[:port][/db], or rediss:// for TLS (the step's `tls:` says what to trust); port defaults to 6379, db to 0"},
    "password_secret": {"type": "string", "description": "Name of a granted secret holding the password (overrides a password in the URL)"},
    "queue": {"type": "string", "default": "default", "description": "RQ queue whose failed-job registry (rq:failed:QUEUE) holds the jobs"},
    "job_id": {"type": "string", "description": "One job to requeue, e.g. `${{ item }}` in a for_each over rq-failed-jobs' job_ids"},
    "job_ids": {"type": "array", "items": {"type": "string"}, "description": "Jobs to requeue, e.g. `${{ steps.failed.outputs.job_ids }}`"},
    "all": {"type": "boolean", "default": false, "description": "Requeue every job in the failed registry (oldest first, at most max_jobs), like `rq requeue --all`"},
    "max_jobs": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100, "description": "Most jobs one run requeues; the plan says how many more remain"}
  },
  "required": ["url"],
  "additionalProperties": false
}"#;

/// RQ job ids (`[A-Za-z0-9_-]+`, as rq-failed-jobs hands them on); anything else is
/// refused before it reaches a key name.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `zlib.compress(b"")`: what RQ writes as a requeued job's `exc_info` (`job._exc_info = ''`).
const EMPTY_ZLIB: &[u8] = &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    password_secret: Option<String>,
    #[serde(default = "default_queue")]
    queue: String,
    job_id: Option<String>,
    job_ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    #[serde(default = "default_max_jobs")]
    max_jobs: usize,
}

fn default_queue() -> String {
    "default".into()
}
fn default_max_jobs() -> usize {
    100
}

/// Which jobs the config asks for.
enum Wanted {
    Ids(Vec<String>),
    All,
}

impl Config {
    fn wanted(&self) -> Result<Wanted, String> {
        let given = [self.job_id.is_some(), self.job_ids.is_some(), self.all];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err("give exactly one of config fields `job_id`, `job_ids` or `all: true`".into());
        }
        if self.all {
            return Ok(Wanted::All);
        }
        let ids: Vec<String> = match (&self.job_id, &self.job_ids) {
            (Some(id), _) => vec![id.clone()],
            (_, Some(ids)) => ids.clone(),
            _ => unreachable!("one field is given"),
        };
        if let Some(bad) = ids.iter().find(|id| !valid_id(id)) {
            return Err(format!(
                "config field `job_ids`: {bad:?} is not an RQ job id ([A-Za-z0-9_-], at most 128)"
            ));
        }
        if ids.len() > self.max_jobs {
            return Err(format!(
                "config field `job_ids`: {} jobs, more than max_jobs ({})",
                ids.len(),
                self.max_jobs
            ));
        }
        Ok(Wanted::Ids(ids))
    }
}

/// One job the plan will requeue.
#[derive(Debug, PartialEq)]
struct Job {
    id: String,
    origin: String,
}

/// The change line for a job; [`planned_ids`] reads the id back.
fn change_line(job: &Job, queue: &str) -> String {
    format!("requeue {} from rq:failed:{queue} onto rq:queue:{}", job.id, job.origin)
}

/// The job ids an approved plan lists, in order.
fn planned_ids(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .filter_map(|change| change.strip_prefix("requeue ")?.split(' ').next())
        .filter(|id| valid_id(id))
        .map(String::from)
        .collect()
}

struct RqRequeue;

impl Guest for RqRequeue {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "rq-requeue",
            "Requeues failed RQ jobs as `rq requeue` does; the plan lists each job",
            SCHEMA
        )
    }

    fn plan(config: String) -> Result<Plan, String> {
        let (config, mut conn) = connect(&config)?;
        let registry = format!("rq:failed:{}", config.queue);
        let (candidates, more) = match config.wanted()? {
            Wanted::Ids(ids) => (ids, 0),
            Wanted::All => {
                // RQ lists the registry after dropping expired entries (score < now);
                // reading from now on gives the same list without writing.
                let now = time::now().to_string();
                let ids = texts(call(&mut conn, &["ZRANGEBYSCORE", &registry, &now, "+inf"])?);
                let more = ids.len().saturating_sub(config.max_jobs);
                (ids.into_iter().take(config.max_jobs).collect(), more)
            }
        };
        let mut jobs = Vec::new();
        let mut notes = Vec::new();
        for id in candidates {
            if !valid_id(&id) {
                notes.push(format!("{id:?}: not an RQ job id, left alone"));
                continue;
            }
            if matches!(call(&mut conn, &["ZSCORE", &registry, &id])?, Reply::Bulk(None)) {
                notes.push(format!("{id}: not in {registry}, nothing to requeue"));
                continue;
            }
            match call(&mut conn, &["HGET", &format!("rq:job:{id}"), "origin"])? {
                Reply::Bulk(Some(origin)) if !origin.is_empty() => jobs.push(Job { id, origin }),
                _ => notes.push(format!(
                    "{id}: in {registry} but its job hash rq:job:{id} is gone (expired), so RQ cannot requeue it"
                )),
            }
        }
        if more > 0 {
            notes.push(format!(
                "{more} more failed jobs in {registry} beyond max_jobs {}: run again",
                config.max_jobs
            ));
        }
        let mut summary = match jobs.len() {
            0 => format!("no failed job of queue {} to requeue", config.queue),
            1 => format!("requeue 1 failed job of queue {}", config.queue),
            n => format!("requeue {n} failed jobs of queue {}", config.queue),
        };
        // The changes are the jobs only; what will not be requeued is said in the summary.
        if !notes.is_empty() {
            let shown: Vec<&str> = notes.iter().take(5).map(String::as_str).collect();
            summary = format!("{summary}; not requeued: {}", shown.join("; "));
            if notes.len() > shown.len() {
                summary = format!("{summary}; and {} more", notes.len() - shown.len());
            }
        }
        Ok(Plan {
            summary,
            changes: jobs.iter().map(|job| change_line(job, &config.queue)).collect(),
            destructive: false,
        })
    }

    fn apply(config: String, plan: Plan) -> Result<Outcome, String> {
        let (config, mut conn) = connect(&config)?;
        let registry = format!("rq:failed:{}", config.queue);
        let mut requeued = Vec::new();
        let mut changes = Vec::new();
        let mut missed = Vec::new();
        for id in planned_ids(&plan) {
            match requeue(&mut conn, &registry, &id)? {
                Some(origin) => {
                    changes.push(format!("requeued {id} onto rq:queue:{origin}"));
                    requeued.push(id);
                }
                None => missed.push(format!(
                    "{id}: no longer in {registry} (requeued or expired since the plan)"
                )),
            }
        }
        let status = if missed.is_empty() { Status::Ok } else { Status::Warning };
        let mut summary = format!(
            "requeued {} of {} planned jobs",
            requeued.len(),
            requeued.len() + missed.len()
        );
        if !missed.is_empty() {
            summary = format!("{summary}; {}", missed.join("; "));
        }
        Ok(Outcome::new(status, summary, changes).output("requeued", &requeued))
    }
}

/// `FailedJobRegistry.requeue(id)`: the job's origin queue, or `None` when the id was not
/// in the registry (RQ's `InvalidJobOperation`: nothing is changed).
fn requeue(conn: &mut Connection, registry: &str, id: &str) -> Result<Option<String>, String> {
    let key = format!("rq:job:{id}");
    let fields = texts_or_null(call(conn, &["HMGET", &key, "origin", "ttl"])?);
    let (Some(origin), ttl) = (fields.first().cloned().flatten(), fields.get(1).cloned().flatten()) else {
        return Ok(None);
    };
    if call(conn, &["ZREM", registry, id])?.integer() != Some(1) {
        return Ok(None);
    }
    let enqueued_at = format!(
        "{}.000000Z",
        time::Utc::from_unix(time::now()).rfc3339().trim_end_matches('Z')
    );
    let queue = format!("rq:queue:{origin}");
    call(conn, &["MULTI"])?;
    let hset: Vec<&[u8]> = vec![
        b"HSET",
        key.as_bytes(),
        b"started_at",
        b"",
        b"ended_at",
        b"",
        b"exc_info",
        EMPTY_ZLIB,
        b"status",
        b"queued",
        b"enqueued_at",
        enqueued_at.as_bytes(),
        b"origin",
        origin.as_bytes(),
    ];
    queued(conn.call_bytes(&hset).map_err(|err| err.to_string())?)?;
    // `job.cleanup(ttl=job.ttl)`: a job with a TTL gets it again from now.
    if let Some(ttl) = ttl.and_then(|ttl| ttl.parse::<i64>().ok()).filter(|ttl| *ttl > 0) {
        let ttl = ttl.to_string();
        for k in [key.clone(), format!("{key}:dependents"), format!("{key}:dependencies")] {
            queued(call(conn, &["EXPIRE", &k, &ttl])?)?;
        }
    }
    queued(call(conn, &["RPUSH", &queue, id])?)?;
    match call(conn, &["EXEC"])? {
        Reply::Array(Some(_)) => Ok(Some(origin)),
        other => Err(format!("requeue {id}: EXEC answered {other:?}")),
    }
}

fn queued(reply: Reply) -> Result<(), String> {
    match reply {
        Reply::Simple(text) if text == "QUEUED" => Ok(()),
        Reply::Error(message) => Err(message),
        other => Err(format!("expected QUEUED, got {other:?}")),
    }
}

fn connect(json: &str) -> Result<(Config, Connection), String> {
    let config: Config = config::parse(json)?;
    config.wanted()?;
    let target = redis::Target::from_config(&config.url, config.password_secret.as_deref())?;
    let conn = target.connect().map_err(|err| format!("{}: {err}", target.display))?;
    Ok((config, conn))
}

/// One command; an error reply is an error naming the command.
fn call(conn: &mut Connection, args: &[&str]) -> Result<Reply, String> {
    match conn.call(args).map_err(|err| format!("{}: {err}", args[0]))? {
        Reply::Error(message) => Err(format!("{}: {message}", args.join(" "))),
        reply => Ok(reply),
    }
}

fn texts(reply: Reply) -> Vec<String> {
    texts_or_null(reply).into_iter().flatten().collect()
}

fn texts_or_null(reply: Reply) -> Vec<Option<String>> {
    match reply {
        Reply::Array(Some(items)) => items.iter().map(|item| item.text().map(String::from)).collect(),
        _ => Vec::new(),
    }
}

runbox_plugin_sdk::export_mitigation!(RqRequeue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_reads_back_exactly_the_ids_its_plan_listed() {
        let plan = Plan {
            summary: "requeue 2 failed jobs of queue default".into(),
            changes: vec![
                change_line(
                    &Job {
                        id: "a-1".into(),
                        origin: "default".into(),
                    },
                    "default",
                ),
                change_line(
                    &Job {
                        id: "b_2".into(),
                        origin: "high".into(),
                    },
                    "default",
                ),
                "requeue ../x from somewhere".into(),
            ],
            destructive: false,
        };
        assert_eq!(planned_ids(&plan), vec!["a-1".to_string(), "b_2".to_string()]);
    }

    #[test]
    fn exactly_one_selector_and_only_rq_ids() {
        let parse = |json: &str| config::parse::<Config>(json).unwrap().wanted().err();
        assert!(
            parse(r#"{"url":"redis://h","all":true,"job_id":"a"}"#)
                .unwrap()
                .contains("exactly one")
        );
        assert!(parse(r#"{"url":"redis://h"}"#).unwrap().contains("exactly one"));
        assert!(
            parse(r#"{"url":"redis://h","job_id":"a b"}"#)
                .unwrap()
                .contains("not an RQ job id")
        );
        assert!(
            parse(r#"{"url":"redis://h","job_ids":["a","b"],"max_jobs":1}"#)
                .unwrap()
                .contains("more than max_jobs")
        );
        assert_eq!(parse(r#"{"url":"redis://h","job_ids":["a","b"]}"#), None);
    }

    #[test]
    fn the_empty_exc_info_is_what_zlib_writes_for_an_empty_string() {
        // zlib header 78 9c, a final empty fixed block (03 00), Adler-32 of nothing (1).
        assert_eq!(EMPTY_ZLIB[..2], [0x78, 0x9c]);
        assert_eq!(u32::from_be_bytes(EMPTY_ZLIB[4..8].try_into().unwrap()), 1);
    }
}
