//! HTTP by phase: checks and plans only read (GET, HEAD, OPTIONS) unless a grant lists
//! the method; an apply sends what its grants' destinations allow. And HTTP to a granted
//! name connects to the address the host checked.

use crate::harness::{HttpServer, Reply, cache_dir, plugin, plugin_dir, runbox};
use runbox::capabilities::Grants;
use runbox::capabilities::network::Grant;
use runbox::plugins::PluginPath;
use runbox::result::Status;
use runbox::runbook::executor::{RunOptions, Stop, execute};
use runbox::runbook::prepare::{Mode, prepare};
use runbox::runtime::{Limits, Runtime, RuntimeOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn grants(network: &[String]) -> Grants {
    Grants {
        network: network.iter().map(|g| g.parse::<Grant>().unwrap()).collect(),
        ..Grants::default()
    }
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(cache_dir().to_path_buf()),
        ..Default::default()
    })
    .unwrap()
}

fn limits() -> Limits {
    Limits {
        deadline: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// A check (`mischief` in `http` mode) sends each method, header and parameter trick to a
/// real server. Only GET, HEAD and OPTIONS reach it, unless the grant lists the method;
/// everything else is refused before a connection is made, and listed as a denial that
/// names the grant to add. Methods are case-sensitive: `get` is not `GET`, and a grant's
/// `PURGE` does not allow `purge`. A read carries no body unless its method is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_reads_over_http_and_writes_only_with_a_method_grant() {
    let runtime = runtime();
    let mischief = runtime.load(&plugin("mischief")).await.unwrap();
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let url = server.url();
    let plain = grants(std::slice::from_ref(&url));
    let writes = grants(&[format!("POST,PURGE {url}")]);
    let get_body = grants(&[format!("GET {url}")]);
    // (method, path, headers, body, grants, reaches the server)
    type Case<'a> = (&'a str, &'a str, Vec<&'a str>, &'a str, &'a Grants, bool);
    let cases: Vec<Case> = vec![
        ("GET", "/", vec![], "", &plain, true),
        ("HEAD", "/", vec![], "", &plain, true),
        ("OPTIONS", "/", vec![], "", &plain, true),
        ("POST", "/", vec![], "{}", &plain, false),
        ("POST", "/", vec![], "", &plain, false),
        ("PUT", "/", vec![], "{}", &plain, false),
        ("DELETE", "/", vec![], "", &plain, false),
        ("PATCH", "/", vec![], "{}", &plain, false),
        ("TRACE", "/", vec![], "", &plain, false),
        ("PURGE", "/", vec![], "", &plain, false),
        ("get", "/", vec![], "", &plain, false),
        ("Delete", "/", vec![], "", &plain, false),
        ("GET", "/", vec!["X-HTTP-Method-Override: DELETE"], "", &plain, false),
        ("GET", "/", vec!["x-http-method: put"], "", &plain, false),
        ("GET", "/", vec!["X-Method-Override: PATCH"], "", &plain, false),
        ("GET", "/?_method=DELETE", vec![], "", &plain, false),
        // A body on a read: a server ignoring it would take it for a second request.
        (
            "GET",
            "/",
            vec![],
            "DELETE / HTTP/1.1\r\nhost: x\r\n\r\n",
            &plain,
            false,
        ),
        ("OPTIONS", "/", vec![], "{}", &plain, false),
        ("GET", "/", vec![], "{\"query\": 1}", &get_body, true),
        ("POST", "/", vec![], "{}", &writes, true),
        ("PURGE", "/", vec![], "", &writes, true),
        ("purge", "/", vec![], "", &writes, false),
        ("DELETE", "/", vec![], "", &writes, false),
        (
            "POST",
            "/",
            vec!["X-HTTP-Method-Override: DELETE"],
            "{}",
            &writes,
            false,
        ),
    ];
    for (method, path, headers, body, grants, reaches) in cases {
        let before = server.received().len();
        let config = json!({"mode": "http", "target": format!("{url}{path}"), "method": method, "headers": headers, "body": body});
        let outcome = runtime.run_check(&mischief, &config, grants, &limits()).await;
        let case = format!("{method} {path} {headers:?} {body:?}: {outcome:?}");
        let received = server.received();
        if reaches {
            assert_eq!(outcome.summary, "HTTP 200", "{case}");
            assert!(outcome.denied.is_empty(), "{case}");
            assert_eq!(received.len(), before + 1, "{case}");
            assert_eq!(received[before].method, method, "{case}");
            assert_eq!(received[before].body, body, "{case}");
        } else {
            assert_eq!(outcome.summary, "http failed: ErrorCode::HttpRequestDenied", "{case}");
            assert_eq!(outcome.denied.len(), 1, "{case}");
            assert!(outcome.denied[0].contains("a check or plan may"), "{case}");
            assert_eq!(received.len(), before, "{case}: the server received it");
        }
    }
    let config = json!({"mode": "http", "target": format!("{url}/jobs"), "method": "POST"});
    let outcome = runtime.run_check(&mischief, &config, &plain, &limits()).await;
    assert_eq!(
        outcome.denied,
        [format!(
            "HTTP POST to {url} denied: a check or plan may only read (GET, HEAD, OPTIONS) — add `POST {url}` to the grants (--allow), or make this step a mitigation that sends POST in apply"
        )]
    );
}

/// A dry run's plan that POSTs is refused (the server receives nothing), and the step is
/// UNKNOWN and not applied, naming the grant; the apply of the same mitigation may POST and
/// DELETE to its granted destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_only_reads_and_the_apply_writes() {
    let runtime = runtime();
    let sneaky = runtime.load(&plugin("sneaky_plan")).await.unwrap();
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let url = server.url();
    let plain = grants(std::slice::from_ref(&url));

    let config = json!({"url": format!("{url}/purge-everything"), "method": "POST"});
    let (outcome, plan) = runtime.plan(&sneaky, &config, &plain, &limits()).await;
    assert!(plan.is_some(), "{outcome:?}");
    assert!(
        outcome
            .summary
            .starts_with(&format!("while planning: POST {url}/purge-everything: ")),
        "{outcome:?}"
    );
    assert_eq!(outcome.denied.len(), 1, "{outcome:?}");
    assert!(
        outcome.denied[0].contains(&format!("add `POST {url}` to the grants")),
        "{outcome:?}"
    );
    assert!(server.received().is_empty(), "the plan wrote");

    for method in ["POST", "DELETE"] {
        let config = json!({"url": format!("{url}/purge-everything"), "method": method});
        let outcome = runtime
            .apply(&sneaky, &config, &plain, &limits(), &plan.clone().unwrap())
            .await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        assert!(outcome.denied.is_empty(), "{outcome:?}");
    }
    let methods: Vec<String> = server.received().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["POST", "DELETE"]);

    // An apply is still held to its destinations.
    let other = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let config = json!({"url": format!("{}/x", other.url()), "method": "DELETE"});
    let outcome = runtime.apply(&sneaky, &config, &plain, &limits(), &plan.unwrap()).await;
    assert_eq!(outcome.status, Status::Unknown, "{outcome:?}");
    assert!(other.received().is_empty());
}

fn sneaky_book(dir: &std::path::Path, url: &str, grant: &str) -> std::path::PathBuf {
    let path = dir.join("book.yaml");
    std::fs::write(
        &path,
        format!(
            "name: sneaky\nsteps:\n  - id: purge\n    uses: sneaky-plan\n    approval: required\n    with:\n      url: {url}/purge\n      method: POST\n    allow:\n      - {grant}\n"
        ),
    )
    .unwrap();
    path
}

/// The same through `runbox run`: a dry run whose plan POSTs is UNKNOWN (exit 3) with the
/// grant to add, even with `--apply --approve`; the server receives nothing.
#[test]
fn a_dry_run_that_posts_is_refused_and_not_applied() {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let book = sneaky_book(dir.path(), &url, &url);
    let audit = dir.path().join("audit.jsonl");
    for extra in [vec![], vec!["--apply", "--approve", "purge"]] {
        let mut args = vec![
            "run",
            book.to_str().unwrap(),
            "--format",
            "json",
            "--audit-log",
            audit.to_str().unwrap(),
        ];
        args.extend(extra);
        let run = runbox(&args);
        assert_eq!(run.code, 3, "{run:#?}");
        let step = &run.json()["steps"][0];
        assert_eq!(step["status"], "unknown", "{step}");
        assert_eq!(step["applied"], false, "{step}");
        let summary = step["summary"].as_str().unwrap();
        assert!(
            summary.contains(&format!(
                "not applied: the plan was denied: HTTP POST to {url} denied: a check or plan may only read (GET, HEAD, OPTIONS) — add `POST {url}` to the grants (--allow)"
            )),
            "{summary}"
        );
    }
    assert!(server.received().is_empty(), "the plan wrote");
    let audited = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(!audited.contains("apply-started"), "nothing was applied: {audited}");
}

/// A plan granted a write method may use it; `validate`, the plan in every report and the
/// approval prompt say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_write_in_a_plan_is_shown_in_validate_the_plan_and_the_prompt() {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let book = sneaky_book(dir.path(), &url, &format!("POST {url}"));

    let run = runbox(&["validate", book.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.stdout,
        format!(
            "ok: {} (sneaky, 1 step)\n  step `purge`: may send POST to {url} while planning\n",
            book.display()
        )
    );

    let run = runbox(&["run", book.to_str().unwrap(), "--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let step = &run.json()["steps"][0];
    assert_eq!(
        step["plan"]["notes"],
        json!([format!("may send POST to {url} while planning")])
    );
    assert_eq!(server.received().len(), 1, "the granted POST went out");
    let run = runbox(&["run", book.to_str().unwrap()]);
    assert!(
        run.stdout
            .contains(&format!("    note: may send POST to {url} while planning\n")),
        "{}",
        run.stdout
    );

    // The approval prompt shows the note before the operator answers (here: no).
    let runtime = Arc::new(runtime());
    let plugin_path = PluginPath::new(&[plugin_dir().to_path_buf()]);
    let runbook = prepare(&runtime, &plugin_path, &book, &BTreeMap::new(), Mode::Run, None)
        .await
        .unwrap_or_else(|problems| panic!("{problems:?}"));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = asked.clone();
    let options = RunOptions {
        apply: true,
        approve: Default::default(),
        parallel: 1,
        prompt: Some(Arc::new(move |id: &str, text: &str| {
            record.lock().unwrap().push(format!("{id}: {text}"));
            false
        })),
        audit: None,
        run_id: "test".into(),
        allow_metadata: false,
        progress: Arc::new(|_| {}),
        deadline: None,
        stop: Stop::new(),
        telemetry: None,
    };
    let result = execute(runtime, Arc::new(runbook), options).await;
    assert_eq!(result.steps[0].applied, Some(false));
    let asked = asked.lock().unwrap();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].ends_with(&format!(
            "  - POST {url}/purge\n  note: may send POST to {url} while planning"
        )),
        "{}",
        asked[0]
    );
}

/// `validate` shows grants that widen a read-only phase, in both YAML forms, and raw
/// TCP grants of a mitigation's plan; it refuses methods on a raw-socket grant.
#[test]
fn validate_shows_what_a_read_only_phase_may_change() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.yaml");
    std::fs::write(
        &book,
        "name: notes\nsteps:\n  - id: hook\n    uses: webhook-reachable\n    with:\n      url: https://hooks.internal/ping\n    allow:\n      - {url: https://hooks.internal, methods: [POST]}\n  - id: flag\n    uses: redis-flag\n    with:\n      url: redis://127.0.0.1:6379\n      key: pause\n      value: '1'\n    allow:\n      - redis://127.0.0.1:6379\n      - PURGE,post https://cdn.internal\n",
    )
    .unwrap();
    let run = runbox(&["validate", book.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.stdout,
        format!(
            "ok: {} (notes, 2 steps)\n  step `hook`: may send POST to https://hooks.internal while checking\n  step `flag`: may send PURGE, POST to https://cdn.internal while planning\n  step `flag`: plans with raw TCP grants (redis://127.0.0.1:6379): runbox cannot stop a plan from writing over a raw socket\n",
            book.display()
        )
    );

    std::fs::write(
        &book,
        "name: bad\nsteps:\n  - id: ping\n    uses: redis-ping\n    with:\n      url: redis://127.0.0.1:6379\n    allow:\n      - DEL redis://127.0.0.1:6379\n      - {url: https://h.internal, methods: [PO ST]}\n",
    )
    .unwrap();
    let run = runbox(&["validate", book.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    let file = book.display();
    assert!(
        run.stderr.contains(&format!(
            "error: {file}:8: step `ping`: grant `DEL redis://127.0.0.1:6379`: methods (DEL) apply only to http and https grants"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "error: {file}:9: step `ping`: grant `PO ST https://h.internal`: `PO ST` is not an HTTP method"
        )),
        "{}",
        run.stderr
    );

    std::fs::write(
        &book,
        "name: bad\nsteps:\n  - id: ping\n    uses: http-health\n    with:\n      url: https://h.internal\n    allow:\n      - {url: https://h.internal, method: POST}\n",
    )
    .unwrap();
    let run = runbox(&["validate", book.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(
            "an `allow` mapping is {url: scheme://host[:port], methods: [POST, ...]}: unknown field `method`"
        ),
        "{}",
        run.stderr
    );
}

/// HTTP to a granted name goes to the address runbox resolved and checked (here
/// `localhost`, with the server on 127.0.0.1 only): the request carries the name.
#[test]
fn http_to_a_granted_name_connects_to_the_checked_address() {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let port = server.addr.port();
    let url = format!("url=http://localhost:{port}/health");
    let grant = format!("http://localhost:{port}");
    let run = runbox(&[
        "check",
        "http-health",
        "--with",
        &url,
        "--allow",
        &grant,
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header("host"), Some(format!("localhost:{port}").as_str()));
}
