//! Modes that try to make the host keep plugin input outside the plugin's memory cap.
//! `size` is each mode's one knob; every mode reports what the sandbox answered.

use runbox_plugin_sdk::{Level, Report, Status, host, log};

/// Runs `mode`, or says it is unknown.
pub fn run(mode: &str, size: usize) -> Result<Report, String> {
    let outcome = match mode {
        // 300 distinct names of `size` bytes each (a megabyte: 300 MiB if kept whole).
        "secret-names" => {
            let mut name = vec![b's'; size.max(8)];
            let mut granted = 0;
            for i in 0..300u32 {
                name[..8].copy_from_slice(format!("{i:08}").as_bytes());
                let text = std::str::from_utf8(&name).expect("ASCII");
                granted += usize::from(host::secret(text).is_some());
            }
            format!("asked for 300 secrets of {} bytes, {granted} granted", name.len())
        }
        // `size` distinct short names (each a denial to record).
        "secret-count" => {
            let granted = (0..size)
                .filter(|i| host::secret(&format!("no_such_secret_{i}")).is_some())
                .count();
            format!("asked for {size} secrets, {granted} granted")
        }
        // `size` distinct ungranted names to look up (each a denial to record).
        "lookup-count" => {
            let network = wasi::sockets::instance_network::instance_network();
            let denied = (0..size)
                .filter(|i| {
                    wasi::sockets::ip_name_lookup::resolve_addresses(&network, &format!("n{i}.attacker.example"))
                        .is_err()
                })
                .count();
            format!("{denied} of {size} lookups refused")
        }
        // 1000 lookups of distinct names of `size` bytes, holding every stream it gets.
        "lookup-names" => {
            let network = wasi::sockets::instance_network::instance_network();
            let mut name = vec![b'a'; size.max(16)];
            let suffix = b".attacker.example";
            let at = name.len() - suffix.len();
            name[at..].copy_from_slice(suffix);
            let mut held = Vec::new();
            let mut errors = std::collections::BTreeMap::new();
            for i in 0..1000u32 {
                name[..8].copy_from_slice(format!("{i:08}").as_bytes());
                let text = std::str::from_utf8(&name).expect("ASCII");
                match wasi::sockets::ip_name_lookup::resolve_addresses(&network, text) {
                    Ok(stream) => held.push(stream),
                    Err(err) => *errors.entry(format!("{err:?}")).or_insert(0) += 1,
                }
            }
            format!("{} lookups started, refused: {errors:?}", held.len())
        }
        // `size` empty log lines (no bytes, but each a record the host keeps).
        "log-spam" => {
            for _ in 0..size {
                log(Level::Info, "");
            }
            format!("logged {size} empty lines")
        }
        // `size` unsent HTTP requests, each with as much body written as the host buffers.
        "http-bodies" => {
            use wasi::http::types::{Fields, OutgoingRequest};
            let chunk = vec![b'b'; 1 << 20];
            let (mut held, mut buffered) = (Vec::new(), 0usize);
            for _ in 0..size {
                let request = OutgoingRequest::new(Fields::new());
                let Ok(body) = request.body() else { break };
                let Ok(stream) = body.write() else { break };
                while let Ok(room) = stream.check_write() {
                    let room = (room as usize).min(chunk.len());
                    if room == 0 || stream.write(&chunk[..room]).is_err() {
                        break;
                    }
                    buffered += room;
                }
                // Children first: a resource cannot be dropped before the ones it handed out.
                held.push((stream, body, request));
            }
            format!("{} requests hold {} MiB of unsent body", held.len(), buffered >> 20)
        }
        // One header map of 24 KiB (under the host's limit: past it, appending traps),
        // then `size` changed copies of it.
        "http-fields" => {
            use wasi::http::types::Fields;
            let full = Fields::new();
            let value = vec![b'v'; 1000];
            let mut bytes = 0;
            while bytes < 24_000 && full.append(&format!("x-h{bytes}"), &value).is_ok() {
                bytes += value.len();
            }
            let copies: Vec<Fields> = (0..size)
                .map(|_| {
                    let copy = full.clone();
                    let _ = copy.append("x-more", b"1");
                    copy
                })
                .collect();
            format!("{} copies of {} KiB of headers", copies.len(), bytes >> 10)
        }
        // `size` HTTP requests, each with a method of a megabyte.
        "http-method" => {
            use wasi::http::types::{Fields, Method, OutgoingRequest};
            let method = "M".repeat(1 << 20);
            let mut accepted = 0;
            let held: Vec<OutgoingRequest> = (0..size)
                .map(|_| {
                    let request = OutgoingRequest::new(Fields::new());
                    accepted += usize::from(request.set_method(&Method::Other(method.clone())).is_ok());
                    request
                })
                .collect();
            format!("{} requests, {accepted} took a 1 MiB method", held.len())
        }
        other => return Err(format!("unknown mode {other}")),
    };
    Ok(Report::new(Status::Ok, outcome))
}
