//! The runbooks written for the seed sections that had none (docs/seeds.md), run as
//! shipped (`runbox run runbooks/X.yaml --set …`) against real services: PostgreSQL 15,
//! redis-server with a password, s3s-fs (it verifies every SigV4 signature), Prometheus
//! 2.42 scraping an exporter the test serves, LiveKit's own webhook verification
//! (PyPI `livekit-api`, tests/e2e/livekit_webhook_server.py) and the JWT-verifying
//! LiveKit stand-in of livekit.rs. Each test breaks one dependency at a time and checks
//! that the step the seed names for it, and only that step, turns.

use crate::harness::{HttpServer, PgTls, Postgres, Redis, Reply, S3Server, step};
use crate::livekit::{API_KEY, API_SECRET, stand_in};
use crate::livekit_webhook::Endpoint;
use crate::prometheus::{Exporter, Prometheus};
use crate::seed_runbooks::{metric, run_shipped, status};
use serde_json::Value;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

/// `run_shipped` with owned `--set` values.
fn run(book: &str, sets: &[(&str, String)], env: &[(&str, &str)]) -> (i32, Value) {
    let sets: Vec<(&str, &str)> = sets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_shipped(book, &sets, &[], env);
    let json = run.json();
    (run.code, json)
}

fn statuses(json: &Value, ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| status(json, id)).collect()
}

#[test]
fn release_checklist_proves_each_secret_by_using_it() {
    let pg = Postgres::start_with(PgTls::Off);
    pg.psql(
        "app",
        "CREATE TABLE _prisma_migrations (id text PRIMARY KEY, migration_name text NOT NULL,
             finished_at timestamptz, rolled_back_at timestamptz, started_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO _prisma_migrations (id, migration_name, finished_at) VALUES
             ('1', '20261101_init', now()), ('2', '20261120_sessions', now());
         GRANT SELECT ON _prisma_migrations TO PUBLIC;",
    );
    let redis = Redis::start_with(Some("redis-pw"));
    let s3 = S3Server::start();
    s3.bucket("author-recordings-staging");
    let livekit = stand_in(0);
    let webhook = Endpoint::start_for(API_KEY, API_SECRET, false);
    let sets = vec![
        ("db_url", pg.url("scram_user")),
        ("db_grant", pg.grant()),
        ("sslmode", "disable".to_string()),
        ("redis_url", redis.url()),
        ("s3_endpoint", s3.endpoint()),
        ("region", "us-east-1".to_string()),
        ("livekit_url", livekit.url()),
        ("webhook_url", webhook.url()),
        ("webhook_grant", webhook.origin()),
    ];
    let env = |s3_secret: &'static str, redis_password: &'static str| {
        vec![
            ("DB_PASSWORD", "scram-pw"),
            ("REDIS_PASSWORD", redis_password),
            ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", s3_secret),
            ("LIVEKIT_API_KEY", API_KEY),
            ("LIVEKIT_API_SECRET", API_SECRET),
        ]
    };
    let all = ["migrations", "redis", "storage", "livekit-api", "webhook"];

    let (code, json) = run("release-checklist.yaml", &sets, &env(S3Server::SECRET_KEY, "redis-pw"));
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(statuses(&json, &all), ["ok"; 5], "{json:#}");
    assert_eq!(metric(step(&json, "migrations"), "pending_migrations"), 0.0);
    assert!(
        s3.files("author-recordings-staging").is_empty(),
        "the canary leaves nothing: {:?}",
        s3.files("author-recordings-staging")
    );

    // A migration that failed half-way (no finished_at, not rolled back): hold the release.
    pg.psql(
        "app",
        "INSERT INTO _prisma_migrations (id, migration_name) VALUES ('3', '20261130_events')",
    );
    // A wrong S3 secret and a wrong Redis password: each shows in its own step only.
    let (code, json) = run("release-checklist.yaml", &sets, &env("not-the-secret", "wrong-pw"));
    assert_eq!(code, 2, "{json:#}");
    assert_eq!(
        statuses(&json, &all),
        ["critical", "critical", "critical", "ok", "ok"],
        "{json:#}"
    );
    assert_eq!(metric(step(&json, "migrations"), "pending_migrations"), 1.0);
    assert!(
        step(&json, "storage")["summary"]
            .as_str()
            .unwrap()
            .contains("SignatureDoesNotMatch"),
        "{json:#}"
    );
    assert!(!json.to_string().contains("not-the-secret"), "a secret is never shown");

    // The app was deployed with another webhook secret than LiveKit signs with.
    drop(webhook);
    let other = Endpoint::start_for(API_KEY, "a-rotated-secret-the-app-did-not-get", false);
    let mut sets = sets;
    for (key, value) in sets.iter_mut() {
        match *key {
            "webhook_url" => *value = other.url(),
            "webhook_grant" => *value = other.origin(),
            _ => {}
        }
    }
    pg.psql(
        "app",
        "UPDATE _prisma_migrations SET finished_at = now() WHERE id = '3'",
    );
    let (code, json) = run("release-checklist.yaml", &sets, &env(S3Server::SECRET_KEY, "redis-pw"));
    assert_eq!(code, 2, "{json:#}");
    assert_eq!(statuses(&json, &all), ["ok", "ok", "ok", "ok", "critical"], "{json:#}");
}

#[test]
fn backups_and_retention_checks_the_nightly_dumps_and_the_deletion_sla() {
    let s3 = S3Server::start();
    s3.bucket("author-backups");
    // Thirty nightly dumps, the newest from last night.
    for night in 1..=30u32 {
        s3.put(
            "author-backups",
            &format!("postgres/nightly/app-{night:02}.dump"),
            b"PGDMP",
            DAY * night,
        );
    }
    let pg = Postgres::start_with(PgTls::Off);
    pg.psql(
        "app",
        "CREATE TABLE deletion_requests (id serial PRIMARY KEY, requested_at timestamptz NOT NULL, completed_at timestamptz);
         INSERT INTO deletion_requests (requested_at, completed_at) VALUES
             (now() - interval '40 days', now() - interval '35 days'),
             (now() - interval '2 days', NULL);
         GRANT SELECT ON deletion_requests TO PUBLIC;",
    );
    let sets = vec![
        ("s3_endpoint", s3.endpoint()),
        ("region", "us-east-1".to_string()),
        ("db_url", pg.url("scram_user")),
        ("db_grant", pg.grant()),
        ("sslmode", "disable".to_string()),
    ];
    let env = [
        ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY),
        ("DB_PASSWORD", "scram-pw"),
    ];
    let (code, json) = run("backups-and-retention.yaml", &sets, &env);
    assert_eq!(code, 0, "{json:#}");
    let backups = step(&json, "backups");
    assert_eq!(metric(backups, "objects"), 30.0);
    assert!(
        (86_400.0..90_000.0).contains(&metric(backups, "newest_age_s")),
        "{backups:#}"
    );
    assert_eq!(metric(step(&json, "deletion-sla"), "overdue_requests"), 0.0);

    // A request open past the 30-day SLA is CRITICAL; a shorter SLA (a number input,
    // never SQL) finds the two-day-old one too.
    pg.psql(
        "app",
        "INSERT INTO deletion_requests (requested_at) VALUES (now() - interval '31 days')",
    );
    let (code, json) = run("backups-and-retention.yaml", &sets, &env);
    assert_eq!(code, 2, "{json:#}");
    assert_eq!(metric(step(&json, "deletion-sla"), "overdue_requests"), 1.0);
    let mut short = sets.clone();
    short.push(("sla_hours", "24".to_string()));
    let (_, json) = run("backups-and-retention.yaml", &short, &env);
    assert_eq!(metric(step(&json, "deletion-sla"), "overdue_requests"), 2.0);
    let mut injected = sets.clone();
    injected.push(("sla_hours", "1) or (true".to_string()));
    let injected: Vec<(&str, &str)> = injected.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = run_shipped("backups-and-retention.yaml", &injected, &[], &env);
    assert_eq!(refused.code, 64, "a number input takes only a number: {refused:#?}");
    assert_eq!(
        refused.stderr.matches("error: ").count(),
        2,
        "one problem, then the summary line: {}",
        refused.stderr
    );

    // Two nights missed: the newest dump is 3 days old (CRITICAL), and 28 remain.
    let s3 = S3Server::start();
    s3.bucket("author-backups");
    for night in 3..=30u32 {
        s3.put(
            "author-backups",
            &format!("postgres/nightly/app-{night:02}.dump"),
            b"PGDMP",
            DAY * night,
        );
    }
    pg.psql("app", "DELETE FROM deletion_requests WHERE completed_at IS NULL");
    let mut sets = sets.clone();
    sets[0].1 = s3.endpoint();
    let (code, json) = run("backups-and-retention.yaml", &sets, &env);
    assert_eq!(code, 2, "{json:#}");
    assert_eq!(status(&json, "backups"), "critical");
    assert_eq!(status(&json, "deletion-sla"), "ok");
    assert!(
        step(&json, "backups")["summary"]
            .as_str()
            .unwrap()
            .contains("the newest object under"),
        "{json:#}"
    );
}

#[test]
fn quick_triage_reads_health_redis_database_size_and_the_5xx_share() {
    let api = HttpServer::start(|request, _| match request.path.as_str() {
        "/api/v1/health" => Reply::new(200, r#"{"status":"healthy"}"#),
        _ => Reply::new(404, "not found"),
    });
    let mut redis = Redis::start();
    let pg = Postgres::start_with(PgTls::Off);
    // Counters that grow by scrape: 100 requests a scrape, 2 of them 5xx (2 %: WARNING).
    let exporter = Exporter::start(
        "# TYPE http_requests_total counter\nhttp_requests_total{status=\"200\"} {n*98}\nhttp_requests_total{status=\"500\"} {n*2}\n",
    );
    let prometheus = Prometheus::start(&exporter.target());
    let ratio = "sum(rate(http_requests_total{status=~\"5..\"}[5m])) / sum(rate(http_requests_total[5m]))";
    prometheus.wait_for(ratio, 1);
    let sets = vec![
        ("api_url", format!("{}/api/v1/health", api.url())),
        ("api_grant", api.url()),
        ("redis_url", redis.url()),
        ("db_url", pg.url("scram_user")),
        ("db_grant", pg.grant()),
        ("sslmode", "disable".to_string()),
        ("prometheus_url", prometheus.url()),
    ];
    let env = [("DB_PASSWORD", "scram-pw")];
    let (code, json) = run("quick-triage.yaml", &sets, &env);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(
        statuses(&json, &["api", "redis", "db-size", "error-rate"]),
        ["ok", "ok", "ok", "warning"],
        "{json:#}"
    );
    let size_gb = metric(step(&json, "db-size"), "database_gb");
    assert!(size_gb > 0.001 && size_gb < 1.0, "a fresh database: {size_gb}");

    // 5xx climbs to 12 of 110 a scrape (counters only grow), past the SEV-2 line; Redis
    // down; the database over a tiny size limit.
    exporter.set(
        "# TYPE http_requests_total counter\nhttp_requests_total{status=\"200\"} {n*98}\nhttp_requests_total{status=\"500\"} {n*12}\n",
    );
    redis.stop();
    let mut sets = sets.clone();
    sets.push(("db_size_warn_gb", "0.0001".to_string()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let json = loop {
        let (code, json) = run("quick-triage.yaml", &sets, &env);
        if status(&json, "error-rate") == "critical" || std::time::Instant::now() > deadline {
            assert_eq!(code, 2, "{json:#}");
            break json;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(
        statuses(&json, &["api", "redis", "db-size", "error-rate"]),
        ["ok", "critical", "warning", "critical"],
        "{json:#}"
    );
}

#[test]
fn platform_signals_judge_the_seed_metrics_with_the_default_queries() {
    // What the platform exports, by scrape n: start latencies (a histogram), joins,
    // the artifact queue depth, webhook failures and DB write errors.
    let healthy = "# TYPE session_start_duration_seconds histogram
session_start_duration_seconds_bucket{le=\"0.5\"} {n*90}
session_start_duration_seconds_bucket{le=\"1\"} {n*99}
session_start_duration_seconds_bucket{le=\"2.5\"} {n*100}
session_start_duration_seconds_bucket{le=\"5\"} {n*100}
session_start_duration_seconds_bucket{le=\"+Inf\"} {n*100}
session_start_duration_seconds_count {n*100}
session_start_duration_seconds_sum {n*40}
# TYPE session_joins_total counter
session_joins_total{result=\"success\"} {n*995}
session_joins_total{result=\"failure\"} {n*5}
# TYPE artifact_queue_depth gauge
artifact_queue_depth{shard=\"a\"} 3
artifact_queue_depth{shard=\"b\"} 4
# TYPE livekit_webhook_failures_total counter
livekit_webhook_failures_total 0
# TYPE db_write_errors_total counter
db_write_errors_total 0
";
    let exporter = Exporter::start(healthy);
    let prometheus = Prometheus::start(&exporter.target());
    prometheus.wait_for("rate(session_joins_total[5m])", 2);
    let sets = vec![("prometheus_url", prometheus.url())];
    let ids = [
        "start-latency",
        "join-success",
        "queue-depth",
        "webhook-failures",
        "db-write-errors",
    ];
    let (code, json) = run("platform-signals.yaml", &sets, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(statuses(&json, &ids), ["ok"; 5], "{json:#}");

    // An incident (counters only grow): 300 more starts a scrape, all between 2.5 and
    // 5 s; 400 failed joins a scrape; the queue piling up; webhooks and DB writes failing.
    exporter.set(
        &healthy
            .replace("le=\"5\"} {n*100}", "le=\"5\"} {n*400}")
            .replace("le=\"+Inf\"} {n*100}", "le=\"+Inf\"} {n*400}")
            .replace("_count {n*100}", "_count {n*400}")
            .replace("{result=\"failure\"} {n*5}", "{result=\"failure\"} {n*400}")
            .replace("shard=\"b\"} 4", "shard=\"b\"} 25000")
            .replace(
                "livekit_webhook_failures_total 0",
                "livekit_webhook_failures_total {n*50}",
            )
            .replace("db_write_errors_total 0", "db_write_errors_total {n*50}"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let json = loop {
        let (_, json) = run("platform-signals.yaml", &sets, &[]);
        let now = statuses(&json, &ids);
        if now == ["warning", "critical", "critical", "critical", "critical"] {
            break json;
        }
        assert!(std::time::Instant::now() < deadline, "{now:?}: {json:#}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(metric(step(&json, "queue-depth"), "value") >= 25_000.0, "{json:#}");
}
