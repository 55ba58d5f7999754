//! Plugins written in other languages run in the same sandbox as Rust ones.

use crate::harness::{HttpServer, Redis, Reply, free_port, runbox, runbox_env};

/// `webhook-reachable` is JavaScript (componentize-js): its `fetch()` goes through the
/// host's wasi:http capability, grant-checked like everything else. It POSTs, and a check
/// only reads unless its grant lists the method: `POST http://…`.
#[test]
fn javascript_fetch_goes_through_the_http_capability() {
    let server = HttpServer::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/hooks/livekit") => Reply::new(204, ""),
        _ => Reply::new(404, "{\"error\": \"no such hook\"}"),
    });
    let url = format!("url={}/hooks/livekit", server.url());
    let post = format!("POST {}", server.url());
    let run = runbox(&[
        "check",
        "webhook-reachable",
        "--with",
        &url,
        "--allow",
        &post,
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let step = &run.json()["steps"][0];
    assert!(
        step["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("POST {}/hooks/livekit → 204 in ", server.url())),
        "{step}"
    );
    let received = server.received();
    assert_eq!((received.len(), received[0].body.as_str()), (1, "{}"));

    let wrong = format!("url={}/hooks/other", server.url());
    let run = runbox(&["check", "webhook-reachable", "--with", &wrong, "--allow", &post]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout.contains("→ 404 in") && run.stdout.contains("expected 200 or 204"),
        "{}",
        run.stdout
    );

    // Without a grant: denied, and nothing reaches the server.
    let before = server.received().len();
    let run = runbox(&["check", "webhook-reachable", "--with", &url]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("sandbox: HTTP request to http://{} denied", server.addr)),
        "{}",
        run.stdout
    );
    assert_eq!(server.received().len(), before);

    // Granted the host but not the method: the POST is refused, naming the grant to add;
    // a GET needs no method grant.
    let run = runbox(&["check", "webhook-reachable", "--with", &url, "--allow", &server.url()]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "sandbox: HTTP POST to http://{addr} denied: a check or plan may only read (GET, HEAD, OPTIONS) — add `POST http://{addr}` to the grants (--allow)",
            addr = server.addr
        )),
        "{}",
        run.stdout
    );
    assert_eq!(server.received().len(), before);
    let run = runbox(&[
        "check",
        "webhook-reachable",
        "--with",
        &url,
        "--with",
        "method=GET",
        "--with",
        "expect_status=[404]",
        "--allow",
        &server.url(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(server.received().len(), before + 1);
}

/// A redirect is a new request: the host checks it against the grants again (the Rust
/// SDK follows redirects hop by hop; http-health uses it).
#[test]
fn redirects_are_checked_again() {
    let target = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let location = format!("{}/landing", target.url());
    let origin = HttpServer::start(move |_, _| Reply::new(302, "").header("location", &location));
    let url = format!("url={}/hook", origin.url());
    let run = runbox(&[
        "check",
        "http-health",
        "--with",
        &url,
        "--with",
        "follow_redirects=3",
        "--allow",
        &origin.url(),
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("sandbox: HTTP request to http://{} denied", target.addr)),
        "{}",
        run.stdout
    );
    assert!(target.received().is_empty(), "the redirect reached an ungranted host");

    let both = [
        "check",
        "http-health",
        "--with",
        &url,
        "--with",
        "follow_redirects=3",
        "--allow",
        &origin.url(),
        "--allow",
        &target.url(),
    ];
    let run = runbox(&both);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(target.received().len(), 1);
}

/// The host caps a response body at 16 MiB, whatever the plugin is willing to read.
#[test]
fn response_bodies_are_capped_by_the_host() {
    let big = "x".repeat(17 << 20);
    let server = HttpServer::start(move |_, _| Reply::new(200, &big));
    let url = format!("url={}/big", server.url());
    let run = runbox(&[
        "check",
        "http-health",
        "--with",
        &url,
        "--with",
        "max_body_bytes=67108864",
        "--allow",
        &server.url(),
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout
            .contains("HTTP response body size exceeds limit: 16777216 bytes"),
        "{}",
        run.stdout
    );
}

/// `rq-failed-jobs` is Python (componentize-py). CPython there has no `socket` module, so
/// the plugin speaks RESP over wasi:sockets through its own world: the same grant checks
/// as a Rust plugin's connect, against a real password-protected redis-server laid out
/// as RQ keeps its queues.
#[test]
fn python_reads_the_rq_failed_registry_through_wasi_sockets() {
    let redis = Redis::start_with(Some("s3cret-rq"));
    redis.command(&["SADD", "rq:queues", "rq:queue:billing"]).unwrap();
    for (id, score) in [("a1", "100"), ("b2", "200"), ("c3", "300")] {
        redis.command(&["ZADD", "rq:failed:billing", score, id]).unwrap();
    }
    redis
        .command(&["HSET", "rq:job:c3", "description", "billing.tasks.charge(7)"])
        .unwrap();
    let url = format!("url={}", redis.url());
    let grant = redis.grant();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "check",
            "rq-failed-jobs",
            "--with",
            &url,
            "--with",
            "queue=billing",
            "--with",
            "password_secret=rq",
            "--secret",
            "rq=env:RQ_PASSWORD",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    };
    let run_with = |extra: &[&'static str], allow: &str| {
        let mut all = args(extra);
        if !allow.is_empty() {
            all.extend(["--allow".to_string(), allow.to_string()]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        runbox_env(&all, &[("RQ_PASSWORD", "s3cret-rq")])
    };

    let run = run_with(
        &[
            "--with", "warn=2", "--with", "crit=10", "--with", "show=2", "--format", "json",
        ],
        &grant,
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let step = &run.json()["steps"][0];
    assert_eq!(
        step["summary"],
        format!(
            "3 failed jobs in rq:failed:billing on redis://127.0.0.1:{}/0",
            redis.port
        )
    );
    assert_eq!(
        step["details"],
        serde_json::json!([
            "job c3: billing.tasks.charge(7)",
            "job b2: (job hash expired)",
            "… and 1 more"
        ])
    );
    assert_eq!(step["metrics"][0]["name"], "failed_jobs");
    assert_eq!(step["metrics"][0]["value"], 3.0);
    assert!(!run.stdout.contains("s3cret-rq"), "{}", run.stdout);

    let run = run_with(&["--with", "crit=2"], &grant);
    assert_eq!(run.code, 2, "{run:#?}");

    // A queue RQ has never seen: UNKNOWN naming the likely mistake, not a silent OK.
    let run = run_with(&["--with", "queue=bliling"], &grant);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains("queue \"bliling\" is not registered in rq:queues"),
        "{}",
        run.stdout
    );

    // Wrong password: the server's refusal, CRITICAL.
    let all = args(&[]);
    let mut all: Vec<&str> = all.iter().map(String::as_str).collect();
    all.extend(["--allow", &grant]);
    // (Not a word the server's answer contains: redaction ignores case.)
    let run = runbox_env(&all, &[("RQ_PASSWORD", "not-the-password")]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.contains("WRONGPASS"), "{}", run.stdout);

    // Sandboxed like the Rust plugins: no grant, or a grant for another port, is a
    // denial, and Redis sees no connection from runbox.
    let before = redis.connections_received();
    let run = run_with(&[], "");
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "sandbox: connect to 127.0.0.1:{} denied: no grant covers it",
            redis.port
        )),
        "{}",
        run.stdout
    );
    let other = format!("redis://127.0.0.1:{}", free_port());
    let run = run_with(&[], &other);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.contains("denied"), "{}", run.stdout);
    let named = format!("url=redis://localhost.invalid:{}", redis.port);
    let run = runbox(&["check", "rq-failed-jobs", "--with", &named, "--allow", &grant]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains("sandbox: name lookup of `localhost.invalid` denied"),
        "{}",
        run.stdout
    );
    assert_eq!(
        redis.connections_received(),
        before + 1,
        "runbox reached redis without a grant"
    );
}
