//! The parts of an X.509 certificate a report shows, parsed from DER inside the sandbox.

use runbox_plugin_sdk::time::Utc;
use std::net::IpAddr;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Longest list of names shown on one detail line (the host cuts lines at 1 KiB).
const MAX_NAMES_LEN: usize = 800;

/// One certificate of a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Certificate {
    /// Subject, RFC 4514 style (`CN=example.com, O=Example`).
    pub subject: String,
    /// Issuer, the same way.
    pub issuer: String,
    /// Subject alternative names (`DNS:example.com`, `IP:127.0.0.1`).
    pub names: Vec<String>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The subject name as encoded (DER), for following the chain.
    pub subject_der: Vec<u8>,
    /// The issuer name as encoded (DER).
    pub issuer_der: Vec<u8>,
}

impl Certificate {
    /// Parses one DER certificate; the error says what is wrong with it.
    pub fn parse(der: &[u8]) -> Result<Certificate, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|err| format!("not an X.509 certificate: {err}"))?;
        let names = match cert.subject_alternative_name() {
            Ok(Some(extension)) => extension.value.general_names.iter().map(general_name).collect(),
            Ok(None) => Vec::new(),
            Err(err) => vec![format!("(unreadable: {err})")],
        };
        let validity = cert.validity();
        Ok(Certificate {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            subject_der: cert.subject().as_raw().to_vec(),
            issuer_der: cert.issuer().as_raw().to_vec(),
        })
    }

    /// Whether it names itself as its issuer (a root, or a self-signed server).
    pub fn self_issued(&self) -> bool {
        self.subject_der == self.issuer_der
    }

    /// The certificate as detail lines, each prefixed with its place in the chain
    /// (`[0]` is the server's own).
    pub fn details(&self, index: usize) -> Vec<String> {
        let mut lines = vec![
            format!("[{index}] subject: {}", or_none(&self.subject)),
            format!("[{index}] issuer: {}", or_none(&self.issuer)),
        ];
        if !self.names.is_empty() {
            lines.push(format!("[{index}] names: {}", join_capped(&self.names, MAX_NAMES_LEN)));
        }
        lines.push(format!(
            "[{index}] valid from {} to {}",
            rfc3339(self.not_before),
            rfc3339(self.not_after)
        ));
        lines
    }
}

/// The places in `chain` whose expiry matters: the server's own certificate (`[0]`), then
/// each certificate whose subject is the previous one's issuer, stopping before a
/// self-issued one. A root the server sends along is not the one a client trusts (its
/// own store's copy is), and certificates off that path (stale cross-signs, extra
/// roots) are not used: an old AddTrust or DST root in a chain must not make a working
/// server look expired.
pub fn path_from_leaf(chain: &[Result<Certificate, String>]) -> Vec<usize> {
    let Some(Ok(leaf)) = chain.first() else {
        return Vec::new();
    };
    let mut path = vec![0];
    let mut current = leaf;
    while !current.self_issued() {
        let next = chain.iter().enumerate().find(|(index, cert)| {
            !path.contains(index) && matches!(cert, Ok(cert) if cert.subject_der == current.issuer_der)
        });
        match next {
            Some((index, Ok(cert))) if !cert.self_issued() => {
                path.push(index);
                current = cert;
            }
            _ => break,
        }
    }
    path
}

/// A Unix time as `2026-01-31T12:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    Utc::from_unix(secs).rfc3339()
}

fn general_name(name: &GeneralName) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::IPAddress(bytes) => match ip_address(bytes) {
            Some(ip) => format!("IP:{ip}"),
            None => format!("IP:(malformed, {} bytes)", bytes.len()),
        },
        GeneralName::RFC822Name(email) => format!("email:{email}"),
        GeneralName::URI(uri) => format!("URI:{uri}"),
        GeneralName::DirectoryName(name) => format!("DirName:{name}"),
        other => format!("{other:?}"),
    }
}

fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "(empty)" } else { text }
}

/// `items` joined by ", ", stopping before `max` bytes with a count of what was left out.
fn join_capped(items: &[String], max: usize) -> String {
    let mut out = String::new();
    for (shown, item) in items.iter().enumerate() {
        if !out.is_empty() && out.len() + item.len() + 2 > max {
            out.push_str(&format!(", … ({} more)", items.len() - shown));
            break;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate made on 2026-11-30 with `openssl req -x509 -newkey ec
    /// -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=test.example/O=runbox" -addext
    /// "subjectAltName=DNS:test.example,IP:127.0.0.1" -days 3650 -outform DER`.
    const CERT: &[u8] = include_bytes!("../testdata/cert.der");

    #[test]
    fn reads_what_the_report_shows() {
        let cert = Certificate::parse(CERT).unwrap();
        assert_eq!(cert.subject, "CN=test.example, O=runbox");
        assert_eq!(cert.issuer, cert.subject);
        assert_eq!(cert.names, ["DNS:test.example", "IP:127.0.0.1"]);
        assert_eq!(rfc3339(cert.not_before), "2026-11-30T08:30:59Z");
        assert_eq!(rfc3339(cert.not_after), "2036-11-27T08:30:59Z");
        assert_eq!(
            cert.details(0),
            [
                "[0] subject: CN=test.example, O=runbox",
                "[0] issuer: CN=test.example, O=runbox",
                "[0] names: DNS:test.example, IP:127.0.0.1",
                "[0] valid from 2026-11-30T08:30:59Z to 2036-11-27T08:30:59Z",
            ]
        );
    }

    /// A CA (root), its intermediate, and a leaf the intermediate signs.
    fn chain_with_extras() -> Vec<Result<Certificate, String>> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca = |name: &str, expired: bool| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            if expired {
                params.not_before = rcgen::date_time_ymd(2010, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 5, 30);
            }
            params
        };
        let root_key = KeyPair::generate().unwrap();
        let root = ca("Root", false).self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(ca("Root", false), root_key);
        let mid_key = KeyPair::generate().unwrap();
        let mid = ca("Intermediate", false).signed_by(&mid_key, &root_issuer).unwrap();
        let mid_issuer = Issuer::new(ca("Intermediate", false), mid_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["svc.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &mid_issuer)
            .unwrap();
        let stale_key = KeyPair::generate().unwrap();
        let stale_root = ca("AddTrust-like old root", true).self_signed(&stale_key).unwrap();
        let other_key = KeyPair::generate().unwrap();
        let unrelated = ca("Unrelated", true).signed_by(&other_key, &root_issuer).unwrap();
        [leaf.der(), mid.der(), stale_root.der(), unrelated.der(), root.der()]
            .iter()
            .map(|der| Certificate::parse(der))
            .collect()
    }

    #[test]
    fn only_the_leaf_and_the_intermediates_leading_from_it_count() {
        let chain = chain_with_extras();
        assert_eq!(path_from_leaf(&chain), [0, 1]);
        // A self-signed server certificate is its own path.
        assert_eq!(path_from_leaf(&[Certificate::parse(CERT)]), [0]);
        assert!(path_from_leaf(&[Err("garbage".into())]).is_empty());
        assert!(path_from_leaf(&[]).is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"\x30\x03\x02\x01", &CERT[..CERT.len() / 2]] {
            assert!(Certificate::parse(bad).is_err());
        }
    }

    #[test]
    fn long_name_lists_are_capped() {
        let names: Vec<String> = (0..100).map(|i| format!("DNS:host{i}.example.com")).collect();
        let line = join_capped(&names, 100);
        assert!(line.len() < 130, "{line}");
        assert!(line.ends_with("more)"), "{line}");
        assert_eq!(
            join_capped(&names[..2], 100),
            "DNS:host0.example.com, DNS:host1.example.com"
        );
    }
}
