//! `livekit-token` against a stand-in for LiveKit's RoomService. LiveKit's server cannot
//! run here, so the stand-in verifies the bearer token with an independent JWT
//! implementation (the `jsonwebtoken` crate, not the plugin's code): HS256 signature,
//! issuer = API key, `nbf`, `exp` (against a clock the test can move), and the
//! `roomList` grant; then it answers like LiveKit's Twirp API, errors included.

use crate::harness::{HttpServer, PgTls, Postgres, Reply, Run, free_port, runbox_env, step};
use serde::Deserialize;

pub(crate) const API_KEY: &str = "APIrunboxTest";
pub(crate) const API_SECRET: &str = "lk-test-secret-8f3b2c9e41d7a6055e";

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
pub(crate) fn stand_in(clock_offset: i64) -> HttpServer {
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

/// A LiveKit that is down: every call is a 503 (as its load balancer answers in an outage).
fn livekit_down() -> HttpServer {
    HttpServer::start(|_, _| Reply::new(503, r#"{"code":"unavailable","msg":"no healthy upstream"}"#))
}

/// Our application: readiness `ready`, and every admin switch and start accepted.
fn app(ready: u16) -> HttpServer {
    HttpServer::start(move |req, _| match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/health/ready") => Reply::new(ready, "{}"),
        ("PUT" | "POST", _) => Reply::new(200, "{}"),
        _ => Reply::new(404, "no"),
    })
}

fn run_book(book: &str, sets: &[String], secret: &str, extra: &[&str]) -> (Run, serde_json::Value) {
    let runbook = crate::harness::workspace().join("runbooks").join(book);
    let mut args = vec!["run", runbook.to_str().unwrap(), "--format", "json"];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let run = runbox_env(
        &args,
        &[
            ("LIVEKIT_API_KEY", API_KEY),
            ("LIVEKIT_API_SECRET", secret),
            ("DB_PASSWORD", "scram-pw"),
        ],
    );
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:#?}"));
    (run, json)
}

fn writes(server: &HttpServer) -> Vec<String> {
    server
        .received()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {} {}", r.method, r.path, r.body))
        .collect()
}

#[test]
fn session_start_failure_tells_an_outage_from_bad_credentials_and_acts_per_tenant() {
    let livekit = stand_in(0);
    let api = app(503);
    let sets = |livekit: &HttpServer, extra: &[&str]| {
        let mut sets = vec![
            format!("livekit_url={}", livekit.url()),
            format!("api_url={}", api.url()),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        sets
    };
    // LiveKit accepts our token; our session API is not ready.
    let (run, json) = run_book("session-start-failure.yaml", &sets(&livekit, &[]), API_SECRET, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(step(&json, "livekit-api")["status"], "ok");
    assert_eq!(step(&json, "session-api")["status"], "critical");

    // A rotated secret is CRITICAL `credentials`, retried once, and does not disable the
    // tenant's starts (that is not an outage).
    let (_, json) = run_book(
        "session-start-failure.yaml",
        &sets(&livekit, &["tenant=acme"]),
        "rotated-away",
        &["--apply", "--approve", "disable-tenant-start"],
    );
    let lk = step(&json, "livekit-api");
    assert_eq!(
        (lk["status"].as_str(), lk["attempts"].as_u64()),
        (Some("critical"), Some(2))
    );
    assert_eq!(lk["outputs"]["failure"], "credentials");
    assert!(step(&json, "disable-tenant-start")["skipped"].is_string(), "{json}");
    assert!(writes(&api).is_empty(), "{:?}", writes(&api));

    // LiveKit down: the tenant's starts are disabled, that tenant's only, with approval.
    let down = livekit_down();
    let (run, json) = run_book(
        "session-start-failure.yaml",
        &sets(&down, &["tenant=acme"]),
        API_SECRET,
        &["--apply"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(step(&json, "livekit-api")["outputs"]["failure"], "unavailable");
    assert!(
        step(&json, "disable-tenant-start")["summary"]
            .as_str()
            .unwrap()
            .contains("approval required"),
        "{json}"
    );
    assert!(writes(&api).is_empty());
    let (_, json) = run_book(
        "session-start-failure.yaml",
        &sets(&down, &["tenant=acme"]),
        API_SECRET,
        &["--apply", "--approve", "disable-tenant-start"],
    );
    assert_eq!(step(&json, "disable-tenant-start")["applied"], true, "{json}");
    assert_eq!(
        writes(&api),
        [r#"PUT /admin/tenants/acme/session-start {"enabled": false, "reason": "LiveKit outage"}"#]
    );
}

#[test]
fn a_start_is_retried_with_its_own_idempotency_key_only_when_livekit_answers_and_it_was_not_recorded() {
    let livekit = stand_in(0);
    let api = app(200);
    // The event log (PostgreSQL 15): S-9's start was never written.
    let pg = Postgres::start_with(PgTls::Off);
    pg.psql(
        "app",
        "CREATE TABLE session_events (session_id text NOT NULL, seq int NOT NULL, kind text NOT NULL);
         INSERT INTO session_events VALUES ('S-8', 1, 'session.started');
         GRANT SELECT ON session_events TO PUBLIC;",
    );
    let sets = vec![
        format!("livekit_url={}", livekit.url()),
        format!("api_url={}", api.url()),
        format!("db_url={}", pg.url("scram_user")),
        format!("db_grant={}", pg.grant()),
        "sslmode=disable".to_string(),
        "session_id=S-9".to_string(),
        "idempotency_key=idem-4711".to_string(),
    ];
    let (run, json) = run_book("session-start-failure.yaml", &sets, API_SECRET, &["--apply"]);
    assert_eq!(run.code, 2, "the start was not recorded: {run:#?}");
    assert_eq!(step(&json, "session-started")["status"], "critical", "{json}");
    assert_eq!(step(&json, "retry-start")["applied"], true, "{json}");
    let starts: Vec<_> = api.received().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].path, "/sessions/S-9/start");
    assert_eq!(starts[0].header("idempotency-key"), Some("idem-4711"));
    // The retried start was written: the session started, nothing more to retry.
    pg.psql("app", "INSERT INTO session_events VALUES ('S-9', 1, 'session.started')");
    let (run, json) = run_book("session-start-failure.yaml", &sets, API_SECRET, &["--apply"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(step(&json, "retry-start")["skipped"].is_string(), "{json}");
    assert_eq!(api.received().into_iter().filter(|r| r.method == "POST").count(), 1);
}

#[test]
fn livekit_outage_blocks_starts_shows_the_banner_and_queues_webhooks_only_in_an_outage() {
    let status_page = |indicator: &'static str| {
        HttpServer::start(move |_, _| {
            Reply::new(
                200,
                &format!(r#"{{"page":{{"name":"LiveKit"}},"status":{{"indicator":"{indicator}","description":"x"}}}}"#),
            )
        })
    };
    let mitigations = ["block-new-starts", "status-banner", "queue-webhooks"];
    let approve: Vec<&str> = mitigations.iter().flat_map(|id| ["--approve", id]).collect();
    let mut apply = vec!["--apply"];
    apply.extend(&approve);

    // Our credentials are wrong, LiveKit itself is fine: nothing is blocked (the old
    // runbook blocked every start on any CRITICAL from the API).
    let (livekit, page, api) = (stand_in(0), status_page("none"), app(200));
    let sets = vec![
        format!("livekit_url={}", livekit.url()),
        format!("status_url={}/api/v2/status.json", page.url()),
        format!("status_grant={}", page.url()),
        format!("api_url={}", api.url()),
    ];
    let (run, json) = run_book("livekit-outage.yaml", &sets, "rotated-away", &apply);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(step(&json, "status-page")["status"], "ok");
    for id in mitigations {
        assert!(step(&json, id)["skipped"].is_string(), "{id}: {json}");
    }
    assert!(writes(&api).is_empty());

    // LiveKit down and its status page reporting a major incident: all three switches.
    let (down, page) = (livekit_down(), status_page("major"));
    let sets = vec![
        format!("livekit_url={}", down.url()),
        format!("status_url={}/api/v2/status.json", page.url()),
        format!("status_grant={}", page.url()),
        format!("api_url={}", api.url()),
    ];
    let (_, json) = run_book("livekit-outage.yaml", &sets, API_SECRET, &[]);
    assert_eq!(step(&json, "status-page")["status"], "critical");
    for id in mitigations {
        assert_eq!(step(&json, id)["applied"], false, "{id}: a dry run applies nothing");
    }
    assert!(writes(&api).is_empty());
    let (_, json) = run_book("livekit-outage.yaml", &sets, API_SECRET, &apply);
    for id in mitigations {
        assert_eq!(step(&json, id)["applied"], true, "{id}: {json}");
    }
    let mut sent: Vec<String> = writes(&api)
        .iter()
        .map(|w| w.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            "PUT /admin/session-start",
            "PUT /admin/status-banner",
            "PUT /admin/webhooks/retry-queue"
        ]
    );
}

#[test]
fn livekit_outage_reads_the_api_error_rate_from_prometheus_when_given() {
    // The app's own counters of its LiveKit calls: half of them failing.
    let exporter = crate::prometheus::Exporter::start(
        "# TYPE livekit_api_requests_total counter\nlivekit_api_requests_total{code=\"200\"} {n*10}\nlivekit_api_requests_total{code=\"503\"} {n*10}\n",
    );
    let prometheus = crate::prometheus::Prometheus::start(&exporter.target());
    prometheus.wait_for("rate(livekit_api_requests_total[5m])", 2);
    let livekit = stand_in(0);
    let api = app(200);
    let sets = vec![
        format!("livekit_url={}", livekit.url()),
        format!("api_url={}", api.url()),
        format!("status_url={}/status.json", api.url()),
        format!("status_grant={}", api.url()),
        format!("prometheus_url={}", prometheus.url()),
    ];
    let (_, json) = run_book("livekit-outage.yaml", &sets, API_SECRET, &[]);
    let rate = step(&json, "api-error-rate");
    assert_eq!(rate["status"], "critical", "{json}");
    assert!(
        (0.4..0.6).contains(&rate["metrics"][0]["value"].as_f64().unwrap()),
        "{rate}"
    );
    // Without Prometheus the step is skipped, and needs no grant.
    let (_, json) = run_book("livekit-outage.yaml", &sets[..4], API_SECRET, &[]);
    assert!(step(&json, "api-error-rate")["skipped"].is_string(), "{json}");
}
