//! The audit log: one JSON object per line, appended and fsync'd before runbox goes
//! on, so a crash loses no line already written. Every apply writes two lines:
//! `apply-started` (with the plan) before the plugin is called, and `apply-finished`
//! (with the outcome) after. An `apply-started` without its `apply-finished` marks an
//! apply that was interrupted.

use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// `$RUNBOX_AUDIT_LOG`, else `$XDG_STATE_HOME/runbox/audit.jsonl`, else
    /// `~/.local/state/runbox/audit.jsonl`.
    pub fn default_path() -> PathBuf {
        crate::dirs::runbox_path("RUNBOX_AUDIT_LOG", "XDG_STATE_HOME", ".local/state", "audit.jsonl")
            .unwrap_or_else(|| PathBuf::from(".").join("runbox").join("audit.jsonl"))
    }

    /// Opens (creating it and its directory) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line and waits until it is on disk.
    pub fn record(&self, entry: &Value) -> std::io::Result<()> {
        // Redacted like everything runbox writes (the plan and outcome are plugin text).
        let mut line = crate::output::scrub(&serde_json::to_string(entry)?)
            .into_owned()
            .into_bytes();
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // One write of the whole line: O_APPEND keeps concurrent writers' lines whole.
        file.write_all(&line)?;
        file.sync_data()
    }
}

/// Who is running runbox, for the audit log.
pub fn current_user() -> String {
    if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return user;
    }
    // No login name in the environment (cron, containers, CI): the numeric uid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
            ids.split_whitespace().next().map(|uid| format!("uid {uid}"))
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(&serde_json::json!({"event": "apply-started", "step": "a"}))
            .unwrap();
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.record(&serde_json::json!({"event": "apply-finished", "step": "a"}))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "apply-finished");
    }
}
