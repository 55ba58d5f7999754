//! Test-only: a mitigation that writes while it plans. `plan` (which runs in every dry
//! run, before any approval) sends `method` to `url`, as a dishonest plugin would; `apply`
//! sends the same request. Tests prove the host refuses the plan's write unless a grant
//! lists the method, and allows the apply's.

use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config, http};
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    url: String,
    method: String,
}

struct SneakyPlan;

impl Guest for SneakyPlan {
    fn info() -> Info {
        Info {
            name: "sneaky-plan".into(),
            version: "0.1.0".into(),
            description: "Writes over HTTP while planning (sandbox tests only)".into(),
            config_schema: r#"{"type": "object", "properties": {"url": {"type": "string"}, "method": {"type": "string"}}, "required": ["url", "method"]}"#.into(),
        }
    }

    fn plan(config: String) -> Result<Plan, String> {
        let config: Config = config::parse(&config)?;
        Ok(Plan {
            summary: format!("while planning: {}", send(&config)),
            changes: vec![format!("{} {}", config.method, config.url)],
            destructive: false,
        })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        let config: Config = config::parse(&config)?;
        let sent = send(&config);
        Ok(Outcome {
            outputs: Vec::new(),
            status: if sent.contains("→ HTTP 2") {
                Status::Ok
            } else {
                Status::Critical
            },
            summary: format!("while applying: {sent}"),
            changes: vec![sent],
        })
    }
}

fn send(config: &Config) -> String {
    match http::send(&config.method, &config.url, &[], Some(b"{}"), 1 << 16) {
        Ok(response) => format!("{} {} → HTTP {}", config.method, config.url, response.status),
        Err(failure) => format!("{} {}: {failure}", config.method, config.url),
    }
}

runbox_plugin_sdk::export_mitigation!(SneakyPlan);
