//! The grant parsers: each line of the input is tried as a network grant
//! (`[METHODS ]scheme://host[:port]`), a directory grant (`HOST_DIR[:GUEST_PATH]`), an environment
//! grant (`NAME=VALUE`) and a secret grant (`NAME=env:VAR` / `NAME=file:PATH`).
//!
//! Asserts, for what parses: the invariants the types document (lower-case scheme and
//! names, `.suffix`, no port 0, truncated CIDR blocks, non-empty parts); the grant written
//! in the documented canonical form parses to the same grant; a policy holding a grant
//! allows what it names (its name, a name under its suffix, its address, its block's first
//! address), unless that is a cloud-metadata address or name; and when the policy denies a
//! connect, the grant its message says to add parses and allows that connect.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runbox::capabilities::network::{Grant, HostPattern, NetworkPolicy, PortPattern, SocketUse, is_metadata_address};
use runbox::capabilities::secrets::{SecretGrant, SecretSource};
use runbox::capabilities::{DirGrant, parse_env_grant};
use std::net::{IpAddr, SocketAddr};

/// Names that are denied whatever the grants say (`network::METADATA_NAMES`).
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "instance-data.ec2.internal",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut grants = Vec::new();
    for line in text.lines() {
        if let Ok(grant) = line.parse::<Grant>() {
            check_network_grant(&grant);
            grants.push(grant);
        }
        check_dir_grant(line);
        check_env_grant(line);
        check_secret_grant(line);
    }
    check_suggestions(&grants);
});

fn check_network_grant(grant: &Grant) {
    assert_eq!(grant.scheme, grant.scheme.to_ascii_lowercase());
    assert_eq!(grant.to_string().parse::<Grant>().as_ref(), Ok(grant));
    // Methods: only on HTTP grants, upper-case, non-empty, no repeats.
    assert!(grant.methods.is_empty() || grant.is_http(), "{grant}");
    for (i, method) in grant.methods.iter().enumerate() {
        assert!(!method.is_empty() && *method == method.to_ascii_uppercase(), "{grant}");
        assert!(!grant.methods[..i].contains(method), "{grant}");
    }
    match &grant.host {
        HostPattern::Name(name) => {
            assert!(!name.is_empty() && !name.ends_with('.') && *name == name.to_ascii_lowercase());
        }
        HostPattern::Suffix(suffix) => assert!(suffix.starts_with('.') && suffix.len() > 1),
        HostPattern::Ip(ip) => assert_eq!(*ip, ip.to_canonical()),
        HostPattern::Cidr(net) => assert_eq!(*net, net.trunc()),
    }
    assert_ne!(grant.port, PortPattern::Port(0));

    // The documented forms: name, *.suffix, IPv4, [IPv6], CIDR, [IPv6 CIDR]; :port or :*.
    let host = match &grant.host {
        HostPattern::Name(name) => name.clone(),
        HostPattern::Suffix(suffix) => format!("*{suffix}"),
        HostPattern::Ip(IpAddr::V4(ip)) => ip.to_string(),
        HostPattern::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        HostPattern::Cidr(net) if net.addr().is_ipv4() => net.to_string(),
        HostPattern::Cidr(net) => format!("[{net}]"),
    };
    let port = match grant.port {
        PortPattern::Any => "*".to_string(),
        PortPattern::Port(port) => port.to_string(),
    };
    let canonical = format!("{}://{host}:{port}", grant.scheme);
    let reparsed = canonical.parse::<Grant>().expect("the canonical form parses");
    assert_eq!(
        (&reparsed.scheme, &reparsed.host, reparsed.port),
        (&grant.scheme, &grant.host, grant.port),
        "{grant} written as {canonical}"
    );

    // A policy holding the grant allows what it names. HTTP grants are for the HTTP
    // capability (an async decision that may resolve names), not sockets.
    if grant.scheme == "http" || grant.scheme == "https" {
        return;
    }
    let policy = NetworkPolicy::new("fuzz", vec![grant.clone()], false);
    let port = match grant.port {
        PortPattern::Any => 1,
        PortPattern::Port(port) => port,
    };
    let name = match &grant.host {
        HostPattern::Name(name) => Some(name.clone()),
        HostPattern::Suffix(suffix) => Some(format!("a{suffix}")),
        _ => None,
    };
    if let Some(name) = name
        && !METADATA_NAMES.contains(&name.as_str())
    {
        assert_eq!(
            policy.check_name_lookup(&name),
            Ok(()),
            "{grant} allows looking up {name}"
        );
    }
    let ip = match &grant.host {
        HostPattern::Ip(ip) => Some(*ip),
        HostPattern::Cidr(net) => Some(net.network()),
        _ => None,
    };
    if let Some(ip) = ip
        && !is_metadata_address(ip)
    {
        let addr = SocketAddr::new(ip, port);
        assert_eq!(
            policy.check_socket_now(addr, SocketUse::TcpConnect),
            Some(Ok(())),
            "{grant} allows a connect to {addr}"
        );
    }
}

/// A denied connect names the grant to add; adding it allows the connect.
fn check_suggestions(grants: &[Grant]) {
    let mut targets: Vec<SocketAddr> = ["127.0.0.1:6379", "[::1]:5432", "10.1.2.3:443", "[::ffff:10.1.2.3]:80"]
        .iter()
        .map(|addr| addr.parse().unwrap())
        .collect();
    // Addresses next to the granted ones: one port up, and the address after a block.
    for grant in grants {
        let port = match grant.port {
            PortPattern::Any => 1,
            PortPattern::Port(port) => port,
        };
        let ip = match &grant.host {
            HostPattern::Ip(ip) => *ip,
            HostPattern::Cidr(net) => match net.broadcast() {
                IpAddr::V4(v4) => IpAddr::V4(v4.to_bits().wrapping_add(1).into()),
                IpAddr::V6(v6) => IpAddr::V6(v6.to_bits().wrapping_add(1).into()),
            },
            _ => continue,
        };
        targets.push(SocketAddr::new(ip, port));
        targets.push(SocketAddr::new(ip, port.wrapping_add(1).max(1)));
    }
    let policy = NetworkPolicy::new("fuzz", grants.to_vec(), false);
    for addr in targets {
        // `None`: the decision needs a DNS lookup of a granted name; not here.
        let Some(Err(denial)) = policy.check_socket_now(addr, SocketUse::TcpConnect) else {
            continue;
        };
        if is_metadata_address(addr.ip()) {
            continue;
        }
        let suggested = denial
            .remedy
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("the denial names a grant: {denial}"));
        let grant = suggested
            .parse::<Grant>()
            .unwrap_or_else(|err| panic!("the suggested grant parses: {denial}: {err}"));
        let mut more = grants.to_vec();
        more.push(grant);
        let policy = NetworkPolicy::new("fuzz", more, false);
        assert_eq!(
            policy.check_socket_now(addr, SocketUse::TcpConnect),
            Some(Ok(())),
            "adding `{suggested}` allows the connect to {addr}"
        );
    }
}

fn check_dir_grant(line: &str) {
    let Ok(grant) = DirGrant::parse(line) else {
        return;
    };
    let host = grant.host.to_str().expect("parsed from text");
    assert!(!host.is_empty() && !host.contains(':') && !grant.guest.is_empty());
    assert_eq!(DirGrant::parse(&format!("{host}:{}", grant.guest)), Ok(grant));
}

fn check_env_grant(line: &str) {
    // Without `=`, the value comes from runbox's own environment: not a parser question.
    if !line.contains('=') {
        return;
    }
    if let Ok((name, value)) = parse_env_grant(line) {
        assert!(!name.is_empty() && !name.contains('='));
        assert_eq!(format!("{name}={value}"), line);
    }
}

fn check_secret_grant(line: &str) {
    let Ok(grant) = SecretGrant::parse(line) else {
        return;
    };
    assert!(!grant.name.is_empty());
    assert!(
        grant
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    );
    let source = match &grant.source {
        SecretSource::Env(var) => format!("env:{var}"),
        SecretSource::File(path) => format!("file:{}", path.to_str().expect("parsed from text")),
    };
    assert!(source.len() > "env:".len());
    assert_eq!(SecretGrant::parse(&format!("{}={source}", grant.name)), Ok(grant));
}
