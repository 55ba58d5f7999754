//! TLS: the trust a step grants, and the one place every TLS connection a plugin makes
//! is made — `wasi:tls` handshakes (through [`TlsProvider`]) and `https` requests
//! (through [`super::http`]) alike.
//!
//! A step's [`Trust`] is the system's root certificates plus the CA files the step names
//! (`--ca`, `tls: {ca: …}`), its client certificate for mutual TLS (a file or a secret),
//! and whether certificates are verified at all (`tls: {verify: false}`, never implied).
//! TLS 1.2 is the minimum. Every handshake is a fresh one (no session resumption), so
//! each sees and verifies the server's whole chain.
//!
//! The server name a plugin asks `wasi:tls` for must be covered by the step's grants
//! ([`NetworkPolicy::check_tls_name`]); HTTPS names were already decided with the
//! request. Each handshake is recorded in the invocation's [`Handshakes`] — the chain
//! the server presented and why it was accepted or refused — which the
//! `runbox:tls/handshakes` interface shows the plugin, and its failure becomes an error
//! that names the problem ("certificate expired", "unknown issuer", "name mismatch",
//! "client certificate").

use super::network::NetworkPolicy;
use super::secrets::SecretGrant;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// TLS connections one invocation may hold open at once. Each keeps some tens of KiB of
/// buffers in the host, outside the plugin's memory limit.
pub const MAX_OPEN_CONNECTIONS: usize = 32;

/// Largest CA or client-certificate file runbox reads.
const MAX_PEM_FILE_BYTES: u64 = 4 << 20;

/// What a step says about TLS, as written (`--ca`, `--client-cert`, `--client-key`,
/// `--tls-no-verify`; a runbook step's `tls:`). [`Trust::build`] turns it into trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA bundles (PEM) trusted besides the system's roots.
    pub ca: Vec<PathBuf>,
    /// The client certificate chain (PEM), for servers that require one.
    pub client_cert: Option<PemSource>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PemSource>,
    /// Whether server certificates are verified. Only an explicit `verify: false` turns
    /// it off.
    pub verify: bool,
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            ca: Vec::new(),
            client_cert: None,
            client_key: None,
            verify: true,
        }
    }
}

impl TlsSettings {
    /// Whether these are the defaults (system roots, no client certificate, verified).
    pub fn is_default(&self) -> bool {
        *self == TlsSettings::default()
    }

    /// The secrets these settings read (a client certificate or key held in a secret).
    /// The host reads them; the plugin never can.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        [&self.client_cert, &self.client_key]
            .into_iter()
            .filter_map(|source| match source {
                Some(PemSource::Secret(name)) => Some(name.as_str()),
                _ => None,
            })
    }
}

/// The note a step with `tls: {verify: false}` carries in `validate` and in its result.
pub const VERIFY_OFF_NOTE: &str = "TLS certificate verification is off for this step (tls: {verify: false}, or --tls-no-verify): \
     connections are encrypted but the server is not authenticated";

/// Where a PEM item comes from: a file, or a secret the step grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file (relative paths are resolved by whoever builds the settings).
    File(PathBuf),
    /// A secret, by name (`secret:NAME` on the command line, `{secret: NAME}` in a runbook).
    Secret(String),
}

impl PemSource {
    /// Parses a command-line value: `secret:NAME` or a file path.
    pub fn parse(text: &str) -> PemSource {
        match text.strip_prefix("secret:") {
            Some(name) => PemSource::Secret(name.to_string()),
            None => PemSource::File(PathBuf::from(text)),
        }
    }

    fn read(&self, what: &str, secrets: &[SecretGrant]) -> Result<Vec<u8>, String> {
        match self {
            PemSource::File(path) => read_pem_file(path, what),
            PemSource::Secret(name) => {
                let grant = secrets.iter().find(|grant| grant.name == *name).ok_or_else(|| {
                    format!("{what}: secret `{name}` is not defined (define it with --secret {name}=env:VAR or file:PATH, or under the step's `secrets:`)")
                })?;
                grant.resolve().map(String::into_bytes)
            }
        }
    }
}

impl fmt::Display for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(path) => write!(f, "{}", path.display()),
            PemSource::Secret(name) => write!(f, "secret `{name}`"),
        }
    }
}

fn read_pem_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|err| format!("{what} {}: {err}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("{what} {}: {err}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(format!(
            "{what} {}: larger than {} MiB; is it a PEM file?",
            path.display(),
            MAX_PEM_FILE_BYTES >> 20
        ));
    }
    Ok(bytes)
}

/// The ring crypto provider every runbox TLS connection uses.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// The system's root certificates (rustls-native-certs: the platform store, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`), read once per process when a TLS connection first
/// needs them. A system without any falls back to the Mozilla roots of `webpki-roots`.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: LazyLock<RootCertStore> = LazyLock::new(|| {
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            tracing::debug!(error = %err, "reading the system's root certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system root certificates");
        if roots.is_empty() {
            tracing::debug!("no system root certificates: using the Mozilla roots of webpki-roots");
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    });
    &ROOTS
}

/// A step's TLS trust, built once per step: its CA certificates, its client
/// certificate, and whether it verifies. The verifier, which needs the system's roots,
/// is made at the first handshake: a run that makes none never reads the system store.
pub struct Trust {
    /// The step's own CA certificates (checked usable when the trust was built).
    ca: RootCertStore,
    verifier: OnceLock<Arc<WebPkiServerVerifier>>,
    client: Option<Arc<CertifiedKey>>,
    verify: bool,
    /// Secrets the client identity was read from, withheld from the plugin.
    secret_names: Vec<String>,
    /// Their values (PEM), so no other grant hands them to the plugin.
    secret_values: Vec<String>,
    /// For logs: "system roots + ca.pem".
    description: String,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("roots", &self.description)
            .field("client_certificate", &self.client.is_some())
            .field("verify", &self.verify)
            .finish()
    }
}

impl Default for Trust {
    /// The system's roots, no client certificate, verified.
    fn default() -> Trust {
        Trust::build(&TlsSettings::default(), &[]).expect("no files or secrets to read")
    }
}

impl Trust {
    /// The default trust (system roots, verified), shared by every step that says
    /// nothing about TLS.
    pub fn system() -> Arc<Trust> {
        static SYSTEM: LazyLock<Arc<Trust>> = LazyLock::new(|| Arc::new(Trust::default()));
        SYSTEM.clone()
    }

    /// Reads the CA files and the client certificate `settings` name (secrets from
    /// `secrets`) and builds the trust. Errors name the file or secret and what is wrong.
    pub fn build(settings: &TlsSettings, secrets: &[SecretGrant]) -> Result<Trust, String> {
        let mut ca = RootCertStore::empty();
        let mut description = String::from("system roots");
        for path in &settings.ca {
            let bytes = read_pem_file(path, "CA file")?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                let cert = cert.map_err(|err| format!("CA file {}: not valid PEM: {err}", path.display()))?;
                ca.add(cert)
                    .map_err(|err| format!("CA file {}: a certificate runbox cannot use: {err}", path.display()))?;
                found += 1;
            }
            if found == 0 {
                return Err(format!(
                    "CA file {}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)",
                    path.display()
                ));
            }
            description.push_str(&format!(" + {}", path.display()));
        }
        let client = match (&settings.client_cert, &settings.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Arc::new(client_identity(cert, key, secrets)?)),
            (Some(_), None) => {
                return Err("a client certificate needs its key too (--client-key, or tls: {client_key: …})".into());
            }
            (None, Some(_)) => {
                return Err("a client key needs its certificate too (--client-cert, or tls: {client_cert: …})".into());
            }
        };
        Ok(Trust {
            ca,
            verifier: OnceLock::new(),
            client,
            verify: settings.verify,
            secret_names: settings.secret_names().map(str::to_string).collect(),
            secret_values: settings
                .secret_names()
                .filter_map(|name| secrets.iter().find(|grant| grant.name == name))
                .filter_map(|grant| grant.resolve().ok())
                .collect(),
            description,
        })
    }

    /// The secrets this trust's client identity came from: the host's, never the plugin's.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secret_names.iter().map(String::as_str)
    }

    /// The values of [`Trust::secret_names`]: no environment grant may carry them either.
    pub fn secret_values(&self) -> &[String] {
        &self.secret_values
    }

    /// Whether this trust verifies server certificates.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The verifier of the system's roots plus the step's CAs, made on first use.
    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        self.verifier
            .get_or_init(|| {
                let mut roots = system_roots().clone();
                roots.roots.extend(self.ca.roots.iter().cloned());
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .expect("the system roots, or webpki-roots where it has none, are never empty")
            })
            .clone()
    }

    /// A client configuration for one handshake, whose verifier records the chain the
    /// server presents into `seen`. A new configuration per handshake: no session is
    /// resumed, so every handshake verifies a whole chain.
    fn client_config(&self, seen: Arc<Mutex<Vec<CertificateDer<'static>>>>) -> Arc<rustls::ClientConfig> {
        let verifier = Arc::new(RecordingVerifier {
            inner: self.verifier(),
            verify: self.verify,
            seen,
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client {
            Some(identity) => builder.with_client_cert_resolver(Arc::new(OneClientCert(identity.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    /// Secures `transport` for `server_name` with this trust within `deadline`, and
    /// records the handshake in `log`. The one TLS path of the host: `wasi:tls`
    /// handshakes and `https` requests both come here.
    pub async fn handshake<T>(
        &self,
        server_name: &str,
        transport: T,
        log: &Handshakes,
        deadline: Instant,
    ) -> Result<TlsConnection<T>, Failure>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let name = match parse_server_name(server_name) {
            Ok(name) => name,
            Err(failure) => return Err(log.finish(server_name, self.verify, Vec::new(), Err(failure), None).1),
        };
        let Some(slot) = log.open_slot() else {
            let failure = Failure::new(
                Problem::Other,
                format!("more than {MAX_OPEN_CONNECTIONS} TLS connections open at once in one invocation"),
            );
            return Err(log.finish(server_name, self.verify, Vec::new(), Err(failure), None).1);
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connector = tokio_rustls::TlsConnector::from(self.client_config(seen.clone()));
        let result = tokio::time::timeout_at(deadline.into(), connector.connect(name, transport)).await;
        let chain = std::mem::take(&mut *seen.lock().unwrap());
        match result {
            Ok(Ok(stream)) => {
                let session = stream.get_ref().1;
                let negotiated = Negotiated {
                    protocol: session.protocol_version().map(|version| match version {
                        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                        other => format!("{other:?}"),
                    }),
                    cipher_suite: session
                        .negotiated_cipher_suite()
                        .and_then(|suite| suite.suite().as_str())
                        .map(str::to_string),
                };
                let (id, _) = log.finish(server_name, self.verify, chain, Ok(()), Some(negotiated));
                Ok(TlsConnection {
                    inner: stream,
                    _slot: slot,
                    server_name: server_name.to_string(),
                    id,
                    read_any: false,
                })
            }
            Ok(Err(err)) => {
                let failure = Failure::from_io(server_name, &err);
                Err(log.finish(server_name, self.verify, chain, Err(failure), None).1)
            }
            Err(_) => {
                let failure = Failure::new(Problem::TimedOut, format!("TLS handshake with {server_name} timed out"));
                Err(log.finish(server_name, self.verify, chain, Err(failure), None).1)
            }
        }
    }
}

fn client_identity(cert: &PemSource, key: &PemSource, secrets: &[SecretGrant]) -> Result<CertifiedKey, String> {
    let cert_pem = cert.read("client certificate", secrets)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("client certificate {cert}: not valid PEM: {err}"))?;
    if chain.is_empty() {
        return Err(format!(
            "client certificate {cert}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)"
        ));
    }
    let key_pem = key.read("client key", secrets)?;
    // Never quote the key or the parser's view of it in an error.
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        format!("client key {key}: no private key in it (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)")
    })?;
    CertifiedKey::from_der(chain, key_der, &provider())
        .map_err(|err| format!("client certificate {cert} with key {key}: {err}"))
}

/// Presents the step's one client certificate whenever a server asks for one.
#[derive(Debug)]
struct OneClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OneClientCert {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies with the step's roots (unless the step turned verification off) and keeps
/// the chain the server presented, verified or not, for [`Handshakes`]. Handshake
/// signatures are always checked: with verification off the server is not
/// authenticated, but the connection is still what it says.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verify: bool,
    seen: Arc<Mutex<Vec<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|cert| cert.clone().into_owned())
            .collect();
        if self.verify {
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        } else {
            Ok(ServerCertVerified::assertion())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, cert, dss)
            .map_err(forged_signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, cert, dss)
            .map_err(forged_signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server's handshake signature does not verify with its certificate's key: it does
/// not hold that key (whether the certificate is trusted or not).
#[derive(Debug)]
struct ForgedSignature;

impl fmt::Display for ForgedSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the server's handshake signature does not match its certificate: it does not hold the certificate's key",
        )
    }
}

impl std::error::Error for ForgedSignature {}

/// A bad handshake signature as its own error, so it is not read as a badly signed chain.
fn forged_signature(err: rustls::Error) -> rustls::Error {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(ForgedSignature))))
        }
        other => other,
    }
}

/// `example.com`, `127.0.0.1`, `::1` or `[::1]` as a rustls server name.
fn parse_server_name(text: &str) -> Result<ServerName<'static>, Failure> {
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = IpAddr::from_str(bare) {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(bare.to_ascii_lowercase()).map_err(|_| {
        Failure::new(
            Problem::Other,
            format!(
                "`{}` is not a server name (a DNS name or an IP address)",
                crate::text::cut(text.to_string(), 256)
            ),
        )
    })
}

/// Why a handshake failed, for the plugin (`runbox:tls/handshakes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A certificate is past its notAfter.
    Expired,
    /// A certificate is before its notBefore.
    NotYetValid,
    /// The certificate is not valid for the server name.
    NameMismatch,
    /// The chain does not lead to a trusted root.
    UnknownIssuer,
    /// The server wanted a client certificate, or refused ours.
    ClientCertificate,
    /// The server name is not granted.
    Denied,
    /// The handshake did not finish by the deadline (`other` to the plugin).
    TimedOut,
    /// Anything else.
    Other,
}

/// A failed handshake: what kind, and the message the plugin gets as its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind.
    pub problem: Problem,
    /// The message.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    fn new(problem: Problem, message: String) -> Failure {
        Failure { problem, message }
    }

    /// A denial of `server_name` (the policy recorded it).
    pub fn denied(server_name: &str, remedy: &str) -> Failure {
        Failure::new(
            Problem::Denied,
            format!("TLS server name `{server_name}` is not granted to this step: {remedy}"),
        )
    }

    /// Classifies an error of the handshake (or of a read just after it, where TLS 1.3
    /// servers report a refused client certificate).
    pub fn from_io(server_name: &str, err: &std::io::Error) -> Failure {
        match err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => Failure::from_rustls(server_name, tls),
            None => Failure::new(
                Problem::Other,
                format!("TLS handshake with {server_name} failed: {err}"),
            ),
        }
    }

    fn from_rustls(server_name: &str, err: &rustls::Error) -> Failure {
        use rustls::Error as E;
        let (problem, what) = match err {
            E::InvalidCertificate(cert) => match cert {
                CertificateError::Expired => (Problem::Expired, "certificate expired".to_string()),
                CertificateError::ExpiredContext { not_after, .. } => (
                    Problem::Expired,
                    format!("certificate expired (notAfter {})", rfc3339(not_after)),
                ),
                CertificateError::NotValidYet => (Problem::NotYetValid, "certificate not yet valid".to_string()),
                CertificateError::NotValidYetContext { not_before, .. } => (
                    Problem::NotYetValid,
                    format!("certificate not yet valid (notBefore {})", rfc3339(not_before)),
                ),
                CertificateError::NotValidForName => (
                    Problem::NameMismatch,
                    format!("name mismatch: the certificate is not valid for {server_name}"),
                ),
                CertificateError::NotValidForNameContext { presented, .. } => (
                    Problem::NameMismatch,
                    format!(
                        "name mismatch: the certificate is valid for {}, not {server_name}",
                        crate::text::cut(presented.join(", "), 512)
                    ),
                ),
                CertificateError::UnknownIssuer => (
                    Problem::UnknownIssuer,
                    "unknown issuer: the certificate does not chain to a trusted CA (add its CA with --ca FILE or tls: {ca: FILE})".to_string(),
                ),
                // Signed by another key than the trusted CA of the issuer's name: as untrusted
                // as an unknown issuer (two CAs of one name, or a forged chain).
                CertificateError::BadSignature => (
                    Problem::UnknownIssuer,
                    "unknown issuer: the certificate is not signed by the trusted CA it names (add its real CA with --ca FILE or tls: {ca: FILE})".to_string(),
                ),
                CertificateError::Other(other) if other.0.is::<ForgedSignature>() => {
                    (Problem::Other, other.0.to_string())
                }
                other => (Problem::Other, format!("invalid certificate: {other:?}")),
            },
            E::AlertReceived(alert) => match alert {
                AlertDescription::CertificateRequired => (
                    Problem::ClientCertificate,
                    "the server requires a client certificate (add --client-cert/--client-key or tls: {client_cert, client_key})".to_string(),
                ),
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::AccessDenied => (
                    Problem::ClientCertificate,
                    format!("the server refused the client certificate (alert: {alert:?})"),
                ),
                AlertDescription::HandshakeFailure => (
                    Problem::Other,
                    "the server ended the handshake (alert: handshake failure; if it requires a client certificate, add one with --client-cert/--client-key or tls: {client_cert, client_key})".to_string(),
                ),
                other => (Problem::Other, format!("the server sent alert {other:?}")),
            },
            other => (Problem::Other, other.to_string()),
        };
        Failure::new(problem, format!("TLS handshake with {server_name} failed: {what}"))
    }
}

fn rfc3339(time: &UnixTime) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(time.as_secs()))
        .to_string()
}

/// Protocol and cipher suite of a completed handshake.
struct Negotiated {
    protocol: Option<String>,
    cipher_suite: Option<String>,
}

/// One handshake as the host saw it (`runbox:tls/handshakes.handshake`).
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Which handshake of the invocation (1, 2, ...).
    id: usize,
    /// The name the plugin asked for.
    pub server_name: String,
    /// DER, leaf first.
    pub certificates: Vec<Vec<u8>>,
    /// Whether the chain was verified.
    pub verified: bool,
    /// How it ended.
    pub outcome: Result<(), Failure>,
    /// `TLSv1.3`, once negotiated.
    pub protocol: Option<String>,
    /// The cipher suite, once negotiated.
    pub cipher_suite: Option<String>,
}

/// The TLS handshakes of one invocation: the last one (for the plugin), how many were
/// made and whether one was unverified (for the result), and the connections open now.
#[derive(Debug, Default)]
pub struct Handshakes {
    last: Mutex<Option<Handshake>>,
    made: AtomicUsize,
    unverified: AtomicUsize,
    open: Arc<AtomicUsize>,
}

/// Holds one of [`MAX_OPEN_CONNECTIONS`] until dropped.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handshakes {
    fn open_slot(&self) -> Option<Slot> {
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.open.clone());
        (open < MAX_OPEN_CONNECTIONS).then_some(slot)
    }

    /// Records a handshake and logs the decision; returns its failure, if any.
    fn finish(
        &self,
        server_name: &str,
        verified: bool,
        chain: Vec<CertificateDer<'static>>,
        outcome: Result<(), Failure>,
        negotiated: Option<Negotiated>,
    ) -> (usize, Failure) {
        let id = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        // Only a connection that was made without verification makes a result rest on an
        // unauthenticated server.
        if !verified && outcome.is_ok() {
            self.unverified.fetch_add(1, Ordering::Relaxed);
        }
        match &outcome {
            Ok(()) => tracing::debug!(
                server_name,
                verified,
                certificates = chain.len(),
                decision = "allowed",
                outcome = "ok",
                "TLS handshake"
            ),
            Err(failure) => tracing::debug!(
                server_name,
                verified,
                certificates = chain.len(),
                problem = ?failure.problem,
                outcome = %failure.message,
                "TLS handshake"
            ),
        }
        let failure = outcome
            .clone()
            .err()
            .unwrap_or_else(|| Failure::new(Problem::Other, String::new()));
        let (protocol, cipher_suite) = negotiated.map_or((None, None), |n| (n.protocol, n.cipher_suite));
        *self.last.lock().unwrap() = Some(Handshake {
            id,
            server_name: crate::text::cut(server_name.to_string(), 256),
            certificates: chain.into_iter().map(|cert| cert.to_vec()).collect(),
            verified,
            outcome,
            protocol,
            cipher_suite,
        });
        (id, failure)
    }

    /// Records a handshake the policy refused before anything was sent.
    pub fn denied(&self, server_name: &str, failure: Failure, verified: bool) -> Failure {
        self.finish(server_name, verified, Vec::new(), Err(failure), None).1
    }

    /// Records a failure right after handshake `id` (a TLS 1.3 server refusing the
    /// client's certificate says so on the first read) as that handshake's outcome, if it
    /// is still the last one.
    fn failed_after(&self, id: usize, failure: &Failure) {
        if let Some(last) = self.last.lock().unwrap().as_mut()
            && last.id == id
            && last.outcome.is_ok()
        {
            last.outcome = Err(failure.clone());
        }
    }

    /// The most recent handshake.
    pub fn last(&self) -> Option<Handshake> {
        self.last.lock().unwrap().clone()
    }

    /// Whether any handshake of this invocation went unverified.
    pub fn any_unverified(&self) -> bool {
        self.unverified.load(Ordering::Relaxed) > 0
    }
}

/// A TLS connection the host made for a plugin: the stream, its place among the
/// invocation's open connections, and the server name for errors after the handshake.
pub struct TlsConnection<T> {
    inner: tokio_rustls::client::TlsStream<T>,
    _slot: Slot,
    server_name: String,
    /// Its handshake's record.
    id: usize,
    /// Whether application data has arrived (after that, a TLS error is the
    /// connection's, not the handshake's).
    read_any: bool,
}

impl<T> TlsConnection<T> {
    /// Turns a TLS error the server reported before any application data (a refused
    /// client certificate) into a [`Failure`] message, keeping its kind, and records it
    /// as the handshake's outcome. Later errors pass as they are.
    fn explain(&self, err: std::io::Error, log: &Handshakes) -> std::io::Error {
        let is_tls = err.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
        if !is_tls || self.read_any {
            return err;
        }
        let failure = Failure::from_io(&self.server_name, &err);
        log.failed_after(self.id, &failure);
        std::io::Error::new(err.kind(), failure)
    }
}

/// [`TlsConnection`] with the invocation's [`Handshakes`], so a failure after the
/// handshake updates its record.
pub struct LoggedConnection<T> {
    conn: TlsConnection<T>,
    log: Arc<Handshakes>,
}

impl<T> LoggedConnection<T> {
    /// `conn`, reporting late failures into `log`.
    pub fn new(conn: TlsConnection<T>, log: Arc<Handshakes>) -> LoggedConnection<T> {
        LoggedConnection { conn, log }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for LoggedConnection<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.conn.inner).poll_read(cx, buf) {
            Poll::Ready(Err(err)) => Poll::Ready(Err(this.conn.explain(err, &this.log))),
            Poll::Ready(Ok(())) => {
                this.conn.read_any |= buf.filled().len() > before;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LoggedConnection<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.conn.inner).poll_write(cx, buf) {
            Poll::Ready(Err(err)) => Poll::Ready(Err(this.conn.explain(err, &this.log))),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.conn.inner).poll_flush(cx) {
            Poll::Ready(Err(err)) => Poll::Ready(Err(this.conn.explain(err, &this.log))),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.conn.inner).poll_shutdown(cx)
    }
}

/// The `wasi:tls` provider of one invocation: decides the server name with the step's
/// network policy, then makes the handshake with the step's trust.
pub struct TlsProvider {
    policy: Arc<NetworkPolicy>,
    trust: Arc<Trust>,
    log: Arc<Handshakes>,
    deadline: Instant,
}

impl TlsProvider {
    /// The provider of an invocation with `policy` and `trust`, recording into `log`.
    pub fn new(policy: Arc<NetworkPolicy>, trust: Arc<Trust>, log: Arc<Handshakes>, deadline: Instant) -> TlsProvider {
        TlsProvider {
            policy,
            trust,
            log,
            deadline,
        }
    }
}

impl wasmtime_wasi_tls::TlsStream for LoggedConnection<Coalesce<Box<dyn wasmtime_wasi_tls::TlsTransport>>> {}

/// Hands the transport each batch of TLS records rustls writes as one write. The
/// transport of a `wasi:tls` handshake is the plugin's socket stream, which writes one
/// buffer per call on a socket with Nagle's algorithm on (wasi:sockets 0.2 cannot turn it
/// off): the client's last flight (ChangeCipherSpec, Finished) went out as two segments,
/// and the second waited for the server's delayed ACK, some 40 ms, before the first byte
/// of the plugin's request could follow.
pub struct Coalesce<T>(pub T);

/// Most bytes joined into one write (a TLS record is at most some 16 KiB).
const MAX_COALESCED_BYTES: usize = 64 << 10;

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut nonempty = bufs.iter().filter(|buf| !buf.is_empty());
        let (Some(first), Some(_)) = (nonempty.next(), nonempty.next()) else {
            let only = bufs.iter().find(|buf| !buf.is_empty()).map_or(&[][..], |buf| &buf[..]);
            return Pin::new(&mut self.0).poll_write(cx, only);
        };
        let mut joined = Vec::with_capacity(MAX_COALESCED_BYTES.min(bufs.iter().map(|buf| buf.len()).sum()));
        joined.extend_from_slice(&first[..first.len().min(MAX_COALESCED_BYTES)]);
        for buf in bufs.iter().skip_while(|buf| buf.is_empty()).skip(1) {
            let room = MAX_COALESCED_BYTES - joined.len();
            if room == 0 {
                break;
            }
            joined.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        // A write of part of `joined` reports that many bytes of `bufs`, as vectored writes may.
        Pin::new(&mut self.0).poll_write(cx, &joined)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl wasmtime_wasi_tls::TlsProvider for TlsProvider {
    fn connect(
        &self,
        server_name: String,
        transport: Box<dyn wasmtime_wasi_tls::TlsTransport>,
    ) -> Pin<Box<dyn Future<Output = Result<Box<dyn wasmtime_wasi_tls::TlsStream>, wasmtime_wasi_tls::Error>> + Send>>
    {
        let (policy, trust, log, deadline) = (self.policy.clone(), self.trust.clone(), self.log.clone(), self.deadline);
        Box::pin(async move {
            if let Err(denial) = policy.check_tls_name(&server_name) {
                let failure = Failure::denied(&crate::text::cut(server_name.clone(), 256), &denial.remedy);
                let failure = log.denied(&server_name, failure, trust.verify);
                return Err(wasmtime_wasi_tls::Error::msg(failure));
            }
            match trust.handshake(&server_name, Coalesce(transport), &log, deadline).await {
                Ok(conn) => Ok(Box::new(LoggedConnection::new(conn, log)) as Box<dyn wasmtime_wasi_tls::TlsStream>),
                Err(failure) => Err(wasmtime_wasi_tls::Error::msg(failure)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_parse_as_dns_names_or_addresses() {
        assert!(matches!(parse_server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(parse_server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(parse_server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(
            matches!(parse_server_name("DB.Internal"), Ok(ServerName::DnsName(name)) if name.as_ref() == "db.internal")
        );
        let failure = parse_server_name("not a name\u{1b}").unwrap_err();
        assert_eq!(failure.problem, Problem::Other);
    }

    #[test]
    fn certificate_errors_name_the_problem() {
        let expired = Failure::from_rustls(
            "db",
            &rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_000_000_000)),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_900_000_000)),
            }),
        );
        assert_eq!(expired.problem, Problem::Expired);
        assert!(
            expired
                .message
                .contains("certificate expired (notAfter 2030-03-17T17:46:40Z)"),
            "{}",
            expired.message
        );
        let unknown = Failure::from_rustls(
            "db",
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(unknown.problem, Problem::UnknownIssuer);
        assert!(unknown.message.contains("unknown issuer"));
        let name = Failure::from_rustls(
            "db",
            &rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        );
        assert_eq!(name.problem, Problem::NameMismatch);
        assert!(name.message.contains("name mismatch"));
        let client = Failure::from_rustls(
            "db",
            &rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        assert_eq!(client.problem, Problem::ClientCertificate);
        assert!(client.message.contains("client certificate"));
    }

    #[test]
    fn settings_need_both_halves_of_a_client_identity_and_real_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let settings = TlsSettings {
            ca: vec![empty.clone()],
            ..TlsSettings::default()
        };
        let err = Trust::build(&settings, &[]).unwrap_err();
        assert!(
            err.contains("no certificate in it") && err.contains("empty.pem"),
            "{err}"
        );
        let missing = TlsSettings {
            ca: vec![dir.path().join("missing.pem")],
            ..TlsSettings::default()
        };
        assert!(Trust::build(&missing, &[]).unwrap_err().contains("missing.pem"));
        let half = TlsSettings {
            client_cert: Some(PemSource::File(empty)),
            ..TlsSettings::default()
        };
        assert!(Trust::build(&half, &[]).unwrap_err().contains("needs its key"));
        let undefined = TlsSettings {
            client_cert: Some(PemSource::Secret("cert".into())),
            client_key: Some(PemSource::Secret("key".into())),
            ..TlsSettings::default()
        };
        assert!(
            Trust::build(&undefined, &[])
                .unwrap_err()
                .contains("secret `cert` is not defined")
        );
    }

    #[test]
    fn open_connections_are_capped_and_released() {
        let log = Handshakes::default();
        let slots: Vec<Slot> = (0..MAX_OPEN_CONNECTIONS).map(|_| log.open_slot().unwrap()).collect();
        assert!(log.open_slot().is_none());
        drop(slots);
        assert!(log.open_slot().is_some());
    }

    /// A CA made here, and leaf certificates it signs.
    struct Pki {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        pem: String,
    }

    impl Pki {
        fn new() -> Pki {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(
                rcgen::DnType::CommonName,
                format!("runbox test CA {:016x}", rand::random::<u64>()),
            );
            let cert = params.self_signed(&key).unwrap();
            Pki {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        fn leaf(&self, names: &[&str], expired: bool) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params =
                rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
            if expired {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
        }

        fn file(&self, dir: &Path, name: &str) -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, &self.pem).unwrap();
            path
        }
    }

    /// A TLS server on 127.0.0.1 that answers every connection with "hello" and counts
    /// the connections that reached it.
    async fn serve(config: rustls::ServerConfig) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(socket).await {
                        let _ = tls.write_all(b"hello").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn server_config(
        leaf: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        client_ca: Option<&Pki>,
    ) -> rustls::ServerConfig {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
                    .unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        builder.with_single_cert(leaf.0, leaf.1).unwrap()
    }

    async fn read_all<T: AsyncRead + Unpin>(mut stream: T) -> std::io::Result<String> {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text).await?;
        Ok(text)
    }

    fn in_5s() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    /// The trust of a step with `verify: false` and nothing else.
    fn without_verification() -> Trust {
        Trust::build(
            &TlsSettings {
                verify: false,
                ..TlsSettings::default()
            },
            &[],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_step_trusts_its_ca_files_and_records_what_the_server_presented() {
        let (ca, other) = (Pki::new(), Pki::new());
        let dir = tempfile::tempdir().unwrap();
        let leaf = ca.leaf(&["localhost", "127.0.0.1"], false);
        let presented = leaf.0[0].to_vec();
        let (addr, _) = serve(server_config(leaf, None)).await;
        let trusting = |file: PathBuf| {
            Trust::build(
                &TlsSettings {
                    ca: vec![file],
                    ..TlsSettings::default()
                },
                &[],
            )
            .unwrap()
        };
        let log = Handshakes::default();
        for name in ["localhost", "127.0.0.1"] {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let conn = trusting(ca.file(dir.path(), "ca.pem"))
                .handshake(name, tcp, &log, in_5s())
                .await
                .unwrap();
            assert_eq!(read_all(conn.inner).await.unwrap(), "hello");
            let seen = log.last().unwrap();
            assert_eq!(seen.server_name, name);
            assert!(seen.outcome.is_ok() && seen.verified);
            assert_eq!(seen.certificates, vec![presented.clone()]);
            assert!(seen.protocol.as_deref() == Some("TLSv1.3") && seen.cipher_suite.is_some());
        }
        // Another CA's file, and the system roots alone: unknown issuer, chain still recorded.
        for trust in [trusting(other.file(dir.path(), "other.pem")), Trust::default()] {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let failure = trust.handshake("localhost", tcp, &log, in_5s()).await.err().unwrap();
            assert_eq!(failure.problem, Problem::UnknownIssuer, "{failure}");
            assert!(failure.message.contains("unknown issuer"), "{failure}");
            assert_eq!(log.last().unwrap().certificates, vec![presented.clone()]);
        }
        // A name the certificate does not carry.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let failure = trusting(ca.file(dir.path(), "ca.pem"))
            .handshake("db.internal", tcp, &log, in_5s())
            .await
            .err()
            .unwrap();
        assert_eq!(failure.problem, Problem::NameMismatch, "{failure}");
        // Verification off: the handshake completes, and says it was not verified.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let unverified = without_verification();
        let log = Handshakes::default();
        let conn = unverified.handshake("db.internal", tcp, &log, in_5s()).await.unwrap();
        assert_eq!(read_all(conn.inner).await.unwrap(), "hello");
        assert!(!log.last().unwrap().verified && log.any_unverified());
    }

    #[tokio::test]
    async fn an_expired_certificate_is_refused_as_expired() {
        let ca = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let (addr, _) = serve(server_config(ca.leaf(&["localhost"], true), None)).await;
        let trust = Trust::build(
            &TlsSettings {
                ca: vec![ca.file(dir.path(), "ca.pem")],
                ..TlsSettings::default()
            },
            &[],
        )
        .unwrap();
        let log = Handshakes::default();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let failure = trust.handshake("localhost", tcp, &log, in_5s()).await.err().unwrap();
        assert_eq!(failure.problem, Problem::Expired, "{failure}");
        assert!(
            failure
                .message
                .contains("certificate expired (notAfter 2021-01-01T00:00:00Z)"),
            "{failure}"
        );
    }

    #[tokio::test]
    async fn a_server_that_requires_a_client_certificate_gets_the_steps() {
        let (ca, clients) = (Pki::new(), Pki::new());
        let dir = tempfile::tempdir().unwrap();
        let (addr, _) = serve(server_config(ca.leaf(&["localhost"], false), Some(&clients))).await;
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client_cert = rcgen::CertificateParams::new(vec!["runbox-client".to_string()])
            .unwrap()
            .signed_by(&client_key, &clients.issuer)
            .unwrap();
        let cert_file = dir.path().join("client.pem");
        std::fs::write(&cert_file, client_cert.pem()).unwrap();
        // The key from a secret: the host reads it; it is never a file here.
        let key_secret =
            SecretGrant::parse(&format!("client_key=env:RUNBOX_TLS_TEST_KEY_{}", std::process::id())).unwrap();
        // SAFETY: this test's own variable, set before any thread reads it.
        unsafe {
            std::env::set_var(
                format!("RUNBOX_TLS_TEST_KEY_{}", std::process::id()),
                client_key.serialize_pem(),
            )
        };
        let ca_file = ca.file(dir.path(), "ca.pem");
        let with_identity = Trust::build(
            &TlsSettings {
                ca: vec![ca_file.clone()],
                client_cert: Some(PemSource::File(cert_file)),
                client_key: Some(PemSource::Secret("client_key".into())),
                verify: true,
            },
            std::slice::from_ref(&key_secret),
        )
        .unwrap();
        assert_eq!(with_identity.secret_names().collect::<Vec<_>>(), ["client_key"]);
        let log = Arc::new(Handshakes::default());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = with_identity.handshake("localhost", tcp, &log, in_5s()).await.unwrap();
        assert_eq!(
            read_all(LoggedConnection::new(conn, log.clone())).await.unwrap(),
            "hello"
        );

        // Without one: TLS 1.3 servers refuse on the first read after the handshake; the
        // error and the record both name the client certificate.
        let without = Trust::build(
            &TlsSettings {
                ca: vec![ca_file],
                ..TlsSettings::default()
            },
            &[],
        )
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let err = match without.handshake("localhost", tcp, &log, in_5s()).await {
            Ok(conn) => read_all(LoggedConnection::new(conn, log.clone()))
                .await
                .unwrap_err()
                .to_string(),
            Err(failure) => failure.message,
        };
        assert!(err.contains("client certificate"), "{err}");
        assert_eq!(
            log.last().unwrap().outcome.unwrap_err().problem,
            Problem::ClientCertificate
        );
    }

    #[tokio::test]
    async fn the_provider_denies_a_server_name_no_grant_covers_before_sending_anything() {
        use crate::capabilities::network::{Grant, NetworkPolicy};
        use wasmtime_wasi_tls::TlsProvider as _;
        let ca = Pki::new();
        let (addr, _) = serve(server_config(ca.leaf(&["localhost"], false), None)).await;
        let grant: Grant = format!("tcp://127.0.0.1:{}", addr.port()).parse().unwrap();
        let policy = Arc::new(NetworkPolicy::new("test", vec![grant], false));
        let log = Arc::new(Handshakes::default());
        let provider = TlsProvider::new(policy.clone(), Trust::system(), log.clone(), in_5s());
        // A raw stream the test reads: a refused handshake must not have written to it.
        let (ours, theirs) = tokio::io::duplex(4096);
        let err = provider
            .connect("db.internal".into(), Box::new(ours))
            .await
            .err()
            .expect("denied");
        assert!(err.to_string().contains("`db.internal` is not granted"), "{err}");
        let mut theirs = theirs;
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            tokio::io::AsyncReadExt::read(&mut theirs, &mut buf),
        )
        .await;
        assert!(matches!(read, Ok(Ok(0))), "nothing was sent: {read:?}");
        assert_eq!(log.last().unwrap().outcome.unwrap_err().problem, Problem::Denied);
        assert_eq!(policy.denials().len(), 1);
        // The granted address as the name passes the policy (and then fails on trust).
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let err = provider
            .connect("127.0.0.1".into(), Box::new(tcp))
            .await
            .err()
            .expect("untrusted");
        assert!(err.to_string().contains("unknown issuer"), "{err}");
    }

    /// Presents one certificate with a key that is not its own: an impostor who has a
    /// server's certificate but not its key.
    #[derive(Debug)]
    struct Impostor(Arc<CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Impostor {
        fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    #[tokio::test]
    async fn verification_off_still_checks_that_the_server_holds_the_certificates_key() {
        let ca = Pki::new();
        let (chain, _own_key) = ca.leaf(&["localhost"], false);
        let (_, other_key) = ca.leaf(&["localhost"], false);
        let signing_key = provider().key_provider.load_private_key(other_key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Impostor(Arc::new(CertifiedKey::new(chain, signing_key)))));
        let (addr, _) = serve(config).await;
        let unverified = without_verification();
        let log = Handshakes::default();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let failure = unverified
            .handshake("localhost", tcp, &log, in_5s())
            .await
            .err()
            .expect("refused");
        assert!(failure.message.contains("signature"), "{failure}");
        assert!(!log.any_unverified(), "no connection was made");
    }
}
