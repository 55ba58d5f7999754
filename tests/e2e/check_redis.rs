//! `runbox check redis-ping` against a real redis-server.

use crate::harness::{Redis, SilentServer, free_port, runbox, runbox_env};
use std::time::Duration;

#[test]
fn ok_with_a_latency_metric() {
    let redis = Redis::start();
    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &format!("url={}", redis.url()),
        "--allow",
        &redis.grant(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json();
    assert_eq!(json["status"], "ok");
    let step = &json["steps"][0];
    assert_eq!(step["plugin"], "redis-ping");
    assert!(
        step["summary"]
            .as_str()
            .unwrap()
            .starts_with("PONG from redis://127.0.0.1:"),
        "{step}"
    );
    let latency = step["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "latency_ms")
        .expect("latency_ms metric");
    assert_eq!(latency["unit"], "ms");
    let value = latency["value"].as_f64().unwrap();
    assert!(value > 0.0 && value < 1000.0, "latency {value}");
    assert!(step["denied"].as_array().unwrap().is_empty());
}

#[test]
fn info_reports_role_and_clients_and_thresholds_set_the_status() {
    let redis = Redis::start();
    let url = format!("url={}", redis.url());
    // Any latency is above 0 ms, so crit "0" (alert outside 0..0) must make it CRITICAL;
    // a generous warn range keeps it OK.
    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &url,
        "--with",
        "info=true",
        "--with",
        "warn=10000",
        "--allow",
        &redis.grant(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let step = &run.json()["steps"][0];
    assert!(
        step["details"].as_array().unwrap().iter().any(|d| d == "role: master"),
        "{step}"
    );
    assert!(crate::harness::metric(step, "connected_clients") >= 1.0);

    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &url,
        "--with",
        "warn=0",
        "--allow",
        &redis.grant(),
        "--format",
        "nagios",
    ]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.starts_with("REDIS-PING WARNING - PONG"), "{}", run.stdout);
    assert!(run.stdout.contains("'latency_ms'="), "{}", run.stdout);
    assert!(run.stdout.contains("ms;0;"), "{}", run.stdout);

    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &url,
        "--with",
        "warn=0",
        "--with",
        "crit=0",
        "--allow",
        &redis.grant(),
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
}

#[test]
fn stopped_server_is_critical() {
    let mut redis = Redis::start();
    redis.stop();
    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &format!("url={}", redis.url()),
        "--allow",
        &redis.grant(),
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout
            .starts_with("CRITICAL  redis-ping  cannot connect to redis://127.0.0.1:"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("connection refused"), "{}", run.stdout);
}

#[test]
fn password_from_url_or_secret_and_wrong_password_is_critical() {
    let redis = Redis::start_with(Some("correct-horse"));
    let grant = redis.grant();
    let good_url = format!("url=redis://:correct-horse@127.0.0.1:{}", redis.port);
    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &good_url,
        "--allow",
        &grant,
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        !run.stdout.contains("correct-horse"),
        "password printed: {}",
        run.stdout
    );

    let url = format!("url={}", redis.url());
    let secret_args = [
        "check",
        "redis-ping",
        "--with",
        &url,
        "--with",
        "password_secret=pw",
        "--secret",
        "pw=env:TEST_REDIS_PW",
        "--allow",
        &grant,
    ];
    let run = runbox_env(&secret_args, &[("TEST_REDIS_PW", "correct-horse")]);
    assert_eq!(run.code, 0, "{run:#?}");

    let run = runbox_env(&secret_args, &[("TEST_REDIS_PW", "wrong-horse")]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.contains("authentication failed"), "{}", run.stdout);
    assert!(!run.stdout.contains("wrong-horse"), "{}", run.stdout);

    let run = runbox(&["check", "redis-ping", "--with", &url, "--allow", &grant]);
    assert_eq!(run.code, 2, "no password: {run:#?}");
    assert!(
        run.stdout.contains("authentication failed") && run.stdout.contains("NOAUTH"),
        "{}",
        run.stdout
    );
}

#[test]
fn without_a_grant_the_connection_is_denied_and_redis_sees_nothing() {
    let redis = Redis::start();
    let before = redis.connections_received();
    let run = runbox(&["check", "redis-ping", "--with", &format!("url={}", redis.url())]);
    // Our own INFO query is one connection; runbox must have added none.
    assert_eq!(
        redis.connections_received(),
        before + 1,
        "runbox reached redis without a grant"
    );
    assert_eq!(run.code, 3, "{run:#?}");
    let expected = format!(
        "UNKNOWN   redis-ping  sandbox: connect to 127.0.0.1:{port} denied: no grant covers it — add `tcp://127.0.0.1:{port}` to the grants (--allow)",
        port = redis.port
    );
    assert!(run.stdout.starts_with(&expected), "{}", run.stdout);
}

#[test]
fn a_grant_for_another_port_or_host_is_denied() {
    let redis = Redis::start();
    let before = redis.connections_received();
    let other_port = format!("redis://127.0.0.1:{}", free_port());
    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &format!("url={}", redis.url()),
        "--allow",
        &other_port,
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains(&format!("add `redis://127.0.0.1:{}`", redis.port)),
        "{}",
        run.stdout
    );

    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &format!("url={}", redis.url()),
        "--allow",
        &format!("redis://127.0.0.2:{}", redis.port),
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.contains("denied"), "{}", run.stdout);
    assert_eq!(redis.connections_received(), before + 1);
}

#[test]
fn a_granted_name_is_resolved_and_only_granted_names_are() {
    let redis = Redis::start();
    let url = format!("url=redis://localhost:{}", redis.port);
    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &url,
        "--allow",
        &format!("redis://localhost:{}", redis.port),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");

    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &url,
        "--allow",
        &format!("redis://127.0.0.1:{}", redis.port),
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains("name lookup of `localhost` denied"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_server_that_never_answers_gives_a_result_within_the_deadline() {
    let server = SilentServer::start();
    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        &format!("url=redis://{}", server.addr),
        "--allow",
        &format!("tcp://{}", server.addr),
        "--timeout",
        "1s",
    ]);
    // redis-ping sets its socket timeouts from host.remaining-ms, so it reports the
    // timeout itself, before the host's deadline.
    assert_eq!(run.code, 2, "{run:#?}");
    let expected = format!(
        "CRITICAL  redis-ping  redis://{}: timed out waiting for the server",
        server.addr
    );
    assert!(run.stdout.starts_with(&expected), "{}", run.stdout);
    assert!(run.elapsed < Duration::from_secs(4), "took {:?}", run.elapsed);
}

#[test]
fn bad_config_is_rejected_naming_the_field() {
    let run = runbox(&[
        "check",
        "redis-ping",
        "--with",
        "info=yes",
        "--with",
        "url=redis://127.0.0.1:1",
    ]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("--with info=yes: expected boolean"),
        "{}",
        run.stderr
    );

    let run = runbox(&["check", "redis-ping", "--with", "colour=blue"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("invalid config for plugin `redis-ping`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\"url\" is a required property"), "{}", run.stderr);
    assert!(run.stderr.contains("colour"), "{}", run.stderr);

    // Passes the schema, but the plugin finds the URL wrong: UNKNOWN naming the field.
    let run = runbox(&["check", "redis-ping", "--with", "url=localhost:6379"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.contains("config field `url`"), "{}", run.stdout);
    let run = runbox(&["check", "redis-ping", "--with", "url=redis://h", "--with", "warn=fast"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.contains("config field `warn`"), "{}", run.stdout);
}

#[test]
fn selects_the_database_and_authenticates_acl_users() {
    let redis = Redis::start_with(Some("admin-pw"));
    redis
        .command(&[
            "ACL",
            "SETUSER",
            "monitor",
            "on",
            ">monitor-pw",
            "+ping",
            "+select",
            "+auth",
            "allkeys",
        ])
        .unwrap();
    let grant = redis.grant();
    let user_url = format!("url=redis://monitor:monitor-pw@127.0.0.1:{}/3", redis.port);
    let run = runbox(&["check", "redis-ping", "--with", &user_url, "--allow", &grant]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("PONG from redis://monitor:***@127.0.0.1:"),
        "password shown: {}",
        run.stdout
    );

    let wrong_user = format!("url=redis://monitor:admin-pw@127.0.0.1:{}", redis.port);
    let run = runbox(&["check", "redis-ping", "--with", &wrong_user, "--allow", &grant]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout.contains("authentication failed: WRONGPASS"),
        "{}",
        run.stdout
    );

    let bad_db = format!("url=redis://:admin-pw@127.0.0.1:{}/99", redis.port);
    let run = runbox(&["check", "redis-ping", "--with", &bad_db, "--allow", &grant]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout.contains("server error: ERR DB index is out of range"),
        "{}",
        run.stdout
    );

    let not_a_db = format!("url=redis://127.0.0.1:{}/zero", redis.port);
    let run = runbox(&["check", "redis-ping", "--with", &not_a_db, "--allow", &grant]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains("config field `url`: database \"zero\" is not a number"),
        "{}",
        run.stdout
    );
}
