//! `runbooks/event-log-write-failure.yaml` (seed 000, "Event Log Write Failure") end to
//! end against a real PostgreSQL 15 holding a session_events table, and an HTTP
//! stand-in for the application's admin endpoints (start/join switches).

use crate::harness::{HttpServer, Postgres, Reply, Run, runbox_env, step, workspace};
use serde_json::{Value, json};
use std::path::Path;

/// A healthy event log: the unique (session_id, seq) index, sessions s1 (1–5) and s2
/// (1–3) without gaps, distinct idempotency keys; `app` may insert, `scram_user` (the
/// runbook's role) may only read.
const EVENTS: &str = "
    CREATE ROLE app LOGIN;
    CREATE TABLE session_events (id bigserial PRIMARY KEY, session_id text NOT NULL, seq int NOT NULL,
                                 idempotency_key text, kind text NOT NULL DEFAULT 'chat',
                                 created_at timestamptz NOT NULL DEFAULT now());
    CREATE UNIQUE INDEX session_events_session_seq ON session_events (session_id, seq);
    INSERT INTO session_events (session_id, seq, idempotency_key)
        SELECT 's1', i, 's1-' || i FROM generate_series(1, 5) AS i;
    INSERT INTO session_events (session_id, seq, idempotency_key)
        SELECT 's2', i, 's2-' || i FROM generate_series(1, 3) AS i;
    GRANT SELECT ON session_events TO scram_user;
    GRANT INSERT ON session_events TO app;
";

/// What goes wrong: the unique index is dropped and a duplicate (s1, 3) gets in; s2
/// skips 4 and 7–8; s3 starts at 3; two events of different sessions share the key
/// `retry-1`; two old events (3 days) share `old-key`, outside the 24 h window; and
/// the application's role loses INSERT.
const BREAK: &str = "
    DROP INDEX session_events_session_seq;
    INSERT INTO session_events (session_id, seq, idempotency_key) VALUES ('s1', 3, 's1-3-again');
    INSERT INTO session_events (session_id, seq, idempotency_key) VALUES
        ('s2', 5, 'retry-1'), ('s2', 6, 's2-6'), ('s2', 9, 's2-9'), ('s3', 3, 'retry-1'), ('s3', 4, 's3-4');
    INSERT INTO session_events (session_id, seq, idempotency_key, created_at) VALUES
        ('old', 1, 'old-key', now() - interval '3 days'), ('old', 2, 'old-key', now() - interval '3 days');
    REVOKE INSERT ON session_events FROM app;
";

/// The application: its admin switches answer 200.
fn app() -> HttpServer {
    HttpServer::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("PUT", "/admin/session-start" | "/admin/session-join") => Reply::new(200, "{\"enabled\": false}"),
        _ => Reply::new(404, "no"),
    })
}

fn run_book(pg: &Postgres, app: &HttpServer, extra: &[&str]) -> (Run, Value) {
    let runbook = workspace().join("runbooks/event-log-write-failure.yaml");
    let sets = [
        format!("db_url=postgres://scram_user@127.0.0.1:{}/app", pg.port),
        format!("db_grant={}", pg.grant()),
        "sslmode=disable".to_string(),
        format!("api_url={}", app.url()),
    ];
    let mut args = vec!["run", runbook.to_str().unwrap(), "--format", "json"];
    for set in &sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let run = runbox_env(&args, &[("EVENTS_DB_PASSWORD", "scram-pw")]);
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:#?}"));
    (run, json)
}

fn status(json: &Value, id: &str) -> String {
    step(json, id)["status"].as_str().unwrap_or_default().to_string()
}

fn puts(app: &HttpServer) -> Vec<(String, String)> {
    app.received()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.path, r.body))
        .collect()
}

fn audit(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_healthy_event_log_is_ok_and_nothing_is_halted() {
    let (pg, app) = (Postgres::start(), app());
    pg.psql("app", EVENTS);
    let (run, json) = run_book(&pg, &app, &["--apply", "--approve", "halt-start-join"]);
    assert_eq!(run.code, 0, "{run:#?}");
    for id in [
        "db-accepts-writes",
        "unique-seq-index",
        "duplicate-seq",
        "idempotency-collisions",
        "sequence-gaps",
    ] {
        assert_eq!(status(&json, id), "ok", "{id}: {json:#}");
    }
    assert_eq!(step(&json, "unique-seq-index")["outputs"]["value"], 1);
    assert_eq!(step(&json, "sequence-gaps")["outputs"]["rows"], json!([]));
    assert!(
        step(&json, "halt-start-join")["skipped"]
            .as_str()
            .unwrap()
            .contains("is false"),
        "{json:#}"
    );
    assert!(puts(&app).is_empty());
}

#[test]
fn writes_failing_halts_start_and_join_with_approval_and_the_checks_list_what_to_repair() {
    let (pg, app) = (Postgres::start(), app());
    pg.psql("app", EVENTS);
    pg.psql("app", BREAK);
    let rows_before = pg.psql("app", "SELECT count(*) FROM session_events");

    // Dry run: every finding, the halt planned, nothing sent.
    let (run, json) = run_book(&pg, &app, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let blockers = step(&json, "db-accepts-writes");
    assert_eq!(blockers["status"], "critical", "{blockers:#}");
    assert_eq!(
        blockers["outputs"]["rows"],
        json!([{"reason": "the application role may not INSERT into the events table"}])
    );
    assert_eq!(status(&json, "unique-seq-index"), "critical");
    assert_eq!(
        step(&json, "unique-seq-index")["summary"],
        "unique_seq_indexes = 0 (1 row)"
    );
    let duplicates = step(&json, "duplicate-seq");
    assert_eq!(duplicates["status"], "critical");
    assert_eq!(
        duplicates["outputs"]["rows"],
        json!([{"session_id": "s1", "seq": "3", "copies": "2"}])
    );
    let collisions = step(&json, "idempotency-collisions");
    assert_eq!(collisions["status"], "warning");
    assert_eq!(
        collisions["outputs"]["rows"],
        json!([{"idempotency_key": "retry-1", "events": "2", "sessions": "2"}]),
        "the old shared key is outside the window"
    );
    let gaps = step(&json, "sequence-gaps");
    assert_eq!(gaps["status"], "warning");
    assert_eq!(
        gaps["outputs"]["rows"],
        json!([
            {"session_id": "s2", "first_missing": "4", "last_missing": "4", "missing": "1"},
            {"session_id": "s2", "first_missing": "7", "last_missing": "8", "missing": "2"},
            {"session_id": "s3", "first_missing": "1", "last_missing": "2", "missing": "2"},
        ])
    );
    assert_eq!(
        gaps["details"][0],
        "session_id=s2, first_missing=4, last_missing=4, missing=1"
    );
    let items: Vec<&Value> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["item"]["step"] == "halt-start-join")
        .collect();
    assert_eq!(items.len(), 2, "{json:#}");
    for (item, path) in items.iter().zip(["session-start", "session-join"]) {
        assert_eq!(
            item["plan"]["summary"],
            format!("PUT {}/admin/{path}", app.url()),
            "{item:#}"
        );
        assert_ne!(item["applied"], true);
    }
    assert!(puts(&app).is_empty(), "the dry run sent {:?}", puts(&app));

    // Applied without approval: still nothing.
    let (_, json) = run_book(&pg, &app, &["--apply"]);
    assert!(
        json["steps"].to_string().contains("not applied: approval required"),
        "{json:#}"
    );
    assert!(puts(&app).is_empty());

    // Approved: exactly the two planned requests, each audited.
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let (run, json) = run_book(
        &pg,
        &app,
        &[
            "--apply",
            "--approve",
            "halt-start-join",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    let body = r#"{"enabled": false, "reason": "event log writes are failing"}"#.to_string();
    assert_eq!(
        puts(&app),
        [
            ("/admin/session-start".to_string(), body.clone()),
            ("/admin/session-join".to_string(), body)
        ]
    );
    let applied: Vec<&Value> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["item"]["step"] == "halt-start-join")
        .collect();
    assert!(applied.iter().all(|s| s["applied"] == true), "{json:#}");
    let lines = audit(&audit_log);
    assert_eq!(
        lines.iter().map(|l| l["event"].as_str().unwrap()).collect::<Vec<_>>(),
        ["apply-started", "apply-finished", "apply-started", "apply-finished"]
    );
    assert!(lines.iter().all(|l| l["step"] == "halt-start-join"));
    // The runbook never wrote to the database.
    assert_eq!(pg.psql("app", "SELECT count(*) FROM session_events"), rows_before);
}

#[test]
fn table_and_column_inputs_cannot_become_sql() {
    let (pg, app) = (Postgres::start(), app());
    pg.psql("app", EVENTS);
    let (run, json) = run_book(
        &pg,
        &app,
        &[
            "--set",
            "events_table=session_events; DROP TABLE session_events",
            "--set",
            "seq_column=seq\" ) --",
        ],
    );
    assert_eq!(run.code, 3, "{run:#?}");
    for id in ["duplicate-seq", "idempotency-collisions", "sequence-gaps"] {
        let summary = step(&json, id)["summary"].as_str().unwrap().to_string();
        assert_eq!(status(&json, id), "unknown", "{id}: {json:#}");
        assert!(summary.contains("is not a plain SQL name"), "{id}: {summary}");
    }
    // Where the name is a bound value, PostgreSQL reads it as a name and refuses it.
    for id in ["db-accepts-writes", "unique-seq-index"] {
        assert_eq!(status(&json, id), "unknown", "{id}: {json:#}");
        assert_eq!(step(&json, id)["outputs"]["sqlstate"], "42602", "{id}: {json:#}");
        assert!(
            step(&json, id)["summary"]
                .as_str()
                .unwrap()
                .ends_with("invalid name syntax (SQLSTATE 42602)")
        );
    }
    assert_eq!(pg.psql("app", "SELECT count(*) FROM session_events"), "8");
}
