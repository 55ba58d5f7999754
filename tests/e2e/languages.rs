//! Plugins written in other languages run in the same sandbox as Rust ones.

use crate::harness::{HttpServer, Reply, runbox};

/// `webhook-reachable` is JavaScript (componentize-js): its `fetch()` goes through the
/// host's wasi:http capability, grant-checked like everything else.
#[test]
fn javascript_fetch_goes_through_the_http_capability() {
    let server = HttpServer::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/hooks/livekit") => Reply::new(204, ""),
        _ => Reply::new(404, "{\"error\": \"no such hook\"}"),
    });
    let url = format!("url={}/hooks/livekit", server.url());
    let run = runbox(&[
        "check",
        "webhook-reachable",
        "--with",
        &url,
        "--allow",
        &server.url(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let step = &run.json()["steps"][0];
    assert!(
        step["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("POST {}/hooks/livekit → 204 in ", server.url())),
        "{step}"
    );
    let received = server.received();
    assert_eq!((received.len(), received[0].body.as_str()), (1, "{}"));

    let wrong = format!("url={}/hooks/other", server.url());
    let run = runbox(&["check", "webhook-reachable", "--with", &wrong, "--allow", &server.url()]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout.contains("→ 404 in") && run.stdout.contains("expected 200 or 204"),
        "{}",
        run.stdout
    );

    // Without a grant: denied, and nothing reaches the server.
    let before = server.received().len();
    let run = runbox(&["check", "webhook-reachable", "--with", &url]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("sandbox: HTTP request to http://{} denied", server.addr)),
        "{}",
        run.stdout
    );
    assert_eq!(server.received().len(), before);
}

/// A redirect is a new request: the host checks it against the grants again (the Rust
/// SDK follows redirects hop by hop; http-health uses it).
#[test]
fn redirects_are_checked_again() {
    let target = HttpServer::start(|_, _| Reply::new(200, "ok"));
    let location = format!("{}/landing", target.url());
    let origin = HttpServer::start(move |_, _| Reply::new(302, "").header("location", &location));
    let url = format!("url={}/hook", origin.url());
    let run = runbox(&[
        "check",
        "http-health",
        "--with",
        &url,
        "--with",
        "follow_redirects=3",
        "--allow",
        &origin.url(),
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("sandbox: HTTP request to http://{} denied", target.addr)),
        "{}",
        run.stdout
    );
    assert!(target.received().is_empty(), "the redirect reached an ungranted host");

    let both = [
        "check",
        "http-health",
        "--with",
        &url,
        "--with",
        "follow_redirects=3",
        "--allow",
        &origin.url(),
        "--allow",
        &target.url(),
    ];
    let run = runbox(&both);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(target.received().len(), 1);
}

/// The host caps a response body at 16 MiB, whatever the plugin is willing to read.
#[test]
fn response_bodies_are_capped_by_the_host() {
    let big = "x".repeat(17 << 20);
    let server = HttpServer::start(move |_, _| Reply::new(200, &big));
    let url = format!("url={}/big", server.url());
    let run = runbox(&[
        "check",
        "http-health",
        "--with",
        &url,
        "--with",
        "max_body_bytes=67108864",
        "--allow",
        &server.url(),
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stdout
            .contains("HTTP response body size exceeds limit: 16777216 bytes"),
        "{}",
        run.stdout
    );
}
