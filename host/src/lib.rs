//! runbox: run operational checks and runbooks made of sandboxed WebAssembly plugins.
//!
//! - [`runtime`]: engine, compile cache, plugin loading and sandboxed invocation;
//! - [`capabilities`]: what a step may do (network, secrets, env, files), deny by default;
//! - [`config`]: plugin config from the command line, validated against the plugin's schema;
//!   [`schema`]: that schema, checked against limits before it is compiled;
//! - [`plugins`]: finding plugins by name, path or pinned URL ([`remote`]); [`trust`]: signatures;
//! - [`result`] and [`report`]: results and their formats;
//! - [`text`]: plugin text made inert, and every format's escaping; [`output`]: where
//!   everything runbox writes leaves it, redacted;
//! - [`telemetry`]: OpenTelemetry traces of runs (OTLP), when asked for;
//! - [`cli`]: the `runbox` command.

pub mod capabilities;
pub mod cli;
mod commands;
pub mod config;
pub mod dirs;
pub mod error;
pub mod logging;
pub mod output;
pub mod plugins;
pub mod remote;
pub mod report;
pub mod result;
pub mod runbook;
pub mod runtime;
pub mod scaffold;
pub mod schema;
pub mod telemetry;
pub mod text;
pub mod trust;
