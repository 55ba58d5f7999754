//! `runbox check pg-dangling-metadata` against a real PostgreSQL.

use crate::harness::{Postgres, Run, runbox, runbox_env};

/// The server's URL for `user`, without TLS. The harness's server has TLS on with a
/// self-signed, name-less certificate that the host cannot verify, and the plugin's
/// default (`sslmode=prefer`) would use it and fail; TLS is tested in `tls_plugins.rs`.
fn plain_url(pg: &Postgres, user: &str) -> String {
    format!("{}?sslmode=disable", pg.url(user))
}

/// Runs the check as `user` with extra `--with` values; passwords come from
/// `PG_PASSWORD` through a granted secret.
fn check(pg: &Postgres, user: &str, password: Option<&str>, with: &[&str]) -> Run {
    let url = format!("url={}", plain_url(pg, user));
    let grant = pg.grant();
    let mut args = vec![
        "check",
        "pg-dangling-metadata",
        "--with",
        &url,
        "--allow",
        &grant,
        "--format",
        "json",
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

fn summary(run: &Run) -> String {
    run.json()["steps"][0]["summary"].as_str().unwrap().to_string()
}

#[test]
fn counts_exactly_the_dangling_rows_with_every_authentication_method() {
    let pg = Postgres::start();
    let cases = [
        ("trust_user", None),
        ("clear_user", Some("clear-pw")),
        ("md5_user", Some("md5-pw")),
        ("scram_user", Some("scram-pw")),
    ];
    for (user, password) in cases {
        let run = check(&pg, user, password, &[]);
        assert_eq!(run.code, 0, "{user}: {run:#?}");
        assert_eq!(run.metric("dangling"), 7.0, "{user}");
        let age = run.metric("oldest_age_s");
        assert!(
            (7.0 * 3600.0 - 120.0..7.0 * 3600.0 + 120.0).contains(&age),
            "{user}: oldest {age}"
        );
        assert_eq!(
            summary(&run),
            "7 dangling rows in recordings, the oldest expired 7.0 h ago"
        );
        let details = &run.json()["steps"][0]["details"];
        assert_eq!(details[0], "oldest dangling ids: 1, 2, 3, 4, 5", "{user}: {details}");
    }
    // The password never reaches the output.
    let run = check(&pg, "scram_user", Some("scram-pw"), &[]);
    assert!(!run.stdout.contains("scram-pw") && !run.stderr.contains("scram-pw"));
}

#[test]
fn thresholds_on_count_and_age_set_the_status() {
    let pg = Postgres::start();
    let cases: &[(&[&str], i32)] = &[
        (&["warn=10", "crit=100"], 0),
        (&["warn=5", "crit=100"], 1),
        (&["warn=5", "crit=6"], 2),
        (&["age_warn=3600"], 1),
        (&["age_warn=3600", "age_crit=7200"], 2),
        (&["age_crit=86400"], 0),
    ];
    for (with, code) in cases {
        let run = check(&pg, "trust_user", None, with);
        assert_eq!(run.code, *code, "{with:?}: {run:#?}");
    }
    let run = check(&pg, "trust_user", None, &["where=tenant = 1", "warn=0"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.metric("dangling"), 3.0);
    let run = check(&pg, "trust_user", None, &["where=tenant = 3"]);
    assert_eq!(
        (run.code, summary(&run)),
        (0, "no dangling rows in recordings".to_string())
    );
    assert_eq!(run.metric("oldest_age_s"), 0.0);
}

#[test]
fn wrong_passwords_are_critical_authentication_failures() {
    let pg = Postgres::start();
    for user in ["clear_user", "md5_user", "scram_user"] {
        let run = check(&pg, user, Some("not-the-password"), &[]);
        assert_eq!(run.code, 2, "{user}: {run:#?}");
        assert!(
            summary(&run).starts_with(&format!("authentication failed for user {user}")),
            "{}",
            summary(&run)
        );
    }
    let run = check(&pg, "scram_user", None, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).contains("the server asks for a password and none is configured"),
        "{}",
        summary(&run)
    );
}

#[test]
fn missing_tables_and_columns_are_unknown_naming_them() {
    let pg = Postgres::start();
    let run = check(&pg, "trust_user", None, &["table=nope"]);
    assert_eq!(
        (run.code, summary(&run)),
        (
            3,
            "table `nope` does not exist (or this user cannot see it)".to_string()
        )
    );
    let run = check(&pg, "trust_user", None, &["expires_column=expiry"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(
        summary(&run),
        "column `expiry` does not exist in table `recordings` (config field `expires_column`)"
    );
    // A table without an `id` column: counted, no samples.
    let run = check(&pg, "trust_user", None, &["table=uploads"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.metric("dangling"), 1.0);
    assert!(run.json()["steps"][0]["details"].as_array().unwrap().is_empty());
}

#[test]
fn a_where_that_tries_to_write_is_refused_and_nothing_changes() {
    let pg = Postgres::start();
    let before = pg.psql("app", "SELECT count(*), max(id) FROM recordings");
    let run = check(&pg, "trust_user", None, &["where=true; delete from recordings"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).starts_with("config field `where`: refused: `;` would start another statement"),
        "{}",
        summary(&run)
    );

    // Past the syntax checks, the READ ONLY transaction refuses writes.
    let run = check(&pg, "trust_user", None, &["where=nextval('recordings_id_seq') > 0"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).contains("refused, the check is read-only"),
        "{}",
        summary(&run)
    );
    assert_eq!(pg.psql("app", "SELECT count(*), max(id) FROM recordings"), before);
    assert_eq!(
        pg.psql("app", "SELECT last_value FROM recordings_id_seq"),
        "16",
        "the sequence moved"
    );
}

#[test]
fn a_slow_query_is_cancelled_below_the_deadline() {
    let pg = Postgres::start();
    let url = format!("url={}", plain_url(&pg, "trust_user"));
    let run = runbox(&[
        "check",
        "pg-dangling-metadata",
        "--with",
        &url,
        "--with",
        "where=pg_sleep(10) IS NOT NULL",
        "--allow",
        &pg.grant(),
        "--timeout",
        "2s",
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.contains("the query was cancelled after"), "{}", run.stdout);
    assert!(run.stdout.contains("(statement_timeout)"), "{}", run.stdout);
    assert!(run.elapsed.as_secs_f64() < 4.0, "{:?}", run.elapsed);
}

#[test]
fn server_down_tls_only_and_no_grant() {
    let mut pg = Postgres::start();
    let run = check(&pg, "tls_user", None, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).starts_with("the server accepts user tls_user only over TLS (pg_hba.conf `hostssl`)"),
        "{}",
        summary(&run)
    );

    let before = pg.connections_received();
    assert!(
        before >= 1,
        "the log shows no connection, not even the TLS attempt: counting is broken"
    );
    let run = runbox(&[
        "check",
        "pg-dangling-metadata",
        "--with",
        &format!("url={}", plain_url(&pg, "trust_user")),
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "connect to 127.0.0.1:{port} denied: no grant covers it — add `tcp://127.0.0.1:{port}`",
            port = pg.port
        )),
        "{}",
        run.stdout
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        pg.connections_received(),
        before,
        "a connection reached PostgreSQL without a grant"
    );

    pg.stop();
    let run = check(&pg, "trust_user", None, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(summary(&run).ends_with(": connection refused"), "{}", summary(&run));
}
