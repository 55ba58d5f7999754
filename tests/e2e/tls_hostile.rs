//! Plugins that attack the TLS capability: reading the step's client key through the
//! secret that holds it, presenting a granted connection's server with an ungranted
//! name, and holding host memory with open TLS connections.

use crate::harness::{plugin, recording_listener, runbox, runbox_env};
use crate::tls_servers::Pki;

/// The secret that holds the step's TLS client key is read by the host; a plugin that
/// asks for it by name gets nothing, the denial says why, and no line of the key appears
/// in any output, logs at `-vv` included.
#[test]
fn the_client_key_in_a_secret_is_the_hosts_alone() {
    let pki = Pki::new();
    let (cert, key) = (
        pki.client.cert_file.display().to_string(),
        pki.client.key_file.display().to_string(),
    );
    let pem = std::fs::read_to_string(&pki.client.key_file).unwrap();
    let mischief = plugin("mischief").display().to_string();
    let secret = format!("client_key=file:{key}");
    // mischief in `mode`, with the key in a secret that is the step's TLS client key,
    // `extra` grants, and the key's PEM in the variable RUNBOX_TEST_CLIENT_KEY.
    let attack = |mode: &str, extra: &[&str]| {
        let mut args = vec!["-vv", "check", &mischief, "--config", mode, "--secret", &secret];
        args.extend_from_slice(extra);
        args.extend([
            "--client-cert",
            &cert,
            "--client-key",
            "secret:client_key",
            "--format",
            "json",
        ]);
        runbox_env(&args, &[("RUNBOX_TEST_CLIENT_KEY", &pem)])
    };
    let run = attack(r#"{"mode": "secret", "target": "client_key"}"#, &[]);
    let json = run.json();
    let step = &json["steps"][0];
    assert_eq!(step["summary"], "secret not granted", "{run:#?}");
    let denied = step["denied"].to_string();
    assert!(denied.contains("TLS client identity"), "{denied}");
    let body: Vec<&str> = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    assert!(!body.is_empty());
    for line in body {
        assert!(
            !run.stdout.contains(line) && !run.stderr.contains(line),
            "key material leaked: {line}"
        );
    }

    // Granted again under another name, or handed over as an environment variable: still
    // the host's alone (what decides is the value).
    let copy = format!("copy=file:{key}");
    let run = attack(
        r#"{"mode": "secret", "target": "copy"}"#,
        &["--secret", &copy, "--env", "RUNBOX_TEST_CLIENT_KEY"],
    );
    assert_eq!(run.json()["steps"][0]["summary"], "secret not granted", "{run:#?}");
    let env = attack(
        r#"{"mode": "env"}"#,
        &["--env", "RUNBOX_TEST_CLIENT_KEY", "--env", "OTHER=visible"],
    );
    let summary = env.json()["steps"][0]["summary"].to_string();
    assert!(
        summary.contains("OTHER") && !summary.contains("RUNBOX_TEST_CLIENT_KEY"),
        "{env:#?}"
    );

    // The same secret granted without being a TLS key is the plugin's, as before.
    let run = runbox(&[
        "check",
        &mischief,
        "--config",
        r#"{"mode": "secret", "target": "client_key"}"#,
        "--secret",
        &secret,
        "--format",
        "json",
    ]);
    assert!(
        run.json()["steps"][0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("secret is"),
        "{run:#?}"
    );
}

/// Over a connection its grant allows, a plugin asks `wasi:tls` for a handshake with
/// another host's name: refused before a byte of the ClientHello is written, and listed
/// as a denial naming the grant. The granted address as the name is sent (the control).
#[test]
fn a_server_name_the_grants_do_not_cover_sends_nothing() {
    let (port, received) = recording_listener("127.0.0.1");
    let mischief = plugin("mischief").display().to_string();
    let target = format!("127.0.0.1:{port}");
    let grant = format!("tcp://127.0.0.1:{port}");
    let attack = |name: &str| {
        runbox(&[
            "check",
            &mischief,
            "--config",
            &serde_json::json!({"mode": "tls-name", "target": target, "server_name": name}).to_string(),
            "--allow",
            &grant,
            "--timeout",
            "3s",
            "--format",
            "json",
        ])
    };
    for name in ["db.internal", "localhost", "127.0.0.2", "[::1]"] {
        let run = attack(name);
        let step = &run.json()["steps"][0];
        let summary = step["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("TLS handshake refused") && summary.contains("not granted"),
            "{name}: {run:#?}"
        );
        assert!(
            step["denied"].to_string().contains(&format!("server name `{name}`")),
            "{name}: {step}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(received.lock().unwrap().is_empty(), "{name}: bytes reached the server");
    }
    // The control: the granted address as the name goes out as a ClientHello (a TLS
    // handshake record, 0x16), which this listener never answers.
    let run = attack("127.0.0.1");
    assert!(
        run.json()["steps"][0]["denied"].as_array().unwrap().is_empty(),
        "{run:#?}"
    );
    assert_eq!(received.lock().unwrap().first(), Some(&0x16), "no ClientHello arrived");
}

/// A plugin opens TLS connections until the host refuses: at most 32 at once, the next
/// handshake fails with that reason, and the host is fine for the next check.
#[test]
fn open_tls_connections_are_capped() {
    let server = crate::harness::HttpsServer::start(|_| crate::harness::HttpsReply::ok(b"ok"));
    let mischief = plugin("mischief").display().to_string();
    let ca = server.ca.pem_file.display().to_string();
    let grant = format!("tcp://127.0.0.1:{}", server.addr.port());
    let flood = |size: usize| {
        let config = serde_json::json!({"mode": "tls-flood", "target": format!("127.0.0.1:{}", server.addr.port()), "size": size});
        let run = runbox(&[
            "check",
            &mischief,
            "--config",
            &config.to_string(),
            "--allow",
            &grant,
            "--ca",
            &ca,
            "--format",
            "json",
        ]);
        (run.json()["steps"][0]["summary"].as_str().unwrap().to_string(), run)
    };
    let (summary, run) = flood(40);
    assert!(
        summary.contains("TLS connection 33 failed") && summary.contains("more than 32 TLS connections open at once"),
        "{run:#?}"
    );
    let (summary, run) = flood(32);
    assert_eq!(summary, "held 32 TLS connections", "{run:#?}");
}

/// A server name of a megabyte: cut before the host keeps it, refused as ungranted, and
/// the denial is a line, not a megabyte.
#[test]
fn a_huge_server_name_is_cut_and_refused() {
    let (port, received) = recording_listener("127.0.0.1");
    let mischief = plugin("mischief").display().to_string();
    let run = runbox(&[
        "-v",
        "check",
        &mischief,
        "--config",
        &serde_json::json!({"mode": "tls-name", "target": format!("127.0.0.1:{port}"), "server_name": ".internal", "size": 1 << 20}).to_string(),
        "--allow",
        &format!("tcp://127.0.0.1:{port}"),
        "--format",
        "json",
    ]);
    let step = &run.json()["steps"][0];
    assert!(
        step["summary"].as_str().unwrap().contains("not granted"),
        "{}",
        &run.stdout[..2000.min(run.stdout.len())]
    );
    let denied = step["denied"].to_string();
    assert!(denied.len() < 2_000, "the denial is {} bytes", denied.len());
    assert!(
        run.stdout.len() + run.stderr.len() < 64 << 10,
        "output grew with the name"
    );
    assert!(received.lock().unwrap().is_empty());
}
