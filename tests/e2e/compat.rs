//! Plugins built against `runbox:plugin@0.1.0` keep working unchanged on a host of the
//! current contract. The plugins are real 0.1.0 builds, kept byte for byte in
//! tests/fixtures/plugins-0.1.0 (see its README for their origin and digests).

use crate::harness::{Book, HttpServer, Redis, Reply, runbox, workspace};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures/plugins-0.1.0").join(name)
}

#[test]
fn a_0_1_0_check_runs_against_real_redis_and_says_which_contract_it_speaks() {
    let path = fixture("redis_ping.wasm");
    let inspect = runbox(&["plugins", "inspect", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(inspect.code, 0, "{inspect:#?}");
    let json = inspect.json();
    assert_eq!(json["world"], "runbox:plugin/check@0.1.0");
    assert!(
        json["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "runbox:plugin/host@0.1.0"),
        "{json}"
    );

    let redis = Redis::start();
    let run = runbox(&[
        "check",
        path.to_str().unwrap(),
        "--with",
        &format!("url={}", redis.url()),
        "--allow",
        &redis.grant(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let step = &run.json()["steps"][0];
    assert!(step["summary"].as_str().unwrap().starts_with("PONG"), "{step}");
    assert!(
        step["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "latency_ms"),
        "{step}"
    );
    assert!(step.get("outputs").is_none(), "a 0.1.0 report has no outputs: {step}");

    // Its sandbox is the current one: an ungranted Redis is denied as for any plugin.
    let denied = runbox(&[
        "check",
        path.to_str().unwrap(),
        "--with",
        &format!("url={}", redis.url()),
    ]);
    assert_eq!(denied.code, 3, "{denied:#?}");
    assert!(denied.stdout.contains("denied"), "{}", denied.stdout);
}

#[test]
fn a_0_1_0_mitigation_plans_and_applies_in_a_runbook_of_today_including_for_each() {
    let server = HttpServer::start(|req, _| {
        if req.method == "POST" {
            Reply::new(202, "{\"ok\": true}")
        } else {
            Reply::new(404, "no")
        }
    });
    let book = Book::new(&format!(
        "name: compat\nsteps:\n  - id: replay\n    uses: {plugin}\n    for_each: [j1, j2]\n    approval: required\n    with:\n      url: {url}/jobs/${{{{ item }}}}/replay\n    allow:\n      - {url}\n",
        plugin = fixture("http_action.wasm").display(),
        url = server.url()
    ));
    let run = book.run(&["--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(server.received().is_empty(), "the plan sent a request");
    let audit = book.audit();
    let run = book.run(&[
        "--format",
        "json",
        "--apply",
        "--approve",
        "replay",
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let paths: Vec<String> = server.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/jobs/j1/replay", "/jobs/j2/replay"]);
    let json = run.json();
    assert_eq!(json["steps"][1]["applied"], true, "{json}");
    assert!(
        json["steps"][1]["summary"].as_str().unwrap().contains("→ 202"),
        "{json}"
    );
}
