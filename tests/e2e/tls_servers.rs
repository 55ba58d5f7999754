//! TLS fixtures for the end-to-end tests and the benchmark: certificates minted with
//! rcgen (CAs, server certificates with chosen validity windows, a client certificate),
//! written as PEM files, and real TLS servers built on other TLS stacks than runbox's
//! rustls: redis-server and PostgreSQL (OpenSSL), Python's `ssl` module (HTTPS, and SMTP
//! with STARTTLS through aiosmtpd). The self-tests at the end prove each server with an
//! independent client (redis-cli, psql, curl, openssl s_client).
//!
//! A server that cannot start fails the test with the reason; nothing is skipped.

use crate::harness::{PgTls, Postgres, free_port, workspace};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

/// When a certificate is valid, in whole seconds (X.509 times have no fractions).
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from an hour ago until `days` days from now.
    pub fn days(days: u64) -> Validity {
        Validity {
            not_before: seconds_from_now(-3600),
            not_after: seconds_from_now((days * DAY) as i64),
        }
    }

    /// Valid from 30 days ago until yesterday.
    pub fn expired() -> Validity {
        Validity {
            not_before: seconds_from_now(-30 * DAY as i64),
            not_after: seconds_from_now(-(DAY as i64)),
        }
    }

    /// Valid from tomorrow for 90 days.
    pub fn not_yet_valid() -> Validity {
        Validity {
            not_before: seconds_from_now(DAY as i64),
            not_after: seconds_from_now(91 * DAY as i64),
        }
    }
}

/// Now plus `offset` seconds, truncated to a whole second.
fn seconds_from_now(offset: i64) -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    UNIX_EPOCH + Duration::from_secs((now + offset) as u64)
}

/// A certificate authority: its certificate as a PEM file, and the key that signs.
pub struct Ca {
    /// The CA certificate, PEM (what `--ca` takes).
    pub pem_file: PathBuf,
    /// Its common name.
    pub name: String,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A certificate and its key, as PEM files (the key file mode 0600), signed by a [`Ca`].
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_file: PathBuf,
    /// The private key, PKCS#8 PEM, mode 0600.
    pub key_file: PathBuf,
    /// Its common name.
    pub common_name: String,
    /// Its subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
    /// notBefore and notAfter, exactly as in the certificate.
    pub validity: Validity,
}

impl Leaf {
    /// Seconds from now to notAfter (negative once expired).
    pub fn seconds_left(&self) -> f64 {
        match self.validity.not_after.duration_since(SystemTime::now()) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }
    }

    /// Days from now to notAfter, as a fraction (what `tls-cert`'s `expiry_days` measures).
    pub fn days_left(&self) -> f64 {
        self.seconds_left() / DAY as f64
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A TLS server (extended key usage serverAuth).
    Server,
    /// A TLS client (extended key usage clientAuth).
    Client,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/NAME.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let common_name = format!("runbox e2e {name} {:08x}", rand::random::<u32>());
        params.distinguished_name.push(DnType::CommonName, common_name.clone());
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let pem_file = dir.join(format!("{name}.pem"));
        std::fs::write(&pem_file, cert.pem()).unwrap();
        Ca {
            pem_file,
            name: common_name,
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses; the first is also the
    /// common name), valid for `validity`, written to `dir/STEM.crt` and `dir/STEM.key`.
    pub fn leaf(&self, stem: &str, names: &[&str], validity: Validity, purpose: Purpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        let common_name = names.first().cloned().unwrap_or_else(|| stem.to_string());
        params.distinguished_name.push(DnType::CommonName, common_name.clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![match purpose {
            Purpose::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Purpose::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        // rcgen's dates are `time::OffsetDateTime`s: the epoch plus whole seconds.
        let seconds = |time: SystemTime| Duration::from_secs(time.duration_since(UNIX_EPOCH).unwrap().as_secs());
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + seconds(validity.not_before);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + seconds(validity.not_after);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.join(format!("{stem}.crt"));
        let key_file = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        write_private(&key_file, key.serialize_pem().as_bytes());
        Leaf {
            cert_file,
            key_file,
            common_name,
            names,
            validity,
        }
    }
}

/// Writes a key file readable by its owner only (PostgreSQL refuses any other mode).
fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

/// The certificates of one test, in a temp dir: a CA the tests trust (`--ca`), an
/// unrelated CA, a CA for clients with one client certificate, and a server certificate
/// for `localhost` and `127.0.0.1` valid for 90 days.
pub struct Pki {
    /// The CA that signs the servers' certificates.
    pub ca: Ca,
    /// A CA that signed nothing the servers present.
    pub other_ca: Ca,
    /// The CA the servers that ask for client certificates trust.
    pub client_ca: Ca,
    /// A client certificate from `client_ca` (common name `runbox-e2e-client`).
    pub client: Leaf,
    /// A server certificate from `ca` for `localhost` and `127.0.0.1`, valid 90 days.
    pub server: Leaf,
    _dir: tempfile::TempDir,
}

impl Pki {
    /// Mints it all.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "ca");
        let other_ca = Ca::new(dir.path(), "other-ca");
        let client_ca = Ca::new(dir.path(), "client-ca");
        let client = client_ca.leaf("client", &["runbox-e2e-client"], Validity::days(90), Purpose::Client);
        let server = ca.leaf(
            "server",
            &["localhost", "127.0.0.1"],
            Validity::days(90),
            Purpose::Server,
        );
        Pki {
            ca,
            other_ca,
            client_ca,
            client,
            server,
            _dir: dir,
        }
    }

    /// Another server certificate from `ca` for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self, stem: &str, validity: Validity) -> Leaf {
        self.ca
            .leaf(stem, &["localhost", "127.0.0.1"], validity, Purpose::Server)
    }
}

/// Waits for `child` to print `listening PORT` (or anything it prints first, up to a
/// deadline); fails the test with its stderr if it exits or says nothing in time.
fn wait_listening(child: &mut Child, what: &str, stderr_file: &Path) -> u16 {
    let stdout = child.stdout.take().expect("stdout piped");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = send.send(line);
    });
    let line = receive.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|port| port.parse().ok());
    port.unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} did not start (it printed {line:?}): {}",
            std::fs::read_to_string(stderr_file).unwrap_or_default()
        )
    })
}

/// A real redis-server serving only TLS (`--port 0 --tls-port P`) on 127.0.0.1, with a
/// given certificate, asking for client certificates from the [`Pki`]'s client CA when
/// `mutual`. Logs at verbose level, so [`TlsRedis::accepted`] counts TCP connections.
/// Killed on drop.
pub struct TlsRedis {
    /// Its TLS port.
    pub port: u16,
    /// Whether it requires a client certificate (`--tls-auth-clients yes`).
    pub mutual: bool,
    child: Option<Child>,
    client_ca: PathBuf,
    client: Leaf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    /// Starts it on a free port with `cert`.
    pub fn start(pki: &Pki, cert: &Leaf, mutual: bool) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = TlsRedis {
            port: free_port(),
            mutual,
            child: None,
            client_ca: pki.client_ca.pem_file.clone(),
            client: pki.client.clone(),
            log: dir.path().join("redis.log"),
            dir,
        };
        redis.spawn(cert);
        redis
    }

    /// Stops it and starts it again on the same port with `cert` (e.g. an expired one).
    pub fn restart_with(&mut self, cert: &Leaf) {
        self.stop();
        self.spawn(cert);
    }

    fn spawn(&mut self, cert: &Leaf) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&cert.cert_file)
            .arg("--tls-key-file")
            .arg(&cert.key_file)
            .arg("--tls-ca-cert-file")
            .arg(&self.client_ca)
            .args(["--tls-auth-clients", if self.mutual { "yes" } else { "no" }])
            .args(["--loglevel", "verbose", "--logfile"])
            .arg(&self.log)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start redis-server ({err}); install it: apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = self.redis_cli(&["--insecure"], true, &["PING"]);
            if String::from_utf8_lossy(&ping.stdout).trim() == "PONG" {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "redis-server with TLS did not answer PING on port {} ({}): {}",
                self.port,
                exited.map_or("within 10 s".to_string(), |status| format!("it exited: {status}")),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `redis-cli --tls -p PORT` with `tls` options (e.g. `--cacert FILE`), this
    /// harness's client certificate if `with_client_cert`, and `command`.
    pub fn redis_cli(&self, tls: &[&str], with_client_cert: bool, command: &[&str]) -> Output {
        let mut cli = Command::new("redis-cli");
        cli.args(["--tls", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(tls);
        if with_client_cert {
            cli.arg("--cert")
                .arg(&self.client.cert_file)
                .arg("--key")
                .arg(&self.client.key_file);
        }
        cli.args(command).output().expect("redis-cli is installed")
    }

    /// `rediss://HOST:PORT`.
    pub fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.port)
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn grant(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// How many TCP connections it has accepted, TLS handshake or not (its own log's
    /// `Accepted` lines; the harness's readiness PING is one).
    pub fn accepted(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(" Accepted ")
            .count()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL 15 serving `cert` over TLS whose pg_hba.conf has only `hostssl` lines
/// (plaintext connections are refused); users and fixture as [`Postgres`].
pub fn tls_only_postgres(cert: &Leaf) -> Postgres {
    Postgres::start_with(PgTls::Only {
        cert: &cert.cert_file,
        key: &cert.key_file,
    })
}

/// A TLS server from `tests/e2e/tls_server.py` (Python's `ssl`, i.e. OpenSSL) on a free
/// 127.0.0.1 port: HTTPS, or SMTP with STARTTLS required (aiosmtpd). It logs each
/// connection's steps, so a test can see that a client sent nothing. Killed on drop.
pub struct PyTls {
    /// Its port.
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PyTls {
    /// An HTTPS server presenting `cert`; it requires a client certificate from
    /// `client_ca` if given. Answers every GET with 200 `{"status": "ok"}`.
    pub fn https(cert: &Leaf, client_ca: Option<&Path>) -> PyTls {
        PyTls::start("https", Path::new("python3"), cert, client_ca)
    }

    /// An SMTP server (aiosmtpd) presenting `cert` after STARTTLS.
    pub fn smtp(cert: &Leaf) -> PyTls {
        let python = workspace().join("target/tools/test-servers/bin/python3");
        assert!(
            python.is_file(),
            "{} is missing: run scripts/ensure-deps (it installs aiosmtpd from PyPI)",
            python.display()
        );
        PyTls::start("smtp", &python, cert, None)
    }

    fn start(mode: &str, python: &Path, cert: &Leaf, client_ca: Option<&Path>) -> PyTls {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.log");
        let stderr_file = dir.path().join("stderr");
        let mut command = Command::new(python);
        command
            .arg(workspace().join("tests/e2e/tls_server.py"))
            .arg(mode)
            .arg("--cert")
            .arg(&cert.cert_file)
            .arg("--key")
            .arg(&cert.key_file)
            .arg("--log")
            .arg(&log);
        if let Some(client_ca) = client_ca {
            command.arg("--client-ca").arg(client_ca);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {} ({err})", python.display()));
        let port = wait_listening(&mut child, &format!("the {mode} test server"), &stderr_file);
        PyTls {
            port,
            child,
            log,
            _dir: dir,
        }
    }

    /// What it logged so far, one event a line: `accept`, `no-data` or `client-hello`,
    /// `handshake-ok [client=CN]` or `handshake-failed: REASON`, `request METHOD PATH`.
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Whether any client sent it a byte (a TLS ClientHello or anything else).
    pub fn received_bytes(&self) -> bool {
        self.events().iter().any(|event| event == "client-hello")
    }
}

impl Drop for PyTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod self_tests {
    //! Each server against an independent client: if these fail, the TLS tests' servers
    //! are wrong, not runbox.

    use super::*;

    fn stdout(output: &Output) -> String {
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn both(output: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// notAfter as `openssl x509 -enddate` prints it, as seconds since the epoch.
    fn openssl_not_after(cert: &Path) -> u64 {
        let output = Command::new("openssl")
            .args(["x509", "-noout", "-dates", "-dateopt", "iso_8601", "-in"])
            .arg(cert)
            .output()
            .expect("openssl is installed");
        let text = stdout(&output);
        let end = text
            .lines()
            .find_map(|line| line.strip_prefix("notAfter="))
            .unwrap_or_else(|| panic!("no notAfter: {text}"));
        let output = Command::new("date").args(["-u", "-d", end, "+%s"]).output().unwrap();
        stdout(&output).parse().unwrap()
    }

    #[test]
    fn certificates_say_what_was_asked_for() {
        let pki = Pki::new();
        for validity in [
            Validity::days(90),
            Validity::days(3),
            Validity::expired(),
            Validity::not_yet_valid(),
        ] {
            let leaf = pki.server_cert("probe", validity);
            assert_eq!(
                openssl_not_after(&leaf.cert_file),
                leaf.validity.not_after.duration_since(UNIX_EPOCH).unwrap().as_secs()
            );
        }
        let verify = |ca: &Path, leaf: &Leaf, extra: &[&str]| {
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca)
                .args(extra)
                .arg(&leaf.cert_file)
                .output()
                .unwrap()
        };
        let ok = verify(
            &pki.ca.pem_file,
            &pki.server,
            &["-purpose", "sslserver", "-verify_hostname", "localhost"],
        );
        assert!(ok.status.success(), "{}", both(&ok));
        let ok = verify(&pki.ca.pem_file, &pki.server, &["-verify_ip", "127.0.0.1"]);
        assert!(ok.status.success(), "{}", both(&ok));
        let ok = verify(&pki.client_ca.pem_file, &pki.client, &["-purpose", "sslclient"]);
        assert!(ok.status.success(), "{}", both(&ok));
        let wrong = verify(&pki.other_ca.pem_file, &pki.server, &[]);
        assert!(!wrong.status.success(), "{}", both(&wrong));
        let expired = verify(&pki.ca.pem_file, &pki.server_cert("old", Validity::expired()), &[]);
        assert!(both(&expired).contains("certificate has expired"), "{}", both(&expired));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pki.server.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tls_redis_answers_redis_cli_and_refuses_what_it_should() {
        let pki = Pki::new();
        let ca = pki.ca.pem_file.to_str().unwrap();
        let mut redis = TlsRedis::start(&pki, &pki.server, false);
        let ok = redis.redis_cli(&["--cacert", ca], false, &["PING"]);
        assert_eq!(stdout(&ok), "PONG", "{}", both(&ok));
        let ok = redis.redis_cli(&["--cacert", ca, "--sni", "localhost"], false, &["PING"]);
        assert_eq!(stdout(&ok), "PONG", "{}", both(&ok));
        let other = pki.other_ca.pem_file.to_str().unwrap();
        let wrong = redis.redis_cli(&["--cacert", other], false, &["PING"]);
        assert_ne!(stdout(&wrong), "PONG", "{}", both(&wrong));
        // No plaintext port at all.
        let plain = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "PING"])
            .output()
            .unwrap();
        assert_ne!(stdout(&plain), "PONG", "{}", both(&plain));

        let before = redis.accepted();
        redis.redis_cli(&["--cacert", ca], false, &["PING"]);
        assert_eq!(redis.accepted(), before + 1, "{}", redis.log());

        let expired = pki.server_cert("expired", Validity::expired());
        let port = redis.port;
        redis.restart_with(&expired);
        assert_eq!(redis.port, port);
        let refused = redis.redis_cli(&["--cacert", ca], false, &["PING"]);
        assert!(
            both(&refused).contains("certificate verify failed"),
            "{}",
            both(&refused)
        );
        // It presents the expired certificate (redis-cli does not say why it failed).
        let shown = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-CAfile", ca])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            both(&shown).contains("Verify return code: 10 (certificate has expired)"),
            "{}",
            both(&shown)
        );
    }

    #[test]
    fn mutual_tls_redis_wants_the_client_certificate() {
        let pki = Pki::new();
        let ca = pki.ca.pem_file.to_str().unwrap();
        let redis = TlsRedis::start(&pki, &pki.server, true);
        let ok = redis.redis_cli(&["--cacert", ca], true, &["PING"]);
        assert_eq!(stdout(&ok), "PONG", "{}", both(&ok));
        let refused = redis.redis_cli(&["--cacert", ca], false, &["PING"]);
        assert_ne!(stdout(&refused), "PONG", "{}", both(&refused));
    }

    #[test]
    fn tls_only_postgres_takes_verify_full_and_refuses_plaintext() {
        let pki = Pki::new();
        let pg = tls_only_postgres(&pki.server);
        let psql = |conninfo: String| {
            Command::new("psql")
                .arg(conninfo)
                .args(["-At", "-c", "SELECT count(*) FROM recordings"])
                .output()
                .expect("psql is installed")
        };
        let base = format!("host=localhost port={} user=trust_user dbname=app", pg.port);
        let ok = psql(format!(
            "{base} sslmode=verify-full sslrootcert={}",
            pki.ca.pem_file.display()
        ));
        assert!(ok.status.success(), "{}", both(&ok));
        assert_eq!(stdout(&ok), "16");
        let plain = psql(format!("{base} sslmode=disable"));
        assert!(!plain.status.success());
        assert!(both(&plain).contains("no encryption"), "{}", both(&plain));
        let untrusted = psql(format!(
            "{base} sslmode=verify-full sslrootcert={}",
            pki.other_ca.pem_file.display()
        ));
        assert!(!untrusted.status.success(), "{}", both(&untrusted));

        let off = Postgres::start_with(PgTls::Off);
        let base = format!("host=127.0.0.1 port={} user=trust_user dbname=app", off.port);
        let refused = psql(format!("{base} sslmode=require"));
        assert!(
            both(&refused).contains("server does not support SSL"),
            "{}",
            both(&refused)
        );
        let fallback = psql(format!("{base} sslmode=prefer"));
        assert!(fallback.status.success(), "{}", both(&fallback));
    }

    #[test]
    fn python_https_answers_curl_with_the_right_ca_only() {
        let pki = Pki::new();
        let server = PyTls::https(&pki.server, None);
        let curl = |extra: &[&str]| {
            Command::new("curl")
                .args(["-sS", "--max-time", "10", "--noproxy", "*"])
                .args(extra)
                .arg(format!("https://localhost:{}/health", server.port))
                .output()
                .expect("curl is installed")
        };
        let ok = curl(&["--cacert", pki.ca.pem_file.to_str().unwrap()]);
        assert_eq!(stdout(&ok), r#"{"status": "ok"}"#, "{}", both(&ok));
        let untrusted = curl(&["--cacert", pki.other_ca.pem_file.to_str().unwrap()]);
        assert!(!untrusted.status.success(), "{}", both(&untrusted));
        // The server logs a failed handshake after curl has given up: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.events().iter().any(|e| e.starts_with("handshake-failed")) {
            assert!(Instant::now() < deadline, "{:?}", server.events());
            std::thread::sleep(Duration::from_millis(20));
        }
        let events = server.events();
        assert!(events.contains(&"request GET /health".to_string()), "{events:?}");

        // A client that connects and sends nothing is logged as such.
        let silent = PyTls::https(&pki.server, None);
        drop(std::net::TcpStream::connect(("127.0.0.1", silent.port)).unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !silent.events().contains(&"no-data".to_string()) {
            assert!(Instant::now() < deadline, "{:?}", silent.events());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!silent.received_bytes());

        let mutual = PyTls::https(&pki.server, Some(&pki.client_ca.pem_file));
        let url = format!("https://127.0.0.1:{}/", mutual.port);
        let with_cert = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--noproxy", "*", "--cacert"])
            .arg(&pki.ca.pem_file)
            .arg("--cert")
            .arg(&pki.client.cert_file)
            .arg("--key")
            .arg(&pki.client.key_file)
            .arg(&url)
            .output()
            .unwrap();
        assert_eq!(stdout(&with_cert), r#"{"status": "ok"}"#, "{}", both(&with_cert));
        let without = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--noproxy", "*", "--cacert"])
            .arg(&pki.ca.pem_file)
            .arg(&url)
            .output()
            .unwrap();
        assert!(!without.status.success(), "{}", both(&without));
        assert!(
            mutual
                .events()
                .contains(&"handshake-ok client=runbox-e2e-client".to_string()),
            "{:?}",
            mutual.events()
        );
    }

    #[test]
    fn smtp_offers_starttls_with_the_certificate() {
        let pki = Pki::new();
        let server = PyTls::smtp(&pki.server);
        let mut s_client = Command::new("openssl")
            .args([
                "s_client",
                "-starttls",
                "smtp",
                "-verify_return_error",
                "-verify_hostname",
                "localhost",
            ])
            .arg("-CAfile")
            .arg(&pki.ca.pem_file)
            .arg("-connect")
            .arg(format!("127.0.0.1:{}", server.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        s_client.stdin.take().unwrap().write_all(b"QUIT\r\n").unwrap();
        let output = s_client.wait_with_output().unwrap();
        assert!(
            both(&output).contains("Verify return code: 0 (ok)"),
            "{}",
            both(&output)
        );
    }
}
