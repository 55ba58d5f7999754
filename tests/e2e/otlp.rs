//! OTLP traces (docs/tracing.md): the real `runbox` exports to an OTLP/HTTP receiver that
//! decodes with OpenTelemetry's own protobuf classes (opentelemetry-proto, from PyPI);
//! a loopback HTTP server stands for the traced downstream service a plugin calls.

use crate::harness::{HttpServer, Reply, Run, SilentServer, free_port, runbox_env_without, workspace};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every OTel variable runbox or its SDK reads: removed from each run, so that only
/// what a test sets counts.
const OTEL_VARS: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
];

/// tests/e2e/otlp_receiver.py on a random 127.0.0.1 port; killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Receiver {
        let python = workspace().join("target/tools/test-servers/bin/python3");
        assert!(
            python.is_file(),
            "{} is missing: run scripts/ensure-deps (it installs opentelemetry-proto into target/tools/test-servers)",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(python)
            .arg(workspace().join("tests/e2e/otlp_receiver.py"))
            .arg(dir.path().join("spans.jsonl"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("otlp_receiver.py did not start (is opentelemetry-proto installed? run scripts/ensure-deps): {first:?}")
            });
        Receiver { child, port, dir }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for it.
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far (and any request it rejected, as `{"rejected": …}`).
    fn spans(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("spans.jsonl")).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// Waits up to 10 s for at least `count` spans.
    fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `runbox run BOOK --format json` with exactly the OTel variables in `env`.
fn run(book: &Path, env: &[(&str, &str)]) -> Run {
    runbox_env_without(&["run", book.to_str().unwrap(), "--format", "json"], env, OTEL_VARS)
}

fn book(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("book.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
}

/// A value of a `with:` that must never reach a span.
const WITH_SECRET: &str = "Bearer with-value-that-must-not-be-exported-7f3a";

/// Four steps: `health` (OK; it sends its own, forged `traceparent` and `tracestate`,
/// and an Authorization header from `with:`), `flaky` (needs health; 404 twice: a retry,
/// then CRITICAL), `denied` (asks for a destination it was not granted), and `skipped`
/// (`when:` false).
fn traced_book(server: &HttpServer, elsewhere: u16) -> String {
    let origin = server.url();
    format!(
        r#"name: traced
steps:
  - id: health
    uses: http-health
    with:
      url: "{origin}/ok"
      headers:
        traceparent: "00-11111111111111111111111111111111-2222222222222222-01"
        tracestate: "forged=1"
        authorization: "{WITH_SECRET}"
    allow: ["{origin}"]
  - id: flaky
    uses: http-health
    needs: [health]
    retry: {{attempts: 2, delay: 10ms}}
    with: {{url: "{origin}/missing"}}
    allow: ["{origin}"]
  - id: denied
    uses: http-health
    with: {{url: "http://127.0.0.1:{elsewhere}/"}}
    allow: ["{origin}"]
  - id: skipped
    uses: http-health
    needs: [health]
    when: steps.health.status == "critical"
    with: {{url: "{origin}/never"}}
    allow: ["{origin}"]
"#
    )
}

fn downstream() -> HttpServer {
    HttpServer::start(|request, _| match request.path.as_str() {
        "/ok" | "/slow" => Reply::new(200, "ok"),
        _ => Reply::new(404, "no"),
    })
}

#[test]
fn a_run_is_one_trace_with_a_span_per_step_retries_and_denials_as_events() {
    let receiver = Receiver::start();
    let server = downstream();
    let elsewhere = free_port();
    let (_dir, path) = book(&traced_book(&server, elsewhere));
    let endpoint = receiver.endpoint();
    let run = run(&path, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    // health OK, flaky CRITICAL, denied UNKNOWN: the run is UNKNOWN, as without tracing.
    assert_eq!(run.code, 3, "{run:#?}");
    let spans = receiver.wait_for(5);
    assert_eq!(spans.len(), 5, "a root and one span per step: {spans:#?}");
    assert!(spans.iter().all(|s| s.get("rejected").is_none()), "{spans:#?}");

    let root = named(&spans, "RUN traced");
    let trace_id = root["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32);
    assert_eq!(root["parent_span_id"], "", "the run is the root");
    assert_eq!(root["kind"], 2, "SERVER");
    assert_eq!(root["scope"], "runbox");
    assert_eq!(root["resource"]["service.name"], "runbox");
    let attrs = &root["attributes"];
    assert_eq!(attrs["cicd.pipeline.name"], "traced");
    assert_eq!(attrs["cicd.pipeline.run.id"].as_str().unwrap().len(), 16);
    assert_eq!(attrs["cicd.pipeline.action.name"], "RUN");
    assert_eq!(attrs["cicd.pipeline.result"], "error");
    assert_eq!(attrs["runbox.run.status"], "UNKNOWN");
    assert_eq!(root["status"]["code"], 2, "ERROR");
    assert_eq!(root["status"]["message"], "UNKNOWN: failed steps flaky, denied");
    let run_id = attrs["cicd.pipeline.run.id"].as_str().unwrap();
    assert_eq!(Some(run_id), run.json()["run_id"].as_str(), "the report's run id");

    for step in ["health", "flaky", "denied", "skipped"] {
        let span = named(&spans, step);
        assert_eq!(span["trace_id"], trace_id, "{step}: one trace");
        assert_eq!(span["parent_span_id"], root["span_id"], "{step}: a child of the run");
        assert_eq!(span["kind"], 1, "{step}: INTERNAL");
        let attrs = &span["attributes"];
        assert_eq!(attrs["cicd.pipeline.task.name"], step);
        assert_eq!(attrs["cicd.pipeline.task.run.id"], format!("{run_id}/{step}"));
        assert_eq!(attrs["cicd.pipeline.task.type"], "test");
        assert_eq!(attrs["runbox.plugin"], "http-health");
    }
    let ids: std::collections::BTreeSet<&str> = spans.iter().map(|s| s["span_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5, "distinct span ids");

    let health = named(&spans, "health");
    assert_eq!(health["attributes"]["cicd.pipeline.task.run.result"], "success");
    assert_eq!(health["attributes"]["runbox.step.status"], "OK");
    assert_eq!(health["status"]["code"], 0, "OK leaves the status unset");
    assert_eq!(health["events"], serde_json::json!([]));

    let flaky = named(&spans, "flaky");
    assert_eq!(flaky["attributes"]["cicd.pipeline.task.run.result"], "failure");
    assert_eq!(flaky["attributes"]["runbox.step.status"], "CRITICAL");
    assert_eq!(flaky["attributes"]["runbox.step.attempts"], 2);
    assert_eq!(flaky["attributes"]["error.type"], "CRITICAL");
    assert_eq!(flaky["status"]["code"], 2);
    assert!(
        flaky["status"]["message"].as_str().unwrap().contains("404"),
        "{flaky:#}"
    );
    let events = flaky["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "one retry: {flaky:#}");
    assert_eq!(events[0]["name"], "retry");
    assert_eq!(events[0]["attributes"]["runbox.attempt"], 1);
    assert_eq!(events[0]["attributes"]["runbox.step.status"], "CRITICAL");
    assert_eq!(events[0]["attributes"]["runbox.retry.delay_ms"], 10);
    assert!(
        events[0]["attributes"]["runbox.reason"]
            .as_str()
            .unwrap()
            .contains("404")
    );
    // The step's span starts after the step it needs has ended.
    assert!(
        flaky["start_ns"].as_u64() >= health["end_ns"].as_u64(),
        "{health:#} {flaky:#}"
    );

    let denied = named(&spans, "denied");
    assert_eq!(denied["attributes"]["cicd.pipeline.task.run.result"], "error");
    assert_eq!(denied["status"]["code"], 2);
    let events = denied["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{denied:#}");
    assert_eq!(events[0]["name"], "denial");
    // The line the report shows.
    let report_denial = crate::harness::step(&run.json(), "denied")["denied"][0].clone();
    assert_eq!(events[0]["attributes"]["runbox.denial"], report_denial);
    assert!(
        report_denial
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{elsewhere}")),
        "{report_denial}"
    );

    let skipped = named(&spans, "skipped");
    assert_eq!(skipped["attributes"]["cicd.pipeline.task.run.result"], "skip");
    assert!(
        skipped["attributes"]["runbox.step.skipped"]
            .as_str()
            .unwrap()
            .contains("is false")
    );
    assert_eq!(skipped["status"]["code"], 0);

    // No `with:` value is exported (the Authorization header the step sent).
    let everything = serde_json::to_string(&spans).unwrap();
    assert!(!everything.contains("with-value-that-must-not"), "{everything}");
    let sent = server.received();
    assert!(
        sent.iter().any(|r| r.header("authorization") == Some(WITH_SECRET)),
        "{sent:#?}"
    );
}

#[test]
fn a_plugins_http_requests_carry_its_steps_traceparent_and_no_forged_one() {
    let receiver = Receiver::start();
    let server = downstream();
    let (_dir, path) = book(&traced_book(&server, free_port()));
    let endpoint = receiver.endpoint();
    let run = run(&path, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    assert_eq!(run.code, 3, "{run:#?}");
    let spans = receiver.wait_for(5);
    let trace_id = named(&spans, "RUN traced")["trace_id"].as_str().unwrap().to_string();
    let received = server.received();
    for (path, step, count) in [("/ok", "health", 1), ("/missing", "flaky", 2)] {
        let span_id = named(&spans, step)["span_id"].as_str().unwrap();
        let requests: Vec<_> = received.iter().filter(|r| r.path == path).collect();
        assert_eq!(requests.len(), count, "{received:#?}");
        for request in requests {
            let values: Vec<&str> = request
                .headers
                .iter()
                .filter(|(k, _)| k == "traceparent")
                .map(|(_, v)| v.as_str())
                .collect();
            // Exactly the host's: the plugin's forged value (health's) is replaced, not added to.
            assert_eq!(values, [format!("00-{trace_id}-{span_id}-01")], "{step}: {request:#?}");
            assert_eq!(
                request.header("tracestate"),
                None,
                "{step}: the plugin's tracestate is removed"
            );
        }
    }
}

/// `runbox` started in the background with exactly the OTel variables in `env`.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = crate::harness::runbox_command(args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    for key in OTEL_VARS {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("runbox starts")
}

/// The names of a process's threads (as the kernel keeps them: 15 bytes).
fn threads(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// The threads of a `runbox run` while its one step waits for the server's answer.
fn threads_while_running(env: &[(&str, &str)]) -> (Vec<String>, std::process::Output, HttpServer) {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok").after(Duration::from_millis(1500)));
    let origin = server.url();
    let (dir, path) = book(&format!(
        "name: slow\nsteps:\n  - id: wait\n    uses: http-health\n    with: {{url: \"{origin}/slow\"}}\n    allow: [\"{origin}\"]\n"
    ));
    let child = spawn(&["run", path.to_str().unwrap(), "--format", "json"], env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.received().is_empty() {
        assert!(Instant::now() < deadline, "the step never sent its request");
        std::thread::sleep(Duration::from_millis(10));
    }
    let names = threads(child.id());
    let output = child.wait_with_output().unwrap();
    drop(dir);
    (names, output, server)
}

#[test]
fn without_an_endpoint_nothing_is_exported_no_thread_runs_and_no_traceparent_is_sent() {
    let receiver = Receiver::start();
    let server = downstream();
    let (_dir, path) = book(&traced_book(&server, free_port()));
    // Other OTel variables alone turn nothing on.
    let run = run(
        &path,
        &[("OTEL_SERVICE_NAME", "x"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")],
    );
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    let received = server.received();
    let ok = received.iter().find(|r| r.path == "/ok").expect("health ran");
    // The plugin's own headers pass as they are: the host adds and replaces nothing.
    assert_eq!(
        ok.header("traceparent"),
        Some("00-11111111111111111111111111111111-2222222222222222-01")
    );
    assert_eq!(ok.header("tracestate"), Some("forged=1"));
    let missing = received.iter().find(|r| r.path == "/missing").expect("flaky ran");
    assert_eq!(missing.header("traceparent"), None, "{missing:#?}");
    // `OTEL_SDK_DISABLED=true` turns an endpoint off.
    let endpoint = receiver.endpoint();
    let disabled = self::run(
        &path,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    );
    assert_eq!(disabled.code, 3, "{disabled:#?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.spans(), Vec::<Value>::new(), "nothing reached the receiver");

    // No exporter thread (nor reqwest's) exists when tracing is off; both do when it is on.
    let exporting = |names: &[String]| {
        names
            .iter()
            .any(|n| n.starts_with("OpenTelemetry") || n.starts_with("reqwest"))
    };
    let (off, output, _) = threads_while_running(&[]);
    assert!(output.status.success(), "{output:?}");
    assert!(!off.is_empty() && !exporting(&off), "{off:?}");
    let (on, output, server) = threads_while_running(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        exporting(&on),
        "the check sees the exporter's threads when they exist: {on:?}"
    );
    assert!(server.received()[0].header("traceparent").is_some());
    assert_eq!(receiver.wait_for(2).len(), 2);
}

#[test]
fn an_unreachable_collector_costs_a_warning_not_the_exit_code_nor_long() {
    let server = downstream();
    let origin = server.url();
    let (_dir, path) = book(&format!(
        "name: fine\nsteps:\n  - id: health\n    uses: http-health\n    with: {{url: \"{origin}/ok\"}}\n    allow: [\"{origin}\"]\n"
    ));
    // Nothing listens: the export fails at once.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let run = run(&path, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &closed)]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["status"], "ok");
    assert!(
        run.stderr.contains("runbox: warning: 2 spans could not be exported to")
            && run.stderr.contains(&format!("{closed}/v1/traces: connection refused")),
        "{}",
        run.stderr
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);

    // A collector that accepts and never answers: the export gives up after
    // OTEL_EXPORTER_OTLP_TIMEOUT, and so does runbox.
    let silent = SilentServer::start();
    let endpoint = format!("http://{}", silent.addr);
    let run = self::run(
        &path,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stderr.contains("runbox: warning: 2 spans could not be exported")
            && run.stderr.contains("no answer within 1s"),
        "{}",
        run.stderr
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    assert!(
        run.elapsed >= Duration::from_secs(1),
        "it did wait for the export: {:?}",
        run.elapsed
    );
}

#[test]
fn a_protocol_runbox_does_not_speak_is_refused_before_anything_runs() {
    let server = downstream();
    let (_dir, path) = book(&traced_book(&server, free_port()));
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ] {
        let run = run(
            &path,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), (name, value)],
        );
        assert_eq!(run.code, 64, "{name}={value}: {run:#?}");
        assert!(run.stderr.contains(&format!("{name}={value}")), "{}", run.stderr);
        assert!(server.received().is_empty(), "nothing ran");
    }
    let run = run(
        &path,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ],
    );
    assert_eq!(run.code, 3, "tracing turned off, the run runs: {run:#?}");
}

#[test]
fn serve_exports_a_trace_per_probe_and_flushes_on_shutdown() {
    let receiver = Receiver::start();
    let server = downstream();
    let origin = server.url();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        format!(
            "name: web\nsteps:\n  - id: up\n    uses: http-health\n    with: {{url: \"{origin}/ok\"}}\n    allow: [\"{origin}\"]\n  - id: again\n    uses: http-health\n    needs: [up]\n    with: {{url: \"{origin}/ok\"}}\n    allow: [\"{origin}\"]\n"
        ),
    )
    .unwrap();
    let endpoint = receiver.endpoint();
    let mut child = spawn(
        &[
            "serve",
            "--runbooks",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "probes"),
        ],
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && stderr.read_line(&mut line).unwrap_or(0) > 0 {
        addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        line.clear();
    }
    let addr = addr.expect("runbox serve listens");
    for _ in 0..2 {
        let body = probe(&addr, "/probe?runbook=web");
        assert!(body.contains("probe_success 1"), "{body}");
    }
    // Graceful shutdown exports what the batch still holds.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "runbox serve did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let spans = receiver.spans();
    assert_eq!(spans.len(), 6, "two probes, each a root and two steps: {spans:#?}");
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parent_span_id"] == "").collect();
    assert_eq!(roots.len(), 2, "{spans:#?}");
    assert_ne!(roots[0]["trace_id"], roots[1]["trace_id"], "one trace per probe");
    for root in roots {
        assert_eq!(root["name"], "RUN web");
        assert_eq!(root["attributes"]["cicd.pipeline.result"], "success");
        assert_eq!(
            root["resource"]["service.name"], "probes",
            "OTEL_SERVICE_NAME is honoured"
        );
        let steps: Vec<&Value> = spans
            .iter()
            .filter(|s| s["parent_span_id"] == root["span_id"])
            .collect();
        let mut names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["again", "up"]);
        assert!(steps.iter().all(|s| s["trace_id"] == root["trace_id"]));
    }
    let received = server.received();
    assert_eq!(received.len(), 4);
    assert!(
        received.iter().all(|r| r.header("traceparent").is_some()),
        "{received:#?}"
    );
}

/// `GET path` from `runbox serve` at `addr`: the body.
fn probe(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}
