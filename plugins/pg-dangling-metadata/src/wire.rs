//! A PostgreSQL v3 client over a blocking TCP stream: TLS as `sslmode` says (the
//! SSLRequest, then the host's handshake), startup, authentication (trust, cleartext,
//! md5, SCRAM-SHA-256), simple query, termination. Message encoding and decoding is
//! `postgres-protocol`'s; this module only sequences it.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use runbox_plugin_sdk::net::Stream;
use runbox_plugin_sdk::postgres::{SslMode, ssl_request};
use runbox_plugin_sdk::tls;
use std::io::{self, Read, Write};

/// An error the server sent (an `ErrorResponse`).
#[derive(Debug, Clone)]
pub struct ServerError {
    /// SQLSTATE, e.g. `28P01`.
    pub code: String,
    /// The primary message.
    pub message: String,
}

impl ServerError {
    fn from_body(body: &ErrorResponseBody) -> ServerError {
        let mut error = ServerError {
            code: String::new(),
            message: String::new(),
        };
        let mut fields = body.fields();
        while let Ok(Some(field)) = fields.next() {
            match field.type_() {
                b'C' => error.code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                b'M' => error.message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                _ => {}
            }
        }
        error
    }
}

/// Why talking to the server failed.
#[derive(Debug)]
pub enum Failure {
    /// The network failed (refused, reset, timed out, closed).
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

/// An authenticated session.
pub struct Session {
    stream: Stream,
    buffer: BytesMut,
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
}

impl Session {
    /// Connects, starts TLS as `sslmode` says, and authenticates. Returns the session
    /// and whether it is encrypted.
    pub fn connect(params: &Params) -> Result<(Session, bool), Failure> {
        let (stream, tls) = open(params)?;
        let mut session = Session {
            stream,
            buffer: BytesMut::with_capacity(8192),
        };
        let Params {
            user,
            password,
            database,
            ..
        } = *params;
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", user),
                ("database", database),
                ("application_name", "runbox pg-dangling-metadata"),
            ],
            &mut out,
        )?;
        session.send(&out)?;
        session.authenticate(user, password)?;
        // Parameter status, backend key data, then ready.
        loop {
            match session.receive()? {
                Message::ReadyForQuery(_) => return Ok((session, tls)),
                Message::ErrorResponse(body) => {
                    return Err(Failure::Server(ServerError::from_body(&body)));
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
                        Message::ErrorResponse(body) => return Err(auth_error(user, &body)),
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
                        Message::ErrorResponse(body) => return Err(auth_error(user, &body)),
                        _ => return Err(Failure::Protocol("unexpected message during SCRAM".into())),
                    }
                    continue;
                }
                Message::ErrorResponse(body) => return Err(auth_error(user, &body)),
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
    /// statement in it, or the first error the server reported.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>, Failure> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.send(&out)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.receive()? {
                Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let row: Row = body
                        .ranges()
                        .map(|range| Ok(range.map(|range| String::from_utf8_lossy(&buffer[range]).into_owned())))
                        .collect()
                        .map_err(Failure::Io)?;
                    rows.push(row);
                }
                Message::ErrorResponse(body) => {
                    error.get_or_insert(ServerError::from_body(&body));
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

    /// Says goodbye (Terminate) and closes the connection.
    pub fn terminate(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.send(&out);
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
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

fn auth_error(user: &str, body: &ErrorResponseBody) -> Failure {
    let error = ServerError::from_body(body);
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
