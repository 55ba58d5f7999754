//! Plugins fetched by `https://` URL into a content-addressed cache.
//!
//! A URL plugin is always pinned (`https://host/x.wasm@sha256:HEX`). The download is
//! hashed *before* it is stored, and stored under its digest,
//! `<cache dir>/plugins/sha256/<hex>.wasm`, so a cached file is found by what it must
//! contain, never by where it came from; every use hashes the cached file again. Once
//! cached, a plugin needs no network. Security notes:
//!
//! - only `https` (redirects too, at most 5), the system's trusted roots (or `SSL_CERT_FILE`);
//! - at most [`MAX_PLUGIN_BYTES`], a 10 s connect timeout, 30 s between reads, 5 min in all;
//! - the cache directory is private to the user (0700); entries are written to a unique
//!   temp file, fsync'd, then renamed, so no half-written file ever has a valid name.
//!
//! The publisher's signature, `<url>.sig`, is fetched alongside and kept as
//! `<hex>.wasm.sig` (see [`crate::trust`]); a missing one (404) is not an error here.

use crate::runtime::cache::{create_private_dir, digest as sha256_hex, write_atomically};
use reqwest::Url;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest plugin runbox downloads: 64 MiB.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// The largest signature file runbox downloads: 64 KiB.
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_REDIRECTS: usize = 5;

/// Whether a plugin spec is a URL (has a `scheme://`).
pub fn is_url(spec: &str) -> bool {
    spec.split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'))
}

/// Parses a plugin URL: `https` only, and no credentials in it.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|err| format!("not a valid URL: {err}"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            return Err(
                "plugins are fetched over https only. Over plain http anyone on the network path sees which plugin you run and can replace it (the sha256 pin would then only refuse it) or its signature file; serve it over https"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "`{other}://` is not a way to fetch plugins; use an https:// URL, or a local path"
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in a plugin URL would be written into runbooks and logs; serve the plugin without them".into(),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

/// `<url>.sig`: the signature file's URL (`.sig` added to the path, before any query).
pub fn signature_url(url: &Url) -> Url {
    let mut sig = url.clone();
    sig.set_path(&format!("{}.sig", url.path()));
    sig
}

/// The download cache: `<cache dir>/plugins/sha256/`.
#[derive(Debug, Clone)]
pub struct Downloads {
    dir: PathBuf,
}

impl Downloads {
    /// Downloads kept under `cache_dir` (the compile cache's directory).
    pub fn new(cache_dir: &Path) -> Downloads {
        Downloads {
            dir: cache_dir.join("plugins").join("sha256"),
        }
    }

    /// The cache file of the plugin with this digest.
    pub fn entry(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    /// The path of the verified plugin `url` pinned to `digest`: from the cache when a
    /// cached copy still hashes to `digest`, otherwise downloaded, verified, then stored.
    /// A cached copy that no longer matches is removed and fetched again.
    pub async fn fetch(&self, url: &Url, digest: &str) -> Result<PathBuf, String> {
        let entry = self.entry(digest);
        let mut tampered = None;
        match std::fs::read(&entry) {
            Ok(bytes) => {
                let actual = sha256_hex(&bytes);
                if actual == digest {
                    tracing::debug!(url = %url, path = %entry.display(), "plugin from the download cache");
                    return Ok(entry);
                }
                tracing::warn!(
                    path = %entry.display(), expected = digest, actual = %actual,
                    "cached plugin does not match its digest (altered or corrupted): removing it and fetching {url} again"
                );
                let _ = std::fs::remove_file(&entry);
                let _ = std::fs::remove_file(crate::trust::signature_path(&entry));
                tampered = Some(format!(
                    "the cached copy {} had sha256 {actual}, not the pinned {digest} (it was altered or corrupted), so it was removed; ",
                    entry.display()
                ));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(path = %entry.display(), error = %err, "cannot read the download cache"),
        }
        let result = self.download(url, digest, &entry).await;
        match (result, tampered) {
            (Ok(()), _) => Ok(entry),
            (Err(err), Some(tampered)) => Err(format!("{tampered}{err}")),
            (Err(err), None) => Err(err),
        }
    }

    async fn download(&self, url: &Url, digest: &str, entry: &Path) -> Result<(), String> {
        tracing::info!(url = %url, "fetching plugin");
        let bytes = get(url, MAX_PLUGIN_BYTES, "plugin")
            .await?
            .ok_or_else(|| format!("cannot fetch {url}: the server answered 404 Not Found"))?;
        let actual = sha256_hex(&bytes);
        if actual != digest {
            return Err(format!(
                "{url} has sha256 {actual}, but the runbook pins sha256 {digest}: refusing it, and nothing was stored. If the publisher released a new version on purpose, check it and pin its digest; otherwise the file was replaced"
            ));
        }
        create_private_dir(&self.dir).map_err(|err| format!("cannot create {}: {err}", self.dir.display()))?;
        write_atomically(entry, &bytes).map_err(|err| format!("cannot store {}: {err}", entry.display()))?;
        tracing::debug!(url = %url, path = %entry.display(), bytes = bytes.len(), "plugin verified and stored");
        if let Err(err) = self.fetch_signature(url, digest).await {
            tracing::warn!(url = %signature_url(url), error = %err, "could not fetch the plugin's signature");
        }
        Ok(())
    }

    /// Fetches `<url>.sig` into the cache beside the plugin with `digest`. Returns
    /// whether there was one (a 404 is `false`). The file is only stored; it is
    /// verified when it is used.
    pub async fn fetch_signature(&self, url: &Url, digest: &str) -> Result<bool, String> {
        let sig_url = signature_url(url);
        let Some(bytes) = get(&sig_url, MAX_SIGNATURE_BYTES, "signature").await? else {
            tracing::debug!(url = %sig_url, "no signature published");
            return Ok(false);
        };
        let path = crate::trust::signature_path(&self.entry(digest));
        create_private_dir(&self.dir).map_err(|err| format!("cannot create {}: {err}", self.dir.display()))?;
        write_atomically(&path, &bytes).map_err(|err| format!("cannot store {}: {err}", path.display()))?;
        Ok(true)
    }
}

fn client() -> Result<reqwest::Client, String> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.url().scheme() != "https" {
            let to = attempt.url().to_string();
            attempt.error(format!("redirected to {to}, which is not https; refusing to follow"))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .https_only(true)
        .redirect(redirects)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .user_agent(concat!("runbox/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("cannot set up HTTPS: {}", chain(&err)))
}

/// GETs `url`, at most `limit` bytes. `None` for a 404.
async fn get(url: &Url, limit: u64, what: &str) -> Result<Option<Vec<u8>>, String> {
    let fail = |reason: String| format!("cannot fetch {url}: {reason}");
    let mut response = client()?.get(url.clone()).send().await.map_err(|err| {
        let mut reason = chain(&err);
        if reason.contains("certificate") {
            reason.push_str(
                " (runbox trusts the system's CA certificates, or only those in SSL_CERT_FILE when it is set)",
            );
        }
        fail(reason)
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(fail(format!("the server answered {status}")));
    }
    let too_big = |size: String| {
        fail(format!(
            "the {what} is {size}, more than the {} runbox accepts",
            human(limit)
        ))
    };
    if let Some(length) = response.content_length()
        && length > limit
    {
        return Err(too_big(format!("{length} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| fail(chain(&err)))? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_big("larger".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// An error and its causes, `: `-separated, without reqwest's repeated URL.
fn chain(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_string()
    } else {
        err.to_string()
    };
    if let Some(url) = err.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_without_credentials() {
        let good = [
            "https://plugins.example.com/x.wasm",
            "https://127.0.0.1:8443/a/b.wasm?v=1",
        ];
        for text in good {
            assert!(parse_url(text).is_ok(), "{text}");
        }
        let bad = [
            ("http://plugins.example.com/x.wasm", "https only"),
            (
                "ftp://plugins.example.com/x.wasm",
                "`ftp://` is not a way to fetch plugins",
            ),
            ("file:///tmp/x.wasm", "`file://` is not a way"),
            ("https://user:pw@plugins.example.com/x.wasm", "credentials"),
            ("https://", "not a valid URL"),
        ];
        for (text, expected) in bad {
            let err = parse_url(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn the_signature_url_adds_sig_to_the_path() {
        let url = Url::parse("https://h/p/x.wasm?token=1").unwrap();
        assert_eq!(signature_url(&url).as_str(), "https://h/p/x.wasm.sig?token=1");
    }

    #[test]
    fn urls_are_told_from_names_and_paths() {
        assert!(is_url("https://h/x.wasm"));
        assert!(is_url("http://h/x.wasm"));
        assert!(is_url("git+ssh://h/x"));
        assert!(!is_url("redis-ping"));
        assert!(!is_url("./plugins/x.wasm"));
        assert!(!is_url("/abs/x.wasm"));
    }
}
