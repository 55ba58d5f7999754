//! `runbox serve`: a real Prometheus scrapes it blackbox-style; the security rules each
//! have a request that would break them; saturation, scrape timeouts, reloads, graceful
//! shutdown and "plugins are prepared once" are measured on the running server.

use crate::harness::{Redis, SilentServer, runbox, runbox_command};
use crate::prometheus::Prometheus;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `runbox serve` process on 127.0.0.1 (a port it chose), stopped on drop.
struct Serve {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `runbox serve --runbooks DIR ARGS… --listen 127.0.0.1:0` and waits for its
    /// "listening on" line.
    fn start(dir: &Path, args: &[&str]) -> Serve {
        let mut child = runbox_command(&["serve", "--runbooks"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runbox serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (log, pipe) = (stderr.clone(), child.stderr.take().unwrap());
        let (found, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = found.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = listening.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("runbox serve did not start listening: {}", stderr.lock().unwrap())
        });
        Serve { child, addr, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its stderr once it holds `text`, or after 10 s: a thread reads the pipe, so a line
    /// written before an answer may be read after the answer arrives.
    fn stderr_once(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stderr = self.stderr();
            if stderr.contains(text) || Instant::now() > deadline {
                return stderr;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path`: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[])
    }

    /// One HTTP/1.0 request with `headers`: status and body.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("runbox serve accepts");
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// The value of `series` (name with labels, exactly as exposed) in the server's /metrics.
    fn metric(&self, series: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        value(&body, series)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` in an exposition.
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// A directory of runbooks.
fn books(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// One redis-ping step against `host`:`port`, both inputs that flow into its grant, and
/// an input `note` that flows into `env:`.
fn ping_book(port: u16) -> String {
    format!(
        r#"name: redis-ping-probe
inputs:
  host: {{default: 127.0.0.1}}
  port: {{default: {port}}}
  note: {{default: hello}}
steps:
  - id: ping
    uses: redis-ping
    with: {{url: "redis://${{{{ inputs.host }}}}:${{{{ inputs.port }}}}"}}
    allow: ["redis://${{{{ inputs.host }}}}:${{{{ inputs.port }}}}"]
    env: {{PROBE_NOTE: "${{{{ inputs.note }}}}"}}
"#
    )
}

/// One redis-ping step against a server that never answers, with a long step timeout.
fn slow_book(addr: &std::net::SocketAddr) -> String {
    format!(
        "name: slow\nsteps:\n  - id: hang\n    uses: redis-ping\n    timeout: 60s\n    with: {{url: \"redis://{addr}\"}}\n    allow: [\"redis://{addr}\"]\n"
    )
}

/// A listener on `ip` that counts the connections it accepts (and holds them open).
fn counting_listener(ip: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, count)
}

/// Prometheus scrapes `runbox serve` with blackbox_exporter's relabelling (the target
/// becomes the `host` and `port` query parameters, the address becomes runbox's) and a
/// bearer token from a file; what it stored is read back through its HTTP API:
/// probe_success 1 and the step's status while Redis answers, 0 once it is stopped.
#[test]
fn prometheus_scrapes_probes_with_blackbox_relabelling() {
    let mut redis = Redis::start();
    let dir = books(&[("ping.yaml", &ping_book(1))]);
    let token = "prometheus-token-0123456789abcdef";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let serve = Serve::start(
        dir.path(),
        &[
            "--allow-targets",
            "127.0.0.1",
            "--bearer-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: runbox-redis
    metrics_path: /probe
    params:
      runbook: [redis-ping-probe]
    authorization:
      credentials_file: {token_file}
    static_configs:
      - targets: ['127.0.0.1:{redis_port}']
    relabel_configs:
      - source_labels: [__address__]
        regex: '(.+):(\d+)'
        target_label: __param_host
        replacement: '$1'
      - source_labels: [__address__]
        regex: '(.+):(\d+)'
        target_label: __param_port
        replacement: '$2'
      - source_labels: [__address__]
        target_label: instance
      - target_label: __address__
        replacement: '{serve}'
  - job_name: runbox-serve
    authorization:
      credentials_file: {token_file}
    static_configs:
      - targets: ['{serve}']
"#,
        token_file = token_file.display(),
        redis_port = redis.port,
        serve = serve.addr,
    );
    let prometheus = Prometheus::start_config(&config);
    let instance = format!("127.0.0.1:{}", redis.port);
    let success = format!("probe_success{{job=\"runbox-redis\",instance=\"{instance}\"}}");
    let step = "runbox_step_status{job=\"runbox-redis\",runbook=\"redis-ping-probe\",step=\"ping\"}";
    wait_for_value(&prometheus, &success, 1.0);
    assert_eq!(scalar(&prometheus, step), Some(0.0), "step OK");
    let latency = scalar(
        &prometheus,
        "runbox_step_metric{job=\"runbox-redis\",step=\"ping\",metric=\"latency_ms\"}",
    );
    assert!(latency.is_some_and(|ms| ms > 0.0), "{latency:?}");
    // The server's own metrics, scraped with the token too.
    wait_for_value(
        &prometheus,
        "runbox_serve_probes_total{job=\"runbox-serve\",runbook=\"redis-ping-probe\",result=\"success\"} > bool 0",
        1.0,
    );

    redis.stop();
    wait_for_value(&prometheus, &success, 0.0);
    assert_eq!(scalar(&prometheus, step), Some(2.0), "step CRITICAL once Redis is gone");
    assert_eq!(
        scalar(&prometheus, "up{job=\"runbox-redis\"}"),
        Some(1.0),
        "the scrape itself still works: a failed probe is probe_success 0, not a failed scrape"
    );
    drop(serve);
}

/// The first value of `query` in Prometheus, if any.
fn scalar(prometheus: &Prometheus, query: &str) -> Option<f64> {
    let answer = prometheus.query(query);
    answer["data"]["result"].as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

fn wait_for_value(prometheus: &Prometheus, query: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = scalar(prometheus, query);
        if got == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query} is {got:?}, not {expected}, after 60 s: {}\n{}",
            prometheus.query(query),
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A query sets only declared inputs; a runbook is named, never a path; an input that
/// would point a grant outside --allow-targets is refused before anything connects (a
/// listener on 127.0.0.2 sees no connection, and sees one when the targets allow it, so
/// the refusal is what kept it away); without --allow-targets no query may set such an
/// input; an input that flows into `env:` is never settable.
#[test]
fn requests_cannot_widen_what_a_runbook_may_reach() {
    let redis = Redis::start();
    let dir = books(&[("ping.yaml", &ping_book(redis.port))]);
    let serve = Serve::start(dir.path(), &["--allow-targets", "127.0.0.1/32"]);

    // Within the targets: runs.
    let (status, body) = serve.get(&format!(
        "/probe?runbook=redis-ping-probe&host=127.0.0.1&port={}",
        redis.port
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(value(&body, "probe_success"), Some(1.0), "{body}");
    // By file stem too.
    let (status, body) = serve.get("/probe?runbook=ping");
    assert_eq!((status, value(&body, "probe_success")), (200, Some(1.0)), "{body}");

    let (status, body) = serve.get("/probe?runbook=ping&password=x&db=1");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("declares no input `db`, `password`") && body.contains("its inputs: host, note, port"),
        "{body}"
    );
    for (path, expected) in [
        ("/probe?runbook=../ping", 400),
        ("/probe?runbook=..%2Fping", 400),
        ("/probe?runbook=%2Fetc%2Fpasswd", 400),
        ("/probe?runbook=ping.yaml", 404),
        ("/probe?runbook=nope", 404),
        ("/probe", 400),
        ("/probe?runbook=ping&runbook=other", 400),
    ] {
        let (status, body) = serve.get(path);
        assert_eq!(status, expected, "{path}: {body}");
    }

    let (port, connections) = counting_listener("127.0.0.2");
    let (status, body) = serve.get(&format!("/probe?runbook=ping&host=127.0.0.2&port={port}"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&format!(
            "input `host` makes the grant `redis://127.0.0.2:{port}`, whose host is outside --allow-targets (127.0.0.1/32); nothing was run"
        )),
        "{body}"
    );
    let (status, body) = serve.get(&format!("/probe?runbook=ping&host=127.0.0.0%2F8&port={port}"));
    assert_eq!(status, 400, "a block wider than the targets: {body}");
    let (status, body) = serve.get("/probe?runbook=ping&note=x");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("input `note` flows into `env: PROBE_NOTE` of step `ping`"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the refused probes connected nowhere"
    );
    assert_eq!(
        serve.metric("runbox_serve_probe_refusals_total{reason=\"grant_outside_targets\"}"),
        Some(2.0)
    );

    // The control: targets that cover 127.0.0.2 let the same query through, and the
    // listener sees the connection.
    let wide = Serve::start(dir.path(), &["--allow-targets", "127.0.0.0/8"]);
    let (status, body) = wide.request(
        "GET",
        &format!("/probe?runbook=ping&host=127.0.0.2&port={port}"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1")],
    );
    assert_eq!((status, value(&body, "probe_success")), (200, Some(0.0)), "{body}");
    assert!(
        connections.load(Ordering::SeqCst) >= 1,
        "the control probe reached 127.0.0.2"
    );

    // Without --allow-targets, a query cannot set an input that reaches a grant at all,
    // not even to the runbook's own default.
    let closed = Serve::start(dir.path(), &[]);
    let (status, body) = closed.get("/probe?runbook=ping&host=127.0.0.1");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("input `host` flows into the grants (`allow:`) of step `ping`, and runbox serve was started without --allow-targets"),
        "{body}"
    );
    let (status, body) = closed.get("/probe?runbook=ping");
    assert_eq!((status, value(&body, "probe_success")), (200, Some(1.0)), "{body}");
}

/// Listening anywhere but loopback needs a token file; bad directories, targets and
/// tokens stop it at startup with exit 64 and the reason (nothing is bound: the checks
/// come first).
#[test]
fn startup_refuses_what_would_be_unsafe_or_wrong() {
    let dir = books(&[]);
    let d = dir.path().to_str().unwrap();
    let short = dir.path().join("short-token");
    std::fs::write(&short, "abc\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["serve", "--runbooks", d, "--listen", "0.0.0.0:0"],
            "--listen 0.0.0.0:0 is not a loopback address: anyone who can reach it could run probes, so it needs --bearer-token-file FILE",
        ),
        (
            vec!["serve", "--runbooks", d, "--listen", "[::]:0"],
            "is not a loopback address",
        ),
        (
            vec!["serve", "--runbooks", "/nonexistent/books"],
            "--runbooks /nonexistent/books: not a directory",
        ),
        (
            vec!["serve", "--runbooks", d, "--allow-targets", "10.0.0.0/33"],
            "--allow-targets 10.0.0.0/33:",
        ),
        (
            vec!["serve", "--runbooks", d, "--allow-targets", "*"],
            "--allow-targets *:",
        ),
        (
            vec!["serve", "--runbooks", d, "--bearer-token-file", short.to_str().unwrap()],
            "the token must be at least 16 bytes",
        ),
        (
            vec!["serve", "--runbooks", d, "--listen", "localhost"],
            "--listen localhost: expected IP:PORT",
        ),
        (
            vec!["serve", "--runbooks", d, "--max-concurrent", "65", "--parallel", "4"],
            "use at most --max-concurrent 64",
        ),
    ];
    for (args, expected) in cases {
        let run = runbox(&args);
        assert_eq!(run.code, 64, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("listening on"), "{}", run.stderr);
    }
}

/// With a token, every endpoint but /-/healthy needs `Authorization: Bearer TOKEN`.
#[test]
fn a_configured_bearer_token_is_required() {
    let redis = Redis::start();
    let dir = books(&[("ping.yaml", &ping_book(redis.port))]);
    let token = "s3cret-serve-token-0123456789";
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let serve = Serve::start(dir.path(), &["--bearer-token-file", file.to_str().unwrap()]);
    let good = format!("Bearer {token}");
    let near = format!("Bearer {}", &token[..token.len() - 1]);
    let longer = format!("Bearer {token}x");
    for (path, method) in [
        ("/probe?runbook=ping", "GET"),
        ("/metrics", "GET"),
        ("/-/reload", "POST"),
    ] {
        for headers in [
            vec![],
            vec![("Authorization", near.as_str())],
            vec![("Authorization", longer.as_str())],
            vec![("Authorization", token)],
            vec![("Authorization", "Basic c2VjcmV0")],
        ] {
            let (status, body) = serve.request(method, path, &headers);
            assert_eq!(status, 401, "{method} {path} {headers:?}: {body}");
        }
        let (status, body) = serve.request(method, path, &[("Authorization", &good)]);
        assert_eq!(status, 200, "{method} {path}: {body}");
    }
    assert_eq!(serve.get("/-/healthy").0, 200);
}

/// A mitigation is planned, never applied, whatever the request says: the flag stays
/// unset in Redis (and `runbox run --apply` on the same file does set it, so the
/// runbook would apply if anything let it).
#[test]
fn a_mitigation_is_planned_never_applied() {
    let redis = Redis::start();
    let book = format!(
        "name: flag\nsteps:\n  - id: pause\n    uses: redis-flag\n    with: {{url: \"{url}\", key: \"serve:paused\", value: \"1\"}}\n    allow: [\"{url}\"]\n",
        url = redis.url()
    );
    let dir = books(&[("flag.yaml", &book)]);
    let serve = Serve::start(dir.path(), &[]);
    let (status, body) = serve.get("/probe?runbook=flag");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(
            "runbox_step_status{runbook=\"flag\",step=\"pause\",plugin=\"redis-flag\",kind=\"mitigation\"} 0"
        ),
        "{body}"
    );
    for query in ["apply=true", "approve=pause", "apply=1&approve=pause"] {
        let (status, body) = serve.get(&format!("/probe?runbook=flag&{query}"));
        assert_eq!(status, 400, "{query}: {body}");
    }
    assert_eq!(
        redis.command(&["GET", "serve:paused"]).unwrap(),
        "",
        "a probe applied the mitigation"
    );

    let run = runbox(&[
        "run",
        dir.path().join("flag.yaml").to_str().unwrap(),
        "--apply",
        "--audit-log",
        dir.path().join("audit.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(redis.command(&["GET", "serve:paused"]).unwrap(), "1");
}

/// --max-concurrent 1 with a probe hanging on a silent server: the next probe is a 503
/// with the reason at once; the scrape timeout header bounds the hanging probe (minus the
/// offset); SIGTERM lets a running probe finish and then exits 0.
#[test]
fn saturation_scrape_timeouts_and_graceful_shutdown() {
    let silent = SilentServer::start();
    let redis = Redis::start();
    let dir = books(&[
        ("slow.yaml", &slow_book(&silent.addr)),
        ("ping.yaml", &ping_book(redis.port)),
    ]);
    let serve = Serve::start(dir.path(), &["--max-concurrent", "1"]);
    let addr = serve.addr.clone();

    // The scrape timeout bounds the probe: 1.5 s less the 0.5 s offset.
    let started = Instant::now();
    let (status, body) = serve.request(
        "GET",
        "/probe?runbook=slow",
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1.5")],
    );
    let took = started.elapsed();
    assert_eq!((status, value(&body, "probe_success")), (200, Some(0.0)), "{body}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1400),
        "took {took:?}"
    );
    assert!(
        body.contains("# runbox: stopped early: the run's 1s deadline passed"),
        "{body}"
    );
    let (status, body) = serve.request(
        "GET",
        "/probe?runbook=slow",
        &[("X-Prometheus-Scrape-Timeout-Seconds", "soon")],
    );
    assert_eq!(status, 400, "{body}");

    // Saturated: one slow probe holds the only slot.
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET /probe?runbook=slow HTTP/1.0\r\nX-Prometheus-Scrape-Timeout-Seconds: 3.5\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        (text, started.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while serve.metric("runbox_serve_probes_in_flight") != Some(1.0) {
        assert!(Instant::now() < deadline, "the slow probe never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let (status, body) = serve.get("/probe?runbook=ping");
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a saturated server answers at once"
    );
    assert!(
        body.contains("running its maximum of 1 probes at once (--max-concurrent)"),
        "{body}"
    );
    assert_eq!(
        serve.metric("runbox_serve_probe_refusals_total{reason=\"saturated\"}"),
        Some(1.0)
    );

    // SIGTERM while it runs: the probe still gets its answer, then the process exits 0.
    serve.signal("TERM");
    let (text, took) = slow.join().unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(text.contains("probe_success 0"), "{text}");
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    let mut serve = serve;
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "runbox serve did not exit after SIGTERM: {}",
            serve.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "{}", serve.stderr());
    let stderr = serve.stderr_once("runbox serve: stopping");
    assert!(stderr.contains("runbox serve: stopping"), "{stderr}");
    assert!(
        TcpStream::connect(&serve.addr).is_err(),
        "nothing listens after shutdown"
    );
}

/// A reload (POST /-/reload, SIGHUP) that finds a broken runbook reports it (the answer,
/// the log, /metrics, its own probes) and keeps serving everything else; the broken one
/// keeps its last good version; a new broken one is not served (500 with the problems).
#[test]
fn a_broken_runbook_on_reload_is_reported_and_the_rest_keep_serving() {
    let redis = Redis::start();
    let dir = books(&[
        ("a.yaml", &ping_book(redis.port)),
        ("b.yaml", &ping_book(redis.port).replace("redis-ping-probe", "b-probe")),
        (
            "d.yaml",
            "name: d\nsteps:\n  - id: x\n    uses: redis-ping\n    when: nonsense ==\n",
        ),
    ]);
    // A runbook broken at startup is reported; the server starts and serves the rest.
    let serve = Serve::start(dir.path(), &[]);
    assert!(
        serve.stderr().contains("1 broken") && serve.stderr().contains("d (not served)"),
        "{}",
        serve.stderr()
    );
    assert_eq!(serve.get("/probe?runbook=b-probe").0, 200);
    assert_eq!(serve.get("/probe?runbook=d").0, 500);
    std::fs::remove_file(dir.path().join("d.yaml")).unwrap();

    std::fs::write(
        dir.path().join("b.yaml"),
        "name: b-probe\nsteps:\n  - id: x\n    uses: no-such-plugin\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("c.yaml"), "name: c\nsteps: [oops\n").unwrap();
    let (status, body) = serve.request("POST", "/-/reload", &[]);
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("2 broken"), "{body}");
    assert!(body.contains("b (still serving the version loaded before)"), "{body}");
    assert!(body.contains("plugin `no-such-plugin` not found"), "{body}");
    assert!(
        body.contains("c (not served)") && body.contains("invalid YAML"),
        "{body}"
    );
    let stderr = serve.stderr_once("plugin `no-such-plugin` not found");
    assert!(stderr.contains("plugin `no-such-plugin` not found"), "{stderr}");

    let (status, body) = serve.get("/probe?runbook=redis-ping-probe");
    assert_eq!((status, value(&body, "probe_success")), (200, Some(1.0)), "{body}");
    assert_eq!(
        value(&body, "runbox_runbook_reload_ok{runbook=\"redis-ping-probe\"}"),
        Some(1.0)
    );
    let (status, body) = serve.get("/probe?runbook=b-probe");
    assert_eq!(
        (status, value(&body, "probe_success")),
        (200, Some(1.0)),
        "the last good b: {body}"
    );
    assert_eq!(
        value(&body, "runbox_runbook_reload_ok{runbook=\"b-probe\"}"),
        Some(0.0),
        "{body}"
    );
    let (status, body) = serve.get("/probe?runbook=c");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("invalid YAML"), "{body}");
    assert_eq!(
        serve.metric("runbox_serve_runbook_ok{runbook=\"b-probe\",file=\"b\"}"),
        Some(0.0)
    );
    assert_eq!(
        serve.metric("runbox_serve_runbook_served{runbook=\"b-probe\",file=\"b\"}"),
        Some(1.0)
    );
    assert_eq!(
        serve.metric("runbox_serve_runbook_ok{runbook=\"c\",file=\"c\"}"),
        Some(0.0)
    );
    assert_eq!(
        serve.metric("runbox_serve_runbook_served{runbook=\"c\",file=\"c\"}"),
        Some(0.0)
    );
    assert_eq!(serve.metric("runbox_serve_last_reload_successful"), Some(0.0));

    // Fixed, and reloaded by SIGHUP.
    std::fs::write(
        dir.path().join("c.yaml"),
        ping_book(redis.port).replace("redis-ping-probe", "c"),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    serve.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while serve.metric("runbox_serve_last_reload_successful") != Some(1.0) {
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {}", serve.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = serve.get("/probe?runbook=c");
    assert_eq!((status, value(&body, "probe_success")), (200, Some(1.0)), "{body}");
    assert_eq!(
        serve.get("/probe?runbook=b-probe").0,
        404,
        "a removed file is no longer served"
    );
}

/// Plugins are loaded at startup and reload, never by a probe: after two probes the
/// load and compile counters have not moved, and a reload with unchanged plugin files
/// loads nothing either (the process-wide cache).
#[test]
fn plugins_are_prepared_once_not_per_probe() {
    let redis = Redis::start();
    let dir = books(&[("ping.yaml", &ping_book(redis.port))]);
    let serve = Serve::start(dir.path(), &[]);
    let loads = serve.metric("runbox_serve_plugin_loads_total").unwrap();
    assert_eq!(loads, 1.0, "one plugin loaded at startup");
    let hits = serve.metric("runbox_serve_prepared_plugin_hits_total").unwrap();
    let compiles = serve.metric("runbox_serve_plugin_compiles_total").unwrap();
    let cache_reads = serve.metric("runbox_serve_compile_cache_hits_total").unwrap();
    assert_eq!(
        compiles + cache_reads,
        1.0,
        "the one load compiled or read the compile cache"
    );
    for _ in 0..2 {
        let (status, body) = serve.get("/probe?runbook=ping");
        assert_eq!((status, value(&body, "probe_success")), (200, Some(1.0)), "{body}");
    }
    assert_eq!(
        serve.metric("runbox_serve_plugin_loads_total"),
        Some(loads),
        "a probe loaded a plugin"
    );
    assert_eq!(serve.metric("runbox_serve_plugin_compiles_total"), Some(compiles));
    assert_eq!(serve.metric("runbox_serve_compile_cache_hits_total"), Some(cache_reads));
    assert_eq!(
        serve.metric("runbox_serve_prepared_plugin_hits_total"),
        Some(hits + 2.0)
    );
    assert_eq!(
        serve.metric("runbox_serve_probes_total{runbook=\"redis-ping-probe\",result=\"success\"}"),
        Some(2.0)
    );
    assert_eq!(
        serve.metric("runbox_serve_probe_duration_seconds_count{runbook=\"redis-ping-probe\"}"),
        Some(2.0)
    );

    let (status, body) = serve.request("POST", "/-/reload", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serve.metric("runbox_serve_plugin_loads_total"),
        Some(loads),
        "a reload of unchanged plugins loaded one"
    );
    // A second runbook using the same plugin file reuses the loaded plugin too.
    std::fs::write(
        dir.path().join("again.yaml"),
        ping_book(redis.port).replace("redis-ping-probe", "again"),
    )
    .unwrap();
    let (status, body) = serve.request("POST", "/-/reload", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serve.metric("runbox_serve_plugin_loads_total"), Some(loads));
    assert_eq!(serve.get("/probe?runbook=again").0, 200);
}

/// The scrape config and alert rules in docs/serve.md are what Prometheus's own
/// `promtool` accepts (the token path is made a real file first: promtool checks it).
#[test]
fn docs_configs_pass_promtool() {
    let doc = std::fs::read_to_string(crate::harness::workspace().join("docs/serve.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("runbox-token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    for (kind, command) in [("config", "config"), ("rules", "rules")] {
        let marker = format!("<!-- promtool: {kind} -->\n```yaml\n");
        let start = doc
            .find(&marker)
            .unwrap_or_else(|| panic!("docs/serve.md has no {marker:?}"))
            + marker.len();
        let block = &doc[start..start + doc[start..].find("```").unwrap()];
        let block = block.replace("/etc/prometheus/runbox-token", token.to_str().unwrap());
        let file = dir.path().join(format!("{kind}.yml"));
        std::fs::write(&file, block).unwrap();
        let output = Command::new("promtool")
            .args(["check", command])
            .arg(&file)
            .output()
            .expect("promtool runs (apt-get install prometheus; scripts/ensure-deps)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "promtool check {command}: {text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}
