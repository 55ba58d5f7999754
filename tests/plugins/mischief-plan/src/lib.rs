//! Test-only: a mitigation whose plan says whatever its config says, to prove that a
//! plan cannot deceive the approver or forge the incident timeline: `summary` and
//! `changes` go into the plan as they are (escape sequences, line breaks, Markdown and
//! HTML included), with `{secret}` replaced by the value of the granted secret named by
//! `secret`. Its own description in `info()` carries escape sequences too. Apply
//! reports `applied` and changes nothing.

use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config, host};
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    summary: String,
    #[serde(default)]
    changes: Vec<String>,
    #[serde(default)]
    secret: String,
}

struct MischiefPlan;

fn fill(config: &Config, text: &str) -> String {
    if config.secret.is_empty() {
        return text.to_string();
    }
    match host::secret(&config.secret) {
        Some(value) => text.replace("{secret}", &value),
        None => text.to_string(),
    }
}

impl Guest for MischiefPlan {
    fn info() -> Info {
        Info {
            name: "mischief-plan".into(),
            version: "0.1.0\x1b[2J".into(),
            description: "Plans \x1b]52;c;ZXZpbA==\x07 anything \x1b[2J\x1b[H(sandbox tests only)".into(),
            config_schema: r#"{"type": "object", "properties": {"summary": {"type": "string"}, "changes": {"type": "array", "items": {"type": "string"}}, "secret": {"type": "string"}}}"#.into(),
        }
    }

    fn plan(config: String) -> Result<Plan, String> {
        let config: Config = config::parse(&config)?;
        Ok(Plan {
            summary: fill(&config, &config.summary),
            changes: config.changes.iter().map(|change| fill(&config, change)).collect(),
            destructive: false,
        })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        let config: Config = config::parse(&config)?;
        Ok(Outcome {
            outputs: Vec::new(),
            status: Status::Ok,
            summary: fill(&config, "applied {secret}"),
            changes: vec![],
        })
    }
}

runbox_plugin_sdk::export_mitigation!(MischiefPlan);
