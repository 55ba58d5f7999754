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
//! `http`/`https` grants are for the HTTP capability; raw sockets use the others.

use super::denials::Denials;
pub use super::denials::{Denial, MAX_DENIALS_KEPT};
use ipnet::IpNet;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

/// One parsed network grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Scheme, lower-case.
    pub scheme: String,
    /// Hosts covered.
    pub host: HostPattern,
    /// Ports covered.
    pub port: PortPattern,
    text: String,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
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

    fn from_str(text: &str) -> Result<Grant, GrantError> {
        let fail = |reason: String| GrantError {
            text: text.to_string(),
            reason,
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| fail("missing `scheme://`".into()))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = SCHEMES
            .iter()
            .find(|(known, _)| *known == scheme)
            .map(|(_, port)| *port)
            .ok_or_else(|| {
                let known: Vec<&str> = SCHEMES.iter().map(|(name, _)| *name).collect();
                fail(format!("unknown scheme `{scheme}` (known: {})", known.join(", ")))
            })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| fail("unclosed `[`".into()))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| fail(format!("unexpected `{after}` after `]`")))?,
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
                    .ok_or_else(|| fail(format!("port `{port}` is not a number from 1 to 65535 or `*`")))?,
            ),
            None => PortPattern::Port(
                default_port
                    .ok_or_else(|| fail(format!("scheme `{scheme}` has no default port; add `:PORT` or `:*`")))?,
            ),
        };
        Ok(Grant {
            scheme,
            host: parse_host_pattern(host).map_err(fail)?,
            port,
            text: text.to_string(),
        })
    }
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

/// The network policy of one sandbox: its grants plus what it has learned during the
/// invocation (which addresses granted names resolved to) and every denial.
#[derive(Debug)]
pub struct NetworkPolicy {
    plugin: String,
    grants: Vec<Grant>,
    allow_metadata: bool,
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
            state: Mutex::default(),
            denials,
        }
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
        self.grants
            .iter()
            .filter(|grant| grant.scheme != "http" && grant.scheme != "https")
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
            let resolved = tokio::net::lookup_host((name.as_str(), 0)).await;
            let mut state = self.state.lock().unwrap();
            for found in resolved.into_iter().flatten() {
                state
                    .resolved
                    .entry(found.ip().to_canonical())
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

    /// Decides an HTTP request to `scheme://host[:port]` (the host performs it, so the
    /// grant is matched by name or address as written). A name is then resolved and
    /// refused if it points at a cloud-metadata address.
    pub async fn check_http(&self, scheme: &str, host: &str, port: Option<u16>) -> Result<(), Denial> {
        let scheme = scheme.to_ascii_lowercase();
        let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase();
        let ip = IpAddr::from_str(&name).ok().map(|ip| ip.to_canonical());
        let shown_host = match ip {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => name.clone(),
        };
        let attempt = format!("HTTP request to {scheme}://{shown_host}:{port}");
        let covered = self
            .grants
            .iter()
            .filter(|grant| grant.scheme == scheme && grant.port.covers(port))
            .any(|grant| match ip {
                Some(ip) => grant.host.covers_ip(ip),
                None => grant.host.covers_name(&name),
            });
        let metadata = |what: &str| {
            format!("{what} a cloud metadata address; only the operator can allow that (--allow-metadata)")
        };
        let decision = if !covered {
            Err(self.deny(
                attempt.clone(),
                format!("no grant covers it — add `{scheme}://{shown_host}:{port}` to the grants (--allow)"),
            ))
        } else if self.allow_metadata {
            Ok(())
        } else if ip.is_some_and(is_metadata_address) {
            Err(self.deny(attempt.clone(), metadata("it is")))
        } else if ip.is_none()
            && (METADATA_NAMES.contains(&name.as_str())
                || tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .is_ok_and(|mut addrs| addrs.any(|addr| is_metadata_address(addr.ip()))))
        {
            Err(self.deny(attempt.clone(), metadata("the name resolves to")))
        } else {
            Ok(())
        };
        self.log_decision("HTTP request to", &format!("{scheme}://{shown_host}:{port}"), &decision);
        decision
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
    fn deny(&self, attempt: String, reason: String) -> Denial {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn http_requests_match_scheme_host_and_port() {
        let policy = policy(&[
            "http://127.0.0.1:8080",
            "https://*.example.com",
            "http://[::1]:*",
            "redis://127.0.0.1:6379",
        ]);
        let table: &[(&str, &str, Option<u16>, bool)] = &[
            ("http", "127.0.0.1", Some(8080), true),
            ("http", "127.0.0.1", Some(8081), false),
            ("https", "127.0.0.1", Some(8080), false),
            ("https", "api.example.com", None, true),
            ("https", "API.Example.com.", Some(443), true),
            ("http", "api.example.com", None, false),
            ("https", "example.com", None, false),
            ("http", "[::1]", Some(9), true),
            ("http", "127.0.0.1", Some(6379), false), // a redis grant is not an HTTP grant
        ];
        for (scheme, host, port, allowed) in table {
            let result = policy.check_http(scheme, host, *port).await;
            assert_eq!(result.is_ok(), *allowed, "{scheme}://{host}:{port:?}: {result:?}");
        }
        let denial = policy.check_http("http", "127.0.0.1", Some(8081)).await.unwrap_err();
        assert_eq!(
            denial.to_string(),
            "HTTP request to http://127.0.0.1:8081 denied: no grant covers it — add `http://127.0.0.1:8081` to the grants (--allow)"
        );
        let metadata = policy_with_metadata_grant();
        let denial = metadata.check_http("http", "169.254.169.254", None).await.unwrap_err();
        assert!(denial.remedy.contains("--allow-metadata"), "{denial}");
        let denial = metadata
            .check_http("http", "metadata.google.internal", None)
            .await
            .unwrap_err();
        assert!(denial.remedy.contains("--allow-metadata"), "{denial}");
    }

    fn policy_with_metadata_grant() -> NetworkPolicy {
        policy(&["http://169.254.169.254", "http://metadata.google.internal"])
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
