//! Loading plugins: world checks, clear errors for bad files, the compile cache.

use crate::harness::{plugin, runbox};
use runbox::runtime::{Runtime, RuntimeOptions};

fn write_temp(bytes: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, bytes).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

#[test]
fn a_component_of_another_world_names_both_worlds() {
    let path = plugin("not-a-check");
    let run = runbox(&["check", path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr
            .contains("does not implement a runbox world: expected `runbox:plugin/check@0.2.0`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("found exports: wasi:cli/run@0.2."),
        "{}",
        run.stderr
    );
}

/// A component that imports an interface the host does not offer is refused before any
/// of its code runs, naming the import.
#[test]
fn an_import_the_sandbox_does_not_offer_is_refused_by_name() {
    let path = plugin("extra_import");
    let run = runbox(&["check", path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "{} imports `runbox-test:spy/keylogger`, which the runbox sandbox does not offer",
            path.display()
        )),
        "{}",
        run.stderr
    );
    let run = runbox(&["plugins", "inspect", path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stderr.contains("runbox-test:spy/keylogger"), "{}", run.stderr);
}

#[test]
fn corrupt_files_get_a_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"#!/bin/sh\necho hi\n", "is not a WebAssembly file"),
        (b"\0asm\x01\0\0\0", "is a core WebAssembly module, not a component"),
        (b"\0asm\x0d\0\x01\0\xff\xff\xff", "corrupt or invalid component"),
    ];
    for (bytes, expected) in cases {
        let (_dir, path) = write_temp(bytes);
        let run = runbox(&["check", &path]);
        assert_eq!(run.code, 64, "{run:#?}");
        assert!(
            run.stderr.contains(&path) && run.stderr.contains(expected),
            "{expected}: {}",
            run.stderr
        );
    }
    let mut truncated = std::fs::read(plugin("redis_ping")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let (_dir, path) = write_temp(&truncated);
    let run = runbox(&["check", &path]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stderr.contains("corrupt or invalid component"), "{}", run.stderr);
}

#[test]
fn unknown_plugins_say_where_runbox_looked() {
    let run = runbox(&["check", "no-such-plugin"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("plugin `no-such-plugin` not found; looked in:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("scripts/build-plugins"), "{}", run.stderr);
    let run = runbox(&["check", "./missing/plugin.wasm"]);
    assert_eq!(run.code, 64);
    assert!(
        run.stderr.contains("plugin file ./missing/plugin.wasm does not exist"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_load_comes_from_the_compile_cache() {
    let cache = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let first = Runtime::new(options.clone())
        .unwrap()
        .load(&plugin("redis_ping"))
        .await
        .unwrap();
    assert!(first.compiled);
    let entries = cache_entries(cache.path());
    assert_eq!(
        entries.len(),
        2,
        "the compiled code and its schema's marker: {entries:?}"
    );
    let compiled = entries
        .iter()
        .find(|name| name.ends_with(".cwasm"))
        .expect("a .cwasm entry");
    assert!(entries.iter().any(|name| name.ends_with(".schema-ok")), "{entries:?}");
    let second = Runtime::new(options)
        .unwrap()
        .load(&plugin("redis_ping"))
        .await
        .unwrap();
    assert!(!second.compiled, "second load recompiled");
    assert_eq!(second.info.name, "redis-ping");
    assert_eq!(first.digest, second.digest);

    // A damaged entry is discarded and the plugin recompiled, not trusted.
    let entry = cache.path().join(compiled);
    std::fs::write(&entry, b"garbage").unwrap();
    let third = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap()
    .load(&plugin("redis_ping"))
    .await
    .unwrap();
    assert!(third.compiled);

    // Compiled code that others could have written is native code runbox would run: a
    // cache directory or entry writable by group or others is not loaded from.
    use std::os::unix::fs::PermissionsExt;
    let load = || async {
        Runtime::new(RuntimeOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap()
        .load(&plugin("redis_ping"))
        .await
        .unwrap()
        .compiled
    };
    assert!(!load().await, "the repaired entry is used");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(load().await, "loaded from a world-writable cache directory");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(load().await, "loaded a world-writable cache entry");
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!load().await);

    let uncached = Runtime::new(RuntimeOptions {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap()
    .load(&plugin("redis_ping"))
    .await
    .unwrap();
    assert!(uncached.compiled);
}

/// `runbox check` maps its compiled plugin from the cache instead of copying it
/// (`CacheReads::Map`). The mapped code runs; an entry damaged between two processes is
/// discarded and compiled again; an entry others could write is still never loaded.
#[test]
fn a_check_process_maps_its_cache_entry_and_still_refuses_bad_ones() {
    let redis = crate::harness::Redis::start();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let (url, grant) = (
        format!("url=redis://127.0.0.1:{}", redis.port),
        format!("redis://127.0.0.1:{}", redis.port),
    );
    let check = || {
        let run = runbox(&[
            "-v",
            "--cache-dir",
            cache_dir,
            "check",
            "redis-ping",
            "--with",
            &url,
            "--allow",
            &grant,
            "--format",
            "nagios",
        ]);
        assert_eq!(run.code, 0, "{run:#?}");
        assert!(run.stdout.starts_with("REDIS-PING OK - PONG"), "{}", run.stdout);
        run
    };
    let compiled = |run: &crate::harness::Run| run.stderr.contains("compiled=true");
    assert!(compiled(&check()), "the first process compiles");
    let entry = cache_entries(cache.path())
        .into_iter()
        .find(|name| name.ends_with(".cwasm"))
        .map(|name| cache.path().join(name))
        .expect("a .cwasm entry");
    let good = std::fs::read(&entry).unwrap();
    let run = check();
    assert!(
        !compiled(&run),
        "the second process runs the mapped entry: {}",
        run.stderr
    );

    std::fs::write(&entry, b"garbage").unwrap();
    let run = check();
    assert!(compiled(&run), "a damaged entry was used: {}", run.stderr);
    assert!(
        run.stderr.contains("ignoring unusable compile-cache entry"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&entry).unwrap(), good, "the entry is written again");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = check();
    assert!(compiled(&run), "a world-writable entry was mapped: {}", run.stderr);
    assert!(
        run.stderr
            .contains("not loading compiled code others could have written"),
        "{}",
        run.stderr
    );
}

/// The names in a cache directory, sorted.
fn cache_entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A schema that passed the checks is marked in the compile cache, so the next process
/// skips them (and compiles JSON Schema's meta-schema only if it validates a config it
/// has not seen): a later process still refuses a bad config, with the same message. A
/// marker others could have written is not trusted: with one for a cyclic schema, the
/// checks still run and refuse it.
#[test]
fn the_compile_cache_remembers_checked_schemas_only_when_private() {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_str().unwrap();
    let ping = plugin("redis_ping");
    let ping = ping.to_str().unwrap();
    let bad = ["--cache-dir", dir, "check", ping, "--config", r#"{"url": 5}"#];
    let first = runbox(&bad);
    assert_eq!(first.code, 64, "{first:#?}");
    assert!(
        first.stderr.contains("invalid config for plugin `redis-ping`"),
        "{first:#?}"
    );
    let entries = cache_entries(cache.path());
    assert!(entries.iter().any(|name| name.ends_with(".schema-ok")), "{entries:?}");
    assert!(
        !entries.iter().any(|name| name.ends_with(".config-ok")),
        "a refused config is not remembered: {entries:?}"
    );
    let second = runbox(&bad);
    assert_eq!((second.code, &second.stderr), (first.code, &first.stderr));
    // A config the schema accepted is remembered, and the next process trusts it.
    let good = [
        "--cache-dir",
        dir,
        "check",
        ping,
        "--with",
        "url=redis://127.0.0.1:1",
        "--allow",
        "redis://127.0.0.1:1",
    ];
    for _ in 0..2 {
        let run = runbox(&good);
        assert_eq!(run.code, 2, "nothing listens on port 1: {run:#?}");
        let entries = cache_entries(cache.path());
        assert_eq!(
            entries.iter().filter(|name| name.ends_with(".config-ok")).count(),
            1,
            "{entries:?}"
        );
    }

    // The marker a cyclic schema would have, had it passed: writable by others.
    let compiled = entries
        .iter()
        .find(|name| name.ends_with(".cwasm"))
        .expect("a .cwasm entry");
    let engine = compiled
        .rsplit_once('-')
        .unwrap()
        .1
        .trim_end_matches(".cwasm")
        .to_string();
    let cyclic = r##"{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}"##;
    let marker = cache
        .path()
        .join(format!("{}-{engine}.schema-ok", hex::encode(Sha256::digest(cyclic))));
    std::fs::write(&marker, b"").unwrap();
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o666)).unwrap();
    let hostile = crate::harness::plugin_dir().join("hostile/hostile-info-cyclic-ref.wasm");
    let run = runbox(&["--cache-dir", dir, "check", hostile.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stderr.contains("has a cycle of `$ref`s"), "{run:#?}");
}
