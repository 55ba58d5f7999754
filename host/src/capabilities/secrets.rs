//! Secrets: granted by explicit mapping only, and redacted from all output.

use std::fmt;
use std::path::PathBuf;

/// Where a secret's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the runbox process.
    Env(String),
    /// A file; one trailing newline is removed.
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "env:{var}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// A secret granted to a step: the name the plugin asks for, and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretGrant {
    /// The name the plugin passes to `host.secret`.
    pub name: String,
    /// Where runbox reads the value.
    pub source: SecretSource,
}

/// Longest secret name a grant may have. A plugin asking for a longer one is denied
/// without the host keeping the name.
pub const MAX_NAME_BYTES: usize = 128;

/// Whether `name` could be granted: 1 to [`MAX_NAME_BYTES`] ASCII letters, digits, `_`
/// or `-`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl SecretGrant {
    /// Parses `NAME=env:VAR` or `NAME=file:PATH`.
    pub fn parse(text: &str) -> Result<SecretGrant, String> {
        let usage = "expected NAME=env:VAR or NAME=file:PATH";
        let (name, source) = text
            .split_once('=')
            .ok_or_else(|| format!("secret `{text}`: {usage}"))?;
        if !is_valid_name(name) {
            return Err(format!(
                "secret `{text}`: name `{name}` must be 1 to {MAX_NAME_BYTES} letters, digits, `_` or `-`"
            ));
        }
        let source = match source.split_once(':') {
            Some(("env", var)) if !var.is_empty() => SecretSource::Env(var.to_string()),
            Some(("file", path)) if !path.is_empty() => SecretSource::File(PathBuf::from(path)),
            _ => {
                return Err(format!(
                    "secret `{name}`: source `{source}` is not understood ({usage})"
                ));
            }
        };
        Ok(SecretGrant {
            name: name.to_string(),
            source,
        })
    }

    /// Reads the value now. The error names the secret and the source, never a value.
    pub fn resolve(&self) -> Result<String, String> {
        match &self.source {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                format!(
                    "secret `{}`: environment variable `{var}` is not set (or not UTF-8)",
                    self.name
                )
            }),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|text| {
                    text.strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(&text)
                        .to_string()
                })
                .map_err(|err| format!("secret `{}`: cannot read {}: {err}", self.name, path.display())),
        }
    }
}

/// Replaces secret values with `[REDACTED]` in text.
///
/// Values shorter than [`Redactor::MIN_LEN`] bytes are not redacted: replacing every
/// occurrence of one or two characters would destroy the output and hide nothing.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    /// Shortest value that is redacted.
    pub const MIN_LEN: usize = 3;
    /// What a redacted value becomes.
    pub const MARK: &'static str = "[REDACTED]";

    /// A redactor for these values.
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= Self::MIN_LEN).collect();
        // Longest first, so a secret containing another is removed whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor { values }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), Self::MARK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_secret_grants() {
        assert_eq!(
            SecretGrant::parse("REDIS_PASSWORD=env:PROD_REDIS_PW").unwrap(),
            SecretGrant {
                name: "REDIS_PASSWORD".into(),
                source: SecretSource::Env("PROD_REDIS_PW".into())
            }
        );
        assert_eq!(
            SecretGrant::parse("pw=file:/run/secrets/pw").unwrap().source,
            SecretSource::File("/run/secrets/pw".into())
        );
        for bad in ["pw", "=env:X", "pw=env:", "pw=vault:x", "pw=file:", "p w=env:X"] {
            assert!(SecretGrant::parse(bad).is_err(), "{bad} should be rejected");
        }
        let longest = "n".repeat(MAX_NAME_BYTES);
        assert!(SecretGrant::parse(&format!("{longest}=env:X")).is_ok());
        assert!(SecretGrant::parse(&format!("{longest}n=env:X")).is_err());
    }

    #[test]
    fn file_secrets_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let grant = SecretGrant {
            name: "pw".into(),
            source: SecretSource::File(path),
        };
        assert_eq!(grant.resolve().unwrap(), "s3cret");
        let missing = SecretGrant {
            name: "pw".into(),
            source: SecretSource::Env("RUNBOX_TEST_SURELY_UNSET".into()),
        };
        assert!(missing.resolve().unwrap_err().contains("RUNBOX_TEST_SURELY_UNSET"));
    }

    #[test]
    fn redacts_longest_first_and_skips_tiny_values() {
        let redactor = Redactor::new(["hunter2".to_string(), "hunter2-extra".to_string(), "ab".to_string()]);
        assert_eq!(
            redactor.redact("pw=hunter2-extra or hunter2, ab"),
            "pw=[REDACTED] or [REDACTED], ab"
        );
    }
}
