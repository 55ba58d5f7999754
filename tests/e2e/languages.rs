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
