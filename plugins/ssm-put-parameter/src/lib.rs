//! `ssm-put-parameter` (mitigation): sets an SSM Parameter Store parameter
//! (PutParameter with Overwrite), such as pinning `DETECTOR_MODEL_VERSION`. The plan
//! reads the parameter (GetParameter) and shows its current value and version and the
//! new value; it changes nothing, and plans no change when the value is already set.
//! Apply reads again, puts, and reports the new version. A SecureString's values (old
//! and new) are never shown; `value_secret` takes the new value from a granted secret
//! instead of the runbook.

use runbox_plugin_sdk::aws::{self, Service};
use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::ssm::{self, Parameter};
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "ssm-put-parameter config",
  "type": "object",
  "properties": {
    "endpoint": {"type": "string", "description": "SSM endpoint, e.g. https://ssm.eu-west-1.amazonaws.com (also the step's grant)"},
    "region": {"type": "string", "default": "us-east-1", "description": "The endpoint's region (SigV4 signs for it)"},
    "name": {"type": "string", "description": "Parameter name, e.g. DETECTOR_MODEL_VERSION"},
    "value": {"type": "string", "description": "The new value (give value or value_secret)"},
    "value_secret": {"type": "string", "description": "Instead of value: the granted secret holding the new value (for SecureString values that must not sit in a runbook)"},
    "type": {"type": "string", "enum": ["String", "StringList", "SecureString"], "description": "Parameter type; default: the existing parameter's type, String for a new one. SecureString values are never shown"},
    "access_key_secret": {"type": "string", "default": "aws_access_key_id"},
    "secret_key_secret": {"type": "string", "default": "aws_secret_access_key"},
    "session_token_secret": {"type": "string", "description": "Granted secret holding a session token (temporary credentials)"}
  },
  "required": ["endpoint", "name"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    endpoint: String,
    #[serde(default = "aws::defaults::region")]
    region: String,
    name: String,
    value: Option<String>,
    value_secret: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default = "aws::defaults::access_key_secret")]
    access_key_secret: String,
    #[serde(default = "aws::defaults::secret_key_secret")]
    secret_key_secret: String,
    session_token_secret: Option<String>,
}

/// What the parameter is and what it should become.
struct Change {
    name: String,
    current: Option<Parameter>,
    value: String,
    kind: String,
}

impl Change {
    fn secure(&self) -> bool {
        self.kind == "SecureString" || self.current.as_ref().is_some_and(Parameter::is_secure)
    }

    fn already_set(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|current| current.value == self.value && current.kind == self.kind)
    }

    fn show(&self, value: &str) -> String {
        if self.secure() {
            "(SecureString value not shown)".into()
        } else {
            format!("\"{value}\"")
        }
    }

    fn was(&self) -> String {
        match &self.current {
            Some(current) => format!(
                "{} (version {}, {})",
                self.show(&current.value),
                current.version,
                current.kind
            ),
            None => "unset (a new parameter)".into(),
        }
    }
}

struct SsmPutParameter;

impl Guest for SsmPutParameter {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "ssm-put-parameter",
            "Sets an SSM parameter (PutParameter with Overwrite) and reports its new version",
            SCHEMA
        )
    }

    fn plan(config: String) -> Result<Plan, String> {
        let (_, change) = prepare(&config)?;
        if change.already_set() {
            return Ok(Plan {
                summary: format!("nothing to do: {} is already {}", change.name, change.was()),
                changes: Vec::new(),
                destructive: false,
            });
        }
        Ok(Plan {
            summary: format!("set {}: {} → {}", change.name, change.was(), change.show(&change.value)),
            changes: vec![format!(
                "PutParameter {} = {} ({}, Overwrite); now {}",
                change.name,
                change.show(&change.value),
                change.kind,
                change.was()
            )],
            destructive: false,
        })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        // Read again: put against what is there now, not what the plan saw.
        let (service, change) = prepare(&config)?;
        if change.already_set() {
            return Ok(Outcome::new(
                Status::Ok,
                format!("nothing to do: {} is already {}", change.name, change.was()),
                Vec::new(),
            ));
        }
        let version = ssm::put(&service, &change.name, &change.value, &change.kind)
            .map_err(|err| format!("PutParameter {}: {err}", change.name))?;
        let line = format!(
            "{}: {} → {} (version {version})",
            change.name,
            change.was(),
            change.show(&change.value)
        );
        Ok(Outcome::new(Status::Ok, format!("set {line}"), vec![line]).output("version", &version))
    }
}

fn prepare(json: &str) -> Result<(Service, Change), String> {
    let config: Config = config::parse(json)?;
    if config.name.trim().is_empty() {
        return Err(config::field_error("name", "is empty: give the parameter name"));
    }
    let value = match (&config.value, &config.value_secret) {
        (Some(value), None) => value.clone(),
        (None, Some(secret)) => {
            runbox_plugin_sdk::secret(secret).map_err(|err| config::field_error("value_secret", err))?
        }
        _ => {
            return Err(config::field_error(
                "value",
                "give exactly one of `value` or `value_secret` (a granted secret)",
            ));
        }
    };
    let credentials = aws::credentials_from_secrets(
        &config.access_key_secret,
        &config.secret_key_secret,
        config.session_token_secret.as_deref(),
    )?;
    let service = ssm::service(&config.endpoint, &config.region, credentials)
        .map_err(|err| config::field_error("endpoint", err))?;
    let current = ssm::get(&service, &config.name).map_err(|err| format!("GetParameter {}: {err}", config.name))?;
    let kind = config
        .kind
        .clone()
        .or_else(|| current.as_ref().map(|current| current.kind.clone()))
        .unwrap_or_else(|| "String".into());
    Ok((
        service,
        Change {
            name: config.name,
            current,
            value,
            kind,
        },
    ))
}

runbox_plugin_sdk::export_mitigation!(SsmPutParameter);
