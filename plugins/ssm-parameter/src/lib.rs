//! `ssm-parameter` (check): an SSM Parameter Store parameter holds the expected value
//! (GetParameter, decrypted). OK when it matches, CRITICAL when it differs or does not
//! exist; the version is in the details. A SecureString's value is never shown: not
//! in the summary, the details or the outputs (only "differs"/"matches" and the
//! version), and its `expected` is not echoed either.

use runbox_plugin_sdk::aws;
use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::{Info, Report, Status, config, ssm};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "ssm-parameter config",
  "type": "object",
  "properties": {
    "endpoint": {"type": "string", "description": "SSM endpoint, e.g. https://ssm.eu-west-1.amazonaws.com (also the step's grant)"},
    "region": {"type": "string", "default": "us-east-1", "description": "The endpoint's region (SigV4 signs for it)"},
    "name": {"type": "string", "description": "Parameter name, e.g. DETECTOR_MODEL_VERSION or /author/prod/DETECTOR_MODEL_VERSION"},
    "expected": {"type": "string", "description": "The value it must hold exactly (give expected or pattern)"},
    "pattern": {"type": "string", "description": "Instead of expected: a glob the value must match (* any run of characters, ? one character), e.g. \"v4*\""},
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
    expected: Option<String>,
    pattern: Option<String>,
    #[serde(default = "aws::defaults::access_key_secret")]
    access_key_secret: String,
    #[serde(default = "aws::defaults::secret_key_secret")]
    secret_key_secret: String,
    session_token_secret: Option<String>,
}

struct SsmParameter;

impl Guest for SsmParameter {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "ssm-parameter",
            "Checks that an SSM parameter holds the expected value (SecureString values never shown)",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        let config: Config = config::parse(&config)?;
        let (wanted, describe_wanted) = match (&config.expected, &config.pattern) {
            (Some(expected), None) => (Wanted::Exact(expected.clone()), format!("\"{expected}\"")),
            (None, Some(pattern)) => (Wanted::Glob(pattern.clone()), format!("a value matching \"{pattern}\"")),
            _ => {
                return Err(config::field_error(
                    "expected",
                    "give exactly one of `expected` (the exact value) or `pattern` (a glob)",
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
        let name = &config.name;
        let parameter = match ssm::get(&service, name) {
            Ok(Some(parameter)) => parameter,
            Ok(None) => {
                return Ok(Report::critical(format!(
                    "parameter {name} does not exist (expected {describe_wanted})"
                )));
            }
            Err(err) => return Ok(Report::critical(format!("GetParameter {name}: {err}"))),
        };
        let matches = wanted.accepts(&parameter.value);
        let version = parameter.version;
        let report = if parameter.is_secure() {
            // Never the value, and not the expectation either (it is the secret too).
            Report::new(
                if matches { Status::Ok } else { Status::Critical },
                format!(
                    "{name} (SecureString, version {version}) {} the expected value (value not shown)",
                    if matches { "holds" } else { "differs from" }
                ),
            )
        } else if matches {
            Report::new(
                Status::Ok,
                format!("{name} = \"{}\" (version {version}), as expected", parameter.value),
            )
            .output("value", &parameter.value)
        } else {
            Report::critical(format!(
                "{name} is \"{}\" (version {version}), expected {describe_wanted}",
                parameter.value
            ))
            .output("value", &parameter.value)
        };
        Ok(report
            .detail(format!("type {}, version {version}", parameter.kind))
            .metric("version", version as f64, "")
            .output("version", &version))
    }
}

enum Wanted {
    Exact(String),
    Glob(String),
}

impl Wanted {
    fn accepts(&self, value: &str) -> bool {
        match self {
            Wanted::Exact(expected) => value == expected,
            Wanted::Glob(pattern) => glob(pattern.as_bytes(), value.as_bytes()),
        }
    }
}

/// `*` matches any run of bytes, `?` one byte; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, at)) => {
                    p = star + 1;
                    t = at + 1;
                    backtrack = Some((star, at + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

runbox_plugin_sdk::export_check!(SsmParameter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        for (pattern, text, matches) in [
            ("v4*", "v41", true),
            ("v4*", "v4", true),
            ("v4?", "v41", true),
            ("v4?", "v4", false),
            ("*-pinned", "v41-pinned", true),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-b-b-d", false),
            ("v41", "v41", true),
            ("v41", "v410", false),
            ("", "", true),
            ("*", "", true),
        ] {
            assert_eq!(glob(pattern.as_bytes(), text.as_bytes()), matches, "{pattern} {text}");
        }
    }
}
