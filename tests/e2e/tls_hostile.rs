//! Plugins that attack the TLS capability: reading the step's client key through the
//! secret that holds it, presenting a granted connection's server with an ungranted
//! name, and holding host memory with open TLS connections.

use crate::harness::{plugin, runbox};

/// A client certificate and key (PEM files) from a CA made here.
fn client_identity(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["runbox-client".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (
        cert_file.display().to_string(),
        key_file.display().to_string(),
        key.serialize_pem(),
    )
}

/// The secret that holds the step's TLS client key is read by the host; a plugin that
/// asks for it by name gets nothing, the denial says why, and no line of the key appears
/// in any output, logs at `-vv` included.
#[test]
fn the_client_key_in_a_secret_is_the_hosts_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = client_identity(dir.path());
    let mischief = plugin("mischief").display().to_string();
    let secret = format!("client_key=file:{key}");
    let run = runbox(&[
        "-vv",
        "check",
        &mischief,
        "--config",
        r#"{"mode": "secret", "target": "client_key"}"#,
        "--secret",
        &secret,
        "--client-cert",
        &cert,
        "--client-key",
        "secret:client_key",
        "--format",
        "json",
    ]);
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
