//! Test-only: a check that reports what it was given and returns the outputs its config
//! names, verbatim (invalid names and JSON included), so tests can drive step outputs,
//! `for_each` and templates from both ends: what a step hands on, and what the next
//! step receives.
//!
//! Config: `status` (`ok` … `unknown`), `outputs` (a list of `{name, value}`, value as
//! JSON text), `secret_output` (a secret name whose value it returns as the output
//! `leak`), `count` (an integer, to test schema checks of late values); any other field
//! is accepted. The summary is `received ` and the config as compact JSON.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::{Info, Output, Report, Status, host};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "status": {"type": "string", "enum": ["ok", "warning", "critical", "unknown"]},
    "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "value": {"type": "string"}}, "required": ["name", "value"]}},
    "secret_output": {"type": "string"},
    "count": {"type": "integer"}
  }
}"#;

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    outputs: Vec<Pair>,
    #[serde(default)]
    secret_output: Option<String>,
}

#[derive(Deserialize)]
struct Pair {
    name: String,
    value: String,
}

struct Relay;

impl Guest for Relay {
    fn info() -> Info {
        Info {
            name: "relay".into(),
            version: "0.1.0".into(),
            description: "Reports its config and returns the outputs it is told to (tests only)".into(),
            config_schema: SCHEMA.into(),
        }
    }

    fn run(text: String) -> Result<Report, String> {
        let config: Config = serde_json::from_str(&text).map_err(|err| err.to_string())?;
        let status = match config.status.as_deref() {
            Some("warning") => Status::Warning,
            Some("critical") => Status::Critical,
            Some("unknown") => Status::Unknown,
            _ => Status::Ok,
        };
        let mut report = Report::new(status, format!("received {text}"));
        report.outputs = config
            .outputs
            .into_iter()
            .map(|pair| Output {
                name: pair.name,
                value: pair.value,
            })
            .collect();
        if let Some(name) = config.secret_output
            && let Some(value) = host::secret(&name)
        {
            // First, so that no cap on the other outputs drops it.
            report
                .outputs
                .insert(0, runbox_plugin_sdk::report::output("leak", &value));
        }
        Ok(report)
    }
}

runbox_plugin_sdk::export_check!(Relay);
