//! Third-party plugins: `https://` URLs pinned by sha256, the content-addressed download
//! cache, and ed25519 signatures (`plugins verify/keygen/sign`, `--require-signed`).
//!
//! The plugins are served by a real HTTPS server on 127.0.0.1 whose certificate comes
//! from a CA made in the test; runbox trusts it through `SSL_CERT_FILE` (which replaces
//! the system roots, so nothing else could be reached even by mistake).

use crate::harness::{HttpsReply, HttpsServer, Run, TestCa, plugin, runbox_env_without};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
    "RUNBOX_TRUSTED_KEYS",
    "XDG_CONFIG_HOME",
];

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn noop() -> Vec<u8> {
    std::fs::read(plugin("noop_check")).unwrap()
}

/// A download cache and the CA runbox trusts, for one test.
struct Client {
    cache: tempfile::TempDir,
    ca: PathBuf,
}

impl Client {
    fn trusting(ca: &TestCa) -> Client {
        Client {
            cache: tempfile::tempdir().unwrap(),
            ca: ca.pem_file.clone(),
        }
    }

    fn runbox(&self, args: &[&str]) -> Run {
        let mut all = vec!["--cache-dir", self.cache.path().to_str().unwrap()];
        all.extend(args);
        runbox_env_without(&all, &[("SSL_CERT_FILE", self.ca.to_str().unwrap())], NOT_INHERITED)
    }

    fn entry(&self, digest: &str) -> PathBuf {
        self.cache.path().join(format!("plugins/sha256/{digest}.wasm"))
    }

    /// Every file in the download cache.
    fn cached(&self) -> Vec<String> {
        match std::fs::read_dir(self.cache.path().join("plugins/sha256")) {
            Ok(entries) => entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn serve_noop() -> (HttpsServer, String) {
    let bytes = noop();
    let digest = sha256(&bytes);
    let server = HttpsServer::start(move |path| match path {
        "/plugins/noop.wasm" => HttpsReply::ok(&bytes),
        _ => HttpsReply::status(404, b"not found"),
    });
    (server, digest)
}

fn book(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("book.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

#[test]
fn a_pinned_https_plugin_is_fetched_verified_cached_and_then_runs_offline() {
    let (mut server, digest) = serve_noop();
    let client = Client::trusting(&server.ca);
    let uses = format!("{}@sha256:{digest}", server.url("/plugins/noop.wasm"));

    let run = client.runbox(&["check", &uses, "--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["steps"][0]["summary"], "nothing to do");
    assert_eq!(std::fs::read(client.entry(&digest)).unwrap(), noop());
    // The publisher's signature is looked for alongside; there is none (404), which is fine.
    assert_eq!(server.requests(), ["/plugins/noop.wasm", "/plugins/noop.wasm.sig"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = client.cache.path().join("plugins/sha256");
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "download cache {}", dir.display());
    }

    // A runbook validates (the config is checked against the fetched plugin's schema)
    // and runs from the cache: the server is gone.
    server.stop();
    let (_dir, path) = book(&format!(
        "name: remote\nsteps:\n  - id: remote\n    uses: {uses}\n    with:\n      anything: 1\n"
    ));
    let run = client.runbox(&["validate", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("ok: "), "{run:#?}");
    let run = client.runbox(&["run", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["steps"][0]["status"], "ok");
    let run = client.runbox(&["check", &uses]);
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn a_wrong_digest_is_refused_and_nothing_is_stored() {
    let (server, digest) = serve_noop();
    let client = Client::trusting(&server.ca);
    let wrong = sha256(b"some other plugin");
    let url = server.url("/plugins/noop.wasm");
    let run = client.runbox(&["check", &format!("{url}@sha256:{wrong}")]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "{url} has sha256 {digest}, but the runbook pins sha256 {wrong}: refusing it, and nothing was stored"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(client.cached(), Vec::<String>::new());

    // In a runbook, the same refusal names the file, the line and the step.
    let (_dir, path) = book(&format!(
        "name: remote\nsteps:\n  - id: fetched\n    uses: {url}@sha256:{wrong}\n"
    ));
    let run = client.runbox(&["validate", path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "{}:4: step `fetched`: {url} has sha256 {digest}",
            path.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(client.cached(), Vec::<String>::new());
}

#[test]
fn a_url_without_a_digest_or_over_plain_http_is_refused_before_any_request() {
    let (server, digest) = serve_noop();
    let client = Client::trusting(&server.ca);
    let url = server.url("/plugins/noop.wasm");
    let plain = url.replace("https://", "http://");
    let (_dir, path) = book(&format!(
        "name: remote\nsteps:\n  - id: unpinned\n    uses: {url}\n  - id: plain\n    uses: {plain}@sha256:{digest}\n"
    ));
    let run = client.runbox(&["validate", path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    let file = path.display();
    assert!(
        run.stderr.contains(&format!(
            "{file}:4: step `unpinned`: `uses: {url}`: a plugin fetched by URL must be pinned to its content: append `@sha256:`"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "{file}:6: step `plain`: `uses: {plain}@sha256:{digest}`: plugins are fetched over https only. Over plain http anyone on the network path"
        )),
        "{}",
        run.stderr
    );
    let run = client.runbox(&["check", &plain]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stderr.contains("https only"), "{}", run.stderr);
    assert_eq!(server.requests(), Vec::<String>::new());
}

#[test]
fn a_tampered_cache_entry_is_refused_then_fetched_again() {
    let (mut server, digest) = serve_noop();
    let client = Client::trusting(&server.ca);
    let uses = format!("{}@sha256:{digest}", server.url("/plugins/noop.wasm"));
    assert_eq!(client.runbox(&["check", &uses]).code, 0);
    let entry = client.entry(&digest);
    let mut tampered = noop();
    tampered.extend_from_slice(b"evil");
    std::fs::write(&entry, &tampered).unwrap();

    // Offline, the tampered copy is not used, and the error says why.
    server.stop();
    let run = client.runbox(&["check", &uses]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "the cached copy {} had sha256 {}, not the pinned {digest} (it was altered or corrupted), so it was removed; cannot fetch",
            entry.display(),
            sha256(&tampered)
        )),
        "{}",
        run.stderr
    );
    assert!(!entry.exists());

    // Online, it is fetched again and runs (the cache is by digest: any URL serving it will do).
    std::fs::write(&entry, &tampered).unwrap();
    let (server, _) = serve_noop();
    let client = Client {
        cache: client.cache,
        ca: server.ca.pem_file.clone(),
    };
    let run = client.runbox(&[
        "check",
        &format!("{}@sha256:{digest}", server.url("/plugins/noop.wasm")),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("does not match its digest"), "{}", run.stderr);
    assert_eq!(std::fs::read(&entry).unwrap(), noop());
}

#[test]
fn server_errors_oversized_bodies_bad_redirects_and_untrusted_certificates_are_clear() {
    let bytes = noop();
    let digest = sha256(&bytes);
    let served = bytes.clone();
    let server = HttpsServer::start(move |path| match path {
        "/plugins/noop.wasm" => HttpsReply::ok(&served),
        "/broken.wasm" => HttpsReply::status(500, b"oops"),
        "/announced-huge.wasm" => HttpsReply {
            content_length: Some(100 << 20),
            ..HttpsReply::ok(b"\0asm")
        },
        "/endless.wasm" => HttpsReply {
            stream: Some((64 << 20) + (1 << 20)),
            ..HttpsReply::ok(b"")
        },
        "/to-http.wasm" => HttpsReply::redirect("http://127.0.0.1:9/plugins/noop.wasm"),
        "/moved.wasm" => HttpsReply::redirect("/plugins/noop.wasm"),
        _ => HttpsReply::status(404, b"not found"),
    });
    let client = Client::trusting(&server.ca);
    let pinned = |path: &str| format!("{}@sha256:{digest}", server.url(path));
    let cases = [
        (
            "/missing.wasm",
            format!(
                "cannot fetch {}: the server answered 404 Not Found",
                server.url("/missing.wasm")
            ),
        ),
        (
            "/broken.wasm",
            format!(
                "cannot fetch {}: the server answered 500 Internal Server Error",
                server.url("/broken.wasm")
            ),
        ),
        (
            "/announced-huge.wasm",
            "the plugin is 104857600 bytes, more than the 64 MiB runbox accepts".to_string(),
        ),
        (
            "/endless.wasm",
            "the plugin is larger, more than the 64 MiB runbox accepts".to_string(),
        ),
        (
            "/to-http.wasm",
            "redirected to http://127.0.0.1:9/plugins/noop.wasm, which is not https; refusing to follow".to_string(),
        ),
    ];
    for (path, expected) in cases {
        let run = client.runbox(&["check", &pinned(path)]);
        assert_eq!(run.code, 64, "{path}: {run:#?}");
        assert!(run.stderr.contains(&expected), "{path}: {}", run.stderr);
        assert_eq!(client.cached(), Vec::<String>::new(), "{path}");
    }
    // An https redirect is followed.
    let run = client.runbox(&["check", &pinned("/moved.wasm")]);
    assert_eq!(run.code, 0, "{run:#?}");

    // A server whose certificate does not chain to a trusted root is not talked to.
    let other_ca = TestCa::new();
    let stranger = Client::trusting(&other_ca);
    let run = stranger.runbox(&["check", &pinned("/plugins/noop.wasm")]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("cannot fetch") && run.stderr.contains("UnknownIssuer"),
        "{}",
        run.stderr
    );
    assert_eq!(stranger.cached(), Vec::<String>::new());
}

/// A key made here with ed25519-dalek, independently of runbox's own key handling.
fn test_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The signature file line for `bytes`, as docs/trust.md specifies it.
fn signature_line(key: &SigningKey, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let message = format!("runbox-plugin-v1 sha256:{digest}");
    let signature = key.sign(message.as_bytes());
    format!(
        "ed25519 {} sha256:{digest} {}\n",
        BASE64.encode(key.verifying_key().as_bytes()),
        BASE64.encode(signature.to_bytes())
    )
}

fn trusted_line(key: &SigningKey, name: &str) -> String {
    format!("ed25519 {} {name}\n", BASE64.encode(key.verifying_key().as_bytes()))
}

/// A temp dir with a copy of the noop plugin and a trusted-keys file.
struct Signed {
    dir: tempfile::TempDir,
    plugin: PathBuf,
    keys: PathBuf,
}

impl Signed {
    fn new(trusted: &str) -> Signed {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("noop.wasm");
        std::fs::write(&plugin, noop()).unwrap();
        let keys = dir.path().join("trusted-keys");
        std::fs::write(&keys, format!("# test keys\n{trusted}")).unwrap();
        Signed { dir, plugin, keys }
    }

    fn sig(&self) -> PathBuf {
        let mut path = self.plugin.clone().into_os_string();
        path.push(".sig");
        PathBuf::from(path)
    }

    fn runbox(&self, args: &[&str]) -> Run {
        let mut all = vec!["--trusted-keys", self.keys.to_str().unwrap()];
        all.extend(args);
        runbox_env_without(&all, &[], NOT_INHERITED)
    }

    fn verify(&self) -> Run {
        self.runbox(&["plugins", "verify", self.plugin.to_str().unwrap()])
    }
}

#[test]
fn plugins_verify_accepts_a_trusted_signature_made_independently_and_nothing_else() {
    let alice = test_key(1);
    let signed = Signed::new(&trusted_line(&alice, "Alice <alice@example.com>"));
    let digest = sha256(&noop());

    let run = signed.verify();
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains(&format!("sha256:       {digest}\n")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("verified:     no: not signed"), "{}", run.stdout);

    std::fs::write(signed.sig(), signature_line(&alice, &noop())).unwrap();
    let run = signed.verify();
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout
            .contains("verified:     yes: signed by trusted key `Alice <alice@example.com>`"),
        "{}",
        run.stdout
    );

    // Signed by a key nobody trusts.
    let mallory = test_key(2);
    std::fs::write(signed.sig(), signature_line(&mallory, &noop())).unwrap();
    let run = signed.verify();
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "valid, but by ed25519 {}, which is not in {}",
            BASE64.encode(mallory.verifying_key().as_bytes()),
            signed.keys.display()
        )),
        "{}",
        run.stdout
    );

    // A forged signature: the right key and digest, but bytes that do not verify.
    let line = signature_line(&alice, &noop());
    let mut fields: Vec<String> = line.split_whitespace().map(String::from).collect();
    let mut forged = BASE64.decode(&fields[3]).unwrap();
    forged[0] ^= 1;
    fields[3] = BASE64.encode(forged);
    std::fs::write(signed.sig(), fields.join(" ")).unwrap();
    let run = signed.verify();
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("the signature does not verify"), "{}", run.stdout);

    // The plugin changed after it was signed.
    std::fs::write(signed.sig(), signature_line(&alice, &noop())).unwrap();
    let mut changed = noop();
    changed.push(0);
    std::fs::write(&signed.plugin, &changed).unwrap();
    let run = signed.verify();
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "but for sha256 {digest}, not this file's {}: the file changed after it was signed",
            sha256(&changed)
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn require_signed_refuses_unsigned_plugins_first_party_included_and_runs_signed_ones() {
    let alice = test_key(1);
    let signed = Signed::new(&trusted_line(&alice, "alice"));
    let plugin = signed.plugin.to_str().unwrap();

    let run = signed.runbox(&["check", plugin, "--require-signed"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "--require-signed: plugin `noop-check` ({plugin}, sha256 {}) is not signed by a trusted key: it has no signature file {plugin}.sig. To run it, sign it with `runbox plugins sign {plugin} --key KEYFILE` and add that key's .pub line to {}",
            sha256(&noop()),
            signed.keys.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(signed.runbox(&["check", plugin]).code, 0, "without the flag it runs");

    std::fs::write(signed.sig(), signature_line(&alice, &noop())).unwrap();
    let run = signed.runbox(&["check", plugin, "--require-signed"]);
    assert_eq!(run.code, 0, "{run:#?}");

    // A runbook: the signed plugin is fine, the unsigned first-party one is refused
    // with the file, line and step, and nothing runs.
    let book_path = signed.dir.path().join("book.yaml");
    std::fs::write(
        &book_path,
        "name: signed\nsteps:\n  - id: signed\n    uses: ./noop.wasm\n  - id: first-party\n    uses: redis-ping\n    with:\n      url: redis://127.0.0.1:1\n",
    )
    .unwrap();
    let book = book_path.to_str().unwrap();
    let run = signed.runbox(&["run", book, "--require-signed"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "{book}:6: step `first-party`: --require-signed: plugin `redis-ping`"
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("step `signed`"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was run"), "{}", run.stderr);
    let run = signed.runbox(&["validate", book, "--require-signed"]);
    assert_eq!(run.code, 64, "{run:#?}");
    std::fs::write(
        &book_path,
        "name: signed\nsteps:\n  - id: signed\n    uses: ./noop.wasm\n",
    )
    .unwrap();
    let run = signed.runbox(&["run", book, "--require-signed", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");

    // Without any trusted key, --require-signed explains what to set up.
    let run = runbox_env_without(
        &[
            "--trusted-keys",
            "/nonexistent/trusted-keys",
            "check",
            plugin,
            "--require-signed",
        ],
        &[],
        NOT_INHERITED,
    );
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr
            .contains("--require-signed: cannot read the trusted-keys file /nonexistent/trusted-keys")
            && run.stderr.contains("`runbox plugins keygen` writes one to PREFIX.pub"),
        "{}",
        run.stderr
    );
}

#[test]
fn require_signed_fetches_the_publishers_signature_beside_a_url_and_keeps_it_for_offline_runs() {
    let alice = test_key(1);
    let bytes = noop();
    let digest = sha256(&bytes);
    let sig = signature_line(&alice, &bytes);
    let (served, served_sig) = (bytes.clone(), sig.clone());
    let mut server = HttpsServer::start(move |path| match path {
        "/signed/noop.wasm" => HttpsReply::ok(&served),
        "/signed/noop.wasm.sig" => HttpsReply::ok(served_sig.as_bytes()),
        _ => HttpsReply::status(404, b"not found"),
    });
    let client = Client::trusting(&server.ca);
    let keys = client.cache.path().join("trusted-keys");
    std::fs::write(&keys, trusted_line(&alice, "alice")).unwrap();
    let keys = keys.to_str().unwrap();
    let signed_url = format!("{}@sha256:{digest}", server.url("/signed/noop.wasm"));

    let run = client.runbox(&["--trusted-keys", keys, "check", &signed_url, "--require-signed"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let mut sig_path = client.entry(&digest).into_os_string();
    sig_path.push(".sig");
    assert_eq!(std::fs::read_to_string(&sig_path).unwrap(), sig);

    server.stop();
    let run = client.runbox(&["--trusted-keys", keys, "check", &signed_url, "--require-signed"]);
    assert_eq!(run.code, 0, "offline: {run:#?}");
    let run = client.runbox(&["--trusted-keys", keys, "plugins", "verify", &signed_url]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("signed by trusted key `alice`"), "{}", run.stdout);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
#[cfg(unix)]
fn keygen_sign_verify_round_trip_through_the_cli() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("release");
    let prefix_text = prefix.to_str().unwrap();
    let plugin = dir.path().join("noop.wasm");
    std::fs::write(&plugin, noop()).unwrap();
    let plugin_text = plugin.to_str().unwrap();
    let run_plain = |args: &[&str]| runbox_env_without(args, &[], NOT_INHERITED);

    let run = run_plain(&["plugins", "keygen", "--out", prefix_text]);
    assert_eq!(run.code, 0, "{run:#?}");
    let (secret, public) = (dir.path().join("release.key"), dir.path().join("release.pub"));
    assert_eq!(mode(&secret), 0o600);
    let public_line = std::fs::read_to_string(&public).unwrap();
    assert!(
        public_line.starts_with("ed25519 ") && public_line.ends_with(" release\n"),
        "{public_line}"
    );
    assert!(
        run.stdout.contains(&format!("public key: {}", public_line.trim())),
        "{}",
        run.stdout
    );
    let run = run_plain(&["plugins", "keygen", "--out", prefix_text]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("already exists: runbox does not overwrite keys"),
        "{}",
        run.stderr
    );

    let run = run_plain(&["plugins", "sign", plugin_text, "--key", secret.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("signed {plugin_text} (sha256 {})", sha256(&noop()))),
        "{}",
        run.stdout
    );
    let verify = |keys: &Path| {
        run_plain(&[
            "--trusted-keys",
            keys.to_str().unwrap(),
            "plugins",
            "verify",
            plugin_text,
        ])
    };
    let run = verify(&public);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("yes: signed by trusted key `release`"),
        "{}",
        run.stdout
    );

    // The signature is an ordinary ed25519 signature: ed25519-dalek verifies it too.
    let sig = std::fs::read_to_string(format!("{plugin_text}.sig")).unwrap();
    let line = sig.lines().find(|line| !line.starts_with('#')).unwrap();
    let fields: Vec<&str> = line.split(' ').collect();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&BASE64.decode(fields[1]).unwrap().try_into().unwrap()).unwrap();
    let signature = ed25519_dalek::Signature::from_bytes(&BASE64.decode(fields[3]).unwrap().try_into().unwrap());
    let message = format!("runbox-plugin-v1 sha256:{}", sha256(&noop()));
    key.verify_strict(message.as_bytes(), &signature).unwrap();

    // A second signer adds a line; either key alone then verifies.
    let second = dir.path().join("ops");
    assert_eq!(
        run_plain(&[
            "plugins",
            "keygen",
            "--out",
            second.to_str().unwrap(),
            "--name",
            "ops team"
        ])
        .code,
        0
    );
    let run = run_plain(&[
        "plugins",
        "sign",
        plugin_text,
        "--key",
        dir.path().join("ops.key").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let run = verify(&dir.path().join("ops.pub"));
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("`ops team`"), "{}", run.stdout);
    assert_eq!(verify(&public).code, 0);

    // --require-signed with the CLI-made key.
    let run = run_plain(&[
        "--trusted-keys",
        public.to_str().unwrap(),
        "check",
        plugin_text,
        "--require-signed",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");

    // Keys that others could read, or trust files others could write, are refused.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = run_plain(&["plugins", "sign", plugin_text, "--key", secret.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr
            .contains("is readable or writable by others (mode 0644): run `chmod 600"),
        "{}",
        run.stderr
    );
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = verify(&public);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("is writable by others (mode 0666)"),
        "{}",
        run.stderr
    );
}
