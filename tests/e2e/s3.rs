//! `s3-4xx-rate` and `s3-prune` against a real S3-compatible server (s3s-fs) that
//! verifies every SigV4 signature with its own implementation.

use crate::harness::{Run, S3Server, runbox_env};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MIN: Duration = Duration::from_secs(60);

/// One access-log line at `age` ago.
pub(crate) fn line(age: Duration, operation: &str, status: u16, error: &str) -> String {
    let secs = (SystemTime::now() - age).duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (the test's own small implementation).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "owner1 app-bucket [{day:02}/{name}/{year}:{:02}:{:02}:{:02} +0000] 127.0.0.9 arn:aws:iam::1:user/app REQ{status} {operation} photos/p.jpg \"GET /app-bucket/photos/p.jpg HTTP/1.1\" {status} {error} 512 1024 12 10 \"-\" \"app/1.0 (\\\"quoted\\\")\" - hostid= SigV4 ECDHE-RSA-AES128-GCM-SHA256 AuthHeader app-bucket.s3.amazonaws.com TLSv1.3 - -",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn lines(count: usize, age: Duration, operation: &str, status: u16, error: &str) -> Vec<String> {
    (0..count).map(|_| line(age, operation, status, error)).collect()
}

/// Logs: in the last 15 minutes, GET 60×200 + 10×404 and PUT 20×200 + 8×403 + 2×503
/// (100 requests: 4xx 18%, 5xx 2%), spread over five objects; plus 40 old 404s inside a
/// recent object and 50 in an object written two hours ago, which must not count.
fn logs(server: &S3Server) {
    server.bucket("logs");
    let recent = |extra: Vec<String>| extra.join("\n") + "\n";
    server.put(
        "logs",
        "access/2026-a",
        recent(lines(30, 5 * MIN, "REST.GET.OBJECT", 200, "-")).as_bytes(),
        4 * MIN,
    );
    server.put(
        "logs",
        "access/2026-b",
        recent(
            [
                lines(30, 6 * MIN, "REST.GET.OBJECT", 200, "-"),
                lines(40, 120 * MIN, "REST.GET.OBJECT", 404, "NoSuchKey"),
            ]
            .concat(),
        )
        .as_bytes(),
        3 * MIN,
    );
    server.put(
        "logs",
        "access/2026-c",
        recent(lines(10, 7 * MIN, "REST.GET.OBJECT", 404, "NoSuchKey")).as_bytes(),
        3 * MIN,
    );
    server.put(
        "logs",
        "access/2026-d",
        recent(
            [
                lines(20, 8 * MIN, "REST.PUT.OBJECT", 200, "-"),
                vec!["this is not a log line".into()],
            ]
            .concat(),
        )
        .as_bytes(),
        2 * MIN,
    );
    server.put(
        "logs",
        "access/2026-e",
        recent(
            [
                lines(8, 9 * MIN, "REST.PUT.OBJECT", 403, "AccessDenied"),
                lines(2, 9 * MIN, "REST.PUT.OBJECT", 503, "SlowDown"),
            ]
            .concat(),
        )
        .as_bytes(),
        MIN,
    );
    server.put(
        "logs",
        "access/2025-old",
        recent(lines(50, 130 * MIN, "REST.GET.OBJECT", 404, "NoSuchKey")).as_bytes(),
        120 * MIN,
    );
    server.put(
        "logs",
        "elsewhere/x",
        recent(lines(99, MIN, "REST.GET.OBJECT", 500, "InternalError")).as_bytes(),
        MIN,
    );
}

fn rate_check(server: &S3Server, secret: &str, allow: &str, with: &[&str]) -> Run {
    let endpoint = format!("endpoint={}", server.endpoint());
    let mut args = vec![
        "check",
        "s3-4xx-rate",
        "--with",
        &endpoint,
        "--with",
        "bucket=logs",
        "--with",
        "prefix=access/",
        "--with",
        "page_size=2",
        "--secret",
        "aws_access_key_id=env:TEST_AK",
        "--secret",
        "aws_secret_access_key=env:TEST_SK",
        "--format",
        "json",
    ];
    if !allow.is_empty() {
        args.extend(["--allow", allow]);
    }
    for value in with {
        args.extend(["--with", value]);
    }
    runbox_env(&args, &[("TEST_AK", S3Server::ACCESS_KEY), ("TEST_SK", secret)])
}

#[test]
fn error_rates_are_exact_over_the_window_with_pagination() {
    let server = S3Server::start();
    logs(&server);
    let grant = server.endpoint();
    let run = rate_check(&server, S3Server::SECRET_KEY, &grant, &["warn=10", "crit=25"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let json = run.json();
    let step = &json["steps"][0];
    assert_eq!(
        step["summary"],
        "100 requests in the last 15m: 4xx 18.0%, 5xx 2.0% (worst: REST.PUT.OBJECT 4xx 26.7%, 5xx 6.7%)"
    );
    assert_eq!(
        (run.metric("requests"), run.metric("rate_4xx"), run.metric("rate_5xx")),
        (100.0, 18.0, 2.0)
    );
    assert_eq!((run.metric("errors_4xx"), run.metric("errors_5xx")), (18.0, 2.0));
    let details: Vec<&str> = step["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details.contains(&"REST.GET.OBJECT: 70 requests, 4xx 14.3%, 5xx 0.0%"),
        "{details:?}"
    );
    // Six objects under access/ in three pages of two; five written within the window.
    assert!(
        details.contains(&"5 log objects in the window (6 listed, 3 pages), 1 unparsable lines"),
        "{details:?}"
    );

    let run = rate_check(
        &server,
        S3Server::SECRET_KEY,
        &grant,
        &["warn=50", "warn_5xx=1", "crit_5xx=1.5"],
    );
    assert_eq!(run.code, 2, "5xx 2% > 1.5: {run:#?}");
    let run = rate_check(&server, S3Server::SECRET_KEY, &grant, &["warn=50"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let run = rate_check(&server, S3Server::SECRET_KEY, &grant, &["warn=1", "min_requests=1000"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.json()["steps"][0]["summary"],
        "too few requests in the last 15m to judge (100 < 1000)"
    );
    let run = rate_check(&server, S3Server::SECRET_KEY, &grant, &["window=3h"]);
    assert_eq!(run.metric("requests"), 190.0, "the older lines count in a 3 h window");
}

#[test]
fn a_wrong_secret_is_a_critical_signature_failure() {
    let server = S3Server::start();
    logs(&server);
    let run = rate_check(&server, "not-the-secret-key", &server.endpoint(), &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let summary = run.json()["steps"][0]["summary"].as_str().unwrap().to_string();
    assert!(
        summary.contains("signature rejected by S3") && summary.contains("SignatureDoesNotMatch"),
        "{summary}"
    );
    assert!(!run.stdout.contains("not-the-secret-key"));
}

#[test]
fn an_endpoint_that_is_not_granted_is_denied() {
    let server = S3Server::start();
    logs(&server);
    let run = rate_check(&server, S3Server::SECRET_KEY, "", &[]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains(&format!("\"sandbox: HTTP request to http://{} denied: no grant covers it — add `http://{}` to the grants (--allow)\"", server.addr, server.addr)),
        "{}",
        run.stdout
    );
    let run = rate_check(&server, S3Server::SECRET_KEY, &format!("https://{}", server.addr), &[]);
    assert_eq!(run.code, 3, "an https grant does not cover http: {run:#?}");
}

#[test]
fn prune_plans_then_deletes_exactly_the_old_objects() {
    let server = S3Server::start();
    server.bucket("temporary-uploads");
    for key in ["uploads/old-1", "uploads/old-2", "uploads/deep/old-3"] {
        server.put("temporary-uploads", key, b"0123456789", Duration::from_secs(3 * 86_400));
    }
    for key in ["uploads/new-1", "uploads/new-2"] {
        server.put("temporary-uploads", key, b"fresh", Duration::from_secs(60));
    }
    server.put(
        "temporary-uploads",
        "keep/old",
        b"not under the prefix",
        Duration::from_secs(3 * 86_400),
    );

    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("prune.yaml");
    std::fs::write(
        &book,
        format!(
            "name: prune\nsteps:\n  - id: prune\n    uses: s3-prune\n    with:\n      endpoint: {e}\n      bucket: temporary-uploads\n      prefix: uploads/\n      older_than: 24h\n      batch_size: 2\n    secrets:\n      aws_access_key_id: env:TEST_AK\n      aws_secret_access_key: env:TEST_SK\n    allow:\n      - {e}\n",
            e = server.endpoint()
        ),
    )
    .unwrap();
    let env = [("TEST_AK", S3Server::ACCESS_KEY), ("TEST_SK", S3Server::SECRET_KEY)];
    let run = runbox_env(&["run", book.to_str().unwrap(), "--format", "json"], &env);
    assert_eq!(run.code, 0, "{run:#?}");
    let step = &run.json()["steps"][0];
    assert_eq!(
        step["plan"]["summary"],
        "delete 3 objects (30 B) older than 24h under \"uploads/\" in bucket temporary-uploads"
    );
    assert_eq!(step["plan"]["destructive"], true);
    assert!(
        step["plan"]["changes"][0]
            .as_str()
            .unwrap()
            .starts_with("delete uploads/deep/old-3 (10 B, 3 days old)"),
        "{step}"
    );
    assert!(
        server.exists("temporary-uploads", "uploads/old-1"),
        "the plan deleted something"
    );

    let audit = dir.path().join("audit.jsonl");
    let run = runbox_env(
        &[
            "run",
            book.to_str().unwrap(),
            "--format",
            "json",
            "--apply",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.json()["steps"][0]["summary"],
        "applied: deleted 3 of 3 objects (30 B)"
    );
    for key in ["uploads/old-1", "uploads/old-2", "uploads/deep/old-3"] {
        assert!(!server.exists("temporary-uploads", key), "{key} was not deleted");
    }
    for key in ["uploads/new-1", "uploads/new-2", "keep/old"] {
        assert!(server.exists("temporary-uploads", key), "{key} was deleted");
    }

    // An empty prefix is refused.
    std::fs::write(
        &book,
        std::fs::read_to_string(&book)
            .unwrap()
            .replace("prefix: uploads/", "prefix: \"\""),
    )
    .unwrap();
    let run = runbox_env(
        &[
            "run",
            book.to_str().unwrap(),
            "--format",
            "json",
            "--apply",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains("refusing to prune the whole bucket"),
        "{}",
        run.stdout
    );
    assert!(server.exists("temporary-uploads", "keep/old"));
}

#[test]
fn minio_prometheus_counters_are_a_second_source() {
    let metrics = "# HELP minio_s3_requests_total Total number of S3 requests\n\
# TYPE minio_s3_requests_total counter\n\
minio_s3_requests_total{api=\"getobject\",server=\"127.0.0.1:9000\"} 150\n\
minio_s3_requests_total{api=\"putobject\",server=\"127.0.0.1:9000\"} 50\n\
# TYPE minio_s3_requests_4xx_errors_total counter\n\
minio_s3_requests_4xx_errors_total{api=\"getobject\",server=\"127.0.0.1:9000\"} 15\n\
minio_s3_requests_4xx_errors_total{api=\"putobject\",server=\"127.0.0.1:9000\"} 10\n\
# TYPE minio_s3_requests_5xx_errors_total counter\n\
minio_s3_requests_5xx_errors_total{api=\"putobject\",server=\"127.0.0.1:9000\"} 4\n";
    let server = crate::harness::HttpServer::start(move |req, _| {
        if req.path == "/minio/v2/metrics/cluster" {
            crate::harness::Reply::new(200, metrics)
        } else {
            crate::harness::Reply::new(404, "no")
        }
    });
    let url = format!("metrics_url={}/minio/v2/metrics/cluster", server.url());
    let run = runbox_env(
        &[
            "check",
            "s3-4xx-rate",
            "--with",
            &url,
            "--with",
            "warn=10",
            "--allow",
            &server.url(),
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 1, "12.5% > 10: {run:#?}");
    assert_eq!(
        run.json()["steps"][0]["summary"],
        "200 requests since the counters started (minio_s3_requests): 4xx 12.5%, 5xx 2.0% (worst: putobject 4xx 20.0%, 5xx 8.0%)"
    );
    assert_eq!(run.metric("errors_4xx"), 25.0);
}
