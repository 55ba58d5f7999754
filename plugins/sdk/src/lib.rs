//! The Rust SDK for runbox plugins.
//!
//! A check is one type implementing [`check::Guest`] plus `runbox_plugin_sdk::export_check!(MyCheck);`;
//! a mitigation implements [`mitigation::Guest`] and calls `export_mitigation!`. (Both
//! worlds' bindings live here; a component exports only what its type implements.)
//! This crate holds everything checks share so that no two plugins carry a copy of it:
//! the generated bindings of the `runbox:plugin@0.1.0` worlds, config parsing whose
//! errors name the offending field ([`config`]), Nagios threshold ranges
//! ([`threshold`]), `scheme://user:password@host:port/path` URLs ([`url`]), a report
//! builder ([`report`]), TCP streams that can turn into TLS ([`net`], [`tls`]), clients for
//! Redis ([`redis`]), PostgreSQL ([`postgres`]: sslmode, authentication, simple and
//! extended query), HTTP over wasi:http ([`http`]), S3 ([`s3`]) and other AWS APIs
//! ([`aws`], [`ssm`], with [`sigv4`] and [`xml`]), HS256 JWTs ([`jwt`]), and SMTP's
//! STARTTLS ([`smtp`]).

pub mod aws;
pub mod config;
pub mod http;
pub mod jwt;
pub mod net;
pub mod postgres;
pub mod redis;
pub mod report;
pub mod s3;
pub mod s3log;
pub mod sigv4;
pub mod smtp;
pub mod ssm;
#[cfg(test)]
mod testing;
pub mod threshold;
pub mod time;
pub mod tls;
pub mod url;
pub mod xml;

/// Bindings of the `check` world. Implement [`check::Guest`] and call
/// [`export_check!`].
pub mod check {
    wit_bindgen::generate!({
        world: "check",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_check",
        default_bindings_module: "runbox_plugin_sdk::check",
    });
}

/// Bindings of the `mitigation` world. Implement [`mitigation::Guest`] and call
/// [`export_mitigation!`].
pub mod mitigation {
    wit_bindgen::generate!({
        world: "mitigation",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_mitigation",
        default_bindings_module: "runbox_plugin_sdk::mitigation",
        with: {
            "runbox:plugin/types@0.2.0": crate::check::runbox::plugin::types,
            "runbox:plugin/host@0.2.0": crate::check::runbox::plugin::host,
        },
    });
}

pub use check::export_check;
pub use check::runbox::plugin::host;
pub use check::runbox::plugin::types::{Info, Level, Metric, Outcome, Output, Plan, Report, Status};
pub use mitigation::export_mitigation;

/// Sends a log line to the host (tagged with the plugin and step, secrets redacted).
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// A network error in words for a report ("connection refused", "timed out waiting for
/// the server", ...), with the sandbox's refusal named as such. A failed TLS handshake
/// reads as the host's reason ("TLS handshake with NAME failed: …").
pub fn describe_io(err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    if let Some(tls) = net::tls_error(err) {
        return tls.to_string();
    }
    match err.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::PermissionDenied => "connection not permitted by the sandbox".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out waiting for the server".into(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => "connection closed by the server".into(),
        _ => err.to_string(),
    }
}

/// A reply that breaks its protocol, as an `InvalidData` error ("protocol error: ...").
pub(crate) fn protocol_error(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("protocol error: {}", message.into()),
    )
}

/// The plugin's [`Info`], with the calling crate's version:
/// `info!("redis-ping", "Checks that ...", SCHEMA)`.
#[macro_export]
macro_rules! info {
    ($name:expr, $description:expr, $schema:expr) => {
        $crate::Info {
            name: ($name).into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: ($description).into(),
            config_schema: ($schema).into(),
        }
    };
}

/// A timeout for one blocking operation that ends a little before the host's deadline
/// (10% of the time left, at most 250 ms, earlier), so the plugin can report "timed out"
/// itself. `None` when too little time is left to be worth setting.
pub fn io_timeout() -> Option<std::time::Duration> {
    let left = host::remaining_ms();
    let margin = (left / 10).min(250);
    let usable = left.saturating_sub(margin);
    (usable >= 20).then(|| std::time::Duration::from_millis(usable))
}

/// Returns the secret the step granted under `name`, or an error that says how to grant it.
pub fn secret(name: &str) -> Result<String, String> {
    host::secret(name)
        .ok_or_else(|| format!("secret `{name}` is not granted to this step (grant it with `--secret {name}=env:VAR`)"))
}
