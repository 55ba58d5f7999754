//! `tls-cert`: reaches a server the way its URL's scheme says (TLS from the first byte,
//! an HTTPS request, PostgreSQL's SSLRequest, SMTP's STARTTLS), lets the host make the
//! handshake with the step's trust, and reports how many days are left until the
//! earliest certificate in the presented chain expires. A handshake the host refuses
//! (expired, not yet valid, wrong name, untrusted, client certificate wanted) is
//! CRITICAL with the host's reason, and the chain the server presented is still shown.

mod cert;

use cert::Certificate;
use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::net::{Stream, tls_error};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::tls::{self, Handshake, Protocol};
use runbox_plugin_sdk::url::{ServiceUrl, redact};
use runbox_plugin_sdk::{Info, Report, Status, config, describe_io, http, postgres, smtp, time};
use serde::Deserialize;
use std::io::{self, Read};
use std::time::Duration;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "tls-cert config",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "Where, and how TLS starts: tls://host:port (TLS from the first byte), https://host[:port]/path (a HEAD request), rediss://host[:port], postgres://host[:port] (SSLRequest) or smtp://host[:port] (STARTTLS; port 25). Grant tcp://host:port, or https://host:port for https"},
    "warn": {"type": "string", "default": "30:", "description": "Nagios range for expiry_days (days until the earliest certificate in the chain expires) outside of which the check is WARNING; default \"30:\", under 30 days"},
    "crit": {"type": "string", "default": "7:", "description": "Nagios range for expiry_days outside of which the check is CRITICAL; default \"7:\", under 7 days"}
  },
  "required": ["url"],
  "additionalProperties": false
}"#;

/// WARNING under 30 days left.
const DEFAULT_WARN: &str = "30:";
/// CRITICAL under 7 days left.
const DEFAULT_CRIT: &str = "7:";
/// How long to wait after a handshake for the server to refuse it (see [`late_failure`]).
const LATE_FAILURE_WAIT: Duration = Duration::from_millis(300);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    warn: Option<String>,
    crit: Option<String>,
}

struct TlsCert;

impl Guest for TlsCert {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "tls-cert",
            "Checks a server's TLS certificate chain: days until it expires, and why a handshake fails",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(match Probe::from_config(&config) {
            Ok(probe) => probe.check(),
            Err(message) => Report::unknown(message),
        })
    }
}

/// Everything the check needs, validated.
struct Probe {
    protocol: Protocol,
    host: String,
    port: u16,
    /// The URL as configured (sent as is for https).
    url: String,
    /// The URL with its password hidden, for messages.
    display: String,
    thresholds: Thresholds,
}

/// How far the plugin got before looking at the host's record.
enum Reached {
    /// A handshake was attempted; `error` is the failure the plugin saw, if any.
    Handshake { error: Option<String> },
    /// It never got to a handshake, for this reason (a summary).
    Nowhere(String),
}

impl Probe {
    fn from_config(json: &str) -> Result<Probe, String> {
        let config: Config = config::parse(json)?;
        let url = ServiceUrl::parse(&config.url, Protocol::SCHEMES).map_err(|err| config::field_error("url", err))?;
        let protocol = Protocol::from_scheme(&url.scheme)
            .ok_or_else(|| config::field_error("url", format!("scheme \"{}\" is not supported", url.scheme)))?;
        let port = url.port.or(protocol.default_port()).ok_or_else(|| {
            config::field_error(
                "url",
                format!("{}:// needs a port ({}://host:PORT)", url.scheme, url.scheme),
            )
        })?;
        let thresholds = Thresholds::parse(
            Some(config.warn.as_deref().unwrap_or(DEFAULT_WARN)),
            Some(config.crit.as_deref().unwrap_or(DEFAULT_CRIT)),
        )?;
        Ok(Probe {
            protocol,
            host: url.host,
            port,
            display: redact(&config.url),
            url: config.url,
            thresholds,
        })
    }

    fn check(&self) -> Report {
        let reached = match self.protocol {
            Protocol::Https => self.request(),
            _ => self.connect(),
        };
        let error = match reached {
            Reached::Nowhere(summary) => return Report::critical(summary),
            Reached::Handshake { error } => error,
        };
        match (tls::last_handshake(), error) {
            (Some(handshake), error) => self.report(&handshake, error),
            (None, Some(error)) => Report::critical(format!("{}: {}", self.display, tls::failure_text(&error))),
            (None, None) => Report::unknown("the host kept no record of the TLS handshake"),
        }
    }

    /// Connects, speaks the protocol's plaintext part, and makes the handshake.
    fn connect(&self) -> Reached {
        let display = &self.display;
        let mut stream = match Stream::connect(&self.host, self.port) {
            Ok(stream) => stream,
            Err(err) => return Reached::Nowhere(format!("cannot connect to {display}: {}", describe_io(&err))),
        };
        match self.protocol {
            Protocol::Postgres => match postgres::ssl_request(&mut stream) {
                Ok(true) => {}
                Ok(false) => {
                    return Reached::Nowhere(format!(
                        "{display}: the server does not support TLS (it declined the SSLRequest)"
                    ));
                }
                Err(err) => return Reached::Nowhere(format!("{display}: SSLRequest failed: {}", describe_io(&err))),
            },
            Protocol::Smtp => match smtp::starttls(stream) {
                Ok(plain) => stream = plain,
                Err(err) => return Reached::Nowhere(format!("{display}: STARTTLS failed: {}", describe_io(&err))),
            },
            _ => {}
        }
        match stream.start_tls(&self.host) {
            Ok(mut stream) => Reached::Handshake {
                error: late_failure(&mut stream),
            },
            Err(err) => Reached::Handshake {
                error: Some(tls_error(&err).map_or_else(|| describe_io(&err), |tls| tls.message.clone())),
            },
        }
    }

    /// Sends a HEAD request; the host makes the TLS connection and records it.
    fn request(&self) -> Reached {
        match http::send("HEAD", &self.url, &[], None, 64 * 1024) {
            Ok(_) => Reached::Handshake { error: None },
            Err(failure) if tls::last_handshake().is_some() => Reached::Handshake {
                error: Some(failure.to_string()),
            },
            Err(failure) => Reached::Nowhere(format!("cannot connect to {}: {failure}", self.display)),
        }
    }

    /// The report on the host's record of the handshake: the chain's expiry against the
    /// thresholds, CRITICAL if the handshake failed, and each certificate as details.
    fn report(&self, handshake: &Handshake, error: Option<String>) -> Report {
        let chain: Vec<Result<Certificate, String>> = handshake
            .certificates
            .iter()
            .map(|der| Certificate::parse(der))
            .collect();
        // Only the server's certificate and the intermediates that lead from it count.
        let path = cert::path_from_leaf(&chain);
        let counted = || path.iter().filter_map(|&index| chain[index].as_ref().ok());
        let earliest = counted().min_by_key(|cert| cert.not_after);
        let not_afters: Vec<i64> = counted().map(|cert| cert.not_after).collect();
        let days = tls::expiry_days(&not_afters, time::now());
        let mut report = match (&handshake.outcome, earliest.zip(days)) {
            (Err(failure), _) => Report::critical(format!("{}: {}", self.display, tls::failure_text(&failure.message))),
            (Ok(()), Some((cert, days))) => Report::new(Status::Ok, expiry_summary(&self.display, cert, days)),
            (Ok(()), None) => Report::unknown(format!(
                "{}: the server presented no certificate this check can read",
                self.display
            )),
        };
        if let Some(days) = days {
            report = report.judged_metric("expiry_days", days, "", &self.thresholds);
            // Days left go negative once a certificate has expired: the metric has no minimum.
            if let Some(metric) = report.metrics.last_mut() {
                metric.min = None;
            }
        }
        // The host adds a detail line saying verification was off; the summary says it too.
        if !handshake.verified {
            report.summary.push_str(" (certificate not verified)");
        }
        if let (Some(protocol), Some(suite)) = (&handshake.protocol, &handshake.cipher_suite) {
            report = report.detail(format!("{protocol}, {suite}, server name {}", handshake.server_name));
        }
        for (index, cert) in chain.iter().enumerate() {
            match cert {
                Ok(cert) => {
                    for line in cert.details(index) {
                        report = report.detail(line);
                    }
                    if !path.contains(&index) {
                        report = report.detail(format!(
                            "[{index}] not counted: {}",
                            if cert.self_issued() {
                                "a root (the client's own trust store holds the one that counts)"
                            } else {
                                "not on the path from the server's certificate"
                            }
                        ));
                    }
                }
                Err(err) => report = report.detail(format!("[{index}] {err}")),
            }
        }
        if let (Ok(()), Some(error)) = (&handshake.outcome, error) {
            report = report.detail(format!("after the handshake: {error}"));
        }
        report
    }
}

/// A TLS 1.3 server that refuses the client's certificate (or wants one) says so only
/// after the handshake, on the client's first read. Waits briefly for that: the host then
/// records the failure as the handshake's outcome. Silence, data or a close mean the
/// server accepted the connection.
fn late_failure(stream: &mut Stream) -> Option<String> {
    let wait = runbox_plugin_sdk::io_timeout().map_or(LATE_FAILURE_WAIT, |timeout| timeout.min(LATE_FAILURE_WAIT));
    stream.set_timeout(Some(wait));
    match stream.read(&mut [0u8; 1]) {
        Err(err) if err.kind() != io::ErrorKind::TimedOut => Some(describe_io(&err)),
        _ => None,
    }
}

/// "certificate of URL expires in 42.1 days (2027-01-01T00:00:00Z, CN=...)", or
/// "... expired 3.0 days ago ...".
fn expiry_summary(display: &str, cert: &Certificate, days: f64) -> String {
    let when = if days >= 0.0 {
        format!("expires in {days:.1} days")
    } else {
        format!("expired {:.1} days ago", -days)
    };
    format!(
        "certificate of {display} {when} ({}, {})",
        cert::rfc3339(cert.not_after),
        cert.subject
    )
}

runbox_plugin_sdk::export_check!(TlsCert);

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: &str) -> Result<Probe, String> {
        Probe::from_config(json)
    }

    #[test]
    fn urls_pick_protocol_and_port() {
        // (url, protocol, host, port)
        let table: &[(&str, Protocol, &str, u16)] = &[
            ("tls://127.0.0.1:8443", Protocol::Tls, "127.0.0.1", 8443),
            ("https://example.com/health", Protocol::Https, "example.com", 443),
            ("https://example.com:8443", Protocol::Https, "example.com", 8443),
            ("rediss://:pw@cache", Protocol::Rediss, "cache", 6379),
            ("postgres://app@db/main", Protocol::Postgres, "db", 5432),
            ("postgresql://db:6432", Protocol::Postgres, "db", 6432),
            ("smtp://mx.example.com", Protocol::Smtp, "mx.example.com", 25),
            ("SMTP://[::1]:587", Protocol::Smtp, "::1", 587),
        ];
        for (url, protocol, host, port) in table {
            let probe = probe(&format!(r#"{{"url": "{url}"}}"#)).unwrap();
            assert_eq!(
                (probe.protocol, probe.host.as_str(), probe.port),
                (*protocol, *host, *port),
                "{url}"
            );
        }
        assert_eq!(
            probe(r#"{"url": "rediss://:pw@cache"}"#).unwrap().display,
            "rediss://:***@cache"
        );
    }

    #[test]
    fn bad_urls_name_the_field() {
        for (url, expected) in [
            ("tls://host", "needs a port"),
            ("http://host", "not supported"),
            ("host:443", "not a URL"),
        ] {
            let err = probe(&format!(r#"{{"url": "{url}"}}"#)).err().unwrap();
            assert!(
                err.starts_with("config field `url`:") && err.contains(expected),
                "{url}: {err}"
            );
        }
        let err = probe(r#"{"url": "tls://h:1", "warn": "x"}"#).err().unwrap();
        assert!(err.starts_with("config field `warn`:"), "{err}");
    }

    #[test]
    fn default_thresholds_warn_under_30_days_and_go_critical_under_7() {
        let thresholds = probe(r#"{"url": "tls://h:1"}"#).unwrap().thresholds;
        // (days left, status)
        let table = [
            (90.0, Status::Ok),
            (30.0, Status::Ok),
            (29.9, Status::Warning),
            (7.0, Status::Warning),
            (6.9, Status::Critical),
            (-1.0, Status::Critical),
        ];
        for (days, status) in table {
            assert_eq!(thresholds.status(days), status, "{days}");
        }
        let custom = probe(r#"{"url": "tls://h:1", "warn": "60:", "crit": "14:"}"#)
            .unwrap()
            .thresholds;
        assert_eq!(custom.status(45.0), Status::Warning);
        assert_eq!(custom.status(10.0), Status::Critical);
    }

    #[test]
    fn summaries_say_when_the_chain_expires() {
        let cert = Certificate {
            subject: "CN=example.com".into(),
            issuer: "CN=CA".into(),
            names: vec![],
            not_before: 0,
            not_after: 1_700_000_000,
            subject_der: Vec::new(),
            issuer_der: Vec::new(),
        };
        assert_eq!(
            expiry_summary("tls://h:1", &cert, 42.0),
            "certificate of tls://h:1 expires in 42.0 days (2023-11-14T22:13:20Z, CN=example.com)"
        );
        assert_eq!(
            expiry_summary("tls://h:1", &cert, -3.0),
            "certificate of tls://h:1 expired 3.0 days ago (2023-11-14T22:13:20Z, CN=example.com)"
        );
    }
}
