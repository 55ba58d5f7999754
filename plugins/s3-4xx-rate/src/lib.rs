//! `s3-4xx-rate`: the client (4xx) and server (5xx) error rates of an S3 bucket over a
//! time window, from its server access logs: ListObjectsV2 over the log prefix
//! (paginated), GetObject of the log objects written during the window, and the
//! status of every request logged in it. Overall and for the worst operation.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::s3::{self, Bucket, S3Error};
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config, http, s3log, time};
use serde::Deserialize;
use std::collections::BTreeMap;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "s3-4xx-rate config",
  "type": "object",
  "properties": {
    "endpoint": {"type": "string", "description": "S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000"},
    "region": {"type": "string", "default": "us-east-1"},
    "bucket": {"type": "string", "description": "Bucket holding the access logs"},
    "prefix": {"type": "string", "default": "", "description": "Key prefix of the log objects (TargetPrefix)"},
    "window": {"type": "string", "default": "15m", "description": "How far back to look: 90s, 15m, 1h, 1d"},
    "path_style": {"type": "boolean", "default": true, "description": "Path-style addressing (S3-compatible servers); false for virtual-hosted AWS"},
    "access_key_secret": {"type": "string", "default": "aws_access_key_id"},
    "secret_key_secret": {"type": "string", "default": "aws_secret_access_key"},
    "session_token_secret": {"type": "string", "description": "Granted secret holding a session token (temporary credentials)"},
    "warn": {"type": "string", "description": "Nagios range for the 4xx rate in % that raises WARNING, e.g. \"5\""},
    "crit": {"type": "string", "description": "Nagios range for the 4xx rate in % that raises CRITICAL"},
    "warn_5xx": {"type": "string", "description": "Nagios range for the 5xx rate in %"},
    "crit_5xx": {"type": "string"},
    "min_requests": {"type": "integer", "minimum": 0, "default": 20, "description": "Below this many requests the check is OK \"too few requests\""},
    "page_size": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
    "max_objects": {"type": "integer", "minimum": 1, "default": 10000},
    "metrics_url": {"type": "string", "description": "Instead of access logs: a Prometheus endpoint exposing MinIO's minio_s3_requests_{total,4xx_errors_total,5xx_errors_total} (or minio_api_requests_*) counters; rates are since the counters started"}
  },
  "anyOf": [{"required": ["endpoint", "bucket"]}, {"required": ["metrics_url"]}],
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    endpoint: String,
    #[serde(default = "s3::defaults::region")]
    region: String,
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    prefix: String,
    #[serde(default = "default_window")]
    window: String,
    #[serde(default = "s3::defaults::path_style")]
    path_style: bool,
    #[serde(default = "s3::defaults::access_key_secret")]
    access_key_secret: String,
    #[serde(default = "s3::defaults::secret_key_secret")]
    secret_key_secret: String,
    session_token_secret: Option<String>,
    warn: Option<String>,
    crit: Option<String>,
    warn_5xx: Option<String>,
    crit_5xx: Option<String>,
    #[serde(default = "default_min")]
    min_requests: u64,
    #[serde(default = "default_page")]
    page_size: u32,
    #[serde(default = "default_max_objects")]
    max_objects: usize,
    metrics_url: Option<String>,
}

fn default_window() -> String {
    "15m".into()
}
fn default_min() -> u64 {
    20
}
fn default_page() -> u32 {
    1000
}
fn default_max_objects() -> usize {
    10_000
}

#[derive(Default)]
struct Counts {
    total: u64,
    client: u64,
    server: u64,
}

impl Counts {
    fn add(&mut self, status: u16) {
        self.total += 1;
        self.client += u64::from((400..500).contains(&status));
        self.server += u64::from(status >= 500);
    }

    fn rate(part: u64, total: u64) -> f64 {
        if total == 0 {
            0.0
        } else {
            part as f64 * 100.0 / total as f64
        }
    }
}

struct S3ErrorRate;

impl Guest for S3ErrorRate {
    fn info() -> Info {
        runbox_plugin_sdk::info!(
            "s3-4xx-rate",
            "S3 4xx/5xx error rates over a window, from the bucket's server access logs",
            SCHEMA
        )
    }

    fn run(config: String) -> Result<Report, String> {
        Ok(check(&config).unwrap_or_else(Report::unknown))
    }
}

fn check(json: &str) -> Result<Report, String> {
    let config: Config = config::parse(json)?;
    let window = time::parse_duration_secs(&config.window)
        .ok_or_else(|| config::field_error("window", format!("\"{}\" is not a duration like 15m", config.window)))?;
    let rate_4xx = Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?;
    let rate_5xx = Thresholds::parse(config.warn_5xx.as_deref(), config.crit_5xx.as_deref()).map_err(|err| {
        err.replace("field `warn`", "field `warn_5xx`")
            .replace("field `crit`", "field `crit_5xx`")
    })?;
    if let Some(url) = &config.metrics_url {
        return Ok(from_metrics(&config, url, &rate_4xx, &rate_5xx));
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

    let now = time::now();
    let since = now - window;
    let (objects, pages) = match bucket.list(&config.prefix, config.page_size, config.max_objects) {
        Ok(listing) => listing,
        Err(err) => return Ok(failed(&config, err)),
    };
    // Log objects are written after the requests they record: older ones hold none of the window.
    let recent: Vec<_> = objects.iter().filter(|o| o.last_modified >= since).collect();
    let mut overall = Counts::default();
    let mut by_operation: BTreeMap<String, Counts> = BTreeMap::new();
    let mut unparsable = 0u64;
    for object in &recent {
        let bytes = match bucket.get(&object.key, 64 << 20) {
            Ok(bytes) => bytes,
            Err(err) => return Ok(failed(&config, err)),
        };
        for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.trim().is_empty()) {
            match s3log::parse(line) {
                Ok(record) if record.time >= since && record.time <= now => {
                    if let Some(status) = record.status {
                        overall.add(status);
                        by_operation.entry(record.operation).or_default().add(status);
                    }
                }
                Ok(_) => {}
                Err(_) => unparsable += 1,
            }
        }
    }
    let r4 = Counts::rate(overall.client, overall.total);
    let r5 = Counts::rate(overall.server, overall.total);
    let mut report = Report::new(Status::Ok, String::new())
        .metric("requests", overall.total as f64, "c")
        .metric("errors_4xx", overall.client as f64, "c")
        .metric("errors_5xx", overall.server as f64, "c");
    let worst = by_operation.iter().max_by(|a, b| {
        Counts::rate(a.1.client + a.1.server, a.1.total)
            .total_cmp(&Counts::rate(b.1.client + b.1.server, b.1.total))
            .then(b.0.cmp(a.0))
    });
    let mut ranked: Vec<_> = by_operation.iter().collect();
    ranked.sort_by(|a, b| {
        (b.1.client + b.1.server)
            .cmp(&(a.1.client + a.1.server))
            .then(a.0.cmp(b.0))
    });
    for (operation, counts) in ranked.iter().take(5) {
        report = report.detail(format!(
            "{operation}: {} requests, 4xx {:.1}%, 5xx {:.1}%",
            counts.total,
            Counts::rate(counts.client, counts.total),
            Counts::rate(counts.server, counts.total)
        ));
    }
    report = report.detail(format!(
        "{} log objects in the window ({} listed, {pages} pages), {unparsable} unparsable lines",
        recent.len(),
        objects.len()
    ));
    let span = &config.window;
    if overall.total < config.min_requests {
        report.summary = format!(
            "too few requests in the last {span} to judge ({} < {})",
            overall.total, config.min_requests
        );
        return Ok(report.metric("rate_4xx", r4, "%").metric("rate_5xx", r5, "%"));
    }
    report = report
        .judged_metric("rate_4xx", r4, "%", &rate_4xx)
        .judged_metric("rate_5xx", r5, "%", &rate_5xx);
    let mut summary = format!(
        "{} requests in the last {span}: 4xx {r4:.1}%, 5xx {r5:.1}%",
        overall.total
    );
    if let Some((operation, counts)) = worst {
        let worst_4xx = Counts::rate(counts.client, counts.total);
        report = report.metric("worst_operation_rate_4xx", worst_4xx, "%");
        summary.push_str(&format!(
            " (worst: {operation} 4xx {worst_4xx:.1}%, 5xx {:.1}%)",
            Counts::rate(counts.server, counts.total)
        ));
    }
    report.summary = summary;
    Ok(report)
}

/// Rates from MinIO's Prometheus counters (cumulative: since the counters started).
fn from_metrics(config: &Config, url: &str, rate_4xx: &Thresholds, rate_5xx: &Thresholds) -> Report {
    let response = match http::send("GET", url, &[], None, 16 << 20) {
        Ok(response) if response.status == 200 => response,
        Ok(response) => return Report::critical(format!("GET {url} → {}", response.status)),
        Err(failure) => return Report::critical(format!("GET {url}: {failure}")),
    };
    let text = response.text();
    // MinIO v2 cluster metrics (label `api`), else the v3 API family (label `name`).
    let family = ["minio_s3_requests", "minio_api_requests"]
        .into_iter()
        .find(|f| text.lines().any(|l| l.starts_with(&format!("{f}_total"))));
    let Some(family) = family else {
        return Report::unknown(format!(
            "{url} exposes neither minio_s3_requests_total nor minio_api_requests_total"
        ));
    };
    let mut by_api: BTreeMap<String, Counts> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let api = ["api=\"", "name=\""]
            .iter()
            .find_map(|key| labels.split(key).nth(1)?.split('"').next())
            .unwrap_or("all")
            .to_string();
        let counts = by_api.entry(api).or_default();
        match name.strip_prefix(family) {
            Some("_total") => counts.total += value as u64,
            Some("_4xx_errors_total") => counts.client += value as u64,
            Some("_5xx_errors_total") => counts.server += value as u64,
            _ => {}
        }
    }
    let mut overall = Counts::default();
    for counts in by_api.values() {
        overall.total += counts.total;
        overall.client += counts.client;
        overall.server += counts.server;
    }
    let r4 = Counts::rate(overall.client, overall.total);
    let r5 = Counts::rate(overall.server, overall.total);
    let mut report = Report::new(Status::Ok, String::new())
        .metric("requests", overall.total as f64, "c")
        .metric("errors_4xx", overall.client as f64, "c")
        .metric("errors_5xx", overall.server as f64, "c");
    if overall.total < config.min_requests {
        report.summary = format!(
            "too few requests counted to judge ({} < {})",
            overall.total, config.min_requests
        );
        return report.metric("rate_4xx", r4, "%").metric("rate_5xx", r5, "%");
    }
    report = report
        .judged_metric("rate_4xx", r4, "%", rate_4xx)
        .judged_metric("rate_5xx", r5, "%", rate_5xx);
    let worst = by_api.iter().filter(|(_, c)| c.total > 0).max_by(|a, b| {
        Counts::rate(a.1.client + a.1.server, a.1.total)
            .total_cmp(&Counts::rate(b.1.client + b.1.server, b.1.total))
            .then(b.0.cmp(a.0))
    });
    report.summary = format!(
        "{} requests since the counters started ({family}): 4xx {r4:.1}%, 5xx {r5:.1}%",
        overall.total
    );
    if let Some((api, counts)) = worst {
        report.summary.push_str(&format!(
            " (worst: {api} 4xx {:.1}%, 5xx {:.1}%)",
            Counts::rate(counts.client, counts.total),
            Counts::rate(counts.server, counts.total)
        ));
    }
    report
}

fn failed(config: &Config, err: S3Error) -> Report {
    let place = format!("{} bucket {}", config.endpoint, config.bucket);
    match &err {
        S3Error::Status { code, .. } if code == "SignatureDoesNotMatch" => Report::critical(format!(
            "{place}: signature rejected by S3 — check the secret key ({err})"
        )),
        S3Error::Status { code, .. } if code == "InvalidAccessKeyId" => {
            Report::critical(format!("{place}: unknown access key ({err})"))
        }
        S3Error::Status { code, .. } if code == "AccessDenied" => {
            Report::critical(format!("{place}: access denied ({err})"))
        }
        S3Error::Status { code, .. } if code == "NoSuchBucket" => {
            Report::unknown(format!("config field `bucket`: {err}"))
        }
        _ => Report::critical(format!("{place}: {err}")),
    }
}

runbox_plugin_sdk::export_check!(S3ErrorRate);
