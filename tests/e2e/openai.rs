//! `openai-probe` and runbooks/openai-outage.yaml. OpenAI's API cannot be reached from
//! here, so an HTTP stand-in for it runs in the test (a small Rust server on loopback,
//! the harness's `HttpServer`): it answers only a request whose `Authorization` is
//! `Bearer` + the test key, and answers with OpenAI's own shapes — a model object for
//! `GET /v1/models/{model}`, a `chat.completion` for `POST /v1/chat/completions` (which
//! must ask for `max_tokens: 1`), and OpenAI's error JSON (`{"error": {"message",
//! "type", "param", "code"}}`) with the codes it sends: `invalid_api_key`,
//! `model_not_found`, `rate_limit_exceeded`, `insufficient_quota`, and a 503
//! `server_error`. The key reaches the stand-in only as the host-injected header.
//!
//! The runbook test runs the rest for real: Prometheus scraping the app's counters,
//! Redis, RQ workers whose generation jobs really fail, and the RQ application
//! (tests/e2e/rq_app.py) taking the model switch and the replays.

use crate::harness::{HttpServer, Redis, Reply, Run, runbox_env, step};
use crate::prometheus::{Exporter, Prometheus};
use crate::seed_runbooks::{RqApp, RqWorker, audit, burst_worker, enqueue, int, items, run_shipped, skipped, status};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-test-runbox-4f9a1c7e2b";
const VAR: &str = "RUNBOX_TEST_OPENAI_KEY";

/// How the stand-in answers for one model.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Ok,
    RateLimited,
    Quota,
    Outage,
}

/// The OpenAI stand-in: `models` maps each known model to how its requests are answered.
struct OpenAi {
    server: HttpServer,
    models: Arc<Mutex<BTreeMap<String, Answer>>>,
}

fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Reply {
    Reply::new(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string(),
    )
}

impl OpenAi {
    fn start(models: &[(&str, Answer)], delay: Duration) -> OpenAi {
        let models = Arc::new(Mutex::new(
            models
                .iter()
                .map(|(m, a)| (m.to_string(), *a))
                .collect::<BTreeMap<_, _>>(),
        ));
        let known = models.clone();
        let server = HttpServer::start(move |request, _| {
            if request.header("authorization") != Some(format!("Bearer {KEY}").as_str()) {
                return error(
                    401,
                    "Incorrect API key provided: sk-wron*****. You can find your API key at https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    Some("invalid_api_key"),
                );
            }
            let model = match (request.method.as_str(), request.path.as_str()) {
                ("GET", path) if path.starts_with("/v1/models/") => path["/v1/models/".len()..].to_string(),
                ("POST", "/v1/chat/completions") => {
                    let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
                    if body["max_tokens"] != 1 || body["messages"][0]["role"] != "user" {
                        return error(
                            400,
                            "expected max_tokens 1 and a user message",
                            "invalid_request_error",
                            None,
                        );
                    }
                    body["model"].as_str().unwrap_or("").to_string()
                }
                _ => return error(404, "Invalid URL", "invalid_request_error", None),
            };
            let answer = known.lock().unwrap().get(&model).copied();
            let reply = match answer {
                None => error(
                    404,
                    &format!("The model `{model}` does not exist or you do not have access to it."),
                    "invalid_request_error",
                    Some("model_not_found"),
                ),
                Some(Answer::Outage) => error(503, "The server is overloaded or not ready yet.", "server_error", None),
                Some(Answer::RateLimited) if request.method == "POST" => error(
                    429,
                    &format!("Rate limit reached for {model} in organization org-runbox on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."),
                    "requests",
                    Some("rate_limit_exceeded"),
                )
                .header("retry-after", "20")
                .header("x-ratelimit-remaining-requests", "0"),
                Some(Answer::Quota) if request.method == "POST" => error(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota",
                    Some("insufficient_quota"),
                ),
                Some(_) if request.method == "GET" => Reply::new(
                    200,
                    &json!({"id": model, "object": "model", "created": 1686935002, "owned_by": "system"}).to_string(),
                ),
                Some(_) => Reply::new(
                    200,
                    &json!({
                        "id": "chatcmpl-runbox", "object": "chat.completion", "created": 1700000000, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Pong"}, "finish_reason": "length"}],
                        "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
                    })
                    .to_string(),
                ),
            };
            reply.after(delay)
        });
        OpenAi { server, models }
    }

    fn set(&self, model: &str, answer: Answer) {
        self.models.lock().unwrap().insert(model.to_string(), answer);
    }
}

/// `runbox check openai-probe` with the key as a header secret from `VAR=key`; asserts
/// that runbox printed the test key nowhere.
fn probe(openai: &OpenAi, key: &str, with: &[&str]) -> Run {
    let base = format!("base_url={}", openai.server.url());
    let grant = format!("POST {}", openai.server.url());
    let secret = format!("openai_api_key=env:{VAR}");
    let mut args = vec![
        "-vv",
        "check",
        "openai-probe",
        "--with",
        &base,
        "--with",
        r#"headers={"authorization": "Bearer ${{ secrets.openai_api_key }}"}"#,
        "--secret",
        &secret,
        "--allow",
        &grant,
        "--format",
        "json",
    ];
    for w in with {
        args.extend(["--with", w]);
    }
    let run = runbox_env(&args, &[(VAR, key)]);
    assert!(
        !run.stdout.contains(KEY) && !run.stderr.contains(KEY),
        "the key was printed: {run:#?}"
    );
    run
}

fn failure(json: &Value) -> Value {
    json["outputs"]["failure"].clone()
}

/// Every answer OpenAI gives, told apart: OK (with the key sent only as the header and
/// a one-token completion), a rejected key, an unknown model, a rate limit (WARNING, or
/// CRITICAL when configured), an exhausted quota, an outage, and slow answers.
#[test]
fn tells_openai_failures_apart() {
    let openai = OpenAi::start(
        &[
            ("gpt-4o-mini", Answer::Ok),
            ("gpt-limited", Answer::RateLimited),
            ("gpt-broke", Answer::Quota),
            ("gpt-down", Answer::Outage),
        ],
        Duration::ZERO,
    );

    let run = probe(&openai, KEY, &["model=gpt-4o-mini", "completion=true"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json()["steps"][0].clone();
    let summary = json["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("model gpt-4o-mini available (owned by system) in ")
            && summary.contains("; one-token completion in ")
            && summary.ends_with("(finish_reason length)"),
        "{summary}"
    );
    let names: Vec<&str> = json["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["latency_ms", "completion_ms", "completion_tokens"]);
    assert_eq!(json["outputs"], Value::Null, "no failure on OK: {json:#}");
    let received = openai.server.received();
    assert_eq!(
        received
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str()))
            .collect::<Vec<_>>(),
        [("GET", "/v1/models/gpt-4o-mini"), ("POST", "/v1/chat/completions")]
    );
    for request in &received {
        assert_eq!(request.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    }
    let body: Value = serde_json::from_str(&received[1].body).unwrap();
    assert_eq!(body["max_tokens"], 1);
    assert_eq!(received[1].header("content-type"), Some("application/json"));

    // (key, config, exit code, summary starts with, failure)
    let table: &[(&str, &[&str], i32, &str, &str)] = &[
        (
            "sk-wrong",
            &["model=gpt-4o-mini"],
            2,
            "key rejected by the OpenAI API (GET /v1/models: 401 invalid_api_key: Incorrect API key provided",
            "auth",
        ),
        (
            KEY,
            &["model=gpt-9-nonexistent"],
            2,
            "model gpt-9-nonexistent unknown or not allowed for this key (GET /v1/models: 404 model_not_found: The model `gpt-9-nonexistent` does not exist",
            "model",
        ),
        (
            KEY,
            &["model=gpt-limited", "completion=true"],
            1,
            "rate limited (POST /v1/chat/completions: 429 rate_limit_exceeded: Rate limit reached for gpt-limited",
            "rate_limit",
        ),
        (
            KEY,
            &["model=gpt-limited", "completion=true", "rate_limit_status=critical"],
            2,
            "rate limited",
            "rate_limit",
        ),
        (
            KEY,
            &["model=gpt-broke", "completion=true"],
            2,
            "quota exhausted: billing or plan limit reached (POST /v1/chat/completions: 429 insufficient_quota: You exceeded your current quota",
            "quota",
        ),
        (
            KEY,
            &["model=gpt-down"],
            2,
            "OpenAI API error, provider outage? (GET /v1/models: 503 server_error: The server is overloaded",
            "unavailable",
        ),
    ];
    for (key, with, code, summary, kind) in table {
        let run = probe(&openai, key, with);
        assert_eq!(run.code, *code, "{with:?}: {run:#?}");
        let json = run.json()["steps"][0].clone();
        assert!(
            json["summary"].as_str().unwrap().starts_with(summary),
            "{with:?}: {json:#}"
        );
        assert_eq!(failure(&json), *kind, "{with:?}");
    }
    // A rate limit's headers are in the details.
    let json = probe(&openai, KEY, &["model=gpt-limited", "completion=true"]).json()["steps"][0].clone();
    assert!(
        json["details"].as_array().unwrap().contains(&json!("retry-after: 20")),
        "{json:#}"
    );

    // A grant without POST lets the models GET through and the sandbox refuses the
    // completion: UNKNOWN, and the stand-in never sees a POST.
    let posts_before = openai.server.received().iter().filter(|r| r.method == "POST").count();
    let (base, grant) = (format!("base_url={}", openai.server.url()), openai.server.url());
    let run = runbox_env(
        &[
            "check",
            "openai-probe",
            "--with",
            &base,
            "--with",
            "model=gpt-4o-mini",
            "--with",
            "completion=true",
            "--with",
            r#"headers={"authorization": "Bearer ${{ secrets.k }}"}"#,
            "--secret",
            &format!("k=env:{VAR}"),
            "--allow",
            &grant,
            "--format",
            "json",
        ],
        &[(VAR, KEY)],
    );
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(
        openai.server.received().iter().filter(|r| r.method == "POST").count(),
        posts_before
    );

    // Without the completion, the rate-limited model's GET works: OK.
    assert_eq!(probe(&openai, KEY, &["model=gpt-limited"]).code, 0);

    // The provider goes away: unreachable is `unavailable`.
    drop(openai);
    let gone = OpenAi::start(&[], Duration::ZERO);
    let url = gone.server.url();
    drop(gone);
    let run = runbox_env(
        &[
            "check",
            "openai-probe",
            "--with",
            &format!("base_url={url}"),
            "--with",
            "model=m",
            "--allow",
            &url,
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.json()["steps"][0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("OpenAI API unreachable"),
        "{run:#?}"
    );
    assert_eq!(failure(&run.json()["steps"][0]), "unavailable");
}

/// Latency thresholds are Nagios ranges on `latency_ms` and `completion_ms`.
#[test]
fn judges_latency() {
    let openai = OpenAi::start(&[("gpt-4o-mini", Answer::Ok)], Duration::from_millis(300));
    let run = probe(&openai, KEY, &["model=gpt-4o-mini", "warn=100", "crit=5000"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let json = run.json()["steps"][0].clone();
    assert!(json["summary"].as_str().unwrap().ends_with("(slow)"), "{json:#}");
    let latency = &json["metrics"][0];
    assert_eq!(
        (latency["name"].as_str(), latency["warn"].as_str()),
        (Some("latency_ms"), Some("100"))
    );
    assert!(latency["value"].as_f64().unwrap() >= 300.0);
    let run = probe(
        &openai,
        KEY,
        &["model=gpt-4o-mini", "completion=true", "completion_crit=200"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    let run = probe(&openai, KEY, &["model=gpt-4o-mini", "warn=x"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.json()["steps"][0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("config field `warn`"),
        "{run:#?}"
    );
}

/// The app's counters: generation fails `failed_per_scrape` of 10 jobs per scrape, and
/// OpenAI answered 429 and 503 `errors_per_scrape` times; transcription always passes.
fn app_metrics(failed_per_scrape: u32, errors_per_scrape: u32) -> String {
    let ok = 10 - failed_per_scrape;
    format!(
        "# TYPE app_jobs_total counter\n\
         app_jobs_total{{stage=\"generation\",status=\"failed\"}} {{n*{failed_per_scrape}}}\n\
         app_jobs_total{{stage=\"generation\",status=\"succeeded\"}} {{n*{ok}}}\n\
         app_jobs_total{{stage=\"transcription\",status=\"failed\"}} 0\n\
         app_jobs_total{{stage=\"transcription\",status=\"succeeded\"}} {{n*10}}\n\
         app_jobs_total{{stage=\"export\",status=\"succeeded\"}} {{n*4}}\n\
         # TYPE app_openai_responses_total counter\n\
         app_openai_responses_total{{code=\"200\"}} {{n*{ok}}}\n\
         app_openai_responses_total{{code=\"429\"}} {{n*{errors_per_scrape}}}\n\
         app_openai_responses_total{{code=\"503\"}} {{n*{errors_per_scrape}}}\n"
    )
}

/// Seed 002, "OpenAI outage / generation failures", end to end: the primary model's
/// completions fail with 503s and the app's metrics show it; the runbook plans the
/// switch to a working fallback and the generation pause (a dry run changes nothing,
/// checked on the app and in Redis), applies both when approved (exactly the planned
/// request and key, audited); after recovery it replays exactly the failed generation
/// jobs, each once, audited.
#[test]
fn openai_outage_runbook_switches_model_pauses_generation_and_replays_after_recovery() {
    let openai = OpenAi::start(
        &[("gpt-4o-mini", Answer::Outage), ("gpt-4o-nano", Answer::Ok)],
        Duration::ZERO,
    );
    let exporter = Exporter::start(&app_metrics(6, 5));
    let prometheus = Prometheus::start(&exporter.target());
    let redis = Redis::start();
    let app = RqApp::start(&redis);
    // Three generation jobs that really fail in a real worker (RQ's failed registry).
    let failed: BTreeSet<String> = enqueue(&redis, 3).into_iter().collect();
    burst_worker(&redis);
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 3);
    // Rates need two scrapes in the window.
    prometheus.wait_for("rate(app_jobs_total[5s]) > 0", 4);
    prometheus.wait_for("rate(app_openai_responses_total{code=\"503\"}[5s]) > 0", 1);

    let (prom, api, base, port) = (prometheus.url(), app.url(), openai.server.url(), redis.port.to_string());
    let sets = [
        ("prometheus_url", prom.as_str()),
        ("window", "5s"),
        ("openai_base_url", base.as_str()),
        ("openai_model", "gpt-4o-mini"),
        ("fallback_model", "gpt-4o-nano"),
        ("api_url", api.as_str()),
        ("admin_url", api.as_str()),
        ("redis_port", port.as_str()),
        ("generation_queue", "default"),
    ];
    let env = [("OPENAI_API_KEY", KEY)];
    let dir = tempfile::tempdir().unwrap();

    // The outage, dry run: signals and triage say what they see; both mitigations are
    // planned, nothing is sent or written; replay waits for the provider.
    let run = run_shipped("openai-outage.yaml", &sets, &[], &env);
    assert!(
        !run.stdout.contains(KEY) && !run.stderr.contains(KEY),
        "the key was printed"
    );
    let json = run.json();
    assert_eq!(run.code, 2, "{json:#}");
    assert_eq!(
        status(&json, "failure-ratio"),
        "critical",
        "{:#}",
        step(&json, "failure-ratio")
    );
    assert!(
        step(&json, "failure-ratio")["summary"]
            .as_str()
            .unwrap()
            .starts_with("generation failure ratio = 0.6"),
        "{:#}",
        step(&json, "failure-ratio")
    );
    assert_eq!(
        status(&json, "provider-errors"),
        "critical",
        "{:#}",
        step(&json, "provider-errors")
    );
    let details = step(&json, "provider-errors")["details"].to_string();
    assert!(
        details.contains(r#"code=\"429\""#) && details.contains(r#"code=\"503\""#),
        "{details}"
    );
    assert_eq!(status(&json, "openai-key"), "critical");
    assert_eq!(step(&json, "openai-key")["outputs"]["failure"], "unavailable");
    assert_eq!(status(&json, "other-stages"), "ok", "{:#}", step(&json, "other-stages"));
    assert_eq!(
        step(&json, "other-stages")["summary"],
        "non-LLM stage failure ratio: all 2 series within thresholds"
    );
    assert_eq!(status(&json, "api-ready"), "ok");
    assert_eq!(
        status(&json, "fallback-probe"),
        "ok",
        "{:#}",
        step(&json, "fallback-probe")
    );
    let switch = step(&json, "switch-model");
    assert_eq!(
        switch["plan"]["summary"],
        format!("POST {api}/admin/config"),
        "{switch:#}"
    );
    assert_eq!(switch["applied"], false);
    assert_eq!(step(&json, "pause-generation")["applied"], false);
    assert!(skipped(&json, "replay"), "{:#}", step(&json, "replay"));
    assert_eq!(status(&json, "failed-jobs"), "warning");
    assert!(app.posts().is_empty(), "a dry run sent {:?}", app.posts());
    assert_eq!(redis.command(&["EXISTS", "generation:enqueue-paused"]).unwrap(), ":0");
    // The probes sent the key in the header only.
    assert!(
        openai
            .server
            .received()
            .iter()
            .all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}")))
    );

    // Approved: the switch and the pause are applied, exactly as planned, audited.
    let audit_log = dir.path().join("mitigate.jsonl");
    let run = run_shipped(
        "openai-outage.yaml",
        &sets,
        &[
            "--apply",
            "--approve",
            "switch-model",
            "--approve",
            "pause-generation",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
        &env,
    );
    let json = run.json();
    assert_eq!(step(&json, "switch-model")["applied"], true, "{json:#}");
    assert_eq!(step(&json, "pause-generation")["applied"], true, "{json:#}");
    assert_eq!(
        app.posts(),
        [(
            "/admin/config".to_string(),
            r#"{"OPENAI_MODEL": "gpt-4o-nano"}"#.to_string()
        )]
    );
    assert_eq!(
        redis.command(&["GET", "generation:enqueue-paused"]).unwrap(),
        "1",
        "flag set"
    );
    let ttl = int(&redis, &["TTL", "generation:enqueue-paused"]);
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
    let mut events: Vec<(String, String)> = audit(&audit_log)
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap().to_string(),
                l["step"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            ("apply-finished".to_string(), "pause-generation".to_string()),
            ("apply-finished".to_string(), "switch-model".to_string()),
            ("apply-started".to_string(), "pause-generation".to_string()),
            ("apply-started".to_string(), "switch-model".to_string()),
        ]
    );
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 3, "nothing was replayed");

    // The provider recovers (and the jobs' cause with it); the app's metrics follow
    // once the window has passed. The replay is planned per failed job; approved, each
    // is sent once and run again by a worker.
    openai.set("gpt-4o-mini", Answer::Ok);
    exporter.set(&app_metrics(0, 0));
    redis.command(&["SET", "test:fixed", "1"]).unwrap();
    std::thread::sleep(Duration::from_secs(7));
    let _worker = RqWorker::start(&redis);
    let run = run_shipped("openai-outage.yaml", &sets, &[], &env);
    let json = run.json();
    assert_eq!(status(&json, "openai-key"), "ok", "{json:#}");
    assert_eq!(
        status(&json, "failure-ratio"),
        "ok",
        "{:#}",
        step(&json, "failure-ratio")
    );
    assert_eq!(
        status(&json, "provider-errors"),
        "ok",
        "{:#}",
        step(&json, "provider-errors")
    );
    assert!(
        skipped(&json, "switch-model") && skipped(&json, "pause-generation"),
        "{json:#}"
    );
    let planned: BTreeSet<String> = items(&json, "replay")
        .iter()
        .map(|item| item["item"]["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(planned, failed);
    assert_eq!(app.posts().len(), 1, "the dry run sent nothing more");

    let audit_log = dir.path().join("replay.jsonl");
    let run = run_shipped(
        "openai-outage.yaml",
        &sets,
        &[
            "--apply",
            "--approve",
            "replay",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(run.code, 1, "failed-jobs is still WARNING in this run: {run:#?}");
    let replayed: BTreeSet<String> = app
        .posts()
        .iter()
        .filter_map(|(path, _)| path.strip_prefix("/jobs/")?.strip_suffix("/replay").map(String::from))
        .collect();
    assert_eq!(replayed, failed);
    assert_eq!(
        app.posts().len(),
        1 + failed.len(),
        "each job replayed once: {:?}",
        app.posts()
    );
    let lines = audit(&audit_log);
    assert_eq!(lines.len(), 2 * failed.len());
    assert!(lines.iter().all(|l| l["step"] == "replay"), "{lines:#?}");
    crate::seed_runbooks::wait_until("the replayed jobs to run", Duration::from_secs(30), || {
        int(&redis, &["ZCARD", "rq:failed:default"]) == 0
    });
}
