//! Outgoing HTTP (`wasi:http/outgoing-handler`): every request passes
//! [`NetworkPolicy::check_http`] before the host connects, its timeouts are clamped to
//! the invocation's deadline, and its response body is capped. A redirect is a new
//! request from the plugin and is checked again.

use super::network::NetworkPolicy;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Default cap on one response body.
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// The HTTP enforcement point of one sandbox.
pub struct HttpHooks {
    policy: Arc<NetworkPolicy>,
    deadline: Instant,
    max_response_bytes: u64,
}

impl HttpHooks {
    /// Hooks deciding with `policy`, ending every request by `deadline`.
    pub fn new(policy: Arc<NetworkPolicy>, deadline: Instant) -> HttpHooks {
        HttpHooks {
            policy,
            deadline,
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
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
        let left = self.deadline.saturating_duration_since(Instant::now());
        let max = self.max_response_bytes;
        let clamp = |timeout: Option<Duration>| Some(timeout.map_or(left, |t| t.min(left)));
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: clamp(options.connect_timeout),
            first_byte_timeout: clamp(options.first_byte_timeout),
            between_bytes_timeout: clamp(options.between_bytes_timeout),
        };
        Box::new(async move {
            let uri = request.uri();
            let scheme = uri.scheme_str().unwrap_or("https").to_string();
            let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
            let port = uri.port_u16();
            if policy.check_http(&scheme, &host, port).await.is_err() {
                return Err(Error::HttpRequestDenied);
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let response = response.map(|body| {
                CappedBody {
                    inner: body.boxed_unsync(),
                    left: max,
                    max,
                }
                .boxed_unsync()
            });
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
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
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
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
