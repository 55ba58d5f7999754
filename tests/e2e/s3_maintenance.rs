//! `runbooks/s3-maintenance.yaml` (seed 001, "S3 maintenance") end to end against a
//! real S3-compatible server (s3s-fs, verifying SigV4) and a real PostgreSQL 15 holding
//! the recordings metadata with `archive_key`.

use crate::harness::{Postgres, Run, S3Server, runbox_env, step, workspace};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
const TEMP: &str = "author-temporary-uploads";
const ARCHIVE: &str = "author-recordings-prod";

/// Temporary uploads: three overdue (25 h, 600 B each), one in flight (1 h, 600 B):
/// 2,400 B in all. The archive holds recording 3's object, not recording 4's.
fn s3() -> S3Server {
    let s3 = S3Server::start();
    s3.bucket(TEMP);
    for key in ["u/old-1", "u/old-2", "u/deep/old-3"] {
        s3.put(TEMP, key, &[1; 600], 25 * HOUR);
    }
    s3.put(TEMP, "u/fresh", &[1; 600], HOUR);
    s3.bucket(ARCHIVE);
    s3.put(ARCHIVE, "archive/2026/rec-3.mp4", b"archived media", 40 * 24 * HOUR);
    s3
}

/// The harness's recordings, with archive keys: 3 archived (object present), 4 archived
/// (object missing), 5 never archived.
fn pg() -> Postgres {
    let pg = Postgres::start();
    pg.psql(
        "app",
        "ALTER TABLE recordings ADD COLUMN archive_key text;
         UPDATE recordings SET archive_key = 'archive/2026/rec-' || id || '.mp4' WHERE id IN (3, 4);",
    );
    pg
}

fn run_book(s3: &S3Server, pg: &Postgres, sets: &[(&str, &str)], extra: &[&str]) -> (Run, Value) {
    let runbook = workspace().join("runbooks/s3-maintenance.yaml");
    let mut all = vec![
        format!("s3_endpoint={}", s3.endpoint()),
        format!("db_url=postgres://scram_user@127.0.0.1:{}/app", pg.port),
        format!("db_grant={}", pg.grant()),
        "sslmode=disable".to_string(),
    ];
    all.extend(sets.iter().map(|(k, v)| format!("{k}={v}")));
    let mut args = vec!["run", runbook.to_str().unwrap(), "--format", "json"];
    for set in &all {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let run = runbox_env(
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY),
            ("RECORDINGS_DB_PASSWORD", "scram-pw"),
        ],
    );
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:#?}"));
    (run, json)
}

fn skipped(json: &Value, id: &str) -> bool {
    step(json, id)["skipped"]
        .as_str()
        .is_some_and(|s| s.contains("is false"))
}

fn audit(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_backlog_past_the_threshold_is_pruned_of_overdue_uploads_only_with_approval() {
    let (s3, pg) = (s3(), pg());
    let all = s3.files(TEMP);
    assert_eq!(all.len(), 4);

    // Under the threshold: measured, OK, nothing planned.
    let (run, json) = run_book(
        &s3,
        &pg,
        &[("backlog_bytes", "5000")],
        &["--apply", "--approve", "prune-temporary-uploads"],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let size = step(&json, "temp-uploads-size");
    assert_eq!(
        (size["outputs"]["bytes"].as_u64(), size["outputs"]["objects"].as_u64()),
        (Some(2400), Some(4))
    );
    assert!(skipped(&json, "prune-temporary-uploads"), "{json:#}");
    assert!(skipped(&json, "locate-archive-key") && step(&json, "archived-object")["skipped"].is_string());
    assert_eq!(s3.files(TEMP), all);

    // Past it (1,000 B stands in for the seed's 1 GB): WARNING, the prune is planned
    // (the three overdue uploads) and a dry run deletes nothing.
    let backlog = [("backlog_bytes", "1000")];
    let (run, json) = run_book(&s3, &pg, &backlog, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(step(&json, "temp-uploads-size")["status"], "warning");
    let prune = step(&json, "prune-temporary-uploads");
    assert_eq!(
        prune["plan"]["summary"],
        format!("delete 3 objects (1800 B) older than 24h under \"\" in bucket {TEMP}"),
        "{prune:#}"
    );
    assert_ne!(prune["applied"], true);
    assert_eq!(s3.files(TEMP), all, "the plan deleted something");

    // Approved: exactly the three overdue uploads go, the one in flight stays; audited.
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let (_, json) = run_book(
        &s3,
        &pg,
        &backlog,
        &[
            "--apply",
            "--approve",
            "prune-temporary-uploads",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
    );
    assert_eq!(step(&json, "prune-temporary-uploads")["applied"], true, "{json:#}");
    assert_eq!(s3.files(TEMP), ["u/fresh"]);
    let lines = audit(&audit_log);
    assert_eq!(
        lines
            .iter()
            .map(|l| (l["event"].as_str().unwrap(), l["step"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("apply-started", "prune-temporary-uploads"),
            ("apply-finished", "prune-temporary-uploads")
        ]
    );
    assert_eq!(
        lines[1]["outcome"]["summary"],
        "applied: deleted 3 of 3 objects (1800 B)"
    );
}

#[test]
fn the_archived_object_key_is_located_in_postgres_and_confirmed_in_the_archive() {
    let (s3, pg) = (s3(), pg());
    let (run, json) = run_book(&s3, &pg, &[("recording_id", "3")], &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let locate = step(&json, "locate-archive-key");
    assert_eq!(locate["outputs"]["first_value"], "archive/2026/rec-3.mp4", "{locate:#}");
    assert_eq!(
        locate["outputs"]["rows"],
        json!([{"archive_key": "archive/2026/rec-3.mp4"}])
    );
    let object = step(&json, "archived-object");
    assert_eq!(object["status"], "ok", "{object:#}");
    assert_eq!(object["details"], json!(["archive/2026/rec-3.mp4: 14 B"]));

    // Archived, but the object is not in the archive bucket: CRITICAL, naming the key.
    let (run, json) = run_book(&s3, &pg, &[("recording_id", "4")], &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        step(&json, "archived-object")["summary"],
        format!("1 of 1 keys missing: archive/2026/rec-4.mp4; bucket {ARCHIVE} reachable")
    );

    // Never archived, or no such recording: no key, CRITICAL, and nothing to look up.
    for id in ["5", "999"] {
        let (run, json) = run_book(&s3, &pg, &[("recording_id", id)], &[]);
        assert_eq!(run.code, 2, "{id}: {run:#?}");
        assert_eq!(
            step(&json, "locate-archive-key")["summary"],
            "archived_recordings = 0 rows"
        );
        assert!(step(&json, "archived-object")["skipped"].is_string(), "{json:#}");
    }
    // The id is a value, never SQL.
    let (run, json) = run_book(&s3, &pg, &[("recording_id", "3 OR true")], &[]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(step(&json, "locate-archive-key")["outputs"]["sqlstate"], "22P02");
}
