//! `s3-probe`: is a bucket usable? HeadBucket always; then, as configured, a canary
//! object written, read back, compared and deleted under a granted prefix
//! (`canary_prefix`), HeadObject of named keys (`keys`), and the bytes and objects
//! under a prefix (`prefix`, ListObjectsV2 page by page) judged with byte thresholds.
//! Every failure names the S3 operation and S3's error code.
//!
//! The canary is the only write: it needs `PUT,DELETE` on the step's grant (a check's
//! grant allows GET, HEAD and OPTIONS otherwise), and its key is unique per run
//! (`runbox-canary-<time>-<random>`), so it never overwrites an object of the bucket.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::report::severity;
use runbox_plugin_sdk::s3::{self, Bucket, S3Error};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config, time};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "s3-probe config",
  "type": "object",
  "properties": {
    "endpoint": {"type": "string", "description": "S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000"},
    "region": {"type": "string", "default": "us-east-1"},
    "bucket": {"type": "string"},
    "path_style": {"type": "boolean", "default": true, "description": "Path-style addressing (S3-compatible servers); false for virtual-hosted AWS"},
    "access_key_secret": {"type": "string", "default": "aws_access_key_id"},
    "secret_key_secret": {"type": "string", "default": "aws_secret_access_key"},
    "session_token_secret": {"type": "string", "description": "Granted secret holding a session token (temporary credentials)"},
    "canary_prefix": {"type": "string", "minLength": 1, "description": "Write, read back and delete a small object under this prefix (e.g. \"runbox-canary/\"): PutObject, GetObject (the body must match), DeleteObject, then HeadObject to see it gone. The step's grant must list the methods: `PUT,DELETE https://s3.example`"},
    "keys": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 100, "description": "Keys that must exist (HeadObject each); any missing is CRITICAL, listed"},
    "prefix": {"type": "string", "description": "Sum the sizes of the objects under this prefix (\"\": the whole bucket), ListObjectsV2 page by page: metrics `bytes` and `objects`, outputs of both"},
    "warn": {"type": "string", "description": "Nagios range for the bytes under `prefix` that raises WARNING, e.g. \"1000000000\" (over 1 GB)"},
    "crit": {"type": "string", "description": "Nagios range for the bytes under `prefix` that raises CRITICAL"},
    "objects_warn": {"type": "string", "description": "Nagios range for the number of objects under `prefix` that raises WARNING, e.g. \"28:32\" (a nightly backup kept 30 days)"},
    "objects_crit": {"type": "string", "description": "Nagios range for the number of objects under `prefix` that raises CRITICAL"},
    "newest_age_warn": {"type": "string", "description": "Nagios range for the age in seconds of the newest object under `prefix` that raises WARNING, e.g. \"93600\" (no new backup for 26 h); no object at all is CRITICAL when an age range is set"},
    "newest_age_crit": {"type": "string", "description": "Nagios range for the age in seconds of the newest object under `prefix` that raises CRITICAL"},
    "page_size": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000, "description": "Keys per ListObjectsV2 request"},
    "max_objects": {"type": "integer", "minimum": 1, "default": 100000, "description": "Stop listing after this many objects (the total is then a lower bound, said in the details)"}
  },
  "required": ["endpoint", "bucket"],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    endpoint: String,
    #[serde(default = "s3::defaults::region")]
    region: String,
    bucket: String,
    #[serde(default = "s3::defaults::path_style")]
    path_style: bool,
    #[serde(default = "s3::defaults::access_key_secret")]
    access_key_secret: String,
    #[serde(default = "s3::defaults::secret_key_secret")]
    secret_key_secret: String,
    session_token_secret: Option<String>,
    canary_prefix: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    prefix: Option<String>,
    warn: Option<String>,
    crit: Option<String>,
    objects_warn: Option<String>,
    objects_crit: Option<String>,
    newest_age_warn: Option<String>,
    newest_age_crit: Option<String>,
    #[serde(default = "default_page_size")]
    page_size: u32,
    #[serde(default = "default_max_objects")]
    max_objects: usize,
}

fn default_page_size() -> u32 {
    1000
}

fn default_max_objects() -> usize {
    100_000
}

struct S3Probe;

impl Guest for S3Probe {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "s3-probe",
            "Probes an S3 bucket: HeadBucket, canary put/get/delete, named keys, bytes under a prefix",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        let config: Config = config::parse(&config)?;
        let thresholds = Judged {
            bytes: Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?,
            objects: Thresholds::parse(config.objects_warn.as_deref(), config.objects_crit.as_deref())
                .map_err(|err| config::field_error("objects_warn", err))?,
            newest_age: Thresholds::parse(config.newest_age_warn.as_deref(), config.newest_age_crit.as_deref())
                .map_err(|err| config::field_error("newest_age_warn", err))?,
        };
        if thresholds.any() && config.prefix.is_none() {
            return Err(config::field_error(
                "warn",
                "thresholds judge what is under `prefix`: set `prefix` (\"\" for the whole bucket)",
            ));
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
        Ok(probe(&config, &bucket, &thresholds))
    }
}

/// The thresholds on what is under `prefix`.
struct Judged {
    bytes: Thresholds,
    objects: Thresholds,
    newest_age: Thresholds,
}

impl Judged {
    fn any(&self) -> bool {
        [&self.bytes, &self.objects, &self.newest_age]
            .iter()
            .any(|t| **t != Thresholds::default())
    }
}

/// What the probes found: parts of the summary, details, and the report so far.
struct Findings {
    failures: Vec<String>,
    fine: Vec<String>,
    report: Report,
}

impl Findings {
    fn fail(&mut self, status: Status, text: String) {
        if severity(status) > severity(self.report.status) {
            self.report.status = status;
        }
        self.failures.push(text);
    }
}

fn probe(config: &Config, bucket: &Bucket, thresholds: &Judged) -> Report {
    let name = &config.bucket;
    if let Err(err) = bucket.head_bucket() {
        return Report::new(failure_status(&err), format!("HeadBucket {name} failed: {err}"));
    }
    let mut found = Findings {
        failures: Vec::new(),
        fine: vec![format!("bucket {name} reachable")],
        report: Report::new(Status::Ok, ""),
    };
    if let Some(prefix) = &config.canary_prefix {
        canary(bucket, prefix, &mut found);
    }
    if !config.keys.is_empty() {
        keys(bucket, &config.keys, &mut found);
    }
    if let Some(prefix) = &config.prefix {
        size(bucket, prefix, config, thresholds, &mut found);
    }
    let mut report = found.report;
    report.summary = found
        .failures
        .into_iter()
        .chain(found.fine)
        .collect::<Vec<_>>()
        .join("; ");
    report
}

/// PutObject, GetObject (compared), DeleteObject, HeadObject (gone). The delete is
/// tried whenever the put may have written something.
fn canary(bucket: &Bucket, prefix: &str, found: &mut Findings) {
    let key = format!(
        "{prefix}runbox-canary-{}-{:016x}",
        time::now(),
        wasi::random::random::get_random_u64()
    );
    let body = format!("runbox s3-probe canary {key}\n").into_bytes();
    let fail = |found: &mut Findings, operation: &str, err: &S3Error| {
        found.fail(Status::Critical, format!("canary {operation} {key} failed: {err}"));
    };
    if let Err(err) = bucket.put(&key, &body) {
        fail(found, "PutObject", &err);
        // A put that timed out may still have landed.
        let _ = bucket.delete_object(&key);
        return;
    }
    match bucket.get(&key, body.len() + 1024) {
        Ok(read) if read == body => {}
        Ok(read) => found.fail(
            Status::Critical,
            format!(
                "canary GetObject {key} read back {} bytes that differ from the {} written",
                read.len(),
                body.len()
            ),
        ),
        Err(err) => fail(found, "GetObject", &err),
    }
    if let Err(err) = bucket.delete_object(&key) {
        fail(found, "DeleteObject", &err);
        return;
    }
    match bucket.head_object(&key) {
        Ok(None) => {
            if !found.failures.iter().any(|f| f.starts_with("canary")) {
                found.fine.push(format!("canary put/get/delete under {prefix} OK"));
            }
            found
                .report
                .details
                .push(format!("canary {key}: written, read back, deleted"));
        }
        Ok(Some(_)) => found.fail(
            Status::Critical,
            format!("canary DeleteObject {key} answered OK but the object is still there"),
        ),
        Err(err) => fail(found, "HeadObject (after delete)", &err),
    }
}

fn keys(bucket: &Bucket, keys: &[String], found: &mut Findings) {
    let mut missing = Vec::new();
    for key in keys {
        match bucket.head_object(key) {
            Ok(Some(size)) => found.report.details.push(format!("{key}: {size} B")),
            Ok(None) => missing.push(key.clone()),
            Err(err) => found.fail(failure_status(&err), format!("HeadObject {key} failed: {err}")),
        }
    }
    if missing.is_empty() {
        found.fine.push(format!("{} keys present", keys.len()));
    } else {
        found.fail(
            Status::Critical,
            format!(
                "{} of {} keys missing: {}",
                missing.len(),
                keys.len(),
                missing.join(", ")
            ),
        );
    }
    let report = std::mem::replace(&mut found.report, Report::new(Status::Ok, ""));
    found.report = report.output("missing_keys", &missing);
}

fn size(bucket: &Bucket, prefix: &str, config: &Config, thresholds: &Judged, found: &mut Findings) {
    let max_objects = config.max_objects;
    let (objects, pages) = match bucket.list(prefix, config.page_size, max_objects) {
        Ok(listed) => listed,
        Err(err) => {
            found.fail(
                failure_status(&err),
                format!("ListObjectsV2 under \"{prefix}\" failed: {err}"),
            );
            return;
        }
    };
    let bytes: u64 = objects.iter().map(|o| o.size).sum();
    let count = objects.len();
    let capped = count >= max_objects;
    let report = std::mem::replace(&mut found.report, Report::new(Status::Ok, ""));
    let newest = objects.iter().map(|o| o.last_modified).max();
    let newest_age = newest.map(|at| (time::now() - at).max(0));
    let mut report = report
        .judged_metric("bytes", bytes as f64, "B", &thresholds.bytes)
        .judged_metric("objects", count as f64, "", &thresholds.objects)
        .output("bytes", &bytes)
        .output("objects", &count)
        .detail(format!("{count} objects, {bytes} B under \"{prefix}\" ({pages} pages)"));
    if capped {
        report = report.detail(format!(
            "listing stopped at max_objects ({max_objects}): the totals are lower bounds"
        ));
    }
    let text = format!(
        "{}{} in {count} objects under \"{prefix}\"",
        if capped { "at least " } else { "" },
        human_bytes(bytes)
    );
    if let Some(age) = newest_age {
        report = report
            .judged_metric("newest_age_s", age as f64, "s", &thresholds.newest_age)
            .output("newest_age_s", &age);
    }
    found.report = report;
    let mut fine = true;
    for (what, value, limits) in [
        ("bytes", bytes as f64, &thresholds.bytes),
        ("objects", count as f64, &thresholds.objects),
    ] {
        let judged = limits.status(value);
        if judged != Status::Ok {
            fine = false;
            let limit = match judged {
                Status::Critical => limits.crit.as_ref(),
                _ => limits.warn.as_ref(),
            };
            found.failures.push(format!(
                "{text}: {what} outside {} ({})",
                limit.map_or(String::new(), |range| range.to_string()),
                if judged == Status::Critical { "crit" } else { "warn" }
            ));
        }
    }
    if thresholds.newest_age != Thresholds::default() {
        match newest_age {
            None => {
                fine = false;
                found.fail(
                    Status::Critical,
                    format!("no object under \"{prefix}\": nothing to judge the age of"),
                );
            }
            Some(age) => {
                let judged = thresholds.newest_age.status(age as f64);
                if judged != Status::Ok {
                    fine = false;
                    found.failures.push(format!(
                        "the newest object under \"{prefix}\" is {age} s old ({})",
                        if judged == Status::Critical { "crit" } else { "warn" }
                    ));
                }
            }
        }
    }
    if fine {
        found.fine.push(text);
    }
}

/// A refusal (credentials, permissions, no such bucket) is CRITICAL; a request the
/// sandbox denied is UNKNOWN (the step lacks a grant).
fn failure_status(err: &S3Error) -> Status {
    match err {
        S3Error::Http(runbox_plugin_sdk::http::Failure::Denied) => Status::Unknown,
        _ => Status::Critical,
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b < 10_000 => format!("{b} B"),
        b if b < 10_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        b if b < 1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b => format!("{:.2} GB", b as f64 / 1e9),
    }
}

runbox_plugin_sdk::export_check!(S3Probe);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(12_345), "12.3 kB");
        assert_eq!(human_bytes(1_500_000_000), "1.50 GB");
        assert_eq!(human_bytes(25_000_000), "25.0 MB");
        assert_eq!(human_bytes(12_000_000_000), "12.00 GB");
    }
}
