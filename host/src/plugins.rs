//! Finding plugins: by path, by name in the plugin directories, or by `https://` URL;
//! pins and signatures.
//!
//! A plugin reference (`uses:` in a runbook, the argument of `runbox check`) is a name,
//! a path (contains `/` or ends in `.wasm`) or an `https://` URL, optionally followed by
//! `@sha256:HEX`, the digest the file must have. A URL must carry one (see
//! [`crate::remote`]).
//!
//! Search order for a name: each `--plugin-dir`, then each directory of
//! `RUNBOX_PLUGIN_PATH` (colon-separated), then plugins installed beside the binary
//! (`PREFIX/lib/runbox/plugins` for `PREFIX/bin/runbox`), then the user's
//! (`$RUNBOX_DATA_DIR`, else `$XDG_DATA_HOME/runbox/plugins` or
//! `~/.local/share/runbox/plugins`), then the project's own built plugins
//! (`target/wasm32-wasip2/plugin` beside the running binary, and in the source checkout
//! the binary was built from). `redis-ping` matches `redis-ping.wasm` and
//! `redis_ping.wasm` (cargo's file name for the crate).

use crate::remote::{self, Downloads};
use crate::runtime::{Plugin, Runtime};
use crate::trust::{self, TrustedKeys};
use reqwest::Url;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A name, looked up in the plugin path.
    Name(String),
    /// A file.
    Path(PathBuf),
    /// An `https://` URL, fetched into the download cache.
    Url(Url),
}

/// A parsed plugin reference: where it comes from and the digest it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRef {
    /// Name, path or URL.
    pub source: Source,
    /// The pinned SHA-256 (lower-case hex), if any.
    pub pinned: Option<String>,
}

impl PluginRef {
    /// Parses `NAME | PATH | URL` with an optional `@sha256:HEX`. A relative path is taken
    /// relative to `base` (a runbook's directory) when given. A URL must be https and
    /// pinned.
    pub fn parse(text: &str, base: Option<&Path>) -> Result<PluginRef, String> {
        let (spec, pinned) = match text.rsplit_once("@sha256:") {
            Some((spec, digest)) => {
                if !trust::is_sha256_hex(digest) {
                    return Err("the pinned digest must be 64 hex digits (`@sha256:HEX`)".into());
                }
                (spec, Some(digest.to_ascii_lowercase()))
            }
            None => (text, None),
        };
        if spec.is_empty() {
            return Err("nothing before `@sha256:`: name the plugin, its path or its https:// URL".into());
        }
        let source = if remote::is_url(spec) {
            let url = remote::parse_url(spec)?;
            if pinned.is_none() {
                return Err(
                    "a plugin fetched by URL must be pinned to its content: append `@sha256:` and the file's SHA-256 (`sha256sum FILE`, or the `sha256:` line of `runbox plugins verify FILE`)"
                        .into(),
                );
            }
            Source::Url(url)
        } else if spec.contains('/') || spec.ends_with(".wasm") {
            let path = Path::new(spec);
            match base {
                Some(base) if path.is_relative() => Source::Path(base.join(path)),
                _ => Source::Path(path.to_path_buf()),
            }
        } else {
            Source::Name(spec.to_string())
        };
        Ok(PluginRef { source, pinned })
    }
}

/// The ordered list of directories plugins are looked up in, where downloads go, and
/// whether plugins must be signed.
#[derive(Debug, Clone)]
pub struct PluginPath {
    dirs: Vec<PathBuf>,
    downloads: Option<Downloads>,
    require_signed: Option<Arc<TrustedKeys>>,
}

impl PluginPath {
    /// The search path for these `--plugin-dir` values.
    pub fn new(plugin_dirs: &[PathBuf]) -> PluginPath {
        let mut dirs: Vec<PathBuf> = plugin_dirs.to_vec();
        if let Some(path) = std::env::var_os("RUNBOX_PLUGIN_PATH") {
            dirs.extend(std::env::split_paths(&path).filter(|dir| !dir.as_os_str().is_empty()));
        }
        // Installed beside the binary (`PREFIX/bin/runbox` and `PREFIX/lib/runbox/plugins`,
        // as scripts/package lays a release out), then the user's own data directory.
        // `PREFIX` of an installed binary; `target` of one built here.
        let exe = std::env::current_exe().ok();
        let above_bin = exe.as_deref().and_then(Path::parent).and_then(Path::parent);
        if let Some(prefix) = above_bin {
            dirs.push(prefix.join("lib").join("runbox").join("plugins"));
        }
        if let Some(data) = crate::dirs::runbox_path("RUNBOX_DATA_DIR", "XDG_DATA_HOME", ".local/share", "plugins") {
            dirs.push(data);
        }
        let built = Path::new("wasm32-wasip2").join("plugin");
        if let Some(target) = above_bin {
            dirs.push(target.join(&built));
        }
        dirs.push(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join(&built),
        );
        let mut unique = Vec::new();
        for dir in dirs {
            let key = dir.canonicalize().unwrap_or(dir.clone());
            if !unique.iter().any(|(seen, _): &(PathBuf, PathBuf)| *seen == key) {
                unique.push((key, dir));
            }
        }
        PluginPath {
            dirs: unique.into_iter().map(|(_, dir)| dir).collect(),
            downloads: None,
            require_signed: None,
        }
    }

    /// Keeps plugins fetched by URL under `cache_dir/plugins/sha256/`. Without it, URLs fail.
    pub fn with_downloads(mut self, cache_dir: &Path) -> PluginPath {
        self.downloads = Some(Downloads::new(cache_dir));
        self
    }

    /// Refuses every plugin not signed by one of `keys` (`--require-signed`).
    pub fn require_signed(mut self, keys: TrustedKeys) -> PluginPath {
        self.require_signed = Some(Arc::new(keys));
        self
    }

    /// The download cache, if there is one.
    pub fn downloads(&self) -> Option<&Downloads> {
        self.downloads.as_ref()
    }

    /// The file `reference` names: found in the plugin path, or fetched (and verified).
    pub async fn locate(&self, reference: &PluginRef) -> Result<PathBuf, String> {
        match &reference.source {
            Source::Name(name) => self.resolve(name),
            Source::Path(path) => self.resolve(&path.display().to_string()),
            Source::Url(url) => {
                let digest = reference.pinned.as_deref().expect("PluginRef::parse pins URLs");
                let downloads = self.downloads.as_ref().ok_or_else(|| {
                    format!(
                        "cannot fetch {url}: no cache directory to keep it in (set --cache-dir or RUNBOX_CACHE_DIR)"
                    )
                })?;
                downloads.fetch(url, digest).await
            }
        }
    }

    /// Finds or fetches the file, loads it (once per file: `loaded`) with `memory_bytes`
    /// for its `info()`, checks its pin and, with `--require-signed`, its signature. The
    /// error says what is wrong and what to do.
    pub async fn load(
        &self,
        runtime: &Runtime,
        reference: &PluginRef,
        memory_bytes: usize,
        loaded: &mut HashMap<PathBuf, Arc<Plugin>>,
    ) -> Result<Arc<Plugin>, String> {
        let path = self.locate(reference).await?;
        let plugin = match loaded.get(&path) {
            Some(plugin) => plugin.clone(),
            None => {
                let plugin = Arc::new(
                    runtime
                        .load_with_memory(&path, memory_bytes)
                        .await
                        .map_err(|err| err.to_string())?,
                );
                loaded.insert(path.clone(), plugin.clone());
                plugin
            }
        };
        if let Some(pinned) = &reference.pinned
            && *pinned != plugin.digest
        {
            return Err(format!(
                "{} has sha256 {}, but the runbook pins {pinned}: refusing to run a plugin that is not the pinned one",
                path.display(),
                plugin.digest
            ));
        }
        if let Some(keys) = &self.require_signed {
            self.check_signed(reference, &plugin, keys).await?;
        }
        Ok(plugin)
    }

    async fn check_signed(&self, reference: &PluginRef, plugin: &Plugin, keys: &TrustedKeys) -> Result<(), String> {
        let mut result = trust::check_signed(&plugin.path, &plugin.digest, keys);
        // A URL plugin's signature may have been published after the plugin was cached.
        if result.is_err()
            && let (Source::Url(url), Some(downloads)) = (&reference.source, &self.downloads)
        {
            match downloads.fetch_signature(url, &plugin.digest).await {
                Ok(true) => result = trust::check_signed(&plugin.path, &plugin.digest, keys),
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "could not fetch the plugin's signature"),
            }
        }
        let reason = match result {
            Ok(signer) => {
                tracing::debug!(plugin = %plugin.info.name, path = %plugin.path.display(), signer = %signer, "signed by a trusted key");
                return Ok(());
            }
            Err(reason) => reason,
        };
        let fix = match &reference.source {
            Source::Url(url) => format!(
                "ask its publisher to sign it and publish {}, and add their public key to {}",
                remote::signature_url(url),
                keys.describe_source()
            ),
            _ => format!(
                "sign it with `runbox plugins sign {} --key KEYFILE` and add that key's .pub line to {}",
                plugin.path.display(),
                keys.describe_source()
            ),
        };
        Err(format!(
            "--require-signed: plugin `{}` ({}, sha256 {}) is not signed by a trusted key: {reason}. To run it, {fix}; or run without --require-signed",
            plugin.info.name,
            plugin.path.display(),
            plugin.digest
        ))
    }

    /// The directories, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Resolves a plugin given by path (contains `/` or ends in `.wasm`) or by name.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf, String> {
        if spec.contains('/') || spec.ends_with(".wasm") {
            let path = PathBuf::from(spec);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!("plugin file {spec} does not exist"))
            };
        }
        let file_names = [format!("{spec}.wasm"), format!("{}.wasm", spec.replace('-', "_"))];
        for dir in &self.dirs {
            for name in &file_names {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
        let looked: Vec<String> = self.dirs.iter().map(|dir| dir.display().to_string()).collect();
        Err(format!(
            "plugin `{spec}` not found; looked in: {}. Build the first-party plugins with `scripts/build-plugins`, add a directory with --plugin-dir or RUNBOX_PLUGIN_PATH, or give the path of a .wasm file",
            looked.join(", ")
        ))
    }

    /// Every `.wasm` file in the search path; a name found twice keeps its first file.
    pub fn all(&self) -> Vec<PathBuf> {
        let mut seen = std::collections::BTreeSet::new();
        let mut found = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "wasm") && path.is_file())
                .collect();
            files.sort();
            for file in files {
                let stem = file.file_stem().unwrap_or_default().to_string_lossy().replace('_', "-");
                if seen.insert(stem) {
                    found.push(file);
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "2cbe6a1e0d4c7f0b9a8e3d2c1b0a99887766554433221100ffeeddccbbaa9988";

    #[test]
    fn references_are_names_paths_or_pinned_urls() {
        let base = Path::new("/books");
        let cases: Vec<(String, Source, Option<&str>)> = vec![
            ("redis-ping".into(), Source::Name("redis-ping".into()), None),
            (
                format!("redis-ping@sha256:{HEX}"),
                Source::Name("redis-ping".into()),
                Some(HEX),
            ),
            (
                format!("redis-ping@sha256:{}", HEX.to_ascii_uppercase()),
                Source::Name("redis-ping".into()),
                Some(HEX),
            ),
            ("x.wasm".into(), Source::Path("/books/x.wasm".into()), None),
            ("./p/x.wasm".into(), Source::Path("/books/./p/x.wasm".into()), None),
            (
                format!("/abs/x.wasm@sha256:{HEX}"),
                Source::Path("/abs/x.wasm".into()),
                Some(HEX),
            ),
            (
                format!("https://plugins.example.com/x.wasm@sha256:{HEX}"),
                Source::Url(Url::parse("https://plugins.example.com/x.wasm").unwrap()),
                Some(HEX),
            ),
            (
                format!("https://h:8443/a@b/x.wasm?v=2@sha256:{HEX}"),
                Source::Url(Url::parse("https://h:8443/a@b/x.wasm?v=2").unwrap()),
                Some(HEX),
            ),
        ];
        for (text, source, pinned) in cases {
            let parsed = PluginRef::parse(&text, Some(base)).unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(parsed.source, source, "{text}");
            assert_eq!(parsed.pinned.as_deref(), pinned, "{text}");
        }
    }

    #[test]
    fn bad_references_say_what_to_do() {
        let cases = [
            (
                "https://plugins.example.com/x.wasm".to_string(),
                "must be pinned to its content: append `@sha256:`",
            ),
            (format!("http://plugins.example.com/x.wasm@sha256:{HEX}"), "https only"),
            (
                "redis-ping@sha256:abc".into(),
                "the pinned digest must be 64 hex digits",
            ),
            (format!("redis-ping@sha256:{}", "g".repeat(64)), "64 hex digits"),
            (format!("@sha256:{HEX}"), "nothing before `@sha256:`"),
            (
                format!("ftp://h/x.wasm@sha256:{HEX}"),
                "`ftp://` is not a way to fetch plugins",
            ),
        ];
        for (text, expected) in cases {
            let err = PluginRef::parse(&text, None).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
