//! Network grants and their enforcement.
//!
//! A grant is `scheme://host[:port]` (the grammar of Spin's `allowed_outbound_hosts`):
//!
//! - `host` is an exact name (`cache.internal`), a suffix wildcard (`*.internal`, which
//!   matches `a.internal` and `b.a.internal` but not `internal`), an IP address
//!   (`127.0.0.1`, `[::1]`) or a CIDR block (`10.0.0.0/8`, `[fd00::/8]`);
//! - `port` is a number or `*`; without it the scheme's default port applies
//!   (`redis` 6379, `postgres` 5432, `https` 443, ...). `tcp://` has no default.
//!
//! Enforcement ([`NetworkPolicy`]) is deny-by-default and is the single decision point for
//! every socket operation of a sandbox:
//!
//! - a name lookup succeeds only for a name some grant covers;
//! - a TCP connect succeeds only to an address a granted name resolved to (in the
//!   plugin's own lookup, or in the host's lookup of an exact granted name), or to an
//!   address an IP/CIDR grant covers, on a granted port;
//! - binding is limited to the implicit ephemeral bind a connect makes; listening,
//!   accepting and UDP are always denied;
//! - cloud-metadata addresses are denied whatever the grants say unless the operator
//!   opted in ([`super::Grants::allow_metadata`]).
//!
//! `http`/`https` grants are for the HTTP capability; raw sockets use the others. An HTTP
//! grant may start with the methods it allows beyond reading, like a request line:
//! `POST https://hooks.internal`, `POST,PUT https://api.internal:8443`. While a step only
//! reads ([`Access::ReadOnly`]: a check's `run`, a mitigation's `plan`) it may send GET,
//! HEAD and OPTIONS, plus the methods a grant covering the destination lists; a
//! mitigation's `apply` ([`Access::Apply`]) may send any method to its granted
//! destinations. [`NetworkPolicy::check_http`] decides every request, resolves its host
//! once and returns the addresses the connection must use, so a DNS answer cannot change
//! between the check and the connect.

use super::denials::Denials;
pub use super::denials::{Denial, MAX_DENIALS_KEPT};
use ipnet::IpNet;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// Schemes a grant may use, with their default ports (`None`: the port is required).
const SCHEMES: &[(&str, Option<u16>)] = &[
    ("tcp", None),
    ("redis", Some(6379)),
    ("rediss", Some(6379)),
    ("postgres", Some(5432)),
    ("postgresql", Some(5432)),
    ("mysql", Some(3306)),
    ("amqp", Some(5672)),
    ("nats", Some(4222)),
    ("memcached", Some(11211)),
    ("http", Some(80)),
    ("https", Some(443)),
];

/// Addresses of cloud instance-metadata services (AWS, GCP, Azure, ECS, Alibaba).
/// Reaching them can hand out the machine's cloud credentials.
const METADATA_ADDRESSES: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// Names of cloud metadata services; looking them up is denied like their addresses.
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "instance-data.ec2.internal",
];

/// True for an address of a cloud instance-metadata service.
pub fn is_metadata_address(ip: IpAddr) -> bool {
    METADATA_ADDRESSES.contains(&ip.to_canonical())
}

/// Which hosts a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One name, lower-case, without a trailing dot.
    Name(String),
    /// Any name ending in `.suffix` (stored as `.suffix`).
    Suffix(String),
    /// One address.
    Ip(IpAddr),
    /// A block of addresses.
    Cidr(IpNet),
}

impl HostPattern {
    fn covers_name(&self, name: &str) -> bool {
        match self {
            HostPattern::Name(granted) => granted == name,
            HostPattern::Suffix(suffix) => name.ends_with(suffix.as_str()) && name.len() > suffix.len(),
            HostPattern::Ip(_) | HostPattern::Cidr(_) => false,
        }
    }

    fn covers_ip(&self, ip: IpAddr) -> bool {
        match self {
            HostPattern::Ip(granted) => *granted == ip,
            HostPattern::Cidr(net) => net.contains(&ip),
            HostPattern::Name(_) | HostPattern::Suffix(_) => false,
        }
    }

    /// Whether every host this pattern covers is covered by one of `targets` (the
    /// operator's `runbox serve --allow-targets`). An address or a block must lie inside
    /// an address or block of `targets`; a name must be one of `targets` or end in one
    /// of its `*.suffix`es; a `*.suffix` must be inside a `*.suffix` of `targets`. A
    /// block never covers a name: a name reaches whatever it resolves to.
    pub fn within(&self, targets: &[HostPattern]) -> bool {
        targets.iter().any(|target| match (self, target) {
            (HostPattern::Ip(ip), HostPattern::Ip(outer)) => ip == outer,
            (HostPattern::Ip(ip), HostPattern::Cidr(outer)) => outer.contains(ip),
            (HostPattern::Cidr(net), HostPattern::Cidr(outer)) => outer.contains(net),
            (HostPattern::Cidr(net), HostPattern::Ip(outer)) => {
                net.prefix_len() == net.max_prefix_len() && net.addr() == *outer
            }
            (HostPattern::Name(name), HostPattern::Name(outer)) => name == outer,
            (HostPattern::Name(name), HostPattern::Suffix(_)) => target.covers_name(name),
            (HostPattern::Suffix(suffix), HostPattern::Suffix(outer)) => suffix.ends_with(outer.as_str()),
            _ => false,
        })
    }
}

impl FromStr for HostPattern {
    type Err = String;

    /// `HOST`, `*.suffix`, an IP address or a CIDR block, as in a grant's host part.
    fn from_str(text: &str) -> Result<HostPattern, String> {
        parse_host_pattern(text)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
            HostPattern::Cidr(net) => write!(f, "{net}"),
        }
    }
}

/// Which ports a grant covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPattern {
    /// Every port (`:*`).
    Any,
    /// One port.
    Port(u16),
}

impl PortPattern {
    fn covers(self, port: u16) -> bool {
        match self {
            PortPattern::Any => true,
            PortPattern::Port(granted) => granted == port,
        }
    }
}

/// HTTP methods every granted `http`/`https` destination allows, in any phase. Exact
/// (methods are case-sensitive): `get` is not `GET`.
pub const SAFE_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];

/// One parsed network grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Scheme, lower-case.
    pub scheme: String,
    /// Hosts covered.
    pub host: HostPattern,
    /// Ports covered.
    pub port: PortPattern,
    /// HTTP methods allowed while a step only reads, beyond GET, HEAD and OPTIONS
    /// without a body (upper-case RFC 9110 tokens, in the order written, without
    /// repeats; listing GET lets a GET carry a body). Only `http`/`https` grants have any.
    pub methods: Vec<String>,
    /// The `scheme://host[:port]` part as written.
    url: String,
}

impl Grant {
    /// Parses `url` (`scheme://host[:port]`) with `methods` (the YAML mapping form
    /// `{url: …, methods: [POST]}`); the same grant as `"POST url"`.
    pub fn with_methods(url: &str, methods: &[String]) -> Result<Grant, GrantError> {
        let text = match methods {
            [] => url.to_string(),
            _ => format!("{} {url}", methods.join(",")),
        };
        let fail = |reason: String| GrantError {
            text: text.clone(),
            reason,
        };
        let mut grant = parse_url(url).map_err(fail)?;
        for method in methods {
            let upper = method.trim().to_ascii_uppercase();
            if upper.is_empty() {
                return Err(fail("an empty HTTP method (write `POST,PUT https://host`)".into()));
            }
            if upper == "*" {
                return Err(fail(
                    "`*` is not a method: list the methods the step needs (e.g. `POST,PUT https://host`)".into(),
                ));
            }
            if !is_token(&upper) {
                return Err(fail(format!(
                    "`{}` is not an HTTP method (a method is a token such as POST or PURGE; separate methods with `,`)",
                    method.trim()
                )));
            }
            if !grant.methods.contains(&upper) {
                grant.methods.push(upper);
            }
        }
        if !grant.methods.is_empty() && grant.scheme != "http" && grant.scheme != "https" {
            return Err(fail(format!(
                "methods ({}) apply only to http and https grants; `{}` grants a raw socket, which runbox cannot tell reads from writes on",
                grant.methods.join(","),
                grant.scheme
            )));
        }
        Ok(grant)
    }

    /// The `scheme://host[:port]` part, as written.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is an `http`/`https` grant (for the HTTP capability, not sockets).
    pub fn is_http(&self) -> bool {
        self.scheme == "http" || self.scheme == "https"
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.methods.is_empty() {
            write!(f, "{} ", self.methods.join(","))?;
        }
        f.write_str(&self.url)
    }
}

/// An RFC 9110 token (`tchar`s), the syntax of an HTTP method.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A grant that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "grant `{text}`: {reason} (expected scheme://host[:port], e.g. redis://cache.internal:6379, tcp://10.0.0.0/8:5432, https://*.example.com)"
)]
pub struct GrantError {
    /// The grant as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Grant {
    type Err = GrantError;

    /// `scheme://host[:port]`, optionally after a comma-separated method list and a space:
    /// `POST,PUT https://api.internal:8443`.
    fn from_str(text: &str) -> Result<Grant, GrantError> {
        match text.rsplit_once(|c: char| c.is_ascii_whitespace()) {
            // A space inside the URL (`redis://host name`) is the URL's problem.
            Some((methods, url)) if !methods.contains("://") => {
                let methods: Vec<String> = methods.split(',').map(String::from).collect();
                Grant::with_methods(url, &methods).map_err(|err| GrantError {
                    text: text.to_string(),
                    ..err
                })
            }
            _ => parse_url(text).map_err(|reason| GrantError {
                text: text.to_string(),
                reason,
            }),
        }
    }
}

/// Parses `scheme://host[:port]`; the error is the reason.
fn parse_url(text: &str) -> Result<Grant, String> {
    let (scheme, rest) = text.split_once("://").ok_or("missing `scheme://`")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = SCHEMES
        .iter()
        .find(|(known, _)| *known == scheme)
        .map(|(_, port)| *port)
        .ok_or_else(|| {
            let known: Vec<&str> = SCHEMES.iter().map(|(name, _)| *name).collect();
            format!("unknown scheme `{scheme}` (known: {})", known.join(", "))
        })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("unclosed `[`")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{after}` after `]`"))?,
            ),
        };
        (host, port)
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some("*") => PortPattern::Any,
        Some(port) => PortPattern::Port(
            port.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("port `{port}` is not a number from 1 to 65535 or `*`"))?,
        ),
        None => PortPattern::Port(
            default_port.ok_or_else(|| format!("scheme `{scheme}` has no default port; add `:PORT` or `:*`"))?,
        ),
    };
    Ok(Grant {
        scheme,
        host: parse_host_pattern(host)?,
        port,
        methods: Vec::new(),
        url: text.to_string(),
    })
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    if host.is_empty() {
        return Err("missing host".into());
    }
    if host.contains('/') {
        let net = IpNet::from_str(host).map_err(|_| format!("`{host}` is not a CIDR block"))?;
        return Ok(HostPattern::Cidr(net.trunc()));
    }
    // A trailing dot is dropped, from an address as from a name: `10.0.0.1.` is `10.0.0.1`.
    if let Ok(ip) = IpAddr::from_str(host.strip_suffix('.').unwrap_or(host)) {
        return Ok(HostPattern::Ip(ip.to_canonical()));
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "`{host}` is not a host name, `*.suffix`, IP address or CIDR block (`*` may only start a name)"
        ));
    }
    Ok(if suffix {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Name(name)
    })
}

/// Why a socket operation is being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketUse {
    /// Outgoing TCP connection.
    TcpConnect,
    /// Binding a TCP socket to a local address.
    TcpBind,
    /// Listening for or accepting TCP connections.
    TcpListen,
    /// Any UDP operation.
    Udp,
}

impl fmt::Display for SocketUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketUse::TcpConnect => "connect to",
            SocketUse::TcpBind => "bind to",
            SocketUse::TcpListen => "listen on",
            SocketUse::Udp => "UDP on",
        })
    }
}

/// TCP sockets one invocation may create. Each is a host file descriptor, so a plugin
/// creating sockets in a loop could otherwise exhaust the runbox process's descriptors
/// and starve every other step; a check needs a handful (one per address it tries).
pub const MAX_SOCKETS_PER_INVOCATION: usize = 64;

/// What an invocation may do over HTTP to its granted destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// A check's `run` or a mitigation's `plan`: GET, HEAD and OPTIONS, plus the methods
    /// a grant covering the destination lists (the default: deny what is not granted).
    #[default]
    ReadOnly,
    /// A mitigation's `apply`: any method.
    Apply,
}

/// An HTTP request [`NetworkPolicy::check_http`] allowed: where to connect, and what its
/// body may not carry.
#[derive(Debug)]
pub struct HttpPermit {
    /// The addresses to connect to, in order: exactly those checked.
    pub addrs: Vec<SocketAddr>,
    /// The destination as checked, `scheme://host:port` (for messages).
    pub destination: String,
    /// Set when the body must stay empty (a GET, HEAD or OPTIONS while the step only
    /// reads: a server that ignores such a body could read it as a second request);
    /// record it with [`NetworkPolicy::deny`] if data comes.
    pub data_denial: Option<Denial>,
    /// Set when the request may carry no trailers (while the step only reads: a server
    /// could take a method override from them).
    pub trailers_denial: Option<Denial>,
}

/// Why [`NetworkPolicy::check_http`] gives no addresses to connect to.
#[derive(Debug)]
pub enum HttpRefusal {
    /// The policy refused the request (recorded, with the grant that would allow it).
    Denied(Denial),
    /// The request names no host.
    NoHost,
    /// The host's name did not resolve.
    Lookup(std::io::Error),
}

pub(crate) type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

type LookupFn = dyn Fn(&str) -> LookupFuture + Send + Sync;

/// How the host resolves names for its own decisions: the system resolver, or (in
/// tests) an injected function, to prove a connection uses the address that was checked.
#[derive(Clone)]
struct Resolver(Option<Arc<LookupFn>>);

impl Resolver {
    async fn lookup(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        match &self.0 {
            Some(resolve) => resolve(name).await,
            None => Ok(tokio::net::lookup_host((name, 0))
                .await?
                .map(|addr| addr.ip())
                .collect()),
        }
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Resolver(injected)"
        } else {
            "Resolver(system)"
        })
    }
}

/// Request headers some servers read as the method (Rails, Express's method-override,
/// Google APIs, ...): a check could send a GET that such a server runs as a DELETE.
const METHOD_OVERRIDE_HEADERS: &[&str] = &["x-http-method-override", "x-http-method", "x-method-override"];

/// The query parameter some frameworks read as the method (`?_method=DELETE`).
const METHOD_OVERRIDE_PARAMETER: &str = "_method";

/// The network policy of one sandbox: its grants plus what it has learned during the
/// invocation (which addresses granted names resolved to) and every denial.
#[derive(Debug)]
pub struct NetworkPolicy {
    plugin: String,
    grants: Vec<Grant>,
    allow_metadata: bool,
    access: Access,
    resolver: Resolver,
    state: Mutex<PolicyState>,
    denials: Arc<Denials>,
}

#[derive(Debug, Default)]
struct PolicyState {
    /// Addresses granted names resolved to, with the name (for messages).
    resolved: HashMap<IpAddr, String>,
    /// Granted names the host has already resolved itself.
    host_resolved: BTreeSet<String>,
    /// TCP sockets created so far.
    sockets_created: usize,
}

impl NetworkPolicy {
    /// A policy for `plugin` holding `grants`. No grants: nothing is allowed.
    /// It only reads ([`Access::ReadOnly`]) unless [`NetworkPolicy::with_access`] says otherwise.
    pub fn new(plugin: &str, grants: Vec<Grant>, allow_metadata: bool) -> NetworkPolicy {
        NetworkPolicy::with_denials(plugin, grants, allow_metadata, Arc::default())
    }

    /// [`NetworkPolicy::new`], recording denials into `denials` (shared with the
    /// sandbox's other capabilities, so one capped list serves them all).
    pub fn with_denials(
        plugin: &str,
        grants: Vec<Grant>,
        allow_metadata: bool,
        denials: Arc<Denials>,
    ) -> NetworkPolicy {
        NetworkPolicy {
            plugin: plugin.to_string(),
            grants,
            allow_metadata,
            access: Access::ReadOnly,
            resolver: Resolver(None),
            state: Mutex::default(),
            denials,
        }
    }

    /// The same policy for an invocation with `access` (a mitigation's apply: [`Access::Apply`]).
    pub fn with_access(mut self, access: Access) -> NetworkPolicy {
        self.access = access;
        self
    }

    /// The same policy resolving names with `resolve` instead of the system resolver.
    #[cfg(test)]
    pub(crate) fn with_resolver(
        mut self,
        resolve: impl Fn(&str) -> LookupFuture + Send + Sync + 'static,
    ) -> NetworkPolicy {
        self.resolver = Resolver(Some(Arc::new(resolve)));
        self
    }

    /// Decides whether the plugin may create another TCP socket: at most
    /// [`MAX_SOCKETS_PER_INVOCATION`] per invocation, granted or not (connecting is
    /// decided separately, by [`NetworkPolicy::check_socket`]).
    pub fn check_new_socket(&self) -> Result<(), Denial> {
        let created = {
            let mut state = self.state.lock().unwrap();
            state.sockets_created += 1;
            state.sockets_created
        };
        let decision = if created <= MAX_SOCKETS_PER_INVOCATION {
            Ok(())
        } else if created == MAX_SOCKETS_PER_INVOCATION + 1 {
            Err(self.deny(
                format!("creating TCP socket number {created}"),
                format!("a plugin may create at most {MAX_SOCKETS_PER_INVOCATION} sockets per invocation"),
            ))
        } else {
            // Denied and already reported once; a loop must not grow the denial list.
            Err(Denial {
                attempt: format!("creating TCP socket number {created}"),
                remedy: "over the socket limit".into(),
            })
        };
        self.log_decision("create socket", &created.to_string(), &decision);
        decision
    }

    fn socket_grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter().filter(|grant| !grant.is_http())
    }

    /// Decides whether the plugin may resolve `name`.
    pub fn check_name_lookup(&self, name: &str) -> Result<(), Denial> {
        let normal = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let allowed = if METADATA_NAMES.contains(&normal.as_str()) && !self.allow_metadata {
            Err(self.deny(
                format!("name lookup of `{name}`"),
                "it names a cloud metadata service; only the operator can allow that (--allow-metadata)".into(),
            ))
        } else if IpAddr::from_str(name.trim_start_matches('[').trim_end_matches(']')).is_ok()
            || self.socket_grants().any(|grant| grant.host.covers_name(&normal))
        {
            Ok(())
        } else {
            Err(self.deny(
                format!("name lookup of `{name}`"),
                format!("no grant covers it — add {}", suggest(&normal, None)),
            ))
        };
        self.log_decision("lookup", name, &allowed);
        allowed
    }

    /// Decides whether the plugin may ask `wasi:tls` for a handshake with `server_name`:
    /// a name a socket grant covers, or an address a socket grant covers (or a granted
    /// name resolved to). The connection under it was decided when it was made; this
    /// keeps a plugin from presenting a granted address's server with the name of a host
    /// it was not granted.
    pub fn check_tls_name(&self, server_name: &str) -> Result<(), Denial> {
        let bare = server_name.trim_start_matches('[').trim_end_matches(']');
        let allowed = match IpAddr::from_str(bare) {
            Ok(ip) => {
                let ip = ip.to_canonical();
                self.socket_grants().any(|grant| grant.host.covers_ip(ip))
                    || self.state.lock().unwrap().resolved.contains_key(&ip)
            }
            Err(_) => {
                let normal = server_name
                    .strip_suffix('.')
                    .unwrap_or(server_name)
                    .to_ascii_lowercase();
                self.socket_grants().any(|grant| grant.host.covers_name(&normal))
            }
        };
        let decision = if allowed {
            Ok(())
        } else {
            Err(self.deny(
                format!("TLS handshake with server name `{server_name}`"),
                format!("no grant covers it — add {}", suggest(bare, None)),
            ))
        };
        self.log_decision("tls server name", server_name, &decision);
        decision
    }

    /// Records that the plugin's lookup of `name` (already allowed) returned `ip`, so a
    /// connect to `ip` counts as a connect to `name`.
    pub fn record_resolution(&self, name: &str, ip: IpAddr) {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.state
            .lock()
            .unwrap()
            .resolved
            .entry(ip.to_canonical())
            .or_insert(name);
    }

    /// Decides a socket operation on `addr` without waiting, or returns `None` when the
    /// decision needs the addresses of granted names the host has not resolved yet
    /// (then call [`NetworkPolicy::check_socket`]).
    pub fn check_socket_now(&self, addr: SocketAddr, use_: SocketUse) -> Option<Result<(), Denial>> {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let decision = match use_ {
            SocketUse::TcpBind if addr.port() == 0 && addr.ip().is_unspecified() => Ok(()),
            SocketUse::TcpBind | SocketUse::TcpListen => Err(self.deny(
                format!("{use_} {addr}"),
                "plugins may not accept connections (binding a port and listening are never granted)".into(),
            )),
            SocketUse::Udp => Err(self.deny(format!("{use_} {addr}"), "UDP is never granted".into())),
            SocketUse::TcpConnect => self.decide_connect(addr, false)?,
        };
        self.log_decision(&use_.to_string(), &addr.to_string(), &decision);
        Some(decision)
    }

    /// Decides a socket operation on `addr`, first resolving the exact names granted on
    /// its port if the decision depends on them (only names the grants list, never others).
    pub async fn check_socket(&self, addr: SocketAddr, use_: SocketUse) -> Result<(), Denial> {
        if let Some(decision) = self.check_socket_now(addr, use_) {
            return decision;
        }
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        for name in self.unresolved_names(addr.port()) {
            let resolved = self.resolver.lookup(&name).await;
            let mut state = self.state.lock().unwrap();
            for found in resolved.into_iter().flatten() {
                state
                    .resolved
                    .entry(found.to_canonical())
                    .or_insert_with(|| name.clone());
            }
            state.host_resolved.insert(name);
        }
        let decision = self
            .decide_connect(addr, true)
            .expect("decided once every granted name is resolved");
        self.log_decision(&use_.to_string(), &addr.to_string(), &decision);
        decision
    }

    /// The connect decision, or `None` if it depends on granted names not yet resolved
    /// (unless `final_`, which denies instead).
    fn decide_connect(&self, addr: SocketAddr, final_: bool) -> Option<Result<(), Denial>> {
        let ip = addr.ip();
        if is_metadata_address(ip) && !self.allow_metadata {
            return Some(Err(self.deny(
                format!("connect to {addr}"),
                "it is a cloud metadata address; only the operator can allow that (--allow-metadata)".into(),
            )));
        }
        let mut on_port = self.socket_grants().filter(|grant| grant.port.covers(addr.port()));
        let name = self.resolved_name(ip);
        if on_port
            .any(|grant| grant.host.covers_ip(ip) || name.as_deref().is_some_and(|name| grant.host.covers_name(name)))
        {
            return Some(Ok(()));
        }
        // The plugin may connect to an address without looking it up (or the lookup
        // happened elsewhere): the exact names granted on this port must be resolved
        // before the address can be refused.
        if !final_ && !self.unresolved_names(addr.port()).is_empty() {
            return None;
        }
        Some(Err(self.deny(
            format!("connect to {addr}"),
            format!("no grant covers it — add {}", self.suggest_connect(addr, name)),
        )))
    }

    /// Decides an HTTP request (the host performs it, so the grant is matched by name or
    /// address as written) and returns the addresses the connection must use, trying
    /// them in order. The method (and the headers and `_method` parameter some servers
    /// read as the method) must be GET, HEAD or OPTIONS, or listed by a grant covering
    /// the destination, unless the invocation applies ([`Access::Apply`]). A name is
    /// resolved here, once; it is refused if any of its addresses is a cloud-metadata
    /// address (unless `--allow-metadata`), and the connection goes to exactly the
    /// addresses returned, never to a second lookup's answer.
    pub async fn check_http(&self, request: &http::request::Parts) -> Result<HttpPermit, HttpRefusal> {
        let uri = &request.uri;
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().ok_or(HttpRefusal::NoHost)?;
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase();
        let ip = IpAddr::from_str(&name).ok().map(|ip| ip.to_canonical());
        let shown_host = match ip {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => name.clone(),
        };
        let destination = format!("{scheme}://{shown_host}:{port}");
        let method = request.method.as_str();
        let target = format!("{method} {destination}");
        let covering: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|grant| grant.scheme == scheme && grant.port.covers(port))
            .filter(|grant| match ip {
                Some(ip) => grant.host.covers_ip(ip),
                None => grant.host.covers_name(&name),
            })
            .collect();
        let decision = match self.decide_http(request, &destination, &covering, ip, &name) {
            Err(denial) => Err(HttpRefusal::Denied(denial)),
            Ok((data_denial, trailers_denial)) => {
                let addrs = match ip {
                    Some(ip) => Ok(vec![SocketAddr::new(ip, port)]),
                    None => self.resolve_for_http(&name, port, &destination).await,
                };
                addrs.map(|addrs| HttpPermit {
                    addrs,
                    destination: destination.clone(),
                    data_denial,
                    trailers_denial,
                })
            }
        };
        match &decision {
            Ok(permit) => {
                let addrs: Vec<String> = permit.addrs.iter().map(SocketAddr::to_string).collect();
                tracing::debug!(plugin = %self.plugin, operation = "HTTP request to", target, addresses = %addrs.join(", "), decision = "allowed", "capability decision");
            }
            Err(HttpRefusal::Denied(denial)) => {
                tracing::debug!(plugin = %self.plugin, operation = "HTTP request to", target, decision = "denied", reason = %denial.remedy, "capability decision");
            }
            Err(HttpRefusal::NoHost | HttpRefusal::Lookup(_)) => {}
        }
        decision
    }

    /// The decision on a request before any lookup (grant, method, body, metadata
    /// address or name), with the denials its body and trailers would earn.
    fn decide_http(
        &self,
        request: &http::request::Parts,
        destination: &str,
        covering: &[&Grant],
        ip: Option<IpAddr>,
        name: &str,
    ) -> Result<(Option<Denial>, Option<Denial>), Denial> {
        let method = request.method.as_str();
        let read_only = self.access == Access::ReadOnly;
        if covering.is_empty() {
            // Suggest the grant that allows the whole request, method included.
            let prefix = if read_only && !SAFE_METHODS.contains(&method) && method == method.to_ascii_uppercase() {
                format!("{method} ")
            } else {
                String::new()
            };
            return Err(self.deny(
                format!("HTTP request to {destination}"),
                format!("no grant covers it — add `{prefix}{destination}` to the grants (--allow)"),
            ));
        }
        let mut body_denials = (None, None);
        if read_only {
            let granted = |method: &str| covering.iter().any(|grant| grant.methods.iter().any(|m| m == method));
            // The request line: methods are case-sensitive, so only the exact upper-case
            // names count (`get` or `Post` may mean anything to the server).
            if !SAFE_METHODS.contains(&method) && !granted(method) {
                let remedy = if method != method.to_ascii_uppercase() {
                    format!(
                        "a check or plan may only read (GET, HEAD, OPTIONS) or send the upper-case methods its grants list; `{method}` is not upper-case"
                    )
                } else {
                    read_only_remedy(method, destination)
                };
                return Err(self.deny(format!("HTTP {method} to {destination}"), remedy));
            }
            // What a server may run instead of the request line's method.
            for (source, value) in method_overrides(request) {
                let upper = value.trim().to_ascii_uppercase();
                if SAFE_METHODS.contains(&upper.as_str()) || (is_token(&upper) && granted(&upper)) {
                    continue;
                }
                let remedy = if is_token(&upper) {
                    read_only_remedy(&upper, destination)
                } else {
                    "a check or plan may only read (GET, HEAD, OPTIONS); remove it".to_string()
                };
                return Err(self.deny(format!("HTTP {method} to {destination} with {source}"), remedy));
            }
            // A GET, HEAD or OPTIONS goes without a body: a server that ignores one would
            // read it as the next request on the connection (request smuggling), which
            // could be any method. A grant that lists the method lets it carry one.
            if !granted(method) {
                let attempt = format!("HTTP {method} to {destination} with a body");
                let remedy = format!(
                    "a check or plan may send {method} only without a body (a server may read a body as a second request) — add `{method} {destination}` to the grants (--allow) to let it carry one"
                );
                let length = request.headers.get(http::header::CONTENT_LENGTH);
                if length.is_some_and(|length| length.as_bytes() != b"0") {
                    return Err(self.deny(attempt, remedy));
                }
                body_denials.0 = Some(Denial { attempt, remedy });
            }
            body_denials.1 = Some(Denial {
                attempt: format!("HTTP {method} to {destination} with trailers"),
                remedy: "a check or plan may not send request trailers (a server may read a method override from them)"
                    .into(),
            });
        }
        let metadata = |what: &str| format!("{what}; only the operator can allow that (--allow-metadata)");
        if self.allow_metadata {
            Ok(body_denials)
        } else if ip.is_some_and(is_metadata_address) {
            Err(self.deny(
                format!("HTTP request to {destination}"),
                metadata("it is a cloud metadata address"),
            ))
        } else if ip.is_none() && METADATA_NAMES.contains(&name) {
            Err(self.deny(
                format!("HTTP request to {destination}"),
                metadata("it names a cloud metadata service"),
            ))
        } else {
            Ok(body_denials)
        }
    }

    /// Resolves an allowed request's host name once, refusing it if any address is a
    /// cloud-metadata address (unless the operator allowed those).
    async fn resolve_for_http(&self, name: &str, port: u16, destination: &str) -> Result<Vec<SocketAddr>, HttpRefusal> {
        let ips = self.resolver.lookup(name).await.map_err(HttpRefusal::Lookup)?;
        if !self.allow_metadata && ips.iter().any(|ip| is_metadata_address(*ip)) {
            return Err(HttpRefusal::Denied(self.deny(
                format!("HTTP request to {destination}"),
                "the name resolves to a cloud metadata address; only the operator can allow that (--allow-metadata)"
                    .into(),
            )));
        }
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(HttpRefusal::Lookup(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("`{name}` has no address"),
            )));
        }
        Ok(addrs)
    }

    fn unresolved_names(&self, port: u16) -> Vec<String> {
        let state = self.state.lock().unwrap();
        self.socket_grants()
            .filter(|grant| grant.port.covers(port))
            .filter_map(|grant| match &grant.host {
                HostPattern::Name(name) if !state.host_resolved.contains(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn resolved_name(&self, ip: IpAddr) -> Option<String> {
        self.state.lock().unwrap().resolved.get(&ip).cloned()
    }

    fn suggest_connect(&self, addr: SocketAddr, name: Option<String>) -> String {
        let host = name.unwrap_or_else(|| match addr.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        });
        // Keep the scheme the operator already uses for this host, if any.
        let scheme = self
            .socket_grants()
            .find(|grant| match &grant.host {
                HostPattern::Name(name) => *name == host,
                pattern => IpAddr::from_str(host.trim_matches(['[', ']'])).is_ok_and(|ip| pattern.covers_ip(ip)),
            })
            .map(|grant| grant.scheme.clone());
        suggest(&host, Some((scheme, addr.port())))
    }

    /// Records a denial (see [`Denials`]: a repeated denial is kept once, at most
    /// [`MAX_DENIALS_KEPT`] are kept, and each text is cut) and returns it, cut: a
    /// plugin retrying a denied operation in a loop, or naming a host of a megabyte,
    /// must not grow the host's memory.
    pub(crate) fn deny(&self, attempt: String, reason: String) -> Denial {
        let denial = Denial::new(attempt, reason);
        self.denials.record(denial.clone());
        denial
    }

    fn log_decision(&self, operation: &str, target: &str, decision: &Result<(), Denial>) {
        match decision {
            Ok(()) => {
                tracing::debug!(plugin = %self.plugin, operation, target, decision = "allowed", "capability decision")
            }
            Err(denial) => {
                tracing::debug!(plugin = %self.plugin, operation, target, decision = "denied", reason = %denial.remedy, "capability decision")
            }
        }
    }

    /// The plugin this policy decides for (for log lines).
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The denials kept so far, in order.
    pub fn denials(&self) -> Vec<Denial> {
        self.denials.kept()
    }
}

/// The grant text to suggest for `host` (and a port, with the scheme in use if known).
fn suggest(host: &str, port: Option<(Option<String>, u16)>) -> String {
    match port {
        Some((scheme, port)) => {
            let scheme = scheme.unwrap_or_else(|| "tcp".into());
            format!("`{scheme}://{host}:{port}` to the grants (--allow)")
        }
        None => format!("`tcp://{host}:PORT` to the grants (--allow)"),
    }
}

/// How to allow `method` to `destination` during a check or plan.
fn read_only_remedy(method: &str, destination: &str) -> String {
    format!(
        "a check or plan may only read (GET, HEAD, OPTIONS) — add `{method} {destination}` to the grants (--allow), or make this step a mitigation that sends {method} in apply"
    )
}

/// Methods a request names besides its request line (the method-override headers and the
/// `_method` query parameter): where each came from, shown as written (escaped, cut to
/// 64 characters), and the value.
fn method_overrides(request: &http::request::Parts) -> Vec<(String, String)> {
    // Redacted before it is cut and escaped: a plugin may put a secret in the value.
    let redactor = super::secrets::redactor();
    let shown = |text: &str| {
        let (text, _) = redactor.redact_prefix(text, 256);
        text.chars().take(64).flat_map(char::escape_debug).collect::<String>()
    };
    let mut found = Vec::new();
    for (name, value) in &request.headers {
        // CGI-style servers read `x_http_method_override` as the same header.
        if METHOD_OVERRIDE_HEADERS.contains(&name.as_str().replace('_', "-").as_str()) {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            found.push((format!("`{}: {}`", name.as_str(), shown(value.trim())), value));
        }
    }
    if let Some(query) = request.uri.query() {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key.eq_ignore_ascii_case(METHOD_OVERRIDE_PARAMETER) {
                found.push((format!("`{}={}`", shown(&key), shown(&value)), value.into_owned()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_host_is_within_the_targets_only_when_all_it_covers_is() {
        let targets: Vec<HostPattern> = [
            "127.0.0.0/8",
            "10.1.2.3",
            "cache.internal",
            "*.svc.cluster.local",
            "::1",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        let within = [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.0/24",
            "127.0.0.0/8",
            "10.1.2.3",
            "10.1.2.3/32",
            "cache.internal",
            "CACHE.internal.",
            "redis.svc.cluster.local",
            "a.b.svc.cluster.local",
            "*.svc.cluster.local",
            "*.ns.svc.cluster.local",
            "::1",
        ];
        let outside = [
            "128.0.0.1",
            "126.255.255.255",
            "127.0.0.0/7",
            "0.0.0.0/0",
            "10.1.2.4",
            "10.1.2.0/24",
            "169.254.169.254",
            "other.internal",
            "xcache.internal",
            "cache.internal.evil.example",
            "svc.cluster.local",
            "*.cluster.local",
            "*.local",
            "localhost",
            "::2",
            "::/0",
            // A name never falls inside an address block: it reaches what it resolves to.
            "localtest.me",
        ];
        for host in within {
            let pattern: HostPattern = host.parse().unwrap();
            assert!(pattern.within(&targets), "{host} should be within");
        }
        for host in outside {
            let pattern: HostPattern = host.parse().unwrap();
            assert!(!pattern.within(&targets), "{host} should be outside");
        }
        assert!(!"127.0.0.1".parse::<HostPattern>().unwrap().within(&[]));
        assert!("*".parse::<HostPattern>().is_err());
        assert!("a/b".parse::<HostPattern>().is_err());
    }

    fn policy(grants: &[&str]) -> NetworkPolicy {
        NetworkPolicy::new("test", grants.iter().map(|g| g.parse().unwrap()).collect(), false)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_the_grant_grammar() {
        let cases: &[(&str, HostPattern, PortPattern)] = &[
            (
                "redis://cache.internal",
                HostPattern::Name("cache.internal".into()),
                PortPattern::Port(6379),
            ),
            (
                "redis://Cache.Internal.:7000",
                HostPattern::Name("cache.internal".into()),
                PortPattern::Port(7000),
            ),
            ("postgres://db", HostPattern::Name("db".into()), PortPattern::Port(5432)),
            (
                "https://*.s3.amazonaws.com",
                HostPattern::Suffix(".s3.amazonaws.com".into()),
                PortPattern::Port(443),
            ),
            (
                "tcp://10.0.0.0/8:6379",
                HostPattern::Cidr("10.0.0.0/8".parse().unwrap()),
                PortPattern::Port(6379),
            ),
            (
                "tcp://10.1.2.3/8:*",
                HostPattern::Cidr("10.0.0.0/8".parse().unwrap()),
                PortPattern::Any,
            ),
            (
                "http://127.0.0.1:*",
                HostPattern::Ip("127.0.0.1".parse().unwrap()),
                PortPattern::Any,
            ),
            (
                "tcp://[::1]:5432",
                HostPattern::Ip("::1".parse().unwrap()),
                PortPattern::Port(5432),
            ),
            (
                "tcp://[fd00::/8]:1",
                HostPattern::Cidr("fd00::/8".parse().unwrap()),
                PortPattern::Port(1),
            ),
            (
                "redis://[::ffff:127.0.0.1]",
                HostPattern::Ip("127.0.0.1".parse().unwrap()),
                PortPattern::Port(6379),
            ),
            ("REDIS://h/", HostPattern::Name("h".into()), PortPattern::Port(6379)),
        ];
        for (text, host, port) in cases {
            let grant: Grant = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!((&grant.host, grant.port), (host, *port), "{text}");
            assert_eq!(grant.to_string(), *text);
        }
    }

    #[test]
    fn only_an_exact_ip_literal_skips_the_lookup_grant() {
        // `1.2.3.4.` is not an address literal: a resolver would be asked about it, so it
        // is a name like any other (noticed while fuzzing the grant parser).
        let policy = NetworkPolicy::new("p", vec!["tcp://10.0.0.1:5432".parse().unwrap()], false);
        assert!(policy.check_name_lookup("1.2.3.4").is_ok());
        assert!(policy.check_name_lookup("[::1]").is_ok());
        assert!(policy.check_name_lookup("1.2.3.4.").is_err());
        assert!(policy.check_name_lookup("10.0.0.1.").is_err());
    }

    #[test]
    fn an_address_with_a_trailing_dot_is_an_address_not_a_name() {
        // Found by fuzzing (fuzz/fuzz_targets/grants.rs): it was the name "11.0.0.0".
        let grant: Grant = "tcp://11.0.0.0.:7000".parse().unwrap();
        assert_eq!(grant.host, HostPattern::Ip("11.0.0.0".parse().unwrap()));
        assert_eq!(grant.port, PortPattern::Port(7000));
    }

    #[test]
    fn rejects_bad_grants_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("cache.internal:6379", "missing `scheme://`"),
            ("ftp://host", "unknown scheme `ftp`"),
            ("tcp://host", "no default port"),
            ("redis://host:0", "port `0`"),
            ("redis://host:70000", "port `70000`"),
            ("redis://host:abc", "port `abc`"),
            ("redis://", "missing host"),
            ("redis://*", "not a host name"),
            ("redis://a.*.com", "not a host name"),
            ("redis://*foo.com", "not a host name"),
            ("redis://[::1", "unclosed"),
            ("tcp://10.0.0.0/33:1", "CIDR"),
            ("redis://host name", "not a host name"),
            ("redis://h/path", "CIDR"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<Grant>().unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("expected scheme://host[:port]"), "{text}: {err}");
        }
    }

    #[test]
    fn tls_server_names_only_for_granted_names_and_addresses() {
        let policy = policy(&[
            "rediss://cache.internal:6380",
            "tcp://*.svc.local:*",
            "tcp://10.0.0.0/24:5432",
            "tcp://[::1]:6380",
            "https://api.example.com",
        ]);
        policy.record_resolution("cache.internal", "192.0.2.7".parse().unwrap());
        let table: &[(&str, bool)] = &[
            ("cache.internal", true),
            ("CACHE.Internal.", true),
            ("db.svc.local", true),
            ("svc.local", false),
            ("10.0.0.9", true),
            ("10.0.1.9", false),
            ("::1", true),
            ("[::1]", true),
            ("192.0.2.7", true), // what a granted name resolved to
            ("192.0.2.8", false),
            ("api.example.com", false), // HTTPS grants are made by the host's HTTP path
            ("other.internal", false),
            ("", false),
        ];
        for (name, allowed) in table {
            assert_eq!(policy.check_tls_name(name).is_ok(), *allowed, "{name}");
        }
        let denial = policy.check_tls_name("other.internal").unwrap_err();
        assert!(denial.remedy.contains("tcp://other.internal:PORT"), "{}", denial.remedy);
    }

    #[test]
    fn name_lookups_only_for_granted_names() {
        let policy = policy(&[
            "redis://cache.internal",
            "tcp://*.svc.local:*",
            "https://api.example.com",
        ]);
        let table: &[(&str, bool)] = &[
            ("cache.internal", true),
            ("CACHE.internal.", true),
            ("other.internal", false),
            ("a.svc.local", true),
            ("a.b.svc.local", true),
            ("svc.local", false),
            ("evilsvc.local", false),
            ("api.example.com", false), // HTTP grants do not open raw sockets
            ("127.0.0.5", true),        // literal addresses need no lookup; connect decides
            ("metadata.google.internal", false),
        ];
        for (name, allowed) in table {
            assert_eq!(policy.check_name_lookup(name).is_ok(), *allowed, "{name}");
        }
        let denial = policy.check_name_lookup("exfil.attacker.example").unwrap_err();
        assert_eq!(denial.attempt, "name lookup of `exfil.attacker.example`");
        assert!(denial.remedy.contains("tcp://exfil.attacker.example:PORT"), "{denial}");
    }

    #[tokio::test]
    async fn connects_only_to_granted_addresses_and_ports() {
        let policy = policy(&["redis://127.0.0.1:6379", "tcp://127.0.1.0/24:5432", "postgres://[::1]"]);
        let table: &[(&str, bool)] = &[
            ("127.0.0.1:6379", true),
            ("127.0.0.1:6380", false),
            ("127.0.0.2:6379", false),
            ("127.0.1.77:5432", true),
            ("127.0.2.1:5432", false),
            ("[::1]:5432", true),
            ("[::ffff:127.0.0.1]:6379", true),
            ("10.0.0.5:6379", false),
        ];
        for (target, allowed) in table {
            let result = policy.check_socket(addr(target), SocketUse::TcpConnect).await;
            assert_eq!(result.is_ok(), *allowed, "{target}: {result:?}");
        }
        let denial = policy
            .check_socket(addr("127.0.0.1:6380"), SocketUse::TcpConnect)
            .await
            .unwrap_err();
        assert_eq!(
            denial.to_string(),
            "connect to 127.0.0.1:6380 denied: no grant covers it — add `redis://127.0.0.1:6380` to the grants (--allow)"
        );
        let denial = policy
            .check_socket(addr("10.0.0.5:6379"), SocketUse::TcpConnect)
            .await
            .unwrap_err();
        assert!(denial.remedy.contains("`tcp://10.0.0.5:6379`"), "{denial}");
        assert_eq!(
            policy.denials().len(),
            4,
            "four from the table; the two repeated above are kept once"
        );
    }

    #[tokio::test]
    async fn names_allow_the_addresses_they_resolved_to() {
        let policy = policy(&["redis://cache.internal", "tcp://*.svc.local:7000"]);
        // Nothing resolved yet: the address is not covered.
        assert!(
            policy
                .check_socket(addr("127.0.0.9:6379"), SocketUse::TcpConnect)
                .await
                .is_err()
        );
        policy.record_resolution("cache.internal", "127.0.0.9".parse().unwrap());
        policy.record_resolution("db.svc.local", "127.0.0.10".parse().unwrap());
        assert!(
            policy
                .check_socket(addr("127.0.0.9:6379"), SocketUse::TcpConnect)
                .await
                .is_ok()
        );
        assert!(
            policy
                .check_socket(addr("127.0.0.9:6380"), SocketUse::TcpConnect)
                .await
                .is_err()
        );
        assert!(
            policy
                .check_socket(addr("127.0.0.10:7000"), SocketUse::TcpConnect)
                .await
                .is_ok()
        );
        let denial = policy
            .check_socket(addr("127.0.0.9:6380"), SocketUse::TcpConnect)
            .await
            .unwrap_err();
        assert!(denial.remedy.contains("`redis://cache.internal:6380`"), "{denial}");
    }

    #[tokio::test]
    async fn host_resolves_exact_granted_names_for_direct_connects() {
        let policy = policy(&["redis://localhost:6379"]);
        assert!(
            policy
                .check_socket_now(addr("127.0.0.1:6379"), SocketUse::TcpConnect)
                .is_none(),
            "needs a lookup first"
        );
        assert!(
            policy
                .check_socket(addr("127.0.0.1:6379"), SocketUse::TcpConnect)
                .await
                .is_ok()
        );
        assert!(
            policy
                .check_socket(addr("127.0.0.2:6379"), SocketUse::TcpConnect)
                .await
                .is_err()
        );
        // Resolved once: later decisions need no lookup.
        assert_eq!(
            policy.check_socket_now(addr("127.0.0.1:6379"), SocketUse::TcpConnect),
            Some(Ok(()))
        );
    }

    #[test]
    fn sockets_per_invocation_are_capped_and_the_denial_is_recorded_once() {
        let policy = NetworkPolicy::new("p", vec![], false);
        for _ in 0..MAX_SOCKETS_PER_INVOCATION {
            policy.check_new_socket().unwrap();
        }
        for _ in 0..1000 {
            policy.check_new_socket().unwrap_err();
        }
        let denials = policy.denials();
        assert_eq!(denials.len(), 1, "{denials:?}");
        assert_eq!(
            denials[0].to_string(),
            "creating TCP socket number 65 denied: a plugin may create at most 64 sockets per invocation"
        );
    }

    #[test]
    fn repeated_denials_are_kept_once_and_their_number_is_capped() {
        let policy = NetworkPolicy::new("p", vec![], false);
        for round in 0..3 {
            for i in 0..100 {
                let _ = policy.check_name_lookup(&format!("n{i}.example"));
            }
            assert_eq!(policy.denials().len(), MAX_DENIALS_KEPT, "round {round}");
        }
        assert_eq!(policy.denials()[0].attempt, "name lookup of `n0.example`");
    }

    #[tokio::test]
    async fn metadata_needs_the_operator_whatever_the_grants() {
        let granted = [
            "tcp://169.254.0.0/16:80",
            "tcp://[fd00:ec2::254]:80",
            "tcp://0.0.0.0/0:*",
        ];
        let strict = policy(&granted);
        for target in [
            "169.254.169.254:80",
            "[fd00:ec2::254]:80",
            "[::ffff:169.254.169.254]:80",
            "100.100.100.200:80",
        ] {
            let denial = strict
                .check_socket(addr(target), SocketUse::TcpConnect)
                .await
                .unwrap_err();
            assert!(denial.remedy.contains("--allow-metadata"), "{target}: {denial}");
        }
        let operator = NetworkPolicy::new("test", granted.iter().map(|g| g.parse().unwrap()).collect(), true);
        assert!(
            operator
                .check_socket(addr("169.254.169.254:80"), SocketUse::TcpConnect)
                .await
                .is_ok()
        );
    }

    /// A request head as wasmtime-wasi-http hands it to the host.
    fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    /// A resolver answering from `table` (name → addresses), counting its lookups; no
    /// query leaves the process.
    fn fake_dns(
        table: &[(&str, &[&str])],
    ) -> (
        impl Fn(&str) -> LookupFuture + Send + Sync + 'static,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let table: HashMap<String, Vec<IpAddr>> = table
            .iter()
            .map(|(name, ips)| (name.to_string(), ips.iter().map(|ip| ip.parse().unwrap()).collect()))
            .collect();
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = lookups.clone();
        let resolve = move |name: &str| -> LookupFuture {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = table
                .get(name)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{name}: no such name")));
            Box::pin(std::future::ready(answer))
        };
        (resolve, lookups)
    }

    fn http_policy(grants: &[&str], access: Access) -> NetworkPolicy {
        let (dns, _) = fake_dns(&[("api.example.com", &["127.0.0.7"]), ("hooks.internal", &["127.0.0.8"])]);
        policy(grants).with_access(access).with_resolver(dns)
    }

    #[tokio::test]
    async fn http_requests_match_scheme_host_and_port() {
        let policy = http_policy(
            &[
                "http://127.0.0.1:8080",
                "https://*.example.com",
                "http://[::1]:*",
                "redis://127.0.0.1:6379",
            ],
            Access::ReadOnly,
        );
        let table: &[(&str, bool)] = &[
            ("http://127.0.0.1:8080/x", true),
            ("http://127.0.0.1:8081/", false),
            ("https://127.0.0.1:8080/", false),
            ("https://api.example.com/", true),
            ("https://API.Example.com.:443/", true),
            ("http://api.example.com/", false),
            ("https://example.com/", false),
            ("http://[::1]:9/", true),
            ("http://127.0.0.1:6379/", false), // a redis grant is not an HTTP grant
        ];
        for (url, allowed) in table {
            let result = policy.check_http(&request("GET", url, &[])).await;
            assert_eq!(result.is_ok(), *allowed, "{url}: {result:?}");
        }
        let Err(HttpRefusal::Denied(denial)) = policy.check_http(&request("GET", "http://127.0.0.1:8081/", &[])).await
        else {
            panic!("denied")
        };
        assert_eq!(
            denial.to_string(),
            "HTTP request to http://127.0.0.1:8081 denied: no grant covers it — add `http://127.0.0.1:8081` to the grants (--allow)"
        );
        // A write to an ungranted destination during a check: the suggestion allows both.
        let Err(HttpRefusal::Denied(denial)) = policy.check_http(&request("POST", "http://127.0.0.1:8081/", &[])).await
        else {
            panic!("denied")
        };
        assert!(denial.remedy.contains("add `POST http://127.0.0.1:8081`"), "{denial}");
    }

    #[test]
    fn parses_methods_on_http_grants() {
        let cases: &[(&str, &[&str], &str, &str)] = &[
            (
                "https://hooks.internal",
                &[],
                "https://hooks.internal",
                "https://hooks.internal",
            ),
            (
                "POST https://hooks.internal",
                &["POST"],
                "https://hooks.internal",
                "POST https://hooks.internal",
            ),
            (
                "post,Put  http://127.0.0.1:8443",
                &["POST", "PUT"],
                "http://127.0.0.1:8443",
                "POST,PUT http://127.0.0.1:8443",
            ),
            (
                "POST, PUT https://h",
                &["POST", "PUT"],
                "https://h",
                "POST,PUT https://h",
            ),
            (
                "PURGE,POST,PURGE https://*.cdn.internal",
                &["PURGE", "POST"],
                "https://*.cdn.internal",
                "PURGE,POST https://*.cdn.internal",
            ),
            (
                "M-SEARCH\thttp://[::1]:*",
                &["M-SEARCH"],
                "http://[::1]:*",
                "M-SEARCH http://[::1]:*",
            ),
            (
                "GET https://a.internal",
                &["GET"],
                "https://a.internal",
                "GET https://a.internal",
            ),
        ];
        for (text, methods, url, shown) in cases {
            let grant: Grant = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(grant.methods, *methods, "{text}");
            assert_eq!(grant.url(), *url, "{text}");
            assert_eq!(grant.to_string(), *shown, "{text}");
            assert_eq!(
                grant.to_string().parse::<Grant>().as_ref(),
                Ok(&grant),
                "{text} round-trips"
            );
        }
        // The YAML mapping form makes the same grant.
        let mapped = Grant::with_methods("https://hooks.internal", &["post".into()]).unwrap();
        assert_eq!(mapped, "POST https://hooks.internal".parse().unwrap());
    }

    #[test]
    fn rejects_bad_methods_naming_the_grant() {
        let cases: &[(&str, &str)] = &[
            (
                "POST redis://cache.internal",
                "methods (POST) apply only to http and https grants",
            ),
            ("PUT tcp://10.0.0.1:80", "apply only to http and https grants"),
            ("POST,,PUT https://h", "an empty HTTP method"),
            (",POST https://h", "an empty HTTP method"),
            ("POST PUT https://h", "`POST PUT` is not an HTTP method"),
            ("* https://h", "`*` is not a method"),
            ("PO(ST https://h", "`PO(ST` is not an HTTP method"),
            ("POST\u{e9} https://h", "is not an HTTP method"),
            ("POST", "missing `scheme://`"),
            ("POST https://", "missing host"),
            ("redis://host name", "not a host name"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<Grant>().unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.starts_with(&format!("grant `{text}`")), "{text}: {err}");
        }
        let err = Grant::with_methods("redis://h", &["DEL".into()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("grant `DEL redis://h`: methods (DEL)"), "{err}");
    }

    #[tokio::test]
    async fn checks_and_plans_only_read_unless_a_grant_lists_the_method() {
        let grants = [
            "http://127.0.0.1:8080",
            "POST https://hooks.internal",
            "PURGE,DELETE http://127.0.0.1:9000",
        ];
        let read_only = http_policy(&grants, Access::ReadOnly);
        let apply = http_policy(&grants, Access::Apply);
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], bool, bool);
        // (method, url, headers, allowed while reading, allowed in apply)
        let table: &[Case] = &[
            ("GET", "http://127.0.0.1:8080/", &[], true, true),
            ("HEAD", "http://127.0.0.1:8080/", &[], true, true),
            ("OPTIONS", "http://127.0.0.1:8080/", &[], true, true),
            ("POST", "http://127.0.0.1:8080/", &[], false, true),
            ("PUT", "http://127.0.0.1:8080/", &[], false, true),
            ("DELETE", "http://127.0.0.1:8080/", &[], false, true),
            ("PATCH", "http://127.0.0.1:8080/", &[], false, true),
            ("CONNECT", "http://127.0.0.1:8080/", &[], false, true),
            ("TRACE", "http://127.0.0.1:8080/", &[], false, true),
            ("PURGE", "http://127.0.0.1:8080/", &[], false, true),
            // Methods are case-sensitive: only the exact upper-case names are safe or granted.
            ("get", "http://127.0.0.1:8080/", &[], false, true),
            ("Get", "http://127.0.0.1:8080/", &[], false, true),
            ("post", "https://hooks.internal/", &[], false, true),
            ("POST", "https://hooks.internal/", &[], true, true),
            ("PUT", "https://hooks.internal/", &[], false, true),
            ("PURGE", "http://127.0.0.1:9000/", &[], true, true),
            ("DELETE", "http://127.0.0.1:9000/", &[], true, true),
            ("POST", "http://127.0.0.1:9000/", &[], false, true),
            // Methods a server may run instead of the request line's.
            (
                "GET",
                "http://127.0.0.1:8080/",
                &[("X-HTTP-Method-Override", "DELETE")],
                false,
                true,
            ),
            (
                "GET",
                "http://127.0.0.1:8080/",
                &[("x-http-method", "put")],
                false,
                true,
            ),
            (
                "GET",
                "http://127.0.0.1:8080/",
                &[("X-Method-Override", " PATCH ")],
                false,
                true,
            ),
            (
                "GET",
                "http://127.0.0.1:8080/",
                &[("x-http-method-override", "GET")],
                true,
                true,
            ),
            (
                "GET",
                "http://127.0.0.1:8080/",
                &[("x-http-method-override", "head")],
                true,
                true,
            ),
            (
                "GET",
                "http://127.0.0.1:8080/",
                &[("x-http-method-override", "DELETE, GET")],
                false,
                true,
            ),
            ("GET", "http://127.0.0.1:8080/?_method=DELETE", &[], false, true),
            ("GET", "http://127.0.0.1:8080/?a=1&_METHOD=%44ELETE", &[], false, true),
            (
                "GET",
                "http://127.0.0.1:8080/?_method=GET&method=DELETE",
                &[],
                true,
                true,
            ),
            (
                "POST",
                "https://hooks.internal/",
                &[("x-http-method-override", "DELETE")],
                false,
                true,
            ),
            (
                "GET",
                "http://127.0.0.1:9000/",
                &[("x-http-method-override", "purge")],
                true,
                true,
            ),
            // Apply may send anything, but only to granted destinations.
            ("DELETE", "http://127.0.0.1:8081/", &[], false, false),
        ];
        for (method, url, headers, reading, applying) in table {
            let head = request(method, url, headers);
            let result = read_only.check_http(&head).await;
            assert_eq!(
                result.is_ok(),
                *reading,
                "reading: {method} {url} {headers:?}: {result:?}"
            );
            let result = apply.check_http(&head).await;
            assert_eq!(
                result.is_ok(),
                *applying,
                "applying: {method} {url} {headers:?}: {result:?}"
            );
        }
        let denial = |method: &str, url: &str, headers: &[(&str, &str)]| {
            let policy = http_policy(&grants, Access::ReadOnly);
            let head = request(method, url, headers);
            async move {
                match policy.check_http(&head).await {
                    Err(HttpRefusal::Denied(denial)) => denial.to_string(),
                    other => panic!("{other:?}"),
                }
            }
        };
        assert_eq!(
            denial("POST", "http://127.0.0.1:8080/jobs", &[]).await,
            "HTTP POST to http://127.0.0.1:8080 denied: a check or plan may only read (GET, HEAD, OPTIONS) — add `POST http://127.0.0.1:8080` to the grants (--allow), or make this step a mitigation that sends POST in apply"
        );
        assert_eq!(
            denial("get", "http://127.0.0.1:8080/", &[]).await,
            "HTTP get to http://127.0.0.1:8080 denied: a check or plan may only read (GET, HEAD, OPTIONS) or send the upper-case methods its grants list; `get` is not upper-case"
        );
        assert_eq!(
            denial("GET", "http://127.0.0.1:8080/", &[("x-http-method-override", "DELETE")]).await,
            "HTTP GET to http://127.0.0.1:8080 with `x-http-method-override: DELETE` denied: a check or plan may only read (GET, HEAD, OPTIONS) — add `DELETE http://127.0.0.1:8080` to the grants (--allow), or make this step a mitigation that sends DELETE in apply"
        );
        assert!(
            denial("GET", "http://127.0.0.1:8080/?_method=DEL%0aETE", &[])
                .await
                .starts_with("HTTP GET to http://127.0.0.1:8080 with `_method=DEL\\nETE` denied: a check or plan may only read (GET, HEAD, OPTIONS); remove it"),
        );
        // The suggested grant allows the request.
        let fixed = http_policy(
            &["http://127.0.0.1:8080", "POST http://127.0.0.1:8080"],
            Access::ReadOnly,
        );
        assert!(
            fixed
                .check_http(&request("POST", "http://127.0.0.1:8080/jobs", &[]))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_read_only_get_carries_no_body_and_no_request_trailers() {
        let grants = ["http://127.0.0.1:8080", "GET,POST http://127.0.0.1:9000"];
        let read_only = http_policy(&grants, Access::ReadOnly);
        // A declared body on a GET is refused at once (a server ignoring it would read it
        // as a second request); an empty one is fine.
        for (method, length, allowed) in [
            ("GET", "12", false),
            ("HEAD", "1", false),
            ("OPTIONS", "00", false),
            ("GET", "0", true),
        ] {
            let head = request(method, "http://127.0.0.1:8080/", &[("content-length", length)]);
            let result = read_only.check_http(&head).await;
            assert_eq!(
                result.is_ok(),
                allowed,
                "{method} with content-length {length}: {result:?}"
            );
        }
        let Err(HttpRefusal::Denied(denial)) = read_only
            .check_http(&request("GET", "http://127.0.0.1:8080/", &[("content-length", "5")]))
            .await
        else {
            panic!("denied")
        };
        assert_eq!(
            denial.to_string(),
            "HTTP GET to http://127.0.0.1:8080 with a body denied: a check or plan may send GET only without a body (a server may read a body as a second request) — add `GET http://127.0.0.1:8080` to the grants (--allow) to let it carry one"
        );
        // A body of unknown length (chunked) is stopped by the send path on its first byte.
        let permit = read_only
            .check_http(&request("GET", "http://127.0.0.1:8080/", &[]))
            .await
            .unwrap();
        assert!(permit.data_denial.is_some() && permit.trailers_denial.is_some());
        // A grant listing the method lets it carry a body; trailers stay refused while reading.
        for method in ["GET", "POST"] {
            let head = request(method, "http://127.0.0.1:9000/", &[("content-length", "5")]);
            let permit = read_only.check_http(&head).await.unwrap();
            assert!(
                permit.data_denial.is_none() && permit.trailers_denial.is_some(),
                "{method}"
            );
        }
        // An apply may send bodies and trailers.
        let apply = http_policy(&grants, Access::Apply);
        let head = request("GET", "http://127.0.0.1:8080/", &[("content-length", "5")]);
        let permit = apply.check_http(&head).await.unwrap();
        assert!(permit.data_denial.is_none() && permit.trailers_denial.is_none());
    }

    #[tokio::test]
    async fn http_names_are_resolved_once_and_the_checked_addresses_returned() {
        let (dns, lookups) = fake_dns(&[
            ("svc.internal", &["127.0.0.5", "::1", "127.0.0.5"]),
            ("sneaky.internal", &["127.0.0.6", "169.254.169.254"]),
            ("mapped.internal", &["::ffff:169.254.169.254"]),
            ("empty.internal", &[]),
        ]);
        let grants: Vec<Grant> = ["http://*.internal:8080", "https://127.0.0.9"]
            .iter()
            .map(|g| g.parse().unwrap())
            .collect();
        let policy = NetworkPolicy::new("test", grants.clone(), false).with_resolver(dns);
        let addrs = policy
            .check_http(&request("GET", "http://svc.internal:8080/health", &[]))
            .await
            .unwrap();
        assert_eq!(
            addrs.addrs,
            [addr("127.0.0.5:8080"), addr("[::1]:8080")],
            "in order, without repeats"
        );
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
        // An address literal needs no lookup.
        let addrs = policy
            .check_http(&request("GET", "https://127.0.0.9/", &[]))
            .await
            .unwrap();
        assert_eq!(addrs.addrs, [addr("127.0.0.9:443")]);
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A granted name with a metadata address among its answers: refused, nothing returned.
        for name in ["sneaky.internal", "mapped.internal"] {
            match policy
                .check_http(&request("GET", &format!("http://{name}:8080/"), &[]))
                .await
            {
                Err(HttpRefusal::Denied(denial)) => {
                    assert_eq!(denial.attempt, format!("HTTP request to http://{name}:8080"));
                    assert!(
                        denial.remedy.contains("resolves to a cloud metadata address"),
                        "{denial}"
                    );
                    assert!(denial.remedy.contains("--allow-metadata"), "{denial}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // A name that does not resolve: a lookup failure, not a denial.
        for name in ["empty.internal", "nxdomain.internal"] {
            let result = policy
                .check_http(&request("GET", &format!("http://{name}:8080/"), &[]))
                .await;
            assert!(matches!(result, Err(HttpRefusal::Lookup(_))), "{name}: {result:?}");
        }
        // A denied request is not looked up at all.
        let before = lookups.load(std::sync::atomic::Ordering::SeqCst);
        let result = policy
            .check_http(&request("GET", "http://svc.internal:8081/", &[]))
            .await;
        assert!(matches!(result, Err(HttpRefusal::Denied(_))), "{result:?}");
        let result = policy
            .check_http(&request("POST", "http://svc.internal:8080/", &[]))
            .await;
        assert!(matches!(result, Err(HttpRefusal::Denied(_))), "{result:?}");
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), before);
        // The operator's --allow-metadata lets the metadata answer through, as an address.
        let (dns, _) = fake_dns(&[("sneaky.internal", &["169.254.169.254"])]);
        let operator = NetworkPolicy::new("test", grants, true).with_resolver(dns);
        let addrs = operator
            .check_http(&request("GET", "http://sneaky.internal:8080/", &[]))
            .await
            .unwrap();
        assert_eq!(addrs.addrs, [addr("169.254.169.254:8080")]);
    }

    #[tokio::test]
    async fn http_to_metadata_needs_the_operator() {
        let metadata = http_policy(
            &["http://169.254.169.254", "http://metadata.google.internal"],
            Access::Apply,
        );
        for url in [
            "http://169.254.169.254/",
            "http://metadata.google.internal/",
            "http://METADATA.google.internal./",
        ] {
            match metadata.check_http(&request("GET", url, &[])).await {
                Err(HttpRefusal::Denied(denial)) => assert!(denial.remedy.contains("--allow-metadata"), "{denial}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn notes_say_what_a_read_only_phase_may_change() {
        let grants = crate::capabilities::Grants {
            network: [
                "https://a.internal",
                "POST,PURGE https://hooks.internal",
                "redis://127.0.0.1:6379",
                "tcp://10.0.0.0/8:5432",
            ]
            .iter()
            .map(|g| g.parse().unwrap())
            .collect(),
            ..Default::default()
        };
        assert_eq!(
            grants.read_only_notes(false),
            ["may send POST, PURGE to https://hooks.internal while checking"]
        );
        assert_eq!(
            grants.read_only_notes(true),
            [
                "may send POST, PURGE to https://hooks.internal while planning",
                "plans with raw TCP grants (redis://127.0.0.1:6379, tcp://10.0.0.0/8:5432): runbox cannot stop a plan from writing over a raw socket",
            ]
        );
        assert!(crate::capabilities::Grants::default().read_only_notes(true).is_empty());
    }

    #[tokio::test]
    async fn binds_listens_and_udp_are_denied() {
        let policy = policy(&["tcp://127.0.0.1:*"]);
        assert!(
            policy.check_socket(addr("0.0.0.0:0"), SocketUse::TcpBind).await.is_ok(),
            "implicit bind of a connect"
        );
        assert!(
            policy.check_socket(addr("[::]:0"), SocketUse::TcpBind).await.is_ok(),
            "implicit bind of a connect"
        );
        for (target, use_) in [
            ("127.0.0.1:8080", SocketUse::TcpBind),
            ("0.0.0.0:8080", SocketUse::TcpBind),
            ("127.0.0.1:0", SocketUse::TcpBind),
            ("0.0.0.0:0", SocketUse::TcpListen),
            ("127.0.0.1:53", SocketUse::Udp),
        ] {
            assert!(
                policy.check_socket(addr(target), use_).await.is_err(),
                "{use_} {target}"
            );
        }
    }
}
