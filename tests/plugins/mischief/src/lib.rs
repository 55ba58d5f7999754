//! Test-only: a check that misbehaves on purpose, one way per `mode`, so tests can
//! prove the sandbox contains it. Where the sandbox answers with an error instead of
//! stopping the plugin, the plugin reports that error as its summary so the test
//! can assert on it.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::{Info, Level, Report, Status, config, host, log};
use serde::Deserialize;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

mod forge;
mod header_secret;
mod memory;

#[derive(Deserialize)]
struct Config {
    mode: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    size: usize,
    /// `http`: the method, sent exactly as written (`get`, `PURGE`, ...).
    #[serde(default)]
    method: String,
    /// `http`: request headers, `name: value`.
    #[serde(default)]
    headers: Vec<String>,
    /// `tls-name`: the server name to ask `wasi:tls` for over a connection to `target`.
    #[serde(default)]
    server_name: String,
    /// `http`: request body.
    #[serde(default)]
    body: String,
}

struct Mischief;

impl Guest for Mischief {
    fn info() -> Info {
        Info {
            name: "mischief".into(),
            version: "0.1.0".into(),
            description: "Misbehaves on purpose (sandbox tests only)".into(),
            config_schema: r#"{"type": "object", "properties": {"mode": {"type": "string"}, "target": {"type": "string"}, "size": {"type": "integer", "minimum": 0}, "method": {"type": "string"}, "headers": {"type": "array", "items": {"type": "string"}}, "body": {"type": "string"}, "server_name": {"type": "string"}}, "required": ["mode"]}"#.into(),
        }
    }

    fn run(config: String) -> Result<Report, String> {
        let raw = config;
        let config: Config = config::parse(&raw)?;
        let outcome = match config.mode.as_str() {
            "forge" | "leak" | "cut" => return forge::run(&config.mode, &raw),
            "header-secret" => return header_secret::run(&raw),
            "loop" => busy_loop(),
            "alloc" => allocate_forever(),
            "panic" => panic!("mischief panicked on purpose"),
            "recurse" => format!("depth {}", recurse(0)),
            "err" => return Err("mischief returned an error on purpose".into()),
            "listen" => match TcpListener::bind(config.target.as_str()) {
                Ok(listener) => format!("listening on {:?}", listener.local_addr()),
                Err(err) => format!("listen failed: {err}"),
            },
            "udp" => match UdpSocket::bind(config.target.as_str()) {
                Ok(socket) => format!("udp bound on {:?}", socket.local_addr()),
                Err(err) => format!("udp failed: {err}"),
            },
            "connect" => match TcpStream::connect(config.target.as_str()) {
                Ok(mut stream) => {
                    let _ = stream.write_all(b"PING\r\n");
                    let mut buf = [0u8; 64];
                    let n = stream.read(&mut buf).unwrap_or(0);
                    format!("connected, read {n} bytes")
                }
                Err(err) => format!("connect failed: {err}"),
            },
            "lookup" => match (config.target.as_str(), 80).to_socket_addrs() {
                Ok(addrs) => format!("resolved {:?}", addrs.collect::<Vec<_>>()),
                Err(err) => format!("lookup failed: {err}"),
            },
            // A check that writes: any method, exactly as written, any headers.
            "http" => http_request(&config),
            "env" => format!("env: {:?}", std::env::vars().collect::<Vec<_>>()),
            "file" => match std::fs::read_to_string(&config.target) {
                Ok(text) => format!("read {} bytes", text.len()),
                Err(err) => format!("file failed: {err}"),
            },
            "secret" => match host::secret(&config.target) {
                Some(value) => {
                    log(Level::Warn, &format!("the secret is {value}"));
                    println!("stdout: {value}");
                    return Ok(Report::new(Status::Ok, format!("secret is {value}"))
                        .detail(format!("again: {value}"))
                        .metric(&format!("m_{value}"), 1.0, ""));
                }
                None => "secret not granted".to_string(),
            },
            "huge" => {
                let line = "x".repeat(config.size);
                let mut report = Report::new(Status::Ok, line.clone());
                for i in 0..config.size.min(10_000) {
                    report = report.detail(line.clone()).metric(&format!("m{i}"), i as f64, "");
                    log(Level::Info, &line);
                }
                print!("{line}");
                return Ok(report);
            }
            // Strings cross the component boundary as UTF-8; the host must refuse
            // invalid bytes, not pass them on to reports and terminals.
            "utf8" => {
                // SAFETY: deliberately not UTF-8; this is the attack under test.
                let bad = unsafe { String::from_utf8_unchecked(vec![b'o', b'k', 0xff, 0xfe, b'\n']) };
                return Ok(Report::new(Status::Ok, bad));
            }
            "utf8-log" => {
                let bytes = std::hint::black_box(vec![0xc3, 0x28]);
                // SAFETY: as above.
                log(Level::Info, unsafe { std::str::from_utf8_unchecked(&bytes) });
                "logged invalid UTF-8".to_string()
            }
            "utf8-stdout" => {
                std::io::stdout().write_all(&[b'a', 0xff, b'b', b'\n']).unwrap();
                "printed invalid UTF-8".to_string()
            }
            // A granted connection, a handshake for another host's name.
            // `size` bytes of `a` before the name: a name the host must not keep whole.
            "tls-name" => tls_handshake(&config.target, &("a".repeat(config.size) + &config.server_name)),
            // Each TLS connection keeps buffers in the host: hold as many as it lets us.
            "tls-flood" => tls_flood(&config.target, config.size),
            // Each TCP socket is a host file descriptor: try to exhaust them.
            "sockets" => {
                use wasi::sockets::network::IpAddressFamily;
                let mut held = Vec::new();
                let outcome = loop {
                    match wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
                        Ok(socket) => held.push(socket),
                        Err(err) => break format!("socket {} failed: {err:?}", held.len() + 1),
                    }
                    if held.len() == 100_000 {
                        break "created 100000 sockets".to_string();
                    }
                };
                drop(held);
                outcome
            }
            // Every handle is host memory: try to make the host hold millions.
            "handles" => {
                let mut held = Vec::new();
                loop {
                    held.push(wasi::clocks::monotonic_clock::subscribe_duration(1_000_000_000));
                    std::hint::black_box(&held);
                }
            }
            other => return memory::run(other, config.size),
        };
        Ok(Report::new(Status::Ok, outcome))
    }
}

/// Sends `config.method` to `config.target` over wasi:http without the SDK (which
/// normalises methods), and says what came back.
fn http_request(config: &Config) -> String {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    let Some((scheme, rest)) = config.target.split_once("://") else {
        return format!("bad target {}", config.target);
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let mut headers: Vec<(String, Vec<u8>)> = config
        .headers
        .iter()
        .filter_map(|header| header.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().as_bytes().to_vec()))
        .collect();
    if !config.body.is_empty() {
        headers.push(("content-length".into(), config.body.len().to_string().into_bytes()));
    }
    let fields = match Fields::from_list(&headers) {
        Ok(fields) => fields,
        Err(err) => return format!("http failed: header {err:?}"),
    };
    let request = OutgoingRequest::new(fields);
    let method = match config.method.as_str() {
        "" | "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        "CONNECT" => Method::Connect,
        "TRACE" => Method::Trace,
        other => Method::Other(other.to_string()),
    };
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    if request.set_method(&method).is_err()
        || request.set_scheme(Some(&scheme)).is_err()
        || request.set_authority(Some(authority)).is_err()
        || request.set_path_with_query(Some(path)).is_err()
    {
        return "http failed: invalid request".into();
    }
    let body = request.body().expect("the body is taken once");
    let pending = match outgoing_handler::handle(request, None) {
        Ok(pending) => pending,
        Err(code) => return format!("http failed: {code:?}"),
    };
    {
        let stream = body.write().expect("the stream is taken once");
        let _ = stream.blocking_write_and_flush(config.body.as_bytes());
    }
    let _ = OutgoingBody::finish(body, None);
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => format!("HTTP {}", response.status()),
        Some(Ok(Err(code))) => format!("http failed: {code:?}"),
        _ => "http failed: no response".into(),
    }
}

fn busy_loop() -> String {
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn allocate_forever() -> String {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&blocks);
    }
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 64]);
    1 + recurse(depth + pad[0] % 2 + 1)
}

runbox_plugin_sdk::export_check!(Mischief);

fn split_target(target: &str) -> Result<(&str, u16), String> {
    let (host, port) = target.rsplit_once(':').ok_or("target is host:port")?;
    Ok((host, port.parse().map_err(|_| "bad port")?))
}

fn tls_handshake(target: &str, server_name: &str) -> String {
    use runbox_plugin_sdk::net::Stream;
    let (host, port) = match split_target(target) {
        Ok(pair) => pair,
        Err(err) => return err,
    };
    match Stream::connect(host, port).and_then(|stream| stream.start_tls(server_name)) {
        Ok(_) => format!("TLS handshake with {server_name} completed"),
        Err(err) => format!("TLS handshake refused: {err}"),
    }
}

fn tls_flood(target: &str, count: usize) -> String {
    use runbox_plugin_sdk::net::Stream;
    let (host, port) = match split_target(target) {
        Ok(pair) => pair,
        Err(err) => return err,
    };
    let mut held = Vec::new();
    for n in 1..=count {
        match Stream::connect(host, port).and_then(|stream| stream.start_tls(host)) {
            Ok(stream) => held.push(stream),
            Err(err) => return format!("TLS connection {n} failed: {err}"),
        }
    }
    format!("held {} TLS connections", held.len())
}
