//! A blocking HTTP client over `wasi:http/outgoing-handler`. The host decides whether
//! each request may go out (its grants), connects, and enforces the deadline and the
//! response size cap; this module only builds requests and reads responses.
//!
//! Redirects are not followed here: a plugin that wants to follow one sends a new
//! request, which the host checks against the grants like any other.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

/// A response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed, in words for a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The sandbox refused the request (no grant covers the URL).
    Denied,
    /// Connection refused.
    Refused,
    /// Connect, first byte or between bytes took too long.
    TimedOut,
    /// Anything else, described.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Denied => f.write_str("request not permitted by the sandbox"),
            Failure::Refused => f.write_str("connection refused"),
            Failure::TimedOut => f.write_str("timed out"),
            Failure::Other(message) => f.write_str(message),
        }
    }
}

/// The parts of an `http(s)://authority/path?query` URL a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// `/path?query` (at least `/`).
    pub path_with_query: String,
}

impl Target {
    /// Splits `url`; errors say what is wrong.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("\"{url}\" is not a URL (expected http(s)://host/path)"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme \"{scheme}\" is not http or https"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "\"{url}\" has no host (or has user info, which is not supported)"
            ));
        }
        let path_with_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Target {
            scheme,
            authority: authority.to_string(),
            path_with_query,
        })
    }
}

/// `k=v&k=v` with every byte of keys and values but `A-Z a-z 0-9 - . _ ~`
/// percent-encoded (so a PromQL query or a model name survives as one value).
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                crate::sigv4::uri_encode(k, false),
                crate::sigv4::uri_encode(v, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `text` as one percent-encoded path segment (`/` and everything else outside
/// `A-Z a-z 0-9 - . _ ~` encoded).
pub fn path_segment(text: &str) -> String {
    crate::sigv4::uri_encode(text, false)
}

/// The `scheme://host[:port]` of `url`, for reports that must not show its path (a
/// webhook URL whose path is its secret); `None` when it is not an http(s) URL.
pub fn origin(url: &str) -> Option<String> {
    Target::parse(url)
        .ok()
        .map(|target| format!("{}://{}", target.scheme, target.authority))
}

/// Sends one request and reads the whole response (at most `max_body` bytes of body;
/// the host also caps it).
pub fn send(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    max_body: usize,
) -> Result<Response, Failure> {
    let target = Target::parse(url).map_err(Failure::Other)?;
    let mut fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    // A known length goes out as content-length, not chunked: every server reads that.
    if let Some(body) = body
        && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        fields.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&fields).map_err(|err| Failure::Other(format!("bad header: {err:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    let scheme = if target.scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let invalid = |what: &str| Failure::Other(format!("invalid {what} in {url}"));
    request.set_method(&method).map_err(|()| invalid("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(&target.authority))
        .map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| invalid("path"))?;
    let outgoing_body = request
        .body()
        .map_err(|()| Failure::Other("request body already taken".into()))?;

    let options = RequestOptions::new();
    if let Some(timeout) = crate::io_timeout() {
        let nanos = timeout.as_nanos() as u64;
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
    }
    let pending = outgoing_handler::handle(request, Some(options)).map_err(describe)?;
    // If the connection fails (refused, denied), the body stream closes too; the
    // response future then holds the real reason, so a body error is reported only
    // when the response itself came back.
    let body_error = send_body(outgoing_body, body.unwrap_or_default()).err();

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(describe(code)),
        Some(Err(())) | None => return Err(body_error.unwrap_or_else(|| Failure::Other("no response".into()))),
    };
    if let Some(err) = body_error {
        return Err(err);
    }
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| Failure::Other("response body unavailable".into()))?;
    let body = read_body(&incoming, max_body)?;
    drop(incoming);
    Ok(Response { status, headers, body })
}

/// Like [`send`], following up to `max_redirects` redirects. Each hop is a new request,
/// which the host checks against the grants again. 303 (and 301/302 after a POST)
/// continue as GET without a body, as browsers do. Returns the final response and the
/// URLs visited after the first.
pub fn send_following(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    max_body: usize,
    max_redirects: usize,
) -> Result<(Response, Vec<String>), Failure> {
    let (mut method, mut url, mut body) = (method.to_string(), url.to_string(), body);
    let mut hops = Vec::new();
    loop {
        let response = send(&method, &url, headers, body, max_body)?;
        let location = response.header("location").map(str::to_string);
        let (true, Some(location)) = (matches!(response.status, 301 | 302 | 303 | 307 | 308), location) else {
            return Ok((response, hops));
        };
        if hops.len() >= max_redirects {
            return Err(Failure::Other(format!(
                "more than {max_redirects} redirects (last to {location})"
            )));
        }
        let here = Target::parse(&url).map_err(Failure::Other)?;
        url = if location.contains("://") {
            location
        } else if location.starts_with('/') {
            format!("{}://{}{location}", here.scheme, here.authority)
        } else {
            let base = here.path_with_query.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
            format!("{}://{}{base}/{location}", here.scheme, here.authority)
        };
        if response.status == 303 || (matches!(response.status, 301 | 302) && method == "POST") {
            method = "GET".into();
            body = None;
        }
        hops.push(url.clone());
    }
}

/// Writes the request body and finishes it.
fn send_body(outgoing_body: OutgoingBody, body: &[u8]) -> Result<(), Failure> {
    {
        let stream = outgoing_body
            .write()
            .map_err(|()| Failure::Other("request body stream unavailable".into()))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|err| Failure::Other(format!("sending the body: {err:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(describe)
}

fn read_body(incoming: &IncomingBody, max_body: usize) -> Result<Vec<u8>, Failure> {
    let stream = incoming
        .stream()
        .map_err(|()| Failure::Other("response body stream unavailable".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if body.len() + chunk.len() > max_body {
                    return Err(Failure::Other(format!("response body larger than {max_body} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(err)) => {
                return Err(Failure::Other(format!(
                    "reading the response: {}",
                    err.to_debug_string()
                )));
            }
        }
    }
}

fn describe(code: ErrorCode) -> Failure {
    match &code {
        ErrorCode::HttpRequestDenied => Failure::Denied,
        ErrorCode::ConnectionRefused => Failure::Refused,
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::ConnectionWriteTimeout => {
            Failure::TimedOut
        }
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => Failure::Other("cannot resolve the host".into()),
        ErrorCode::HttpResponseBodySize(limit) => {
            Failure::Other(format!("response body larger than the host allows ({limit:?} bytes)"))
        }
        // The error code only says "TLS"; the host's record of the handshake says why.
        ErrorCode::TlsCertificateError | ErrorCode::TlsProtocolError | ErrorCode::TlsAlertReceived(_) => {
            match crate::tls::last_handshake().and_then(|handshake| handshake.outcome.err()) {
                Some(failure) => Failure::Other(crate::tls::failure_text(&failure.message)),
                None => Failure::Other(format!("{code:?}")),
            }
        }
        other => Failure::Other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let target = Target::parse("http://127.0.0.1:8080/health/ready?verbose=1").unwrap();
        assert_eq!(target.authority, "127.0.0.1:8080");
        assert_eq!(target.path_with_query, "/health/ready?verbose=1");
        assert_eq!(Target::parse("HTTPS://example.com").unwrap().path_with_query, "/");
        assert_eq!(Target::parse("http://h?x=1").unwrap().path_with_query, "/?x=1");
        for bad in ["example.com/health", "ftp://h/", "http:///x", "http://user:pw@h/"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_queries_and_segments() {
        assert_eq!(
            query_string(&[("query", r#"sum(rate(x{job="a b"}[5m])) > 0"#)]),
            "query=sum%28rate%28x%7Bjob%3D%22a%20b%22%7D%5B5m%5D%29%29%20%3E%200"
        );
        assert_eq!(query_string(&[("a", "1"), ("b", "&=")]), "a=1&b=%26%3D");
        assert_eq!(path_segment("ft:gpt-4o-mini:org/x"), "ft%3Agpt-4o-mini%3Aorg%2Fx");
        assert_eq!(
            origin("https://hooks.slack.com/services/T0/B0/XYZ").as_deref(),
            Some("https://hooks.slack.com")
        );
        assert_eq!(origin("http://127.0.0.1:9/x?y").as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(origin("not a url"), None);
    }
}
