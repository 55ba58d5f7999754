//! `runbox check pg-query` against a real PostgreSQL 15: thresholds on a value or a row
//! count, writes that change nothing, the statement timeout, authentication, TLS, and
//! outputs read by a later step.

use crate::harness::{Book, Postgres, Run, runbox, runbox_env, step};
use serde_json::Value;

/// `t` (ids 1–5, names a–e) and its sequence, which `trust_user` may write: only the
/// READ ONLY transaction stands between the check and a write.
const FIXTURE: &str = "
    CREATE TABLE t (id serial PRIMARY KEY, name text NOT NULL, note text);
    INSERT INTO t (name, note) SELECT chr(96 + i), repeat('x', 50 * i) FROM generate_series(1, 5) AS i;
    GRANT ALL ON t TO trust_user, scram_user;
    GRANT ALL ON SEQUENCE t_id_seq TO trust_user, scram_user;
";

fn start() -> Postgres {
    let pg = Postgres::start();
    pg.psql("app", FIXTURE);
    pg
}

/// Runs the check as `trust_user` over plaintext with `query` and extra `--with` values.
fn check(pg: &Postgres, query: &str, with: &[&str]) -> Run {
    check_as(pg, "trust_user", None, query, with)
}

fn check_as(pg: &Postgres, user: &str, password: Option<&str>, query: &str, with: &[&str]) -> Run {
    let url = format!("url={}?sslmode=disable", pg.url(user));
    let query = format!("query={query}");
    let grant = pg.grant();
    let mut args = vec![
        "check", "pg-query", "--with", &url, "--with", &query, "--allow", &grant, "--format", "json",
    ];
    for value in with {
        args.extend(["--with", value]);
    }
    match password {
        Some(password) => {
            args.extend(["--with", "password_secret=pg", "--secret", "pg=env:PG_PASSWORD"]);
            runbox_env(&args, &[("PG_PASSWORD", password)])
        }
        None => runbox(&args),
    }
}

fn result(run: &Run) -> Value {
    run.json()["steps"][0].clone()
}

fn summary(run: &Run) -> String {
    result(run)["summary"].as_str().unwrap().to_string()
}

fn output(run: &Run, name: &str) -> Value {
    result(run)["outputs"][name].clone()
}

#[test]
fn a_scalar_is_judged_by_its_thresholds() {
    let pg = start();
    let cases: &[(&[&str], i32)] = &[
        (&[], 0),
        (&["warn=10", "crit=20"], 0),
        (&["warn=4", "crit=20"], 1),
        (&["warn=2", "crit=4"], 2),
        (&["crit=@5:5"], 2),
    ];
    for (with, code) in cases {
        let run = check(&pg, "SELECT count(*) FROM t", with);
        assert_eq!(run.code, *code, "{with:?}: {run:#?}");
        assert_eq!(run.metric("value"), 5.0);
    }
    let run = check(&pg, "SELECT count(*) AS n FROM t", &["label=rows_in_t", "warn=4"]);
    assert_eq!(
        (run.code, summary(&run)),
        (1, "rows_in_t = 5 (1 row)".to_string()),
        "{run:#?}"
    );
    assert_eq!(run.metric("rows_in_t"), 5.0);
    assert_eq!(output(&run, "value"), 5);
    assert_eq!(output(&run, "first_value"), "5");
    assert_eq!(output(&run, "rows"), serde_json::json!([{"n": "5"}]));
    // A boolean counts as 1/0; NULL and text are UNKNOWN, saying why.
    let run = check(&pg, "SELECT count(*) > 4 FROM t", &["crit=0"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let run = check(&pg, "SELECT max(id) FROM t WHERE id > 100", &[]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).contains("is NULL (wrap it in COALESCE"),
        "{}",
        summary(&run)
    );
    let run = check(&pg, "SELECT name FROM t ORDER BY id", &[]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).contains("(name) is \"a\", not a number"),
        "{}",
        summary(&run)
    );
}

#[test]
fn rows_are_counted_sampled_and_handed_on_capped() {
    let pg = start();
    let query = "SELECT id, name, note FROM t ORDER BY id";
    let run = check(
        &pg,
        query,
        &[
            "measure=rows",
            "crit=3",
            "samples=2",
            "max_rows=3",
            "max_value_chars=60",
        ],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(summary(&run), "rows = 5 rows");
    assert_eq!(run.metric("rows"), 5.0);
    let details = result(&run)["details"].clone();
    assert_eq!(
        details[0],
        format!("id=1, name=a, note={}", "x".repeat(50)),
        "{details}"
    );
    assert_eq!(
        details[1],
        format!("id=2, name=b, note={}…", "x".repeat(60)),
        "{details}"
    );
    assert_eq!(details[2], "… 5 rows in all", "{details}");
    let rows = output(&run, "rows");
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
    assert_eq!(rows[2]["name"], "c");
    assert_eq!(rows[2]["note"], format!("{}…", "x".repeat(60)));
    assert_eq!(output(&run, "rows_truncated"), true);
    assert_eq!((output(&run, "value"), output(&run, "row_count")), (5.into(), 5.into()));

    let run = check(&pg, "SELECT id FROM t WHERE id > 10", &["measure=rows", "warn=0"]);
    assert_eq!((run.code, summary(&run)), (0, "rows = 0 rows".to_string()), "{run:#?}");
    assert_eq!(output(&run, "rows"), serde_json::json!([]));
    assert_eq!(output(&run, "first_value"), Value::Null);
}

#[test]
fn values_are_bound_and_names_are_validated_never_pasted() {
    let pg = start();
    let query = r#"SELECT count(*) FROM :"table" WHERE name = $1"#;
    let run = check(&pg, query, &["identifiers={\"table\": \"t\"}", "params=[\"b\"]"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.metric("value"), 1.0);
    // A value that would break out of a pasted literal is only a value.
    let run = check(
        &pg,
        query,
        &["identifiers={\"table\": \"t\"}", "params=[\"b' OR 'x' = 'x\"]"],
    );
    assert_eq!((run.code, run.metric("value")), (0, 0.0), "{run:#?}");
    // A name that is not a plain name is refused before anything is sent.
    let before = pg.connections_received();
    let run = check(
        &pg,
        query,
        &["identifiers={\"table\": \"t; DROP TABLE t\"}", "params=[\"b\"]"],
    );
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).starts_with("config field `identifiers.table`: \"t; DROP TABLE t\" is not a plain SQL name"),
        "{}",
        summary(&run)
    );
    assert_eq!(pg.connections_received(), before, "a refused config still connected");
    // A `$1` without `params` is the server's refusal, naming the field.
    let run = check(&pg, "SELECT count(*) FROM t WHERE name = $1", &[]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).starts_with("config field `params`: bind message supplies 0 parameters"),
        "{}",
        summary(&run)
    );
    assert_eq!(pg.psql("app", "SELECT count(*) FROM t"), "5");
}

/// Each statement tries to change `t` or its sequence; each is refused by PostgreSQL
/// (the SQLSTATE says which defence), the check is UNKNOWN, and psql sees nothing changed.
#[test]
fn writes_are_refused_and_change_nothing() {
    let pg = start();
    let state = || {
        pg.psql(
            "app",
            "SELECT (SELECT count(*) FROM t) || ',' || (SELECT string_agg(name, '' ORDER BY id) FROM t) || ',' || last_value || ',' || is_called FROM t_id_seq",
        )
    };
    let before = state();
    assert_eq!(before, "5,abcde,5,true");
    let cases = [
        (
            "DELETE FROM t",
            "25006",
            "cannot execute DELETE in a read-only transaction",
        ),
        (
            "UPDATE t SET name = 'z'",
            "25006",
            "cannot execute UPDATE in a read-only transaction",
        ),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
            "25006",
            // PostgreSQL names the statement, a SELECT with a data-modifying WITH.
            "cannot execute SELECT in a read-only transaction",
        ),
        (
            "SELECT nextval('t_id_seq')",
            "25006",
            "cannot execute nextval() in a read-only transaction",
        ),
        (
            "COMMIT; DELETE FROM t",
            "42601",
            "cannot insert multiple commands into a prepared statement",
        ),
        (
            "SELECT 1; DELETE FROM t",
            "42601",
            "cannot insert multiple commands into a prepared statement",
        ),
        (
            "SET TRANSACTION READ WRITE",
            "25001",
            "transaction read-write mode must be set before any query",
        ),
        (
            "CREATE TABLE u (x int)",
            "25006",
            "cannot execute CREATE TABLE in a read-only transaction",
        ),
    ];
    for (query, sqlstate, message) in cases {
        let run = check(&pg, query, &[]);
        assert_eq!(run.code, 3, "{query}: {run:#?}");
        assert_eq!(output(&run, "sqlstate"), sqlstate, "{query}: {run:#?}");
        let summary = summary(&run);
        assert!(
            summary.starts_with("config field `query`: refused"),
            "{query}: {summary}"
        );
        assert!(
            summary.contains(&format!("{message} (SQLSTATE {sqlstate})")),
            "{query}: {summary}"
        );
        assert_eq!(state(), before, "{query} changed something");
    }
    // The injection: `COMMIT` would end the read-only transaction and let the DELETE
    // run in a transaction of its own. The server refused the whole text at Parse
    // (42601 above), so neither ran: the rows are there, and no table was created.
    assert_eq!(pg.psql("app", "SELECT count(*) FROM t"), "5");
    assert_eq!(pg.psql("app", "SELECT to_regclass('u') IS NULL"), "t");
}

#[test]
fn a_slow_query_is_cancelled_at_timeout_ms() {
    let pg = start();
    let run = check(&pg, "SELECT pg_sleep(10)", &["timeout_ms=200"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).starts_with("the query was cancelled after 200 ms (statement_timeout): canceling statement due to statement timeout (SQLSTATE 57014)"),
        "{}",
        summary(&run)
    );
    assert!(run.elapsed.as_secs_f64() < 3.0, "took {:?}", run.elapsed);
    // The session is gone: no backend still sleeps.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
        ),
        "0"
    );
}

#[test]
fn passwords_are_checked_and_never_shown() {
    let pg = start();
    let run = check_as(&pg, "scram_user", Some("scram-pw"), "SELECT count(*) FROM t", &[]);
    assert_eq!((run.code, run.metric("value")), (0, 5.0), "{run:#?}");
    let run = check_as(
        &pg,
        "scram_user",
        Some("not-the-password"),
        "SELECT count(*) FROM t",
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        summary(&run),
        "authentication failed for user scram_user: password authentication failed for user \"scram_user\""
    );
    assert!(!run.stdout.contains("not-the-password") && !run.stderr.contains("not-the-password"));
    let run = check_as(&pg, "md5_user", None, "SELECT 1", &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).contains("none is configured (set `password_secret`)"),
        "{}",
        summary(&run)
    );
}

#[test]
fn tls_as_sslmode_says_and_the_server_confirms_it() {
    // ssl=on, a self-signed certificate the host cannot verify: only a step that turns
    // verification off connects, and then PostgreSQL itself says the session is TLS.
    let pg = start();
    let query = "query=SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let run_with = |sslmode: &str, extra: &[&str]| {
        let url = format!("url={}?sslmode={sslmode}", pg.url("tls_user"));
        let grant = pg.grant();
        let mut args = vec![
            "check", "pg-query", "--with", &url, "--with", query, "--allow", &grant, "--format", "json",
        ];
        args.extend(extra);
        runbox(&args)
    };
    let run = run_with("require", &["--tls-no-verify"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        output(&run, "value"),
        1,
        "pg_stat_ssl says the session is not encrypted: {run:#?}"
    );
    let run = run_with("require", &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).contains("runbox verifies the certificate in every mode that uses TLS"),
        "{}",
        summary(&run)
    );
    let run = run_with("verify-full", &["--tls-no-verify"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run)
            .ends_with("demands a verified certificate, and the step turns verification off (`tls: {verify: false}`)")
    );
    let run = run_with("disable", &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).starts_with("the server accepts user tls_user only over TLS"),
        "{}",
        summary(&run)
    );
}

#[test]
fn a_later_step_reads_the_value_and_the_rows() {
    let pg = start();
    let url = format!("{}?sslmode=disable", pg.url("trust_user"));
    let book = Book::new(&format!(
        r#"
name: pg-query-outputs
steps:
  - id: newest
    uses: pg-query
    with:
      url: {url}
      query: SELECT name, id FROM t ORDER BY id DESC LIMIT 2
      measure: rows
    allow: ["{grant}"]
  - id: same-name
    uses: pg-query
    needs: newest
    when: steps.newest.outputs.rows
    with:
      url: {url}
      query: SELECT count(*) FROM t WHERE name = $1
      params: ["${{{{ steps.newest.outputs.first_value }}}}"]
      crit: "1:1"
    allow: ["{grant}"]
  - id: each
    uses: pg-query
    needs: newest
    for_each: ${{{{ steps.newest.outputs.rows }}}}
    with:
      url: {url}
      query: SELECT count(*) FROM t WHERE name = $1 AND id = $2::int
      params: ["${{{{ item.name }}}}", "${{{{ item.id }}}}"]
      crit: "1:1"
    allow: ["{grant}"]
  - id: too-many
    uses: pg-query
    needs: newest
    when: steps.newest.metrics.rows > 5
    with:
      url: {url}
      query: SELECT 1
    allow: ["{grant}"]
"#,
        grant = pg.grant()
    ));
    let run = book.run(&["--format", "json"]);
    let json = run.json();
    assert_eq!(step(&json, "newest")["outputs"]["first_value"], "e", "{json:#}");
    assert_eq!(
        step(&json, "newest")["outputs"]["rows"],
        serde_json::json!([{"name": "e", "id": "5"}, {"name": "d", "id": "4"}])
    );
    let same = step(&json, "same-name");
    assert_eq!(
        (same["status"].as_str(), same["outputs"]["value"].as_i64()),
        (Some("ok"), Some(1)),
        "{same}"
    );
    // Each row, handed on as an item, is found again: count 1 each.
    let items: Vec<&Value> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["item"]["step"] == "each")
        .collect();
    assert_eq!(items.len(), 2, "{json:#}");
    for item in items {
        assert_eq!(item["status"], "ok", "{item}");
        assert_eq!(item["outputs"]["value"], 1, "{item}");
    }
    assert!(
        step(&json, "too-many")["skipped"]
            .as_str()
            .unwrap()
            .contains("is false"),
        "{json:#}"
    );
    assert_eq!(run.code, 0, "{run:#?}");
}
