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

    /// Reads the value now, and adds it to the values every output of this process is
    /// redacted of ([`remember`]). The error names the secret and the source, never a value.
    pub fn resolve(&self) -> Result<String, String> {
        let value = self.read()?;
        remember(&value);
        Ok(value)
    }

    fn read(&self) -> Result<String, String> {
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

/// Why the host keeps a secret's value from the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOnly {
    /// It is the step's TLS client certificate or key, which the host presents.
    TlsIdentity,
    /// The host puts it in the plugin's HTTP request headers
    /// ([`super::header_secrets`]).
    HttpHeaders,
}

impl HostOnly {
    /// Why a plugin asking for a secret withheld for this reason gets nothing.
    pub fn reason(self) -> &'static str {
        match self {
            HostOnly::TlsIdentity => "it holds the step's TLS client identity, which only the host reads",
            HostOnly::HttpHeaders => {
                "it holds a secret the host puts in the step's HTTP request headers (`${{ secrets.NAME }}` in `with:`); the plugin never reads it"
            }
        }
    }
}

/// The values of a step's secrets that only the host uses, and why: no grant may hand
/// them to the plugin under another name. A secret or an environment variable whose value
/// is one of them, or contains one (a non-empty one), is withheld: what decides is the
/// value, not the name.
#[derive(Default)]
pub struct HostOnlyValues(Vec<(String, HostOnly)>);

impl fmt::Debug for HostOnlyValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostOnlyValues({} values)", self.0.len())
    }
}

impl HostOnlyValues {
    /// Adds `value`, kept from the plugin for `why`.
    pub fn add(&mut self, value: &str, why: HostOnly) {
        if !self.0.iter().any(|(known, _)| known == value) {
            self.0.push((value.to_string(), why));
        }
    }

    /// Why `value` must be kept from the plugin, if it must: it is, or contains, a value
    /// only the host uses (the first added wins).
    pub fn check(&self, value: &str) -> Option<HostOnly> {
        self.0
            .iter()
            .find(|(secret, _)| value == secret || (!secret.is_empty() && value.contains(secret.as_str())))
            .map(|(_, why)| *why)
    }
}

/// Replaces secret values with `[REDACTED]` in text: each value as it is, and as each
/// transformation runbox applies to text would write it (case folding, JSON, Rust
/// debug, XML, Markdown, Prometheus and Nagios escaping, [`crate::text::visible`]), so
/// no output format re-creates a secret the redactor would no longer recognise.
/// Matching ignores ASCII case: runbox lower-cases host names in grant suggestions.
///
/// Values shorter than [`Redactor::MIN_LEN`] bytes are not redacted: replacing every
/// occurrence of one or two characters would destroy the output and hide nothing.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    matcher: Option<aho_corasick::AhoCorasick>,
    longest: usize,
}

impl Redactor {
    /// Shortest value that is redacted.
    pub const MIN_LEN: usize = 3;
    /// What a redacted value becomes.
    pub const MARK: &'static str = "[REDACTED]";

    /// A redactor for these values.
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut patterns: Vec<String> = values
            .into_iter()
            .filter(|value| value.len() >= Self::MIN_LEN)
            .flat_map(|value| transformations(&value))
            .collect();
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Redactor::default();
        }
        let longest = patterns.iter().map(String::len).max().unwrap_or(0);
        // Leftmost-longest: a secret containing another is removed whole.
        let matcher = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .build(&patterns)
            .expect("literal patterns always build");
        Redactor {
            matcher: Some(matcher),
            longest,
        }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Length in bytes of the longest form of a secret it recognises: text cut at a cap
    /// must be redacted with at least this much beyond the cap still in hand.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `text` with every secret value replaced.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.matcher {
            Some(matcher) if matcher.is_match(text) => {
                std::borrow::Cow::Owned(matcher.replace_all(text, &vec![Self::MARK; matcher.patterns_len()]))
            }
            _ => std::borrow::Cow::Borrowed(text),
        }
    }
}

impl Redactor {
    /// `text` redacted and cut to what comes from its first `keep` bytes (at a character
    /// boundary), with the number of bytes of `text` left out. A secret that starts
    /// within those bytes is replaced whole even if it runs past them; none is ever cut
    /// in two. `text` must be the whole text (or extend at least [`Redactor::longest`]
    /// bytes past `keep`), so that every secret starting before the cut is complete.
    /// Work and memory are bounded by `keep` plus the longest secret, whatever the
    /// length of `text`.
    pub fn redact_prefix<'a>(&self, text: &'a str, keep: usize) -> (std::borrow::Cow<'a, str>, usize) {
        let keep = crate::text::floor_char_boundary(text, keep);
        let scan = crate::text::floor_char_boundary(text, keep.saturating_add(self.longest));
        let mut out = String::new();
        let mut at = 0;
        if let Some(matcher) = &self.matcher {
            for found in matcher.find_iter(&text[..scan]) {
                if found.start() >= keep {
                    break;
                }
                out.push_str(&text[at..found.start()]);
                out.push_str(Self::MARK);
                at = found.end();
            }
        }
        if at == 0 {
            return (std::borrow::Cow::Borrowed(&text[..keep]), text.len() - keep);
        }
        if at < keep {
            out.push_str(&text[at..keep]);
        }
        (std::borrow::Cow::Owned(out), text.len() - at.max(keep))
    }
}

/// Every form in which runbox itself may write `value`.
fn transformations(value: &str) -> Vec<String> {
    use crate::text;
    let mut forms = vec![value.to_string(), text::visible(value).into_owned()];
    for form in forms.clone() {
        forms.extend([
            text::json_string(&form),
            text::debug_string(&form),
            form.escape_debug().to_string(),
            text::xml(&form),
            text::markdown(&form),
            text::prometheus_label(&form),
            text::nagios_label(&form),
            text::nagios_text(&form),
            form.replace('\'', "''"),
        ]);
    }
    forms.retain(|form| form.len() >= Redactor::MIN_LEN);
    forms
}

/// Every secret value this process has read: everything runbox writes (reports, logs,
/// the audit log, prompts) is redacted with all of them, whichever step they belong to.
static KNOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static CURRENT: std::sync::RwLock<Option<std::sync::Arc<Redactor>>> = std::sync::RwLock::new(None);

/// Adds `value` to the secrets every output is redacted of.
pub fn remember(value: &str) {
    let mut known = KNOWN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if value.len() < Redactor::MIN_LEN || known.iter().any(|known| known == value) {
        return;
    }
    known.push(value.to_string());
    let redactor = std::sync::Arc::new(Redactor::new(known.iter().cloned()));
    *CURRENT.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(redactor);
}

/// The redactor for every secret read so far.
pub fn redactor() -> std::sync::Arc<Redactor> {
    CURRENT
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
        .unwrap_or_default()
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

    #[test]
    fn redacts_the_forms_runbox_writes_a_secret_in() {
        let secret = "Pa\"ss'w=rd|\\x<y>&_*#\u{1b}Z";
        let redactor = Redactor::new([secret.to_string()]);
        let forms = [
            secret.to_string(),
            secret.to_ascii_lowercase(),
            secret.to_ascii_uppercase(),
            crate::text::visible(secret).into_owned(),
            crate::text::json_string(secret),
            crate::text::json_string(&crate::text::visible(secret)),
            crate::text::debug_string(secret),
            crate::text::xml(&crate::text::visible(secret)),
            crate::text::markdown(secret),
            crate::text::prometheus_label(&crate::text::visible(secret)),
            crate::text::nagios_label(secret),
            crate::text::nagios_text(secret),
        ];
        for form in forms {
            let text = format!("before {form} after");
            assert_eq!(redactor.redact(&text), "before [REDACTED] after", "form {form:?}");
        }
        assert!(redactor.longest() >= secret.len());
    }

    #[test]
    fn a_prefix_never_ends_inside_a_secret() {
        let secret = "TOPSECRETVALUE0123456789abcdefXY";
        let redactor = Redactor::new([secret.to_string()]);
        // A secret straddling the cut is replaced whole; one after it is left out.
        let text = format!("{}{secret}tail{secret}", "x".repeat(10));
        let (kept, left_out) = redactor.redact_prefix(&text, 20);
        assert_eq!(kept, format!("{}[REDACTED]", "x".repeat(10)));
        assert_eq!(left_out, text.len() - 10 - secret.len());
        // Many secrets shrink the text under the cap; what came after the cap stays out.
        let text = format!("{}{}", secret.repeat(100), &secret[..13]);
        let (kept, _) = redactor.redact_prefix(&text, 100 * secret.len());
        assert_eq!(kept, "[REDACTED]".repeat(100));
        // No secret: borrowed, cut at a character boundary.
        let (kept, left_out) = redactor.redact_prefix("ééé", 3);
        assert!(matches!(kept, std::borrow::Cow::Borrowed("é")));
        assert_eq!(left_out, 4);
        let empty = Redactor::default();
        assert_eq!(
            empty.redact_prefix("abcdef", 4),
            (std::borrow::Cow::Borrowed("abcd"), 2)
        );
    }

    #[test]
    fn host_only_values_withhold_what_holds_them() {
        let mut values = HostOnlyValues::default();
        values.add("key-material", HostOnly::TlsIdentity);
        values.add("tok-123", HostOnly::HttpHeaders);
        values.add("tok-123", HostOnly::TlsIdentity);
        assert_eq!(
            values.check("tok-123"),
            Some(HostOnly::HttpHeaders),
            "the first reason wins"
        );
        assert_eq!(values.check("user:tok-123"), Some(HostOnly::HttpHeaders));
        assert_eq!(values.check("a key-material b"), Some(HostOnly::TlsIdentity));
        assert_eq!(values.check("tok-12"), None);
        assert_eq!(values.check("TOK-123"), None);
        assert_eq!(values.check(""), None);
        assert!(!format!("{values:?}").contains("tok"));
        // An empty value withholds only what is empty too (it leaks nothing else).
        let mut empty = HostOnlyValues::default();
        empty.add("", HostOnly::HttpHeaders);
        assert_eq!(empty.check(""), Some(HostOnly::HttpHeaders));
        assert_eq!(empty.check("x"), None);
    }

    #[test]
    fn an_empty_redactor_borrows() {
        let redactor = Redactor::new(Vec::new());
        assert!(redactor.is_empty());
        assert!(matches!(redactor.redact("text"), std::borrow::Cow::Borrowed("text")));
    }
}
