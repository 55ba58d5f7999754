//! Plugins written to misbehave, run in one runtime one after another: each is
//! contained with a clear reason, and a real check still runs after all of them.

use crate::harness::{Redis, SilentServer, cache_dir, free_port, plugin, runbox};
use runbox::capabilities::Grants;
use runbox::capabilities::network::Grant;
use runbox::capabilities::secrets::SecretGrant;
use runbox::result::Status;
use runbox::runtime::{CheckOutcome, Limits, Plugin, Runtime, RuntimeOptions};
use serde_json::json;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn grants(network: &[String]) -> Grants {
    Grants {
        network: network.iter().map(|g| g.parse::<Grant>().unwrap()).collect(),
        ..Grants::default()
    }
}

async fn mischief(runtime: &Runtime, plugin: &Plugin, config: serde_json::Value, grants: &Grants) -> CheckOutcome {
    let limits = Limits {
        deadline: Duration::from_secs(2),
        ..Limits::default()
    };
    runtime.run_check(plugin, &config, grants, &limits).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_are_contained_and_the_next_check_still_runs() {
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache_dir().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let bad = runtime.load(&plugin("mischief")).await.unwrap();
    let redis_ping = runtime.load(&plugin("redis_ping")).await.unwrap();
    let redis = Redis::start();
    let redis_grants = grants(&[redis.grant()]);
    let ping_config = json!({"url": redis.url()});
    let listen_port = free_port();

    // (config, grants, expected status, expected text in the summary)
    let cases: Vec<(serde_json::Value, Grants, Status, String)> = vec![
        (
            json!({"mode": "loop"}),
            Grants::default(),
            Status::Unknown,
            "still computing and was stopped".into(),
        ),
        (
            json!({"mode": "alloc"}),
            Grants::default(),
            Status::Unknown,
            "memory limit of 64 MiB exceeded".into(),
        ),
        (
            json!({"mode": "panic"}),
            Grants::default(),
            Status::Unknown,
            "plugin panicked: mischief panicked on purpose (at ".into(),
        ),
        // Rust's stack lives in linear memory; whichever stack overflows first, the reason says so.
        (
            json!({"mode": "recurse"}),
            Grants::default(),
            Status::Unknown,
            "recursion too deep".into(),
        ),
        (
            json!({"mode": "err"}),
            Grants::default(),
            Status::Unknown,
            "plugin error: mischief returned an error on purpose".into(),
        ),
        (
            json!({"mode": "listen", "target": format!("127.0.0.1:{listen_port}")}),
            redis_grants.clone(),
            Status::Ok,
            "listen failed".into(),
        ),
        (
            json!({"mode": "listen", "target": "0.0.0.0:0"}),
            redis_grants.clone(),
            Status::Ok,
            "listen failed".into(),
        ),
        (
            json!({"mode": "udp", "target": "127.0.0.1:0"}),
            redis_grants.clone(),
            Status::Ok,
            "udp failed".into(),
        ),
        (
            json!({"mode": "connect", "target": format!("127.0.0.2:{}", redis.port)}),
            redis_grants.clone(),
            Status::Ok,
            "connect failed".into(),
        ),
        (
            json!({"mode": "lookup", "target": "exfiltrate-data.attacker.example"}),
            redis_grants.clone(),
            Status::Ok,
            "lookup failed".into(),
        ),
        // Only a remote host is granted: loopback on the same port is still denied.
        (
            json!({"mode": "connect", "target": format!("127.0.0.1:{}", redis.port)}),
            grants(&[format!("tcp://203.0.113.10:{}", redis.port)]),
            Status::Ok,
            "connect failed".into(),
        ),
        (json!({"mode": "env"}), Grants::default(), Status::Ok, "env: []".into()),
        (
            json!({"mode": "utf8"}),
            Grants::default(),
            Status::Unknown,
            "plugin stopped: it passed a string that is not valid UTF-8".into(),
        ),
        (
            json!({"mode": "utf8-log"}),
            Grants::default(),
            Status::Unknown,
            "plugin stopped: it passed a string that is not valid UTF-8".into(),
        ),
        (
            json!({"mode": "utf8-stdout"}),
            Grants::default(),
            Status::Ok,
            "printed invalid UTF-8".into(),
        ),
        (
            json!({"mode": "sockets"}),
            Grants::default(),
            Status::Ok,
            "socket 65 failed".into(),
        ),
        (
            json!({"mode": "handles"}),
            Grants::default(),
            Status::Unknown,
            "plugin stopped: it held more than 1000 handles".into(),
        ),
        (
            json!({"mode": "file", "target": "/etc/passwd"}),
            Grants::default(),
            Status::Ok,
            "file failed".into(),
        ),
    ];
    for (config, grants, status, text) in cases {
        let started = Instant::now();
        let outcome = mischief(&runtime, &bad, config.clone(), &grants).await;
        assert_eq!(outcome.status, status, "{config}: {outcome:#?}");
        assert!(
            outcome.summary.contains(&text),
            "{config}: expected {text:?} in {outcome:#?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{config} took {:?}",
            started.elapsed()
        );

        let next = runtime
            .run_check(&redis_ping, &ping_config, &redis_grants, &Limits::default())
            .await;
        assert_eq!(next.status, Status::Ok, "after {config}: {next:#?}");
    }
    assert!(
        TcpStream::connect(("127.0.0.1", listen_port)).is_err(),
        "the plugin got a listening socket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_name_the_operation_and_the_grant_to_add() {
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache_dir().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let bad = runtime.load(&plugin("mischief")).await.unwrap();
    let granted = grants(&["redis://127.0.0.1:6379".into()]);
    let cases = [
        (
            json!({"mode": "connect", "target": "127.0.0.2:6379"}),
            "connect to 127.0.0.2:6379 denied: no grant covers it — add `tcp://127.0.0.2:6379`",
        ),
        (
            json!({"mode": "connect", "target": "127.0.0.1:6380"}),
            "connect to 127.0.0.1:6380 denied: no grant covers it — add `redis://127.0.0.1:6380`",
        ),
        (
            json!({"mode": "listen", "target": "127.0.0.1:7000"}),
            "bind to 127.0.0.1:7000 denied: plugins may not accept connections",
        ),
        (json!({"mode": "listen", "target": "0.0.0.0:0"}), "listen on 0.0.0.0:"),
        (
            json!({"mode": "sockets"}),
            "creating TCP socket number 65 denied: a plugin may create at most 64 sockets per invocation",
        ),
        (
            json!({"mode": "lookup", "target": "exfil.attacker.example"}),
            "name lookup of `exfil.attacker.example` denied",
        ),
        (
            json!({"mode": "secret", "target": "db_password"}),
            "secret `db_password` denied: the step grants no secret by that name",
        ),
    ];
    for (config, expected) in cases {
        let outcome = mischief(&runtime, &bad, config.clone(), &granted).await;
        assert!(
            outcome.denied.iter().any(|d| d.starts_with(expected)),
            "{config}: expected {expected:?} in {:#?}",
            outcome.denied
        );
    }

    // Only a remote host is granted: connecting to loopback is denied, and the grant to
    // add names loopback (the plugin cannot reach the host's own services by accident).
    let remote_only = grants(&["tcp://203.0.113.10:6379".into()]);
    let outcome = mischief(
        &runtime,
        &bad,
        json!({"mode": "connect", "target": "127.0.0.1:6379"}),
        &remote_only,
    )
    .await;
    assert_eq!(
        outcome.denied,
        vec![
            "connect to 127.0.0.1:6379 denied: no grant covers it — add `tcp://127.0.0.1:6379` to the grants (--allow)"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_secret_is_redacted_everywhere() {
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache_dir().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let bad = runtime.load(&plugin("mischief")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-3f9a1c77\n").unwrap();
    let grants = Grants {
        secrets: vec![SecretGrant::parse(&format!("api_token=file:{}", dir.path().join("token").display())).unwrap()],
        ..Grants::default()
    };
    let outcome = mischief(
        &runtime,
        &bad,
        json!({"mode": "secret", "target": "api_token"}),
        &grants,
    )
    .await;
    let everything = format!("{outcome:?}");
    assert!(!everything.contains("tok-3f9a1c77"), "secret leaked: {everything}");
    assert_eq!(outcome.summary, "secret is [REDACTED]");
    assert_eq!(outcome.details, vec!["again: [REDACTED]".to_string()]);
    assert_eq!(outcome.metrics[0].name, "m_[REDACTED]");
    assert!(
        outcome.logs.iter().any(|l| l.message == "the secret is [REDACTED]"),
        "{:?}",
        outcome.logs
    );
    assert!(
        outcome.logs.iter().any(|l| l.message == "stdout: stdout: [REDACTED]"),
        "{:?}",
        outcome.logs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_outputs_are_capped() {
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache_dir().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let bad = runtime.load(&plugin("mischief")).await.unwrap();
    let outcome = mischief(
        &runtime,
        &bad,
        json!({"mode": "huge", "size": 5000}),
        &Grants::default(),
    )
    .await;
    assert_eq!(outcome.status, Status::Ok, "{}", outcome.summary);
    assert!(
        outcome.summary.len() < 1100 && outcome.summary.ends_with("bytes cut]"),
        "{}",
        outcome.summary.len()
    );
    assert_eq!(outcome.details.len(), 102, "100 lines + two 'dropped' notes");
    assert!(outcome.details.iter().take(100).all(|d| d.len() < 1100));
    assert!(
        outcome
            .details
            .iter()
            .any(|d| d.contains("4900 more detail lines dropped")),
        "{:?}",
        &outcome.details[100..]
    );
    assert!(
        outcome.details.iter().any(|d| d.contains("4936 more metrics dropped")),
        "{:?}",
        &outcome.details[100..]
    );
    assert_eq!(outcome.metrics.len(), 64);
    let log_bytes: usize = outcome.logs.iter().map(|l| l.message.len()).sum();
    assert!(log_bytes < 3 * 64 * 1024 + 4096, "logs kept {log_bytes} bytes");
    assert!(
        outcome
            .logs
            .iter()
            .any(|l| l.message.contains("further log lines dropped"))
    );
    assert!(
        outcome
            .logs
            .iter()
            .any(|l| l.message.contains("stdout: ") && l.message.len() <= 64 * 1024 + 16)
    );
}

#[test]
fn a_plugin_blocked_on_the_network_is_stopped_at_the_deadline_as_critical() {
    // mischief's `connect` sets no socket timeouts: only the host's deadline ends it.
    let server = SilentServer::start();
    let run = runbox(&[
        "check",
        plugin("mischief").to_str().unwrap(),
        "--with",
        "mode=connect",
        "--with",
        &format!("target={}", server.addr),
        "--allow",
        &format!("tcp://{}", server.addr),
        "--timeout",
        "1s",
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout
            .contains("no result within the 1s deadline: timed out waiting on the network"),
        "{}",
        run.stdout
    );
    assert!(run.elapsed < Duration::from_secs(3), "{:?}", run.elapsed);
}

#[test]
fn mischief_through_the_cli_exits_unknown_with_the_reason() {
    let run = runbox(&[
        "check",
        plugin("mischief").to_str().unwrap(),
        "--with",
        "mode=loop",
        "--timeout",
        "1s",
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains("did not finish within its 1s deadline: it was still computing"),
        "{}",
        run.stdout
    );
    assert!(run.elapsed < Duration::from_secs(4), "{:?}", run.elapsed);

    let run = runbox(&[
        "check",
        plugin("mischief").to_str().unwrap(),
        "--with",
        "mode=alloc",
        "--memory",
        "16MiB",
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.contains("memory limit of 16 MiB exceeded"), "{}", run.stdout);
}

/// A plugin that prints its granted secret everywhere it can (summary, details, metric
/// name, log, stdout): every output format of a runbook run shows it redacted, and so
/// does the audit-free log stream on stderr.
#[test]
fn a_printed_secret_is_redacted_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("leak.yaml");
    std::fs::write(
        &runbook,
        format!(
            "name: leak\nsteps:\n  - id: leak\n    uses: {}\n    with:\n      mode: secret\n      target: api_token\n    secrets:\n      api_token: env:LEAKY_TOKEN\n",
            plugin("mischief").display()
        ),
    )
    .unwrap();
    let token = "tok-9d2e44aa71";
    for format in ["human", "json", "junit", "nagios", "prometheus", "markdown"] {
        let run = crate::harness::runbox_env(
            &["-vv", "run", runbook.to_str().unwrap(), "--format", format],
            &[("LEAKY_TOKEN", token)],
        );
        assert_eq!(run.code, 0, "{format}: {run:#?}");
        // Markdown escapes the brackets; the rendered text reads [REDACTED].
        let mark = if format == "markdown" {
            r"\[REDACTED\]"
        } else {
            "[REDACTED]"
        };
        assert!(run.stdout.contains(mark), "{format}: {}", run.stdout);
        assert!(
            !run.stdout.contains(token) && !run.stderr.contains(token),
            "{format} leaked the secret: {run:#?}"
        );
    }
}
