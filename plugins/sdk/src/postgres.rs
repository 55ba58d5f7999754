//! The plaintext start of a PostgreSQL connection that turns into TLS: libpq's
//! `sslmode` as runbox applies it, and the SSLRequest.
//!
//! One difference from libpq, on purpose: the host verifies the server's certificate
//! with the step's trust for every mode that uses TLS (libpq's `require` and `prefer`
//! do not verify). A step whose server cannot be verified says `tls: {verify: false}`;
//! `verify-ca` and `verify-full` then fail, since they demand verification.

use std::fmt;
use std::io::{self, Read, Write};

/// libpq's `sslmode`: whether to ask for TLS, and whether to accept a server that
/// has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, plaintext if it answers "no TLS" (libpq's default).
    /// A failed handshake is a failure, never a reason to retry in plaintext.
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS or fail, and the step must verify the certificate (libpq: the chain).
    VerifyCa,
    /// TLS or fail, and the step must verify the certificate (libpq: chain and name;
    /// the host always checks both).
    VerifyFull,
}

impl SslMode {
    /// The modes, as written in a URL or a config.
    pub const NAMES: &'static [&'static str] = &["disable", "prefer", "require", "verify-ca", "verify-full"];

    /// Parses a mode; the error lists the accepted ones.
    pub fn parse(text: &str) -> Result<SslMode, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode \"allow\" (plaintext first, TLS as a fallback) is not supported: use prefer or disable"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "sslmode \"{other}\" is not one of {}",
                    SslMode::NAMES.join(", ")
                ));
            }
        })
    }

    /// The `sslmode=` of a URL's query string (`a=1&sslmode=require`), if it has one.
    pub fn from_query(query: Option<&str>) -> Result<Option<SslMode>, String> {
        let Some(query) = query else {
            return Ok(None);
        };
        // The last one wins, as in libpq.
        query
            .split('&')
            .rev()
            .find_map(|pair| pair.strip_prefix("sslmode="))
            .map(SslMode::parse)
            .transpose()
    }

    /// Whether this mode sends an SSLRequest.
    pub fn asks_for_tls(self) -> bool {
        self != SslMode::Disable
    }

    /// Whether a server that answers "no TLS" is a failure.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// Whether a handshake the host made without verification (`tls: {verify: false}`)
    /// is a failure.
    pub fn demands_verification(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl Default for SslMode {
    /// libpq's default, `prefer`.
    fn default() -> SslMode {
        SslMode::Prefer
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The SSLRequest: length 8, then the code 1234 5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Sends an SSLRequest and reads the server's answer: `true` ('S') when the next byte
/// on the connection must be the TLS handshake, `false` ('N') when the server has no
/// TLS and the connection goes on in plaintext. Reads exactly one byte, so nothing the
/// server sends before the handshake is taken for encrypted data.
pub fn ssl_request<S: Read + Write>(stream: &mut S) -> io::Result<bool> {
    stream.write_all(&SSL_REQUEST)?;
    stream.flush()?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer)?;
    ssl_answer(answer[0])
}

fn ssl_answer(byte: u8) -> io::Result<bool> {
    match byte {
        b'S' => Ok(true),
        b'N' => Ok(false),
        // Servers before 7.0 answered with an ErrorResponse.
        b'E' => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "protocol error: the server refused the SSLRequest with an error",
        )),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "protocol error: unexpected answer {:?} to the SSLRequest",
                char::from(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Scripted;

    #[test]
    fn parses_sslmodes() {
        for name in SslMode::NAMES {
            assert_eq!(SslMode::parse(name).unwrap().to_string(), *name);
        }
        assert!(SslMode::parse("allow").unwrap_err().contains("not supported"));
        assert!(SslMode::parse("REQUIRE").unwrap_err().contains("is not one of"));
        assert_eq!(SslMode::default(), SslMode::Prefer);

        let table: &[(Option<&str>, Option<SslMode>)] = &[
            (None, None),
            (Some(""), None),
            (Some("application_name=x"), None),
            (Some("sslmode=require"), Some(SslMode::Require)),
            (Some("connect_timeout=3&sslmode=verify-full"), Some(SslMode::VerifyFull)),
            (Some("sslmode=disable&sslmode=prefer"), Some(SslMode::Prefer)),
        ];
        for (query, expected) in table {
            assert_eq!(SslMode::from_query(*query).unwrap(), *expected, "{query:?}");
        }
        assert!(SslMode::from_query(Some("sslmode=on")).is_err());
    }

    #[test]
    fn modes_say_what_they_demand() {
        // (mode, asks for TLS, requires TLS, demands verification)
        let table = [
            (SslMode::Disable, false, false, false),
            (SslMode::Prefer, true, false, false),
            (SslMode::Require, true, true, false),
            (SslMode::VerifyCa, true, true, true),
            (SslMode::VerifyFull, true, true, true),
        ];
        for (mode, asks, requires, verifies) in table {
            assert_eq!(mode.asks_for_tls(), asks, "{mode}");
            assert_eq!(mode.requires_tls(), requires, "{mode}");
            assert_eq!(mode.demands_verification(), verifies, "{mode}");
        }
    }

    #[test]
    fn ssl_request_reads_one_byte() {
        let mut stream = Scripted::new(b"Sxyz");
        assert!(ssl_request(&mut stream).unwrap());
        assert_eq!(stream.written, SSL_REQUEST);
        assert_eq!(stream.reply.position(), 1);
        // 80877103, the code the protocol documents.
        assert_eq!(u32::from_be_bytes(SSL_REQUEST[4..].try_into().unwrap()), 80_877_103);

        assert!(!ssl_answer(b'N').unwrap());
        assert!(ssl_answer(b'E').unwrap_err().to_string().contains("refused"));
        assert!(ssl_answer(b'R').is_err());
        let mut closed = Scripted::new(b"");
        assert_eq!(
            ssl_request(&mut closed).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
