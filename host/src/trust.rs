//! Plugin signatures: ed25519 over a plugin's SHA-256 digest, trusted keys, key files.
//!
//! Formats (all UTF-8 text, one record a line, `#` starts a comment line; docs/trust.md):
//!
//! - **signature file** `PLUGIN.wasm.sig`, beside the plugin (for a plugin fetched by URL,
//!   `<url>.sig`, kept in the download cache beside the plugin):
//!   `ed25519 <base64 public key> sha256:<hex digest> <base64 signature>`, one line per signer.
//! - **trusted keys** (`--trusted-keys`, `$RUNBOX_TRUSTED_KEYS`, default
//!   `~/.config/runbox/trusted-keys`): `ed25519 <base64 public key> <name>`.
//! - **public key** `PREFIX.pub` from `runbox plugins keygen`: a trusted-keys line.
//! - **secret key** `PREFIX.key`, mode 0600: `ed25519-secret <base64 32-byte seed> <name>`.
//!
//! The signed message is [`DOMAIN`] followed by the lower-case hex digest, so a signature
//! can never be mistaken for one over anything else. Verification always uses the digest
//! of the bytes being loaded; the digest written in the signature file only explains a
//! mismatch ("the file changed after it was signed").

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::fmt;
use std::path::{Path, PathBuf};

/// Prefix of every signed message: the format version and the digest algorithm.
pub const DOMAIN: &[u8] = b"runbox-plugin-v1 sha256:";

/// The bytes an ed25519 signature of a plugin with this hex SHA-256 `digest` covers.
pub fn signed_message(digest: &str) -> Vec<u8> {
    let mut message = DOMAIN.to_vec();
    message.extend_from_slice(digest.to_ascii_lowercase().as_bytes());
    message
}

/// Whether `text` is a SHA-256 digest in hex (64 digits).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The signature file of the plugin at `plugin`: `PLUGIN.sig` (e.g. `x.wasm.sig`).
pub fn signature_path(plugin: &Path) -> PathBuf {
    let mut name = plugin.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// A public key someone trusts, with the name it is shown by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The ed25519 public key.
    pub key: VerifyingKey,
    /// Who it belongs to (the rest of its line).
    pub name: String,
}

impl TrustedKey {
    /// The key as written in files: `ed25519 <base64>`.
    pub fn key_text(&self) -> String {
        key_text(&self.key)
    }
}

/// `ed25519 <base64 public key>`.
pub fn key_text(key: &VerifyingKey) -> String {
    format!("ed25519 {}", BASE64.encode(key.as_bytes()))
}

/// The trusted-keys file, parsed.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    /// The keys, in file order.
    pub keys: Vec<TrustedKey>,
    /// The file they were read from (for messages).
    pub source: Option<PathBuf>,
}

impl TrustedKeys {
    /// The default file: `$RUNBOX_TRUSTED_KEYS`, else `$XDG_CONFIG_HOME/runbox/trusted-keys`,
    /// else `~/.config/runbox/trusted-keys`.
    pub fn default_path() -> Option<PathBuf> {
        crate::dirs::runbox_path("RUNBOX_TRUSTED_KEYS", "XDG_CONFIG_HOME", ".config", "trusted-keys")
    }

    /// Reads `path`. A missing file is an error only when `must_exist`; otherwise it
    /// trusts nothing. A file others may write is refused: whoever can add a line to it
    /// can make runbox run their plugins.
    pub fn load(path: &Path, must_exist: bool) -> Result<TrustedKeys, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(TrustedKeys {
                    keys: Vec::new(),
                    source: Some(path.to_path_buf()),
                });
            }
            Err(err) => return Err(format!("cannot read the trusted-keys file {}: {err}", path.display())),
        };
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o022 != 0 {
                return Err(format!(
                    "the trusted-keys file {} is writable by others (mode {mode:04o}): anyone who can add a line to it can make runbox trust their plugins; run `chmod go-w {}`",
                    path.display(),
                    path.display()
                ));
            }
        }
        let keys = parse_trusted_keys(&text).map_err(|problems| {
            problems
                .iter()
                .map(|(line, message)| format!("{}:{line}: {message}", path.display()))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        Ok(TrustedKeys {
            keys,
            source: Some(path.to_path_buf()),
        })
    }

    /// The trusted entry for `key`, if any.
    pub fn find(&self, key: &VerifyingKey) -> Option<&TrustedKey> {
        self.keys.iter().find(|trusted| &trusted.key == key)
    }

    /// The file and how many keys it holds, e.g. `~/.config/runbox/trusted-keys (2 keys)`.
    pub fn summary(&self) -> String {
        match &self.source {
            Some(path) if !path.exists() => format!("{} (does not exist: no key is trusted)", path.display()),
            _ => format!(
                "{} ({} key{})",
                self.describe_source(),
                self.keys.len(),
                if self.keys.len() == 1 { "" } else { "s" }
            ),
        }
    }

    /// Where the keys come from, for messages.
    pub fn describe_source(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => "the trusted-keys file".into(),
        }
    }
}

/// Parses trusted-keys text; every bad line is reported as (1-based line, message).
pub fn parse_trusted_keys(text: &str) -> Result<Vec<TrustedKey>, Vec<(usize, String)>> {
    let mut keys: Vec<TrustedKey> = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, char::is_whitespace);
        let (algorithm, key, name) = (fields.next(), fields.next(), fields.next().map(str::trim));
        let parsed = match (algorithm, key, name) {
            (Some("ed25519"), Some(key), Some(name)) if !name.is_empty() => {
                parse_public_key(key).map(|key| TrustedKey {
                    key,
                    name: name.to_string(),
                })
            }
            (Some("ed25519"), Some(_), _) => {
                Err("a key needs a name after it: `ed25519 <base64 public key> <name>`".to_string())
            }
            (Some("ed25519-secret"), _, _) => Err(
                "this is a SECRET key (a PREFIX.key file): trust the public one, PREFIX.pub, and keep the secret one private"
                    .to_string(),
            ),
            (Some(other), Some(_), _) if other != "ed25519" => Err(format!(
                "unknown key type `{other}`: runbox trusts `ed25519 <base64 public key> <name>` lines"
            )),
            _ => Err("expected `ed25519 <base64 public key> <name>`".to_string()),
        };
        match parsed {
            Ok(key) => {
                if !keys.iter().any(|known| known.key == key.key) {
                    keys.push(key);
                }
            }
            Err(message) => problems.push((n + 1, message)),
        }
    }
    if problems.is_empty() { Ok(keys) } else { Err(problems) }
}

fn decode_fixed<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let bytes = BASE64
        .decode(text)
        .map_err(|err| format!("{what} `{text}` is not base64: {err}"))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{what} `{text}` is {} bytes; an ed25519 {what} is {N}", bytes.len()))
}

/// An ed25519 public key in base64 (32 bytes).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = decode_fixed::<32>(text, "public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| format!("public key `{text}` is not a valid ed25519 point"))
}

/// One signer's line of a signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine {
    /// Who signed.
    pub key: VerifyingKey,
    /// The digest the signer says they signed (the check uses the file's own digest).
    pub digest: String,
    /// The signature over [`signed_message`] of the digest.
    pub signature: Signature,
}

impl fmt::Display for SignatureLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sha256:{} {}",
            key_text(&self.key),
            self.digest,
            BASE64.encode(self.signature.to_bytes())
        )
    }
}

/// Parses a signature file: one `ed25519 <key> sha256:<hex> <signature>` line per signer.
pub fn parse_signatures(text: &str) -> Result<Vec<SignatureLine>, String> {
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |message: String| format!("line {}: {message}", n + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [algorithm, key, digest, signature] = fields[..] else {
            return Err(at(
                "expected `ed25519 <base64 public key> sha256:<hex> <base64 signature>`".into(),
            ));
        };
        if algorithm != "ed25519" {
            return Err(at(format!(
                "unknown signature type `{algorithm}` (runbox reads ed25519)"
            )));
        }
        let key = parse_public_key(key).map_err(at)?;
        let digest = match digest.strip_prefix("sha256:") {
            Some(hex) if is_sha256_hex(hex) => hex.to_ascii_lowercase(),
            _ => return Err(at(format!("`{digest}` is not `sha256:` and 64 hex digits"))),
        };
        let signature = Signature::from_bytes(&decode_fixed::<64>(signature, "signature").map_err(at)?);
        lines.push(SignatureLine { key, digest, signature });
    }
    if lines.is_empty() {
        return Err("no signature in it".into());
    }
    Ok(lines)
}

/// Signs the plugin with SHA-256 `digest`.
pub fn sign(secret: &SigningKey, digest: &str) -> SignatureLine {
    let digest = digest.to_ascii_lowercase();
    SignatureLine {
        key: secret.verifying_key(),
        signature: secret.sign(&signed_message(&digest)),
        digest,
    }
}

/// What one signature line says about a plugin whose bytes hash to a given digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineVerdict {
    /// Valid, by a trusted key (its name).
    Trusted(String),
    /// Valid, by a key not in the trusted-keys file.
    Untrusted,
    /// Made for another digest: the file changed after signing, or the `.sig` belongs elsewhere.
    OtherDigest,
    /// The signature does not verify.
    Invalid,
}

/// Checks one line against the plugin's actual `digest` and the trusted keys.
pub fn verify_line(line: &SignatureLine, digest: &str, trusted: &TrustedKeys) -> LineVerdict {
    let digest = digest.to_ascii_lowercase();
    if line.digest != digest {
        return LineVerdict::OtherDigest;
    }
    if line
        .key
        .verify_strict(&signed_message(&digest), &line.signature)
        .is_err()
    {
        return LineVerdict::Invalid;
    }
    match trusted.find(&line.key) {
        Some(key) => LineVerdict::Trusted(key.name.clone()),
        None => LineVerdict::Untrusted,
    }
}

impl LineVerdict {
    /// How `runbox plugins verify` describes it.
    pub fn describe(&self, line: &SignatureLine, digest: &str, trusted: &TrustedKeys) -> String {
        let key = key_text(&line.key);
        match self {
            LineVerdict::Trusted(name) => format!("valid, by trusted key `{name}` ({key})"),
            LineVerdict::Untrusted => format!(
                "valid, but by {key}, which is not in {}: add `{key} <name>` there if you trust its owner",
                trusted.describe_source()
            ),
            LineVerdict::OtherDigest => format!(
                "by {key}, but for sha256 {}, not this file's {digest}: the file changed after it was signed, or the .sig belongs to another file",
                line.digest
            ),
            LineVerdict::Invalid => format!("by {key}: the signature does not verify (corrupt or forged)"),
        }
    }
}

/// What `runbox plugins verify` found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Lines for a person: the trusted-keys file, the signature file, each signature's worth, the verdict.
    pub text: String,
    /// The name of a trusted key with a valid signature, if any.
    pub signer: Option<String>,
}

/// Checks the signature file beside `plugin` (whose bytes hash to `digest`) against `trusted`.
/// An unsigned plugin or a malformed signature file is a report, not an error; only an
/// unreadable signature file is.
pub fn verify_report(plugin: &Path, digest: &str, trusted: &TrustedKeys) -> Result<VerifyReport, String> {
    let sig_path = signature_path(plugin);
    let mut text = format!("trusted keys: {}\n", trusted.summary());
    let mut signer = None;
    let verdict = match std::fs::read_to_string(&sig_path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            text.push_str(&format!("signature:    none ({} does not exist)\n", sig_path.display()));
            "no: not signed".to_string()
        }
        Err(err) => return Err(format!("cannot read {}: {err}", sig_path.display())),
        Ok(file) => match parse_signatures(&file) {
            Err(err) => {
                text.push_str(&format!("signature:    {}: unreadable: {err}\n", sig_path.display()));
                "no: the signature file is malformed".to_string()
            }
            Ok(lines) => {
                text.push_str(&format!("signature:    {}\n", sig_path.display()));
                for line in &lines {
                    let verdict = verify_line(line, digest, trusted);
                    let mark = if matches!(verdict, LineVerdict::Trusted(_)) {
                        "✓"
                    } else {
                        "✗"
                    };
                    text.push_str(&format!("  {mark} {}\n", verdict.describe(line, digest, trusted)));
                    if let LineVerdict::Trusted(name) = verdict {
                        signer.get_or_insert(name);
                    }
                }
                match &signer {
                    Some(name) => format!("yes: signed by trusted key `{name}`"),
                    None => "no: no valid signature by a trusted key".to_string(),
                }
            }
        },
    };
    text.push_str(&format!("verified:     {verdict}\n"));
    Ok(VerifyReport { text, signer })
}

/// Why a plugin is not signed by a trusted key (for `--require-signed`), or whose key signed it.
pub fn check_signed(plugin: &Path, digest: &str, trusted: &TrustedKeys) -> Result<String, String> {
    let sig_path = signature_path(plugin);
    let text = match std::fs::read_to_string(&sig_path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("it has no signature file {}", sig_path.display()));
        }
        Err(err) => return Err(format!("cannot read {}: {err}", sig_path.display())),
    };
    let lines = parse_signatures(&text).map_err(|err| format!("{}: {err}", sig_path.display()))?;
    let verdicts: Vec<(LineVerdict, &SignatureLine)> = lines
        .iter()
        .map(|line| (verify_line(line, digest, trusted), line))
        .collect();
    if let Some((LineVerdict::Trusted(name), _)) = verdicts.iter().find(|(v, _)| matches!(v, LineVerdict::Trusted(_))) {
        return Ok(name.clone());
    }
    let reasons: Vec<String> = verdicts
        .iter()
        .map(|(verdict, line)| verdict.describe(line, digest, trusted))
        .collect();
    Err(format!("{}: {}", sig_path.display(), reasons.join("; ")))
}

/// A secret key read from a `PREFIX.key` file.
pub struct SecretKey {
    /// The key.
    pub key: SigningKey,
    /// Its name.
    pub name: String,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret itself: only which key it is.
        write!(f, "SecretKey({} {})", key_text(&self.key.verifying_key()), self.name)
    }
}

/// Reads a secret key file, refusing one that others can read.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read the key {}: {err}", path.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the secret key {} is readable or writable by others (mode {mode:04o}): run `chmod 600 {}` (and consider the key leaked if others did read it)",
                path.display(),
                path.display()
            ));
        }
    }
    parse_secret_key(&text).map_err(|err| format!("{}: {err}", path.display()))
}

/// Parses the text of a secret key file.
pub fn parse_secret_key(text: &str) -> Result<SecretKey, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .ok_or("no key in it")?;
    let mut fields = line.splitn(3, char::is_whitespace);
    match (fields.next(), fields.next(), fields.next().map(str::trim)) {
        (Some("ed25519-secret"), Some(seed), name) => {
            let seed = decode_fixed::<32>(seed, "secret key")?;
            Ok(SecretKey {
                key: SigningKey::from_bytes(&seed),
                name: name.filter(|name| !name.is_empty()).unwrap_or("unnamed").to_string(),
            })
        }
        (Some("ed25519"), _, _) => {
            Err("this is a public key (a PREFIX.pub file); signing needs the PREFIX.key file".into())
        }
        _ => Err("expected `ed25519-secret <base64 seed> <name>` (a file written by `runbox plugins keygen`)".into()),
    }
}

/// The text of a secret key file for `key`.
pub fn format_secret_key(key: &SigningKey, name: &str) -> String {
    format!(
        "# runbox plugin signing key `{name}`. SECRET: keep it mode 0600, never share or commit it.\ned25519-secret {} {name}\n",
        BASE64.encode(key.to_bytes())
    )
}

/// The text of a public key file for `key`: one trusted-keys line.
pub fn format_public_key(key: &VerifyingKey, name: &str) -> String {
    format!("{} {name}\n", key_text(key))
}

/// Generates a key pair from the operating system's randomness and writes
/// `PREFIX.key` (0600) and `PREFIX.pub`. Refuses to overwrite either.
pub fn keygen(prefix: &Path, name: &str) -> Result<(PathBuf, PathBuf, VerifyingKey), String> {
    if name.trim().is_empty() || name.contains(['\n', '\r']) {
        return Err("the key name must be one non-empty line".into());
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|err| format!("no randomness from the operating system: {err}"))?;
    let key = SigningKey::from_bytes(&seed);
    let with_suffix = |suffix: &str| {
        let mut path = prefix.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    };
    let (secret_path, public_path) = (with_suffix(".key"), with_suffix(".pub"));
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(format!(
                "{} already exists: runbox does not overwrite keys; choose another --out",
                path.display()
            ));
        }
    }
    write_new(&secret_path, format_secret_key(&key, name.trim()).as_bytes(), 0o600)?;
    write_new(
        &public_path,
        format_public_key(&key.verifying_key(), name.trim()).as_bytes(),
        0o644,
    )?;
    Ok((secret_path, public_path, key.verifying_key()))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// Adds `line` to the signature file `sig_path`, replacing an earlier line by the same key.
pub fn write_signature(sig_path: &Path, line: &SignatureLine) -> Result<(), String> {
    let existing = match std::fs::read_to_string(sig_path) {
        Ok(text) => parse_signatures(&text).map_err(|err| {
            format!(
                "{} exists but is not a signature file ({err}); move it away first",
                sig_path.display()
            )
        })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(format!("cannot read {}: {err}", sig_path.display())),
    };
    let mut text = String::from("# runbox plugin signatures: ed25519 <public key> sha256:<digest> <signature>\n");
    for other in existing.iter().filter(|other| other.key != line.key) {
        text.push_str(&format!("{other}\n"));
    }
    text.push_str(&format!("{line}\n"));
    let mut temp = sig_path.as_os_str().to_owned();
    temp.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, sig_path))
        .map_err(|err| {
            let _ = std::fs::remove_file(&temp);
            format!("cannot write {}: {err}", sig_path.display())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    const DIGEST: &str = "2cbe6a1e0d4c7f0b9a8e3d2c1b0a99887766554433221100ffeeddccbbaa9988";

    #[test]
    fn the_message_is_the_domain_and_the_lower_case_digest() {
        assert_eq!(
            signed_message(&DIGEST.to_ascii_uppercase()),
            format!("runbox-plugin-v1 sha256:{DIGEST}").into_bytes()
        );
    }

    #[test]
    fn a_signature_verifies_only_for_its_digest_and_only_trusted_keys_count() {
        let alice = key(1);
        let trusted = TrustedKeys {
            keys: vec![TrustedKey {
                key: alice.verifying_key(),
                name: "alice".into(),
            }],
            source: None,
        };
        let line = sign(&alice, DIGEST);
        assert_eq!(
            verify_line(&line, DIGEST, &trusted),
            LineVerdict::Trusted("alice".into())
        );
        let other = "0".repeat(64);
        assert_eq!(verify_line(&line, &other, &trusted), LineVerdict::OtherDigest);
        // The digest field rewritten to match another file does not make the signature fit it.
        let forged = SignatureLine {
            digest: other.clone(),
            ..line.clone()
        };
        assert_eq!(verify_line(&forged, &other, &trusted), LineVerdict::Invalid);
        // A signature over the bare digest, without the domain prefix, is not a plugin signature.
        let bare = SignatureLine {
            signature: alice.sign(DIGEST.as_bytes()),
            ..line.clone()
        };
        assert_eq!(verify_line(&bare, DIGEST, &trusted), LineVerdict::Invalid);
        assert_eq!(
            verify_line(&sign(&key(2), DIGEST), DIGEST, &trusted),
            LineVerdict::Untrusted
        );
    }

    #[test]
    fn signature_lines_round_trip() {
        let line = sign(&key(3), DIGEST);
        let text = format!("# comment\n\n{line}\n");
        assert_eq!(parse_signatures(&text).unwrap(), vec![line]);
    }

    #[test]
    fn bad_signature_files_say_what_is_wrong() {
        let good = sign(&key(3), DIGEST).to_string();
        let fields: Vec<&str> = good.split(' ').collect();
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "no signature in it"),
            ("# only a comment\n".into(), "no signature in it"),
            ("ed25519 abc".into(), "line 1: expected `ed25519"),
            (good.replace("ed25519", "rsa"), "unknown signature type `rsa`"),
            (good.replace("sha256:", "sha1:"), "is not `sha256:` and 64 hex digits"),
            (
                format!("{} {} sha256:abc {}", fields[0], fields[1], fields[3]),
                "is not `sha256:`",
            ),
            (
                format!("{} {} {} AAAA", fields[0], fields[1], fields[2]),
                "signature `AAAA` is 3 bytes; an ed25519 signature is 64",
            ),
            (
                format!("{} !!! {} {}", fields[0], fields[2], fields[3]),
                "public key `!!!` is not base64",
            ),
            (format!("\n{good}\nextra"), "line 3: expected"),
        ];
        for (text, expected) in cases {
            let err = parse_signatures(&text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn trusted_keys_parse_with_comments_names_and_line_numbers() {
        let alice = key(1).verifying_key();
        let bob = key(2).verifying_key();
        let text = format!(
            "# who we trust\n\n{} Alice Example <alice@example.com>\n  {} bob  \n{} duplicate of alice\n",
            key_text(&alice),
            key_text(&bob),
            key_text(&alice)
        );
        let keys = parse_trusted_keys(&text).unwrap();
        assert_eq!(
            keys,
            vec![
                TrustedKey {
                    key: alice,
                    name: "Alice Example <alice@example.com>".into()
                },
                TrustedKey {
                    key: bob,
                    name: "bob".into()
                },
            ]
        );
        assert_eq!(parse_trusted_keys("").unwrap(), vec![]);
    }

    #[test]
    fn bad_trusted_keys_lines_are_all_reported() {
        let alice = key_text(&key(1).verifying_key());
        let text = [
            alice.to_string(),
            "ssh-ed25519 AAAAC3Nza key".to_string(),
            "ed25519 notbase64! name".to_string(),
            "ed25519 AAAA name".to_string(),
            format!("{alice} ok"),
            format!("ed25519-secret {} me", BASE64.encode([7u8; 32])),
            "garbage".to_string(),
        ]
        .join("\n");
        let problems = parse_trusted_keys(&text).unwrap_err();
        let lines: Vec<usize> = problems.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 6, 7], "{problems:?}");
        assert!(problems[0].1.contains("needs a name"), "{problems:?}");
        assert!(problems[1].1.contains("unknown key type `ssh-ed25519`"), "{problems:?}");
        assert!(problems[2].1.contains("is not base64"), "{problems:?}");
        assert!(
            problems[3].1.contains("is 3 bytes; an ed25519 public key is 32"),
            "{problems:?}"
        );
        assert!(problems[4].1.contains("SECRET key"), "{problems:?}");
        assert!(problems[5].1.contains("expected `ed25519"), "{problems:?}");
    }

    #[test]
    fn secret_key_files_round_trip_and_public_ones_are_refused() {
        let secret = key(9);
        let parsed = parse_secret_key(&format_secret_key(&secret, "release key")).unwrap();
        assert_eq!(parsed.key.to_bytes(), secret.to_bytes());
        assert_eq!(parsed.name, "release key");
        let public = format_public_key(&secret.verifying_key(), "release key");
        assert!(parse_secret_key(&public).unwrap_err().contains("public key"));
        assert_eq!(
            parse_trusted_keys(&public).unwrap()[0].key,
            secret.verifying_key(),
            "a .pub file is a trusted-keys line"
        );
    }

    #[test]
    fn the_signature_file_sits_beside_the_plugin() {
        assert_eq!(signature_path(Path::new("/p/x.wasm")), Path::new("/p/x.wasm.sig"));
    }
}
