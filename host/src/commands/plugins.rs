//! `runbox plugins list|inspect|verify|keygen|sign`, and the trusted keys `--require-signed` reads.

use super::{load, print};
use crate::error::{Error, invalid};
use crate::plugins::{PluginPath, PluginRef, Source};
use crate::report::Format;
use crate::runtime::Runtime;
use crate::trust::{self, TrustedKeys};
use std::path::PathBuf;

/// The trusted keys: from `explicit` (--trusted-keys / $RUNBOX_TRUSTED_KEYS) or the
/// default file. With `required` (--require-signed), a missing or empty file is an error.
pub(crate) fn trusted_keys(explicit: Option<&std::path::Path>, required: bool) -> Result<TrustedKeys, Error> {
    let Some(path) = explicit.map(PathBuf::from).or_else(TrustedKeys::default_path) else {
        return if required {
            Err(invalid(
                "--require-signed needs trusted keys, and there is no home directory to find ~/.config/runbox/trusted-keys in: pass --trusted-keys FILE",
            ))
        } else {
            Ok(TrustedKeys::default())
        };
    };
    let keys = TrustedKeys::load(&path, required || explicit.is_some()).map_err(|err| {
        if required {
            invalid(format!(
                "--require-signed: {err}. Create it with one `ed25519 <base64 public key> <name>` line per key you trust (`runbox plugins keygen` writes one to PREFIX.pub), or pass --trusted-keys FILE"
            ))
        } else {
            invalid(err)
        }
    })?;
    if required && keys.keys.is_empty() {
        return Err(invalid(format!(
            "--require-signed: {} lists no keys, so no plugin could run. Add one `ed25519 <base64 public key> <name>` line per key you trust (`runbox plugins keygen` writes one to PREFIX.pub)",
            path.display()
        )));
    }
    Ok(keys)
}

pub(crate) async fn verify(
    plugin_path: &PluginPath,
    spec: &str,
    trusted: Option<&std::path::Path>,
) -> Result<u8, Error> {
    let keys = trusted_keys(trusted, false)?;
    let reference = PluginRef::parse(spec, None).map_err(|err| invalid(format!("`{spec}`: {err}")))?;
    let path = plugin_path.locate(&reference).await.map_err(invalid)?;
    let bytes = std::fs::read(&path).map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?;
    let digest = crate::runtime::cache::digest(&bytes);
    let out = format!("file:         {}\nsha256:       {digest}\n", path.display());
    if let Some(pinned) = &reference.pinned
        && *pinned != digest
    {
        return Err(invalid(format!(
            "{} has sha256 {digest}, but `{spec}` pins {pinned}",
            path.display()
        )));
    }
    let sig_path = trust::signature_path(&path);
    if let Source::Url(url) = &reference.source
        && !sig_path.exists()
        && let Some(downloads) = plugin_path.downloads()
    {
        let _ = downloads.fetch_signature(url, &digest).await;
    }
    let report = trust::verify_report(&path, &digest, &keys).map_err(invalid)?;
    print(&format!("{out}{}", report.text))?;
    Ok(if report.signer.is_some() { 0 } else { 1 })
}

pub(crate) fn keygen(out: &std::path::Path, name: Option<&str>) -> Result<u8, Error> {
    let default_name = out.file_name().map(|name| name.to_string_lossy().into_owned());
    let name = name.map(String::from).or(default_name).ok_or_else(|| {
        invalid(format!(
            "--out {}: expected a path prefix such as keys/release",
            out.display()
        ))
    })?;
    let (secret, public, key) = trust::keygen(out, &name).map_err(invalid)?;
    let trusted_keys = TrustedKeys::default_path()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "TRUSTED_KEYS_FILE".into());
    print(&format!(
        "wrote {} (secret, mode 0600: keep it private) and {}\npublic key: {} {name}\ntrust it:   cat {} >> {trusted_keys}\nsign with:  runbox plugins sign PLUGIN.wasm --key {}\n",
        secret.display(),
        public.display(),
        trust::key_text(&key),
        public.display(),
        secret.display(),
    ))?;
    Ok(0)
}

pub(crate) async fn sign(plugin_path: &PluginPath, spec: &str, key: &std::path::Path) -> Result<u8, Error> {
    let reference = PluginRef::parse(spec, None).map_err(|err| invalid(format!("`{spec}`: {err}")))?;
    if let Source::Url(_) = reference.source {
        return Err(invalid(
            "sign the file you publish, then publish FILE.sig beside it: `runbox plugins sign FILE --key KEY` takes a local file",
        ));
    }
    let secret = trust::read_secret_key(key).map_err(invalid)?;
    let path = plugin_path.locate(&reference).await.map_err(invalid)?;
    let bytes = std::fs::read(&path).map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?;
    let digest = crate::runtime::cache::digest(&bytes);
    let line = trust::sign(&secret.key, &digest);
    let sig_path = trust::signature_path(&path);
    trust::write_signature(&sig_path, &line).map_err(invalid)?;
    print(&format!(
        "signed {} (sha256 {digest}) with key `{}` ({}): wrote {}
",
        path.display(),
        secret.name,
        trust::key_text(&line.key),
        sig_path.display()
    ))?;
    Ok(0)
}

pub(crate) async fn list(runtime: &Runtime, plugin_path: &PluginPath, format: Format) -> Result<u8, Error> {
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for path in plugin_path.all() {
        match runtime.load(&path).await {
            Ok(plugin) => rows.push(plugin),
            Err(err) => broken.push(err.to_string()),
        }
    }
    let out = match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|p| serde_json::json!({"name": p.info.name, "version": p.info.version, "kind": p.kind, "description": p.info.description, "path": p.path}))
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({"plugins": list, "errors": broken})).expect("serializes")
                + "\n"
        }
        _ => {
            let mut out = String::new();
            if rows.is_empty() {
                out.push_str(&format!("no plugins found in: {}\n", searched(plugin_path)));
            }
            for p in &rows {
                out.push_str(&format!(
                    "{:<22} {:<8} {:<10} {}\n",
                    p.info.name,
                    p.info.version,
                    format!("{:?}", p.kind).to_lowercase(),
                    p.info.description
                ));
            }
            for err in &broken {
                out.push_str(&format!("error: {err}\n"));
            }
            out
        }
    };
    print(&out)?;
    Ok(if broken.is_empty() { 0 } else { 64 })
}

pub(crate) async fn inspect(
    runtime: &Runtime,
    plugin_path: &PluginPath,
    spec: &str,
    format: Format,
    memory: usize,
) -> Result<u8, Error> {
    let plugin = load(runtime, plugin_path, spec, memory).await?;
    let out = match format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "name": plugin.info.name,
                "version": plugin.info.version,
                "description": plugin.info.description,
                "kind": plugin.kind,
                "world": plugin.world(),
                "path": plugin.path,
                "sha256": plugin.digest,
                "imports": plugin.imports,
            "exports": plugin.exports,
                "config_schema": plugin.info.config_schema,
            }))
            .expect("serializes")
                + "\n"
        }
        _ => format!(
            "name:         {}\nversion:      {}\ndescription:  {}\nworld:        {}\nfile:         {}\nsha256:       {}\nimports:\n{}config schema:\n{}\n",
            plugin.info.name,
            plugin.info.version,
            plugin.info.description,
            plugin.world(),
            plugin.path.display(),
            plugin.digest,
            plugin.imports.iter().map(|i| format!("  {i}\n")).collect::<String>(),
            serde_json::to_string_pretty(&plugin.info.config_schema).expect("serializes"),
        ),
    };
    print(&out)?;
    Ok(0)
}

/// `runbox plugins compile [PLUGIN…]`: loads each plugin as a run would, which compiles
/// it into the compile cache unless it is there; says which it was.
pub(crate) async fn compile(
    runtime: &Runtime,
    plugin_path: &PluginPath,
    specs: &[String],
    no_cache: bool,
) -> Result<u8, Error> {
    if no_cache {
        return Err(invalid(
            "--no-cache: `plugins compile` fills the compile cache; drop --no-cache (--cache-dir chooses where)",
        ));
    }
    let mut loaded = Vec::new();
    if specs.is_empty() {
        let paths = plugin_path.all();
        if paths.is_empty() {
            return Err(invalid(format!("no plugins found in: {}", searched(plugin_path))));
        }
        for path in paths {
            loaded.push(
                runtime
                    .load(&path)
                    .await
                    .map(std::sync::Arc::new)
                    .map_err(|err| err.to_string()),
            );
        }
    } else {
        for spec in specs {
            loaded.push(
                load(runtime, plugin_path, spec, crate::runtime::DEFAULT_MEMORY)
                    .await
                    .map_err(|err| err.to_string()),
            );
        }
    }
    let failed = loaded.iter().filter(|result| result.is_err()).count();
    let lines: Vec<String> = loaded
        .iter()
        .map(|result| match result {
            Ok(plugin) => compiled_line(plugin),
            Err(err) => format!("error: {err}"),
        })
        .collect();
    print(&(lines.join("\n") + "\n"))?;
    Ok(if failed > 0 { 64 } else { 0 })
}

fn compiled_line(plugin: &crate::runtime::Plugin) -> String {
    format!(
        "{:<22} {} ({})",
        plugin.info.name,
        if plugin.compiled {
            "compiled"
        } else {
            "already in the cache"
        },
        plugin.path.display()
    )
}

/// The directories `plugin_path` searches, for "no plugins found in: …".
fn searched(plugin_path: &PluginPath) -> String {
    let dirs: Vec<String> = plugin_path.dirs().iter().map(|d| d.display().to_string()).collect();
    dirs.join(", ")
}
