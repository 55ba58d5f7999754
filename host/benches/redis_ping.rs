//! The benchmark suite (issue 9), all in one run against one real redis-server on
//! loopback, each figure with its baseline from the same run:
//! - loading redis-ping cold (compile) vs from the compile cache;
//! - the sandbox's own cost: a no-op check (new store, instantiate, call, teardown);
//! - one redis-ping check through runbox vs a native Rust connect+PING vs spawning
//!   `redis-cli ping` (what a Nagios-style runner does);
//! - the same over TLS: redis-ping on `rediss://` with the step's CA (connect, full
//!   handshake, PING, close) vs a native rustls client (ring, no session resumption)
//!   doing the same against the same TLS redis-server, the two ratios side by side;
//! - `runbox run` of 1,000 independent redis-ping steps with `--parallel 64`: wall time,
//!   checks/s, peak RSS;
//! - `runbox run` of a 6-step runbook as a whole process, warm vs cold cache, vs a
//!   shell script running the six equivalent `runbox check` commands. Prints median and p99 and ratios to the baselines.
//!
//! Run with `scripts/bench` (builds the plugins, then `cargo bench --profile dev`).

use runbox::capabilities::Grants;
use runbox::capabilities::tls::{TlsSettings, Trust};
use runbox::result::Status;
use runbox::runtime::{Limits, Runtime, RuntimeOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

// The test harness starts the real redis-server and finds the built plugins; its TLS
// fixtures mint the certificates and start redis-server with TLS.
#[allow(dead_code)]
#[path = "../../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../../tests/e2e/tls_servers.rs"]
mod tls_servers;

struct Stats {
    name: &'static str,
    median: Duration,
    p99: Duration,
    samples: usize,
}

fn measure(name: &'static str, samples: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..samples.div_ceil(10).max(1) {
        f();
    }
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    let p99 = times[((samples * 99).div_ceil(100)).saturating_sub(1).min(samples - 1)];
    Stats {
        name,
        median: times[samples / 2],
        p99,
        samples,
    }
}

fn print(stats: &[Stats], baseline: &Stats) {
    for s in stats {
        println!(
            "  {:<34} median {:>10.1} µs   p99 {:>10.1} µs   {:>7.2}× {}   (n={})",
            s.name,
            s.median.as_secs_f64() * 1e6,
            s.p99.as_secs_f64() * 1e6,
            s.median.as_secs_f64() / baseline.median.as_secs_f64(),
            baseline.name,
            s.samples
        );
    }
}

fn native_ping(port: u16) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    assert_eq!(&reply, b"+PONG\r\n");
    Ok(())
}

/// A rustls client configuration like the host's: ring, TLS 1.2 and 1.3, trusting `ca`,
/// no session resumption (every connection does a full handshake).
fn native_tls_config(ca: &std::path::Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    std::sync::Arc::new(config)
}

/// Connect, full TLS handshake (verifying the chain and the name), PING, PONG, close.
fn native_tls_ping(port: u16, config: &std::sync::Arc<rustls::ClientConfig>) -> std::io::Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let connection = rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    tls.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut reply = [0u8; 7];
    tls.read_exact(&mut reply)?;
    assert_eq!(&reply, b"+PONG\r\n");
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}

/// `RUNBOX_BENCH_LOOP=N[:noop]`: instead of the suite, run N sandboxed redis-ping (or
/// no-op) checks in a loop, for a profiler (`perf record`; docs/performance.md).
fn profile_loop(spec: &str) {
    let (count, plugin) = match spec.split_once(':') {
        Some((count, "noop")) => (count, "noop_check"),
        _ => (spec, "redis_ping"),
    };
    let iterations: usize = count.parse().expect("RUNBOX_BENCH_LOOP=N[:noop]");
    let redis = harness::Redis::start();
    let tokio = if std::env::var_os("RUNBOX_BENCH_CURRENT_THREAD").is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let scratch = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(scratch.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let loaded = tokio.block_on(runtime.load(&harness::plugin(plugin))).unwrap();
    let config = serde_json::json!({"url": format!("redis://127.0.0.1:{}", redis.port)});
    let grants = Grants {
        network: vec![format!("redis://127.0.0.1:{}", redis.port).parse().unwrap()],
        ..Grants::default()
    };
    let config = if plugin == "noop_check" {
        serde_json::json!({})
    } else {
        config
    };
    let limits = Limits::default();
    let concurrency: usize = std::env::var("RUNBOX_BENCH_CONCURRENCY")
        .ok()
        .map(|c| c.parse().unwrap())
        .unwrap_or(1);
    let (runtime, loaded, config, grants) = (
        std::sync::Arc::new(runtime),
        std::sync::Arc::new(loaded),
        std::sync::Arc::new(config),
        std::sync::Arc::new(grants),
    );
    let started = Instant::now();
    tokio.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (runtime, loaded, config, grants) = (runtime.clone(), loaded.clone(), config.clone(), grants.clone());
            tasks.spawn(async move {
                for _ in 0..iterations / concurrency {
                    let outcome = runtime.run_check(&loaded, &config, &grants, &limits).await;
                    assert_eq!(outcome.status, Status::Ok, "{}", outcome.summary);
                }
            });
        }
        tasks.join_all().await;
    });
    println!(
        "{plugin}: {:.1} µs per check",
        started.elapsed().as_secs_f64() * 1e6 / iterations as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    if let Ok(spec) = std::env::var("RUNBOX_BENCH_LOOP") {
        return profile_loop(&spec);
    }
    match std::env::var("RUNBOX_BENCH_ONLY").as_deref() {
        Ok("serve") => {
            let redis = harness::Redis::start();
            serve_vs_blackbox(redis.port);
            return;
        }
        Ok("process") => {
            let redis = harness::Redis::start();
            let scratch = tempfile::tempdir().unwrap();
            process_vs_check_tcp(redis.port, scratch.path());
            return;
        }
        _ => {}
    }
    let plugin = harness::plugin("redis_ping");
    let scratch = tempfile::tempdir().unwrap();
    let redis = harness::Redis::start();
    let port = redis.port;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `runbox check` runs its one plugin on a current-thread runtime; `runbox run` runs
    // steps on the multi-threaded one's workers. Both are measured.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    println!(
        "load redis-ping ({} KiB component)",
        std::fs::metadata(&plugin).unwrap().len() / 1024
    );
    let uncached = Runtime::new(RuntimeOptions {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let cold = measure("cold: compile + checks + info()", 10, || {
        let loaded = tokio.block_on(uncached.load(&plugin)).unwrap();
        assert!(loaded.compiled);
    });
    let cached = std::sync::Arc::new(
        Runtime::new(RuntimeOptions {
            cache_dir: Some(scratch.path().join("cache")),
            ..Default::default()
        })
        .unwrap(),
    );
    tokio.block_on(cached.load(&plugin)).unwrap();
    let warm = measure("warm: cache load + checks + info()", 50, || {
        let loaded = tokio.block_on(cached.load(&plugin)).unwrap();
        assert!(!loaded.compiled);
    });
    let cold_median = cold.median;
    print(
        &[cold, warm],
        &Stats {
            name: "cold",
            median: cold_median,
            p99: Duration::ZERO,
            samples: 0,
        },
    );

    println!(
        "\nsandbox overhead: a no-op check (new store + instantiate + call + teardown), in one task on a current-thread runtime"
    );
    let noop = tokio.block_on(cached.load(&harness::plugin("noop_check"))).unwrap();
    let empty = serde_json::json!({});
    let no_grants = Grants::default();
    let noop_stats = single.block_on(measure_async("no-op check", 5000, || async {
        let outcome = cached.run_check(&noop, &empty, &no_grants, &Limits::default()).await;
        assert_eq!(outcome.status, Status::Ok);
    }));
    let noop_median = noop_stats.median;
    print(
        &[noop_stats],
        &Stats {
            name: "no-op",
            median: noop_median,
            p99: Duration::ZERO,
            samples: 0,
        },
    );

    println!("\none check (connect + PING + close) against redis-server on 127.0.0.1:{port}");
    let loaded = std::sync::Arc::new(tokio.block_on(cached.load(&plugin)).unwrap());
    let config = serde_json::json!({"url": format!("redis://127.0.0.1:{port}")});
    let grants = Grants {
        network: vec![format!("redis://127.0.0.1:{port}").parse().unwrap()],
        ..Grants::default()
    };
    let limits = Limits::default();
    let native = measure("native Rust connect+PING", 2000, || native_ping(port).unwrap());
    let through_runbox = single.block_on(measure_async("runbox redis-ping (as runbox check)", 2000, || async {
        let outcome = cached.run_check(&loaded, &config, &grants, &limits).await;
        assert_eq!(outcome.status, Status::Ok, "{}", outcome.summary);
    }));
    // The same, on a tokio worker thread (where `runbox run` executes steps).
    let on_worker = {
        let (cached, loaded, config, grants) = (cached.clone(), loaded.clone(), config.clone(), grants.clone());
        tokio
            .block_on(tokio.spawn(async move {
                measure_async("redis-ping on a worker (runbox run)", 2000, || async {
                    let outcome = cached.run_check(&loaded, &config, &grants, &limits).await;
                    assert_eq!(outcome.status, Status::Ok, "{}", outcome.summary);
                })
                .await
            }))
            .unwrap()
    };
    let spawn_cli = measure("spawn `redis-cli ping`", 200, || {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .output()
            .expect("redis-cli installed");
        assert_eq!(output.stdout, b"PONG\n");
    });
    let native_median = native.median;
    let spawn_median = spawn_cli.median;
    let runbox_median = through_runbox.median;
    print(
        &[native, through_runbox, on_worker, spawn_cli],
        &Stats {
            name: "native",
            median: native_median,
            p99: Duration::ZERO,
            samples: 0,
        },
    );

    process_vs_check_tcp(port, scratch.path());

    println!(
        "\none check over TLS (connect + full handshake + PING + close) against redis-server with TLS (OpenSSL) on 127.0.0.1"
    );
    let pki = tls_servers::Pki::new();
    let tls_redis = tls_servers::TlsRedis::start(&pki, &pki.server, false);
    let tls_port = tls_redis.port;
    let tls_config = native_tls_config(&pki.ca.pem_file);
    let native_tls = measure("native rustls connect+handshake+PING", 1000, || {
        native_tls_ping(tls_port, &tls_config).unwrap()
    });
    let runbox_tls = runbox_tls_check(&single, &cached, &pki, tls_port);
    let native_tls_median = native_tls.median;
    let runbox_tls_median = runbox_tls.median;
    print(
        &[native_tls, runbox_tls],
        &Stats {
            name: "native TLS",
            median: native_tls_median,
            p99: Duration::ZERO,
            samples: 0,
        },
    );
    drop(tls_redis);

    println!(
        "\na runbook of 1,000 independent redis-ping steps, --parallel 64, as one `runbox run` process (warm cache)"
    );
    let big = runbook(scratch.path(), "thousand", 1000, port);
    let cache = scratch.path().join("cache");
    let env = [("RUNBOX_CACHE_DIR", cache.to_str().unwrap())];
    run_process(&big, &["--parallel", "64"], &env); // warm the cache
    let mut runs: Vec<(Duration, f64, u64)> = (0..5).map(|_| run_process(&big, &["--parallel", "64"], &env)).collect();
    runs.sort_by_key(|r| r.0);
    let (wall, executor_ms, peak_kib) = runs[runs.len() / 2];
    let checks_per_s = 1000.0 / wall.as_secs_f64();
    println!(
        "  wall {:.0} ms (median of 5 processes): {checks_per_s:.0} checks/s; steps alone {executor_ms:.0} ms = {:.0} checks/s; peak RSS {:.1} MiB",
        wall.as_secs_f64() * 1e3,
        1000.0 / (executor_ms / 1e3),
        peak_kib as f64 / 1024.0
    );

    println!("\na 6-step runbook as a whole process vs a shell script of the six `runbox check` commands");
    let six = runbook(scratch.path(), "six", 6, port);
    let warm_run = measure("runbox run (warm cache)", 20, || {
        run_process(&six, &[], &env);
    });
    let cold_dir = scratch.path().join("cold");
    let cold_run = measure("runbox run (empty cache)", 5, || {
        let _ = std::fs::remove_dir_all(&cold_dir);
        run_process(&six, &[], &[("RUNBOX_CACHE_DIR", cold_dir.to_str().unwrap())]);
    });
    let script = scratch.path().join("six.sh");
    let check = format!(
        "{} --plugin-dir {} check redis-ping --with url=redis://127.0.0.1:{port} --allow redis://127.0.0.1:{port} >/dev/null\n",
        runbox_binary(),
        harness::plugin_dir().display()
    );
    std::fs::write(&script, format!("set -e\n{}", check.repeat(6))).unwrap();
    let shell = measure("shell script: 6 × runbox check", 20, || {
        let status = Command::new("bash")
            .arg(&script)
            .env("RUNBOX_CACHE_DIR", &cache)
            .status()
            .unwrap();
        assert!(status.success());
    });
    let network = native_median * 6;
    let warm_median = warm_run.median;
    print(
        &[warm_run, cold_run, shell],
        &Stats {
            name: "warm run",
            median: warm_median,
            p99: Duration::ZERO,
            samples: 0,
        },
    );
    let beyond = warm_median.saturating_sub(network);

    let (serve_rate, blackbox_rate) = serve_vs_blackbox(port);

    println!("\ntargets");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "  no-op invocation ≤ 20 µs median: {:.1} µs — {}",
        noop_median.as_secs_f64() * 1e6,
        verdict(noop_median <= Duration::from_micros(20))
    );
    let ratio = runbox_median.as_secs_f64() / native_median.as_secs_f64();
    println!("  redis-ping ≤ 1.5× native: {ratio:.2}× — {}", verdict(ratio <= 1.5));
    let tls_ratio = runbox_tls_median.as_secs_f64() / native_tls_median.as_secs_f64();
    println!(
        "  through runbox vs native: plaintext {ratio:.2}× ({:.1} vs {:.1} µs), TLS {tls_ratio:.2}× ({:.1} vs {:.1} µs)",
        runbox_median.as_secs_f64() * 1e6,
        native_median.as_secs_f64() * 1e6,
        runbox_tls_median.as_secs_f64() * 1e6,
        native_tls_median.as_secs_f64() * 1e6,
    );
    let faster = spawn_median.as_secs_f64() / runbox_median.as_secs_f64();
    println!(
        "  redis-ping ≥ 50× faster than spawning redis-cli: {faster:.1}× — {}",
        verdict(faster >= 50.0)
    );
    println!(
        "  1,000-step runbook ≥ 5,000 checks/s: {checks_per_s:.0} — {}",
        verdict(checks_per_s >= 5000.0)
    );
    println!(
        "  1,000-step runbook peak RSS ≤ 200 MiB: {:.1} MiB — {}",
        peak_kib as f64 / 1024.0,
        verdict(peak_kib <= 200 * 1024)
    );
    println!(
        "  warm 6-step runbook ≤ 50 ms beyond the checks' network time ({:.2} ms): {:.1} ms — {}",
        network.as_secs_f64() * 1e3,
        beyond.as_secs_f64() * 1e3,
        verdict(beyond <= Duration::from_millis(50))
    );
    println!(
        "  runbox serve /probe ≥ 2× blackbox_exporter's tcp PING: {:.2}× ({serve_rate:.0} vs {blackbox_rate:.0} probes/s) — {}",
        serve_rate / blackbox_rate,
        verdict(serve_rate >= 2.0 * blackbox_rate)
    );
}

/// Concurrent clients of the serve-vs-blackbox comparison.
const PROBE_CLIENTS: usize = 8;
/// How long each server is loaded (after a one-second warm-up).
const PROBE_SECONDS: u64 = 5;

/// `runbox serve`'s `/probe` of a one-step redis-ping runbook vs blackbox_exporter's
/// tcp prober sending the same PING (`query_response`), each loaded by the same
/// closed-loop generator: PROBE_CLIENTS keep-alive HTTP/1.1 connections, each sending
/// the next request when the answer arrives, for PROBE_SECONDS. Only answers with
/// `probe_success 1` count. Returns (runbox, blackbox) probes/s.
fn serve_vs_blackbox(redis_port: u16) -> (f64, f64) {
    println!(
        "\nprobes/s over HTTP: runbox serve vs prometheus-blackbox-exporter, both PINGing redis 127.0.0.1:{redis_port}, {PROBE_CLIENTS} keep-alive clients, {PROBE_SECONDS} s each"
    );
    let dir = tempfile::tempdir().unwrap();
    let books = dir.path().join("books");
    std::fs::create_dir(&books).unwrap();
    std::fs::write(
        books.join("ping.yaml"),
        format!(
            "name: ping\nsteps:\n  - id: ping\n    uses: redis-ping\n    with: {{url: \"redis://127.0.0.1:{redis_port}\"}}\n    allow: [\"redis://127.0.0.1:{redis_port}\"]\n"
        ),
    )
    .unwrap();
    let mut serve = Command::new(runbox_binary())
        .args(["serve", "--runbooks"])
        .arg(&books)
        .args(["--listen", "127.0.0.1:0", "--max-concurrent", "64"])
        .env("RUNBOX_CACHE_DIR", harness::cache_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runbox serve starts");
    let serve_addr = listening_address(serve.stderr.take().unwrap());

    let blackbox_port = harness::free_port();
    let config = dir.path().join("blackbox.yml");
    std::fs::write(
        &config,
        "modules:\n  redis_ping:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      query_response:\n        - send: \"PING\"\n        - expect: \"^\\\\+PONG\"\n",
    )
    .unwrap();
    let mut blackbox = Command::new("prometheus-blackbox-exporter")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{blackbox_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect(
            "prometheus-blackbox-exporter starts (apt-get install prometheus-blackbox-exporter; scripts/ensure-deps)",
        );
    let blackbox_addr = format!("127.0.0.1:{blackbox_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&blackbox_addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "blackbox_exporter did not listen on {blackbox_addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let runbox_path = "/probe?runbook=ping".to_string();
    let blackbox_path = format!("/probe?module=redis_ping&target=127.0.0.1:{redis_port}");
    // Alternate, twice each, so neither always runs on a warmer machine.
    let mut runbox_rates = Vec::new();
    let mut blackbox_rates = Vec::new();
    for _ in 0..2 {
        runbox_rates.push(load(&serve_addr, &runbox_path));
        blackbox_rates.push(load(&blackbox_addr, &blackbox_path));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = blackbox.kill();
    let _ = blackbox.wait();
    let best = |rates: &[f64]| rates.iter().copied().fold(0.0, f64::max);
    let (runbox_rate, blackbox_rate) = (best(&runbox_rates), best(&blackbox_rates));
    println!("  runbox serve /probe (one-step redis-ping runbook)  {runbox_rates:.0?} probes/s, best {runbox_rate:.0}");
    println!(
        "  blackbox_exporter tcp query_response PING          {blackbox_rates:.0?} probes/s, best {blackbox_rate:.0}"
    );
    println!("  ratio {:.2}× blackbox", runbox_rate / blackbox_rate);
    (runbox_rate, blackbox_rate)
}

fn listening_address(stderr: std::process::ChildStderr) -> String {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("runbox serve printed where it listens").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    addr
}

/// Loads `addr` with the closed-loop generator; successful probes per second.
fn load(addr: &str, path: &str) -> f64 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..PROBE_CLIENTS)
        .map(|_| {
            let (addr, path, stop, counting) = (addr.to_string(), path.to_string(), stop.clone(), counting.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr).unwrap();
                stream.set_nodelay(true).unwrap();
                let request =
                    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Prometheus-Scrape-Timeout-Seconds: 5\r\n\r\n");
                let mut buffer = Vec::with_capacity(8192);
                let (mut ok, mut failed) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    stream.write_all(request.as_bytes()).unwrap();
                    let body = read_response(&mut stream, &mut buffer);
                    if counting.load(std::sync::atomic::Ordering::Relaxed) {
                        if body.contains("\nprobe_success 1") {
                            ok += 1;
                        } else {
                            failed += 1;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    counting.store(true, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(PROBE_SECONDS));
    counting.store(false, std::sync::atomic::Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for client in clients {
        let (o, f) = client.join().unwrap();
        ok += o;
        failed += f;
    }
    assert_eq!(failed, 0, "{failed} probes of {addr}{path} did not succeed");
    ok as f64 / elapsed.as_secs_f64()
}

/// Reads one HTTP/1.1 response with a Content-Length; its body.
fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> String {
    buffer.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .expect("a Content-Length")
                .trim()
                .parse()
                .unwrap();
            while buffer.len() < end + 4 + length {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "the server closed the connection");
                buffer.extend_from_slice(&chunk[..n]);
            }
            return String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// redis-ping over `rediss://` through the runtime, as `runbox check` runs it, with the
/// step's trust (the test CA).
fn runbox_tls_check(single: &tokio::runtime::Runtime, runtime: &Runtime, pki: &tls_servers::Pki, port: u16) -> Stats {
    let loaded = single.block_on(runtime.load(&harness::plugin("redis_ping"))).unwrap();
    let config = serde_json::json!({"url": format!("rediss://127.0.0.1:{port}")});
    let settings = TlsSettings {
        ca: vec![pki.ca.pem_file.clone()],
        ..TlsSettings::default()
    };
    let grants = Grants {
        network: vec![format!("tcp://127.0.0.1:{port}").parse().unwrap()],
        tls: std::sync::Arc::new(Trust::build(&settings, &[]).unwrap()),
        ..Grants::default()
    };
    let limits = Limits::default();
    single.block_on(measure_async("runbox redis-ping rediss://", 1000, || async {
        let outcome = runtime.run_check(&loaded, &config, &grants, &limits).await;
        assert_eq!(outcome.status, Status::Ok, "{}", outcome.summary);
    }))
}

/// Like [`measure`], for an async operation, all samples in the current task.
async fn measure_async<F: std::future::Future<Output = ()>>(
    name: &'static str,
    samples: usize,
    mut f: impl FnMut() -> F,
) -> Stats {
    for _ in 0..samples.div_ceil(10).max(1) {
        f().await;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        f().await;
        times.push(started.elapsed());
    }
    times.sort();
    let p99 = times[((samples * 99).div_ceil(100)).saturating_sub(1).min(samples - 1)];
    Stats {
        name,
        median: times[samples / 2],
        p99,
        samples,
    }
}

/// Writes a runbook of `steps` independent redis-ping steps.
fn runbook(dir: &std::path::Path, name: &str, steps: usize, port: u16) -> std::path::PathBuf {
    let mut yaml = format!("name: {name}\nsteps:\n");
    for i in 0..steps {
        yaml.push_str(&format!(
            "  - id: ping-{i}\n    uses: redis-ping\n    with:\n      url: redis://127.0.0.1:{port}\n    allow:\n      - redis://127.0.0.1:{port}\n"
        ));
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Runs `runbox run FILE --format json` as a process; returns its wall time, the run's
/// own duration, and its peak RSS (KiB, the last VmHWM seen before it exited).
fn run_process(file: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> (Duration, f64, u64) {
    let started = Instant::now();
    let mut command = Command::new(runbox_binary());
    command
        .arg("--plugin-dir")
        .arg(harness::plugin_dir())
        .arg("run")
        .arg(file)
        .args(["--format", "json"])
        .args(extra);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak = kib;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = started.elapsed();
    let json: serde_json::Value = serde_json::from_str(&reader.join().unwrap()).expect("runbox run printed JSON");
    assert_eq!(json["status"], "ok", "the runbook did not pass");
    (wall, json["duration_ms"].as_f64().unwrap(), peak)
}

/// A whole `runbox check redis-ping` process (warm compile cache), as Nagios and Icinga
/// spawn one per check, vs monitoring-plugins' check_tcp sending the same PING: two
/// alternating rounds of each, so a change in the machine's load shows as a difference
/// between rounds rather than between the two.
fn process_vs_check_tcp(port: u16, scratch: &std::path::Path) {
    println!(
        "\na whole process per check, as Nagios/Icinga spawn one: `runbox check redis-ping` (warm compile cache) vs monitoring-plugins' check_tcp sending the same PING"
    );
    let check_tcp = "/usr/lib/nagios/plugins/check_tcp";
    assert!(
        std::path::Path::new(check_tcp).is_file(),
        "{check_tcp} is missing: apt-get install monitoring-plugins-basic (scripts/bench installs it)"
    );
    let binary = runbox_binary();
    println!("  ({binary})");
    let cache_arg = scratch.join("process-cache");
    let (url, grant) = (
        format!("url=redis://127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
    );
    let runbox_args = [
        "--cache-dir",
        cache_arg.to_str().unwrap(),
        "check",
        "redis-ping",
        "--with",
        &url,
        "--allow",
        &grant,
        "--format",
        "nagios",
    ];
    let port = port.to_string();
    let check_tcp_args = ["-H", "127.0.0.1", "-p", &port, "-s", "PING\r\n", "-e", "+PONG"];
    let runbox_check = || exits_ok(&binary, &runbox_args);
    let check_tcp_run = || exits_ok(check_tcp, &check_tcp_args);
    // The first process compiles the plugin into the cache and marks its schema and config.
    runbox_check();
    for round in 1..=2 {
        let name = |what: &str| -> &'static str { format!("round {round}: spawn {what}").leak() };
        let process_check_tcp = measure(name("`check_tcp -s PING -e +PONG`"), 200, check_tcp_run);
        let process_runbox = measure(name("`runbox check redis-ping`"), 200, runbox_check);
        let check_tcp_median = process_check_tcp.median;
        print(
            &[process_check_tcp, process_runbox],
            &Stats {
                name: "check_tcp",
                median: check_tcp_median,
                p99: Duration::ZERO,
                samples: 0,
            },
        );
    }
}

/// The `runbox` binary the whole-process measurements run: this build's, or
/// `RUNBOX_BENCH_BIN` (e.g. `target/release/runbox`, or another commit's build for an A/B).
fn runbox_binary() -> String {
    std::env::var("RUNBOX_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_runbox").to_string())
}

/// Runs `program` with `args` and asserts that it exits 0 (OK).
fn exits_ok(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
