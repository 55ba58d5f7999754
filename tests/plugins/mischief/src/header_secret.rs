//! `header-secret`: attacks the secrets the host puts in HTTP request headers
//! (`${{ secrets.NAME }}`), which the plugin must never read. It asks `host.secret` for
//! `secret`; sends `header: value` to `url`; puts `inline` (a placeholder) in a URL's
//! path and query and in a POST body; builds placeholders for the names in `compose` at
//! run time (so they are in no config) and sends each in a header; and sends
//! `header: value` to each URL in `also`. One detail line per attempt, saying what came
//! back (responses' bodies included, so a server that echoes a header shows it).

use runbox_plugin_sdk::http::{self, Failure};
use runbox_plugin_sdk::{Report, Status, host};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct HeaderSecret {
    url: String,
    header: String,
    value: String,
    secret: String,
    inline: String,
    compose: Vec<String>,
    also: Vec<String>,
}

pub fn run(raw: &str) -> Result<Report, String> {
    let config: HeaderSecret = serde_json::from_str(raw).map_err(|err| err.to_string())?;
    let mut lines = Vec::new();
    if !config.secret.is_empty() {
        lines.push(match host::secret(&config.secret) {
            Some(value) => format!("secret: {value}"),
            None => "secret: none".to_string(),
        });
    }
    let header = vec![(config.header.clone(), config.value.clone())];
    if !config.header.is_empty() {
        lines.push(format!("header: {}", get(&format!("{}/header", config.url), &header)));
    }
    if !config.inline.is_empty() {
        let inline = &config.inline;
        let url = format!("{}/inline/{inline}?q={inline}", config.url);
        lines.push(format!("url: {}", get(&url, &[])));
        let body = format!("body {inline}");
        let sent = http::send(
            "POST",
            &format!("{}/body", config.url),
            &[("content-type".to_string(), "text/plain".to_string())],
            Some(body.as_bytes()),
            1 << 16,
        );
        lines.push(format!("body: {}", said(sent)));
    }
    for name in &config.compose {
        let placeholder = ["${{ secrets.", name, " }}"].concat();
        let headers = [("x-composed".to_string(), placeholder)];
        lines.push(format!(
            "composed {name}: {}",
            get(&format!("{}/composed", config.url), &headers)
        ));
    }
    for url in &config.also {
        lines.push(format!("also {url}: {}", get(url, &header)));
    }
    let summary = lines.join("; ");
    let mut report = Report::new(Status::Ok, summary);
    for line in lines {
        report = report.detail(line);
    }
    Ok(report)
}

fn get(url: &str, headers: &[(String, String)]) -> String {
    said(http::send("GET", url, headers, None, 1 << 16))
}

fn said(result: Result<http::Response, Failure>) -> String {
    match result {
        Ok(response) => format!("HTTP {} {}", response.status, response.text()),
        Err(Failure::Denied) => "denied".to_string(),
        Err(failure) => format!("failed: {failure}"),
    }
}
