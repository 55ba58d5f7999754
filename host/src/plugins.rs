//! Finding plugins: by path, or by name in the plugin directories.
//!
//! Search order for a name: each `--plugin-dir`, then each directory of
//! `RUNBOX_PLUGIN_PATH` (colon-separated), then the project's own built plugins
//! (`target/wasm32-wasip2/plugin` beside the running binary, and in the source checkout
//! the binary was built from). `redis-ping` matches `redis-ping.wasm` and
//! `redis_ping.wasm` (cargo's file name for the crate).

use std::path::{Path, PathBuf};

/// The ordered list of directories plugins are looked up in.
#[derive(Debug, Clone)]
pub struct PluginPath {
    dirs: Vec<PathBuf>,
}

impl PluginPath {
    /// The search path for these `--plugin-dir` values.
    pub fn new(plugin_dirs: &[PathBuf]) -> PluginPath {
        let mut dirs: Vec<PathBuf> = plugin_dirs.to_vec();
        if let Some(path) = std::env::var_os("RUNBOX_PLUGIN_PATH") {
            dirs.extend(std::env::split_paths(&path).filter(|dir| !dir.as_os_str().is_empty()));
        }
        let built = Path::new("wasm32-wasip2").join("plugin");
        if let Ok(exe) = std::env::current_exe()
            && let Some(target) = exe.parent().and_then(Path::parent)
        {
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
        }
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
