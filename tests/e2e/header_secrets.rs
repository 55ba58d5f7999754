//! Secrets the plugin never sees: `${{ secrets.NAME }}` in a step's `with:` (or a `runbox
//! check --with`) stays a placeholder in the plugin's config, and the host puts the value
//! into the HTTP request headers the plugin sends to its granted destinations. The
//! plugin cannot read it (`host.secret`, a second name, an environment variable), cannot
//! have it put in a URL or a body, cannot send it to another host, and a server echoing
//! it back does not make runbox print it.

use crate::harness::{HttpServer, Received, Reply, Run, plugin, recording_listener, runbox_env};
use serde_json::{Value, json};
use std::time::Duration;

/// The header secret's value, in the environment of every run here.
const VALUE: &str = "hs-Tok3n-7f3a9c0e51d2";
const VAR: &str = "RUNBOX_TEST_HEADER_KEY";

/// Runs `runbox` at `-vv` (every capability decision and plugin log on stderr) with
/// `VAR=VALUE` and `env`, and asserts the value appears in none of its output.
fn runbox_secret(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["-vv"];
    all.extend_from_slice(args);
    let mut vars = vec![(VAR, VALUE)];
    vars.extend_from_slice(env);
    let run = runbox_env(&all, &vars);
    assert!(
        !run.stdout.contains(VALUE) && !run.stderr.contains(VALUE),
        "the header secret's value was printed: {run:#?}"
    );
    run
}

/// A runbook in a temp dir, run with [`runbox_secret`].
fn run_book(yaml: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("book.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut all = vec!["run", path.to_str().unwrap()];
    all.extend_from_slice(args);
    runbox_secret(&all, &[])
}

/// Every header value, path and body the server received that holds the value, as
/// `where` strings.
fn where_value_went(received: &[Received]) -> Vec<String> {
    let mut places = Vec::new();
    for request in received {
        if request.path.contains(VALUE) {
            places.push(format!("path {}", request.path));
        }
        if request.body.contains(VALUE) {
            places.push(format!("body of {}", request.path));
        }
        for (name, value) in &request.headers {
            if value.contains(VALUE) {
                places.push(format!("{} {name}: {value}", request.path));
            }
        }
    }
    places
}

/// A runbook step of `http-health` (a check) and one of `http-action` (a mitigation,
/// applied) with `${{ secrets.k }}` in their `headers:`: the server receives exactly the
/// value in those headers, and runbox's JSON output (and its `-vv` log) never holds it.
#[test]
fn a_runbook_step_sends_the_secret_in_its_headers_only() {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let url = server.url();
    let yaml = format!(
        r#"name: header-secrets
steps:
  - id: models
    uses: http-health
    with:
      url: {url}/v1/models
      headers: {{authorization: "Bearer ${{{{ secrets.k }}}}"}}
    secrets: {{k: env:{VAR}}}
    allow: [{url}]
  - id: replay
    uses: http-action
    needs: models
    with:
      url: {url}/replay
      method: POST
      headers: {{x-api-key: "${{{{secrets.k}}}}", x-plain: "no secret"}}
      body: "{{}}"
    secrets: {{k: env:{VAR}}}
    allow: [{url}]
"#
    );
    let run = run_book(&yaml, &["--apply", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let received = server.received();
    let models = received
        .iter()
        .find(|r| r.path == "/v1/models")
        .expect("GET /v1/models");
    assert_eq!(models.header("authorization"), Some(format!("Bearer {VALUE}").as_str()));
    let replay = received.iter().find(|r| r.path == "/replay").expect("POST /replay");
    assert_eq!(replay.method, "POST");
    assert_eq!(replay.header("x-api-key"), Some(VALUE));
    assert_eq!(replay.header("x-plain"), Some("no secret"));
    assert_eq!(replay.body, "{}");
    assert_eq!(
        where_value_went(&received),
        [
            format!("/v1/models authorization: Bearer {VALUE}"),
            format!("/replay x-api-key: {VALUE}")
        ]
    );
    let json = run.json();
    for step in json["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "ok", "{step}");
        assert_eq!(step["denied"], json!([]), "{step}");
    }
    // The plan shows the request as configured: the placeholder, not the value.
    assert!(run.stdout.contains("POST"), "{run:#?}");
}

/// `runbox check` takes the placeholder in a `--with` value, as a runbook's `with:` does,
/// and refuses one naming no `--secret` (exit 64, before anything runs).
#[test]
fn runbox_check_fills_a_with_placeholder_and_refuses_an_unknown_name() {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let url = format!("url={}/health", server.url());
    let headers = r#"headers={"authorization": "Bearer ${{ secrets.k }}"}"#;
    let secret = format!("k=env:{VAR}");
    let args = [
        "check",
        "http-health",
        "--with",
        &url,
        "--with",
        headers,
        "--allow",
        &server.url(),
        "--format",
        "json",
    ];
    let mut granted = args.to_vec();
    granted.extend(["--secret", &secret]);
    let run = runbox_secret(&granted, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        server.received()[0].header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );

    let run = runbox_secret(&args, &[]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(
            "the config uses `${{ secrets.k }}`, but no --secret grants `k`: add `--secret k=env:VAR` (or file:PATH)"
        ),
        "{run:#?}"
    );
    assert_eq!(server.received().len(), 1, "the refused check sent a request");
}

/// The steps of a hostile plugin (`mischief`, mode `header-secret`) against a step whose
/// header secret is `k`, with `plain` an ordinary secret it may read: what each attempt
/// got, the JSON result, and what the granted server and two ungranted listeners saw.
struct Attack {
    json: Value,
    received: Vec<Received>,
    elsewhere: Vec<Vec<u8>>,
}

fn attack(config: Value, extra: &[&str], env: &[(&str, &str)]) -> Attack {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let (other_ip, other_ip_bytes) = recording_listener("127.0.0.2");
    let (other_port, other_port_bytes) = recording_listener("127.0.0.1");
    let mut config = config;
    config["mode"] = json!("header-secret");
    config["url"] = json!(server.url());
    if config.get("header").is_some() {
        config["also"] = json!([
            format!("http://127.0.0.2:{other_ip}/x"),
            format!("http://127.0.0.1:{other_port}/x")
        ]);
    }
    let config = config.to_string();
    let mischief = plugin("mischief").display().to_string();
    let secret = format!("k=env:{VAR}");
    // GET, HEAD, OPTIONS and POST to the server (POST for the body attempt).
    let allow = format!("POST {}", server.url());
    let mut args = vec![
        "check",
        &mischief,
        "--config",
        &config,
        "--secret",
        &secret,
        "--secret",
        "plain=env:PLAIN",
        "--allow",
        &allow,
    ];
    args.extend_from_slice(extra);
    args.extend(["--format", "json"]);
    let mut vars = vec![("PLAIN", "plain-value")];
    vars.extend_from_slice(env);
    let run = runbox_secret(&args, &vars);
    // Whatever was sent has arrived by the time runbox has exited; give a stray
    // connection to an ungranted listener a moment all the same.
    std::thread::sleep(Duration::from_millis(200));
    Attack {
        json: run.json()["steps"][0].clone(),
        received: server.received(),
        elsewhere: vec![
            other_ip_bytes.lock().unwrap().clone(),
            other_port_bytes.lock().unwrap().clone(),
        ],
    }
}

impl Attack {
    fn details(&self) -> Vec<&str> {
        self.json["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line.as_str().unwrap())
            .collect()
    }

    fn denied(&self) -> Vec<&str> {
        self.json["denied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line.as_str().unwrap())
            .collect()
    }
}

/// A hostile plugin cannot read the header secret, cannot have it put anywhere but in a
/// header to its granted server, cannot make the host fill a placeholder for a secret
/// the step grants for reading (or grants not at all), and cannot send the placeholder
/// to another host: those requests are refused before anything is sent, and listed.
#[test]
fn a_hostile_plugin_gets_the_header_secret_only_into_its_granted_headers() {
    let attack = attack(
        json!({
            "header": "authorization",
            "value": "Bearer ${{ secrets.k }}",
            "secret": "k",
            "inline": "${{secrets.k}}",
            "compose": ["plain", "nope", "k"],
        }),
        &[],
        &[],
    );
    let details = attack.details();
    assert_eq!(
        details[..7],
        [
            "secret: none",
            "header: HTTP 200 ok",
            "url: HTTP 200 ok",
            "body: HTTP 200 ok",
            "composed plain: denied",
            "composed nope: denied",
            "composed k: HTTP 200 ok",
        ],
        "{:#}",
        attack.json
    );
    // The ungranted hosts: 127.0.0.2, and another port of 127.0.0.1.
    assert_eq!(details.len(), 9, "{details:#?}");
    assert!(details[7].starts_with("also http://127.0.0.2:") && details[7].ends_with(": denied"));
    assert!(details[8].starts_with("also http://127.0.0.1:") && details[8].ends_with(": denied"));
    // The value went into the two headers and nowhere else: the URL and the body carried
    // the placeholder's text.
    assert_eq!(
        where_value_went(&attack.received),
        [
            format!("/header authorization: Bearer {VALUE}"),
            format!("/composed x-composed: {VALUE}")
        ]
    );
    let inline = attack.received.iter().find(|r| r.path.starts_with("/inline/")).unwrap();
    assert_eq!(inline.path, "/inline/${{secrets.k}}?q=${{secrets.k}}");
    let body = attack.received.iter().find(|r| r.path == "/body").unwrap();
    assert_eq!(body.body, "body ${{secrets.k}}");
    assert_eq!(attack.received.len(), 4, "{:#?}", attack.received);
    assert_eq!(
        attack.elsewhere,
        [Vec::<u8>::new(), Vec::new()],
        "an ungranted host received bytes"
    );

    let denied = attack.denied();
    let has = |text: &str| denied.iter().any(|line| line.contains(text));
    assert!(
        has("secret `k` denied: it holds a secret the host puts in the step's HTTP request headers"),
        "{denied:#?}"
    );
    assert!(
        has(
            "with `${{ secrets.plain }}` in header `x-composed` denied: secret `plain` is granted for the plugin to read, not for the host to put in HTTP headers — write `${{ secrets.plain }}` in the step's `with:`"
        ),
        "{denied:#?}"
    );
    assert!(
        has(
            "with `${{ secrets.nope }}` in header `x-composed` denied: the step grants no secret `nope` for the host to put in HTTP headers — grant it under the step's `secrets:`"
        ),
        "{denied:#?}"
    );
    assert!(has("HTTP request to http://127.0.0.2:"), "{denied:#?}");
    assert_eq!(denied.len(), 5, "{denied:#?}");
}

/// A header secret whose value would end the header (CR LF and a header of its own, or
/// any control character) is never sent: the request is refused, listed without the
/// value, and the server receives nothing.
#[test]
fn a_secret_a_header_cannot_carry_is_not_sent() {
    let server = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let mischief = plugin("mischief").display().to_string();
    let config = json!({
        "mode": "header-secret",
        "url": server.url(),
        "header": "authorization",
        "value": "Bearer ${{ secrets.crlf }}",
    })
    .to_string();
    let run = runbox_secret(
        &[
            "check",
            &mischief,
            "--config",
            &config,
            "--secret",
            "crlf=env:CRLF",
            "--allow",
            &server.url(),
            "--format",
            "json",
        ],
        &[("CRLF", "tok-X9\r\nx-injected: yes")],
    );
    let step = &run.json()["steps"][0];
    assert_eq!(step["details"], json!(["header: denied"]), "{run:#?}");
    let denied = step["denied"].to_string();
    assert!(
        denied.contains("the value of secret `crlf` holds a control character (CR, LF, NUL, ...), which an HTTP header cannot carry; nothing was sent"),
        "{denied}"
    );
    assert!(
        !run.stdout.contains("x-injected") && !run.stderr.contains("tok-X9"),
        "{run:#?}"
    );
    assert!(server.received().is_empty(), "{:#?}", server.received());
}

/// The header secret's source granted again under a second name, another secret
/// holding it, or an environment variable holding it (equal, or inside a longer value):
/// all withheld, because what decides is the value. Without the placeholder, the same
/// grants are the plugin's as before.
#[test]
fn a_second_name_or_a_variable_holding_the_value_is_withheld_too() {
    let copy = format!("copy=env:{VAR}");
    let wrapped = format!("user:{VALUE}");
    let extra = [
        "--secret",
        &copy,
        "--secret",
        "wrapped=env:WRAPPED",
        "--env",
        VAR,
        "--env",
        "WRAPPED",
        "--env",
        "OTHER=visible",
    ];
    let env = [("WRAPPED", wrapped.as_str())];
    for name in ["copy", "wrapped", "k"] {
        // The placeholder in the config makes `k` a header secret; no request is sent.
        let config = json!({"secret": name, "value": "Bearer ${{ secrets.k }}"});
        let attack = attack(config, &extra, &env);
        assert_eq!(attack.details(), ["secret: none"], "{name}: {:#}", attack.json);
        let denied = attack.denied();
        assert!(
            denied.iter().any(|line| line.contains(&format!(
                "secret `{name}` denied: it holds a secret the host puts in the step's HTTP request headers"
            ))),
            "{name}: {denied:#?}"
        );
    }
    // The environment: only OTHER. The `k` placeholder sits in the config, unused, so `k`
    // is a header secret as in the runs above.
    let mischief = plugin("mischief").display().to_string();
    let config = json!({"mode": "env", "target": "${{ secrets.k }}"}).to_string();
    let secret = format!("k=env:{VAR}");
    let mut args = vec!["check", &mischief, "--config", &config, "--secret", &secret];
    args.extend_from_slice(&extra);
    args.extend(["--format", "json"]);
    let run = runbox_secret(&args, &env);
    let summary = run.json()["steps"][0]["summary"].as_str().unwrap().to_string();
    assert!(summary.contains("OTHER"), "{run:#?}");
    assert!(!summary.contains(VAR) && !summary.contains("WRAPPED"), "{run:#?}");

    // No placeholder: `k` is an ordinary secret, and the plugin reads it (redacted in output).
    let config = json!({"mode": "secret", "target": "copy"}).to_string();
    let mut args = vec!["check", &mischief, "--config", &config, "--secret", &secret];
    args.extend_from_slice(&extra);
    args.extend(["--format", "json"]);
    let run = runbox_secret(&args, &env);
    assert_eq!(run.json()["steps"][0]["summary"], "secret is [REDACTED]", "{run:#?}");
}

/// A server that echoes the Authorization header into its body hands the value back to
/// the plugin (the documented limit: grant only hosts you would give the key to); what
/// the plugin then reports is redacted in every format runbox writes.
#[test]
fn an_echoed_secret_is_redacted_from_every_output() {
    let server = HttpServer::start(|request, _| {
        let echo = format!("you sent {}", request.header("authorization").unwrap_or("nothing"));
        Reply::new(if request.path == "/health" { 503 } else { 200 }, &echo)
    });
    let url = server.url();
    let mischief = plugin("mischief").display().to_string();
    let yaml = format!(
        r#"name: echo
steps:
  - id: health
    uses: http-health
    with:
      url: {url}/health
      headers: {{authorization: "Bearer ${{{{ secrets.k }}}}"}}
    secrets: {{k: env:{VAR}}}
    allow: [{url}]
  - id: hostile
    uses: {mischief}
    with:
      mode: header-secret
      url: {url}
      header: authorization
      value: "${{{{ secrets.k }}}}"
    secrets: {{k: env:{VAR}}}
    allow: [{url}]
"#
    );
    for format in ["json", "human", "markdown", "nagios", "junit", "prometheus"] {
        let run = run_book(&yaml, &["--format", format]);
        // The plugin's summary holds the echo (Prometheus writes no summaries).
        if format != "prometheus" {
            let echo = match format {
                "markdown" => r"header: HTTP 200 you sent \[REDACTED\]",
                _ => "header: HTTP 200 you sent [REDACTED]",
            };
            assert!(run.stdout.contains(echo), "{format}: {run:#?}");
        }
        if format == "json" {
            // http-health's detail of an unexpected status quotes the body.
            assert!(run.stdout.contains("body: you sent Bearer [REDACTED]"), "{run:#?}");
        }
    }
    let echoes: Vec<String> = server
        .received()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert!(echoes.iter().all(|value| value.ends_with(VALUE)), "{echoes:?}");
    assert_eq!(echoes.len(), 12);
}
