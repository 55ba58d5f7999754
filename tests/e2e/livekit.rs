//! `livekit-token` against a stand-in for LiveKit's RoomService. LiveKit's server cannot
//! run here, so the stand-in verifies the bearer token with an independent JWT
//! implementation (the `jsonwebtoken` crate, not the plugin's code): HS256 signature,
//! issuer = API key, `nbf`, `exp` (against a clock the test can move), and the
//! `roomList` grant; then it answers like LiveKit's Twirp API, errors included.

use crate::harness::{HttpServer, Reply, Run, free_port, runbox_env};
use serde::Deserialize;

const API_KEY: &str = "APIrunboxTest";
const API_SECRET: &str = "lk-test-secret-8f3b2c9e41d7a6055e";

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    video: Video,
}

#[derive(Deserialize, Default)]
struct Video {
    #[serde(rename = "roomList", default)]
    room_list: bool,
}

/// The stand-in, with its clock `clock_offset` seconds ahead of the real one.
fn stand_in(clock_offset: i64) -> HttpServer {
    HttpServer::start(move |req, _| {
        if (req.method.as_str(), req.path.as_str()) != ("POST", "/twirp/livekit.RoomService/ListRooms") {
            return Reply::new(404, r#"{"code":"bad_route","msg":"no handler"}"#);
        }
        let unauthenticated = |msg: &str| Reply::new(401, &format!(r#"{{"code":"unauthenticated","msg":"{msg}"}}"#));
        let Some(token) = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")) else {
            return unauthenticated("no authorization header");
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[API_KEY]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.validate_exp = false; // checked below against the stand-in's own clock
        validation.leeway = 0;
        let claims = match jsonwebtoken::decode::<Claims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(API_SECRET.as_bytes()),
            &validation,
        ) {
            Ok(data) => data.claims,
            Err(err) => return unauthenticated(&format!("invalid token: {err}")),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + clock_offset;
        if claims.exp <= now {
            return unauthenticated("invalid token: token is expired");
        }
        if !claims.video.room_list || claims.sub.is_empty() {
            return Reply::new(403, r#"{"code":"permission_denied","msg":"requires roomList grant"}"#);
        }
        Reply::new(
            200,
            r#"{"rooms":[{"sid":"RM_standup","name":"standup","num_participants":3},{"sid":"RM_retro","name":"retro","num_participants":0}]}"#,
        )
    })
}

/// The grant ListRooms needs: Twirp calls are POSTs, and a check may send one only to a
/// grant that lists the method.
fn post(url: &str) -> String {
    format!("POST {url}")
}

fn check(server_url: &str, allow: Option<&str>, secret: &str, extra: &[&str]) -> Run {
    let url = format!("url={server_url}");
    let key = format!("api_key={API_KEY}");
    let mut args = vec![
        "check",
        "livekit-token",
        "--with",
        &url,
        "--with",
        &key,
        "--secret",
        "livekit_api_secret=env:LK_SECRET",
        "--format",
        "json",
    ];
    if let Some(allow) = allow {
        args.extend(["--allow", allow]);
    }
    for value in extra {
        args.extend(["--with", value]);
    }
    runbox_env(&args, &[("LK_SECRET", secret)])
}

fn summary(run: &Run) -> String {
    run.json()["steps"][0]["summary"].as_str().unwrap().to_string()
}

#[test]
fn the_api_accepts_a_token_minted_with_the_right_secret() {
    let server = stand_in(0);
    let run = check(&server.url(), Some(&post(&server.url())), API_SECRET, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        summary(&run).starts_with("ListRooms accepted the token in ") && summary(&run).ends_with(" ms: 2 rooms"),
        "{}",
        summary(&run)
    );
    assert!(!run.stdout.contains(API_SECRET));
    let sent = &server.received()[0];
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.body, "{}");
}

#[test]
fn a_wrong_secret_or_an_expired_token_is_credentials_rejected() {
    let server = stand_in(0);
    let run = check(&server.url(), Some(&post(&server.url())), "not-the-secret-at-all", &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        summary(&run),
        "credentials rejected by LiveKit (401 unauthenticated: invalid token: InvalidSignature)"
    );

    // The server's clock is an hour ahead: a 5-minute token has expired for it.
    let ahead = stand_in(3600);
    let run = check(&ahead.url(), Some(&post(&ahead.url())), API_SECRET, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        summary(&run),
        "credentials rejected by LiveKit (401 unauthenticated: invalid token: token is expired)"
    );
    // …and a token valid long enough is accepted by the same server.
    let run = check(
        &ahead.url(),
        Some(&post(&ahead.url())),
        API_SECRET,
        &["ttl_seconds=7200"],
    );
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn a_server_that_is_down_or_failing_is_critical_and_an_ungranted_url_is_denied() {
    let down = format!("http://127.0.0.1:{}", free_port());
    let run = check(&down, Some(&post(&down)), API_SECRET, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).starts_with("LiveKit API unreachable:") && summary(&run).ends_with("connection refused"),
        "{}",
        summary(&run)
    );

    let failing = HttpServer::start(|_, _| Reply::new(503, r#"{"code":"unavailable","msg":"node draining"}"#));
    let run = check(&failing.url(), Some(&post(&failing.url())), API_SECRET, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(summary(&run), "LiveKit API error (503 unavailable: node draining)");

    let server = stand_in(0);
    let run = check(&server.url(), None, API_SECRET, &[]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).starts_with(&format!("sandbox: HTTP request to http://{} denied", server.addr)),
        "{}",
        summary(&run)
    );
    assert!(server.received().is_empty());

    // The host granted without the method: ListRooms is refused before it is sent.
    let run = check(&server.url(), Some(&server.url()), API_SECRET, &[]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).starts_with(&format!(
            "sandbox: HTTP POST to http://{addr} denied: a check or plan may only read (GET, HEAD, OPTIONS) — add `POST http://{addr}` to the grants (--allow)",
            addr = server.addr
        )),
        "{}",
        summary(&run)
    );
    assert!(server.received().is_empty());
}

#[test]
fn mint_only_needs_no_network() {
    let key = format!("api_key={API_KEY}");
    let run = runbox_env(
        &[
            "check",
            "livekit-token",
            "--with",
            &key,
            "--with",
            "mode=mint-only",
            "--with",
            "room=standup",
            "--secret",
            "livekit_api_secret=env:LK_SECRET",
        ],
        &[("LK_SECRET", API_SECRET)],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout
            .contains("minted and verified an HS256 token for runbox-probe (valid 300 s)"),
        "{}",
        run.stdout
    );
    let run = runbox_env(
        &["check", "livekit-token", "--with", &key, "--with", "mode=mint-only"],
        &[],
    );
    assert_eq!(run.code, 3, "no secret granted: {run:#?}");
    assert!(
        run.stdout
            .contains("config field `api_secret_secret`: secret `livekit_api_secret` is not granted"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_session_start_failure_runbook_runs_against_the_stand_in() {
    let livekit = stand_in(0);
    let api = HttpServer::start(|_, _| Reply::new(503, r#"{"status":"degraded"}"#));
    let runbook = crate::harness::workspace().join("runbooks/session-start-failure.yaml");
    let (livekit_url, api_url) = (
        format!("livekit_url={}", livekit.url()),
        format!("api_url={}", api.url()),
    );
    let args = [
        "run",
        runbook.to_str().unwrap(),
        "--set",
        &livekit_url,
        "--set",
        &api_url,
        "--format",
        "json",
    ];
    let run = runbox_env(
        &args,
        &[("LIVEKIT_API_KEY", API_KEY), ("LIVEKIT_API_SECRET", API_SECRET)],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    let json = run.json();
    let status = |id: &str| {
        json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (status("token"), status("livekit-api"), status("session-api")),
        ("ok".into(), "ok".into(), "critical".into())
    );

    let run = runbox_env(
        &args,
        &[("LIVEKIT_API_KEY", API_KEY), ("LIVEKIT_API_SECRET", "rotated-away")],
    );
    let json = run.json();
    let step = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "livekit-api")
        .unwrap();
    assert_eq!(step["status"], "critical");
    assert_eq!(step["attempts"], 2, "retried once");
}
