//! `runbox run` and `runbox validate` end to end: real plugins, real Redis, real HTTP.

use crate::harness::{Book, HttpServer, Redis, Reply, runbox, step, workspace};
use std::time::Duration;

fn time_of(value: &serde_json::Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(value.as_str().unwrap()).unwrap()
}

fn health_step(id: &str, server: &HttpServer, path: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    uses: http-health\n    with:\n      url: {}{path}\n    allow:\n      - {}\n{extra}",
        server.url(),
        server.url()
    )
}

#[test]
fn steps_run_as_a_dag_and_independent_steps_run_concurrently() {
    let server = HttpServer::start(|req, _| match req.path.as_str() {
        "/slow" => Reply::new(200, "ok").after(Duration::from_millis(1200)),
        _ => Reply::new(200, "ok"),
    });
    let yaml = format!(
        "name: dag\nsteps:\n{}{}{}",
        health_step("a", &server, "/slow", ""),
        health_step("b", &server, "/slow", ""),
        health_step("c", &server, "/fast", "    needs: [a, b]\n"),
    );
    let book = Book::new(&yaml);
    let run = book.run(&["--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json();
    let (a, b, c) = (step(&json, "a"), step(&json, "b"), step(&json, "c"));
    assert!(
        time_of(&c["started_at"]) >= time_of(&a["ended_at"]).max(time_of(&b["ended_at"])),
        "c started before its needs ended"
    );
    // Two 1.2 s steps side by side take about as long as one.
    let wall = json["duration_ms"].as_f64().unwrap();
    assert!(wall < 2200.0, "a and b did not overlap: {wall} ms");

    let run = book.run(&["--format", "json", "--parallel", "1"]);
    let wall = run.json()["duration_ms"].as_f64().unwrap();
    assert!(wall >= 2400.0, "--parallel 1 still overlapped: {wall} ms");
}

#[test]
fn when_conditions_skip_with_the_reason() {
    let server = HttpServer::start(|req, _| {
        if req.path == "/down" {
            Reply::new(503, "{\"status\": \"down\"}")
        } else {
            Reply::new(200, "ok")
        }
    });
    let yaml = format!(
        "name: conditions\ninputs:\n  env:\n    default: prod\nsteps:\n{}{}{}{}",
        health_step("up", &server, "/up", ""),
        health_step("down", &server, "/down", ""),
        health_step(
            "when-down",
            &server,
            "/up",
            "    needs: [down]\n    when: steps.down.status == 'critical' && inputs.env == 'prod'\n"
        ),
        health_step(
            "when-up-slow",
            &server,
            "/up",
            "    needs: up\n    when: steps.up.metrics.latency_ms > 60000\n"
        ),
    );
    let run = Book::new(&yaml).run(&["--format", "json"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json();
    assert_eq!(step(&json, "when-down")["skipped"], serde_json::Value::Null);
    assert_eq!(step(&json, "when-down")["status"], "ok");
    assert_eq!(
        step(&json, "when-up-slow")["skipped"],
        "`when: steps.up.metrics.latency_ms > 60000` is false"
    );
    assert_eq!(step(&json, "when-up-slow")["attempts"], 0);
}

#[test]
fn retries_with_backoff_until_success_and_timeouts() {
    let server = HttpServer::start(|req, n| match req.path.as_str() {
        "/flaky" if n < 2 => Reply::new(503, "starting"),
        "/hang" => Reply::new(200, "late").after(Duration::from_secs(5)),
        _ => Reply::new(200, "ok"),
    });
    let yaml = format!(
        "name: retries\nsteps:\n{}{}",
        health_step(
            "flaky",
            &server,
            "/flaky",
            "    retry: {attempts: 3, delay: 200ms, backoff: 2}\n"
        ),
        health_step("hang", &server, "/hang", "    timeout: 1s\n"),
    );
    let run = Book::new(&yaml).run(&["--format", "json"]);
    let json = run.json();
    let flaky = step(&json, "flaky");
    assert_eq!(
        (flaky["status"].as_str(), flaky["attempts"].as_u64()),
        (Some("ok"), Some(3)),
        "{flaky}"
    );
    // Waits of 200 ms and 400 ms between the attempts.
    assert!(flaky["duration_ms"].as_f64().unwrap() >= 600.0, "{flaky}");
    let hang = step(&json, "hang");
    assert_eq!(hang["status"], "critical", "{hang}");
    assert!(hang["summary"].as_str().unwrap().contains("timed out"), "{hang}");
    assert!(hang["duration_ms"].as_f64().unwrap() < 2000.0, "{hang}");
    assert_eq!(run.code, 2);
}

#[test]
fn an_abort_stops_scheduling_and_reports_the_rest_as_not_run() {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let dead = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let yaml = format!(
        "name: abort\nsteps:\n  - id: gate\n    uses: http-health\n    on_failure: abort\n    with:\n      url: {dead}/health\n    allow:\n      - {dead}\n{}{}",
        health_step("after", &server, "/x", "    needs: gate\n"),
        health_step("other", &server, "/y", "    needs: gate\n"),
    );
    let run = Book::new(&yaml).run(&["--format", "json", "--parallel", "1"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json();
    assert_eq!(step(&json, "gate")["status"], "critical");
    for id in ["after", "other"] {
        assert_eq!(
            step(&json, id)["skipped"],
            "not run: step `gate` failed and has `on_failure: abort`"
        );
    }
    assert!(server.received().is_empty(), "steps ran after the abort");
}

fn flag_book(redis: &Redis) -> Book {
    Book::new(&format!(
        "name: flags\nsteps:\n  - id: pause\n    uses: redis-flag\n    approval: required\n    with:\n      url: {url}\n      key: queue:paused\n      ttl_seconds: 600\n    allow:\n      - {grant}\n",
        url = redis.url(),
        grant = redis.grant()
    ))
}

#[test]
fn mitigations_plan_and_apply_only_when_allowed_and_approved() {
    let redis = Redis::start();
    let book = flag_book(&redis);
    let audit = book.audit();
    let audit_arg = audit.to_str().unwrap();

    // Without --apply: a plan, nothing changes, nothing audited.
    let run = book.run(&["--format", "json", "--audit-log", audit_arg]);
    assert_eq!(run.code, 0, "{run:#?}");
    let pause = step(&run.json(), "pause").clone();
    assert_eq!(pause["applied"], false);
    assert_eq!(
        pause["plan"]["changes"][0],
        "SET queue:paused \"1\" EX 600 (was: unset)"
    );
    assert!(
        pause["summary"]
            .as_str()
            .unwrap()
            .ends_with("not applied (dry run: pass --apply to apply)"),
        "{pause}"
    );
    assert_eq!(redis.command(&["EXISTS", "queue:paused"]).unwrap(), ":0");
    assert!(!audit.exists(), "a dry run wrote the audit log");

    // --apply without approval: still not applied, WARNING, nothing audited.
    let run = book.run(&["--format", "json", "--apply", "--audit-log", audit_arg]);
    assert_eq!(run.code, 1, "{run:#?}");
    let pause = step(&run.json(), "pause").clone();
    assert_eq!(pause["applied"], false);
    assert!(
        pause["summary"]
            .as_str()
            .unwrap()
            .ends_with("not applied: approval required (pass --approve pause)"),
        "{pause}"
    );
    assert_eq!(redis.command(&["EXISTS", "queue:paused"]).unwrap(), ":0");
    assert_eq!(std::fs::read_to_string(&audit).unwrap_or_default(), "");

    // --apply --approve: applied, and audited before and after.
    let run = book.run(&[
        "--format",
        "json",
        "--apply",
        "--approve",
        "pause",
        "--audit-log",
        audit_arg,
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let pause = step(&run.json(), "pause").clone();
    assert_eq!(pause["applied"], true);
    assert_eq!(redis.command(&["GET", "queue:paused"]).unwrap(), "1");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (lines[0]["event"].as_str(), lines[1]["event"].as_str()),
        (Some("apply-started"), Some("apply-finished"))
    );
    for line in &lines {
        assert_eq!(line["runbook"], "flags");
        assert_eq!(line["step"], "pause");
        assert_eq!(line["approval"], "approved with --approve");
        assert_eq!(line["plan"]["changes"][0], "SET queue:paused \"1\" EX 600 (was: unset)");
        assert!(line["time"].as_str().unwrap().ends_with('Z') && !line["user"].as_str().unwrap().is_empty());
    }
    assert_eq!(lines[1]["outcome"]["status"], "ok");
    assert_eq!(lines[0]["run_id"], lines[1]["run_id"]);

    // --approve without --apply is refused before anything runs.
    let run = book.run(&["--approve", "pause"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stderr.contains("--approve needs --apply"), "{}", run.stderr);
}

#[test]
fn http_action_sends_the_request_only_on_apply() {
    let server = HttpServer::start(|req, _| {
        if req.method == "POST" && req.path == "/jobs/failed/replay" {
            Reply::new(202, "{\"replayed\": 3}")
        } else {
            Reply::new(404, "no")
        }
    });
    let book = Book::new(&format!(
        "name: replay\nsteps:\n  - id: replay\n    uses: http-action\n    with:\n      url: {url}/jobs/failed/replay\n      body: '{{\"queue\": \"default\"}}'\n    allow:\n      - {url}\n",
        url = server.url()
    ));
    let run = book.run(&["--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(server.received().is_empty(), "the plan sent a request");
    let audit = book.audit();
    let run = book.run(&["--format", "json", "--apply", "--audit-log", audit.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:#?}");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].method.as_str(), received[0].body.as_str()),
        ("POST", "{\"queue\": \"default\"}")
    );
    assert_eq!(
        step(&run.json(), "replay")["summary"],
        format!("applied: POST {}/jobs/failed/replay → 202", server.url())
    );
}

#[test]
fn every_output_format_parses() {
    let server = HttpServer::start(|req, _| {
        if req.path == "/bad" {
            Reply::new(500, "boom")
        } else {
            Reply::new(200, "ok")
        }
    });
    let yaml = format!(
        "name: formats\nseverity: SEV-3\nescalation: call \"ops\" <now>\nsteps:\n{}{}{}",
        health_step("good", &server, "/good", ""),
        health_step("bad", &server, "/bad", ""),
        health_step(
            "skipped",
            &server,
            "/good",
            "    needs: good\n    when: steps.good.status == 'critical'\n"
        ),
    );
    let book = Book::new(&yaml);

    let junit = book.run(&["--format", "junit"]);
    assert_eq!(junit.code, 2);
    let doc =
        roxmltree::Document::parse(&junit.stdout).unwrap_or_else(|err| panic!("invalid XML ({err}): {}", junit.stdout));
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!(
        (
            suite.attribute("tests"),
            suite.attribute("failures"),
            suite.attribute("skipped")
        ),
        (Some("3"), Some("1"), Some("1"))
    );
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 3);
    let bad = cases.iter().find(|c| c.attribute("name") == Some("bad")).unwrap();
    let failure = bad
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("bad has a failure");
    assert!(
        failure.attribute("message").unwrap().contains("→ 500"),
        "{:?}",
        failure.attribute("message")
    );

    let prom = book.run(&["--format", "prometheus"]);
    let scrape =
        prometheus_parse::Scrape::parse(prom.stdout.lines().map(|l| Ok(l.to_string()))).expect("valid exposition");
    let value = |name: &str, step: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && step.is_none_or(|id| s.labels.get("step") == Some(id)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} for {step:?}: {}", prom.stdout))
    };
    assert_eq!(value("runbox_run_status", None), 2.0);
    assert_eq!(value("runbox_step_status", Some("good")), 0.0);
    assert_eq!(value("runbox_step_status", Some("bad")), 2.0);
    assert_eq!(value("runbox_step_status", Some("skipped")), -1.0);
    let latency = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "runbox_step_metric"
                && s.labels.get("metric") == Some("latency_ms")
                && s.labels.get("step") == Some("good")
        })
        .expect("latency sample");
    assert_eq!(latency.labels.get("unit"), Some("ms"));
    assert_eq!(latency.labels.get("runbook"), Some("formats"));

    let markdown = book.run(&["--format", "markdown"]);
    assert!(
        markdown.stdout.starts_with("### Runbook `formats` (SEV-3): CRITICAL\n"),
        "{}",
        markdown.stdout
    );
    assert!(
        markdown
            .stdout
            .contains("| Started (UTC) | Ended (UTC) | Step | Result | Summary |"),
        "{}",
        markdown.stdout
    );
    assert!(
        markdown.stdout.contains("| `bad` (http-health) | CRITICAL |"),
        "{}",
        markdown.stdout
    );
    assert!(
        markdown.stdout.contains("| `skipped` (http-health) | SKIPPED |"),
        "{}",
        markdown.stdout
    );

    let nagios = book.run(&["--format", "nagios"]);
    assert!(
        nagios
            .stdout
            .starts_with("FORMATS CRITICAL - 3 steps, bad CRITICAL | 'good.latency_ms'="),
        "{}",
        nagios.stdout
    );

    let out = book.dir.path().join("report.json");
    let run = book.run(&["--format", "json", "--output", out.to_str().unwrap()]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        (
            json["runbook"].as_str(),
            json["severity"].as_str(),
            json["status"].as_str()
        ),
        (Some("formats"), Some("SEV-3"), Some("critical"))
    );
    for step in json["steps"].as_array().unwrap() {
        assert!(step["started_at"].is_string() && step["ended_at"].is_string(), "{step}");
    }

    let human = book.run(&[]);
    assert!(
        human.stdout.contains("STEP     STATUS        TIME  TRIES  SUMMARY"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("\nCRITICAL: formats in "), "{}", human.stdout);
    assert!(
        human.stdout.contains("Escalation: call \"ops\" <now>"),
        "{}",
        human.stdout
    );
}

#[test]
fn exit_codes_follow_the_worst_status() {
    let server = HttpServer::start(|req, _| match req.path.as_str() {
        "/slow" => Reply::new(200, "ok").after(Duration::from_millis(30)),
        _ => Reply::new(200, "ok"),
    });
    let ok = Book::new(&format!("name: ok\nsteps:\n{}", health_step("a", &server, "/", "")));
    assert_eq!(ok.run(&[]).code, 0);
    // Any latency is above 0 ms: a `warn: "0"` range makes the step WARNING.
    let warn = Book::new(&format!(
        "name: warn\nsteps:\n  - id: a\n    uses: http-health\n    with:\n      url: {url}/slow\n      warn: \"0\"\n    allow:\n      - {url}\n",
        url = server.url()
    ));
    assert_eq!(warn.run(&[]).code, 1);
    let unknown =
        Book::new("name: unknown\nsteps:\n  - id: a\n    uses: http-health\n    with:\n      url: not-a-url\n");
    assert_eq!(unknown.run(&[]).code, 3);
    let invalid = Book::new("name: invalid\nsteps: 5\n");
    assert_eq!(invalid.run(&[]).code, 64);
}

#[test]
fn validate_reports_every_problem_with_file_line_and_step() {
    let redis_ping = workspace().join("target/wasm32-wasip2/plugin/redis_ping.wasm");
    let yaml = format!(
        r#"name: broken
inputs:
  port:
    default: 6379
steps:
  - id: a
    uses: redis-ping
    with:
      url: redis://127.0.0.1:${{{{ inputs.prot }}}}
    allow:
      - redis//127.0.0.1
  - id: a
    uses: redis-ping
    needs: [ghost]
    with:
      url: redis://x
      info: maybe
  - id: b
    uses: no-such-plugin
    needs: c
  - id: c
    uses: redis-ping
    needs: b
    when: steps.a.status = 'ok'
    timeout: soon
    approval: required
    with:
      url: redis://x
  - id: d
    uses: {pinned}@sha256:{zeros}
    with:
      url: redis://x
"#,
        pinned = redis_ping.display(),
        zeros = "0".repeat(64)
    );
    let book = Book::new(&yaml);
    let run = runbox(&["validate", book.path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    let file = book.path.display().to_string();
    let expected = [
        format!("error: {file}:9: step `a`: `${{{{ inputs.prot }}}}` names no declared input"),
        format!(
            "error: {file}:11: step `a`: grant `redis//127.0.0.1`: missing `scheme://` (expected scheme://host[:port], e.g. redis://cache.internal:6379, tcp://10.0.0.0/8:5432, https://*.example.com)"
        ),
        format!("error: {file}:12: step `a`: duplicate step id (first used on line 6)"),
        format!("error: {file}:14: step `a`: needs `ghost`, which is not a step of this runbook"),
        format!(
            "error: {file}:16: step `a`: config field `info`: \"maybe\" is not of type \"boolean\" (plugin `redis-ping`)"
        ),
        format!("error: {file}:19: step `b`: plugin `no-such-plugin` not found;"),
        format!("error: {file}:20: step `b`: `needs` form a cycle: b → c → b"),
        format!("error: {file}:24: step `c`: `when: steps.a.status = 'ok'`: unexpected `=` at column 16"),
        format!("error: {file}:25: step `c`: `timeout: soon` is not a duration (e.g. 10s, 1m)"),
        format!("error: {file}:26: step `c`: `approval` applies to mitigations; `redis-ping` is a check"),
        format!("error: {file}:30: step `d`: {} has sha256 ", redis_ping.display()),
    ];
    assert_eq!(
        run.stderr.lines().filter(|l| l.starts_with("error:")).count(),
        expected.len(),
        "exactly these problems:\n{}",
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    for want in &expected {
        assert!(
            lines.iter().any(|line| line.starts_with(want.as_str())),
            "missing {want:?} in:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("but the runbook pins 0000"), "{}", run.stderr);
    assert!(
        run.stderr.ends_with(&format!("{} problems found\n", lines.len() - 1)),
        "{}",
        run.stderr
    );

    let syntax = Book::new("name: x\nsteps:\n  - id: a\n    allow: [redis://${{ inputs.h }}]\n");
    let run = runbox(&["validate", syntax.path.to_str().unwrap()]);
    assert_eq!(run.code, 64);
    assert!(
        run.stderr
            .starts_with(&format!("error: {}:4: invalid YAML:", syntax.path.display())),
        "{}",
        run.stderr
    );

    let unknown_field = Book::new("name: x\nsteps:\n  - id: a\n    uses: redis-ping\n    retries: 3\n");
    let run = runbox(&["validate", unknown_field.path.to_str().unwrap()]);
    assert!(
        run.stderr.starts_with(&format!(
            "error: {}:5: `steps[0].retries`: unknown field `retries`, expected one of `id`",
            unknown_field.path.display()
        )),
        "{}",
        run.stderr
    );

    // Running a broken runbook runs nothing.
    let run = runbox(&["run", book.path.to_str().unwrap()]);
    assert_eq!(run.code, 64);
    assert!(
        run.stderr.contains("problems in the runbook; nothing was run"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_pinned_digest_runs_only_the_pinned_plugin() {
    let redis = Redis::start();
    let path = workspace().join("target/wasm32-wasip2/plugin/redis_ping.wasm");
    let digest = runbox::runtime::cache::digest(&std::fs::read(&path).unwrap());
    let book = Book::new(&format!(
        "name: pinned\nsteps:\n  - id: ping\n    uses: redis-ping@sha256:{digest}\n    with:\n      url: {}\n    allow:\n      - {}\n",
        redis.url(),
        redis.grant()
    ));
    assert_eq!(book.run(&[]).code, 0);
    let other = format!("{}{}", &digest[..63], if digest.ends_with('0') { "1" } else { "0" });
    let wrong = Book::new(&std::fs::read_to_string(&book.path).unwrap().replace(&digest, &other));
    let run = wrong.run(&[]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "but the runbook pins {other}: refusing to run a plugin that is not the pinned one"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn the_shipped_runbooks_validate() {
    // Plugins from later issues; a runbook using them may fail only because they are missing.
    let pending: [&str; 0] = [];
    for entry in std::fs::read_dir(workspace().join("runbooks")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# Incident:"),
            "{} has no header saying what incident it serves",
            path.display()
        );
        let run = runbox(&["validate", path.to_str().unwrap()]);
        for line in run.stderr.lines().filter(|l| l.starts_with("error:")) {
            assert!(
                pending
                    .iter()
                    .any(|p| line.contains(&format!("plugin `{p}` not found"))),
                "{}: {line}",
                path.display()
            );
        }
        if run.code != 0 {
            assert!(
                pending.iter().any(|p| text.contains(&format!("uses: {p}"))),
                "{}: {}",
                path.display(),
                run.stderr
            );
        }
    }
}

#[test]
fn queue_depth_reads_lists_and_stream_consumer_groups() {
    let redis = Redis::start();
    for i in 0..7 {
        redis.command(&["RPUSH", "queue:default", &format!("job{i}")]).unwrap();
    }
    redis
        .command(&["XGROUP", "CREATE", "artifacts", "builders", "$", "MKSTREAM"])
        .unwrap();
    for i in 0..5 {
        redis.command(&["XADD", "artifacts", "*", "n", &i.to_string()]).unwrap();
    }
    // A consumer reads 2 entries and acknowledges none: pending 2, lag 3.
    redis
        .command(&[
            "XREADGROUP",
            "GROUP",
            "builders",
            "w1",
            "COUNT",
            "2",
            "STREAMS",
            "artifacts",
            ">",
        ])
        .unwrap();
    let book = Book::new(&format!(
        "name: depth\nsteps:\n  - id: depth\n    uses: redis-queue-depth\n    with:\n      url: {}\n      lists: [queue:default, queue:empty]\n      streams:\n        - {{stream: artifacts, group: builders}}\n      warn: \"5\"\n    allow:\n      - {}\n  - id: react\n    uses: redis-ping\n    needs: depth\n    when: steps.depth.metrics.artifacts.builders.lag == 3\n    with:\n      url: {}\n    allow:\n      - {}\n",
        redis.url(),
        redis.grant(),
        redis.url(),
        redis.grant()
    ));
    let run = book.run(&["--format", "json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let json = run.json();
    let metric = |name: &str| crate::harness::metric(step(&json, "depth"), name);
    assert_eq!(metric("queue:default"), 7.0);
    assert_eq!(metric("queue:empty"), 0.0);
    assert_eq!(metric("artifacts.builders.pending"), 2.0);
    assert_eq!(metric("artifacts.builders.lag"), 3.0);
    assert_eq!(metric("depth"), 7.0);
    assert_eq!(step(&json, "depth")["status"], "warning", "7 > warn 5");
    assert_eq!(
        step(&json, "react")["skipped"],
        serde_json::Value::Null,
        "the when on a dotted metric name held"
    );
}

#[test]
fn a_crash_during_an_apply_keeps_the_audit_line_already_written() {
    let server = HttpServer::start(|_, _| Reply::new(202, "{}").after(Duration::from_secs(20)));
    let book = Book::new(&format!(
        "name: crash\nsteps:\n  - id: slow-action\n    uses: http-action\n    timeout: 30s\n    with:\n      url: {url}/slow\n    allow:\n      - {url}\n",
        url = server.url()
    ));
    let audit = book.audit();
    let mut child = spawn_run(&book, &["--apply", "--audit-log", audit.to_str().unwrap()]);
    // Wait until the apply is under way (the request reached the server), then kill -9.
    wait_for_request(&server);
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&audit).expect("the audit log exists");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["event"], "apply-started");
    assert_eq!(lines[0]["plan"]["summary"], format!("POST {}/slow", server.url()));
}

/// Sends SIGINT to a child, as Ctrl-C in its terminal would.
fn interrupt(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts `runbox run BOOK ARGS...` in the background (stdout and stderr to files in the
/// book's directory, so a full pipe cannot block it).
fn spawn_run(book: &Book, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_runbox"))
        .args(["--plugin-dir", crate::harness::plugin_dir().to_str().unwrap()])
        .args(["run", book.path.to_str().unwrap()])
        .args(args)
        .env("RUNBOX_CACHE_DIR", crate::harness::cache_dir())
        .stdout(std::fs::File::create(book.dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(book.dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap()
}

fn wait_for_request(server: &HttpServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.received().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never reached the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn audit_events(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("the audit log exists")
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The run's deadline stops a step blocked on the network and one busy computing, each
/// with a step timeout far beyond it; the report accounts for every step.
#[test]
fn the_run_deadline_stops_running_steps_and_the_report_accounts_for_every_step() {
    let server = HttpServer::start(|_, _| Reply::new(200, "late").after(Duration::from_secs(20)));
    let book = Book::new(&format!(
        "name: bounded\ntimeout: 1500ms\nsteps:\n  - id: slow\n    uses: http-health\n    timeout: 30s\n    with:\n      url: {url}/slow\n    allow:\n      - {url}\n  - id: spin\n    uses: {mischief}\n    timeout: 30s\n    with:\n      mode: loop\n  - id: after\n    uses: http-health\n    needs: slow\n    with:\n      url: {url}/after\n    allow:\n      - {url}\n",
        url = server.url(),
        mischief = crate::harness::plugin("mischief").display()
    ));
    let run = book.run(&["--format", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    let json = run.json();
    assert_eq!(json["stopped"], "the run's 1s 500ms deadline passed");
    for id in ["slow", "spin"] {
        let summary = step(&json, id)["summary"].as_str().unwrap().to_string();
        assert!(
            summary.starts_with("stopped after 1.") && summary.ends_with(": the run's 1s 500ms deadline passed"),
            "{id}: {summary}"
        );
        assert_eq!(step(&json, id)["status"], "unknown");
    }
    assert_eq!(
        step(&json, "after")["summary"],
        "skipped: not run: the run's 1s 500ms deadline passed"
    );
    // --timeout overrides the runbook's.
    let run = book.run(&["--timeout", "500ms", "--format", "json"]);
    assert_eq!(run.json()["stopped"], "the run's 500ms deadline passed", "{run:#?}");

    let bad = Book::new(
        "name: bad\ntimeout: soon\nsteps:\n  - id: a\n    uses: http-health\n    with:\n      url: http://127.0.0.1:9\n",
    );
    let run = runbox(&["validate", bad.path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("book.yaml:2: `timeout: soon` is not a duration"),
        "{}",
        run.stderr
    );
}

/// Ctrl-C during a check: the check is cancelled, the next step does not start, and the
/// report is still written (here to --output), with the reason.
#[test]
fn ctrl_c_stops_the_run_and_still_writes_the_report() {
    let server = HttpServer::start(|_, _| Reply::new(200, "late").after(Duration::from_secs(20)));
    let book = Book::new(&format!(
        "name: interrupted\nsteps:\n  - id: slow\n    uses: http-health\n    timeout: 30s\n    with:\n      url: {url}/slow\n    allow:\n      - {url}\n  - id: after\n    uses: http-health\n    needs: slow\n    with:\n      url: {url}/after\n    allow:\n      - {url}\n",
        url = server.url()
    ));
    let report = book.dir.path().join("report.json");
    let mut child = spawn_run(&book, &["--format", "json", "--output", report.to_str().unwrap()]);
    wait_for_request(&server);
    let interrupted = std::time::Instant::now();
    interrupt(&child);
    let status = child.wait().unwrap();
    assert!(
        interrupted.elapsed() < Duration::from_secs(3),
        "{:?}",
        interrupted.elapsed()
    );
    assert_eq!(status.code(), Some(3));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["stopped"], "interrupted (Ctrl-C)");
    assert_eq!(step(&json, "slow")["status"], "unknown");
    assert!(
        step(&json, "slow")["summary"]
            .as_str()
            .unwrap()
            .ends_with(": interrupted (Ctrl-C)"),
        "{json}"
    );
    assert_eq!(
        step(&json, "after")["summary"],
        "skipped: not run: interrupted (Ctrl-C)"
    );
    assert_eq!(server.received().len(), 1, "the next step started after Ctrl-C");
    let stderr = std::fs::read_to_string(book.dir.path().join("stderr")).unwrap();
    assert!(stderr.contains("runbox: stopping"), "{stderr}");
}

/// Ctrl-C during an apply lets the apply finish (a half-made change is worse) and audits
/// it as usual; a second Ctrl-C abandons it, and the audit log says so.
#[test]
fn ctrl_c_lets_a_running_apply_finish_and_a_second_one_abandons_it() {
    for (abandon, delay) in [(false, Duration::from_millis(1500)), (true, Duration::from_secs(20))] {
        let server = HttpServer::start(move |_, _| Reply::new(202, "{}").after(delay));
        let book = Book::new(&format!(
            "name: change\nsteps:\n  - id: replay\n    uses: http-action\n    timeout: 30s\n    with:\n      url: {url}/replay\n    allow:\n      - {url}\n",
            url = server.url()
        ));
        let audit = book.audit();
        let mut child = spawn_run(
            &book,
            &["--apply", "--format", "json", "--audit-log", audit.to_str().unwrap()],
        );
        wait_for_request(&server);
        interrupt(&child);
        if abandon {
            std::thread::sleep(Duration::from_millis(300));
            interrupt(&child);
        }
        let status = child.wait().unwrap();
        let stdout = std::fs::read_to_string(book.dir.path().join("stdout")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let replay = step(&json, "replay");
        if abandon {
            assert_eq!(status.code(), Some(3), "{json}");
            assert_eq!(audit_events(&audit), ["apply-started", "apply-abandoned"]);
            assert!(
                replay["summary"]
                    .as_str()
                    .unwrap()
                    .starts_with("apply abandoned by the operator after "),
                "{json}"
            );
        } else {
            assert_eq!(status.code(), Some(0), "{json}");
            assert_eq!(audit_events(&audit), ["apply-started", "apply-finished"]);
            assert_eq!(replay["applied"], true, "{json}");
            assert_eq!(json["stopped"], "interrupted (Ctrl-C)");
        }
    }
}

/// A hostile runbook file cannot exhaust runbox: endless or huge files, binary data, and
/// alias bombs are refused with the file named, before anything runs.
#[test]
fn hostile_runbook_files_are_refused_with_a_reason() {
    let run = runbox(&["validate", "/dev/zero"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr
            .contains("/dev/zero: cannot read the runbook: it is larger than 1024 KiB"),
        "{}",
        run.stderr
    );

    let mut bomb = String::from("name: bomb\na0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let items = vec![format!("*a{}", level - 1); 9].join(", ");
        bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    let book = Book::new(&bomb);
    let run = runbox(&["run", book.path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("expands to more than 100000 nodes"),
        "{}",
        run.stderr
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);

    let binary = Book::new("");
    std::fs::write(&binary.path, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let run = runbox(&["validate", binary.path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stderr.contains("it is not UTF-8 text"), "{}", run.stderr);
}
