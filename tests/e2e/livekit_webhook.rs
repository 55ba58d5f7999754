//! `livekit-webhook` and runbooks/webhook-failures.yaml against a webhook endpoint that
//! verifies with LiveKit's own code: tests/e2e/livekit_webhook_server.py, on PyPI
//! `livekit-api`'s `WebhookReceiver` + `TokenVerifier` (pinned in scripts/ensure-deps),
//! answering 200 when `receive` accepts and 401 when it raises. The plugin must pass
//! against it, and fail, naming the expectation, against one configured with another
//! secret and against one that (wrongly) accepts everything.

use crate::harness::{HttpServer, Reply, Run, runbox_env, step, workspace};
use crate::seed_runbooks::{audit, items, run_shipped, status};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_KEY: &str = "APIwebhookTest";
const API_SECRET: &str = "lk-webhook-secret-6d1e0b93f2a4c87";
const VAR: &str = "RUNBOX_TEST_LIVEKIT_SECRET";

/// The Python endpoint; killed on drop.
pub(crate) struct Endpoint {
    port: u16,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Endpoint {
    /// Verifies with `secret` (and the test's API key); `accept_all` answers 200 to anything.
    fn start(secret: &str, accept_all: bool) -> Endpoint {
        Endpoint::start_for(API_KEY, secret, accept_all)
    }

    /// The endpoint of an app whose LiveKit key pair is `key` and `secret`.
    pub(crate) fn start_for(key: &str, secret: &str, accept_all: bool) -> Endpoint {
        let python = workspace().join("target/tools/test-servers/bin/python3");
        assert!(
            python.is_file(),
            "{} is missing: run scripts/ensure-deps (it installs livekit-api into target/tools/test-servers)",
            python.display()
        );
        let mut command = Command::new(python);
        command
            .arg(workspace().join("tests/e2e/livekit_webhook_server.py"))
            .args([key, secret])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if accept_all {
            command.arg("--accept-all");
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port: u16 = first.trim().parse().unwrap_or_else(|_| {
            panic!(
                "livekit_webhook_server.py did not start (is livekit-api installed? run scripts/ensure-deps): {first:?}"
            )
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Endpoint { port, child, lines }
    }

    pub(crate) fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/api/livekit/webhook", self.origin())
    }

    /// What `WebhookReceiver.receive` said of each request so far (waits for `count`).
    fn verdicts(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check(endpoint: &Endpoint, extra: &[&str]) -> Run {
    let (url, key, grant) = (
        format!("url={}", endpoint.url()),
        format!("api_key={API_KEY}"),
        format!("POST {}", endpoint.origin()),
    );
    let secret = format!("livekit_api_secret=env:{VAR}");
    let mut args = vec![
        "check",
        "livekit-webhook",
        "--with",
        &url,
        "--with",
        &key,
        "--secret",
        &secret,
        "--allow",
        &grant,
        "--format",
        "json",
    ];
    args.extend(extra);
    let run = runbox_env(&args, &[(VAR, API_SECRET)]);
    assert!(
        !run.stdout.contains(API_SECRET) && !run.stderr.contains(API_SECRET),
        "secret printed: {run:#?}"
    );
    run
}

/// LiveKit's own `WebhookReceiver` accepts the plugin's signed webhook (content type,
/// JWT, body hash) and rejects its badly signed one: OK.
#[test]
fn livekit_s_receiver_accepts_the_signed_webhook_and_rejects_the_bad_one() {
    let endpoint = Endpoint::start(API_SECRET, false);
    let run = check(&endpoint, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json()["steps"][0].clone();
    assert!(
        json["summary"]
            .as_str()
            .unwrap()
            .starts_with("accepts LiveKit-signed webhooks (200) and refuses a bad signature (401)"),
        "{json:#}"
    );
    let verdicts = endpoint.verdicts(2);
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert_eq!(
        verdicts[0],
        "accepted room_started runbox-webhook-probe application/webhook+json"
    );
    assert_eq!(
        verdicts[1],
        "rejected InvalidSignatureError: Signature verification failed"
    );
    // participant events carry a participant, and parse too.
    let run = check(
        &endpoint,
        &["--with", "event=participant_joined", "--with", "room=standup"],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        endpoint.verdicts(3)[2],
        "accepted participant_joined standup application/webhook+json"
    );
}

/// An endpoint holding another secret rejects the good webhook: CRITICAL, naming it.
#[test]
fn an_endpoint_with_another_secret_is_critical() {
    let endpoint = Endpoint::start("some-other-secret-0000000000000000", false);
    let run = check(&endpoint, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json()["steps"][0].clone();
    let summary = json["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "webhook endpoint rejected a correctly signed webhook (401, expected 2xx: invalid webhook signature)"
        ),
        "{summary}"
    );
    assert!(!summary.contains("accepted a badly"), "{summary}");
    assert_eq!(json["outputs"]["failure"], "rejects_valid");
}

/// An endpoint that accepts everything (verifies nothing): CRITICAL, naming it.
#[test]
fn an_endpoint_that_accepts_everything_is_critical() {
    let endpoint = Endpoint::start(API_SECRET, true);
    let run = check(&endpoint, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json()["steps"][0].clone();
    assert_eq!(
        json["summary"],
        "webhook endpoint accepted a badly signed webhook (200, expected 401): it does not verify LiveKit's signature"
    );
    assert_eq!(json["outputs"]["failure"], "accepts_invalid");
    // It did see the bad signature for what it is; it answered 200 anyway.
    assert!(
        endpoint.verdicts(2)[1].starts_with("rejected"),
        "{:?}",
        endpoint.verdicts(2)
    );

    // `expect_bad_status` is configurable: an app that answers 200 to everything but
    // drops what it cannot verify could say so (here it changes the verdict).
    let run = check(&endpoint, &["--with", "expect_bad_status=[200]"]);
    assert_eq!(run.code, 0, "{run:#?}");
}

/// Seed 000, "Webhook Failures", end to end: reachability and signature checks against
/// the LiveKit-verifying endpoint; manual artifact processing for the affected sessions
/// planned (nothing sent), then applied with approval (exactly one POST per session,
/// audited); and a secret mismatch shows up as a CRITICAL signature step.
#[test]
fn webhook_failures_runbook_checks_signatures_and_processes_affected_sessions() {
    let endpoint = Endpoint::start(API_SECRET, false);
    let api = HttpServer::start(|request, _| {
        if request.method == "POST" && request.path.starts_with("/sessions/") && request.path.ends_with("/artifacts") {
            Reply::new(202, r#"{"queued": true}"#)
        } else {
            Reply::new(404, r#"{"error": "not found"}"#)
        }
    });
    let (url, origin, api_url) = (endpoint.url(), endpoint.origin(), api.url());
    let sets = [
        ("webhook_url", url.as_str()),
        ("webhook_origin", origin.as_str()),
        ("livekit_api_key", API_KEY),
        ("api_url", api_url.as_str()),
        ("affected_sessions", "sess-41,sess/42"),
    ];
    let env = [("LIVEKIT_API_SECRET", API_SECRET)];

    let run = run_shipped("webhook-failures.yaml", &sets, &[], &env);
    let json = run.json();
    assert_eq!(run.code, 0, "{json:#}");
    assert_eq!(status(&json, "reachable"), "ok", "{:#}", step(&json, "reachable"));
    assert_eq!(status(&json, "signature"), "ok", "{:#}", step(&json, "signature"));
    let plans: Vec<String> = items(&json, "process-artifacts")
        .iter()
        .map(|item| item["plan"]["summary"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        plans,
        [
            format!("POST {api_url}/sessions/sess-41/artifacts"),
            format!("POST {api_url}/sessions/sess%2F42/artifacts")
        ]
    );
    assert!(api.received().is_empty(), "a dry run sent {:?}", api.received());
    // unsigned POST (reachable), then the signed pair.
    let verdicts = endpoint.verdicts(3);
    assert!(verdicts[0].starts_with("rejected"), "{verdicts:?}");
    assert!(verdicts[1].starts_with("accepted room_started"), "{verdicts:?}");

    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let run = run_shipped(
        "webhook-failures.yaml",
        &sets,
        &[
            "--apply",
            "--approve",
            "process-artifacts",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let posts: Vec<(String, String)> = api
        .received()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        posts,
        [
            ("POST".to_string(), "/sessions/sess-41/artifacts".to_string()),
            ("POST".to_string(), "/sessions/sess%2F42/artifacts".to_string())
        ]
    );
    let lines = audit(&audit_log);
    assert_eq!(
        lines.iter().map(|l| l["event"].as_str().unwrap()).collect::<Vec<_>>(),
        ["apply-started", "apply-finished", "apply-started", "apply-finished"]
    );
    assert!(lines.iter().all(|l| l["step"] == "process-artifacts"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l["outcome"].is_null() || l["outcome"]["status"] == "ok"),
        "{lines:#?}"
    );

    // The app's secret was rotated without LiveKit's (or the reverse): signature fails.
    let rotated = Endpoint::start("rotated-secret-1111111111111111111", false);
    let (url, origin) = (rotated.url(), rotated.origin());
    let sets = [
        ("webhook_url", url.as_str()),
        ("webhook_origin", origin.as_str()),
        ("livekit_api_key", API_KEY),
        ("api_url", api_url.as_str()),
    ];
    let run = run_shipped("webhook-failures.yaml", &sets, &[], &env);
    let json = run.json();
    assert_eq!(run.code, 2, "{json:#}");
    assert_eq!(status(&json, "reachable"), "ok");
    assert_eq!(status(&json, "signature"), "critical");
    assert_eq!(step(&json, "signature")["outputs"]["failure"], "rejects_valid");
    let process = step(&json, "process-artifacts");
    assert!(!process["skipped"].is_null(), "no sessions given: {process:#}");
}
