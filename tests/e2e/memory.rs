//! Host memory a plugin could make runbox spend outside its memory cap: hostile config
//! schemas from `info()`, huge or countless secret names and lookups, empty log lines in
//! a loop; and a plugin whose initial memory is above the default, which must load where
//! the operator allows it.
//!
//! Each attack runs in its own `runbox` process, whose peak RSS (its own `VmHWM`, sampled
//! every 2 ms until it exits) must stay within [`HEADROOM`] of a normal run of a small plugin. A watchdog kills a
//! runbox that grows past [`KILL_ABOVE`] or runs past [`KILL_AFTER`], so a missing bound
//! fails the test instead of exhausting the machine.

use crate::harness::{Run, cache_dir, plugin_dir, runbox};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How much more than a normal run an attack may make runbox hold at its peak.
const HEADROOM: u64 = 64 << 20;

/// A runbox whose resident memory passes this is killed (the bound is missing).
const KILL_ABOVE: u64 = 1 << 30;

/// A runbox still running after this is killed (a CPU hang is as bad as memory).
const KILL_AFTER: Duration = Duration::from_secs(60);

/// One `runbox` process: what it did, and its peak resident memory in bytes.
struct Measured {
    run: Run,
    peak: u64,
}

/// Runs `runbox` with `args` (with the test plugin dir and cache, like
/// [`crate::harness::runbox`]) under the watchdog, and measures its peak RSS.
fn measure(args: &[&str]) -> Measured {
    measure_with_cache(args, cache_dir())
}

/// [`measure`] with its own compile cache: no other test's process writes the entries it
/// reads, so a warm run is warm (a compile would add tens of MiB to the peak).
fn measure_with_cache(args: &[&str], cache: &std::path::Path) -> Measured {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbox"))
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .args(args)
        .env("RUNBOX_CACHE_DIR", cache)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runbox starts");
    let pid = child.id() as libc::pid_t;
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let exited = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(Mutex::new(None::<String>));
    // The peak is the child's own VmHWM, sampled every 2 ms until it exits. Not the
    // rusage ru_maxrss: Linux carries the spawning process's high-water mark into it at
    // exec, so it reports at least this test process's own peak.
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watchdog = {
        let (exited, killed, peak) = (exited.clone(), killed.clone(), peak.clone());
        std::thread::spawn(move || {
            while !exited.load(Ordering::Relaxed) {
                let rss = resident_bytes(pid);
                peak.fetch_max(status_bytes(pid, "VmHWM:"), Ordering::Relaxed);
                let reason = if rss > KILL_ABOVE {
                    Some(format!("resident memory passed {} MiB", KILL_ABOVE >> 20))
                } else if started.elapsed() > KILL_AFTER {
                    Some(format!("still running after {KILL_AFTER:?}"))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    *killed.lock().unwrap() = Some(reason);
                    // SAFETY: plain syscall; the child is not reaped yet (waitid below
                    // leaves it a zombie), so the pid is still ours.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Wait for the exit without reaping, so the watchdog never signals a reused pid.
    // SAFETY: plain syscalls on our own child; the structs are plain data.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        assert_eq!(
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT),
            0
        );
    }
    exited.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: as above; this reaps the child and reads its resource usage.
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    drop(child);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    if let Some(reason) = killed.lock().unwrap().take() {
        panic!(
            "runbox {args:?} was killed: {reason} (peak RSS {} MiB); stderr: {}",
            peak.load(Ordering::Relaxed) >> 20,
            &stderr[..stderr.len().min(2000)]
        );
    }
    assert!(
        libc::WIFEXITED(status),
        "runbox {args:?} ended by signal {}",
        libc::WTERMSIG(status)
    );
    Measured {
        run: Run {
            code: libc::WEXITSTATUS(status),
            stdout,
            stderr,
            elapsed: started.elapsed(),
        },
        peak: peak.load(Ordering::Relaxed),
    }
}

/// Current resident memory of `pid` (0 once it is gone).
fn resident_bytes(pid: libc::pid_t) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status` in bytes (0 once the process is gone).
fn status_bytes(pid: libc::pid_t, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Runs `args` once unmeasured (so the plugin comes from the compile cache afterwards,
/// as in the normal run), then measured.
fn measure_warm(args: &[&str]) -> Measured {
    let cache = tempfile::tempdir().expect("a cache directory");
    measure_with_cache(args, cache.path());
    measure_with_cache(args, cache.path())
}

/// Peak RSS of a normal run: `runbox check noop-check`, from the compile cache.
fn normal_peak() -> u64 {
    static PEAK: OnceLock<u64> = OnceLock::new();
    *PEAK.get_or_init(|| {
        let normal = measure_warm(&["check", "noop-check"]);
        assert_eq!(normal.run.code, 0, "{:#?}", normal.run);
        normal.peak
    })
}

/// Asserts that `measured` stayed within [`HEADROOM`] of a normal run.
fn assert_bounded(what: &str, measured: &Measured) {
    let normal = normal_peak();
    assert!(
        measured.peak <= normal + HEADROOM,
        "{what}: peak RSS {} MiB, normal run {} MiB (allowed {} MiB more)",
        measured.peak >> 20,
        normal >> 20,
        HEADROOM >> 20
    );
}

fn hostile_info(variant: &str) -> PathBuf {
    plugin_dir().join(format!("hostile/hostile-info-{variant}.wasm"))
}

/// The one step's JSON result of a `--format json` run.
fn step(run: &Run) -> serde_json::Value {
    run.json()["steps"][0].clone()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| {
            item.as_str()
                .unwrap_or_else(|| panic!("not a string: {item}"))
                .to_string()
        })
        .collect()
}

fn runbook(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A config schema from `info()` is checked before it is compiled: a `$ref` cycle
/// (which grew runbox ~1.5 GiB/s while validating a config), 120 nested `items` (~1 GiB
/// to load) and refs that double at each link are refused at load with exit 64, naming
/// the file and the fix; a 4 KiB schema with 128 distinct keyword paths (~1 GiB to
/// load through jsonschema's meta-schema check) loads in bounded memory.
#[test]
fn hostile_config_schemas_are_refused_or_compiled_within_bounds() {
    let cases = [
        (
            "cyclic-ref",
            64,
            "has a cycle of `$ref`s through `#/$defs/a`; config schemas cannot be recursive",
        ),
        (
            "deep-items",
            64,
            "its config schema nests deeper than 32 levels at `/items/items/",
        ),
        (
            "ref-doubling",
            64,
            "values once its `$ref`s are expanded; the limit is 10000",
        ),
        (
            "keyword-paths",
            0,
            "OK        hostile-info  ran with 0 MiB of static memory",
        ),
    ];
    for (variant, code, expected) in cases {
        let path = hostile_info(variant);
        let path = path.to_str().unwrap();
        let measured = measure_warm(&["check", path]);
        let run = &measured.run;
        assert_eq!(run.code, code, "{variant}: {run:#?}");
        if code == 64 {
            assert!(
                run.stderr
                    .starts_with(&format!("error: {path} is not a usable plugin: its config schema ")),
                "{variant}: {}",
                run.stderr
            );
        }
        assert!(
            run.stderr.contains(expected) || run.stdout.contains(expected),
            "{variant}: {run:#?}"
        );
        assert!(
            run.elapsed < Duration::from_secs(10),
            "{variant}: took {:?}",
            run.elapsed
        );
        assert_bounded(variant, &measured);
    }

    // `validate` checks configs against the schema too: the cyclic one is refused there
    // as well, at the step's `uses:` line.
    let dir = tempfile::tempdir().unwrap();
    let book = runbook(
        &dir,
        "book.yaml",
        &format!(
            "name: hostile\nsteps:\n  - id: cyclic\n    uses: {}\n    with: {{a: [[[1]]]}}\n",
            hostile_info("cyclic-ref").display()
        ),
    );
    let measured = measure(&["validate", &book]);
    assert_eq!(measured.run.code, 64, "{:#?}", measured.run);
    assert!(
        measured.run.stderr.contains("book.yaml:4: step `cyclic`: ")
            && measured.run.stderr.contains("cycle of `$ref`s"),
        "{}",
        measured.run.stderr
    );
    assert_bounded("validate cyclic-ref", &measured);
}

/// `host.secret` with 300 distinct names of 1 MiB (held whole, they cost the host over
/// 1 GiB) and with 100,000 distinct names (~90,000 denials kept through a quadratic
/// dedupe): 32 denials are kept, with cut names, and the rest counted.
#[test]
fn huge_and_countless_secret_names_are_denied_within_bounds() {
    let measured = measure_warm(&[
        "check",
        "mischief",
        "--with",
        "mode=secret-names",
        "--with",
        "size=1048576",
        "--format",
        "json",
    ]);
    let step = step(&measured.run);
    assert_eq!(
        step["summary"], "asked for 300 secrets of 1048576 bytes, 0 granted",
        "{step}"
    );
    let denied = strings(&step["denied"]);
    assert_eq!(denied.len(), 33, "{denied:?}");
    assert!(
        denied[0].starts_with("secret `00000000ssss")
            && denied[0].contains("ss…` denied: no secret can have that name"),
        "{}",
        denied[0]
    );
    assert!(denied.iter().all(|line| line.len() < 1200), "a denial is kept whole");
    assert_eq!(
        denied[32],
        "… 268 more denials not shown (only the first 32 distinct denials are kept)"
    );
    assert_bounded("300 secret names of 1 MiB", &measured);

    let measured = measure_warm(&[
        "check",
        "mischief",
        "--with",
        "mode=secret-count",
        "--with",
        "size=100000",
        "--format",
        "json",
    ]);
    let step = self::step(&measured.run);
    assert_eq!(step["summary"], "asked for 100000 secrets, 0 granted", "{step}");
    let denied = strings(&step["denied"]);
    assert_eq!(denied.len(), 33, "{denied:?}");
    assert_eq!(
        denied[0],
        "secret `no_such_secret_0` denied: the step grants no secret by that name — add `--secret no_such_secret_0=env:VAR` (or file:PATH)"
    );
    assert_eq!(
        denied[32],
        "… 99968 more denials not shown (only the first 32 distinct denials are kept)"
    );
    assert!(
        measured.run.elapsed < Duration::from_secs(5),
        "took {:?}",
        measured.run.elapsed
    );
    assert_bounded("100,000 secret names", &measured);
}

/// 100,000 distinct denied lookups share the same 32-entry list as secrets, and the
/// report says how many were not kept.
#[test]
fn countless_denied_lookups_keep_32_and_count_the_rest() {
    let measured = measure_warm(&[
        "check",
        "mischief",
        "--with",
        "mode=lookup-count",
        "--with",
        "size=100000",
        "--format",
        "json",
    ]);
    let step = step(&measured.run);
    assert_eq!(step["summary"], "100000 of 100000 lookups refused", "{step}");
    let denied = strings(&step["denied"]);
    assert_eq!(denied.len(), 33, "{denied:?}");
    assert!(
        denied[0].starts_with("name lookup of `n0.attacker.example` denied"),
        "{}",
        denied[0]
    );
    assert_eq!(
        denied[32],
        "… 99968 more denials not shown (only the first 32 distinct denials are kept)"
    );
    assert_bounded("100,000 lookups", &measured);
}

/// A name longer than a DNS name (253 bytes) is refused with `invalid-argument` before
/// the policy records it or the host keeps it per open lookup; 1,000 lookups of 1 MiB
/// names leave no trace but the plugin's own error.
#[test]
fn lookup_names_longer_than_dns_allows_are_invalid_arguments() {
    let measured = measure_warm(&[
        "check",
        "mischief",
        "--with",
        "mode=lookup-names",
        "--with",
        "size=1048576",
        "--format",
        "json",
    ]);
    let step = step(&measured.run);
    let summary = step["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("0 lookups started, refused: {\"ErrorCode { code: 3, name: \\\"invalid-argument\\\"")
            && summary.ends_with(": 1000}"),
        "{summary}"
    );
    assert!(strings(&step["denied"]).is_empty(), "{step}");
    assert_bounded("1,000 lookups of 1 MiB names", &measured);
}

/// `host.log` with 5,000,000 empty lines: each line counts against the 64 KiB log cap,
/// so about a thousand are kept and the rest counted.
#[test]
fn empty_log_lines_in_a_loop_are_capped() {
    let measured = measure_warm(&[
        "check",
        "mischief",
        "--with",
        "mode=log-spam",
        "--with",
        "size=5000000",
        "--format",
        "json",
    ]);
    let step = step(&measured.run);
    assert_eq!(step["summary"], "logged 5000000 empty lines", "{step}");
    let logs = step["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1025, "{}", logs.len());
    assert_eq!(
        logs[1024]["message"],
        "4998976 further log lines dropped (log cap reached)"
    );
    assert_bounded("5,000,000 empty log lines", &measured);
}

/// A plugin whose initial memory is 81 MiB cannot load under the default 64 MiB, and
/// says how to allow it; `check --memory`, `plugins inspect --memory`, a step's
/// `memory:` and `run --memory` apply to its `info()` too, so it loads where allowed.
#[test]
fn a_plugin_needing_more_than_64_mib_loads_where_it_is_allowed() {
    let big = hostile_info("big-memory");
    let big = big.to_str().unwrap();
    let run = runbox(&["check", big]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert_eq!(
        run.stderr.trim(),
        format!(
            "error: {big}: info() failed: plugin stopped: memory limit of 64 MiB exceeded (the plugin asked for 81 MiB); allow it more with `--memory` (runbox check, runbox run) or the step's `memory:`"
        )
    );
    let run = runbox(&["check", big, "--memory", "128MiB"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("ran with 80 MiB of static memory"),
        "{}",
        run.stdout
    );
    let run = runbox(&["plugins", "inspect", big, "--memory", "96MiB"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let run = runbox(&["check", big, "--memory", "2GiB"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("a plugin's memory is from 1MiB to 1GiB"),
        "{}",
        run.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let step = |memory: &str| format!("name: big\nsteps:\n  - id: big\n    uses: {big}\n{memory}");
    let allowed = runbook(&dir, "allowed.yaml", &step("    memory: 128MiB\n"));
    let run = runbox(&["run", &allowed]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("ran with 80 MiB of static memory"),
        "{}",
        run.stdout
    );

    let default = runbook(&dir, "default.yaml", &step(""));
    let run = runbox(&["run", &default]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("default.yaml:4: step `big`: ") && run.stderr.contains("allow it more with `--memory`"),
        "{}",
        run.stderr
    );
    let run = runbox(&["run", &default, "--memory", "100MiB"]);
    assert_eq!(run.code, 0, "{run:#?}");
    // The operator's --memory overrides the step's, down as well as up.
    let run = runbox(&["run", &allowed, "--memory", "64MiB"]);
    assert_eq!(run.code, 64, "{run:#?}");

    let bad = runbook(
        &dir,
        "bad.yaml",
        &format!(
            "{}  - id: other\n    uses: {big}\n    memory: lots\n",
            step("    memory: 2GiB\n")
        ),
    );
    let run = runbox(&["validate", &bad]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr
            .contains("bad.yaml:5: step `big`: memory: `2GiB`: a plugin's memory is from 1MiB to 1GiB"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("bad.yaml:8: step `other`: memory: `lots`: expected a size such as 64MiB"),
        "{}",
        run.stderr
    );
}

/// wasmtime-wasi-http keeps what an outgoing request is given: 300 unsent requests with
/// their bodies written buffered 2 MiB each (600 MiB), 900 requests given a 1 MiB method
/// kept 931 MiB, and copies of a header map could be 128 KiB each. Body writes are now
/// 32 KiB (two buffered per body), request strings and headers are capped, and at most
/// 1,000 handles are held.
#[test]
fn http_requests_cannot_make_the_host_hold_their_strings_bodies_or_headers() {
    let check = |mode: &str, size: &str| {
        measure_warm(&[
            "check",
            "mischief",
            "--with",
            &format!("mode={mode}"),
            "--with",
            &format!("size={size}"),
        ])
    };
    let measured = check("http-bodies", "300");
    assert_eq!(
        measured.run.stdout.trim(),
        "OK        mischief  300 requests hold 18 MiB of unsent body"
    );
    assert_bounded("300 unsent request bodies", &measured);

    let measured = check("http-method", "900");
    assert_eq!(
        measured.run.stdout.trim(),
        "OK        mischief  900 requests, 0 took a 1 MiB method"
    );
    assert_bounded("900 requests with 1 MiB methods", &measured);

    let measured = check("http-fields", "9000");
    assert_eq!(
        measured.run.stdout.trim(),
        "UNKNOWN   mischief  plugin stopped: it held more than 1000 handles (sockets, streams, timers) at once"
    );
    assert_bounded("9,000 copies of a header map", &measured);
}
