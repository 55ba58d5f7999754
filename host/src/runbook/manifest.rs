//! The runbook manifest (YAML): what `docs/runbooks.md` documents.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A runbook file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name, shown in every report.
    pub name: String,
    /// What the runbook is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Incident severity this runbook serves.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// What the on-call engineer sees that leads here.
    #[serde(default)]
    pub symptoms: Vec<String>,
    /// Links: dashboards, docs, past incidents.
    #[serde(default)]
    pub references: Vec<String>,
    /// Who to call when the runbook does not resolve it; shown to the person running it.
    #[serde(default)]
    pub escalation: Option<String>,
    /// Deadline of the whole run (`10m`); `runbox run --timeout` overrides it. No step
    /// runs past it.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Parameters, set with `--set NAME=VALUE`.
    #[serde(default)]
    pub inputs: BTreeMap<String, Input>,
    /// TLS trust of every step that has no `tls:` of its own (a step's replaces it whole).
    #[serde(default)]
    pub tls: Option<StepTls>,
    /// The steps, in any order (`needs` orders them).
    pub steps: Vec<Step>,
}

/// SEV-1 (worst) to SEV-4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Severity {
    /// Critical, customer-facing outage.
    #[serde(rename = "SEV-1")]
    Sev1,
    /// Major degradation.
    #[serde(rename = "SEV-2")]
    Sev2,
    /// Minor degradation.
    #[serde(rename = "SEV-3")]
    Sev3,
    /// No customer impact.
    #[serde(rename = "SEV-4")]
    Sev4,
}

impl Severity {
    /// `SEV-1` ...
    pub fn label(self) -> &'static str {
        match self {
            Severity::Sev1 => "SEV-1",
            Severity::Sev2 => "SEV-2",
            Severity::Sev3 => "SEV-3",
            Severity::Sev4 => "SEV-4",
        }
    }
}

/// One input parameter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
    /// Value when not set.
    #[serde(default)]
    pub default: Option<Value>,
    /// Whether the run refuses to start without a value.
    #[serde(default)]
    pub required: bool,
}

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id (`[a-z0-9_-]`), used by `needs`, `when` and `--approve`.
    pub id: String,
    /// Human name.
    #[serde(default)]
    pub name: Option<String>,
    /// Plugin name, path to a .wasm (relative to the runbook), or `name@sha256:HEX`.
    pub uses: String,
    /// Config for the plugin; strings may use `${{ inputs.X }}`, `${{ env.X }}`,
    /// `${{ steps.ID.outputs.X }}`, `${{ item }}` and `${{ secrets.X }}` (see
    /// [`super::template`]).
    #[serde(default)]
    pub with: Map<String, Value>,
    /// Run the step once per item of this list: a YAML list, or one template naming a
    /// list input or an earlier step's output. Each run sees `${{ item }}`.
    #[serde(default)]
    pub for_each: Option<Value>,
    /// Most items `for_each` may have (default 100, at most 1000); a longer list runs
    /// nothing and the step is UNKNOWN.
    #[serde(default)]
    pub max_items: Option<usize>,
    /// Network grants (`[METHODS ]scheme://host[:port]`, or `{url, methods}`), templated.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    /// Secrets: `NAME: env:VAR` or `NAME: file:PATH`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Environment variables the plugin sees: `NAME: value` (templated).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Steps that must finish first (one id or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub needs: Vec<String>,
    /// Condition on earlier steps and inputs; the step is skipped when false.
    #[serde(default)]
    pub when: Option<String>,
    /// Deadline of one attempt (default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Linear memory the plugin may use, its `info()` included (`256MiB`; default 64MiB,
    /// at most 1GiB); `runbox run --memory` overrides it.
    #[serde(default)]
    pub memory: Option<String>,
    /// TLS trust of the step's connections: CA files besides the system's roots, a client
    /// certificate, `verify: false` (see docs/runbooks.md).
    #[serde(default)]
    pub tls: Option<StepTls>,
    /// Retries of a failed (CRITICAL/UNKNOWN) check or plan.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// What a failure does to the rest of the run.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// `required`: a mitigation applies only with `--approve ID` or a yes at the prompt.
    #[serde(default)]
    pub approval: Option<Approval>,
}

/// A step's `tls:` mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTls {
    /// CA bundles (PEM) trusted besides the system's roots: a path or a list, relative to
    /// the runbook's directory.
    #[serde(default, deserialize_with = "one_or_many")]
    pub ca: Vec<String>,
    /// The client certificate chain (PEM): a path, or `{secret: NAME}`.
    #[serde(default)]
    pub client_cert: Option<PemRef>,
    /// The client certificate's key (PEM): a path, or `{secret: NAME}`.
    #[serde(default)]
    pub client_key: Option<PemRef>,
    /// `false` turns certificate verification off (default `true`).
    #[serde(default = "verify_by_default")]
    pub verify: bool,
}

fn verify_by_default() -> bool {
    true
}

/// Where a `tls:` PEM item is: a file path, or `{secret: NAME}` (one of the step's secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemRef {
    /// A path, relative to the runbook's directory.
    File(String),
    /// A secret of the step, by name.
    Secret(String),
}

impl<'de> Deserialize<'de> for PemRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PemRef, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Secret {
            secret: String,
        }
        match Value::deserialize(deserializer)? {
            Value::String(path) => Ok(PemRef::File(path)),
            mapping @ Value::Object(_) => Secret::deserialize(mapping)
                .map(|secret| PemRef::Secret(secret.secret))
                .map_err(|err| serde::de::Error::custom(format!("expected a file path or {{secret: NAME}}: {err}"))),
            other => Err(serde::de::Error::custom(format!(
                "expected a file path or {{secret: NAME}}, found {other}"
            ))),
        }
    }
}

/// One `allow:` entry: a grant as text (`POST https://hooks.internal`), or the mapping
/// `{url: https://hooks.internal, methods: [POST]}`. Both make the same grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// `[METHOD[,METHOD]] scheme://host[:port]`.
    Text(String),
    /// `{url: scheme://host[:port], methods: [METHOD, ...]}`.
    Mapping {
        /// `scheme://host[:port]`.
        url: String,
        /// HTTP methods allowed beyond GET, HEAD and OPTIONS while the step only reads.
        methods: Vec<String>,
    },
}

impl<'de> Deserialize<'de> for AllowEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AllowEntry, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Mapping {
            url: String,
            #[serde(default, deserialize_with = "one_or_many")]
            methods: Vec<String>,
        }
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(AllowEntry::Text(text)),
            mapping @ Value::Object(_) => {
                let Mapping { url, methods } = Mapping::deserialize(mapping).map_err(|err| {
                    serde::de::Error::custom(format!(
                        "an `allow` mapping is {{url: scheme://host[:port], methods: [POST, ...]}}: {err}"
                    ))
                })?;
                Ok(AllowEntry::Mapping { url, methods })
            }
            _ => Err(serde::de::Error::custom(
                "an `allow` entry is a grant (`https://host`, `POST https://host`) or {url: https://host, methods: [POST]}",
            )),
        }
    }
}

/// Retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// Wait before the second attempt (default 1s).
    #[serde(default)]
    pub delay: Option<String>,
    /// Multiplier applied to the delay after each attempt (default 1, at least 1).
    #[serde(default)]
    pub backoff: Option<f64>,
}

/// What a failed step does to the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Keep going (default).
    #[default]
    Continue,
    /// Start no further steps; the rest are reported as not run.
    Abort,
}

/// Whether applying needs explicit approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// `--approve ID` or a yes at the interactive prompt.
    Required,
    /// `--apply` is enough.
    None,
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}
