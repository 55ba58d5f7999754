//! On-disk cache of compiled plugins, keyed by the component's SHA-256 and the engine.
//!
//! Loading a cached entry maps native code produced by an earlier run, so whoever can
//! write to the cache directory can run code as runbox: the directory is created
//! private to the user (0700), and entries are written atomically (a uniquely named
//! temp file, then rename) so a crash or a concurrent writer never leaves a
//! half-written entry under a valid name.
//!
//! Entries are read into memory ([`CacheReads::Copy`]) in every process that lives
//! longer than one check: a mapped file that someone truncates or rewrites in place
//! while the process runs would kill it with SIGBUS, or change code it already checked.
//! `runbox check` lives a few milliseconds and maps its one entry ([`CacheReads::Map`]):
//! copying ~0.6 MB into fresh memory was ~300 page faults, a seventh of its time.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled plugins are kept.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    reads: CacheReads,
}

/// How a cached entry is brought into memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheReads {
    /// Read into memory the process owns: nothing done to the file later can affect
    /// the process. Runbooks, `serve`, the library's default.
    #[default]
    Copy,
    /// Mapped from the file (`Component::deserialize_file`): no copy, and only the pages
    /// used are faulted in. Truncating or rewriting the file in place while the process
    /// runs would kill it (SIGBUS) or change its code; runbox itself only ever replaces
    /// entries by rename, which leaves a mapped file intact. For processes that live
    /// milliseconds: `runbox check`.
    Map,
}

impl CompileCache {
    /// A cache in `dir` for code compiled by `engine`, read as `reads` says.
    pub fn new(dir: PathBuf, engine: &Engine, reads: CacheReads) -> CompileCache {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        CompileCache { dir, engine_key, reads }
    }

    /// The default directory: `$RUNBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/runbox`, else
    /// `~/.cache/runbox`.
    pub fn default_dir() -> Option<PathBuf> {
        crate::dirs::runbox_path("RUNBOX_CACHE_DIR", "XDG_CACHE_HOME", ".cache", "")
    }

    fn entry(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `digest`, if cached and loadable by this engine.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry(digest);
        if let Err(why) = private_to_us(&self.dir).and_then(|()| private_to_us(&path)) {
            if path.exists() {
                tracing::warn!(path = %path.display(), reason = %why, "not loading compiled code others could have written; compiling again");
            }
            return None;
        }
        // SAFETY: entries are only ever written by `store` below from code this
        // engine configuration compiled, in a directory private to this user; wasmtime
        // additionally checks the entry's header against the engine. A mapped entry is
        // never changed in place by runbox (`write_atomically` renames a new file over
        // it), and no one else may write to it (`private_to_us`).
        let loaded = match self.reads {
            CacheReads::Copy => {
                let bytes = std::fs::read(&path).ok()?;
                unsafe { Component::deserialize(engine, &bytes) }
            }
            CacheReads::Map => unsafe { Component::deserialize_file(engine, &path) },
        };
        match loaded {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "ignoring unusable compile-cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `component` compiled from bytes with `digest`. Failures are logged, not
    /// fatal: the cache only saves time.
    pub fn store(&self, digest: &str, component: &Component) {
        if let Err(err) = self.try_store(digest, component) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "could not write compile cache");
        }
    }

    fn try_store(&self, digest: &str, component: &Component) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        private_to_us(&self.dir).map_err(std::io::Error::other)?;
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        write_atomically(&self.entry(digest), &bytes)
    }
}

impl CompileCache {
    /// A marker entry: `{sha256(text)}-{engine}.{kind}`, empty.
    fn marker(&self, kind: &str, text: &str) -> PathBuf {
        self.dir
            .join(format!("{}-{}.{kind}", digest(text.as_bytes()), self.engine_key))
    }

    fn marked(&self, kind: &str, text: &str) -> bool {
        let path = self.marker(kind, text);
        private_to_us(&self.dir).and_then(|()| private_to_us(&path)).is_ok()
    }

    fn mark(&self, kind: &str, text: &str) {
        let written = create_private_dir(&self.dir)
            .and_then(|()| private_to_us(&self.dir).map_err(std::io::Error::other))
            .and_then(|()| write_atomically(&self.marker(kind, text), b""));
        // Only time is lost, and a cache that an image ships read-only would otherwise
        // print this on every `runbox check` of a config it has not seen.
        if let Err(err) = written {
            tracing::debug!(dir = %self.dir.display(), error = %err, "could not write a mark to the compile cache");
        }
    }

    /// Whether a config schema with exactly this text passed [`crate::schema`]'s checks
    /// before, in this version of runbox: a private, empty entry named by the text's
    /// SHA-256 says so. The checks compile JSON Schema's meta-schema, several
    /// milliseconds of a `runbox check` process.
    pub fn schema_passed(&self, schema: &str) -> bool {
        self.marked("schema-ok", schema)
    }

    /// Records that `schema` passed the checks (only ever called after it did).
    pub fn mark_schema_passed(&self, schema: &str) {
        self.mark("schema-ok", schema);
    }

    /// Whether `schema_and_config` (a schema's JSON, NUL, a config's JSON) was a config
    /// its schema accepted, in this version of runbox.
    pub fn config_passed(&self, schema_and_config: &str) -> bool {
        self.marked("config-ok", schema_and_config)
    }

    /// Records that the schema accepted the config (only ever called after it did).
    pub fn mark_config_passed(&self, schema_and_config: &str) {
        self.mark("config-ok", schema_and_config);
    }
}

/// Writes `bytes` to `path` so that no reader ever sees a partial file: a uniquely named
/// temp file in the same directory, fsync'd, then renamed over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(err) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    Ok(())
}

/// Creates `dir` (and its parents) private to the user: 0700.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Feeds `Hash` output into SHA-256 so the key is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex SHA-256 of the file at `path` and its first eight bytes (fewer if it is shorter),
/// read in small pieces: a cache hit never needs the whole file in memory, and a fresh
/// buffer of a plugin's size is a page fault per 4 KiB.
pub fn digest_file(path: &Path) -> std::io::Result<(String, Vec<u8>)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(8);
    let mut buffer = vec![0; 64 << 10];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        let wanted = (8 - head.len()).min(read);
        head.extend_from_slice(&buffer[..wanted]);
        hasher.update(&buffer[..read]);
    }
    Ok((hex::encode(hasher.finalize()), head))
}

/// Ok when `path` is owned by the effective user and no one else may write to it: a
/// compiled entry is native code runbox will execute, so one that another user could
/// have written is never loaded.
fn private_to_us(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|err| err.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(format!(
            "{} is owned by uid {}, not by us (uid {euid})",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashing a file in pieces gives the digest of its whole contents, and its first
    /// eight bytes, for files shorter than the header, than one piece and than several.
    #[test]
    fn a_file_digested_in_pieces_matches_its_whole_digest() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 3, 8, 64 << 10, (200 << 10) + 7] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let path = dir.path().join(format!("{len}.wasm"));
            std::fs::write(&path, &bytes).unwrap();
            let (hex, head) = digest_file(&path).unwrap();
            assert_eq!(hex, digest(&bytes), "{len} bytes");
            assert_eq!(head, bytes[..len.min(8)], "{len} bytes");
        }
        assert!(digest_file(&dir.path().join("missing.wasm")).is_err());
    }
}
