//! Outgoing HTTP (`wasi:http/outgoing-handler`). Every request passes
//! [`NetworkPolicy::check_http`], which decides it (destination, method, metadata),
//! resolves its host once and returns the addresses to use. [`connect`] then connects to
//! exactly those addresses, so a DNS answer that changes after the check (rebinding) is
//! never used, and secures the connection with TLS for `https`. The request goes out over
//! HTTP/1.1 as wasmtime-wasi-http's `default_send_request` sends it, with its timeouts
//! clamped to the invocation's deadline, and the response body is capped. A redirect is a
//! new request from the plugin and is checked again.
//!
//! Only once a request is allowed, and only in that request, are the step's header
//! secrets filled in ([`HeaderSecrets::fill`]); a request whose headers hold a
//! placeholder the step does not grant is refused before anything is sent.
//!
//! When runbox exports traces, every allowed request carries the step span's W3C
//! `traceparent`, set by the host: it replaces a `traceparent` the plugin set, and a
//! plugin's `tracestate` (which would describe another trace) is removed. When tracing is
//! off the plugin's headers pass as they are.

use super::header_secrets::HeaderSecrets;
use super::network::{Denial, HttpPermit, HttpRefusal, NetworkPolicy};
use super::tls::{Failure, Handshakes, LoggedConnection, Problem, Trust};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Default cap on one response body.
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// The HTTP enforcement point of one sandbox.
pub struct HttpHooks {
    policy: Arc<NetworkPolicy>,
    deadline: Instant,
    max_response_bytes: u64,
    tls: Tls,
    header_secrets: Arc<HeaderSecrets>,
    traceparent: Option<http::HeaderValue>,
}

/// What an `https` connection is made with: the step's trust, and the invocation's
/// record of handshakes (which `runbox:tls/handshakes` shows the plugin).
#[derive(Clone)]
pub struct Tls {
    /// The step's trust.
    pub trust: Arc<Trust>,
    /// Where each handshake is recorded.
    pub log: Arc<Handshakes>,
    /// When the invocation ends.
    pub deadline: Instant,
}

impl HttpHooks {
    /// Hooks deciding with `policy`, ending every request by `deadline`, securing
    /// `https` with the step's `trust` (the same path as `wasi:tls`, see
    /// [`super::tls`]) and recording each handshake in `log`.
    pub fn new(policy: Arc<NetworkPolicy>, trust: Arc<Trust>, log: Arc<Handshakes>, deadline: Instant) -> HttpHooks {
        HttpHooks {
            policy,
            deadline,
            max_response_bytes: MAX_RESPONSE_BYTES,
            tls: Tls { trust, log, deadline },
            header_secrets: Arc::default(),
            traceparent: None,
        }
    }

    /// The same hooks putting `traceparent` (the step span's, when runbox exports traces)
    /// on every allowed request, in place of any the plugin set.
    pub fn with_traceparent(mut self, traceparent: Option<http::HeaderValue>) -> HttpHooks {
        self.traceparent = traceparent;
        self
    }

    /// The same hooks filling `secrets` into the headers of allowed requests. Without
    /// them, a request whose headers hold a `${{ secrets.NAME }}` placeholder is refused.
    pub fn with_header_secrets(mut self, secrets: Arc<HeaderSecrets>) -> HttpHooks {
        self.header_secrets = secrets;
        self
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let policy = self.policy.clone();
        let header_secrets = self.header_secrets.clone();
        let tls = self.tls.clone();
        let traceparent = self.traceparent.clone();
        let left = self.deadline.saturating_duration_since(Instant::now());
        let max = self.max_response_bytes;
        let clamp = |timeout: Option<Duration>| timeout.map_or(left, |t| t.min(left));
        let options = options.unwrap_or_default();
        let timeouts = Timeouts {
            connect: clamp(options.connect_timeout),
            first_byte: clamp(options.first_byte_timeout),
            between_bytes: clamp(options.between_bytes_timeout),
        };
        Box::new(async move {
            let (mut head, body) = request.into_parts();
            let permit = match policy.check_http(&head).await {
                Ok(permit) => permit,
                Err(HttpRefusal::Denied(_)) => return Err(Error::HttpRequestDenied),
                Err(HttpRefusal::NoHost) => return Err(Error::HttpRequestUriInvalid),
                Err(HttpRefusal::Lookup(err)) => {
                    return Err(Error::DnsError {
                        rcode: Some(err.to_string()),
                        info_code: None,
                    });
                }
            };
            // This request may go to these addresses: now, and only into it, the secrets.
            fill_header_secrets(&header_secrets, &policy, &permit, &mut head)?;
            if let Some(traceparent) = traceparent {
                // `insert` replaces every value the plugin gave the header.
                head.headers.insert("traceparent", traceparent);
                head.headers.remove("tracestate");
            }
            let host = head.uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
            let use_tls = head
                .uri
                .scheme_str()
                .is_none_or(|scheme| scheme.eq_ignore_ascii_case("https"));
            let stream = connect(&permit.addrs, &host, use_tls.then_some(&tls), timeouts.connect).await?;
            let body = match (permit.data_denial, permit.trailers_denial) {
                (None, None) => body,
                (data_denial, trailers_denial) => GuardedBody {
                    inner: body,
                    policy,
                    data_denial,
                    trailers_denial,
                }
                .boxed_unsync(),
            };
            let (response, io) = send(http::Request::from_parts(head, body), stream, timeouts).await?;
            let response = response.map(|body| {
                CappedBody {
                    inner: body,
                    left: max,
                    max,
                }
                .boxed_unsync()
            });
            Ok((response, io))
        })
    }

    // What an unsent request's body may hold in the host: (1 + 1) chunks of this size.
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        OUTGOING_BODY_CHUNK_BYTES
    }
}

/// Fills the step's header secrets into `head`, a request the policy allowed to
/// `permit`'s destination. A placeholder the step does not grant, or a value a header
/// cannot carry, refuses the request (recorded as a denial): nothing is sent.
fn fill_header_secrets(
    secrets: &HeaderSecrets,
    policy: &NetworkPolicy,
    permit: &HttpPermit,
    head: &mut http::request::Parts,
) -> Result<(), Error> {
    let destination = &permit.destination;
    match secrets.fill(&mut head.headers) {
        Ok(filled) => {
            if !filled.is_empty() {
                let filled: Vec<String> = filled
                    .iter()
                    .map(|(header, name)| format!("{name} in {header}"))
                    .collect();
                tracing::debug!(plugin = %policy.plugin(), operation = "HTTP header secrets to", target = %destination, secrets = %filled.join(", "), decision = "allowed", "capability decision");
            }
            Ok(())
        }
        Err(refusal) => {
            let denial = policy.deny(
                format!("HTTP {} to {destination} {}", head.method, refusal.attempt()),
                refusal.remedy(),
            );
            tracing::debug!(plugin = %policy.plugin(), operation = "HTTP header secrets to", target = %destination, decision = "denied", reason = %denial.remedy, "capability decision");
            Err(Error::HttpRequestDenied)
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// Connects to the first of `addrs` that accepts, in order, within `timeout` (one budget
/// for the TCP attempts and the TLS handshake), and nowhere else: no name is resolved
/// here. With `tls`, the connection is secured for the server name `host` (a name, or an
/// address in `[::1]` or `127.0.0.1` form) by [`Trust::handshake`], the host's one TLS path.
pub async fn connect(
    addrs: &[SocketAddr],
    host: &str,
    tls: Option<&Tls>,
    timeout: Duration,
) -> Result<Box<dyn Stream>, Error> {
    let until = tokio::time::Instant::now() + timeout;
    let tcp = async {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => {
                    tracing::debug!(%addr, error = %err, "HTTP connect failed");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to")))
    };
    let tcp = tokio::time::timeout_at(until, tcp)
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    // A request is written whole; waiting for an ACK before its last segment (Nagle) only
    // delays it, and the TLS handshake's last flight most of all.
    tcp.set_nodelay(true).ok();
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let deadline = tls.deadline.min(until.into_std());
    match tls.trust.handshake(host, tcp, &tls.log, deadline).await {
        Ok(conn) => Ok(Box::new(LoggedConnection::new(conn, tls.log.clone()))),
        Err(failure) => Err(http_error(failure)),
    }
}

/// The `wasi:http` error code of a failed handshake. Certificate problems are
/// `tls-certificate-error`, a refused client certificate an alert carrying the host's
/// message; the full reason is in `runbox:tls/handshakes` either way.
fn http_error(failure: Failure) -> Error {
    match failure.problem {
        Problem::Expired | Problem::NotYetValid | Problem::NameMismatch | Problem::UnknownIssuer => {
            Error::TlsCertificateError
        }
        Problem::ClientCertificate => Error::TlsAlertReceived {
            alert_id: None,
            alert_message: Some(failure.message),
        },
        Problem::Denied => Error::HttpRequestDenied,
        Problem::TimedOut => Error::ConnectionTimeout,
        Problem::Other => Error::TlsProtocolError,
    }
}

/// Clamped timeouts of one request.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

/// Sends `request` over `stream` as one HTTP/1.1 exchange, as wasmtime-wasi-http's
/// `default_send_request` does: the request line carries only the path and query, the
/// response head must arrive within `first_byte` and each body frame within
/// `between_bytes`. The returned future drives the connection to its end.
async fn send(mut request: http::Request<WasiBody>, stream: Box<dyn Stream>, timeouts: Timeouts) -> SendResult {
    let (mut sender, conn) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The URI carries the scheme and authority, which belong in the request line only
    // when talking to a proxy.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(request.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .expect("comes from a valid request");

    let send = async move {
        let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(from_hyper)?;
        // Tokio panics on a zero interval.
        let between = timeouts.between_bytes.max(Duration::from_nanos(1));
        let mut timeout = tokio::time::interval(between);
        timeout.reset();
        Ok::<_, Error>(response.map(|incoming| IncomingBody { incoming, timeout }))
    };
    let mut send = pin!(send);
    let mut conn = Some(conn);
    // Wait for the response while driving the connection's I/O.
    let response = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(driver) = conn.as_mut() else {
                return Poll::Pending;
            };
            let done = ready!(Pin::new(driver).poll(cx));
            conn = None;
            match done {
                Ok(()) => send.as_mut().poll(cx),
                Err(err) => Poll::Ready(Err(from_hyper(err))),
            }
        }
    })
    .await?;
    let io = async move {
        let Some(conn) = conn else {
            return Ok(());
        };
        conn.await.map_err(|err| {
            if err.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                from_hyper(err)
            }
        })
    };
    Ok((
        response.map(BodyExt::boxed_unsync),
        Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
    ))
}

/// A hyper error as `wasi:http` reports it; a TLS failure under it (a TLS 1.3 server
/// refusing the client certificate on the first read after the handshake) keeps its TLS
/// error code and message rather than becoming a protocol error.
fn from_hyper(err: hyper::Error) -> Error {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = next {
        let failure = cause.downcast_ref::<Failure>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<Failure>())
        });
        if let Some(failure) = failure {
            return http_error(failure.clone());
        }
        next = cause.source();
    }
    Error::from(err)
}

/// A response body that fails when the next frame takes longer than its interval.
struct IncomingBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(err))) if err.is_timeout() => Poll::Ready(Some(Err(Error::HttpResponseTimeout))),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(from_hyper(err)))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// A request body held to what the policy allowed: no data (a read-only GET, HEAD or
/// OPTIONS) or no trailers (any read-only request). A refused frame is recorded as a
/// denial and fails the request before it is written: hyper then closes the connection,
/// so the server never sees the data.
struct GuardedBody {
    inner: WasiBody,
    policy: Arc<NetworkPolicy>,
    data_denial: Option<Denial>,
    trailers_denial: Option<Denial>,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            let refused = if frame.data_ref().is_some_and(|data| !data.is_empty()) {
                self.data_denial.clone()
            } else if frame.is_trailers() {
                self.trailers_denial.clone()
            } else {
                None
            };
            if let Some(denial) = refused {
                self.policy.deny(denial.attempt, denial.remedy);
                return Poll::Ready(Some(Err(Error::HttpRequestDenied)));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
/// Largest write to a request body; the host buffers two of them per body until the
/// request is sent (wasmtime-wasi-http's default is 1 MiB, times up to a thousand bodies).
pub const OUTGOING_BODY_CHUNK_BYTES: usize = 32 << 10;

/// A response body that fails once it exceeds its cap.
struct CappedBody {
    inner: WasiBody,
    left: u64,
    max: u64,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let len = data.len() as u64;
            if len > self.left {
                self.left = 0;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.max)))));
            }
            self.left -= len;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::network::Grant;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// A one-shot HTTP/1.1 server on `ip`: answers the first request with 200 "checked"
    /// and returns the request head it read.
    async fn server(ip: &str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(socket);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let body = "checked";
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            reader.get_mut().write_all(reply.as_bytes()).await.unwrap();
            head
        });
        (addr, task)
    }

    /// A resolver that answers `answers[n]` to its n-th lookup (the last one after
    /// that), like a rebinding DNS server, and counts its lookups.
    fn rebinding_dns(
        answers: Vec<Vec<IpAddr>>,
    ) -> (
        impl Fn(&str) -> super::super::network::LookupFuture + Send + Sync + 'static,
        Arc<AtomicUsize>,
    ) {
        let lookups = Arc::new(AtomicUsize::new(0));
        let counter = lookups.clone();
        let resolve = move |_: &str| -> super::super::network::LookupFuture {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)].clone();
            Box::pin(std::future::ready(Ok(answer)))
        };
        (resolve, lookups)
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    async fn get(hooks: &mut HttpHooks, url: &str) -> Result<(u16, String), Error> {
        let empty = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = http::Request::builder()
            .method("GET")
            .uri(url)
            .header("host", url.split('/').nth(2).unwrap())
            .body(empty)
            .unwrap();
        let (response, io) = Pin::from(hooks.send_request(request, None, Box::new(async { Ok(()) }))).await?;
        tokio::spawn(Pin::from(io));
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn hooks(
        grant: &str,
        dns: impl Fn(&str) -> super::super::network::LookupFuture + Send + Sync + 'static,
    ) -> HttpHooks {
        let grants = vec![grant.parse::<Grant>().unwrap()];
        let policy = NetworkPolicy::new("test", grants, false).with_resolver(dns);
        HttpHooks::new(
            Arc::new(policy),
            Trust::system(),
            Arc::default(),
            Instant::now() + Duration::from_secs(10),
        )
    }

    /// The name is resolved once, by the policy; the connection goes to the address it
    /// checked, even though a second lookup would answer differently (DNS rebinding).
    /// `localhost` resolves to 127.0.0.1 or ::1 on this machine, never to 127.0.0.3, so a
    /// connection that resolved the name again would not reach the server.
    #[tokio::test]
    async fn http_connects_to_the_address_the_policy_checked() {
        let (addr, served) = server("127.0.0.3").await;
        let (dns, lookups) = rebinding_dns(vec![ips(&["127.0.0.3"]), ips(&["127.0.0.4"])]);
        let mut hooks = hooks(&format!("http://localhost:{}", addr.port()), dns);
        let (status, body) = get(&mut hooks, &format!("http://localhost:{}/health", addr.port()))
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, "checked"));
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "one lookup: the policy's");
        let head = served.await.unwrap();
        assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: localhost:{}\r\n", addr.port())),
            "{head}"
        );
    }

    /// The addresses are tried in order: one that refuses the connection is skipped.
    #[tokio::test]
    async fn http_tries_the_checked_addresses_in_order() {
        let (addr, served) = server("127.0.0.3").await;
        let (dns, _) = rebinding_dns(vec![ips(&["127.0.0.4", "127.0.0.3"])]);
        let mut hooks = hooks(&format!("http://localhost:{}", addr.port()), dns);
        let (status, _) = get(&mut hooks, &format!("http://localhost:{}/", addr.port()))
            .await
            .unwrap();
        assert_eq!(status, 200);
        served.await.unwrap();
    }

    /// A granted name whose lookup returns a metadata address is refused before any
    /// connection; the error the plugin sees is a denial.
    #[tokio::test]
    async fn http_to_a_name_resolving_to_metadata_is_denied_without_connecting() {
        let (dns, lookups) = rebinding_dns(vec![ips(&["127.0.0.3", "169.254.169.254"])]);
        let mut hooks = hooks("http://localhost:8080", dns);
        let result = get(&mut hooks, "http://localhost:8080/latest/meta-data/").await;
        assert!(matches!(result, Err(Error::HttpRequestDenied)), "{result:?}");
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
        let denials = hooks.policy.denials();
        assert_eq!(denials.len(), 1, "{denials:?}");
        assert!(
            denials[0].remedy.contains("resolves to a cloud metadata address"),
            "{}",
            denials[0]
        );
    }

    /// A body of unknown length on a read-only OPTIONS (hyper sends it chunked; for GET
    /// and HEAD it sends none): the host refuses its first byte, so a second request
    /// hidden in it (request smuggling against a server that ignores such bodies) never
    /// reaches the server.
    #[tokio::test]
    async fn a_read_only_request_cannot_smuggle_a_request_in_its_body() {
        struct Hidden(Option<Bytes>);
        impl Body for Hidden {
            type Data = Bytes;
            type Error = Error;
            fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
                Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
            }
        }
        for method in ["OPTIONS", "GET"] {
            let listener = TcpListener::bind("127.0.0.3:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // Everything that arrives within half a second, then an answer.
            let received = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut bytes = Vec::new();
                let mut buf = [0u8; 4096];
                let until = tokio::time::Instant::now() + Duration::from_millis(500);
                while let Ok(Ok(n)) =
                    tokio::time::timeout_at(until, tokio::io::AsyncReadExt::read(&mut socket, &mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    bytes.extend_from_slice(&buf[..n]);
                }
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                String::from_utf8_lossy(&bytes).into_owned()
            });
            let grants = vec![format!("http://127.0.0.3:{}", addr.port()).parse::<Grant>().unwrap()];
            let policy = Arc::new(NetworkPolicy::new("test", grants, false));
            let mut hooks = HttpHooks::new(
                policy.clone(),
                Trust::system(),
                Arc::default(),
                Instant::now() + Duration::from_secs(10),
            );
            let smuggled = Bytes::from_static(b"DELETE /everything HTTP/1.1\r\nhost: x\r\n\r\n");
            let request = http::Request::builder()
                .method(method)
                .uri(format!("http://127.0.0.3:{}/", addr.port()))
                .body(Hidden(Some(smuggled)).boxed_unsync())
                .unwrap();
            let _ = Pin::from(hooks.send_request(request, None, Box::new(async { Ok(()) }))).await;
            let received = received.await.unwrap();
            assert!(!received.contains("DELETE"), "{method}: {received}");
            if method == "GET" {
                assert!(received.starts_with("GET / HTTP/1.1\r\n"), "{received}");
            } else {
                let denials = policy.denials();
                assert_eq!(denials.len(), 1, "{denials:?}");
                assert!(denials[0].to_string().starts_with(&format!(
                    "HTTP OPTIONS to http://127.0.0.3:{} with a body denied: a check or plan may send OPTIONS only without a body",
                    addr.port()
                )));
            }
        }
    }

    /// Sends `method` to `url` with `headers` and no body; the status, or the error.
    async fn send_with(hooks: &mut HttpHooks, method: &str, url: &str, headers: &[(&str, &str)]) -> Result<u16, Error> {
        let empty = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut request = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(empty).unwrap();
        let (response, io) = Pin::from(hooks.send_request(request, None, Box::new(async { Ok(()) }))).await?;
        tokio::spawn(Pin::from(io));
        Ok(response.status().as_u16())
    }

    /// Hooks for a step granted `grants`, with the header secret `k` (`tok-123`), the
    /// plugin's own secret `plain`, and `access`.
    fn secret_hooks(grants: &[String], access: crate::capabilities::network::Access) -> HttpHooks {
        let grants = grants.iter().map(|grant| grant.parse::<Grant>().unwrap()).collect();
        let policy = NetworkPolicy::new("test", grants, false).with_access(access);
        let secrets = std::collections::HashMap::from([
            ("k".to_string(), "tok-123".to_string()),
            ("plain".to_string(), "plain-value".to_string()),
        ]);
        HttpHooks::new(
            Arc::new(policy),
            Trust::system(),
            Arc::default(),
            Instant::now() + Duration::from_secs(10),
        )
        .with_header_secrets(Arc::new(HeaderSecrets::new(&["k".to_string()], &secrets)))
    }

    /// Whether a connection arrives at `listener` within a while.
    async fn connects(listener: &TcpListener) -> bool {
        tokio::time::timeout(Duration::from_millis(300), listener.accept())
            .await
            .is_ok()
    }

    /// An allowed request carries the secret in its header value; its path and query keep
    /// the placeholder's text.
    #[tokio::test]
    async fn header_secrets_fill_the_header_values_of_an_allowed_request() {
        use crate::capabilities::network::Access;
        let (addr, served) = server("127.0.0.3").await;
        let mut hooks = secret_hooks(&[format!("http://127.0.0.3:{}", addr.port())], Access::ReadOnly);
        let url = format!(
            "http://127.0.0.3:{}/p/${{{{secrets.k}}}}?q=${{{{secrets.k}}}}",
            addr.port()
        );
        let status = send_with(
            &mut hooks,
            "GET",
            &url,
            &[
                ("authorization", "Bearer ${{ secrets.k }}"),
                ("x-two", "${{secrets.k}}/${{ secrets.k }}"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        let head = served.await.unwrap();
        assert!(
            head.starts_with("GET /p/${{secrets.k}}?q=${{secrets.k}} HTTP/1.1\r\n"),
            "{head}"
        );
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("\r\nauthorization: bearer tok-123\r\n"), "{head}");
        assert!(lower.contains("\r\nx-two: tok-123/tok-123\r\n"), "{head}");
        assert_eq!(head.matches("tok-123").count(), 3, "{head}");
        assert!(hooks.policy.denials().is_empty());
    }

    /// A placeholder to an ungranted destination is refused by the grant check, before the
    /// secrets are looked at; one for a secret that is not a header secret is refused to a
    /// granted one. Neither connects.
    #[tokio::test]
    async fn header_secrets_never_reach_an_ungranted_host_or_ungranted_names() {
        use crate::capabilities::network::Access;
        let granted = TcpListener::bind("127.0.0.3:0").await.unwrap();
        let other = TcpListener::bind("127.0.0.4:0").await.unwrap();
        let granted_url = format!("http://127.0.0.3:{}", granted.local_addr().unwrap().port());
        let other_url = format!("http://127.0.0.4:{}", other.local_addr().unwrap().port());
        let mut hooks = secret_hooks(std::slice::from_ref(&granted_url), Access::Apply);
        let bearer = [("authorization", "Bearer ${{ secrets.k }}")];
        let result = send_with(&mut hooks, "GET", &format!("{other_url}/"), &bearer).await;
        assert!(matches!(result, Err(Error::HttpRequestDenied)), "{result:?}");
        assert!(!connects(&other).await, "the ungranted host was connected to");
        for (value, remedy) in [
            (
                "Bearer ${{ secrets.plain }}",
                "secret `plain` is granted for the plugin to read, not for the host to put in HTTP headers",
            ),
            (
                "${{ secrets.nope }}",
                "the step grants no secret `nope` for the host to put in HTTP headers",
            ),
        ] {
            let result = send_with(&mut hooks, "GET", &format!("{granted_url}/"), &[("x-key", value)]).await;
            assert!(matches!(result, Err(Error::HttpRequestDenied)), "{result:?}");
            let denials = hooks.policy.denials();
            let last = denials.last().unwrap().to_string();
            assert!(
                last.starts_with(&format!("HTTP GET to {granted_url} with `${{{{ secrets.")),
                "{last}"
            );
            assert!(last.contains(remedy), "{last}");
        }
        assert!(!connects(&granted).await, "a refused request was sent");
        let denials = hooks.policy.denials();
        assert_eq!(denials.len(), 3, "{denials:?}");
        assert!(denials[0].remedy.starts_with("no grant covers it"), "{}", denials[0]);
    }

    /// The policy decides on the headers as the plugin wrote them, before the secrets are
    /// in: a method override holding a placeholder is not a read, so a check cannot make a
    /// secret's value act as the method.
    #[tokio::test]
    async fn a_placeholder_in_a_method_override_is_refused_while_reading() {
        use crate::capabilities::network::Access;
        let listener = TcpListener::bind("127.0.0.3:0").await.unwrap();
        let url = format!("http://127.0.0.3:{}", listener.local_addr().unwrap().port());
        let mut hooks = secret_hooks(std::slice::from_ref(&url), Access::ReadOnly);
        let result = send_with(
            &mut hooks,
            "GET",
            &format!("{url}/"),
            &[("x-http-method-override", "${{ secrets.k }}")],
        )
        .await;
        assert!(matches!(result, Err(Error::HttpRequestDenied)), "{result:?}");
        assert!(!connects(&listener).await);
        let denials = hooks.policy.denials();
        assert!(
            denials[0]
                .attempt
                .ends_with("with `x-http-method-override: ${{ secrets.k }}`"),
            "{denials:?}"
        );
    }

    /// `https` is TLS to the checked address with the request's host as the server name,
    /// trusting exactly the given roots: the default (webpki roots) refuses a test CA.
    #[tokio::test]
    async fn https_verifies_the_host_name_against_the_given_roots() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["svc.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let server_config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
                )
                .unwrap();
        let listener = TcpListener::bind("127.0.0.3:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(socket).await {
                        let _ = tls.write_all(b"hello").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let settings = crate::capabilities::tls::TlsSettings {
            ca: vec![ca_file],
            ..Default::default()
        };
        let log = Arc::new(Handshakes::default());
        let deadline = Instant::now() + Duration::from_secs(5);
        let trusting = Tls {
            trust: Arc::new(Trust::build(&settings, &[]).unwrap()),
            log: log.clone(),
            deadline,
        };
        let timeout = Duration::from_secs(5);
        let mut stream = connect(&[addr], "svc.test", Some(&trusting), timeout).await.unwrap();
        let mut hello = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut hello)
            .await
            .unwrap();
        assert_eq!(hello, "hello");
        let seen = log.last().unwrap();
        assert!(seen.outcome.is_ok() && seen.verified);
        assert_eq!(
            seen.certificates,
            vec![leaf.der().to_vec()],
            "the chain the server presented is recorded"
        );
        // Another name than the certificate's: refused, and recorded as a name mismatch.
        let other = connect(&[addr], "other.test", Some(&trusting), timeout).await;
        assert!(matches!(other, Err(Error::TlsCertificateError)), "{:?}", other.err());
        let seen = log.last().unwrap();
        assert_eq!(seen.outcome.unwrap_err().problem, Problem::NameMismatch);
        assert_eq!(seen.certificates.len(), 1, "a refused chain is recorded too");
        // The default trust is the system's roots, which do not include the test CA.
        let system = Tls {
            trust: Trust::system(),
            log: log.clone(),
            deadline,
        };
        let default = connect(&[addr], "svc.test", Some(&system), timeout).await;
        assert!(
            matches!(default, Err(Error::TlsCertificateError)),
            "{:?}",
            default.err()
        );
        assert_eq!(log.last().unwrap().outcome.unwrap_err().problem, Problem::UnknownIssuer);
    }
}
