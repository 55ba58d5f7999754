//! Logging: `tracing` to stderr, human text or JSON lines, every line tagged with the
//! run id (a span field). `-v` shows debug (every capability decision), `-vv` trace;
//! `RUST_LOG` overrides both. Lines pass [`crate::output::LogWriter`]: secrets are
//! redacted and control characters made visible in every line, whatever field carried
//! them (colours are off for that reason: the writer cannot tell them from a plugin's).

use tracing_subscriber::EnvFilter;

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(verbosity: u8, format: LogFormat) {
    let default = match verbosity {
        0 => "warn,wasmtime_wasi_http=error",
        1 => "runbox=debug,warn",
        _ => "runbox=trace,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(crate::output::LogWriter);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}

/// A new random run id (16 hex digits).
pub fn new_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
