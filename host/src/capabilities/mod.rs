//! Capabilities a step can grant a plugin. Each module denies by default and has one
//! enforcement point that every path (sockets, name lookups, later HTTP) goes through:
//!
//! - [`network`]: `[METHODS ]scheme://host[:port]` grants; decides name lookups, connects,
//!   binds and HTTP requests (with [`http`], which connects to the addresses it checked).
//! - [`secrets`]: `NAME=env:VAR` / `NAME=file:PATH` mappings, and the [`secrets::Redactor`]
//!   that removes their values from everything the host prints or writes.
//! - [`header_secrets`]: `${{ secrets.NAME }}` placeholders in the plugin's outgoing HTTP
//!   request headers, which the host fills with the value (the plugin never reads it),
//!   in the request [`network`] allowed.
//! - [`tls`]: the step's TLS trust (system roots plus its CA files, client certificate,
//!   `verify`) and the one path every TLS connection takes, `wasi:tls` and `https` alike;
//!   the server name of a `wasi:tls` handshake is decided by [`network`].
//! - [`denials`]: the one capped list every capability records its refusals into.
//! - environment variables and directories: listed in [`Grants`], applied by the sandbox
//!   (none unless granted; directories read-only).

pub mod denials;
pub mod header_secrets;
pub mod http;
pub mod network;
pub mod secrets;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything one invocation of one plugin is allowed, as the operator granted it.
#[derive(Debug, Clone)]
pub struct Grants {
    /// Network destinations (see [`network::Grant`]).
    pub network: Vec<network::Grant>,
    /// Secrets by name.
    pub secrets: Vec<secrets::SecretGrant>,
    /// Environment variables the plugin sees, with their values.
    pub env: Vec<(String, String)>,
    /// Host directories preopened read-only, with the path the plugin sees them under.
    pub dirs: Vec<DirGrant>,
    /// Whether cloud-metadata addresses may be reached. Only the operator sets this
    /// (`--allow-metadata`); no runbook can.
    pub allow_metadata: bool,
    /// The TLS trust of every connection the plugin makes (see [`tls`]).
    pub tls: Arc<tls::Trust>,
    /// Secrets (names among `secrets`) the plugin never reads: the step's config holds
    /// them as `${{ secrets.NAME }}` placeholders, which the host replaces in the
    /// plugin's outgoing HTTP request headers, to the step's granted hosts only.
    pub header_secrets: Vec<String>,
    /// The W3C `traceparent` of the step's span when runbox exports traces (only the
    /// host sets it, never a runbook): put on every HTTP request the plugin sends,
    /// replacing the plugin's own (see [`http`] and crate::telemetry).
    pub traceparent: Option<::http::HeaderValue>,
}

impl Default for Grants {
    fn default() -> Grants {
        Grants {
            network: Vec::new(),
            secrets: Vec::new(),
            env: Vec::new(),
            dirs: Vec::new(),
            allow_metadata: false,
            tls: tls::Trust::system(),
            header_secrets: Vec::new(),
            traceparent: None,
        }
    }
}

impl Grants {
    /// The values of these grants' secrets (`secrets`, their resolved values by name)
    /// that only the host uses, and why: the TLS client identity, and the header secrets.
    /// Every grant that would hand one of them to the plugin is withheld (see
    /// [`secrets::HostOnlyValues`]).
    pub fn host_only(&self, secrets: &HashMap<String, String>) -> secrets::HostOnlyValues {
        let mut values = secrets::HostOnlyValues::default();
        let tls_values = self.tls.secret_names().filter_map(|name| secrets.get(name));
        for value in self.tls.secret_values().iter().chain(tls_values) {
            values.add(value, secrets::HostOnly::TlsIdentity);
        }
        for value in self.header_secrets.iter().filter_map(|name| secrets.get(name)) {
            values.add(value, secrets::HostOnly::HttpHeaders);
        }
        values
    }

    /// What the plan and the approval prompt say about these grants: the read-only notes
    /// ([`Grants::read_only_notes`]) and, when the step turns TLS verification off, that.
    pub fn plan_notes(&self) -> Vec<String> {
        let mut notes = self.read_only_notes(true);
        if !self.tls.verifies() {
            notes.push(tls::VERIFY_OFF_NOTE.to_string());
        }
        notes
    }

    /// What these grants let a step do beyond reading while it only reads (a check's run
    /// or, for a `mitigation`, its plan), one note per line for `validate`, the plan and
    /// the approval prompt: HTTP methods a grant lists, and, for a mitigation, raw TCP
    /// grants (runbox cannot tell a read from a write on a raw socket). Empty when the
    /// read-only phase can only read over HTTP.
    pub fn read_only_notes(&self, mitigation: bool) -> Vec<String> {
        let phase = if mitigation { "planning" } else { "checking" };
        let mut notes: Vec<String> = self
            .network
            .iter()
            .filter(|grant| !grant.methods.is_empty())
            .map(|grant| format!("may send {} to {} while {phase}", grant.methods.join(", "), grant.url()))
            .collect();
        let raw: Vec<&str> = self
            .network
            .iter()
            .filter(|grant| !grant.is_http())
            .map(|grant| grant.url())
            .collect();
        if mitigation && !raw.is_empty() {
            notes.push(format!(
                "plans with raw TCP grants ({}): runbox cannot stop a plan from writing over a raw socket",
                raw.join(", ")
            ));
        }
        notes
    }
}

/// A host directory the plugin may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Path under which the plugin sees it.
    pub guest: String,
}

impl DirGrant {
    /// Parses `HOST_DIR` or `HOST_DIR:GUEST_PATH`.
    pub fn parse(text: &str) -> Result<DirGrant, String> {
        let (host, guest) = match text.split_once(':') {
            Some((host, guest)) => (host, guest.to_string()),
            None => (text, text.to_string()),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!(
                "directory grant `{text}`: expected HOST_DIR or HOST_DIR:GUEST_PATH"
            ));
        }
        Ok(DirGrant {
            host: PathBuf::from(host),
            guest,
        })
    }
}

/// Parses an environment grant: `NAME` (take the value from runbox's own environment)
/// or `NAME=VALUE`.
pub fn parse_env_grant(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        Some(_) => Err(format!("environment grant `{text}`: expected NAME or NAME=VALUE")),
        None => std::env::var(text)
            .map(|value| (text.to_string(), value))
            .map_err(|_| format!("environment grant `{text}`: runbox's environment has no variable `{text}`")),
    }
}
