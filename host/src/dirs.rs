//! Where runbox keeps its files by default, per the XDG base-directory convention.

use std::path::{Path, PathBuf};

/// `$OVERRIDE` if set (a full path), else `$XDG_VAR/runbox/NAME`, else
/// `~/HOME_FALLBACK/runbox/NAME`; `None` when neither variable nor `$HOME` is set.
/// `NAME` may be empty for the directory itself.
pub fn runbox_path(override_var: &str, xdg_var: &str, home_fallback: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(override_var) {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os(xdg_var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(home_fallback)))?;
    let dir = base.join("runbox");
    Some(if name.is_empty() { dir } else { dir.join(name) })
}
