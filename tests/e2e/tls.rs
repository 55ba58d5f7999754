//! TLS everywhere, end to end: `rediss://`, PostgreSQL's SSLRequest with every
//! `sslmode`, HTTPS through wasi:http, mutual TLS with the client key from a secret,
//! `tls:` in runbooks, and the `tls-cert` check on every scheme, through the real
//! `runbox` binary against servers on other TLS stacks (redis-server, PostgreSQL,
//! Python's ssl and aiosmtpd: see `tls_servers`), with certificates minted per test.
//!
//! runbox's trust is the system's roots plus the step's CA files; `SSL_CERT_FILE` and
//! friends are taken out of its environment, so the test CAs are trusted only where a
//! test says `--ca` (or `tls: {ca: …}`).

use crate::harness::{PgTls, Postgres, Run, runbox_env_without};
use crate::tls_servers::{Leaf, Pki, Purpose, PyTls, TlsRedis, Validity, tls_only_postgres};
use serde_json::Value;
use std::path::Path;

/// Settings of the machine running the tests that must not leak into them.
const NOT_INHERITED: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SSL_CERT_DIR",
    "SSL_CERT_FILE",
];

/// Runs `runbox` with `args`.
fn runbox(args: &[&str]) -> Run {
    runbox_env_without(args, &[], NOT_INHERITED)
}

/// `runbox check PLUGIN --with url=URL --allow GRANT ARGS… --format json`.
fn check(plugin: &str, url: &str, grant: &str, args: &[&str]) -> Run {
    let url = format!("url={url}");
    let mut all = vec!["check", plugin, "--with", &url, "--allow", grant, "--format", "json"];
    all.extend(args);
    runbox(&all)
}

/// `--ca FILE`.
fn ca(file: &Path) -> [&str; 2] {
    ["--ca", file.to_str().unwrap()]
}

/// The first (only) step of a JSON result.
fn step(run: &Run) -> Value {
    run.json()["steps"][0].clone()
}

/// Summary, details and denials of the first step, in one string, for `contains`.
fn said(run: &Run) -> String {
    let step = step(run);
    format!("{} | {} | {}", step["summary"], step["details"], step["denied"])
}

/// The value of metric `name` of the first step.
/// Asserts the exit code and the JSON status of `run`.
#[track_caller]
fn assert_status(run: &Run, code: i32, status: &str) {
    assert_eq!(run.code, code, "{run:#?}");
    assert_eq!(run.json()["status"], status, "{run:#?}");
}

/// Asserts that the first step's summary, details or denials contain `text`.
#[track_caller]
fn assert_says(run: &Run, text: &str) {
    assert!(said(run).contains(text), "expected {text:?} in: {run:#?}");
}

/// Asserts that the first step is UNKNOWN for a denial that names `naming`.
#[track_caller]
fn assert_denied(run: &Run, naming: &str) {
    assert_status(run, 3, "unknown");
    let step = step(run);
    let denied = step["denied"].as_array().unwrap();
    assert!(!denied.is_empty(), "{run:#?}");
    assert!(
        denied.iter().any(|d| d.as_str().unwrap().contains(naming)),
        "no denial names {naming:?}: {run:#?}"
    );
}

// ---------------------------------------------------------------------------------
// redis-ping over rediss://

#[test]
fn redis_ping_over_rediss_with_the_step_ca_is_ok() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, false);
    let run = check(
        "redis-ping",
        &redis.url("127.0.0.1"),
        &redis.grant(),
        &ca(&pki.ca.pem_file),
    );
    assert_status(&run, 0, "ok");
    let summary = step(&run)["summary"].as_str().unwrap().to_string();
    assert!(
        summary.starts_with(&format!("PONG from {}", redis.url("127.0.0.1"))),
        "{summary}"
    );
    assert!(step(&run)["denied"].as_array().unwrap().is_empty(), "{run:#?}");
    // By name: the certificate's DNS name is verified, the name granted.
    let run = check(
        "redis-ping",
        &redis.url("localhost"),
        &format!("tcp://localhost:{}", redis.port),
        &ca(&pki.ca.pem_file),
    );
    assert_status(&run, 0, "ok");
    // Several CA files: the one that signed the server's certificate may come second.
    let mut args = ca(&pki.other_ca.pem_file).to_vec();
    args.extend(ca(&pki.ca.pem_file));
    let run = check("redis-ping", &redis.url("127.0.0.1"), &redis.grant(), &args);
    assert_status(&run, 0, "ok");
}

#[test]
fn an_untrusted_redis_is_critical_naming_the_unknown_issuer() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, false);
    // Neither the system's roots nor another CA vouch for the server's certificate.
    for args in [&[][..], &ca(&pki.other_ca.pem_file)[..]] {
        let run = check("redis-ping", &redis.url("127.0.0.1"), &redis.grant(), args);
        assert_status(&run, 2, "critical");
        assert_says(&run, "unknown issuer");
    }
}

#[test]
fn expired_not_yet_valid_and_misnamed_redis_certificates_are_critical_naming_why() {
    let pki = Pki::new();
    let mut redis = TlsRedis::start(&pki, &pki.server_cert("expired", Validity::expired()), false);
    let url = redis.url("127.0.0.1");
    let run = check("redis-ping", &url, &redis.grant(), &ca(&pki.ca.pem_file));
    assert_status(&run, 2, "critical");
    assert_says(&run, "certificate expired");

    redis.restart_with(&pki.server_cert("future", Validity::not_yet_valid()));
    let run = check("redis-ping", &url, &redis.grant(), &ca(&pki.ca.pem_file));
    assert_status(&run, 2, "critical");
    assert_says(&run, "certificate not yet valid");

    let misnamed = pki
        .ca
        .leaf("misnamed", &["db.example.com"], Validity::days(90), Purpose::Server);
    redis.restart_with(&misnamed);
    let run = check("redis-ping", &url, &redis.grant(), &ca(&pki.ca.pem_file));
    assert_status(&run, 2, "critical");
    assert_says(&run, "name mismatch");

    // And back to a good certificate on the same port: the same command is OK.
    redis.restart_with(&pki.server);
    let run = check("redis-ping", &url, &redis.grant(), &ca(&pki.ca.pem_file));
    assert_status(&run, 0, "ok");
}

#[test]
fn a_server_name_no_grant_covers_is_denied_and_the_server_sees_no_client() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, false);
    let before = redis.accepted();
    // The name is not granted (only the address is).
    let run = check(
        "redis-ping",
        &redis.url("localhost"),
        &redis.grant(),
        &ca(&pki.ca.pem_file),
    );
    assert_denied(&run, "localhost");
    // A grant for another host.
    let run = check(
        "redis-ping",
        &redis.url("127.0.0.1"),
        &format!("tcp://127.0.0.2:{}", redis.port),
        &ca(&pki.ca.pem_file),
    );
    assert_denied(&run, "127.0.0.1");
    assert_eq!(redis.accepted(), before, "runbox reached redis: {}", redis.log());

    // The same through tls-cert, to a server that logs every byte it receives.
    let server = PyTls::https(&pki.server, None);
    let run = check(
        "tls-cert",
        &format!("tls://localhost:{}", server.port),
        &format!("tcp://127.0.0.1:{}", server.port),
        &ca(&pki.ca.pem_file),
    );
    assert_denied(&run, "localhost");
    assert!(
        server.events().is_empty(),
        "the server saw a client: {:?}",
        server.events()
    );
}

#[test]
fn a_tls_server_name_may_be_an_address_a_granted_name_resolved_to() {
    // `localhost` is granted and resolves to 127.0.0.1, so the connect to 127.0.0.1 is
    // allowed, and so is the server name `127.0.0.1` (the host's rule: a granted name,
    // an address a grant covers, or an address a granted name resolved to).
    let pki = Pki::new();
    let server = PyTls::https(&pki.server, None);
    let run = check(
        "tls-cert",
        &format!("tls://127.0.0.1:{}", server.port),
        &format!("tcp://localhost:{}", server.port),
        &ca(&pki.ca.pem_file),
    );
    assert_status(&run, 0, "ok");
    assert!(
        server.events().iter().any(|e| e == "handshake-ok"),
        "{:?}",
        server.events()
    );
}

#[test]
fn mutual_tls_redis_takes_the_client_certificate_from_files_or_a_secret() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, true);
    let url = redis.url("127.0.0.1");
    let (cert, key) = (
        pki.client.cert_file.to_str().unwrap(),
        pki.client.key_file.to_str().unwrap(),
    );
    let mut args = ca(&pki.ca.pem_file).to_vec();
    args.extend(["--client-cert", cert, "--client-key", key]);
    let run = check("redis-ping", &url, &redis.grant(), &args);
    assert_status(&run, 0, "ok");

    // Without one, the server refuses the handshake: CRITICAL, and it says why.
    let run = check("redis-ping", &url, &redis.grant(), &ca(&pki.ca.pem_file));
    assert_status(&run, 2, "critical");
    assert_says(&run, "client certificate");

    // The key from a granted secret; it never reaches the output, even verbose.
    let secret = format!("key=file:{key}");
    let mut args = vec!["-v", "check", "redis-ping", "--with"];
    let with_url = format!("url={url}");
    let grant = redis.grant();
    args.extend([with_url.as_str(), "--allow", &grant, "--format", "json"]);
    args.extend(ca(&pki.ca.pem_file));
    args.extend(["--secret", &secret, "--client-cert", cert, "--client-key", "secret:key"]);
    let run = runbox(&args);
    assert_status(&run, 0, "ok");
    let pem = std::fs::read_to_string(&pki.client.key_file).unwrap();
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    for line in pem.lines().filter(|line| !line.starts_with("-----")) {
        assert!(
            !run.stdout.contains(line) && !run.stderr.contains(line),
            "the key leaked: {run:#?}"
        );
    }
    assert!(!run.stdout.contains(&body) && !run.stderr.contains(&body));
}

#[test]
fn queue_depth_and_a_flag_mitigation_work_over_rediss() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, false);
    let ca = pki.ca.pem_file.to_str().unwrap();
    let pushed = redis.redis_cli(&["--cacert", ca], false, &["RPUSH", "queue:default", "a", "b", "c"]);
    assert_eq!(String::from_utf8_lossy(&pushed.stdout).trim(), "3", "{pushed:?}");

    let book = Book::new(&pki);
    let path = book.write(&format!(
        "name: queue
steps:
  - id: depth
    uses: redis-queue-depth
    with:
      url: \"{url}\"
      lists: [queue:default]
    allow: [\"{grant}\"]
    tls: {{ca: certs/ca.pem}}
  - id: pause
    uses: redis-flag
    needs: depth
    approval: required
    with:
      url: \"{url}\"
      key: queue:paused
    allow: [\"{grant}\"]
    tls: {{ca: certs/ca.pem}}
",
        url = redis.url("localhost"),
        grant = format!("tcp://localhost:{}", redis.port),
    ));
    let run = runbox(&["run", &path, "--apply", "--approve", "pause", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json();
    let depth = step_of(&json, "depth");
    let metrics = depth["metrics"].as_array().unwrap();
    let list = metrics
        .iter()
        .find(|m| m["name"] == "queue:default")
        .unwrap_or_else(|| panic!("{depth}"));
    assert_eq!(list["value"], 3.0, "{depth}");
    assert_eq!(step_of(&json, "pause")["applied"], true, "{run:#?}");
    let flag = redis.redis_cli(&["--cacert", ca], false, &["GET", "queue:paused"]);
    assert_eq!(String::from_utf8_lossy(&flag.stdout).trim(), "1", "{flag:?}");
}

#[test]
fn unreadable_tls_files_and_half_a_client_identity_are_invalid_input() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, false);
    let url = redis.url("127.0.0.1");
    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "not a certificate\n").unwrap();
    let cert = pki.client.cert_file.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--ca", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
        (
            &["--ca", not_pem.path().to_str().unwrap()],
            not_pem.path().to_str().unwrap(),
        ),
        (&["--client-cert", cert], "--client-key"),
        (
            &["--client-key", pki.client.key_file.to_str().unwrap()],
            "--client-cert",
        ),
    ];
    let before = redis.accepted();
    for (args, named) in cases {
        let run = check("redis-ping", &url, &redis.grant(), args);
        assert_eq!(run.code, 64, "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains(named),
            "{args:?}: the error does not name {named:?}: {run:#?}"
        );
    }
    assert_eq!(redis.accepted(), before, "invalid input reached the server");
}

#[test]
fn a_client_certificate_the_server_refuses_is_critical_naming_it() {
    // The server (OpenSSL, TLS 1.3) refuses a certificate from a CA it does not trust
    // with an alert after the client's Finished: the failure comes on the first read.
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, true);
    let stranger = pki.other_ca.leaf(
        "stranger",
        &["runbox-e2e-stranger"],
        Validity::days(90),
        Purpose::Client,
    );
    let mut args = ca(&pki.ca.pem_file).to_vec();
    args.extend([
        "--client-cert",
        stranger.cert_file.to_str().unwrap(),
        "--client-key",
        stranger.key_file.to_str().unwrap(),
    ]);
    let run = check("redis-ping", &redis.url("127.0.0.1"), &redis.grant(), &args);
    assert_status(&run, 2, "critical");
    assert_says(&run, "client certificate");
}

// ---------------------------------------------------------------------------------
// PostgreSQL: SSLRequest and sslmode

fn pg_check(pg: &Postgres, host: &str, sslmode: &str, args: &[&str]) -> Run {
    let url = format!("postgres://trust_user@{host}:{}/app?sslmode={sslmode}", pg.port);
    check("pg-dangling-metadata", &url, &format!("tcp://{host}:{}", pg.port), args)
}

#[test]
fn pg_over_tls_with_verify_full_counts_and_plaintext_is_refused_by_the_server() {
    let pki = Pki::new();
    let pg = tls_only_postgres(&pki.server);
    let trust = ca(&pki.ca.pem_file);
    for (host, sslmode) in [
        ("localhost", "verify-full"),
        ("127.0.0.1", "verify-full"),
        ("localhost", "verify-ca"),
        ("localhost", "require"),
        ("localhost", "prefer"),
    ] {
        let run = pg_check(&pg, host, sslmode, &trust);
        assert_eq!(run.code, 0, "{host} {sslmode}: {run:#?}");
        assert_eq!(run.metric("dangling"), 7.0, "{host} {sslmode}");
    }
    // The host verifies whenever TLS is used, `require` included: without the CA the
    // chain leads nowhere.
    for sslmode in ["require", "verify-ca", "verify-full"] {
        let run = pg_check(&pg, "localhost", sslmode, &[]);
        assert_status(&run, 2, "critical");
        assert_says(&run, "unknown issuer");
    }
    // Plaintext: the server has only `hostssl` lines and refuses the connection.
    let before = pg.connections_received();
    let run = pg_check(&pg, "localhost", "disable", &trust);
    assert_status(&run, 2, "critical");
    assert!(
        pg.connections_received() > before,
        "the server saw no plaintext attempt"
    );
    let summary = step(&run)["summary"].as_str().unwrap().to_string();
    assert!(
        summary.contains("TLS") || summary.contains("no encryption"),
        "the refusal does not say plaintext was the problem: {summary}"
    );
    assert!(pg.log().contains("no encryption"), "{}", pg.log());
}

#[test]
fn pg_sslmode_require_needs_a_tls_server_and_prefer_falls_back() {
    let pki = Pki::new();
    let pg = Postgres::start_with(PgTls::Off);
    let trust = ca(&pki.ca.pem_file);
    for sslmode in ["require", "verify-ca", "verify-full"] {
        let run = pg_check(&pg, "127.0.0.1", sslmode, &trust);
        assert_status(&run, 2, "critical");
        let summary = step(&run)["summary"].as_str().unwrap().to_string();
        assert!(
            summary.contains("TLS") || summary.contains("SSL"),
            "{sslmode}: the failure does not say the server has no TLS: {summary}"
        );
    }
    // The server answered 'N' to the SSLRequest: `prefer` goes on in plaintext.
    for sslmode in ["prefer", "disable"] {
        let run = pg_check(&pg, "127.0.0.1", sslmode, &trust);
        assert_eq!(run.code, 0, "{sslmode}: {run:#?}");
        assert_eq!(run.metric("dangling"), 7.0);
    }
}

#[test]
fn pg_prefer_does_not_fall_back_to_plaintext_when_tls_fails() {
    // The server speaks TLS and takes plaintext too, but runbox does not trust its
    // certificate: `prefer` must fail, not retry in plaintext (only an 'N' to the
    // SSLRequest allows plaintext).
    let pki = Pki::new();
    let pg = Postgres::start_with(PgTls::Also {
        cert: &pki.server.cert_file,
        key: &pki.server.key_file,
    });
    let authorized = |pg: &Postgres| pg.log().matches("connection authorized: user=trust_user").count();
    let run = pg_check(&pg, "127.0.0.1", "disable", &[]);
    assert_eq!(run.code, 0, "plaintext works on this server: {run:#?}");
    let before = authorized(&pg);
    let run = pg_check(&pg, "127.0.0.1", "prefer", &[]);
    assert_status(&run, 2, "critical");
    assert_says(&run, "unknown issuer");
    assert_eq!(authorized(&pg), before, "prefer went on in plaintext: {}", pg.log());
    let run = pg_check(&pg, "127.0.0.1", "prefer", &ca(&pki.ca.pem_file));
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        pg.log().lines().last().is_some_and(|line| line.contains("SSL enabled")),
        "prefer with the CA did not use TLS: {}",
        pg.log()
    );
}

// ---------------------------------------------------------------------------------
// HTTPS through wasi:http

#[test]
fn http_health_over_https_uses_the_step_trust() {
    let pki = Pki::new();
    let server = PyTls::https(&pki.server, None);
    let url = format!("https://localhost:{}/health", server.port);
    let grant = format!("https://localhost:{}", server.port);
    let run = check("http-health", &url, &grant, &ca(&pki.ca.pem_file));
    assert_status(&run, 0, "ok");
    assert!(
        server.events().contains(&"request GET /health".to_string()),
        "{:?}",
        server.events()
    );
    // Without the step's CA (or with another), the handshake fails on the certificate.
    for args in [&[][..], &ca(&pki.other_ca.pem_file)[..]] {
        let run = check("http-health", &url, &grant, args);
        assert!(matches!(run.code, 2 | 3), "{run:#?}");
        assert!(said(&run).to_lowercase().contains("certificate"), "{run:#?}");
    }
    assert_eq!(
        server.events().iter().filter(|e| e.starts_with("request")).count(),
        1,
        "a request went through an untrusted connection: {:?}",
        server.events()
    );
}

#[test]
fn http_health_presents_the_client_certificate_over_https() {
    let pki = Pki::new();
    let server = PyTls::https(&pki.server, Some(&pki.client_ca.pem_file));
    let url = format!("https://127.0.0.1:{}/health", server.port);
    let grant = format!("https://127.0.0.1:{}", server.port);
    let mut args = ca(&pki.ca.pem_file).to_vec();
    args.extend([
        "--client-cert",
        pki.client.cert_file.to_str().unwrap(),
        "--client-key",
        pki.client.key_file.to_str().unwrap(),
    ]);
    let run = check("http-health", &url, &grant, &args);
    assert_status(&run, 0, "ok");
    assert!(
        server
            .events()
            .contains(&"handshake-ok client=runbox-e2e-client".to_string()),
        "{:?}",
        server.events()
    );
    let run = check("http-health", &url, &grant, &ca(&pki.ca.pem_file));
    assert!(matches!(run.code, 2 | 3), "{run:#?}");
    assert!(
        server
            .events()
            .iter()
            .all(|e| !e.starts_with("request") || e == "request GET /health"),
        "{:?}",
        server.events()
    );
}

#[test]
fn https_failures_name_the_tls_reason() {
    // What the host saw in the handshake (runbox:tls/handshakes) reaches the result of
    // an https check, as it does for wasi:tls ones.
    let pki = Pki::new();
    let server = PyTls::https(&pki.server, None);
    let url = format!("https://localhost:{}/health", server.port);
    let grant = format!("https://localhost:{}", server.port);
    let run = check("http-health", &url, &grant, &[]);
    assert_says(&run, "unknown issuer");

    let expired = PyTls::https(&pki.server_cert("expired", Validity::expired()), None);
    let url = format!("https://localhost:{}/health", expired.port);
    let grant = format!("https://localhost:{}", expired.port);
    let run = check("http-health", &url, &grant, &ca(&pki.ca.pem_file));
    assert_says(&run, "certificate expired");

    let mutual = PyTls::https(&pki.server, Some(&pki.client_ca.pem_file));
    let url = format!("https://localhost:{}/health", mutual.port);
    let grant = format!("https://localhost:{}", mutual.port);
    let run = check("http-health", &url, &grant, &ca(&pki.ca.pem_file));
    assert_says(&run, "client certificate");
}

// ---------------------------------------------------------------------------------
// Runbooks: `tls:` on a step

/// A runbook in a temp dir, with the CA and the client certificate copied under `certs/`.
struct Book {
    dir: tempfile::TempDir,
}

impl Book {
    fn new(pki: &Pki) -> Book {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::copy(&pki.ca.pem_file, certs.join("ca.pem")).unwrap();
        std::fs::copy(&pki.other_ca.pem_file, certs.join("other-ca.pem")).unwrap();
        std::fs::copy(&pki.client.cert_file, certs.join("client.crt")).unwrap();
        Book { dir }
    }

    fn write(&self, yaml: &str) -> String {
        let path = self.dir.path().join("book.yaml");
        std::fs::write(&path, yaml).unwrap();
        path.to_str().unwrap().to_string()
    }
}

fn step_of<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}: {json}"))
}

/// A runbook's own `tls:` is the trust of every step without one; a step's `tls:`
/// replaces it whole; a missing CA file in it is reported once, at its line.
#[test]
fn a_runbook_tls_default_serves_every_step_without_its_own() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, false);
    let book = Book::new(&pki);
    let steps = format!(
        "steps:
  - id: inherits
    uses: redis-ping
    with: {{url: \"{url}\"}}
    allow: [\"{grant}\"]
  - id: own
    uses: redis-ping
    with: {{url: \"{url}\"}}
    allow: [\"{grant}\"]
    tls: {{ca: certs/other-ca.pem}}
",
        url = redis.url("127.0.0.1"),
        grant = redis.grant()
    );
    let path = book.write(&format!("name: tls-default\ntls: {{ca: certs/ca.pem}}\n{steps}"));
    let run = runbox(&["run", &path, "--format", "json"]);
    let json = run.json();
    assert_eq!(step_of(&json, "inherits")["status"], "ok", "{run:#?}");
    let own = step_of(&json, "own");
    assert_eq!(own["status"], "critical", "{run:#?}");
    assert!(own.to_string().contains("unknown issuer"), "{own}");

    let path = book.write(&format!("name: tls-default\ntls: {{ca: certs/missing.pem}}\n{steps}"));
    let validate = runbox(&["validate", &path]);
    assert_eq!(validate.code, 64, "{validate:#?}");
    assert_eq!(validate.stderr.matches("missing.pem").count(), 1, "{validate:#?}");
    assert!(
        validate.stderr.contains(":2:"),
        "the runbook's `tls:` line: {validate:#?}"
    );
}

#[test]
fn a_runbook_step_trusts_its_ca_files_relative_to_the_runbook() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server, false);
    let mutual = TlsRedis::start(&pki, &pki.server, true);
    let https = PyTls::https(&pki.server, None);
    let book = Book::new(&pki);
    let key = pki.client.key_file.display();
    let path = book.write(&format!(
        "name: tls\nsteps:
  - id: redis
    uses: redis-ping
    with: {{url: \"{redis_url}\"}}
    allow: [\"{redis_grant}\"]
    tls: {{ca: certs/ca.pem}}
  - id: two-cas
    uses: redis-ping
    with: {{url: \"{redis_url}\"}}
    allow: [\"{redis_grant}\"]
    tls:
      ca: [certs/other-ca.pem, certs/ca.pem]
  - id: untrusted
    uses: redis-ping
    with: {{url: \"{redis_url}\"}}
    allow: [\"{redis_grant}\"]
    tls: {{ca: certs/other-ca.pem}}
  - id: https
    uses: http-health
    with: {{url: \"https://localhost:{https_port}/health\"}}
    allow: [\"https://localhost:{https_port}\"]
    tls: {{ca: certs/ca.pem}}
  - id: mutual
    uses: redis-ping
    with: {{url: \"{mutual_url}\"}}
    allow: [\"{mutual_grant}\"]
    secrets:
      client_key: file:{key}
    tls:
      ca: certs/ca.pem
      client_cert: certs/client.crt
      client_key: {{secret: client_key}}
",
        redis_url = redis.url("127.0.0.1"),
        redis_grant = redis.grant(),
        https_port = https.port,
        mutual_url = mutual.url("127.0.0.1"),
        mutual_grant = mutual.grant(),
    ));
    // Run from another directory than the runbook's: the paths are the runbook's.
    let run = runbox(&["run", &path, "--format", "json"]);
    let json = run.json();
    for id in ["redis", "two-cas", "https", "mutual"] {
        assert_eq!(step_of(&json, id)["status"], "ok", "{id}: {run:#?}");
    }
    let untrusted = step_of(&json, "untrusted");
    assert_eq!(untrusted["status"], "critical", "{run:#?}");
    assert!(untrusted.to_string().contains("unknown issuer"), "{untrusted}");
    assert_eq!(run.code, 2, "{run:#?}");

    let validate = runbox(&["validate", &path]);
    assert_eq!(validate.code, 0, "{validate:#?}");
    assert!(!validate.stdout.contains("warning"), "{validate:#?}");
    assert!(!validate.stderr.contains("warning"), "{validate:#?}");

    // A CA file that does not exist is a validation error naming the step and the file.
    let path = book.write(&format!(
        "name: tls\nsteps:\n  - id: redis\n    uses: redis-ping\n    with: {{url: \"{}\"}}\n    allow: [\"{}\"]\n    tls: {{ca: certs/missing.pem}}\n",
        redis.url("127.0.0.1"),
        redis.grant()
    ));
    let validate = runbox(&["validate", &path]);
    assert_eq!(validate.code, 64, "{validate:#?}");
    assert!(
        validate.stderr.contains("redis") && validate.stderr.contains("missing.pem"),
        "{validate:#?}"
    );
}

#[test]
fn verify_false_connects_says_so_and_validate_warns() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server_cert("expired", Validity::expired()), false);
    let book = Book::new(&pki);
    let path = book.write(&format!(
        "name: insecure\nsteps:\n  - id: redis\n    uses: redis-ping\n    with: {{url: \"{}\"}}\n    allow: [\"{}\"]\n    tls: {{verify: false}}\n",
        redis.url("127.0.0.1"),
        redis.grant()
    ));
    let run = runbox(&["run", &path, "--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json();
    let step = step_of(&json, "redis");
    assert_eq!(step["status"], "ok", "{run:#?}");
    let details = step["details"].to_string().to_lowercase();
    assert!(
        details.contains("verification") && details.contains("off"),
        "the details do not say verification was off: {step}"
    );

    let validate = runbox(&["validate", &path]);
    assert_eq!(validate.code, 0, "{validate:#?}");
    let warning = validate
        .stdout
        .lines()
        .find(|line| line.trim_start().starts_with("warning:"))
        .unwrap_or_else(|| panic!("validate does not warn: {validate:#?}"));
    assert!(
        warning.contains("step `redis`") && warning.contains("verification is off"),
        "{warning}"
    );
}

#[test]
fn tls_no_verify_on_the_command_line_says_verification_was_off() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server_cert("expired", Validity::expired()), false);
    let run = check(
        "redis-ping",
        &redis.url("127.0.0.1"),
        &redis.grant(),
        &["--tls-no-verify"],
    );
    assert_status(&run, 0, "ok");
    let details = step(&run)["details"].to_string().to_lowercase();
    assert!(details.contains("verification") && details.contains("off"), "{run:#?}");
}

// ---------------------------------------------------------------------------------
// tls-cert

/// tls-cert against a Python TLS server presenting `leaf`, through `tls://localhost`.
fn tls_cert_on(pki: &Pki, leaf: &Leaf, with: &[&str], trusted: bool) -> Run {
    let server = PyTls::https(leaf, None);
    let url = format!("tls://localhost:{}", server.port);
    let grant = format!("tcp://localhost:{}", server.port);
    let mut args: Vec<&str> = Vec::new();
    for value in with {
        args.extend(["--with", value]);
    }
    if trusted {
        args.extend(ca(&pki.ca.pem_file));
    }
    check("tls-cert", &url, &grant, &args)
}

/// Asserts `expiry_days` is the certificate's own time left, within 0.01 day.
#[track_caller]
fn assert_expiry_days(run: &Run, leaf: &Leaf) {
    let days = run.metric("expiry_days");
    let expected = leaf.days_left();
    assert!(
        (days - expected).abs() < 0.01,
        "expiry_days {days}, the certificate says {expected:.4} (notAfter {}): {run:#?}",
        humantime::format_rfc3339_seconds(leaf.validity.not_after)
    );
}

#[test]
fn tls_cert_measures_the_days_left_and_lists_the_chain() {
    let pki = Pki::new();
    let run = tls_cert_on(&pki, &pki.server, &[], true);
    assert_status(&run, 0, "ok");
    assert_expiry_days(&run, &pki.server);
    let details = step(&run)["details"].to_string();
    let not_after = humantime::format_rfc3339_seconds(pki.server.validity.not_after).to_string();
    let mut expected: Vec<&str> = pki.server.names.iter().map(String::as_str).collect();
    expected.extend([pki.server.common_name.as_str(), pki.ca.name.as_str(), &not_after[..10]]);
    for expected in expected {
        assert!(details.contains(expected), "details lack {expected:?}: {details}");
    }
}

#[test]
fn tls_cert_warns_under_30_days_and_is_critical_under_7() {
    let pki = Pki::new();
    let twenty = pki.server_cert("twenty", Validity::days(20));
    let run = tls_cert_on(&pki, &twenty, &[], true);
    assert_status(&run, 1, "warning");
    assert_expiry_days(&run, &twenty);
    let three = pki.server_cert("three", Validity::days(3));
    let run = tls_cert_on(&pki, &three, &[], true);
    assert_status(&run, 2, "critical");
    assert_expiry_days(&run, &three);

    // Nagios ranges override the defaults (`N:` alerts below N).
    let run = tls_cert_on(&pki, &twenty, &["warn=10:", "crit=5:"], true);
    assert_status(&run, 0, "ok");
    let run = tls_cert_on(&pki, &pki.server, &["warn=100:"], true);
    assert_status(&run, 1, "warning");
    let run = tls_cert_on(&pki, &pki.server, &["warn=100:", "crit=95:"], true);
    assert_status(&run, 2, "critical");
    let run = tls_cert_on(&pki, &three, &["warn=2:", "crit=1:"], true);
    assert_status(&run, 0, "ok");
}

#[test]
fn tls_cert_is_critical_naming_the_reason_and_still_measures() {
    let pki = Pki::new();
    let expired = pki.server_cert("expired", Validity::expired());
    let run = tls_cert_on(&pki, &expired, &[], true);
    assert_status(&run, 2, "critical");
    assert_says(&run, "expired");
    assert_expiry_days(&run, &expired);

    let future = pki.server_cert("future", Validity::not_yet_valid());
    let run = tls_cert_on(&pki, &future, &[], true);
    assert_status(&run, 2, "critical");
    assert_says(&run, "not yet valid");

    let misnamed = pki
        .ca
        .leaf("misnamed", &["db.example.com"], Validity::days(90), Purpose::Server);
    let run = tls_cert_on(&pki, &misnamed, &[], true);
    assert_status(&run, 2, "critical");
    assert_says(&run, "name mismatch");
    assert_expiry_days(&run, &misnamed);

    // Untrusted (no --ca): CRITICAL with the reason, and the metric all the same.
    let run = tls_cert_on(&pki, &pki.server, &[], false);
    assert_status(&run, 2, "critical");
    assert_says(&run, "unknown issuer");
    assert_expiry_days(&run, &pki.server);
}

#[test]
fn tls_cert_speaks_every_scheme() {
    let pki = Pki::new();
    let trust = ca(&pki.ca.pem_file);
    let https = PyTls::https(&pki.server, None);
    let redis = TlsRedis::start(&pki, &pki.server, false);
    let pg = tls_only_postgres(&pki.server);
    let smtp = PyTls::smtp(&pki.server);
    let cases = [
        (
            format!("tls://localhost:{}", https.port),
            format!("tcp://localhost:{}", https.port),
        ),
        (
            format!("https://localhost:{}/", https.port),
            format!("https://localhost:{}", https.port),
        ),
        (redis.url("localhost"), format!("tcp://localhost:{}", redis.port)),
        (
            format!("postgres://localhost:{}", pg.port),
            format!("tcp://localhost:{}", pg.port),
        ),
        (
            format!("smtp://localhost:{}", smtp.port),
            format!("tcp://localhost:{}", smtp.port),
        ),
    ];
    for (url, grant) in &cases {
        let run = check("tls-cert", url, grant, &trust);
        assert_eq!(run.code, 0, "{url}: {run:#?}");
        assert_expiry_days(&run, &pki.server);
    }
    // The SMTP server saw the EHLO before STARTTLS.
    assert!(
        smtp.events().iter().any(|e| e.starts_with("ehlo ")),
        "{:?}",
        smtp.events()
    );
}
