//! `rq-workers`: are the RQ (python-rq) workers of a queue alive and working? Reads
//! RQ's own worker registry as RQ 2.x keeps it (`rq/worker_registration.py`,
//! `rq/worker/base.py`; checked against rq 2.12.0): the set `rq:workers:QUEUE` holds the
//! key `rq:worker:NAME` of every worker listening on QUEUE, and each worker's hash holds
//! `last_heartbeat` (UTC, `2026-11-30T11:18:56.123456Z`), `state` (`started`, `busy`,
//! `idle`, `suspended`), `current_job` while busy, and `death` once it stopped.
//!
//! A worker heartbeats at least every `worker_ttl − 15` s while idle (every 30 s while
//! busy), and its hash expires `worker_ttl + 60` s after a heartbeat (RQ's default
//! `worker_ttl` is 420 s). A worker that stops cleanly leaves the set; one that is killed
//! stays in the set, its heartbeat ages, and then its hash expires ("gone").
//!
//! Jobs stuck in started: RQ's StartedJobRegistry `rq:wip:QUEUE` holds one
//! `JOB_ID:EXECUTION_ID` per running job, scored with the time its execution's heartbeat
//! lapses (the worker extends it while the job runs). A score in the past means the worker
//! died mid-job ("abandoned": RQ's maintenance will fail the job later); a job whose
//! `started_at` is older than its own `timeout` + 60 s (or `stuck_after_seconds`) is
//! running past the point where its worker should have killed it ("overdue"). Either makes
//! the check at least WARNING.
//!
//! Read-only: it sends SISMEMBER, SMEMBERS, EXISTS, HMGET and ZRANGE, nothing else.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::redis::{self, Connection, Reply};
use runbox_plugin_sdk::report::severity;
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config, describe_io, time};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "rq-workers config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "redis://[user[:password]@]host[:port][/db], or rediss:// for TLS (the step's `tls:` says what to trust); port defaults to 6379, db to 0"},
    "password_secret": {"type": "string", "description": "Name of a granted secret holding the password (overrides a password in the URL)"},
    "queue": {"type": "string", "default": "default", "description": "RQ queue name: the workers listed in rq:workers:QUEUE"},
    "stale_after_seconds": {"type": "integer", "minimum": 1, "default": 480, "description": "A worker whose last heartbeat is older than this is stale, not live (WARNING). Default: RQ's default worker_ttl (420 s) + 60, the TTL RQ gives the worker's hash; an idle worker heartbeats every worker_ttl − 15 s, so set worker_ttl + 60 for workers started with another --worker-ttl"},
    "warn": {"type": "string", "description": "Nagios range for the number of live workers that raises WARNING, e.g. \"2:\" (fewer than 2)"},
    "crit": {"type": "string", "default": "1:", "description": "Nagios range for the number of live workers that raises CRITICAL (default \"1:\": no live worker)"},
    "stuck_after_seconds": {"type": "integer", "minimum": 1, "description": "A started job running longer than this is stuck (WARNING). Default: the job's own `timeout` + 60 s, past which its worker should have killed it"}
  },
  "required": ["url"],
  "additionalProperties": false
}"#;

/// At most this many workers are read (one HMGET each); more are counted, not read.
const MAX_WORKERS: usize = 1000;
/// At most this many workers get a detail line.
const MAX_LINES: usize = 20;
/// The prefix of a worker's key (`BaseWorker.redis_worker_namespace_prefix`).
const WORKER_PREFIX: &str = "rq:worker:";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    password_secret: Option<String>,
    #[serde(default = "default_queue")]
    queue: String,
    #[serde(default = "default_stale_after")]
    stale_after_seconds: i64,
    warn: Option<String>,
    #[serde(default = "default_crit")]
    crit: Option<String>,
    stuck_after_seconds: Option<i64>,
}

fn default_queue() -> String {
    "default".into()
}
fn default_stale_after() -> i64 {
    480
}
fn default_crit() -> Option<String> {
    Some("1:".into())
}

/// The fields of a worker's hash this check reads (`None`: the field is absent).
#[derive(Debug, Clone, Default, PartialEq)]
struct WorkerHash {
    last_heartbeat: Option<String>,
    state: Option<String>,
    current_job: Option<String>,
    death: Option<String>,
}

/// What one registered worker turned out to be.
#[derive(Debug, Clone, PartialEq)]
enum Health {
    /// Heartbeat within `stale_after_seconds`: its state and current job.
    Live {
        state: String,
        job: Option<String>,
        age: i64,
    },
    /// Registered with a hash whose heartbeat is too old (or missing, or unreadable).
    Stale { age: Option<i64>, state: String },
    /// Registered, but its hash expired: killed without unregistering.
    Gone,
    /// Its hash records its death (it stopped; RQ has yet to drop it from the set).
    Dead,
}

/// Judges one worker from its hash (`None`: the hash does not exist), at Unix time `now`.
fn assess(hash: Option<&WorkerHash>, now: i64, stale_after: i64) -> Health {
    let Some(hash) = hash else {
        return Health::Gone;
    };
    if hash.death.is_some() {
        return Health::Dead;
    }
    let state = hash.state.clone().unwrap_or_else(|| "?".into());
    let age = hash
        .last_heartbeat
        .as_deref()
        .and_then(time::parse_rfc3339)
        .map(|beat| (now - beat).max(0));
    match age {
        Some(age) if age <= stale_after => Health::Live {
            state,
            job: hash.current_job.clone().filter(|job| !job.is_empty()),
            age,
        },
        age => Health::Stale { age, state },
    }
}

/// The detail line of one worker.
fn describe(name: &str, health: &Health) -> String {
    match health {
        Health::Live {
            state,
            job: Some(job),
            age,
        } => format!("{name}: {state} on job {job}, heartbeat {age} s ago"),
        Health::Live { state, job: None, age } => format!("{name}: {state}, heartbeat {age} s ago"),
        Health::Stale { age: Some(age), state } => {
            format!("{name}: stale, last heartbeat {age} s ago (state {state})")
        }
        Health::Stale { age: None, state } => format!("{name}: stale, no readable heartbeat (state {state})"),
        Health::Gone => format!("{name}: registered, but its hash expired (killed without unregistering?)"),
        Health::Dead => format!("{name}: registered, but its hash records its death"),
    }
}

/// At most this many started jobs are read.
const MAX_STARTED: usize = 1000;
/// RQ's grace after a job's timeout before its worker is expected to have killed it.
const TIMEOUT_GRACE: i64 = 60;

/// A job in `rq:wip:QUEUE` that is not running as it should.
#[derive(Debug, Clone, PartialEq)]
enum Stuck {
    /// Its execution's heartbeat lapsed `for_s` seconds ago: its worker is gone.
    Abandoned { id: String, for_s: i64 },
    /// Running for `for_s` seconds, past `limit_s`.
    Overdue { id: String, for_s: i64, limit_s: i64 },
}

/// Judges one started job: its registry score (when its heartbeat lapses), its
/// `started_at` and `timeout` fields, at Unix time `now`.
fn assess_started(
    id: &str,
    lapses_at: f64,
    started_at: Option<&str>,
    timeout: Option<&str>,
    now: i64,
    stuck_after: Option<i64>,
) -> Option<Stuck> {
    if lapses_at < now as f64 {
        return Some(Stuck::Abandoned {
            id: id.into(),
            for_s: now - lapses_at as i64,
        });
    }
    let for_s = now - started_at.and_then(time::parse_rfc3339)?;
    let limit_s = stuck_after.or_else(|| Some(timeout?.parse::<i64>().ok().filter(|t| *t > 0)? + TIMEOUT_GRACE))?;
    (for_s > limit_s).then(|| Stuck::Overdue {
        id: id.into(),
        for_s,
        limit_s,
    })
}

/// What the registry says about a queue's workers.
struct Registry {
    queue: String,
    /// Whether `rq:queue:QUEUE` is in `rq:queues` (RQ adds it on the first enqueue).
    known_queue: bool,
    /// Whether `rq:suspended` is set (`rq suspend`): workers take no new jobs.
    suspended: bool,
    /// Each worker read, by name.
    workers: Vec<(String, Health)>,
    /// Registered workers beyond [`MAX_WORKERS`], not read.
    unread: usize,
    /// How many jobs `rq:wip:QUEUE` holds.
    started: usize,
    /// Those of the first [`MAX_STARTED`] that are stuck.
    stuck: Vec<Stuck>,
}

/// The report: live workers judged by `thresholds`; stale, gone or dead workers and a
/// suspension are at least WARNING.
fn judge(registry: &Registry, thresholds: &Thresholds) -> Report {
    let count = |pick: fn(&Health) -> bool| registry.workers.iter().filter(|(_, h)| pick(h)).count();
    let live = count(|h| matches!(h, Health::Live { .. }));
    let busy = count(|h| matches!(h, Health::Live { state, .. } if state == "busy"));
    let idle = count(|h| matches!(h, Health::Live { state, .. } if state == "idle"));
    let stale = count(|h| matches!(h, Health::Stale { .. }));
    let gone = count(|h| matches!(h, Health::Gone | Health::Dead));
    let oldest = registry
        .workers
        .iter()
        .filter_map(|(_, h)| match h {
            Health::Live { age, .. } => Some(*age),
            _ => None,
        })
        .max();
    let queue = &registry.queue;
    let mut summary = match live {
        0 => format!("no live worker on queue {queue}"),
        1 => format!("1 live worker on queue {queue} ({busy} busy, {idle} idle)"),
        n => format!("{n} live workers on queue {queue} ({busy} busy, {idle} idle)"),
    };
    let mut trouble = Vec::new();
    if stale > 0 {
        trouble.push(format!("{stale} stale"));
    }
    if gone > 0 {
        trouble.push(format!("{gone} gone"));
    }
    if !trouble.is_empty() {
        summary = format!("{summary}; {}", trouble.join(", "));
    }
    if !registry.stuck.is_empty() {
        summary = format!(
            "{summary}; {} of {} started jobs stuck",
            registry.stuck.len(),
            registry.started
        );
    }
    if registry.suspended {
        summary = format!("{summary}; workers are suspended (rq:suspended is set: `rq resume` lets them work)");
    }
    let mut report = Report::new(Status::Ok, String::new())
        .judged_metric("workers", live as f64, "", thresholds)
        .metric("busy", busy as f64, "")
        .metric("idle", idle as f64, "")
        .metric("stale", stale as f64, "")
        .metric("gone", gone as f64, "")
        .metric("started", registry.started as f64, "")
        .metric("stuck", registry.stuck.len() as f64, "");
    if let Some(oldest) = oldest {
        report = report.metric("oldest_heartbeat_s", oldest as f64, "s");
    }
    let threshold_status = report.status;
    let stuck = !registry.stuck.is_empty();
    if (stale > 0 || gone > 0 || stuck || registry.suspended) && severity(report.status) < severity(Status::Warning) {
        report.status = Status::Warning;
    }
    if threshold_status != Status::Ok {
        summary = format!("{summary} (outside threshold)");
    }
    report.summary = summary;
    for (name, health) in registry.workers.iter().take(MAX_LINES) {
        report = report.detail(describe(name, health));
    }
    if registry.workers.len() > MAX_LINES {
        report = report.detail(format!("… and {} more", registry.workers.len() - MAX_LINES));
    }
    for job in registry.stuck.iter().take(MAX_LINES) {
        report = report.detail(match job {
            Stuck::Abandoned { id, for_s } => format!(
                "job {id}: in started, but its worker stopped heartbeating it {for_s} s ago (abandoned; RQ's maintenance will move it to failed)"
            ),
            Stuck::Overdue { id, for_s, limit_s } => {
                format!("job {id}: started {for_s} s ago, past {limit_s} s (stuck)")
            }
        });
    }
    if registry.stuck.len() > MAX_LINES {
        report = report.detail(format!("… and {} more stuck jobs", registry.stuck.len() - MAX_LINES));
    }
    if registry.unread > 0 {
        report = report.detail(format!(
            "{} more registered workers were not read (at most {MAX_WORKERS} are)",
            registry.unread
        ));
    }
    if live == 0 && !registry.known_queue {
        report = report.detail(format!(
            "rq:queue:{queue} is not in rq:queues: no job was ever enqueued on it — check the queue name"
        ));
    }
    report
}

struct RqWorkers;

impl Guest for RqWorkers {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "rq-workers",
            "Health of the RQ workers of a queue: live, busy, idle and stale workers from RQ's worker registry",
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
    Ok(match read(&mut conn, &config) {
        Ok(registry) => judge(&registry, &thresholds),
        Err(Failed::Io(err)) => Report::critical(format!("{shown}: {}", describe_io(&err))),
        Err(Failed::Reply(message)) => Report::unknown(format!("{shown}: {message}")),
    })
}

enum Failed {
    Io(std::io::Error),
    Reply(String),
}

/// Reads the registry of `config.queue`.
fn read(conn: &mut Connection, config: &Config) -> Result<Registry, Failed> {
    let mut call = |args: &[&str]| -> Result<Reply, Failed> {
        match conn.call(args).map_err(Failed::Io)? {
            Reply::Error(message) => Err(Failed::Reply(format!("{}: {message}", args.join(" ")))),
            reply => Ok(reply),
        }
    };
    let queue = &config.queue;
    let known_queue = call(&["SISMEMBER", "rq:queues", &format!("rq:queue:{queue}")])?.integer() == Some(1);
    let suspended = call(&["EXISTS", "rq:suspended"])?.integer().unwrap_or(0) > 0;
    let set = format!("rq:workers:{queue}");
    let mut keys: Vec<String> = match call(&["SMEMBERS", &set])? {
        Reply::Array(Some(members)) => members.iter().filter_map(|m| m.text().map(String::from)).collect(),
        Reply::Array(None) => Vec::new(),
        other => return Err(Failed::Reply(format!("SMEMBERS {set}: unexpected reply {other:?}"))),
    };
    keys.sort();
    let unread = keys.len().saturating_sub(MAX_WORKERS);
    keys.truncate(MAX_WORKERS);
    let now = time::now();
    let mut workers = Vec::new();
    for key in keys {
        let fields = ["last_heartbeat", "state", "current_job", "death"];
        let mut args = vec!["HMGET", key.as_str()];
        args.extend(fields);
        let values: Vec<Option<String>> = match call(&args)? {
            Reply::Array(Some(values)) => values.iter().map(|v| v.text().map(String::from)).collect(),
            other => return Err(Failed::Reply(format!("HMGET {key}: unexpected reply {other:?}"))),
        };
        // HMGET answers nulls for a hash that does not exist; RQ's hash always has a
        // heartbeat, so all nulls is a missing hash.
        let hash = values.iter().any(Option::is_some).then(|| WorkerHash {
            last_heartbeat: values.first().cloned().flatten(),
            state: values.get(1).cloned().flatten(),
            current_job: values.get(2).cloned().flatten(),
            death: values.get(3).cloned().flatten(),
        });
        let name = key.strip_prefix(WORKER_PREFIX).unwrap_or(&key).to_string();
        let health = assess(hash.as_ref(), now, config.stale_after_seconds);
        workers.push((name, health));
    }
    let wip = format!("rq:wip:{queue}");
    let started = call(&["ZCARD", &wip])?.integer().unwrap_or(0) as usize;
    let entries: Vec<String> = match call(&["ZRANGE", &wip, "0", &(MAX_STARTED - 1).to_string(), "WITHSCORES"])? {
        Reply::Array(Some(items)) => items.iter().filter_map(|m| m.text().map(String::from)).collect(),
        other => return Err(Failed::Reply(format!("ZRANGE {wip}: unexpected reply {other:?}"))),
    };
    let mut stuck = Vec::new();
    for pair in entries.chunks(2) {
        let [member, score] = pair else { continue };
        // `JOB_ID:EXECUTION_ID` (RQ's composite key); the score is when its heartbeat lapses.
        let id = member.rsplit_once(':').map_or(member.as_str(), |(id, _)| id);
        let lapses_at = match score.as_str() {
            "inf" | "+inf" => f64::INFINITY,
            score => score.parse().unwrap_or(f64::INFINITY),
        };
        let values: Vec<Option<String>> = match call(&["HMGET", &format!("rq:job:{id}"), "started_at", "timeout"])? {
            Reply::Array(Some(values)) => values.iter().map(|v| v.text().map(String::from)).collect(),
            other => return Err(Failed::Reply(format!("HMGET rq:job:{id}: unexpected reply {other:?}"))),
        };
        let field = |i: usize| values.get(i).cloned().flatten().filter(|v| !v.is_empty());
        if let Some(job) = assess_started(
            id,
            lapses_at,
            field(0).as_deref(),
            field(1).as_deref(),
            now,
            config.stuck_after_seconds,
        ) {
            stuck.push(job);
        }
    }
    Ok(Registry {
        queue: queue.clone(),
        known_queue,
        suspended,
        workers,
        unread,
        started,
        stuck,
    })
}

runbox_plugin_sdk::export_check!(RqWorkers);

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000; // 2026-11-18T09:46:40Z

    fn beat(age: i64) -> Option<String> {
        let utc = time::Utc::from_unix(NOW - age);
        // RQ's format: microseconds and a Z.
        Some(format!("{}.123456Z", utc.rfc3339().trim_end_matches('Z')))
    }

    fn hash(age: Option<i64>, state: &str, job: Option<&str>) -> WorkerHash {
        WorkerHash {
            last_heartbeat: age.and_then(beat),
            state: Some(state.into()),
            current_job: job.map(String::from),
            death: None,
        }
    }

    #[test]
    fn workers_are_live_stale_gone_or_dead() {
        let dead = WorkerHash {
            death: Some("2026-11-18T09:40:00.000000Z".into()),
            ..hash(Some(400), "idle", None)
        };
        let garbled = WorkerHash {
            last_heartbeat: Some("yesterday".into()),
            ..hash(None, "idle", None)
        };
        // (hash, health)
        let table: Vec<(Option<WorkerHash>, Health)> = vec![
            (
                Some(hash(Some(3), "busy", Some("job-1"))),
                Health::Live {
                    state: "busy".into(),
                    job: Some("job-1".into()),
                    age: 3,
                },
            ),
            (
                Some(hash(Some(480), "idle", Some(""))),
                Health::Live {
                    state: "idle".into(),
                    job: None,
                    age: 480,
                },
            ),
            (
                Some(hash(Some(481), "busy", Some("job-2"))),
                Health::Stale {
                    age: Some(481),
                    state: "busy".into(),
                },
            ),
            // A heartbeat from the future (clock skew) is fresh, not negative.
            (
                Some(hash(Some(-5), "idle", None)),
                Health::Live {
                    state: "idle".into(),
                    job: None,
                    age: 0,
                },
            ),
            (
                Some(garbled),
                Health::Stale {
                    age: None,
                    state: "idle".into(),
                },
            ),
            (
                Some(hash(None, "started", None)),
                Health::Stale {
                    age: None,
                    state: "started".into(),
                },
            ),
            (None, Health::Gone),
            (Some(dead), Health::Dead),
        ];
        for (hash, expected) in table {
            assert_eq!(assess(hash.as_ref(), NOW, 480), expected, "{hash:?}");
        }
        assert_eq!(time::parse_rfc3339(&beat(3).unwrap()), Some(NOW - 3));
    }

    fn registry(workers: Vec<(&str, Health)>) -> Registry {
        Registry {
            started: 0,
            stuck: Vec::new(),
            queue: "default".into(),
            known_queue: true,
            suspended: false,
            workers: workers.into_iter().map(|(n, h)| (n.to_string(), h)).collect(),
            unread: 0,
        }
    }

    fn live(state: &str, job: Option<&str>, age: i64) -> Health {
        Health::Live {
            state: state.into(),
            job: job.map(String::from),
            age,
        }
    }

    fn metric(report: &Report, name: &str) -> f64 {
        report.metrics.iter().find(|m| m.name == name).unwrap().value
    }

    fn default_thresholds() -> Thresholds {
        Thresholds::parse(None, default_crit().as_deref()).unwrap()
    }

    #[test]
    fn no_live_worker_is_critical_by_default() {
        let report = judge(&registry(vec![]), &default_thresholds());
        assert_eq!(report.status, Status::Critical);
        assert_eq!(report.summary, "no live worker on queue default (outside threshold)");
        assert_eq!(metric(&report, "workers"), 0.0);

        let report = judge(
            &registry(vec![
                ("w1", Health::Gone),
                (
                    "w2",
                    Health::Stale {
                        age: Some(900),
                        state: "busy".into(),
                    },
                ),
            ]),
            &default_thresholds(),
        );
        assert_eq!(report.status, Status::Critical);
        assert_eq!(
            report.summary,
            "no live worker on queue default; 1 stale, 1 gone (outside threshold)"
        );
        assert_eq!(
            report.details,
            [
                "w1: registered, but its hash expired (killed without unregistering?)",
                "w2: stale, last heartbeat 900 s ago (state busy)",
            ]
        );
    }

    #[test]
    fn live_workers_are_ok_and_counted_busy_or_idle() {
        let report = judge(
            &registry(vec![
                ("w1", live("busy", Some("abc"), 2)),
                ("w2", live("idle", None, 40)),
            ]),
            &default_thresholds(),
        );
        assert_eq!(report.status, Status::Ok);
        assert_eq!(report.summary, "2 live workers on queue default (1 busy, 1 idle)");
        assert_eq!(
            (
                metric(&report, "workers"),
                metric(&report, "busy"),
                metric(&report, "idle"),
                metric(&report, "oldest_heartbeat_s")
            ),
            (2.0, 1.0, 1.0, 40.0)
        );
        assert_eq!(
            report.details,
            ["w1: busy on job abc, heartbeat 2 s ago", "w2: idle, heartbeat 40 s ago"]
        );
        assert_eq!(report.metrics[0].crit.as_deref(), Some("1:"));
    }

    #[test]
    fn stale_workers_suspension_and_thresholds_warn() {
        let stale = Health::Stale {
            age: Some(600),
            state: "idle".into(),
        };
        let report = judge(
            &registry(vec![("w1", live("idle", None, 5)), ("w2", stale)]),
            &default_thresholds(),
        );
        assert_eq!(report.status, Status::Warning);
        assert_eq!(
            report.summary,
            "1 live worker on queue default (0 busy, 1 idle); 1 stale"
        );

        let mut suspended = registry(vec![("w1", live("suspended", None, 5))]);
        suspended.suspended = true;
        let report = judge(&suspended, &default_thresholds());
        assert_eq!(report.status, Status::Warning);
        assert!(
            report
                .summary
                .ends_with("workers are suspended (rq:suspended is set: `rq resume` lets them work)")
        );

        let two = Thresholds::parse(Some("2:"), Some("1:")).unwrap();
        let report = judge(&registry(vec![("w1", live("idle", None, 5))]), &two);
        assert_eq!(report.status, Status::Warning);
        assert!(report.summary.ends_with("(outside threshold)"), "{}", report.summary);
    }

    #[test]
    fn an_unknown_queue_without_workers_says_to_check_its_name() {
        let mut unknown = registry(vec![]);
        unknown.known_queue = false;
        let report = judge(&unknown, &default_thresholds());
        assert_eq!(report.status, Status::Critical);
        assert_eq!(
            report.details,
            ["rq:queue:default is not in rq:queues: no job was ever enqueued on it — check the queue name"]
        );
    }

    #[test]
    fn config_defaults_follow_rq() {
        let config: Config = config::parse(r#"{"url": "redis://127.0.0.1"}"#).unwrap();
        assert_eq!(
            (
                config.queue.as_str(),
                config.stale_after_seconds,
                config.crit.as_deref()
            ),
            ("default", 480, Some("1:"))
        );
        let err = config::parse::<Config>(r#"{"url": "redis://h", "stale": 1}"#)
            .err()
            .unwrap();
        assert!(err.contains("unknown field `stale`"), "{err}");
    }

    #[test]
    fn started_jobs_are_abandoned_overdue_or_fine() {
        let started = |age: i64| beat(age).unwrap();
        let later = (NOW + 100) as f64;
        // Heartbeat lapsed 30 s ago: abandoned, whatever its age.
        assert_eq!(
            assess_started("j1", (NOW - 30) as f64, Some(&started(5)), Some("180"), NOW, None),
            Some(Stuck::Abandoned {
                id: "j1".into(),
                for_s: 30
            })
        );
        // Its own timeout (180) + 60 s is the default limit.
        assert_eq!(
            assess_started("j2", later, Some(&started(240)), Some("180"), NOW, None),
            None
        );
        assert_eq!(
            assess_started("j3", later, Some(&started(241)), Some("180"), NOW, None),
            Some(Stuck::Overdue {
                id: "j3".into(),
                for_s: 241,
                limit_s: 240
            })
        );
        // stuck_after_seconds overrides; no timeout (-1: none) and no override: never overdue.
        assert!(assess_started("j4", later, Some(&started(20)), Some("180"), NOW, Some(10)).is_some());
        assert_eq!(
            assess_started("j5", later, Some(&started(99_999)), Some("-1"), NOW, None),
            None
        );
        assert_eq!(
            assess_started("j6", f64::INFINITY, None, Some("180"), NOW, Some(1)),
            None
        );
        let mut registry = registry(vec![("w1", live("busy", Some("j3"), 3))]);
        registry.started = 2;
        registry.stuck = vec![Stuck::Overdue {
            id: "j3".into(),
            for_s: 241,
            limit_s: 240,
        }];
        let report = judge(&registry, &default_thresholds());
        assert_eq!(report.status, Status::Warning);
        assert!(
            report.summary.ends_with("; 1 of 2 started jobs stuck"),
            "{}",
            report.summary
        );
        assert_eq!(metric(&report, "stuck"), 1.0);
        assert_eq!(metric(&report, "started"), 2.0);
        assert!(
            report
                .details
                .iter()
                .any(|d| d == "job j3: started 241 s ago, past 240 s (stuck)")
        );
    }
}
