//! `notify` (mitigation) against a recording HTTP server on loopback standing in for a
//! Slack incoming webhook (it answers `ok`, as Slack does) and a generic JSON webhook:
//! the plan sends nothing and shows the exact body and only the URL's host when the URL
//! is a secret; apply sends exactly the planned body, once; both runs are audited.

use crate::harness::{Book, HttpServer, Received, Reply, step};
use crate::seed_runbooks::audit;
use serde_json::Value;

const VAR: &str = "RUNBOX_TEST_SLACK_URL";
const PATH: &str = "/services/T0RUNBOX/B0RUNBOX/slackSecretPath7c1e";

fn slack_book(url_var_value: &str) -> (Book, String) {
    let origin = url_var_value.split("/services/").next().unwrap().to_string();
    let book = Book::new(&format!(
        r#"name: notify-test
steps:
  - id: tell
    uses: notify
    approval: required
    with:
      url_secret: slack_url
      title: OpenAI outage
      text: "Generation failing since 14:02 UTC; fallback model switched"
      severity: critical
    secrets:
      slack_url: env:{VAR}
    allow:
      - {origin}
"#
    ));
    (book, origin)
}

/// A Slack webhook URL given as a secret: the dry run shows the body and only the host,
/// sends nothing; the approved apply sends that body once to the secret URL; both the
/// plan and the apply are in the audit log, and the URL's secret path is printed nowhere.
#[test]
fn plan_shows_the_message_and_apply_sends_exactly_it_once() {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let secret_url = format!("{}{PATH}", server.url());
    let (book, origin) = slack_book(&secret_url);
    let env = [(VAR, secret_url.as_str())];
    let expected_body =
        r#"{"text":"[CRITICAL] *OpenAI outage*\nGeneration failing since 14:02 UTC; fallback model switched"}"#;

    let run = crate::harness::runbox_env(&["run", book.path.to_str().unwrap(), "--format", "json"], &env);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(!run.stdout.contains("slackSecretPath"), "{run:#?}");
    let json = run.json();
    let plan = &step(&json, "tell")["plan"];
    assert_eq!(
        plan["summary"],
        format!("post a slack message to {origin}/… (URL from secret `slack_url`)")
    );
    assert_eq!(
        plan["changes"],
        serde_json::json!([format!(
            "POST {origin}/… (URL from secret `slack_url`) (slack format) body: {expected_body}"
        )])
    );
    assert!(server.received().is_empty(), "the plan sent {:?}", server.received());

    let run = crate::harness::runbox_env(
        &[
            "run",
            book.path.to_str().unwrap(),
            "--apply",
            "--approve",
            "tell",
            "--format",
            "json",
            "--audit-log",
            book.audit().to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(!run.stdout.contains("slackSecretPath"), "{run:#?}");
    let json = run.json();
    assert_eq!(step(&json, "tell")["applied"], true);
    let received: Vec<Received> = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!((received[0].method.as_str(), received[0].path.as_str()), ("POST", PATH));
    assert_eq!(received[0].body, expected_body);
    assert_eq!(received[0].header("content-type"), Some("application/json"));
    let lines = audit(&book.audit());
    assert_eq!(
        lines.iter().map(|l| l["event"].as_str().unwrap()).collect::<Vec<_>>(),
        ["apply-started", "apply-finished"]
    );
    assert_eq!(lines[0]["plan"], *plan, "the audited plan is the dry run's");
    assert_eq!(lines[1]["outcome"]["status"], "ok");
    let text = std::fs::read_to_string(book.audit()).unwrap();
    assert!(!text.contains("slackSecretPath"), "{text}");
}

/// Slack's errors (plain text) fail the apply: CRITICAL with Slack's word for it.
#[test]
fn a_refused_post_is_critical() {
    let server = HttpServer::start(|_, _| Reply::new(404, "no_service"));
    let secret_url = format!("{}{PATH}", server.url());
    let (book, origin) = slack_book(&secret_url);
    let run = crate::harness::runbox_env(
        &[
            "run",
            book.path.to_str().unwrap(),
            "--apply",
            "--approve",
            "tell",
            "--format",
            "json",
            "--audit-log",
            book.audit().to_str().unwrap(),
        ],
        &[(VAR, secret_url.as_str())],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json();
    assert_eq!(
        step(&json, "tell")["summary"],
        format!("applied: POST {origin}/… (URL from secret `slack_url`) → 404, expected 200/201/202/204: no_service")
    );
    assert_eq!(server.received().len(), 1);
}

/// The generic format with a token as a host-injected header secret; and a Slack URL
/// written into `url` is refused before anything is sent.
#[test]
fn generic_webhooks_take_a_header_secret_and_slack_urls_must_be_secrets() {
    let server = HttpServer::start(|_, _| Reply::new(202, r#"{"accepted": true}"#));
    let book = Book::new(&format!(
        r#"name: notify-generic
steps:
  - id: page
    uses: notify
    with:
      format: generic
      url: {url}/hooks/incident
      text: generation paused
      title: OpenAI outage
      severity: warning
      headers:
        authorization: "Bearer ${{{{ secrets.token }}}}"
    secrets:
      token: env:RUNBOX_TEST_NOTIFY_TOKEN
    allow:
      - {url}
  - id: open-slack-url
    uses: notify
    with:
      url: https://hooks.slack.com/services/T0/B0/XXXX
      text: never sent
"#,
        url = server.url()
    ));
    let env = [("RUNBOX_TEST_NOTIFY_TOKEN", "notify-tok-93b1")];
    let run = crate::harness::runbox_env(
        &[
            "run",
            book.path.to_str().unwrap(),
            "--apply",
            "--format",
            "json",
            "--audit-log",
            book.audit().to_str().unwrap(),
        ],
        &env,
    );
    let json = run.json();
    assert_eq!(step(&json, "page")["applied"], true, "{json:#}");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/hooks/incident");
    assert_eq!(received[0].header("authorization"), Some("Bearer notify-tok-93b1"));
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"text": "generation paused", "title": "OpenAI outage", "severity": "warning", "source": "runbox"})
    );
    let refused = step(&json, "open-slack-url");
    assert_eq!(refused["status"], "unknown", "{refused:#}");
    assert!(
        refused["summary"]
            .as_str()
            .unwrap()
            .contains("config field `url`: a Slack webhook URL is a secret"),
        "{refused:#}"
    );
    assert!(!run.stdout.contains("notify-tok-93b1"), "{run:#?}");
}
