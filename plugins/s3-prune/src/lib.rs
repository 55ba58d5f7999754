//! `s3-prune` (mitigation): delete the objects under a prefix that are older than an
//! age, such as a temporary-uploads bucket's leftovers. The plan lists how many, how
//! many bytes, and the first few keys. Apply lists again (never trusting a stale plan),
//! deletes in DeleteObjects batches, and reports what was deleted and what failed. An
//! empty prefix (the whole bucket) is refused unless `allow_empty_prefix` is set.

use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::s3::{self, Bucket, Object};
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config, time};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "s3-prune config",
  "type": "object",
  "properties": {
    "endpoint": {"type": "string"},
    "region": {"type": "string", "default": "us-east-1"},
    "bucket": {"type": "string"},
    "prefix": {"type": "string", "description": "Only keys under this prefix; \"\" (the whole bucket) needs allow_empty_prefix"},
    "older_than": {"type": "string", "description": "Age beyond which objects are deleted: 90s, 15m, 24h, 7d"},
    "allow_empty_prefix": {"type": "boolean", "default": false},
    "path_style": {"type": "boolean", "default": true},
    "access_key_secret": {"type": "string", "default": "aws_access_key_id"},
    "secret_key_secret": {"type": "string", "default": "aws_secret_access_key"},
    "min_bytes": {"type": "integer", "minimum": 0, "default": 0, "description": "Delete nothing unless the old objects total more than this many bytes (a backlog threshold, e.g. 1000000000 for seed 001's \"trigger it manually if backlog > 1 GB\")"},
    "max_objects": {"type": "integer", "minimum": 1, "default": 100000},
    "batch_size": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}
  },
  "required": ["endpoint", "bucket", "prefix", "older_than"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    endpoint: String,
    #[serde(default = "s3::defaults::region")]
    region: String,
    bucket: String,
    prefix: String,
    older_than: String,
    #[serde(default)]
    allow_empty_prefix: bool,
    #[serde(default = "s3::defaults::path_style")]
    path_style: bool,
    #[serde(default = "s3::defaults::access_key_secret")]
    access_key_secret: String,
    #[serde(default = "s3::defaults::secret_key_secret")]
    secret_key_secret: String,
    #[serde(default)]
    min_bytes: u64,
    #[serde(default = "default_max")]
    max_objects: usize,
    #[serde(default = "default_batch")]
    batch_size: usize,
}

fn default_max() -> usize {
    100_000
}
fn default_batch() -> usize {
    1000
}

struct S3Prune;

impl Guest for S3Prune {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "s3-prune",
            "Deletes objects older than an age under a prefix (DeleteObjects batches)",
            SCHEMA
        )
    }

    fn plan(config: String) -> Result<Plan, String> {
        let (config, bucket, cutoff) = prepare(&config)?;
        let old = old_objects(&bucket, &config, cutoff)?;
        let bytes: u64 = old.iter().map(|o| o.size).sum();
        if bytes <= config.min_bytes {
            return Ok(Plan {
                summary: format!(
                    "nothing to delete: {} objects ({bytes} B) older than {} under \"{}\" in bucket {}, not over the {} B threshold",
                    old.len(),
                    config.older_than,
                    config.prefix,
                    config.bucket,
                    config.min_bytes
                ),
                changes: Vec::new(),
                destructive: false,
            });
        }
        let now = time::now();
        let mut changes: Vec<String> = old
            .iter()
            .take(5)
            .map(|o| format!("delete {} ({} B, {} old)", o.key, o.size, age(now - o.last_modified)))
            .collect();
        if old.len() > 5 {
            changes.push(format!("… and {} more objects", old.len() - 5));
        }
        Ok(Plan {
            summary: format!(
                "delete {} objects ({bytes} B) older than {} under \"{}\" in bucket {}",
                old.len(),
                config.older_than,
                config.prefix,
                config.bucket
            ),
            changes,
            destructive: true,
        })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        let (config, bucket, cutoff) = prepare(&config)?;
        // List again: delete what is old now, never what a stale plan named.
        let old = old_objects(&bucket, &config, cutoff)?;
        let total: u64 = old.iter().map(|o| o.size).sum();
        if total <= config.min_bytes {
            let summary = format!(
                "nothing deleted: the old objects total {total} B, not over {} B",
                config.min_bytes
            );
            return Ok(Outcome::new(Status::Ok, summary, Vec::new()));
        }
        let mut deleted = 0usize;
        let mut bytes = 0u64;
        let mut failures = Vec::new();
        for batch in old.chunks(config.batch_size) {
            let keys: Vec<String> = batch.iter().map(|o| o.key.clone()).collect();
            match bucket.delete(&keys) {
                Ok(errors) => {
                    for object in batch {
                        if !errors.iter().any(|(key, _)| *key == object.key) {
                            deleted += 1;
                            bytes += object.size;
                        }
                    }
                    failures.extend(errors.into_iter().map(|(key, why)| format!("{key}: {why}")));
                }
                Err(err) => failures.push(format!("batch of {}: {err}", keys.len())),
            }
        }
        let status = if failures.is_empty() {
            Status::Ok
        } else if deleted > 0 {
            Status::Warning
        } else {
            Status::Critical
        };
        let mut changes = vec![format!(
            "deleted {deleted} objects ({bytes} B) from bucket {}",
            config.bucket
        )];
        changes.extend(failures.iter().take(20).map(|f| format!("failed: {f}")));
        Ok(Outcome {
            outputs: Vec::new(),
            status,
            summary: format!(
                "deleted {deleted} of {} objects ({bytes} B){}",
                old.len(),
                if failures.is_empty() {
                    String::new()
                } else {
                    format!(", {} failed", failures.len())
                }
            ),
            changes,
        })
    }
}

fn prepare(json: &str) -> Result<(Config, Bucket, i64), String> {
    let config: Config = config::parse(json)?;
    if config.prefix.is_empty() && !config.allow_empty_prefix {
        return Err(config::field_error(
            "prefix",
            "refusing to prune the whole bucket: give a prefix, or set allow_empty_prefix: true",
        ));
    }
    let age = time::parse_duration_secs(&config.older_than).ok_or_else(|| {
        config::field_error(
            "older_than",
            format!("\"{}\" is not a duration like 24h", config.older_than),
        )
    })?;
    let credentials = s3::credentials_from_secrets(&config.access_key_secret, &config.secret_key_secret, None)?;
    let bucket = Bucket::new(
        &config.endpoint,
        &config.bucket,
        &config.region,
        config.path_style,
        credentials,
    )
    .map_err(|err| config::field_error("endpoint", err))?;
    Ok((config, bucket, time::now() - age))
}

fn old_objects(bucket: &Bucket, config: &Config, cutoff: i64) -> Result<Vec<Object>, String> {
    let (objects, _) = bucket
        .list(&config.prefix, 1000, config.max_objects)
        .map_err(|err| format!("listing {}: {err}", config.bucket))?;
    Ok(objects.into_iter().filter(|o| o.last_modified < cutoff).collect())
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

runbox_plugin_sdk::export_mitigation!(S3Prune);
