//! The plugins' side of TLS against real servers: what the SDK (`net::Stream::start_tls`,
//! `tls::last_handshake`, SSLRequest, STARTTLS) and the plugins built on it do with the
//! host's handshakes, beyond what `tls.rs` pins down: a TLS 1.3 server's refusal of a
//! missing client certificate (it comes after the handshake), the earliest expiry of a
//! chain with an intermediate, `sslmode=verify-*` when the step turns verification off,
//! failures before any certificate (no STARTTLS, a silent server), and which plugins
//! import `wasi:tls` at all.

use crate::harness::{Postgres, Run, SilentServer, free_port, runbox};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A root CA, an intermediate that expires in 5 days, and PEM files in a temp dir:
/// `root.pem`; `chain.pem` + `chain.key` (a 90-day leaf for 127.0.0.1 under the
/// intermediate, then the intermediate); `leaf.pem` + `leaf.key` (a 90-day leaf for
/// 127.0.0.1 under the root); `client.pem` + `client.key` (a client certificate under
/// the root).
struct Pki {
    dir: tempfile::TempDir,
    /// The intermediate's notAfter, Unix seconds.
    intermediate_not_after: u64,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let at = |secs: u64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs);
        let day = 86_400;

        let ca = |name: &str, not_after: u64| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.not_before = at(now - day);
            params.not_after = at(not_after);
            (params, KeyPair::generate().unwrap())
        };
        let leaf = |name: &str, issuer: &Issuer<KeyPair>| {
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.not_before = at(now - day);
            params.not_after = at(now + 90 * day);
            let key = KeyPair::generate().unwrap();
            (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
        };

        let (root_params, root_key) = ca("tls_plugins root", now + 365 * day);
        write("root.pem", root_params.self_signed(&root_key).unwrap().pem());
        let root = Issuer::new(root_params, root_key);
        let intermediate_not_after = now + 5 * day;
        let (mid_params, mid_key) = ca("tls_plugins intermediate", intermediate_not_after);
        let mid_pem = mid_params.signed_by(&mid_key, &root).unwrap().pem();
        let intermediate = Issuer::new(mid_params, mid_key);

        let (pem, key) = leaf("under the intermediate", &intermediate);
        write("chain.pem", format!("{pem}{mid_pem}"));
        write("chain.key", key);
        let (pem, key) = leaf("under the root", &root);
        write("leaf.pem", pem);
        write("leaf.key", key);
        let (pem, key) = leaf("a client", &root);
        write("client.pem", pem);
        write("client.key", key);
        Pki {
            dir,
            intermediate_not_after,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

/// A TLS-only redis-server (`--port 0`) on a random port, killed on drop.
struct TlsRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    /// Presents `cert`/`key`; with `mutual`, requires a client certificate from `ca`.
    fn start(cert: &str, key: &str, ca: &str, mutual: bool) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca])
            .args(["--tls-auth-clients", if mutual { "yes" } else { "no" }])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start redis-server ({err})"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { port, child, _dir: dir }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `runbox check PLUGIN --with url=URL --allow tcp://127.0.0.1:PORT ARGS... --format json`.
fn check(plugin: &str, url: &str, port: u16, args: &[&str]) -> Run {
    let url = format!("url={url}");
    let grant = format!("tcp://127.0.0.1:{port}");
    let mut all = vec!["check", plugin, "--with", &url, "--allow", &grant, "--format", "json"];
    all.extend(args);
    runbox(&all)
}

fn step(run: &Run) -> Value {
    run.json()["steps"][0].clone()
}

fn summary(run: &Run) -> String {
    step(run)["summary"].as_str().unwrap_or_default().to_string()
}

fn expiry_days(run: &Run) -> f64 {
    step(run)["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|metric| metric["name"] == "expiry_days")
        .unwrap_or_else(|| panic!("no expiry_days: {run:#?}"))["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn tls_cert_measures_the_earliest_expiry_of_the_chain_an_intermediate_included() {
    let pki = Pki::new();
    let redis = TlsRedis::start(
        &pki.path("chain.pem"),
        &pki.path("chain.key"),
        &pki.path("root.pem"),
        false,
    );
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let run = check("tls-cert", &url, redis.port, &["--ca", &pki.path("root.pem")]);
    // The leaf has 90 days; the intermediate 5, under the default CRITICAL of 7.
    assert_eq!(run.code, 2, "{run:#?}");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expected = (pki.intermediate_not_after as f64 - now) / 86_400.0;
    assert!((expiry_days(&run) - expected).abs() < 0.01, "{expected}: {run:#?}");
    assert!(
        summary(&run).starts_with(&format!("certificate of {url} expires in 5.0 days")),
        "{run:#?}"
    );
    assert!(summary(&run).ends_with("CN=tls_plugins intermediate)"), "{run:#?}");
    let details = step(&run)["details"].to_string();
    for expected in [
        "[0] subject: CN=under the intermediate",
        "[0] issuer: CN=tls_plugins intermediate",
        "[0] names: IP:127.0.0.1",
        "[1] subject: CN=tls_plugins intermediate",
        "[1] issuer: CN=tls_plugins root",
        "TLSv1.3, ",
    ] {
        assert!(details.contains(expected), "details lack {expected:?}: {details}");
    }
    // The same chain through redis-ping: trusted, so PONG.
    let run = check("redis-ping", &url, redis.port, &["--ca", &pki.path("root.pem")]);
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn a_tls13_server_refusing_a_missing_client_certificate_is_critical_and_still_measured() {
    let pki = Pki::new();
    let redis = TlsRedis::start(
        &pki.path("leaf.pem"),
        &pki.path("leaf.key"),
        &pki.path("root.pem"),
        true,
    );
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let root = pki.path("root.pem");
    let ca = vec!["--ca", root.as_str()];

    // TLS 1.3: the client's handshake completes, and the server's refusal arrives on the
    // first read. tls-cert waits for it; the host records it as the handshake's outcome.
    let run = check("tls-cert", &url, redis.port, &ca);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(summary(&run).contains("client certificate"), "{run:#?}");
    assert!((expiry_days(&run) - 90.0).abs() < 1.1, "{run:#?}");
    let run = check("redis-ping", &url, redis.port, &ca);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(summary(&run).contains("client certificate"), "{run:#?}");

    let mut with_client = ca.clone();
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    with_client.extend(["--client-cert", &cert, "--client-key", &key]);
    let run = check("tls-cert", &url, redis.port, &with_client);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(summary(&run).contains("expires in 9"), "{run:#?}");
    let run = check("redis-ping", &url, redis.port, &with_client);
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn verify_ca_and_verify_full_demand_verification_and_require_does_not() {
    // The harness's server has a self-signed certificate without names: only a step
    // that turns verification off gets through, and then only `require`.
    let pg = Postgres::start();
    let url = |sslmode: &str| format!("{}?sslmode={sslmode}", pg.url("trust_user"));
    for sslmode in ["verify-ca", "verify-full"] {
        let run = check("pg-dangling-metadata", &url(sslmode), pg.port, &["--tls-no-verify"]);
        assert_eq!(run.code, 2, "{sslmode}: {run:#?}");
        assert!(
            summary(&run).ends_with(&format!(
                "sslmode={sslmode} demands a verified certificate, and the step turns verification off (`tls: {{verify: false}}`)"
            )),
            "{run:#?}"
        );
    }
    for sslmode in ["require", "prefer"] {
        let run = check("pg-dangling-metadata", &url(sslmode), pg.port, &["--tls-no-verify"]);
        assert_eq!(run.code, 0, "{sslmode}: {run:#?}");
        // Connected over TLS: no note about a plaintext fallback.
        assert!(!step(&run)["details"].to_string().contains("plaintext"), "{run:#?}");
    }
    // Verified (the default), the same server fails in every mode that uses TLS, and
    // the summary says runbox verifies even where libpq would not.
    let run = check("pg-dangling-metadata", &url("require"), pg.port, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).ends_with("(sslmode=require: runbox verifies the certificate in every mode that uses TLS; trust the server's CA with --ca or tls: {ca: FILE}, or use sslmode=disable)"),
        "{run:#?}"
    );
}

/// An SMTP server on a thread that greets, answers EHLO without STARTTLS, and records
/// the commands it got.
fn smtp_without_starttls() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut lines = BufReader::new(socket.try_clone().unwrap()).lines();
        socket.write_all(b"220 mx.test ESMTP\r\n").unwrap();
        while let Some(Ok(line)) = lines.next() {
            let _ = sent.send(line.clone());
            let reply: &[u8] = if line.starts_with("EHLO") {
                b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            } else {
                b"502 5.5.1 no\r\n"
            };
            if socket.write_all(reply).is_err() {
                break;
            }
        }
    });
    (port, received)
}

#[test]
fn failures_before_any_certificate_say_where_they_stopped() {
    // A mail server that does not offer STARTTLS: nothing more is sent after EHLO.
    let (port, received) = smtp_without_starttls();
    let run = check("tls-cert", &format!("smtp://127.0.0.1:{port}"), port, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        summary(&run),
        format!("smtp://127.0.0.1:{port}: STARTTLS failed: the SMTP server does not offer STARTTLS")
    );
    assert!(step(&run)["metrics"].as_array().unwrap().is_empty(), "{run:#?}");
    assert_eq!(received.try_iter().collect::<Vec<_>>(), ["EHLO localhost"]);

    // A server that never answers the ClientHello: "timed out" before the deadline.
    let silent = SilentServer::start();
    let port = silent.addr.port();
    for (plugin, url) in [
        ("tls-cert", format!("tls://127.0.0.1:{port}")),
        ("redis-ping", format!("rediss://127.0.0.1:{port}")),
    ] {
        let run = check(plugin, &url, port, &["--timeout", "2s"]);
        assert_eq!(run.code, 2, "{plugin}: {run:#?}");
        assert!(
            summary(&run).contains("timed out waiting for the server"),
            "{plugin}: {run:#?}"
        );
        assert!(run.elapsed < Duration::from_secs(4), "{plugin}: {:?}", run.elapsed);
    }
}

/// The interfaces `runbox plugins inspect NAME` lists as imports.
fn imports(plugin: &str) -> Vec<String> {
    let run = runbox(&["plugins", "inspect", plugin]);
    assert_eq!(run.code, 0, "{run:#?}");
    run.stdout
        .lines()
        .skip_while(|line| !line.starts_with("imports:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .map(|line| line.trim().to_string())
        .collect()
}

#[test]
fn only_plugins_that_use_tls_import_it() {
    let tls = "wasi:tls/types@0.2.0-draft";
    let record = "runbox:tls/handshakes@0.1.0";
    // (plugin, imports wasi:tls, imports runbox:tls/handshakes)
    let table = [
        ("tls-cert", true, true),
        ("pg-dangling-metadata", true, true),
        ("pg-query", true, true),
        ("redis-ping", true, false),
        ("redis-queue-depth", true, false),
        // HTTPS is the host's; the SDK's HTTP client reads the handshake record only to
        // say why a TLS error code came back.
        ("http-health", false, true),
        ("s3-4xx-rate", false, true),
        ("s3-probe", false, true),
        ("livekit-token", false, true),
    ];
    for (plugin, uses_tls, reads_record) in table {
        let imports = imports(plugin);
        assert!(!imports.is_empty(), "{plugin}: no imports listed");
        assert_eq!(imports.iter().any(|i| i == tls), uses_tls, "{plugin}: {imports:?}");
        assert_eq!(
            imports.iter().any(|i| i == record),
            reads_record,
            "{plugin}: {imports:?}"
        );
    }
}
