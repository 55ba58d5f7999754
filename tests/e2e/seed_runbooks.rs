//! The shipped runbooks that implement the seed playbooks (runbooks/*.yaml, each naming
//! its seed), run end to end with `runbox run runbooks/X.yaml --set …` against real
//! services: redis-server, PostgreSQL 15 over verified TLS, s3s-fs, and real RQ workers
//! (python-rq from the test-servers venv) whose jobs really fail. HTTP stand-ins serve
//! only the applications' own endpoints: the RQ application (tests/e2e/rq_app.py, on RQ's
//! own API), an ASP.NET-style health endpoint and the artifact workers' /health.
//!
//! Each test also pins what the runbook fixed against its seed: per-job replay of
//! exactly the failed ids, worker health from the workers themselves, inline jobs only
//! when Redis or the workers are down, only `highlights` paused and only with approval,
//! hourly retention thresholds, plain-text ASP.NET health bodies.

pub(crate) use crate::harness::metric;
use crate::harness::{
    HttpServer, PgTls, Postgres, Redis, Reply, Run, S3Server, free_port, runbox_env, step, workspace,
};
use crate::s3::lines;
use crate::tls_servers::{Pki, tls_only_postgres};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);

/// `runbox run runbooks/NAME --format json --set K=V … EXTRA…` with `env` added.
pub(crate) fn run_shipped(name: &str, sets: &[(&str, &str)], extra: &[&str], env: &[(&str, &str)]) -> Run {
    let path = workspace().join("runbooks").join(name);
    let sets: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["run", path.to_str().unwrap(), "--format", "json"];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    args.extend(extra);
    runbox_env(&args, env)
}

/// The results of a `for_each` step's items (`ID[0]`, `ID[1]`, …), in order.
pub(crate) fn items<'a>(json: &'a Value, id: &str) -> Vec<&'a Value> {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["item"]["step"] == id)
        .collect()
}

pub(crate) fn status(json: &Value, id: &str) -> String {
    step(json, id)["status"].as_str().unwrap().to_string()
}

pub(crate) fn skipped(json: &Value, id: &str) -> bool {
    !step(json, id)["skipped"].is_null()
}

pub(crate) fn audit(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A Redis integer reply (`:3`) as a number.
pub(crate) fn int(redis: &Redis, args: &[&str]) -> i64 {
    let reply = redis.command(args).unwrap();
    reply
        .strip_prefix(':')
        .unwrap_or_else(|| panic!("{args:?}: not an integer: {reply}"))
        .parse()
        .unwrap()
}

pub(crate) fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// RQ: real workers and the application stand-in (tests/e2e/rq_app.py).

/// The test-servers venv (scripts/ensure-deps installs rq 2.12.0 there).
pub(crate) fn venv_bin(name: &str) -> PathBuf {
    let path = workspace().join("target/tools/test-servers/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/ensure-deps (it installs rq into target/tools/test-servers)",
        path.display()
    );
    path
}

pub(crate) fn rq_command(program: &str) -> Command {
    let mut command = Command::new(venv_bin(program));
    command.env("PYTHONPATH", workspace().join("tests/e2e"));
    command
}

/// Enqueues `count` jobs on RQ's queue `default` (through RQ); their ids.
pub(crate) fn enqueue(redis: &Redis, count: usize) -> Vec<String> {
    let output = rq_command("python3")
        .arg(workspace().join("tests/e2e/rq_app.py"))
        .args(["enqueue", &redis.url(), "default", &count.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Runs a burst RQ worker on `default` until the queue is empty (it registers, works,
/// and unregisters: afterwards no worker is running).
pub(crate) fn burst_worker(redis: &Redis) {
    let output = rq_command("rq")
        .args(["worker", "--url", &redis.url(), "--burst", "default"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rq worker --burst failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A long-running RQ worker on `default`; stopped (warm shutdown: it unregisters) on drop.
pub(crate) struct RqWorker {
    child: Child,
}

impl RqWorker {
    pub(crate) fn start(redis: &Redis) -> RqWorker {
        let child = rq_command("rq")
            .args(["worker", "--url", &redis.url(), "default"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let worker = RqWorker { child };
        wait_until("the RQ worker to register", Duration::from_secs(20), || {
            int(redis, &["SCARD", "rq:workers:default"]) == 1
        });
        worker
    }
}

impl Drop for RqWorker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The application of seed 002: /health/ready, POST /jobs/{job_id}/replay (through RQ's
/// own requeue), POST /admin/config; killed on drop.
pub(crate) struct RqApp {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl RqApp {
    pub(crate) fn start(redis: &Redis) -> RqApp {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("requests.jsonl");
        let child = rq_command("python3")
            .arg(workspace().join("tests/e2e/rq_app.py"))
            .args(["serve", &redis.url(), &port.to_string(), log.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        wait_until("the RQ application to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        RqApp { port, child, dir }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `(method, path, body)` of every request so far.
    fn requests(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let request: Value = serde_json::from_str(line).unwrap();
                let text = |key: &str| request[key].as_str().unwrap().to_string();
                (text("method"), text("path"), text("body"))
            })
            .collect()
    }

    pub(crate) fn posts(&self) -> Vec<(String, String)> {
        self.requests()
            .into_iter()
            .filter(|(method, _, _)| method == "POST")
            .map(|(_, path, body)| (path, body))
            .collect()
    }
}

impl Drop for RqApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn queue_sets<'a>(redis_port: &'a str, app: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![("redis_port", redis_port), ("api_url", app), ("admin_url", app)]
}

/// Seed 002, "Queue outage (Redis/RQ)": workers down, then recovered, then Redis down.
#[test]
fn queue_outage_checks_the_workers_and_replays_exactly_the_failed_jobs_once_the_queue_recovers() {
    let mut redis = Redis::start();
    let app = RqApp::start(&redis);
    let (port, url) = (redis.port.to_string(), app.url());
    let sets = queue_sets(&port, &url);
    // Three jobs that really fail in a real worker, which then exits: RQ's own failed
    // registry holds them, and no worker is left.
    let failed: BTreeSet<String> = enqueue(&redis, 3).into_iter().collect();
    burst_worker(&redis);
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 3);
    assert_eq!(int(&redis, &["SCARD", "rq:workers:default"]), 0);
    let dir = tempfile::tempdir().unwrap();

    // Workers down, API ready: the workers step is CRITICAL (the API's readiness cannot
    // see the workers), inline jobs are planned, nothing is replayed.
    let run = run_shipped("queue-outage.yaml", &sets, &[], &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json();
    assert_eq!(status(&json, "api-ready"), "ok");
    assert_eq!(status(&json, "redis"), "ok");
    assert_eq!(status(&json, "workers"), "critical");
    assert_eq!(
        step(&json, "workers")["summary"],
        "no live worker on queue default (outside threshold)"
    );
    assert_eq!(status(&json, "failed-jobs"), "warning");
    let ids: BTreeSet<String> = step(&json, "failed-jobs")["outputs"]["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, failed, "job_ids are RQ's failed registry");
    let inline = step(&json, "inline-jobs");
    assert_eq!(inline["skipped"], Value::Null, "{inline:#}");
    assert_eq!(inline["plan"]["summary"], format!("POST {url}/admin/config"));
    assert_eq!(inline["applied"], false);
    assert!(skipped(&json, "replay"), "{:#}", step(&json, "replay"));
    assert!(app.posts().is_empty(), "a dry run sent {:?}", app.posts());

    // Apply the emergency switch, approved: exactly the planned request, audited.
    let audit_log = dir.path().join("inline.jsonl");
    let run = run_shipped(
        "queue-outage.yaml",
        &sets,
        &[
            "--apply",
            "--approve",
            "inline-jobs",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
        &[],
    );
    let json = run.json();
    assert_eq!(step(&json, "inline-jobs")["applied"], true, "{json:#}");
    assert_eq!(
        app.posts(),
        [(
            "/admin/config".to_string(),
            r#"{"PLC_INLINE_JOBS": "true"}"#.to_string()
        )]
    );
    let lines = audit(&audit_log);
    assert_eq!(
        lines
            .iter()
            .map(|l| (l["event"].as_str().unwrap(), l["step"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("apply-started", "inline-jobs"), ("apply-finished", "inline-jobs")]
    );
    assert_eq!(lines[1]["outcome"]["status"], "ok");
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 3, "nothing was replayed");

    // The cause is fixed and a worker runs again: the queue has recovered.
    redis.command(&["SET", "test:fixed", "1"]).unwrap();
    let worker = RqWorker::start(&redis);
    let run = run_shipped("queue-outage.yaml", &sets, &[], &[]);
    let json = run.json();
    assert_eq!(status(&json, "workers"), "ok", "{json:#}");
    assert_eq!(metric(step(&json, "workers"), "workers"), 1.0);
    assert!(
        skipped(&json, "inline-jobs"),
        "inline jobs planned with Redis and a worker up"
    );
    let planned = items(&json, "replay");
    let urls: BTreeSet<String> = planned
        .iter()
        .map(|item| item["plan"]["summary"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = failed.iter().map(|id| format!("POST {url}/jobs/{id}/replay")).collect();
    assert_eq!(urls, expected, "one request per failed job, to its own URL");
    for item in &planned {
        assert_eq!(item["applied"], false);
        assert_eq!(item["item"]["of"], 3);
    }
    assert_eq!(app.posts().len(), 1, "the dry run sent a request");

    // --apply without the approval: still nothing.
    let run = run_shipped("queue-outage.yaml", &sets, &["--apply"], &[]);
    for item in items(&run.json(), "replay") {
        assert!(
            item["summary"]
                .as_str()
                .unwrap()
                .ends_with("not applied: approval required (pass --approve replay)"),
            "{item:#}"
        );
    }
    assert_eq!(app.posts().len(), 1);

    // Approved: exactly the planned requests; RQ requeues each job and the worker runs it again.
    let audit_log = dir.path().join("replay.jsonl");
    let run = run_shipped(
        "queue-outage.yaml",
        &sets,
        &[
            "--apply",
            "--approve",
            "replay",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
        &[],
    );
    let json = run.json();
    for item in items(&json, "replay") {
        assert_eq!(item["applied"], true, "{item:#}");
        assert_eq!(item["status"], "ok", "{item:#}");
    }
    let replayed: BTreeSet<String> = app.posts()[1..].iter().map(|(path, _)| path.clone()).collect();
    let expected_paths: BTreeSet<String> = failed.iter().map(|id| format!("/jobs/{id}/replay")).collect();
    assert_eq!(replayed, expected_paths);
    assert_eq!(app.posts().len(), 4, "{:?}", app.posts());
    let lines = audit(&audit_log);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let audited: BTreeSet<String> = lines
        .iter()
        .filter(|l| l["event"] == "apply-finished")
        .map(|l| {
            assert_eq!(l["step"], "replay");
            assert_eq!(l["approval"], "approved with --approve");
            assert_eq!(l["outcome"]["status"], "ok");
            l["item"]["value"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(audited, failed);
    wait_until("the worker to run the replayed jobs", Duration::from_secs(30), || {
        int(&redis, &["LLEN", "test:ran"]) == 6
    });
    for id in &failed {
        wait_until("the replayed job to finish", Duration::from_secs(10), || {
            redis.command(&["HGET", &format!("rq:job:{id}"), "status"]).unwrap() == "finished"
        });
    }
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 0);
    drop(worker);

    // Redis down: Redis is CRITICAL after its retries, the API is not ready, and inline
    // jobs are planned; nothing reads the queue.
    redis.stop();
    let run = run_shipped("queue-outage.yaml", &sets, &[], &[]);
    let json = run.json();
    assert_eq!(status(&json, "redis"), "critical", "{json:#}");
    assert_eq!(step(&json, "redis")["attempts"], 3);
    assert_eq!(status(&json, "api-ready"), "critical");
    for id in ["backlog", "workers", "failed-jobs", "replay"] {
        assert!(skipped(&json, id), "{id}: {:#}", step(&json, id));
    }
    assert!(!skipped(&json, "inline-jobs"));
    assert_eq!(step(&json, "inline-jobs")["applied"], false);
}

/// Seed 004, "Health Checks": ASP.NET Core's default writer answers plain text.
#[test]
fn service_readiness_reads_aspnet_plain_text_health_and_checks_postgres_redis_and_hangfire() {
    let mut redis = Redis::start();
    let mut pg = Postgres::start_with(PgTls::Off);
    // EF Core's history table, with the two migrations this build ships.
    pg.psql(
        "app",
        r#"CREATE TABLE "__EFMigrationsHistory" ("MigrationId" varchar(150) PRIMARY KEY, "ProductVersion" varchar(32) NOT NULL);
           INSERT INTO "__EFMigrationsHistory" VALUES ('20261101_Initial', '8.0.10'), ('20261120_Rooms', '8.0.10');
           GRANT SELECT ON "__EFMigrationsHistory" TO PUBLIC;"#,
    );
    let ready: Arc<Mutex<(u16, &'static str)>> = Arc::new(Mutex::new((200, "Healthy")));
    let hangfire: Arc<Mutex<u16>> = Arc::new(Mutex::new(401));
    let (answer, dashboard) = (ready.clone(), hangfire.clone());
    let service = HttpServer::start(move |request, _| match request.path.as_str() {
        "/health" => Reply::new(200, "Healthy"),
        "/health/ready" => {
            let (code, body) = *answer.lock().unwrap();
            Reply::new(code, body)
        }
        // Hangfire's dashboard behind its authorization filter: enabled, not for us.
        "/hangfire" => Reply::new(*dashboard.lock().unwrap(), ""),
        _ => Reply::new(404, "Not Found"),
    });
    let port = redis.port.to_string();
    let url = service.url();
    let (db_url, db_grant) = (pg.url("scram_user"), pg.grant());
    let sets = |migrations: &'static str| {
        vec![
            ("base_url", url.clone()),
            ("redis_port", port.clone()),
            ("db_url", db_url.clone()),
            ("db_grant", db_grant.clone()),
            ("sslmode", "disable".to_string()),
            ("expected_migrations", migrations.to_string()),
        ]
    };
    let run_with = |migrations: &'static str| {
        let owned = sets(migrations);
        let sets: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_shipped("service-readiness.yaml", &sets, &[], &[("DB_PASSWORD", "scram-pw")])
    };

    let run = run_with("2");
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json();
    for id in ["health", "ready", "redis", "postgres", "migrations", "hangfire"] {
        assert_eq!(status(&json, id), "ok", "{id}: {json:#}");
    }
    assert_eq!(metric(step(&json, "migrations"), "migrations"), 2.0);
    assert!(
        step(&json, "ready")["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("GET {url}/health/ready → 200 in ")),
        "{json:#}"
    );
    assert!(step(&json, "ready")["summary"].as_str().unwrap().ends_with(": Healthy"));

    *ready.lock().unwrap() = (200, "Degraded");
    let run = run_with("2");
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(status(&run.json(), "ready"), "warning");

    // A build that ships a third migration the database does not have ("If migration
    // fails, the app still starts (degraded)"), and Hangfire not enabled (no route).
    *ready.lock().unwrap() = (200, "Healthy");
    *hangfire.lock().unwrap() = 404;
    let run = run_with("3");
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json();
    assert_eq!(status(&json, "migrations"), "critical", "{json:#}");
    assert_eq!(status(&json, "hangfire"), "critical", "{json:#}");
    assert_eq!(status(&json, "postgres"), "ok");

    *ready.lock().unwrap() = (503, "Unhealthy");
    redis.stop();
    pg.stop();
    let run = run_with("2");
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json();
    assert_eq!(status(&json, "health"), "ok", "liveness has no dependencies");
    assert_eq!(status(&json, "ready"), "critical");
    assert_eq!(step(&json, "ready")["details"][0], "body: Unhealthy");
    assert_eq!(status(&json, "redis"), "critical", "{json:#}");
    assert_eq!(status(&json, "postgres"), "critical", "{json:#}");
    assert!(!step(&json, "migrations")["skipped"].is_null(), "{json:#}");
}

fn s3_env() -> [(&'static str, &'static str); 2] {
    [
        ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY),
    ]
}

/// Access logs of the storage under `prefix`: `ok` 200s and `denied` 403s within the
/// last 10 minutes.
fn access_logs(s3: &S3Server, prefix: &str, ok: usize, denied: usize) {
    s3.bucket("access-logs");
    let text = [
        lines(ok, 10 * MIN, "REST.GET.OBJECT", 200, "-"),
        lines(denied, 10 * MIN, "REST.PUT.OBJECT", 403, "AccessDenied"),
    ]
    .concat()
    .join("\n")
        + "\n";
    s3.put("access-logs", &format!("{prefix}2026-x"), text.as_bytes(), 5 * MIN);
}

/// Seed 000, "Artifact Pipeline Backlog".
#[test]
fn artifact_backlog_pauses_only_highlights_and_only_with_approval() {
    let redis = Redis::start();
    redis
        .command(&["XGROUP", "CREATE", "artifacts", "builders", "$", "MKSTREAM"])
        .unwrap();
    for i in 0..600 {
        redis
            .command(&["XADD", "artifacts", "*", "job", &i.to_string()])
            .unwrap();
    }
    let workers = HttpServer::start(|request, _| match request.path.as_str() {
        "/health" => Reply::new(200, "{\"status\": \"ok\"}"),
        _ => Reply::new(404, "{}"),
    });
    let s3 = S3Server::start();
    access_logs(&s3, "artifacts/", 48, 2);
    let (port, workers_url, endpoint) = (redis.port.to_string(), workers.url(), s3.endpoint());
    let sets = [
        ("redis_port", port.as_str()),
        ("workers_url", workers_url.as_str()),
        ("s3_endpoint", endpoint.as_str()),
        ("log_prefix", "artifacts/"),
    ];
    let env = s3_env();
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let audit_arg = audit_log.to_str().unwrap();

    let run = run_shipped(
        "artifact-pipeline-backlog.yaml",
        &sets,
        &["--audit-log", audit_arg],
        &env,
    );
    let json = run.json();
    assert_eq!(status(&json, "workers"), "ok", "{json:#}");
    assert_eq!(status(&json, "redis"), "ok");
    assert_eq!(status(&json, "depth"), "critical");
    assert_eq!(metric(step(&json, "depth"), "artifacts.builders.lag"), 600.0);
    assert_eq!(metric(step(&json, "depth"), "deepest"), 600.0);
    let storage = step(&json, "storage-errors");
    assert_eq!(storage["status"], "ok", "4 % 4xx is under the 5 % warning: {storage:#}");
    let pause = step(&json, "pause-highlights");
    assert_eq!(
        pause["plan"]["changes"][0],
        "SET pipeline:paused-classes \"highlights\" EX 7200 (was: unset)"
    );
    assert_eq!(redis.command(&["EXISTS", "pipeline:paused-classes"]).unwrap(), ":0");

    // --apply alone does not pause: the step needs approval.
    let run = run_shipped(
        "artifact-pipeline-backlog.yaml",
        &sets,
        &["--apply", "--audit-log", audit_arg],
        &env,
    );
    let json = run.json();
    let pause = step(&json, "pause-highlights");
    assert_eq!(pause["applied"], false, "{pause:#}");
    assert!(
        pause["summary"]
            .as_str()
            .unwrap()
            .ends_with("not applied: approval required (pass --approve pause-highlights)"),
        "{pause:#}"
    );
    assert_eq!(redis.command(&["EXISTS", "pipeline:paused-classes"]).unwrap(), ":0");
    assert!(audit(&audit_log).is_empty());

    let run = run_shipped(
        "artifact-pipeline-backlog.yaml",
        &sets,
        &["--apply", "--approve", "pause-highlights", "--audit-log", audit_arg],
        &env,
    );
    assert_eq!(step(&run.json(), "pause-highlights")["applied"], true, "{run:#?}");
    assert_eq!(
        redis.command(&["GET", "pipeline:paused-classes"]).unwrap(),
        "highlights"
    );
    let ttl = int(&redis, &["TTL", "pipeline:paused-classes"]);
    assert!((7000..=7200).contains(&ttl), "{ttl}");
    let lines = audit(&audit_log);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["plan"]["changes"][0],
        "SET pipeline:paused-classes \"highlights\" EX 7200 (was: unset)"
    );

    // Under the limit, nothing is planned; storage errors past 25 % are CRITICAL.
    let s3_bad = S3Server::start();
    access_logs(&s3_bad, "artifacts/", 30, 20);
    let endpoint = s3_bad.endpoint();
    let mut under = sets;
    under[2].1 = endpoint.as_str();
    let mut sets_under = under.to_vec();
    sets_under.push(("backlog_limit", "1000"));
    let run = run_shipped("artifact-pipeline-backlog.yaml", &sets_under, &[], &env);
    let json = run.json();
    assert!(skipped(&json, "pause-highlights"), "{json:#}");
    assert_eq!(status(&json, "storage-errors"), "critical", "40 % 4xx");
}

/// Seed 001, "Retention job maintenance" → "Validating outcomes": the job runs hourly.
#[test]
fn retention_validation_judges_dangling_rows_by_hourly_runs_over_verified_tls() {
    let pki = Pki::new();
    let pg = tls_only_postgres(&pki.server);
    // The fixture's dangling rows are deleted (the job ran); three expired 30 min ago
    // and wait for the next hourly run.
    pg.psql(
        "app",
        "UPDATE recordings SET deleted_at = now() WHERE deleted_at IS NULL AND expires_at < now();
         INSERT INTO recordings (name, tenant, deleted_at, expires_at)
             SELECT 'waiting-' || i, 1, NULL, now() - interval '30 minutes' FROM generate_series(1, 3) AS i;",
    );
    let s3 = S3Server::start();
    access_logs(&s3, "recordings/", 99, 1);
    let db_url = format!("postgres://scram_user@127.0.0.1:{}/app", pg.port);
    let (grant, endpoint) = (pg.grant(), s3.endpoint());
    let sets = [
        ("db_url", db_url.as_str()),
        ("db_grant", grant.as_str()),
        ("s3_endpoint", endpoint.as_str()),
        ("log_prefix", "recordings/"),
    ];
    let [ak, sk] = s3_env();
    let ca = pki.ca.pem_file.to_str().unwrap();
    let env = [ak, sk, ("RETENTION_DB_PASSWORD", "scram-pw"), ("SSL_CERT_FILE", ca)];
    let runs_ago = |pg: &crate::harness::Postgres, hours: u32| {
        pg.psql(
            "app",
            &format!(
                "INSERT INTO recordings (name, tenant, deleted_at, expires_at)
                 VALUES ('missed-{hours}h', 1, NULL, now() - interval '{hours} hours')"
            ),
        );
    };

    // Rows younger than one run are not a finding (the old nightly runbook warned on any).
    let run = run_shipped("retention-validation.yaml", &sets, &[], &env);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json();
    let dangling = step(&json, "dangling");
    assert_eq!(metric(dangling, "dangling"), 3.0);
    assert!(metric(dangling, "oldest_age_s") < 7200.0);
    assert_eq!(status(&json, "storage-errors"), "ok");

    // Expired three hours ago: missed by two runs, WARNING.
    runs_ago(&pg, 3);
    let run = run_shipped("retention-validation.yaml", &sets, &[], &env);
    let json = run.json();
    assert_eq!(status(&json, "dangling"), "warning", "{json:#}");
    let age = step(&json, "dangling")["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "oldest_age_s")
        .unwrap()
        .clone();
    assert_eq!(
        (age["warn"].as_str(), age["crit"].as_str()),
        (Some("7200"), Some("21600"))
    );

    // Expired eight hours ago: the job has not deleted for six runs and more, CRITICAL.
    runs_ago(&pg, 8);
    let run = run_shipped("retention-validation.yaml", &sets, &[], &env);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(status(&run.json(), "dangling"), "critical");

    // The TLS mode is explicit: without the CA, verify-full refuses the server; plaintext
    // is not an option (the server has only hostssl lines, and the runbook asks for TLS).
    let run = run_shipped("retention-validation.yaml", &sets, &[], &env[..3]);
    let json = run.json();
    assert_eq!(status(&json, "dangling"), "critical", "{json:#}");
    assert!(
        step(&json, "dangling")["summary"]
            .as_str()
            .unwrap()
            .contains("sslmode=verify-full"),
        "{json:#}"
    );

    // S3 4xx/5xx: a spike is followed up.
    let spiky = S3Server::start();
    access_logs(&spiky, "recordings/", 60, 40);
    let endpoint = spiky.endpoint();
    let mut spike = sets;
    spike[2].1 = endpoint.as_str();
    let run = run_shipped("retention-validation.yaml", &spike, &[], &env);
    assert_eq!(status(&run.json(), "storage-errors"), "critical", "{run:#?}");
}

#[test]
fn the_seed_runbooks_name_their_seed() {
    for (file, seed) in [
        ("queue-outage.yaml", "Seed 002 (002_5dd69f34f4e70fd7.txt)"),
        ("artifact-pipeline-backlog.yaml", "Seed 000 (000_5c6e9ff0c39fb8c7.txt)"),
        ("retention-validation.yaml", "Seed 001 (001_703c4ed1319ee922.txt)"),
        ("service-readiness.yaml", "Seed 004 (004_8c85a033c1dbfac3.txt)"),
        ("openai-outage.yaml", "Seed 002 (002_5dd69f34f4e70fd7.txt)"),
        ("webhook-failures.yaml", "Seed 000 (000_5c6e9ff0c39fb8c7.txt)"),
        ("event-log-write-failure.yaml", "Seed 000 (000_5c6e9ff0c39fb8c7.txt)"),
        ("s3-maintenance.yaml", "Seed 001 (001_703c4ed1319ee922.txt)"),
    ] {
        let text = std::fs::read_to_string(workspace().join("runbooks").join(file)).unwrap();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(header.contains(seed), "{file}: {header}");
    }
}
