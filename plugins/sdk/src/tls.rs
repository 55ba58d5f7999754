//! TLS as plugins see it: the host's record of the last handshake
//! (`runbox:tls/handshakes`), and which URL schemes speak TLS how.
//!
//! The host makes every handshake with the step's trust (system roots plus the step's CA
//! files, its client certificate, `tls: {verify: false}`); a plugin cannot weaken it. A
//! plugin starts TLS with [`crate::net::Stream::start_tls`] (or sends an `https://` request
//! through [`crate::http`]) and, if it wants to look at the certificates, reads
//! [`last_handshake`] afterwards.

pub use bindings::runbox::tls::handshakes::{Failure, Handshake, Problem};

/// Bindings of `wasi:tls/types` and `runbox:tls/handshakes`, with `wasi:io` mapped onto
/// the `wasi` crate's types so the streams of a `wasi:sockets` connection can be handed
/// to a handshake. A component imports these interfaces only if it calls them, so a
/// plugin that never uses TLS does not import `wasi:tls` or `runbox:tls`.
pub(crate) mod bindings {
    wit_bindgen::generate!({
        inline: r#"
            package runbox:sdk-tls;

            world tls {
                import wasi:tls/types@0.2.0-draft;
                import runbox:tls/handshakes@0.1.0;
            }
        "#,
        path: "../../wit",
        with: {
            "wasi:io/error@0.2.12": ::wasi::io::error,
            "wasi:io/poll@0.2.12": ::wasi::io::poll,
            "wasi:io/streams@0.2.12": ::wasi::io::streams,
            "wasi:tls/types@0.2.0-draft": generate,
            "runbox:tls/handshakes@0.1.0": generate,
        },
    });
}

/// The most recent handshake this invocation made (through `wasi:tls` or an `https://`
/// request), finished or failed; `None` when it made none.
pub fn last_handshake() -> Option<Handshake> {
    bindings::runbox::tls::handshakes::last()
}

/// A failed handshake in words for a report: the host's message, which says "TLS
/// handshake with NAME failed: …", prefixed with "TLS handshake failed: " if it does not.
pub fn failure_text(message: &str) -> String {
    if message.starts_with("TLS handshake") {
        message.to_string()
    } else {
        format!("TLS handshake failed: {message}")
    }
}

/// A handshake failure in a few words, for a summary ("certificate expired").
pub fn describe_problem(problem: Problem) -> &'static str {
    match problem {
        Problem::Expired => "certificate expired",
        Problem::NotYetValid => "certificate not yet valid",
        Problem::NameMismatch => "certificate name mismatch",
        Problem::UnknownIssuer => "certificate not trusted (unknown issuer)",
        Problem::ClientCertificate => "client certificate required or refused",
        Problem::Denied => "server name not granted",
        Problem::Other => "handshake failed",
    }
}

/// How a service URL reaches TLS: from the first byte, or by upgrading a plaintext
/// connection the way its protocol says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `tls://host:port`: TLS from the first byte (no default port).
    Tls,
    /// `https://host[:port]/path`: a request through `wasi:http`; the host makes the
    /// TLS connection (default port 443).
    Https,
    /// `rediss://host[:port]`: Redis over TLS from the first byte (default 6379).
    Rediss,
    /// `postgres://` or `postgresql://`: an SSLRequest, then TLS (default 5432).
    Postgres,
    /// `smtp://host[:port]`: EHLO, STARTTLS, then TLS (default 25).
    Smtp,
}

impl Protocol {
    /// The URL schemes this module knows, as a config error lists them.
    pub const SCHEMES: &'static [&'static str] = &["tls", "https", "rediss", "postgres", "postgresql", "smtp"];

    /// The protocol of a (lower-case) scheme.
    pub fn from_scheme(scheme: &str) -> Option<Protocol> {
        Some(match scheme {
            "tls" => Protocol::Tls,
            "https" => Protocol::Https,
            "rediss" => Protocol::Rediss,
            "postgres" | "postgresql" => Protocol::Postgres,
            "smtp" => Protocol::Smtp,
            _ => return None,
        })
    }

    /// The port a URL without one means (`None`: the URL must name it).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Protocol::Tls => None,
            Protocol::Https => Some(443),
            Protocol::Rediss => Some(6379),
            Protocol::Postgres => Some(5432),
            Protocol::Smtp => Some(25),
        }
    }
}

/// Days (fractional) from `now` until the earliest of `not_after` (Unix seconds): how
/// long until the first certificate in a chain expires; negative once it has. `None`
/// for an empty chain.
pub fn expiry_days(not_after: &[i64], now: i64) -> Option<f64> {
    let earliest = not_after.iter().min()?;
    Some((earliest - now) as f64 / 86_400.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_protocols_and_ports() {
        let table: &[(&str, Option<Protocol>, Option<u16>)] = &[
            ("tls", Some(Protocol::Tls), None),
            ("https", Some(Protocol::Https), Some(443)),
            ("rediss", Some(Protocol::Rediss), Some(6379)),
            ("postgres", Some(Protocol::Postgres), Some(5432)),
            ("postgresql", Some(Protocol::Postgres), Some(5432)),
            ("smtp", Some(Protocol::Smtp), Some(25)),
            ("http", None, None),
            ("redis", None, None),
            ("smtps", None, None),
        ];
        for (scheme, protocol, port) in table {
            assert_eq!(Protocol::from_scheme(scheme), *protocol, "{scheme}");
            assert_eq!(protocol.and_then(Protocol::default_port), *port, "{scheme}");
        }
        for scheme in Protocol::SCHEMES {
            assert!(Protocol::from_scheme(scheme).is_some(), "{scheme}");
        }
    }

    #[test]
    fn expiry_is_the_earliest_not_after() {
        let now = 1_700_000_000;
        assert_eq!(expiry_days(&[], now), None);
        assert_eq!(expiry_days(&[now + 86_400 * 90, now + 86_400 * 10], now), Some(10.0));
        assert_eq!(expiry_days(&[now + 43_200], now), Some(0.5));
        assert_eq!(expiry_days(&[now - 86_400 * 2, now + 86_400], now), Some(-2.0));
    }

    #[test]
    fn failures_read_once() {
        assert_eq!(
            failure_text("TLS handshake with db failed: unknown issuer"),
            "TLS handshake with db failed: unknown issuer"
        );
        assert_eq!(
            failure_text("connection reset"),
            "TLS handshake failed: connection reset"
        );
    }

    #[test]
    fn problems_read_as_reasons() {
        assert_eq!(describe_problem(Problem::Expired), "certificate expired");
        assert!(describe_problem(Problem::Denied).contains("not granted"));
        assert!(describe_problem(Problem::ClientCertificate).contains("client certificate"));
    }
}
