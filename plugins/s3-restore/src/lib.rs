//! `s3-restore` (mitigation): restores an archived S3 object (RestoreObject) for a
//! number of days at a retrieval tier, like `aws s3api restore-object --restore-request
//! Days=5,Tier=Standard`. The plan reads the object (HeadObject) and shows its storage
//! class and `x-amz-restore` state; it changes nothing, and plans no change when a
//! restore is already in progress or a restored copy is readable. Apply reads again,
//! requests the restore, and reads the object back to report its new state.

use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::s3::{self, Bucket, Head, Restore};
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "s3-restore config",
  "type": "object",
  "properties": {
    "endpoint": {"type": "string", "description": "S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000 (also the step's grant)"},
    "region": {"type": "string", "default": "us-east-1"},
    "bucket": {"type": "string", "description": "Bucket, e.g. author-recordings-prod"},
    "key": {"type": "string", "description": "Object key (recordings.archive_key)"},
    "days": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 5, "description": "How long the restored copy stays readable (Days)"},
    "tier": {"type": "string", "enum": ["Standard", "Bulk", "Expedited"], "default": "Standard", "description": "Retrieval tier (Expedited is not available for DEEP_ARCHIVE)"},
    "path_style": {"type": "boolean", "default": true, "description": "Path-style addressing (S3-compatible servers); false for virtual-hosted AWS"},
    "access_key_secret": {"type": "string", "default": "aws_access_key_id"},
    "secret_key_secret": {"type": "string", "default": "aws_secret_access_key"},
    "session_token_secret": {"type": "string", "description": "Granted secret holding a session token (temporary credentials)"}
  },
  "required": ["endpoint", "bucket", "key"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    endpoint: String,
    #[serde(default = "s3::defaults::region")]
    region: String,
    bucket: String,
    key: String,
    #[serde(default = "default_days")]
    days: u32,
    #[serde(default = "default_tier")]
    tier: String,
    #[serde(default = "s3::defaults::path_style")]
    path_style: bool,
    #[serde(default = "s3::defaults::access_key_secret")]
    access_key_secret: String,
    #[serde(default = "s3::defaults::secret_key_secret")]
    secret_key_secret: String,
    session_token_secret: Option<String>,
}

fn default_days() -> u32 {
    5
}
fn default_tier() -> String {
    "Standard".into()
}

struct S3Restore;

impl Guest for S3Restore {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "s3-restore",
            "Restores an archived S3 object (RestoreObject) for some days at a retrieval tier",
            SCHEMA
        )
    }

    fn plan(config: String) -> Result<Plan, String> {
        let (config, bucket) = prepare(&config)?;
        let head = head(&bucket, &config)?;
        let object = format!("s3://{}/{}", config.bucket, config.key);
        if let Some(why) = nothing_to_do(&head) {
            return Ok(Plan {
                summary: format!("nothing to do: {object} ({}) {why}", head.storage_class),
                changes: Vec::new(),
                destructive: false,
            });
        }
        Ok(Plan {
            summary: format!(
                "restore {object} ({}, {}) for {} days, tier {}",
                head.storage_class, head.restore, config.days, config.tier
            ),
            changes: vec![format!(
                "RestoreObject {object}: Days={}, Tier={} (now {}, {})",
                config.days, config.tier, head.storage_class, head.restore
            )],
            destructive: false,
        })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        let (config, bucket) = prepare(&config)?;
        let object = format!("s3://{}/{}", config.bucket, config.key);
        let before = head(&bucket, &config)?;
        if let Some(why) = nothing_to_do(&before) {
            return Ok(Outcome::new(
                Status::Ok,
                format!("nothing to do: {object} {why}"),
                Vec::new(),
            ));
        }
        let status = bucket
            .restore(&config.key, config.days, &config.tier)
            .map_err(|err| format!("RestoreObject {object}: {err}"))?;
        let after = head(&bucket, &config)?;
        let line = format!(
            "RestoreObject {object} (Days={}, Tier={}): {} → {}",
            config.days, config.tier, before.restore, after.restore
        );
        Ok(Outcome::new(
            Status::Ok,
            format!(
                "restore {} for {object}: {}",
                if status == 202 { "started" } else { "accepted" },
                after.restore
            ),
            vec![line],
        ))
    }
}

/// Why no restore is needed, if none is.
fn nothing_to_do(head: &Head) -> Option<String> {
    if !head.is_archived() {
        return Some(format!(
            "is not archived (storage class {}): it can be read as is",
            head.storage_class
        ));
    }
    match &head.restore {
        Restore::InProgress => Some("already has a restore in progress".into()),
        Restore::Restored { expiry } => Some(format!("is already restored, readable until {expiry}")),
        Restore::NotRequested | Restore::Other(_) => None,
    }
}

fn prepare(json: &str) -> Result<(Config, Bucket), String> {
    let config: Config = config::parse(json)?;
    if config.key.is_empty() {
        return Err(config::field_error("key", "is empty: give the archived object's key"));
    }
    let credentials = s3::credentials_from_secrets(
        &config.access_key_secret,
        &config.secret_key_secret,
        config.session_token_secret.as_deref(),
    )?;
    let bucket = Bucket::new(
        &config.endpoint,
        &config.bucket,
        &config.region,
        config.path_style,
        credentials,
    )
    .map_err(|err| config::field_error("endpoint", err))?;
    Ok((config, bucket))
}

fn head(bucket: &Bucket, config: &Config) -> Result<Head, String> {
    let object = format!("s3://{}/{}", config.bucket, config.key);
    bucket
        .head(&config.key)
        .map_err(|err| format!("HeadObject {object}: {err}"))?
        .ok_or_else(|| format!("{object} does not exist (check `bucket` and `key`)"))
}

runbox_plugin_sdk::export_mitigation!(S3Restore);
