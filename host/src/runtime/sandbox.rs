//! The per-invocation sandbox: the store data every plugin call runs against, and the
//! wiring that routes every WASI capability through [`crate::capabilities`].
//!
//! Defaults deny: no environment, no arguments, no files, no stdin; stdout and stderr
//! are captured (capped) rather than inherited; TCP goes through
//! [`NetworkPolicy::check_socket`]; name lookups through
//! [`NetworkPolicy::check_name_lookup`]; outgoing HTTP through
//! [`crate::capabilities::http::HttpHooks`]; UDP is off.

use super::bindings::tls::runbox::tls::handshakes;
use super::bindings::{Level, check::runbox::plugin::host, from_v0_1, v0_1::check::runbox::plugin::host as host_v0_1};
use crate::capabilities::Grants;
use crate::capabilities::denials::{Denial, Denials};
use crate::capabilities::header_secrets::HeaderSecrets;
use crate::capabilities::http::HttpHooks;
use crate::capabilities::network::{Access, NetworkPolicy, SocketUse};
use crate::capabilities::secrets::{self, HostOnly, Redactor};
use crate::capabilities::tls::{Handshakes, TlsProvider};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{self, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress, IpAddressFamily, Network};
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket;
use wasmtime_wasi::p2::{DynPollable, SocketError};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamError};
use wasmtime_wasi_tls::{WasiTlsCtx, WasiTlsCtxBuilder, WasiTlsCtxView, WasiTlsView};

/// Size caps on what a plugin can make the host keep.
#[derive(Debug, Clone, Copy)]
pub struct OutputCaps {
    /// Bytes of `host.log` messages kept per invocation.
    pub log_bytes: usize,
    /// Bytes of stdout and of stderr kept per invocation (each).
    pub stdio_bytes: usize,
}

impl Default for OutputCaps {
    fn default() -> OutputCaps {
        OutputCaps {
            log_bytes: 64 * 1024,
            stdio_bytes: 64 * 1024,
        }
    }
}

/// One log line a plugin sent through `host.log`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message, secrets redacted.
    pub message: String,
}

/// Handles (sockets, streams, pollables, HTTP requests...) one invocation may hold at
/// once. Each is host memory outside the plugin's memory limit (up to some 64 KiB for an
/// HTTP request with its headers, strings and body buffer, under the caps below), so
/// their number times that must fit in the 64 MiB a plugin may make the host spend;
/// wasmtime's default allows a million. Past this the plugin is stopped (see
/// `describe_error`).
pub const MAX_HANDLES: usize = 1_000;

/// What one `host.log` line costs against [`OutputCaps::log_bytes`] besides its text
/// (the host keeps a record per line).
const LOG_LINE_OVERHEAD: usize = 64;

/// Longest name a plugin may look up: a DNS name is at most 253 bytes.
pub const MAX_LOOKUP_NAME_BYTES: usize = 253;

/// Store data of one invocation.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: HttpHooks,
    tls: WasiTlsCtx,
    pub(crate) memory: MemoryBudget,
    pub(crate) host: HostState,
}

/// What the `runbox:plugin/host` interface and the guarded name lookup need.
pub(crate) struct HostState {
    plugin: String,
    secrets: HashMap<String, String>,
    /// Secrets only the host uses (the TLS client identity, header secrets) or holding
    /// their values, which the plugin may not read, and why.
    withheld: HashMap<String, HostOnly>,
    redactor: Arc<Redactor>,
    pub(crate) policy: Arc<NetworkPolicy>,
    pub(crate) logs: Vec<LogLine>,
    log_bytes: usize,
    pub(crate) logs_dropped: usize,
    caps: OutputCaps,
    /// Name each open lookup stream resolves (by resource handle).
    lookups: HashMap<u32, String>,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
    /// What every capability denied (network, HTTP, secrets, TLS names), capped.
    pub(crate) denials: Arc<Denials>,
    /// Every TLS handshake of the invocation (`wasi:tls` and `https`).
    pub(crate) handshakes: Arc<Handshakes>,
    /// When the invocation's deadline passes.
    deadline: std::time::Instant,
}

impl Sandbox {
    /// Builds the sandbox for `plugin` with exactly `grants`, for an invocation that only
    /// reads or that applies (`access`: which HTTP methods the grants allow). `secrets`
    /// are the resolved values of `grants.secrets`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plugin: &str,
        grants: &Grants,
        access: Access,
        secrets: HashMap<String, String>,
        redactor: Arc<Redactor>,
        memory_limit: usize,
        caps: OutputCaps,
        deadline: std::time::Instant,
    ) -> Result<Sandbox> {
        let denials = Arc::new(Denials::default());
        let policy = Arc::new(
            NetworkPolicy::with_denials(plugin, grants.network.clone(), grants.allow_metadata, denials.clone())
                .with_access(access),
        );
        // Room past the cap for the longest form of a secret: the invocation redacts
        // what was captured before it cuts it to the cap.
        let stdout = CapturedOutput::new(caps.stdio_bytes + redactor.longest());
        let stderr = CapturedOutput::new(caps.stdio_bytes + redactor.longest());

        let mut builder = WasiCtxBuilder::new();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        // Values only the host uses (the TLS client identity, the header secrets): no
        // grant hands them to the plugin, under whatever name. What decides is the value.
        let host_only = grants.host_only(&secrets);
        let env: Vec<(&str, &str)> = grants
            .env
            .iter()
            .filter(|(name, value)| match host_only.check(value) {
                Some(why) => {
                    tracing::debug!(plugin, variable = %name, reason = why.reason(), "environment variable withheld");
                    false
                }
                None => true,
            })
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        builder.envs(&env);
        for dir in &grants.dirs {
            builder
                .preopened_dir(&dir.host, &dir.guest, FsPerms::ReadOnly)
                .map_err(|err| {
                    wasmtime::format_err!(
                        "directory grant {}: cannot open {}: {err}",
                        dir.guest,
                        dir.host.display()
                    )
                })?;
        }
        builder.allow_tcp(true).allow_udp(false).allow_ip_name_lookup(true);
        // The host fills the whole buffer before the plugin's memory limit is checked.
        builder.max_random_size(MAX_RANDOM_BYTES);
        let check_policy = policy.clone();
        builder.socket_addr_check(move |addr, use_| {
            let policy = check_policy.clone();
            let use_ = match use_ {
                SocketAddrUse::TcpConnect => SocketUse::TcpConnect,
                SocketAddrUse::TcpBind => SocketUse::TcpBind,
                SocketAddrUse::TcpListen => SocketUse::TcpListen,
                _ => SocketUse::Udp,
            };
            if let Some(decision) = policy.check_socket_now(addr, use_) {
                return Box::pin(std::future::ready(decision.is_ok()));
            }
            // The decision needs DNS. Spawned so the returned future is Sync, as
            // wasmtime-wasi requires; the span keeps the run id on the decision's log line.
            let check = async move { policy.check_socket(addr, use_).await.is_ok() };
            let decision = tokio::spawn(tracing::Instrument::instrument(check, tracing::Span::current()));
            Box::pin(async move { decision.await.unwrap_or(false) })
        });

        let handshakes = Arc::new(Handshakes::default());
        let tls = WasiTlsCtxBuilder::new()
            .provider(Box::new(TlsProvider::new(
                policy.clone(),
                grants.tls.clone(),
                handshakes.clone(),
                deadline,
            )))
            .build();
        // The host reads a TLS client certificate or key held in a secret, and fills the
        // header secrets into HTTP requests; the plugin never sees them, nor any secret
        // holding the same value (one source granted under two names).
        let header_secrets = HeaderSecrets::new(&grants.header_secrets, &secrets);
        let mut secrets = secrets;
        let withheld: HashMap<String, HostOnly> = secrets
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), host_only.check(value)?)))
            .collect();
        for name in withheld.keys() {
            secrets.remove(name);
        }
        let header_secrets = Arc::new(header_secrets.with_readable(secrets.keys()));

        Ok(Sandbox {
            wasi: builder.build(),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_HANDLES);
                table
            },
            http: {
                let mut http = WasiHttpCtx::new();
                http.set_field_size_limit(MAX_HTTP_FIELDS_BYTES);
                http
            },
            http_hooks: HttpHooks::new(policy.clone(), grants.tls.clone(), handshakes.clone(), deadline)
                .with_header_secrets(header_secrets)
                .with_traceparent(grants.traceparent.clone()),
            tls,
            memory: MemoryBudget::new(memory_limit),
            host: HostState {
                plugin: plugin.to_string(),
                secrets,
                withheld,
                redactor,
                policy,
                logs: Vec::new(),
                log_bytes: 0,
                logs_dropped: 0,
                caps,
                lookups: HashMap::new(),
                stdout,
                stderr,
                denials,
                handshakes,
                deadline,
            },
        })
    }

    /// Adds every import a plugin may use to `linker`: WASI 0.2 (with name lookups
    /// replaced by the guarded version), `wasi:tls` (runbox's provider),
    /// `runbox:plugin/host` (0.2.0 and 0.1.0) and `runbox:tls/handshakes`.
    pub fn add_to_linker(linker: &mut Linker<Sandbox>) -> Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)?;
        linker.allow_shadowing(true);
        fn guarded(sandbox: &mut Sandbox) -> GuardedSocketsView<'_> {
            GuardedSocketsView {
                sockets: WasiSocketsCtxView {
                    ctx: sandbox.wasi.sockets(),
                    table: &mut sandbox.table,
                },
                policy: &sandbox.host.policy,
                lookups: &mut sandbox.host.lookups,
            }
        }
        ip_name_lookup::add_to_linker::<Sandbox, GuardedSockets>(linker, guarded)?;
        tcp_create_socket::add_to_linker::<Sandbox, GuardedSockets>(linker, guarded)?;
        linker.allow_shadowing(false);
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
        limit_http_request_strings(linker)?;
        let mut tls = wasmtime_wasi_tls::p2::LinkOptions::default();
        tls.tls(true);
        wasmtime_wasi_tls::p2::add_to_linker(linker, &tls)?;
        limit_tls_server_names(linker)?;
        host::add_to_linker::<Sandbox, HostInterface>(linker, |sandbox| &mut sandbox.host)?;
        host_v0_1::add_to_linker::<Sandbox, HostInterface>(linker, |sandbox| &mut sandbox.host)?;
        handshakes::add_to_linker::<Sandbox, HostInterface>(linker, |sandbox| &mut sandbox.host)?;
        Ok(())
    }
}

/// Longest method, scheme, authority and path-with-query an outgoing HTTP request may be
/// given. wasmtime-wasi-http keeps whatever string a request is given (a method of a
/// megabyte on each of a thousand requests is a gigabyte of host memory); past these the
/// setter returns an error, as it does for a malformed value.
pub const MAX_HTTP_METHOD_BYTES: usize = 32;
/// See [`MAX_HTTP_METHOD_BYTES`].
pub const MAX_HTTP_SCHEME_BYTES: usize = 32;
/// See [`MAX_HTTP_METHOD_BYTES`]: a DNS name and a port, with room for brackets.
pub const MAX_HTTP_AUTHORITY_BYTES: usize = 512;
/// See [`MAX_HTTP_METHOD_BYTES`].
pub const MAX_HTTP_PATH_BYTES: usize = 16 << 10;

/// Most bytes one `wasi:random` call returns (wasmtime-wasi's default is 64 MiB, which
/// the host allocates and fills before copying it into the plugin's memory).
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Bytes of headers one `fields` resource may hold (wasmtime-wasi-http's default is
/// 128 KiB, times up to [`MAX_HANDLES`] resources).
pub const MAX_HTTP_FIELDS_BYTES: usize = 32 << 10;

/// Shadows `wasi:tls/types.client-handshake`'s constructor, which keeps the server name
/// in the host until the handshake is made: a name longer than a DNS name can be
/// (a plugin's megabytes, times a handle per pending handshake) is cut to
/// [`MAX_LOOKUP_NAME_BYTES`] + 1 bytes first, where the policy refuses it as ungranted.
fn limit_tls_server_names(linker: &mut Linker<Sandbox>) -> Result<()> {
    use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
    use wasmtime_wasi_tls::p2::HostClientHandshake;
    use wasmtime_wasi_tls::p2::bindings::types::HostClientHandshake as _;
    type Args = (String, Resource<DynInputStream>, Resource<DynOutputStream>);
    linker.allow_shadowing(true);
    let mut types = linker.instance("wasi:tls/types@0.2.0-draft")?;
    types.func_wrap(
        "[constructor]client-handshake",
        |mut store, (name, input, output): Args| -> Result<(Resource<HostClientHandshake>,)> {
            let name = if name.len() > MAX_LOOKUP_NAME_BYTES {
                let end = crate::text::floor_char_boundary(&name, MAX_LOOKUP_NAME_BYTES + 1);
                name[..end].to_string()
            } else {
                name
            };
            Ok((store.data_mut().tls().new(name, input, output)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Shadows the setters of `wasi:http/types.outgoing-request` that keep a string, so an
/// overlong one is refused before the host keeps it.
fn limit_http_request_strings(linker: &mut Linker<Sandbox>) -> Result<()> {
    use wasmtime_wasi_http::p2::bindings::http::types::{HostOutgoingRequest, Method, Scheme};
    use wasmtime_wasi_http::p2::types::HostOutgoingRequest as Request;
    type Setter<V> = (Resource<Request>, V);
    linker.allow_shadowing(true);
    let mut types = linker.instance("wasi:http/types@0.2.12")?;
    types.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store, (request, method): Setter<Method>| {
            if matches!(&method, Method::Other(other) if other.len() > MAX_HTTP_METHOD_BYTES) {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_method(request, method)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-scheme",
        |mut store, (request, scheme): Setter<Option<Scheme>>| {
            if matches!(&scheme, Some(Scheme::Other(other)) if other.len() > MAX_HTTP_SCHEME_BYTES) {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_scheme(request, scheme)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store, (request, authority): Setter<Option<String>>| {
            if authority
                .as_ref()
                .is_some_and(|text| text.len() > MAX_HTTP_AUTHORITY_BYTES)
            {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_authority(request, authority)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-path-with-query",
        |mut store, (request, path): Setter<Option<String>>| {
            if path.as_ref().is_some_and(|text| text.len() > MAX_HTTP_PATH_BYTES) {
                return Ok((Err(()),));
            }
            Ok((store.data_mut().http().set_path_with_query(request, path)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl WasiTlsView for Sandbox {
    fn tls(&mut self) -> WasiTlsCtxView<'_> {
        WasiTlsCtxView {
            ctx: &mut self.tls,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct HostInterface;

impl HasData for HostInterface {
    type Data<'a> = &'a mut HostState;
}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> Result<()> {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        // Each line costs its overhead too, so a loop of empty messages is capped like
        // one of long ones.
        let cost = message.len() + LOG_LINE_OVERHEAD;
        if self.log_bytes + cost > self.caps.log_bytes {
            self.logs_dropped += 1;
            return Ok(());
        }
        self.log_bytes += cost;
        let message = crate::text::visible(&self.redactor.redact(&message)).into_owned();
        tracing::debug!(plugin = %self.plugin, level, message = %message, "plugin log");
        self.logs.push(LogLine { level, message });
        Ok(())
    }

    fn secret(&mut self, name: String) -> Result<Option<String>> {
        // A name no grant could have (too long, or other characters) is denied without
        // being looked up or kept whole: only a cut copy reaches logs and the report.
        let grantable = secrets::is_valid_name(&name);
        let value = if grantable {
            self.secrets.get(&name).cloned()
        } else {
            None
        };
        let decision = if value.is_some() { "allowed" } else { "denied" };
        // Redacted before it is cut: a name built from a secret must not lose half of it.
        let name = match self.redactor.redact_prefix(&name, secrets::MAX_NAME_BYTES) {
            (kept, 0) => kept.into_owned(),
            (kept, _) => format!("{kept}…"),
        };
        tracing::debug!(plugin = %self.plugin, secret = %name, decision, "capability decision");
        if value.is_none() {
            let remedy = if let Some(why) = self.withheld.get(&name) {
                why.reason().to_string()
            } else if grantable {
                format!("the step grants no secret by that name — add `--secret {name}=env:VAR` (or file:PATH)")
            } else {
                format!(
                    "no secret can have that name (names are 1 to {} letters, digits, `_` or `-`)",
                    secrets::MAX_NAME_BYTES
                )
            };
            self.denials.record(Denial::new(format!("secret `{name}`"), remedy));
        }
        Ok(value)
    }

    fn remaining_ms(&mut self) -> Result<u64> {
        let left = self.deadline.saturating_duration_since(std::time::Instant::now());
        Ok(left.as_millis() as u64)
    }
}

/// The 0.1.0 host interface is the same three functions.
impl host_v0_1::Host for HostState {
    fn log(&mut self, level: super::bindings::v0_1::Level, message: String) -> Result<()> {
        host::Host::log(self, from_v0_1::level(level), message)
    }

    fn secret(&mut self, name: String) -> Result<Option<String>> {
        host::Host::secret(self, name)
    }

    fn remaining_ms(&mut self) -> Result<u64> {
        host::Host::remaining_ms(self)
    }
}

impl handshakes::Host for HostState {
    fn last(&mut self) -> Result<Option<handshakes::Handshake>> {
        use crate::capabilities::tls::Problem;
        use handshakes::Problem as P;
        Ok(self.handshakes.last().map(|handshake| handshakes::Handshake {
            server_name: handshake.server_name,
            certificates: handshake.certificates,
            verified: handshake.verified,
            outcome: handshake.outcome.map_err(|failure| handshakes::Failure {
                problem: match failure.problem {
                    Problem::Expired => P::Expired,
                    Problem::NotYetValid => P::NotYetValid,
                    Problem::NameMismatch => P::NameMismatch,
                    Problem::UnknownIssuer => P::UnknownIssuer,
                    Problem::ClientCertificate => P::ClientCertificate,
                    Problem::Denied => P::Denied,
                    Problem::TimedOut | Problem::Other => P::Other,
                },
                message: failure.message,
            }),
            protocol: handshake.protocol,
            cipher_suite: handshake.cipher_suite,
        }))
    }
}

/// `wasi:sockets/ip-name-lookup` with every lookup checked by the network policy first,
/// and every address it returns recorded so connects to it count as to the name; and
/// `wasi:sockets/tcp-create-socket` with the number of sockets capped by the policy.
struct GuardedSockets;

impl HasData for GuardedSockets {
    type Data<'a> = GuardedSocketsView<'a>;
}

struct GuardedSocketsView<'a> {
    sockets: WasiSocketsCtxView<'a>,
    policy: &'a NetworkPolicy,
    lookups: &'a mut HashMap<u32, String>,
}

impl network::Host for GuardedSocketsView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime_wasi_io::bindings::wasi::io::error::Error>,
    ) -> Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.sockets, err)
    }
}

impl network::HostNetwork for GuardedSocketsView<'_> {
    fn drop(&mut self, this: Resource<Network>) -> Result<()> {
        network::HostNetwork::drop(&mut self.sockets, this)
    }
}

impl tcp_create_socket::Host for GuardedSocketsView<'_> {
    fn create_tcp_socket(
        &mut self,
        family: IpAddressFamily,
    ) -> Result<Resource<wasmtime_wasi::p2::TcpSocket>, SocketError> {
        if self.policy.check_new_socket().is_err() {
            return Err(ErrorCode::NewSocketLimit.into());
        }
        tcp_create_socket::Host::create_tcp_socket(&mut self.sockets, family)
    }
}

impl ip_name_lookup::Host for GuardedSocketsView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        // Not a DNS name; refused before the policy or the map of open lookups keeps it.
        if name.len() > MAX_LOOKUP_NAME_BYTES {
            return Err(ErrorCode::InvalidArgument.into());
        }
        if self.policy.check_name_lookup(&name).is_err() {
            return Err(ErrorCode::AccessDenied.into());
        }
        let stream = ip_name_lookup::Host::resolve_addresses(&mut self.sockets, network, name.clone())?;
        self.lookups.insert(stream.rep(), name);
        Ok(stream)
    }
}

impl ip_name_lookup::HostResolveAddressStream for GuardedSocketsView<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        let rep = stream.rep();
        let next = ip_name_lookup::HostResolveAddressStream::resolve_next_address(&mut self.sockets, stream)?;
        if let (Some(address), Some(name)) = (&next, self.lookups.get(&rep)) {
            self.policy.record_resolution(name, to_std(address));
        }
        Ok(next)
    }

    fn subscribe(&mut self, stream: Resource<ResolveAddressStream>) -> Result<Resource<DynPollable>> {
        ip_name_lookup::HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> Result<()> {
        self.lookups.remove(&stream.rep());
        ip_name_lookup::HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

fn to_std(address: &IpAddress) -> IpAddr {
    match *address {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::from([a, b, c, d]),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::from([a, b, c, d, e, f, g, h]),
    }
}

/// A memory limit over all of a component's linear memories together.
pub(crate) struct MemoryBudget {
    limit: usize,
    used: usize,
}

/// The error a plugin's instance traps with when it grows past its memory limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {} MiB exceeded (the plugin asked for {} MiB)", .limit >> 20, .wanted >> 20)]
pub struct MemoryLimitExceeded {
    /// The limit in bytes.
    pub limit: usize,
    /// The total the plugin tried to reach, in bytes.
    pub wanted: usize,
}

impl MemoryBudget {
    fn new(limit: usize) -> MemoryBudget {
        MemoryBudget { limit, used: 0 }
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        let wanted = self.used - current.min(self.used) + desired;
        if wanted > self.limit {
            return Err(MemoryLimitExceeded {
                limit: self.limit,
                wanted,
            }
            .into());
        }
        self.used = wanted;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Stdout or stderr of a plugin, kept up to a cap; the rest is counted and dropped
/// (the plugin's writes still succeed, so printing never crashes it).
#[derive(Clone)]
pub(crate) struct CapturedOutput(Arc<Mutex<Captured>>);

struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    dropped: usize,
}

impl CapturedOutput {
    fn new(cap: usize) -> CapturedOutput {
        CapturedOutput(Arc::new(Mutex::new(Captured {
            bytes: Vec::new(),
            cap,
            dropped: 0,
        })))
    }

    fn append(&self, data: &[u8]) {
        let mut captured = self.0.lock().unwrap();
        let room = captured.cap.saturating_sub(captured.bytes.len());
        let kept = data.len().min(room);
        captured.bytes.extend_from_slice(&data[..kept]);
        captured.dropped += data.len() - kept;
    }

    /// What was kept (lossy UTF-8) and how many bytes were dropped.
    pub(crate) fn contents(&self) -> (String, usize) {
        let captured = self.0.lock().unwrap();
        (String::from_utf8_lossy(&captured.bytes).into_owned(), captured.dropped)
    }
}

impl wasmtime_wasi::cli::IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
