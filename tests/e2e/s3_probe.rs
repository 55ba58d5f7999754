//! `runbox check s3-probe` against a real S3-compatible server (s3s-fs) that verifies
//! every SigV4 signature: each mode passing and failing, and a canary that leaves
//! nothing behind on the server's disk.

use crate::harness::{Run, S3Server, runbox_env};
use serde_json::Value;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

/// `uploads`: five objects under `tmp/` (100, 200, 300, 400, 500 B) and one elsewhere.
fn server() -> S3Server {
    let s3 = S3Server::start();
    s3.bucket("uploads");
    for (i, key) in ["tmp/a", "tmp/b", "tmp/c/d", "tmp/e", "tmp/f"].iter().enumerate() {
        s3.put("uploads", key, &vec![b'x'; 100 * (i + 1)], HOUR);
    }
    s3.put("uploads", "keep/readme", b"hello", HOUR);
    s3
}

/// The check with the server's keys (or `secret`), granted `grant`.
fn probe(s3: &S3Server, secret: &str, grant: &str, with: &[&str]) -> Run {
    let endpoint = format!("endpoint={}", s3.endpoint());
    let mut args = vec![
        "check",
        "s3-probe",
        "--with",
        &endpoint,
        "--secret",
        "aws_access_key_id=env:TEST_AK",
        "--secret",
        "aws_secret_access_key=env:TEST_SK",
        "--format",
        "json",
    ];
    if !grant.is_empty() {
        args.extend(["--allow", grant]);
    }
    for value in with {
        args.extend(["--with", value]);
    }
    runbox_env(&args, &[("TEST_AK", S3Server::ACCESS_KEY), ("TEST_SK", secret)])
}

fn ok_probe(s3: &S3Server, with: &[&str]) -> Run {
    probe(s3, S3Server::SECRET_KEY, &s3.endpoint(), with)
}

fn result(run: &Run) -> Value {
    run.json()["steps"][0].clone()
}

fn summary(run: &Run) -> String {
    result(run)["summary"].as_str().unwrap().to_string()
}

#[test]
fn head_bucket_passes_and_names_a_missing_bucket() {
    let s3 = server();
    let run = ok_probe(&s3, &["bucket=uploads"]);
    assert_eq!(
        (run.code, summary(&run)),
        (0, "bucket uploads reachable".to_string()),
        "{run:#?}"
    );
    let run = ok_probe(&s3, &["bucket=nope"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).starts_with("HeadBucket nope failed: NoSuchBucket (404)"),
        "{}",
        summary(&run)
    );
}

#[test]
fn a_wrong_secret_is_a_signature_error() {
    let s3 = server();
    let run = probe(&s3, "not-the-secret-key", &s3.endpoint(), &["bucket=uploads"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).starts_with("HeadBucket uploads failed: SignatureDoesNotMatch (403)"),
        "{}",
        summary(&run)
    );
    assert!(!run.stdout.contains("not-the-secret-key") && !run.stderr.contains("not-the-secret-key"));
}

#[test]
fn the_canary_is_written_read_deleted_and_leaves_nothing() {
    let s3 = server();
    let before = s3.files("uploads");
    let grant = format!("PUT,DELETE {}", s3.endpoint());
    let run = probe(
        &s3,
        S3Server::SECRET_KEY,
        &grant,
        &["bucket=uploads", "canary_prefix=runbox-canary/"],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        summary(&run),
        "bucket uploads reachable; canary put/get/delete under runbox-canary/ OK"
    );
    let detail = result(&run)["details"][0].as_str().unwrap().to_string();
    assert!(
        detail.starts_with("canary runbox-canary/runbox-canary-") && detail.ends_with(": written, read back, deleted"),
        "{detail}"
    );
    assert_eq!(s3.files("uploads"), before, "the canary left something on disk");

    // Without PUT in the grant, the sandbox refuses the write: UNKNOWN, nothing written.
    let run = ok_probe(&s3, &["bucket=uploads", "canary_prefix=runbox-canary/"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.contains("denied"), "{}", run.stdout);
    assert_eq!(s3.files("uploads"), before);

    // A prefix where the server cannot write (a file stands where its directory would
    // go): CRITICAL, naming the operation and S3's error code; nothing is left.
    s3.put("uploads", "blocked", b"a file, not a directory", HOUR);
    let before = s3.files("uploads");
    let run = probe(
        &s3,
        S3Server::SECRET_KEY,
        &grant,
        &["bucket=uploads", "canary_prefix=blocked/"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    let text = summary(&run);
    assert!(text.starts_with("canary PutObject blocked/runbox-canary-"), "{text}");
    assert!(text.contains(" failed: InternalError (500)"), "{text}");
    assert_eq!(s3.files("uploads"), before);
}

#[test]
fn named_keys_must_exist_and_missing_ones_are_listed() {
    let s3 = server();
    let run = ok_probe(&s3, &["bucket=uploads", "keys=[\"tmp/a\", \"keep/readme\"]"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(summary(&run), "bucket uploads reachable; 2 keys present");
    assert_eq!(
        result(&run)["details"],
        serde_json::json!(["tmp/a: 100 B", "keep/readme: 5 B"])
    );
    assert_eq!(result(&run)["outputs"]["missing_keys"], serde_json::json!([]));

    let run = ok_probe(
        &s3,
        &["bucket=uploads", "keys=[\"tmp/a\", \"gone/1\", \"tmp/b\", \"gone/2\"]"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        summary(&run),
        "2 of 4 keys missing: gone/1, gone/2; bucket uploads reachable"
    );
    assert_eq!(
        result(&run)["outputs"]["missing_keys"],
        serde_json::json!(["gone/1", "gone/2"])
    );
}

#[test]
fn bytes_under_a_prefix_are_summed_over_pages_and_judged() {
    let s3 = server();
    // (thresholds, exit code): 1,500 B under tmp/.
    let cases: &[(&[&str], i32)] = &[
        (&[], 0),
        (&["warn=2000"], 0),
        (&["warn=1000"], 1),
        (&["warn=1000", "crit=1400"], 2),
    ];
    for (with, code) in cases {
        let mut args = vec!["bucket=uploads", "prefix=tmp/", "page_size=2"];
        args.extend(*with);
        let run = ok_probe(&s3, &args);
        assert_eq!(run.code, *code, "{with:?}: {run:#?}");
        assert_eq!((run.metric("bytes"), run.metric("objects")), (1500.0, 5.0));
        let outputs = &result(&run)["outputs"];
        assert_eq!(
            (outputs["bytes"].as_u64(), outputs["objects"].as_u64()),
            (Some(1500), Some(5))
        );
        assert!(
            result(&run)["details"]
                .to_string()
                .contains("5 objects, 1500 B under \\\"tmp/\\\" (3 pages)"),
            "{run:#?}"
        );
    }
    let run = ok_probe(&s3, &["bucket=uploads", "prefix=tmp/", "crit=1000"]);
    assert_eq!(
        summary(&run),
        "1500 B in 5 objects under \"tmp/\": bytes outside 1000 (crit); bucket uploads reachable"
    );
    let run = ok_probe(&s3, &["bucket=uploads", "prefix=", "max_objects=3", "page_size=2"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(summary(&run).contains("at least "), "{}", summary(&run));
    // The object count and the newest object's age (a nightly backup's two promises).
    let run = ok_probe(&s3, &["bucket=uploads", "prefix=tmp/", "objects_warn=28:32"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        summary(&run).contains(": objects outside 28:32 (warn)"),
        "{}",
        summary(&run)
    );
    // The objects are an hour old (their mtime on s3s-fs's disk).
    let run = ok_probe(
        &s3,
        &[
            "bucket=uploads",
            "prefix=tmp/",
            "objects_warn=5:5",
            "newest_age_warn=7200",
        ],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let age = run.metric("newest_age_s");
    assert!((3600.0..4200.0).contains(&age), "{run:#?}");
    let run = ok_probe(&s3, &["bucket=uploads", "prefix=tmp/", "newest_age_warn=1800"]);
    assert_eq!(run.code, 1, "{run:#?}");
    // Fresh objects judged by a range that wants them at least a day old: CRITICAL.
    let run = ok_probe(&s3, &["bucket=uploads", "prefix=tmp/", "newest_age_crit=86400:"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).contains("the newest object under \"tmp/\" is "),
        "{}",
        summary(&run)
    );
    let run = ok_probe(&s3, &["bucket=uploads", "prefix=nothing-here/", "newest_age_warn=3600"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        summary(&run).contains("no object under \"nothing-here/\": nothing to judge the age of"),
        "{}",
        summary(&run)
    );
    // Thresholds without a prefix judge nothing: refused, naming the field.
    let run = ok_probe(&s3, &["bucket=uploads", "warn=10"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        summary(&run).contains("config field `warn`: thresholds judge what is under `prefix`"),
        "{}",
        summary(&run)
    );
}

#[test]
fn without_a_grant_nothing_is_sent() {
    let s3 = server();
    let run = probe(&s3, S3Server::SECRET_KEY, "", &["bucket=uploads"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("add `http://{}` to the grants (--allow)", s3.addr)),
        "{}",
        run.stdout
    );
}
