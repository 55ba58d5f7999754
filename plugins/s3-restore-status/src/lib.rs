//! `s3-restore-status` (check): the `x-amz-restore` progress of an archived S3 object
//! (HeadObject). A restored copy that is readable is OK (with its expiry), a restore in
//! progress WARNING, an archived object with no restore requested CRITICAL (the object
//! cannot be read and nothing is bringing it back), a missing object CRITICAL. An
//! object that is not archived at all is OK: it can be read as is.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::s3::{self, Bucket, Restore};
use runbox_plugin_sdk::{Info, Report, Status, config};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "s3-restore-status config",
  "type": "object",
  "properties": {
    "endpoint": {"type": "string", "description": "S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000 (also the step's grant)"},
    "region": {"type": "string", "default": "us-east-1"},
    "bucket": {"type": "string"},
    "key": {"type": "string", "description": "Object key"},
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
    #[serde(default = "s3::defaults::path_style")]
    path_style: bool,
    #[serde(default = "s3::defaults::access_key_secret")]
    access_key_secret: String,
    #[serde(default = "s3::defaults::secret_key_secret")]
    secret_key_secret: String,
    session_token_secret: Option<String>,
}

struct S3RestoreStatus;

impl Guest for S3RestoreStatus {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "s3-restore-status",
            "Checks the restore progress (x-amz-restore) of an archived S3 object",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        let config: Config = config::parse(&config)?;
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
        let object = format!("s3://{}/{}", config.bucket, config.key);
        let head = match bucket.head(&config.key) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(Report::critical(format!("{object} does not exist"))),
            Err(err) => return Ok(Report::critical(format!("HeadObject {object}: {err}"))),
        };
        let class = &head.storage_class;
        let report = match &head.restore {
            _ if !head.is_archived() => Report::new(
                Status::Ok,
                format!("{object} is not archived ({class}): readable as is"),
            ),
            Restore::Restored { expiry } => Report::new(
                Status::Ok,
                format!("{object} ({class}) is restored, readable until {expiry}"),
            )
            .output("expiry", expiry),
            Restore::InProgress => Report::new(Status::Warning, format!("{object} ({class}): restore in progress")),
            Restore::NotRequested => Report::critical(format!(
                "{object} is archived ({class}) and no restore was requested: it cannot be read"
            )),
            Restore::Other(header) => {
                Report::unknown(format!("{object} ({class}): unexpected x-amz-restore: {header}"))
            }
        };
        Ok(report
            .detail(format!("storage class {class}, {} B", head.size))
            .detail(format!("restore: {}", head.restore))
            .output("storage_class", class)
            .output("restore", &head.restore.to_string()))
    }
}

runbox_plugin_sdk::export_check!(S3RestoreStatus);
