//! `prometheus-query` against a real Prometheus (Debian's `prometheus` 2.42, started here
//! on 127.0.0.1 with a temp config and `--storage.tsdb.path` in a temp dir, scraping
//! every second) that scrapes a small exporter served by the test on loopback. The
//! tests wait until Prometheus has ingested the series, then run the check.

use crate::harness::{HttpServer, Reply, Run, free_port, runbox};
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A real Prometheus scraping one exporter (job `app`) every second; killed on drop.
pub struct Prometheus {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `exporter` (`host:port`), and waits until it is ready.
    pub fn start(exporter: &str) -> Prometheus {
        Prometheus::start_config(&format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{exporter}']\n"
        ))
    }

    /// Starts Prometheus with `config` (prometheus.yml text), and waits until it is ready.
    pub fn start_config(config_text: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start prometheus ({err}); install it: apt-get install prometheus (scripts/ensure-deps)")
            });
        let prometheus = Prometheus { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(port, "/-/ready").map(|(status, _)| status) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready on port {port} within 30 s: {}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Runs `query` itself (not through runbox); Prometheus's JSON answer.
    pub fn query(&self, query: &str) -> Value {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, body) = get(self.port, &format!("/api/v1/query?query={encoded}")).expect("prometheus answers");
        serde_json::from_str(&body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
    }

    /// Waits until `query` returns at least `series` series (each scrape takes a second;
    /// a `rate()` needs two).
    pub fn wait_for(&self, query: &str, series: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.query(query);
            if answer["data"]["result"].as_array().map_or(0, Vec::len) >= series {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus has not ingested {query} after 60 s: {answer}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1: status and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_string())?;
    Some((status, body))
}

/// An exporter on loopback serving `/metrics` from a text the test can change; `{n}` in
/// it becomes the number of earlier scrapes (a counter that grows every scrape).
pub struct Exporter {
    /// The server.
    pub server: HttpServer,
    text: Arc<Mutex<String>>,
}

impl Exporter {
    /// Serves `text`.
    pub fn start(text: &str) -> Exporter {
        let shared = Arc::new(Mutex::new(text.to_string()));
        let source = shared.clone();
        let server = HttpServer::start(move |request, n| {
            if request.path != "/metrics" {
                return Reply::new(404, "not found");
            }
            let text = source.lock().unwrap().clone();
            Reply::new(200, &render(&text, n)).header("x-exporter", "runbox-test")
        });
        Exporter { server, text: shared }
    }

    /// Serves `text` from now on.
    pub fn set(&self, text: &str) {
        *self.text.lock().unwrap() = text.to_string();
    }

    /// `127.0.0.1:PORT`.
    pub fn target(&self) -> String {
        self.server.addr.to_string()
    }
}

/// `{n*K}` → n times K (a counter growing by K per scrape).
fn render(text: &str, n: usize) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{n*") {
        let end = start + rest[start..].find('}').expect("closing }");
        let per: f64 = rest[start + 3..end].parse().expect("{n*NUMBER}");
        out.push_str(&rest[..start]);
        out.push_str(&format!("{}", per * n as f64));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

const QUEUES: &str = "# HELP app_queue_depth Jobs waiting per queue.\n# TYPE app_queue_depth gauge\napp_queue_depth{queue=\"generation\"} 5\napp_queue_depth{queue=\"export\"} 250\napp_queue_depth{queue=\"transcription\"} 12\n";

fn check(prometheus: &Prometheus, with: &[&str]) -> Run {
    let (url, grant) = (format!("url={}", prometheus.url()), prometheus.url());
    let mut args = vec![
        "check",
        "prometheus-query",
        "--with",
        &url,
        "--allow",
        &grant,
        "--format",
        "json",
    ];
    for w in with {
        args.extend(["--with", w]);
    }
    runbox(&args)
}

/// A vector judged series by series against a real Prometheus: the worst series wins
/// and is named by its labels; a scalar; an empty vector is UNKNOWN "no data" unless
/// configured otherwise; bad PromQL is UNKNOWN with Prometheus's own error text.
#[test]
fn judges_real_prometheus_results() {
    let exporter = Exporter::start(QUEUES);
    let prometheus = Prometheus::start(&exporter.target());
    prometheus.wait_for("app_queue_depth", 3);

    // Every series within thresholds: OK, one metric per series.
    let run = check(&prometheus, &["query=app_queue_depth", "warn=500", "crit=1000"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json()["steps"][0].clone();
    assert_eq!(
        json["summary"], "app_queue_depth: all 3 series within thresholds",
        "{json:#}"
    );
    let values: Vec<f64> = json["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"].as_str().unwrap().starts_with("value"))
        .map(|m| m["value"].as_f64().unwrap())
        .collect();
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sorted, [5.0, 12.0, 250.0]);

    // One series past crit: CRITICAL, named by its labels (export), the others not.
    let run = check(
        &prometheus,
        &["query=app_queue_depth", "warn=10", "crit=100", "label=queue depth"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json()["steps"][0].clone();
    let summary = json["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("queue depth: 2 of 3 series outside thresholds; worst {"),
        "{summary}"
    );
    assert!(summary.contains(r#"queue="export"} 250"#), "{summary}");
    let details = json["details"].as_array().unwrap();
    assert!(
        details.iter().any(
            |d| d.as_str().unwrap().starts_with("CRITICAL: {") && d.as_str().unwrap().contains(r#"queue="export""#)
        ),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.as_str().unwrap().starts_with("WARNING: {")
            && d.as_str().unwrap().contains(r#"queue="transcription""#)),
        "{details:?}"
    );
    assert!(
        !details
            .iter()
            .any(|d| d.as_str().unwrap().contains(r#"queue="generation""#)),
        "{details:?}"
    );

    // A scalar.
    let run = check(&prometheus, &["query=scalar(sum(app_queue_depth))", "crit=200"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        run.json()["steps"][0]["summary"],
        "scalar(sum(app_queue_depth)) = 267 (outside crit 200)"
    );

    // No series: UNKNOWN "no data" by default; `empty_status` says otherwise.
    let run = check(&prometheus, &[r#"query=app_queue_depth{queue="nope"}"#, "crit=1"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.json()["steps"][0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("no data:"),
        "{run:#?}"
    );
    let run = check(
        &prometheus,
        &[r#"query=app_queue_depth{queue="nope"}"#, "crit=1", "empty_status=ok"],
    );
    assert_eq!(run.code, 0, "{run:#?}");

    // Bad PromQL: Prometheus's own error, as it gave it.
    let run = check(&prometheus, &["query=sum(app_queue_depth"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let expected = prometheus.query("sum(app_queue_depth");
    assert_eq!(expected["status"], "error");
    let summary = run.json()["steps"][0]["summary"].as_str().unwrap().to_string();
    assert_eq!(
        summary,
        format!(
            "Prometheus: {}: {} (HTTP 400)",
            expected["errorType"].as_str().unwrap(),
            expected["error"].as_str().unwrap()
        )
    );
    assert!(summary.contains("parse error"), "{summary}");

    // A range vector is not an instant result: UNKNOWN, saying what to write instead.
    let run = check(&prometheus, &["query=app_queue_depth[10s]"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.json()["steps"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("result type matrix"),
        "{run:#?}"
    );

    // The exporter changes; Prometheus scrapes it; the check follows.
    exporter.set("# TYPE app_queue_depth gauge\napp_queue_depth{queue=\"export\"} 3\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = check(&prometheus, &[r#"query=app_queue_depth{queue="export"}"#, "crit=100"]);
        if run.code == 0 {
            assert_eq!(
                run.json()["steps"][0]["summary"],
                r#"app_queue_depth{queue="export"} = 3"#
            );
            break;
        }
        assert!(Instant::now() < deadline, "the new value never showed: {run:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Without a grant for Prometheus, the sandbox refuses the request: UNKNOWN.
#[test]
fn needs_a_grant() {
    let exporter = Exporter::start(QUEUES);
    let url = format!("url={}", exporter.server.url());
    let run = runbox(&[
        "check",
        "prometheus-query",
        "--with",
        &url,
        "--with",
        "query=up",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        exporter.server.received().is_empty(),
        "a request went out without a grant"
    );
}

#[test]
fn render_grows_counters_per_scrape() {
    assert_eq!(render("a {n*2}\nb {n*0.5} c", 3), "a 6\nb 1.5 c");
    assert_eq!(render("x 1", 9), "x 1");
}
