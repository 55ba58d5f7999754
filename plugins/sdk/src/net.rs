//! A blocking TCP stream on `wasi:sockets` that can become a TLS stream (`wasi:tls`) on
//! the same connection, the one line a plugin needs for TLS:
//!
//! ```ignore
//! let stream = net::Stream::connect(&host, port)?;
//! let stream = if tls { stream.start_tls(&host)? } else { stream };
//! ```
//!
//! `std::net::TcpStream` cannot hand its connection to `wasi:tls`, so this module talks
//! to `wasi:sockets` itself: name lookup (IP literals skip it), each address in turn,
//! and every wait is a poll on the stream together with a monotonic-clock timer, so a
//! silent server is "timed out" before the host's deadline. Errors carry the
//! [`io::ErrorKind`] std would give (the sandbox's refusal is `PermissionDenied`), so
//! [`crate::describe_io`] words them the same way.
//!
//! The host decides all trust when TLS starts: the step's CA files and client
//! certificate, TLS 1.2 or later, and that the server name is covered by the step's
//! grants. A failed handshake is an error carrying the host's reason ([`TlsError`]).

use crate::tls::bindings::wasi::tls::types::{ClientConnection, ClientHandshake};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::Duration;
use wasi::clocks::monotonic_clock;
use wasi::io::poll::{Pollable, poll};
use wasi::io::streams::{InputStream, OutputStream, StreamError};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, Network,
};
use wasi::sockets::tcp::TcpSocket;
use wasi::sockets::{ip_name_lookup, tcp_create_socket};

/// A connected TCP stream, plaintext or TLS, with std-like read and write timeouts.
///
/// The timeout (for connecting, the handshake, and each read or write) defaults to
/// [`crate::io_timeout`] at connect time: a little before the host's deadline.
pub struct Stream {
    // Fields drop in order, and WASI requires a child resource to go before its parent:
    // the streams, then the TLS connection they belong to, then the socket.
    input: InputStream,
    output: OutputStream,
    tls: Option<ClientConnection>,
    _socket: TcpSocket,
    timeout: Option<Duration>,
}

impl Stream {
    /// Resolves `host` (an IP literal needs no lookup) and connects to the first of its
    /// addresses that accepts, like `TcpStream::connect((host, port))`.
    pub fn connect(host: &str, port: u16) -> io::Result<Stream> {
        let timeout = crate::io_timeout();
        let deadline = Deadline::after(timeout);
        let network = instance_network();
        let mut last_error = None;
        for address in resolve(&network, host, deadline)? {
            match connect_to(&network, address, port, deadline) {
                Ok((socket, input, output)) => {
                    return Ok(Stream {
                        input,
                        output,
                        tls: None,
                        _socket: socket,
                        timeout,
                    });
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))))
    }

    /// Sets the timeout of each later read, write and handshake (`None`: wait until the
    /// host's deadline stops the plugin).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Whether this stream is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Makes a TLS client handshake on this connection for `server_name` (the host name
    /// of the URL, or its IP literal) and returns the TLS stream. Whatever the plugin
    /// already read or wrote stays plaintext, so protocols that upgrade (PostgreSQL's
    /// SSLRequest, SMTP's STARTTLS) call this after their plaintext exchange.
    ///
    /// A failed handshake is an error of kind `PermissionDenied` when the host refused
    /// the server name (no grant covers it), else `InvalidData`; either way it carries a
    /// [`TlsError`] with the host's reason ("certificate expired", "unknown issuer", ...).
    pub fn start_tls(self, server_name: &str) -> io::Result<Stream> {
        let Stream {
            input,
            output,
            tls,
            _socket: socket,
            timeout,
        } = self;
        if tls.is_some() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the stream is TLS already"));
        }
        let deadline = Deadline::after(timeout);
        let future = ClientHandshake::finish(ClientHandshake::new(server_name, input, output));
        let result = loop {
            if let Some(result) = future.get() {
                break result;
            }
            if !deadline.wait(&future.subscribe()) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake with {server_name} timed out"),
                ));
            }
        };
        match result {
            Ok(Ok((connection, input, output))) => Ok(Stream {
                input,
                output,
                tls: Some(connection),
                _socket: socket,
                timeout,
            }),
            Ok(Err(error)) => Err(TlsError::new(error.to_debug_string()).into()),
            Err(()) => Err(io::Error::other("the TLS handshake's result was taken twice")),
        }
    }

    fn deadline(&self) -> Deadline {
        Deadline::after(self.timeout)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // The clock is read only if a wait is needed: a read that finds data, or a write
        // with room, costs no host call for the timeout.
        let mut deadline = None;
        loop {
            match self.input.read(buf.len() as u64) {
                Ok(chunk) if chunk.is_empty() => {
                    let deadline = *deadline.get_or_insert_with(|| self.deadline());
                    if !deadline.wait(&self.input.subscribe()) {
                        return Err(timed_out());
                    }
                }
                Ok(chunk) => {
                    let len = chunk.len().min(buf.len());
                    buf[..len].copy_from_slice(&chunk[..len]);
                    return Ok(len);
                }
                Err(StreamError::Closed) => return Ok(0),
                Err(StreamError::LastOperationFailed(error)) => return Err(stream_error(&error)),
            }
        }
    }
}

impl Write for Stream {
    /// Queues what the stream accepts now (waiting for room if none) and asks the host
    /// to send it, so a request is on its way when the plugin turns to read the reply.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut deadline = None;
        loop {
            match self.output.check_write() {
                Ok(0) => {
                    let deadline = *deadline.get_or_insert_with(|| self.deadline());
                    if !deadline.wait(&self.output.subscribe()) {
                        return Err(timed_out());
                    }
                }
                Ok(room) => {
                    let len = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                    self.output.write(&buf[..len]).map_err(write_error)?;
                    self.output.flush().map_err(write_error)?;
                    return Ok(len);
                }
                Err(err) => return Err(write_error(err)),
            }
        }
    }

    /// Waits until everything written has been sent.
    fn flush(&mut self) -> io::Result<()> {
        let deadline = self.deadline();
        self.output.flush().map_err(write_error)?;
        loop {
            if !deadline.wait(&self.output.subscribe()) {
                return Err(timed_out());
            }
            match self.output.check_write() {
                Ok(0) => {}
                Ok(_) => return Ok(()),
                Err(err) => return Err(write_error(err)),
            }
        }
    }
}

/// A TLS handshake the host refused or that failed, with the host's reason. It is the
/// payload of the [`io::Error`] [`Stream::start_tls`] returns; [`tls_error`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// The host's message ("... certificate expired ...", "... not granted ...").
    pub message: String,
}

impl TlsError {
    fn new(message: String) -> TlsError {
        TlsError { message }
    }

    /// Whether the host refused the server name itself (not covered by the grants), a
    /// sandbox denial like a refused connect.
    pub fn is_denied(&self) -> bool {
        self.message.contains("not granted")
    }
}

impl fmt::Display for TlsError {
    /// The host's message, which says "TLS handshake with NAME failed: …"; prefixed with
    /// "TLS handshake failed: " if it does not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::tls::failure_text(&self.message))
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(error: TlsError) -> io::Error {
        let kind = if error.is_denied() {
            io::ErrorKind::PermissionDenied
        } else {
            io::ErrorKind::InvalidData
        };
        io::Error::new(kind, error)
    }
}

/// The TLS handshake failure `err` carries, if it is one.
pub fn tls_error(err: &io::Error) -> Option<&TlsError> {
    err.get_ref()?.downcast_ref::<TlsError>()
}

/// A point on the monotonic clock by which a wait gives up (`None`: never).
#[derive(Clone, Copy)]
struct Deadline(Option<monotonic_clock::Instant>);

impl Deadline {
    fn after(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.map(|timeout| {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            monotonic_clock::now().saturating_add(nanos)
        }))
    }

    /// Waits until `pollable` is ready (true) or the deadline passes (false).
    fn wait(self, pollable: &Pollable) -> bool {
        match self.0 {
            None => {
                pollable.block();
                true
            }
            Some(instant) => {
                let timer = monotonic_clock::subscribe_instant(instant);
                poll(&[pollable, &timer]).contains(&0)
            }
        }
    }
}

/// The addresses of `host`: itself if it is an IP literal, else what the host's lookup
/// (checked against the grants) returns.
fn resolve(network: &Network, host: &str, deadline: Deadline) -> io::Result<Vec<IpAddress>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip_address(ip)]);
    }
    let lookup = ip_name_lookup::resolve_addresses(network, host).map_err(|code| lookup_error(host, code))?;
    let mut addresses = Vec::new();
    loop {
        match lookup.resolve_next_address() {
            Ok(Some(address)) => addresses.push(address),
            Ok(None) => return Ok(addresses),
            Err(ErrorCode::WouldBlock) => {
                if !deadline.wait(&lookup.subscribe()) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("looking up {host} timed out"),
                    ));
                }
            }
            Err(code) => return Err(lookup_error(host, code)),
        }
    }
}

fn connect_to(
    network: &Network,
    address: IpAddress,
    port: u16,
    deadline: Deadline,
) -> io::Result<(TcpSocket, InputStream, OutputStream)> {
    let (family, remote) = match address {
        IpAddress::Ipv4(address) => (
            IpAddressFamily::Ipv4,
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address }),
        ),
        IpAddress::Ipv6(address) => (
            IpAddressFamily::Ipv6,
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port,
                flow_info: 0,
                address,
                scope_id: 0,
            }),
        ),
    };
    // wasi:sockets 0.2 has no TCP_NODELAY option; each write is flushed as it is made.
    let socket = tcp_create_socket::create_tcp_socket(family).map_err(socket_error)?;
    socket.start_connect(network, remote).map_err(socket_error)?;
    loop {
        match socket.finish_connect() {
            Ok((input, output)) => return Ok((socket, input, output)),
            Err(ErrorCode::WouldBlock) => {
                if !deadline.wait(&socket.subscribe()) {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
                }
            }
            Err(code) => return Err(socket_error(code)),
        }
    }
}

fn ip_address(ip: IpAddr) -> IpAddress {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(ip) => {
            let [a, b, c, d, e, f, g, h] = ip.segments();
            IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

/// The [`io::ErrorKind`] std gives for a `wasi:sockets` error code.
pub fn error_kind(code: ErrorCode) -> io::ErrorKind {
    use io::ErrorKind;
    match code {
        ErrorCode::AccessDenied => ErrorKind::PermissionDenied,
        ErrorCode::ConnectionRefused => ErrorKind::ConnectionRefused,
        ErrorCode::ConnectionReset => ErrorKind::ConnectionReset,
        ErrorCode::ConnectionAborted => ErrorKind::ConnectionAborted,
        ErrorCode::Timeout => ErrorKind::TimedOut,
        ErrorCode::WouldBlock => ErrorKind::WouldBlock,
        ErrorCode::RemoteUnreachable => ErrorKind::HostUnreachable,
        ErrorCode::AddressInUse => ErrorKind::AddrInUse,
        ErrorCode::AddressNotBindable => ErrorKind::AddrNotAvailable,
        ErrorCode::NotSupported => ErrorKind::Unsupported,
        ErrorCode::InvalidArgument => ErrorKind::InvalidInput,
        ErrorCode::OutOfMemory => ErrorKind::OutOfMemory,
        ErrorCode::NameUnresolvable => ErrorKind::NotFound,
        _ => ErrorKind::Other,
    }
}

fn socket_error(code: ErrorCode) -> io::Error {
    let kind = error_kind(code);
    match kind {
        io::ErrorKind::Other => io::Error::other(format!("socket error: {}", code.name())),
        kind => kind.into(),
    }
}

fn lookup_error(host: &str, code: ErrorCode) -> io::Error {
    let reason = match code {
        ErrorCode::NameUnresolvable => "no such host",
        ErrorCode::TemporaryResolverFailure => "temporary resolver failure",
        ErrorCode::PermanentResolverFailure => "resolver failure",
        ErrorCode::AccessDenied => return io::ErrorKind::PermissionDenied.into(),
        other => other.name(),
    };
    io::Error::new(error_kind(code), format!("cannot resolve {host}: {reason}"))
}

fn write_error(err: StreamError) -> io::Error {
    match err {
        StreamError::Closed => io::ErrorKind::BrokenPipe.into(),
        StreamError::LastOperationFailed(error) => stream_error(&error),
    }
}

/// A failed read or write. `wasi:sockets` 0.2 cannot say which error code it was (that
/// function is unstable), so the kind is read from the host's description. A TLS
/// failure after the handshake (a TLS 1.3 server refusing the client certificate says so
/// on the first read) is a [`TlsError`], like one during it.
fn stream_error(error: &wasi::io::error::Error) -> io::Error {
    let message = error.to_debug_string();
    if message.starts_with("TLS handshake") {
        return TlsError::new(message).into();
    }
    io::Error::new(kind_from_message(&message), message)
}

fn kind_from_message(message: &str) -> io::ErrorKind {
    let lowered = message.to_ascii_lowercase();
    let table = [
        ("reset", io::ErrorKind::ConnectionReset),
        ("aborted", io::ErrorKind::ConnectionAborted),
        ("broken pipe", io::ErrorKind::BrokenPipe),
        ("timed out", io::ErrorKind::TimedOut),
        ("refused", io::ErrorKind::ConnectionRefused),
        ("eof", io::ErrorKind::UnexpectedEof),
    ];
    table
        .iter()
        .find(|(words, _)| lowered.contains(words))
        .map_or(io::ErrorKind::Other, |(_, kind)| *kind)
}

fn timed_out() -> io::Error {
    io::ErrorKind::TimedOut.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_get_the_kinds_std_gives() {
        let table = [
            (ErrorCode::AccessDenied, io::ErrorKind::PermissionDenied),
            (ErrorCode::ConnectionRefused, io::ErrorKind::ConnectionRefused),
            (ErrorCode::Timeout, io::ErrorKind::TimedOut),
            (ErrorCode::ConnectionReset, io::ErrorKind::ConnectionReset),
            (ErrorCode::RemoteUnreachable, io::ErrorKind::HostUnreachable),
            (ErrorCode::Unknown, io::ErrorKind::Other),
        ];
        for (code, kind) in table {
            assert_eq!(error_kind(code), kind, "{code:?}");
        }
        assert_eq!(
            crate::describe_io(&socket_error(ErrorCode::AccessDenied)),
            "connection not permitted by the sandbox"
        );
        assert_eq!(
            crate::describe_io(&socket_error(ErrorCode::ConnectionRefused)),
            "connection refused"
        );
        assert_eq!(
            kind_from_message("Connection reset by peer (os error 104)"),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(kind_from_message("tls: bad record mac"), io::ErrorKind::Other);
    }

    #[test]
    fn handshake_failures_carry_the_hosts_reason() {
        let err: io::Error = TlsError::new("invalid peer certificate: certificate expired".into()).into();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            crate::describe_io(&err),
            "TLS handshake failed: invalid peer certificate: certificate expired"
        );
        assert!(tls_error(&err).is_some());
        let err: io::Error = TlsError::new("TLS handshake with db failed: unknown issuer".into()).into();
        assert_eq!(crate::describe_io(&err), "TLS handshake with db failed: unknown issuer");

        let err: io::Error = TlsError::new("server name db.internal is not granted".into()).into();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(tls_error(&err).is_some_and(TlsError::is_denied));
        assert!(tls_error(&io::ErrorKind::PermissionDenied.into()).is_none());
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        assert!(matches!(
            ip_address("127.0.0.1".parse().unwrap()),
            IpAddress::Ipv4((127, 0, 0, 1))
        ));
        assert!(matches!(
            ip_address("::1".parse().unwrap()),
            IpAddress::Ipv6((0, 0, 0, 0, 0, 0, 0, 1))
        ));
    }
}
