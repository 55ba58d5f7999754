//! `runbooks/storage-outage.yaml` (seed 002 "Storage outage", seed 001 "Bucket hygiene")
//! end to end: a real S3-compatible server (s3s-fs, verifying SigV4) holding the access
//! logs and the temporary-uploads bucket, a real redis-server for the export-enqueue
//! switch, and an HTTP stand-in only for the application's own endpoints (readiness,
//! integrity, re-running exports).

use crate::harness::{HttpServer, Redis, Reply, Run, S3Server, runbox_env, step, workspace};
use crate::s3::lines;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The application: readiness answers `ready`, integrity 200, exports accepted.
fn app(ready: u16) -> HttpServer {
    HttpServer::start(move |req, _| match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/health/ready") => Reply::new(ready, if ready == 200 { "ok" } else { "storage: unreachable" }),
        ("GET", "/health/integrity") => Reply::new(200, "{\"missing\": 0}"),
        ("POST", path) if path.starts_with("/lectures/") && path.ends_with("/exports") => Reply::new(202, "queued"),
        _ => Reply::new(404, "no"),
    })
}

/// Access logs of the last 15 minutes: 100 requests, `errors_5xx` of them 503s.
fn logs(s3: &S3Server, errors_5xx: usize) {
    s3.bucket("author-access-logs");
    let text = [
        lines(100 - errors_5xx, 5 * MIN, "REST.PUT.OBJECT", 200, "-"),
        lines(errors_5xx, 4 * MIN, "REST.PUT.OBJECT", 503, "SlowDown"),
    ]
    .concat()
    .join("\n")
        + "\n";
    s3.put("author-access-logs", "log-1", text.as_bytes(), 2 * MIN);
}

/// The temporary-uploads bucket: three overdue uploads (1,000 B each, 25 h old) and one
/// in flight (1 h old).
fn uploads(s3: &S3Server) {
    s3.bucket("author-temporary-uploads");
    for key in ["u/old-1", "u/old-2", "u/old-3"] {
        s3.put("author-temporary-uploads", key, &[7; 1000], 25 * HOUR);
    }
    s3.put("author-temporary-uploads", "u/fresh", &[7; 1000], HOUR);
}

fn run_book(s3: &S3Server, app: &HttpServer, redis: &Redis, extra: &[&str]) -> (Run, serde_json::Value) {
    // The application's bucket, which the `bucket` step probes (HeadBucket, canary).
    s3.bucket("author-exports");
    s3.put("author-exports", "exports/lecture-7.zip", b"PK", MIN);
    run_against(&s3.endpoint(), app, redis, extra)
}

/// The runbook with its S3 endpoint at `endpoint`, the keys s3s-fs accepts, and the JSON
/// report.
fn run_against(endpoint: &str, app: &HttpServer, redis: &Redis, extra: &[&str]) -> (Run, serde_json::Value) {
    let runbook = workspace().join("runbooks/storage-outage.yaml");
    let sets = [
        format!("s3_endpoint={endpoint}"),
        format!("api_url={}", app.url()),
        format!("redis_url={}", redis.url()),
    ];
    let mut args = vec!["run", runbook.to_str().unwrap(), "--format", "json"];
    for set in &sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let run = runbox_env(
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY),
        ],
    );
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:#?}"));
    (run, json)
}

fn old_uploads_left(s3: &S3Server) -> usize {
    ["u/old-1", "u/old-2", "u/old-3"]
        .iter()
        .filter(|key| s3.exists("author-temporary-uploads", key))
        .count()
}

#[test]
fn a_5xx_spike_stops_export_enqueue_and_never_triggers_the_destructive_prune() {
    let (s3, redis, app) = (S3Server::start(), Redis::start(), app(200));
    logs(&s3, 10);
    uploads(&s3);
    let approve_all = [
        "--set",
        "backlog_bytes=1000",
        "--apply",
        "--approve",
        "pause-exports",
        "--approve",
        "prune-temporary-uploads",
    ];
    let (run, json) = run_book(&s3, &app, &redis, &approve_all);
    assert_eq!(run.code, 2, "{run:#?}");
    // The error rate has thresholds now: 10 % of 5xx is CRITICAL (it was OK at any rate).
    let rate = step(&json, "error-rate");
    assert_eq!(rate["status"], "critical", "{rate}");
    // Writes are failing: export enqueue is stopped...
    assert_eq!(step(&json, "pause-exports")["applied"], true, "{json}");
    assert_eq!(redis.command(&["GET", "exports:enqueue-paused"]).unwrap(), "1");
    // ...and nothing is deleted while storage is failing (the old runbook pruned *because* it failed).
    assert!(
        step(&json, "prune-temporary-uploads")["skipped"]
            .as_str()
            .unwrap()
            .contains("is false"),
        "{json}"
    );
    assert_eq!(old_uploads_left(&s3), 3);
}

#[test]
fn readiness_failing_alone_also_holds_the_prune_back() {
    let (s3, redis, app) = (S3Server::start(), Redis::start(), app(503));
    logs(&s3, 0);
    uploads(&s3);
    let (run, json) = run_book(
        &s3,
        &app,
        &redis,
        &[
            "--set",
            "backlog_bytes=1000",
            "--apply",
            "--approve",
            "prune-temporary-uploads",
        ],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(step(&json, "error-rate")["status"], "ok");
    assert!(step(&json, "prune-temporary-uploads")["skipped"].is_string(), "{json}");
    assert_eq!(old_uploads_left(&s3), 3);
    // pause-exports was planned but not approved: WARNING, and the switch is untouched.
    assert!(
        step(&json, "pause-exports")["summary"]
            .as_str()
            .unwrap()
            .contains("approval required"),
        "{json}"
    );
    assert_eq!(
        redis.command(&["GET", "exports:enqueue-paused"]).unwrap(),
        "",
        "a nil reply"
    );
}

#[test]
fn healthy_storage_prunes_only_the_overdue_backlog_and_only_past_its_threshold() {
    let (s3, redis, app) = (S3Server::start(), Redis::start(), app(200));
    logs(&s3, 0);
    uploads(&s3);
    // 3,000 B overdue, under a 10,000 B threshold: the plan deletes nothing.
    let (run, json) = run_book(
        &s3,
        &app,
        &redis,
        &[
            "--set",
            "backlog_bytes=10000",
            "--apply",
            "--approve",
            "prune-temporary-uploads",
        ],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let prune = step(&json, "prune-temporary-uploads");
    assert!(
        prune["plan"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("nothing to delete: 3 objects (3000 B)"),
        "{prune}"
    );
    assert_eq!(old_uploads_left(&s3), 3);
    // The seed's default threshold is 1 GB.
    let (_, json) = run_book(&s3, &app, &redis, &[]);
    assert!(
        step(&json, "prune-temporary-uploads")["plan"]["summary"]
            .as_str()
            .unwrap()
            .contains("not over the 1000000000 B threshold"),
        "{json}"
    );
    // Over the threshold: a dry run deletes nothing; the approved apply deletes exactly
    // the overdue uploads of the temporary-uploads bucket, not the one in flight.
    let (run, _) = run_book(&s3, &app, &redis, &["--set", "backlog_bytes=1000"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(old_uploads_left(&s3), 3);
    let (run, json) = run_book(
        &s3,
        &app,
        &redis,
        &[
            "--set",
            "backlog_bytes=1000",
            "--apply",
            "--approve",
            "prune-temporary-uploads",
        ],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(step(&json, "prune-temporary-uploads")["applied"], true);
    assert_eq!(old_uploads_left(&s3), 0);
    assert!(s3.exists("author-temporary-uploads", "u/fresh"));
    assert!(step(&json, "pause-exports")["skipped"].is_string());
}

#[test]
fn exports_are_rerun_per_affected_lecture_once_storage_is_healthy() {
    let (s3, redis, app) = (S3Server::start(), Redis::start(), app(200));
    logs(&s3, 0);
    s3.bucket("author-temporary-uploads");
    let (run, json) = run_book(
        &s3,
        &app,
        &redis,
        &[
            "--set",
            "affected_lectures=L-17,L-42",
            "--apply",
            "--approve",
            "rerun-exports",
        ],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(step(&json, "rerun-exports[1]")["item"]["value"], "L-42");
    let posted: Vec<String> = app
        .received()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(posted, ["/lectures/L-17/exports", "/lectures/L-42/exports"]);
}

#[test]
fn the_endpoint_is_signed_for_the_runbooks_region() {
    // An endpoint that records the SigV4 credential scope (and refuses).
    let recorder = HttpServer::start(|_, _| Reply::new(403, "<Error><Code>AccessDenied</Code></Error>"));
    let (redis, app) = (Redis::start(), app(200));
    run_against(&recorder.url(), &app, &redis, &[]);
    let scopes: Vec<String> = recorder
        .received()
        .iter()
        .filter_map(|r| r.header("authorization").map(String::from))
        .collect();
    assert!(!scopes.is_empty(), "no signed request reached the endpoint");
    for scope in scopes {
        assert!(scope.contains("/eu-west-1/s3/aws4_request"), "{scope}");
    }
}

#[test]
fn a_missing_recent_export_or_a_bucket_the_keys_cannot_use_holds_the_prune_and_pauses_exports() {
    let (s3, redis, app) = (S3Server::start(), Redis::start(), app(200));
    logs(&s3, 0);
    uploads(&s3);
    // Healthy: the bucket answers, the canary write is read back and removed, the recent
    // export exists.
    let (run, json) = run_book(&s3, &app, &redis, &["--set", "recent_keys=exports/lecture-7.zip"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(step(&json, "bucket")["status"], "ok", "{json:#}");
    assert_eq!(
        s3.files("author-exports"),
        ["exports/lecture-7.zip"],
        "the canary leaves nothing"
    );
    // A recent export missing (triage 3): CRITICAL, exports paused (planned), no prune.
    let (run, json) = run_book(
        &s3,
        &app,
        &redis,
        &[
            "--set",
            "recent_keys=exports/lecture-7.zip,exports/lecture-9.zip",
            "--set",
            "backlog_bytes=1000",
        ],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        step(&json, "bucket")["summary"]
            .as_str()
            .unwrap()
            .contains("exports/lecture-9.zip"),
        "{json:#}"
    );
    assert!(step(&json, "pause-exports")["skipped"].is_null(), "{json:#}");
    assert!(
        step(&json, "prune-temporary-uploads")["skipped"].is_string(),
        "{json:#}"
    );
    assert_eq!(old_uploads_left(&s3), 3);
    // The app's bucket is gone (triage 1): the same.
    let (run, json) = run_book(&s3, &app, &redis, &["--set", "data_bucket=author-exports-gone"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        step(&json, "bucket")["summary"]
            .as_str()
            .unwrap()
            .contains("NoSuchBucket"),
        "{json:#}"
    );
    assert!(step(&json, "pause-exports")["skipped"].is_null(), "{json:#}");
}
