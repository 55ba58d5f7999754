//! Benchmark: loading redis-ping cold (compile) vs from the compile cache, and one
//! redis-ping check through runbox vs a native Rust connect+PING vs spawning
//! `redis-cli ping` (what a Nagios-style runner does), all in one run against one
//! real redis-server on loopback; and the sandbox's own cost (a no-op check). Prints median and p99 and ratios to the baselines.
//!
//! Run with `scripts/bench` (builds the plugins, then `cargo bench --profile dev`).

use runbox::capabilities::Grants;
use runbox::result::Status;
use runbox::runtime::{Limits, Runtime, RuntimeOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

// The test harness starts the real redis-server and finds the built plugins.
#[allow(dead_code)]
#[path = "../../tests/e2e/harness.rs"]
mod harness;

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

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let plugin = harness::plugin("redis_ping");
    let scratch = tempfile::tempdir().unwrap();
    let redis = harness::Redis::start();
    let port = redis.port;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    println!(
        "load redis-ping ({} KiB component)",
        std::fs::metadata(&plugin).unwrap().len() / 1024
    );
    let uncached = Runtime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let cold = measure("cold: compile + checks + info()", 10, || {
        let loaded = tokio.block_on(uncached.load(&plugin)).unwrap();
        assert!(loaded.compiled);
    });
    let cached = Runtime::new(RuntimeOptions {
        cache_dir: Some(scratch.path().join("cache")),
    })
    .unwrap();
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

    println!("\nsandbox overhead: a no-op check (new store + instantiate + call + teardown)");
    let noop = tokio.block_on(cached.load(&harness::plugin("noop_check"))).unwrap();
    let empty = serde_json::json!({});
    let no_grants = Grants::default();
    let noop_stats = measure("no-op check", 2000, || {
        let outcome = tokio.block_on(cached.run_check(&noop, &empty, &no_grants, &Limits::default()));
        assert_eq!(outcome.status, Status::Ok);
    });
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
    let loaded = tokio.block_on(cached.load(&plugin)).unwrap();
    let config = serde_json::json!({"url": format!("redis://127.0.0.1:{port}")});
    let grants = Grants {
        network: vec![format!("redis://127.0.0.1:{port}").parse().unwrap()],
        ..Grants::default()
    };
    let limits = Limits::default();
    let native = measure("native Rust connect+PING", 2000, || native_ping(port).unwrap());
    let through_runbox = measure("runbox redis-ping (sandboxed)", 2000, || {
        let outcome = tokio.block_on(cached.run_check(&loaded, &config, &grants, &limits));
        assert_eq!(outcome.status, Status::Ok, "{}", outcome.summary);
    });
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
        &[native, through_runbox, spawn_cli],
        &Stats {
            name: "native",
            median: native_median,
            p99: Duration::ZERO,
            samples: 0,
        },
    );
    println!(
        "\nrunbox redis-ping is {:.2}× the native loop and {:.1}× faster than spawning redis-cli",
        runbox_median.as_secs_f64() / native_median.as_secs_f64(),
        spawn_median.as_secs_f64() / runbox_median.as_secs_f64()
    );
}
