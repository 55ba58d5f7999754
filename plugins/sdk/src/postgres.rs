//! A PostgreSQL v3 client for plugins: libpq's `sslmode` as runbox applies it, the
//! SSLRequest and the TLS upgrade, startup, authentication (trust, cleartext, md5,
//! SCRAM-SHA-256), the simple query protocol (several statements of the plugin's own
//! text), the extended query protocol (exactly one statement, with bind parameters: the
//! way to run SQL that came from a config), rows as text, and the server's error
//! fields. Message encoding and decoding is `postgres-protocol`'s; this module only
//! sequences it.
//!
//! ```ignore
//! let params = Params { host, port: 5432, sslmode: SslMode::Prefer, user, password, database, application_name: "runbox my-check" };
//! let (mut session, tls) = Session::connect(&params)?;
//! session.query("BEGIN READ ONLY; SET LOCAL statement_timeout = 2000")?;   // simple: our own text
//! let result = session.query_one(&sql_from_config, &[Some("42")], 20)?;     // extended: one statement
//! session.query("ROLLBACK")?;
//! session.terminate();
//! ```
//!
//! One difference from libpq, on purpose: the host verifies the server's certificate
//! with the step's trust for every mode that uses TLS (libpq's `require` and `prefer`
//! do not verify). A step whose server cannot be verified says `tls: {verify: false}`;
//! `verify-ca` and `verify-full` then fail, since they demand verification.

use crate::Report;
use crate::config::field_error;
use crate::net::Stream;
use crate::tls;
use crate::url::{ServiceUrl, redact};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::IsNull;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
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

    /// The sslmode of a config: the URL's `?sslmode=` and the `sslmode` field (they
    /// must agree), or libpq's default, `prefer`. Errors name the field.
    pub fn from_url_and_field(url: &ServiceUrl, field: Option<&str>) -> Result<SslMode, String> {
        let in_url = SslMode::from_query(url.query.as_deref()).map_err(|err| field_error("url", err))?;
        let in_field = field
            .map(SslMode::parse)
            .transpose()
            .map_err(|err| field_error("sslmode", err))?;
        match (in_url, in_field) {
            (Some(a), Some(b)) if a != b => {
                Err(field_error("sslmode", format!("{b} contradicts sslmode={a} in `url`")))
            }
            (url, field) => Ok(field.or(url).unwrap_or_default()),
        }
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

/// An error the server sent (an `ErrorResponse`), with the fields a report needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// SQLSTATE, e.g. `28P01` (wrong password), `25006` (a write in a read-only transaction).
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The optional detail (`DETAIL:` in psql).
    pub detail: Option<String>,
    /// The optional hint (`HINT:` in psql).
    pub hint: Option<String>,
}

impl ServerError {
    fn from_fields(mut fields: ErrorFields<'_>) -> ServerError {
        let mut error = ServerError::default();
        while let Ok(Some(field)) = fields.next() {
            let text = || String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'C' => error.code = text(),
                b'M' => error.message = text(),
                b'D' => error.detail = Some(text()),
                b'H' => error.hint = Some(text()),
                _ => {}
            }
        }
        error
    }
}

impl fmt::Display for ServerError {
    /// `message (SQLSTATE code)`, then the detail and the hint if the server gave them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why talking to the server failed.
#[derive(Debug)]
pub enum Failure {
    /// The network failed (refused, reset, timed out, closed, a failed TLS handshake).
    Io(io::Error),
    /// The server refused the credentials, or asked for a password we do not have.
    Auth(String),
    /// The server refused the connection because it requires TLS.
    TlsRequired(String),
    /// The sslmode demands TLS (or a verified certificate) and did not get it.
    Tls(String),
    /// The server answered with an error.
    Server(ServerError),
    /// The server said something this client does not understand.
    Protocol(String),
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Failure {
        Failure::Io(err)
    }
}

/// One result row, each column as text (`None` for SQL NULL).
pub type Row = Vec<Option<String>>;

/// A result column: its name and its type's OID (`pg_type.oid`: 16 bool, 20 int8,
/// 23 int4, 701 float8, 1700 numeric, 25 text, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name (`?column?` for an unnamed expression).
    pub name: String,
    /// The type's OID.
    pub type_oid: u32,
}

/// What one statement of the extended protocol returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// The result's columns (empty for a statement that returns no rows, e.g. `SET`).
    pub columns: Vec<Column>,
    /// The first rows, as many as the caller asked to keep.
    pub rows: Vec<Row>,
    /// How many rows the statement returned in all (kept or not).
    pub row_count: u64,
    /// The command tag (`SELECT 3`, `SET`), empty for an empty query.
    pub tag: String,
}

/// Where and how to connect.
pub struct Params<'a> {
    /// Host name or address (also the TLS server name).
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Whether to use TLS, and what it must be.
    pub sslmode: SslMode,
    /// User name.
    pub user: &'a str,
    /// Password, if one is configured.
    pub password: Option<&'a str>,
    /// Database name.
    pub database: &'a str,
    /// `application_name`, shown in `pg_stat_activity` (e.g. `runbox pg-query`).
    pub application_name: &'a str,
}

/// An authenticated session over `S` (the SDK's [`Stream`], or anything `Read + Write`
/// in tests).
pub struct Session<S = Stream> {
    stream: S,
    buffer: BytesMut,
}

impl Session<Stream> {
    /// Connects, starts TLS as `sslmode` says, and authenticates. Returns the session
    /// and whether it is encrypted.
    pub fn connect(params: &Params) -> Result<(Session<Stream>, bool), Failure> {
        let (stream, tls) = open(params)?;
        Ok((Session::start(stream, params)?, tls))
    }
}

impl<S: Read + Write> Session<S> {
    /// Sends the startup message over an open `stream`, authenticates, and waits until
    /// the server is ready for a query.
    pub fn start(stream: S, params: &Params) -> Result<Session<S>, Failure> {
        let mut session = Session {
            stream,
            buffer: BytesMut::with_capacity(8192),
        };
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", params.user),
                ("database", params.database),
                ("application_name", params.application_name),
            ],
            &mut out,
        )?;
        session.send(&out)?;
        session.authenticate(params.user, params.password)?;
        // Parameter status, backend key data, then ready.
        loop {
            match session.receive()? {
                Message::ReadyForQuery(_) => return Ok(session),
                Message::ErrorResponse(body) => {
                    return Err(Failure::Server(ServerError::from_fields(body.fields())));
                }
                _ => {}
            }
        }
    }

    fn authenticate(&mut self, user: &str, password: Option<&str>) -> Result<(), Failure> {
        let need_password = || {
            password.ok_or_else(|| {
                Failure::Auth(format!(
                    "authentication failed for user {user}: the server asks for a password and none is configured (set `password_secret`)"
                ))
            })
        };
        let mut out = BytesMut::new();
        loop {
            out.clear();
            match self.receive()? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(need_password()?.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user.as_bytes(), need_password()?.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(mechanism) = mechanisms.next().map_err(Failure::Io)? {
                        scram |= mechanism == SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(Failure::Protocol(
                            "the server offers no SASL mechanism this client supports (SCRAM-SHA-256)".into(),
                        ));
                    }
                    let mut exchange = ScramSha256::new(need_password()?.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, exchange.message(), &mut out)?;
                    self.send(&out)?;
                    out.clear();
                    match self.receive()? {
                        Message::AuthenticationSaslContinue(body) => exchange.update(body.data())?,
                        Message::ErrorResponse(body) => {
                            return Err(auth_error(user, ServerError::from_fields(body.fields())));
                        }
                        _ => {
                            return Err(Failure::Protocol("unexpected message during SCRAM".into()));
                        }
                    }
                    frontend::sasl_response(exchange.message(), &mut out)?;
                    self.send(&out)?;
                    out.clear();
                    match self.receive()? {
                        Message::AuthenticationSaslFinal(body) => exchange.finish(body.data()).map_err(|err| {
                            Failure::Auth(format!(
                                "the server's SCRAM proof is wrong ({err}); is this the server you meant?"
                            ))
                        })?,
                        Message::ErrorResponse(body) => {
                            return Err(auth_error(user, ServerError::from_fields(body.fields())));
                        }
                        _ => return Err(Failure::Protocol("unexpected message during SCRAM".into())),
                    }
                    continue;
                }
                Message::ErrorResponse(body) => return Err(auth_error(user, ServerError::from_fields(body.fields()))),
                Message::AuthenticationGss | Message::AuthenticationSspi | Message::AuthenticationKerberosV5 => {
                    return Err(Failure::Auth(format!(
                        "authentication failed for user {user}: the server requires GSSAPI/SSPI/Kerberos, which is not supported"
                    )));
                }
                _ => {
                    return Err(Failure::Protocol("unexpected message during authentication".into()));
                }
            }
            self.send(&out)?;
        }
    }

    /// Runs `sql` with the simple query protocol and returns the rows of every
    /// statement in it, or the first error the server reported. For the plugin's own
    /// SQL only: the simple protocol runs every statement of the text, so SQL that came
    /// from a config goes through [`Session::query_one`].
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>, Failure> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.send(&out)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.receive()? {
                Message::DataRow(body) => rows.push(decode_row(&body)?),
                Message::ErrorResponse(body) => {
                    error.get_or_insert(ServerError::from_fields(body.fields()));
                }
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(error) => Err(Failure::Server(error)),
            None => Ok(rows),
        }
    }

    /// Runs exactly one statement with the extended query protocol (Parse, Bind,
    /// Describe, Execute, Sync), with `params` bound to `$1`, `$2`, … as text (`None`
    /// is NULL). The server refuses a text of several statements (`COMMIT; DELETE …`)
    /// at Parse with SQLSTATE 42601, before running any of it. Keeps the first
    /// `keep_rows` rows and counts the rest.
    pub fn query_one(&mut self, sql: &str, params: &[Option<&str>], keep_rows: usize) -> Result<QueryResult, Failure> {
        let mut out = BytesMut::new();
        frontend::parse("", sql, std::iter::empty(), &mut out)?;
        frontend::bind(
            "",
            "",
            std::iter::empty(), // every parameter in text format
            params.iter().copied(),
            |param, buf| match param {
                Some(text) => {
                    buf.extend_from_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            std::iter::empty(), // every result column in text format
            &mut out,
        )
        .map_err(|err| match err {
            frontend::BindError::Conversion(err) => Failure::Protocol(format!("a parameter: {err}")),
            frontend::BindError::Serialization(err) => Failure::Io(err),
        })?;
        frontend::describe(b'P', "", &mut out)?;
        frontend::execute("", 0, &mut out)?;
        frontend::sync(&mut out);
        self.send(&out)?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            match self.receive()? {
                Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    while let Some(field) = fields.next()? {
                        result.columns.push(Column {
                            name: field.name().to_string(),
                            type_oid: field.type_oid(),
                        });
                    }
                }
                Message::DataRow(body) => {
                    result.row_count += 1;
                    if result.rows.len() < keep_rows {
                        result.rows.push(decode_row(&body)?);
                    }
                }
                Message::CommandComplete(body) => result.tag = body.tag()?.to_string(),
                Message::ErrorResponse(body) => {
                    error.get_or_insert(ServerError::from_fields(body.fields()));
                }
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(error) => Err(Failure::Server(error)),
            None => Ok(result),
        }
    }

    /// Says goodbye (Terminate) and closes the connection.
    pub fn terminate(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.send(&out);
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn receive(&mut self) -> Result<Message, Failure> {
        loop {
            if let Some(message) = Message::parse(&mut self.buffer)? {
                return Ok(message);
            }
            let mut chunk = [0u8; 8192];
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

fn decode_row(body: &postgres_protocol::message::backend::DataRowBody) -> Result<Row, Failure> {
    let buffer = body.buffer();
    body.ranges()
        .map(|range| Ok(range.map(|range| String::from_utf8_lossy(&buffer[range]).into_owned())))
        .collect()
        .map_err(Failure::Io)
}

/// Connects and, unless `sslmode=disable`, asks for TLS: on 'S' the handshake (which
/// the host verifies with the step's trust); on 'N' plaintext for `prefer`, a failure
/// for the modes that require TLS. A failed handshake is never retried in plaintext.
fn open(params: &Params) -> Result<(Stream, bool), Failure> {
    let mut stream = Stream::connect(params.host, params.port)?;
    let sslmode = params.sslmode;
    if !sslmode.asks_for_tls() {
        return Ok((stream, false));
    }
    if !ssl_request(&mut stream)? {
        if sslmode.requires_tls() {
            return Err(Failure::Tls(format!("server does not support TLS (sslmode={sslmode})")));
        }
        return Ok((stream, false));
    }
    let stream = stream.start_tls(params.host)?;
    if sslmode.demands_verification() {
        match tls::last_handshake() {
            Some(handshake) if handshake.verified => {}
            Some(_) => {
                return Err(Failure::Tls(format!(
                    "sslmode={sslmode} demands a verified certificate, and the step turns verification off (`tls: {{verify: false}}`)"
                )));
            }
            None => {
                return Err(Failure::Tls(format!(
                    "sslmode={sslmode}: the host has no record of verifying the certificate"
                )));
            }
        }
    }
    Ok((stream, true))
}

fn auth_error(user: &str, error: ServerError) -> Failure {
    let lowered = error.message.to_lowercase();
    // pg_hba.conf lines of type `hostssl` match only encrypted connections; the server
    // then says "... no encryption" (PostgreSQL 15+) or "... SSL off" (older).
    if error.code == "28000" && (lowered.contains("no encryption") || lowered.contains("ssl off")) {
        return Failure::TlsRequired(format!(
            "the server accepts user {user} only over TLS (pg_hba.conf `hostssl`), and this connection is plaintext (sslmode=disable, or prefer with a server that offered no TLS): {}",
            error.message
        ));
    }
    match error.code.as_str() {
        "28P01" | "28000" => Failure::Auth(format!("authentication failed for user {user}: {}", error.message)),
        _ => Failure::Server(error),
    }
}

/// A server as a plugin's config names it (`url`, `sslmode`, `password_secret`, the
/// fields every PostgreSQL plugin has), ready to connect; and the reports for failures
/// to reach it, the same in every plugin.
pub struct Server {
    /// Host name or address.
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// TLS as `sslmode` says (default `prefer`).
    pub sslmode: SslMode,
    /// User name, from the URL.
    pub user: String,
    /// Password: the secret `password_secret` names, else the URL's.
    pub password: Option<String>,
    /// Database: the URL's path, else the user name (as libpq).
    pub database: String,
    /// The URL with its password redacted, for reports.
    pub display: String,
}

impl Server {
    /// Reads `url` (`postgres://user[:password]@host[:port]/database[?sslmode=MODE]`),
    /// the `sslmode` field (it must agree with the URL's) and the secret named by
    /// `password_secret`. Errors name the config field.
    pub fn from_config(url: &str, sslmode: Option<&str>, password_secret: Option<&str>) -> Result<Server, String> {
        let parsed = ServiceUrl::parse(url, &["postgres", "postgresql"]).map_err(|err| field_error("url", err))?;
        let sslmode = SslMode::from_url_and_field(&parsed, sslmode)?;
        let user = parsed
            .user
            .clone()
            .ok_or_else(|| field_error("url", "no user (postgres://USER@host/db)"))?;
        let database = if parsed.path.is_empty() {
            user.clone()
        } else {
            parsed.path.clone()
        };
        let password = match password_secret {
            Some(name) => Some(crate::secret(name).map_err(|err| field_error("password_secret", err))?),
            None => parsed.password.clone(),
        };
        Ok(Server {
            display: redact(url),
            host: parsed.host,
            port: parsed.port.unwrap_or(5432),
            sslmode,
            user,
            password,
            database,
        })
    }

    /// Connects and authenticates (see [`Session::connect`]); `application_name` shows
    /// in `pg_stat_activity`.
    pub fn connect(&self, application_name: &str) -> Result<(Session, bool), Failure> {
        Session::connect(&Params {
            host: &self.host,
            port: self.port,
            sslmode: self.sslmode,
            user: &self.user,
            password: self.password.as_deref(),
            database: &self.database,
            application_name,
        })
    }

    /// The CRITICAL report for a failure to reach or talk to the server (network, TLS,
    /// authentication, protocol); an error the server sent about a query is handed
    /// back, for the plugin to judge.
    pub fn unreachable(&self, failure: Failure) -> Result<Report, ServerError> {
        Ok(match failure {
            Failure::Io(err) => {
                let mut summary = format!("{}: {}", self.display, crate::describe_io(&err));
                if crate::net::tls_error(&err).is_some() && certificate_refused() {
                    summary.push_str(&format!(
                        " (sslmode={}: runbox verifies the certificate in every mode that uses TLS; trust the server's CA with --ca or tls: {{ca: FILE}}, or use sslmode=disable)",
                        self.sslmode
                    ));
                }
                Report::critical(summary)
            }
            Failure::Auth(message) | Failure::TlsRequired(message) => Report::critical(message),
            Failure::Tls(message) => Report::critical(format!("{}: {message}", self.display)),
            Failure::Protocol(message) => Report::critical(format!("{}: protocol error: {message}", self.display)),
            Failure::Server(error) => return Err(error),
        })
    }

    /// A note for a report when `prefer` fell back to plaintext (`tls`: whether the
    /// session is encrypted).
    pub fn plaintext_note(&self, tls: bool) -> Option<&'static str> {
        (!tls && self.sslmode == SslMode::Prefer)
            .then_some("the server offers no TLS: connected in plaintext (sslmode=prefer)")
    }
}

/// Whether the last handshake failed on the server's certificate (where libpq's
/// `prefer` and `require`, which do not verify, would have gone on): any failure but a
/// denied server name or a client certificate the server wants.
fn certificate_refused() -> bool {
    tls::last_handshake().is_some_and(|handshake| match handshake.outcome {
        Ok(()) => false,
        Err(failure) => !matches!(failure.problem, tls::Problem::Denied | tls::Problem::ClientCertificate),
    })
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

    /// A backend message: tag, length, body.
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn auth_ok_and_ready() -> Vec<u8> {
        [
            message(b'R', &0i32.to_be_bytes()),
            message(b'S', b"server_version\x0015.0\x00"),
            message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
            message(b'Z', b"I"),
        ]
        .concat()
    }

    fn row_description(columns: &[(&str, u32)]) -> Vec<u8> {
        let mut body = (columns.len() as i16).to_be_bytes().to_vec();
        for (name, oid) in columns {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&0u32.to_be_bytes()); // table
            body.extend_from_slice(&0i16.to_be_bytes()); // column
            body.extend_from_slice(&oid.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes()); // size
            body.extend_from_slice(&(-1i32).to_be_bytes()); // modifier
            body.extend_from_slice(&0i16.to_be_bytes()); // text
        }
        message(b'T', &body)
    }

    fn data_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut body = (values.len() as i16).to_be_bytes().to_vec();
        for value in values {
            match value {
                Some(text) => {
                    body.extend_from_slice(&(text.len() as i32).to_be_bytes());
                    body.extend_from_slice(text.as_bytes());
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        message(b'D', &body)
    }

    fn error(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, text) in fields {
            body.push(*kind);
            body.extend_from_slice(text.as_bytes());
            body.push(0);
        }
        body.push(0);
        message(b'E', &body)
    }

    fn params(password: Option<&str>) -> Params<'_> {
        Params {
            host: "db",
            port: 5432,
            sslmode: SslMode::Disable,
            user: "alice",
            password,
            database: "app",
            application_name: "runbox test",
        }
    }

    /// The frontend messages in `written` after the startup message, as (tag, body).
    fn sent(written: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let startup = u32::from_be_bytes(written[..4].try_into().unwrap()) as usize;
        let mut rest = &written[startup..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            out.push((rest[0], rest[5..1 + len].to_vec()));
            rest = &rest[1 + len..];
        }
        out
    }

    #[test]
    fn startup_names_user_database_and_application() {
        let session = Session::start(Scripted::new(&auth_ok_and_ready()), &params(None)).unwrap();
        let written = &session.stream.written;
        let text = String::from_utf8_lossy(written);
        for part in ["user\0alice\0", "database\0app\0", "application_name\0runbox test\0"] {
            assert!(text.contains(part), "{text:?}");
        }
        // Protocol 3.0.
        assert_eq!(written[4..8], [0, 3, 0, 0]);
    }

    #[test]
    fn authentication_methods_and_their_failures() {
        // Cleartext: the password goes as is.
        let reply = [message(b'R', &3i32.to_be_bytes()), auth_ok_and_ready()].concat();
        let session = Session::start(Scripted::new(&reply), &params(Some("pw"))).unwrap();
        assert_eq!(sent(&session.stream.written), vec![(b'p', b"pw\0".to_vec())]);

        // MD5: "md5" + md5(md5(password + user) + salt).
        let mut md5 = 5i32.to_be_bytes().to_vec();
        md5.extend_from_slice(&[1, 2, 3, 4]);
        let reply = [message(b'R', &md5), auth_ok_and_ready()].concat();
        let session = Session::start(Scripted::new(&reply), &params(Some("pw"))).unwrap();
        let expected = md5_hash(b"alice", b"pw", [1, 2, 3, 4]);
        assert_eq!(
            sent(&session.stream.written)[0].1,
            [expected.as_bytes(), b"\0"].concat()
        );

        // No password configured.
        let reply = message(b'R', &3i32.to_be_bytes());
        match Session::start(Scripted::new(&reply), &params(None)) {
            Err(Failure::Auth(message)) => assert!(message.contains("none is configured"), "{message}"),
            other => panic!("{:?}", other.err()),
        }
        // Wrong password, and a pg_hba `hostssl` refusal.
        let reply = [
            message(b'R', &3i32.to_be_bytes()),
            error(&[
                (b'S', "FATAL"),
                (b'C', "28P01"),
                (b'M', "password authentication failed for user \"alice\""),
            ]),
        ]
        .concat();
        match Session::start(Scripted::new(&reply), &params(Some("nope"))) {
            Err(Failure::Auth(message)) => assert!(
                message.starts_with("authentication failed for user alice: password authentication failed"),
                "{message}"
            ),
            other => panic!("{:?}", other.err()),
        }
        let reply = error(&[
            (b'C', "28000"),
            (
                b'M',
                "no pg_hba.conf entry for host \"1.2.3.4\", user \"alice\", database \"app\", no encryption",
            ),
        ]);
        assert!(matches!(
            Session::start(Scripted::new(&reply), &params(None)),
            Err(Failure::TlsRequired(_))
        ));
        // Kerberos is not supported, and says so.
        let reply = message(b'R', &2i32.to_be_bytes());
        match Session::start(Scripted::new(&reply), &params(Some("pw"))) {
            Err(Failure::Auth(message)) => assert!(message.contains("Kerberos"), "{message}"),
            other => panic!("{:?}", other.err()),
        }
        // A server that closes the connection.
        assert!(matches!(
            Session::start(Scripted::new(b""), &params(None)),
            Err(Failure::Io(_))
        ));
    }

    #[test]
    fn simple_queries_return_rows_or_the_first_error() {
        let reply = [
            auth_ok_and_ready(),
            row_description(&[("id", 23), ("name", 25)]),
            data_row(&[Some("1"), Some("a")]),
            data_row(&[Some("2"), None]),
            message(b'C', b"SELECT 2\0"),
            message(b'Z', b"T"),
            error(&[
                (b'C', "25006"),
                (b'M', "cannot execute DELETE in a read-only transaction"),
            ]),
            error(&[(b'C', "25P02"), (b'M', "current transaction is aborted")]),
            message(b'Z', b"E"),
        ]
        .concat();
        let mut session = Session::start(Scripted::new(&reply), &params(None)).unwrap();
        let rows = session.query("SELECT id, name FROM t").unwrap();
        assert_eq!(
            rows,
            vec![vec![Some("1".into()), Some("a".into())], vec![Some("2".into()), None]]
        );
        match session.query("DELETE FROM t; SELECT 1") {
            Err(Failure::Server(error)) => assert_eq!(error.code, "25006"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_statement_goes_through_the_extended_protocol() {
        let reply = [
            auth_ok_and_ready(),
            message(b'1', b""),
            message(b'2', b""),
            row_description(&[("n", 20), ("label", 25)]),
            data_row(&[Some("7"), Some("x")]),
            data_row(&[Some("8"), None]),
            data_row(&[Some("9"), Some("z")]),
            message(b'C', b"SELECT 3\0"),
            message(b'Z', b"T"),
        ]
        .concat();
        let mut session = Session::start(Scripted::new(&reply), &params(None)).unwrap();
        let result = session
            .query_one(
                "SELECT n, label FROM t WHERE k = $1 OR $2 IS NULL",
                &[Some("42"), None],
                2,
            )
            .unwrap();
        assert_eq!(
            result.columns,
            vec![
                Column {
                    name: "n".into(),
                    type_oid: 20
                },
                Column {
                    name: "label".into(),
                    type_oid: 25
                }
            ]
        );
        assert_eq!(
            result.rows,
            vec![vec![Some("7".into()), Some("x".into())], vec![Some("8".into()), None]]
        );
        assert_eq!((result.row_count, result.tag.as_str()), (3, "SELECT 3"));

        let sent = sent(&session.stream.written);
        let tags: Vec<u8> = sent.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(tags, b"PBDES", "Parse, Bind, Describe, Execute, Sync");
        // Parse: unnamed statement, the text, no parameter types.
        assert_eq!(sent[0].1, b"\0SELECT n, label FROM t WHERE k = $1 OR $2 IS NULL\0\0\0");
        // Bind: unnamed portal and statement, text formats, "42" and NULL.
        let bind = &sent[1].1;
        assert_eq!(bind[..6], [0, 0, 0, 0, 0, 2]);
        assert_eq!(bind[6..16], [0, 0, 0, 2, b'4', b'2', 0xff, 0xff, 0xff, 0xff]);
        // Describe the portal; Execute it with no row limit.
        assert_eq!(sent[2].1, b"P\0");
        assert_eq!(sent[3].1, b"\0\0\0\0\0");
    }

    #[test]
    fn the_extended_protocol_reports_every_error_field() {
        let reply = [
            auth_ok_and_ready(),
            error(&[
                (b'S', "ERROR"),
                (b'C', "42601"),
                (b'M', "cannot insert multiple commands into a prepared statement"),
                (b'D', "some detail"),
                (b'H', "some hint"),
            ]),
            message(b'Z', b"T"),
        ]
        .concat();
        let mut session = Session::start(Scripted::new(&reply), &params(None)).unwrap();
        match session.query_one("COMMIT; DELETE FROM t", &[], 10) {
            Err(Failure::Server(error)) => {
                assert_eq!(error.code, "42601");
                assert_eq!(
                    error.to_string(),
                    "cannot insert multiple commands into a prepared statement (SQLSTATE 42601); detail: some detail; hint: some hint"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    #[test]
    fn sslmode_comes_from_the_url_or_the_field_and_defaults_to_prefer() {
        // (url, sslmode field, result)
        let table: &[(&str, Option<&str>, Result<SslMode, &str>)] = &[
            ("postgres://u@h/db", None, Ok(SslMode::Prefer)),
            ("postgres://u@h/db?sslmode=require", None, Ok(SslMode::Require)),
            ("postgres://u@h/db", Some("verify-full"), Ok(SslMode::VerifyFull)),
            (
                "postgres://u@h/db?sslmode=disable",
                Some("disable"),
                Ok(SslMode::Disable),
            ),
            (
                "postgres://u@h/db?sslmode=disable",
                Some("require"),
                Err("config field `sslmode`: require contradicts sslmode=disable in `url`"),
            ),
            (
                "postgres://u@h/db?sslmode=on",
                None,
                Err("config field `url`: sslmode \"on\" is not one of"),
            ),
        ];
        for (url, field, expected) in table {
            let url = ServiceUrl::parse(url, &["postgres"]).unwrap();
            match (SslMode::from_url_and_field(&url, *field), expected) {
                (Ok(mode), Ok(expected)) => assert_eq!(mode, *expected, "{url:?}"),
                (Err(err), Err(expected)) => assert!(err.starts_with(expected), "{err}"),
                (got, _) => panic!("{url:?} {field:?}: {got:?}"),
            }
        }
    }
}
