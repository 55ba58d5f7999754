//! The AWS plugins (`aws-rds-failover`, `ssm-parameter`, `ssm-put-parameter`,
//! `s3-restore`, `s3-restore-status`) and the runbooks that use them
//! (`containment.yaml`, `restore-archived-asset.yaml`) against moto's server (PyPI
//! `moto[server]`, pinned in scripts/ensure-deps) on 127.0.0.1.
//!
//! moto runs with its IAM authentication on: every request must carry a SigV4 signature
//! that moto recomputes with botocore's signer from the access key of an IAM user the
//! test created, so a request runbox signs wrongly is refused (the test
//! `a_wrong_secret_is_refused_by_motos_signature_check` shows it is). Everything a test
//! asserts about the server's state is read back by boto3 (tests/e2e/aws_peer.py), not
//! by runbox's own client.

use crate::harness::{HttpServer, PgTls, Postgres, Redis, Reply, Run, runbox_env, step, workspace};
use crate::tls_servers::{Pki, tls_only_postgres};
use serde_json::Value;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test-servers venv's Python (scripts/ensure-deps installs moto and boto3 there).
fn python() -> PathBuf {
    let path = workspace().join("target/tools/test-servers/bin/python3");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/ensure-deps (it installs moto[server] 5.2.5 and boto3 1.44.5 into target/tools/test-servers)",
        path.display()
    );
    path
}

fn peer_script() -> PathBuf {
    workspace().join("tests/e2e/aws_peer.py")
}

/// moto's server on a free 127.0.0.1 port with authentication on; killed on drop.
struct Moto {
    child: Child,
    port: u16,
    access_key: String,
    secret_key: String,
}

impl Moto {
    fn start() -> Moto {
        let port = crate::harness::free_port();
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start moto's server (run scripts/ensure-deps)");
        let mut moto = Moto {
            child,
            port,
            // Before authentication is on, moto takes any key: these only bootstrap.
            access_key: "AKIDBOOTSTRAP".into(),
            secret_key: "bootstrap".into(),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto's server exited ({status}): is moto[server] installed? run scripts/ensure-deps");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto's server did not listen on {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let keys = moto.peer(&["enable-auth"]);
        moto.access_key = keys["access_key"].as_str().unwrap().into();
        moto.secret_key = keys["secret_key"].as_str().unwrap().into();
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The grant of the AWS steps: the Query and JSON protocols read with POST.
    fn post_grant(&self) -> String {
        format!("POST {}", self.endpoint())
    }

    /// One aws_peer.py command (boto3), its JSON answer.
    fn peer(&self, args: &[&str]) -> Value {
        let output = Command::new(python())
            .arg(peer_script())
            .arg(self.endpoint())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("aws_peer.py runs");
        assert!(
            output.status.success(),
            "aws_peer.py {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("aws_peer.py prints JSON")
    }

    /// The cluster's writer, as boto3 reads it.
    fn writer(&self, cluster: &str) -> String {
        let members = self.peer(&["rds-members", cluster]);
        let writers = members["writer"].as_array().unwrap();
        assert_eq!(writers.len(), 1, "{members}");
        writers[0].as_str().unwrap().into()
    }

    fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SECRETS: &str = "    secrets:\n      aws_access_key_id: env:AWS_ACCESS_KEY_ID\n      aws_secret_access_key: env:AWS_SECRET_ACCESS_KEY\n";

/// A one-step runbook using `plugin` with `with` (YAML flow mapping), granted `grant`.
fn book(dir: &Path, plugin: &str, with: &str, grant: &str) -> PathBuf {
    let path = dir.join("book.yaml");
    std::fs::write(
        &path,
        format!(
            "name: t\nsteps:\n  - id: act\n    uses: {plugin}\n    with: {with}\n{SECRETS}    allow: [\"{grant}\"]\n"
        ),
    )
    .unwrap();
    path
}

fn run_book(moto: &Moto, book: &Path, extra: &[&str]) -> (Run, Value) {
    let mut args = vec!["run", book.to_str().unwrap(), "--format", "json"];
    args.extend(extra);
    let run = runbox_env(&args, &moto.env());
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:#?}"));
    (run, json)
}

/// `runbox check PLUGIN --with …` against moto, granted `grant`.
fn check(moto: &Moto, plugin: &str, with: &[String], grant: &str) -> (Run, Value) {
    let mut args = vec!["check", plugin, "--format", "json", "--allow", grant];
    for pair in with {
        args.extend(["--with", pair.as_str()]);
    }
    args.extend([
        "--secret",
        "aws_access_key_id=env:AWS_ACCESS_KEY_ID",
        "--secret",
        "aws_secret_access_key=env:AWS_SECRET_ACCESS_KEY",
    ]);
    let run = runbox_env(&args, &moto.env());
    let json: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:#?}"));
    let first = json["steps"][0].clone();
    (run, first)
}

/// The audit log's events for step `id`, in order.
fn audited(audit: &Path, id: &str) -> Vec<Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["step"] == id)
        .collect()
}

fn events(audit: &Path, id: &str) -> Vec<String> {
    audited(audit, id)
        .iter()
        .map(|event| event["event"].as_str().unwrap().to_string())
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value}"))
}

// ---------------------------------------------------------------------------------
// SigV4

#[test]
fn the_signature_vectors_are_botocores() {
    // The SDK's unit test signs these requests and compares with the file; here
    // botocore signs them again, so the file cannot drift from botocore.
    let vectors = workspace().join("plugins/sdk/src/sigv4_vectors.json");
    let output = Command::new(python())
        .arg(peer_script())
        .args(["-", "sign", vectors.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let botocore: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    let file: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&vectors).unwrap()).unwrap();
    assert_eq!(botocore.len(), file.len());
    for (signed, vector) in botocore.iter().zip(&file) {
        assert_eq!(signed, text(&vector["authorization"]), "{}", vector["name"]);
    }
}

#[test]
fn a_wrong_secret_is_refused_by_motos_signature_check() {
    let moto = Moto::start();
    moto.peer(&["ssm-put", "DETECTOR_MODEL_VERSION", "v41", "String"]);
    let with = [
        format!("endpoint={}", moto.endpoint()),
        "name=DETECTOR_MODEL_VERSION".into(),
        "expected=v41".into(),
    ];
    let (run, result) = check(&moto, "ssm-parameter", &with, &moto.post_grant());
    assert_eq!(run.code, 0, "signed right, accepted: {run:#?}");
    assert_eq!(result["status"], "ok");
    let wrong = [
        ("AWS_ACCESS_KEY_ID", moto.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
    ];
    let mut args = vec!["check", "ssm-parameter", "--format", "json", "--allow"];
    let grant = moto.post_grant();
    args.push(&grant);
    for pair in &with {
        args.extend(["--with", pair.as_str()]);
    }
    args.extend([
        "--secret",
        "aws_access_key_id=env:AWS_ACCESS_KEY_ID",
        "--secret",
        "aws_secret_access_key=env:AWS_SECRET_ACCESS_KEY",
    ]);
    let run = runbox_env(&args, &wrong);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.contains("SignatureDoesNotMatch (403)"), "{}", run.stdout);
}

// ---------------------------------------------------------------------------------
// RDS

#[test]
fn rds_failover_plans_without_changing_the_writer_and_applies_to_the_named_reader() {
    let moto = Moto::start();
    let members = moto.peer(&["rds-cluster", "author-prod", "3"]);
    assert_eq!(members["writer"][0], "author-prod-1", "{members}");
    let dir = tempfile::tempdir().unwrap();
    let with = format!(
        "{{endpoint: \"{}\", cluster: author-prod, target_instance: author-prod-3}}",
        moto.endpoint()
    );
    let book = book(dir.path(), "aws-rds-failover", &with, &moto.post_grant());
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_str().unwrap();

    let (run, json) = run_book(&moto, &book, &["--audit-log", audit_arg]);
    assert_eq!(run.code, 0, "{run:#?}");
    let plan = &step(&json, "act")["plan"];
    assert_eq!(
        plan["summary"],
        "fail over DB cluster author-prod (available): writer author-prod-1 → reader author-prod-3"
    );
    assert_eq!(
        plan["changes"][1],
        "current writer: author-prod-1; readers: author-prod-2, author-prod-3"
    );
    assert_eq!(moto.writer("author-prod"), "author-prod-1", "the plan failed over");
    assert!(events(&audit, "act").is_empty(), "a plan is not an apply");

    let (run, json) = run_book(&moto, &book, &["--apply", "--audit-log", audit_arg]);
    assert_eq!(run.code, 0, "{run:#?}");
    let result = step(&json, "act");
    assert_eq!(result["applied"], true);
    assert_eq!(
        result["summary"],
        "applied: DB cluster author-prod failed over: writer author-prod-1 → author-prod-3"
    );
    assert_eq!(result["outputs"]["new_writer"], "author-prod-3");
    assert_eq!(moto.writer("author-prod"), "author-prod-3");
    assert_eq!(events(&audit, "act"), ["apply-started", "apply-finished"]);
    let finished = &audited(&audit, "act")[1];
    assert!(
        finished.to_string().contains("author-prod-1 → author-prod-3"),
        "{finished}"
    );

    // Without a target RDS (moto) picks a reader; the writer runbox reports is the one
    // boto3 sees.
    let book = self::book(
        dir.path(),
        "aws-rds-failover",
        &format!("{{endpoint: \"{}\", cluster: author-prod}}", moto.endpoint()),
        &moto.post_grant(),
    );
    let (run, json) = run_book(&moto, &book, &["--apply"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let new = text(&step(&json, "act")["outputs"]["new_writer"]).to_string();
    assert_ne!(new, "author-prod-3");
    assert_eq!(moto.writer("author-prod"), new);
}

#[test]
fn rds_failover_refuses_unknown_and_single_instance_clusters_and_unknown_targets() {
    let moto = Moto::start();
    moto.peer(&["rds-cluster", "solo", "1"]);
    moto.peer(&["rds-cluster", "author-prod", "2"]);
    let dir = tempfile::tempdir().unwrap();
    for (with, says) in [
        ("cluster: nope", "DescribeDBClusters nope: DBClusterNotFoundFault (404)"),
        (
            "cluster: solo",
            "has a single instance (solo-1): a failover needs at least one reader",
        ),
        (
            "cluster: author-prod, target_instance: author-prod-1",
            "config field `target_instance`: author-prod-1 is not a reader of cluster author-prod",
        ),
    ] {
        let book = book(
            dir.path(),
            "aws-rds-failover",
            &format!("{{endpoint: \"{}\", {with}}}", moto.endpoint()),
            &moto.post_grant(),
        );
        let (run, _) = run_book(&moto, &book, &["--apply"]);
        assert_eq!(run.code, 3, "{with}: {run:#?}");
        assert!(run.stdout.contains(says), "{with}: {}", run.stdout);
    }
    assert_eq!(moto.writer("solo"), "solo-1");
    assert_eq!(moto.writer("author-prod"), "author-prod-1");
}

#[test]
fn rds_failover_fails_when_the_writer_did_not_change() {
    // moto always fails over, so this error path needs a stand-in: an RDS endpoint that
    // accepts FailoverDBCluster but keeps its writer (as a failover that did not
    // happen would look).
    let describe = "<DescribeDBClustersResponse><DescribeDBClustersResult><DBClusters><DBCluster><DBClusterIdentifier>author-prod</DBClusterIdentifier><Status>available</Status><DBClusterMembers><DBClusterMember><DBInstanceIdentifier>author-prod-1</DBInstanceIdentifier><IsClusterWriter>true</IsClusterWriter></DBClusterMember><DBClusterMember><DBInstanceIdentifier>author-prod-2</DBInstanceIdentifier><IsClusterWriter>false</IsClusterWriter></DBClusterMember></DBClusterMembers></DBCluster></DBClusters></DescribeDBClustersResult></DescribeDBClustersResponse>";
    let server = HttpServer::start(move |req, _| {
        if req.body.starts_with("Action=DescribeDBClusters&") {
            Reply::new(200, describe)
        } else if req.body.starts_with("Action=FailoverDBCluster&") {
            Reply::new(200, "<FailoverDBClusterResponse/>")
        } else {
            Reply::new(
                400,
                "<ErrorResponse><Error><Code>InvalidAction</Code><Message>no</Message></Error></ErrorResponse>",
            )
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let book = book(
        dir.path(),
        "aws-rds-failover",
        &format!("{{endpoint: \"{}\", cluster: author-prod}}", server.url()),
        &format!("POST {}", server.url()),
    );
    let run = runbox_env(
        &["run", book.to_str().unwrap(), "--format", "json", "--apply"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDSTANDIN"),
            ("AWS_SECRET_ACCESS_KEY", "stand-in"),
        ],
    );
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout
            .contains("FailoverDBCluster author-prod was accepted but the writer is still author-prod-1"),
        "{}",
        run.stdout
    );
    let actions: Vec<String> = server
        .received()
        .iter()
        .map(|r| r.body.split('&').next().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "Action=DescribeDBClusters",
            "Action=DescribeDBClusters",
            "Action=FailoverDBCluster",
            "Action=DescribeDBClusters"
        ]
    );
}

// ---------------------------------------------------------------------------------
// SSM

#[test]
fn ssm_parameter_is_ok_when_expected_critical_when_different_or_missing() {
    let moto = Moto::start();
    moto.peer(&["ssm-put", "DETECTOR_MODEL_VERSION", "v41", "String"]);
    moto.peer(&["ssm-put", "DETECTOR_MODEL_VERSION", "v42", "String"]);
    let with = |extra: &str| {
        vec![
            format!("endpoint={}", moto.endpoint()),
            "name=DETECTOR_MODEL_VERSION".to_string(),
            extra.to_string(),
        ]
    };
    let (run, result) = check(&moto, "ssm-parameter", &with("expected=v42"), &moto.post_grant());
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        result["summary"],
        "DETECTOR_MODEL_VERSION = \"v42\" (version 2), as expected"
    );
    assert_eq!(result["outputs"]["version"], 2);

    let (run, result) = check(&moto, "ssm-parameter", &with("pattern=v4?"), &moto.post_grant());
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(result["status"], "ok");
    let (run, _) = check(&moto, "ssm-parameter", &with("pattern=v3*"), &moto.post_grant());
    assert_eq!(run.code, 2, "{run:#?}");

    let (run, result) = check(&moto, "ssm-parameter", &with("expected=v41"), &moto.post_grant());
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(result["status"], "critical");
    assert_eq!(
        result["summary"],
        "DETECTOR_MODEL_VERSION is \"v42\" (version 2), expected \"v41\""
    );
    assert_eq!(result["details"][0], "type String, version 2");

    let missing = vec![
        format!("endpoint={}", moto.endpoint()),
        "name=NOT_THERE".to_string(),
        "expected=x".to_string(),
    ];
    let (run, result) = check(&moto, "ssm-parameter", &missing, &moto.post_grant());
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(result["summary"], "parameter NOT_THERE does not exist (expected \"x\")");

    // Neither or both of expected/pattern: the config error names the field.
    let (run, _) = check(&moto, "ssm-parameter", &with("region=us-east-1"), &moto.post_grant());
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(
        run.stdout.contains("config field `expected`: give exactly one of"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_securestring_value_is_never_shown() {
    let moto = Moto::start();
    let secret = "s3cr3t-model-token-7781";
    moto.peer(&["ssm-put", "/author/prod/MODEL_TOKEN", secret, "SecureString"]);
    for (expected, code, says) in [
        (secret, 0, "holds the expected value (value not shown)"),
        (
            "other-token-value",
            2,
            "differs from the expected value (value not shown)",
        ),
    ] {
        let with = [
            format!("endpoint={}", moto.endpoint()),
            "name=/author/prod/MODEL_TOKEN".into(),
            format!("expected={expected}"),
        ];
        let (run, result) = check(&moto, "ssm-parameter", &with, &moto.post_grant());
        assert_eq!(run.code, code, "{run:#?}");
        assert_eq!(
            result["summary"],
            format!("/author/prod/MODEL_TOKEN (SecureString, version 1) {says}")
        );
        for stream in [&run.stdout, &run.stderr] {
            assert!(!stream.contains(secret), "the value leaked: {stream}");
            assert!(
                !stream.contains("other-token-value"),
                "the expectation leaked: {stream}"
            );
        }
    }
    // Putting one: the plan and the outcome show neither the old nor the new value.
    let dir = tempfile::tempdir().unwrap();
    let book = book(
        dir.path(),
        "ssm-put-parameter",
        &format!(
            "{{endpoint: \"{}\", name: /author/prod/MODEL_TOKEN, value: new-token-5512}}",
            moto.endpoint()
        ),
        &moto.post_grant(),
    );
    let (run, json) = run_book(&moto, &book, &["--apply"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        step(&json, "act")["summary"],
        "applied: set /author/prod/MODEL_TOKEN: (SecureString value not shown) (version 1, SecureString) → (SecureString value not shown) (version 2)"
    );
    assert!(
        !run.stdout.contains(secret) && !run.stdout.contains("new-token-5512"),
        "{}",
        run.stdout
    );
    let now = moto.peer(&["ssm-get", "/author/prod/MODEL_TOKEN"]);
    assert_eq!(now["value"], "new-token-5512");
    assert_eq!(now["type"], "SecureString");
}

#[test]
fn ssm_put_parameter_plans_without_writing_and_applies_a_new_version() {
    let moto = Moto::start();
    moto.peer(&["ssm-put", "DETECTOR_MODEL_VERSION", "v42", "String"]);
    let dir = tempfile::tempdir().unwrap();
    let book = book(
        dir.path(),
        "ssm-put-parameter",
        &format!(
            "{{endpoint: \"{}\", name: DETECTOR_MODEL_VERSION, value: v41}}",
            moto.endpoint()
        ),
        &moto.post_grant(),
    );
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_str().unwrap();
    let (run, json) = run_book(&moto, &book, &["--audit-log", audit_arg]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        step(&json, "act")["plan"]["summary"],
        "set DETECTOR_MODEL_VERSION: \"v42\" (version 1, String) → \"v41\""
    );
    let now = moto.peer(&["ssm-get", "DETECTOR_MODEL_VERSION"]);
    assert_eq!(
        (now["value"].clone(), now["version"].clone()),
        ("v42".into(), 1.into()),
        "the plan wrote"
    );

    let (run, json) = run_book(&moto, &book, &["--apply", "--audit-log", audit_arg]);
    assert_eq!(run.code, 0, "{run:#?}");
    let result = step(&json, "act");
    assert_eq!(
        result["summary"],
        "applied: set DETECTOR_MODEL_VERSION: \"v42\" (version 1, String) → \"v41\" (version 2)"
    );
    assert_eq!(result["outputs"]["version"], 2);
    let now = moto.peer(&["ssm-get", "DETECTOR_MODEL_VERSION"]);
    assert_eq!((now["value"].clone(), now["version"].clone()), ("v41".into(), 2.into()));
    assert_eq!(events(&audit, "act"), ["apply-started", "apply-finished"]);

    // Already set: no change planned, none made.
    let (run, json) = run_book(&moto, &book, &["--apply", "--audit-log", audit_arg]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        text(&step(&json, "act")["summary"])
            .contains("nothing to do: DETECTOR_MODEL_VERSION is already \"v41\" (version 2, String)"),
        "{json}"
    );
    assert_eq!(moto.peer(&["ssm-get", "DETECTOR_MODEL_VERSION"])["version"], 2);
}

// ---------------------------------------------------------------------------------
// S3 restore

/// Makes the next restore read as in progress: moto moves a restore to IN_PROGRESS at
/// the first read more than 2 s after the object was written, and on to RESTORED 2 s
/// later (see aws_peer.py `restore-progress`); the test then holds it there.
fn arm_restores(moto: &Moto) {
    moto.peer(&["restore-progress", "arm", "2"]);
    std::thread::sleep(Duration::from_millis(2300));
}

#[test]
fn s3_restore_plans_without_restoring_applies_and_the_status_follows_it() {
    let moto = Moto::start();
    let object = moto.peer(&[
        "s3-put",
        "author-recordings-prod",
        "rec/2026/11/lecture-17.webm",
        "GLACIER",
    ]);
    assert_eq!(object["storage_class"], "GLACIER");
    moto.peer(&["s3-put", "author-recordings-prod", "rec/fresh.webm", "STANDARD"]);
    let status_with = |key: &str| {
        vec![
            format!("endpoint={}", moto.endpoint()),
            "bucket=author-recordings-prod".to_string(),
            format!("key={key}"),
        ]
    };
    let status = |key: &str| check(&moto, "s3-restore-status", &status_with(key), &moto.endpoint());

    let (run, result) = status("rec/2026/11/lecture-17.webm");
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        result["summary"],
        "s3://author-recordings-prod/rec/2026/11/lecture-17.webm is archived (GLACIER) and no restore was requested: it cannot be read"
    );
    let (run, result) = status("rec/fresh.webm");
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(text(&result["summary"]).ends_with("is not archived (STANDARD): readable as is"));
    let (run, _) = status("rec/none.webm");
    assert_eq!(run.code, 2, "{run:#?}");

    let dir = tempfile::tempdir().unwrap();
    let with = format!(
        "{{endpoint: \"{}\", bucket: author-recordings-prod, key: rec/2026/11/lecture-17.webm, days: 5, tier: Standard}}",
        moto.endpoint()
    );
    let book = book(dir.path(), "s3-restore", &with, &moto.post_grant());
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_str().unwrap();
    let (run, json) = run_book(&moto, &book, &["--audit-log", audit_arg]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        step(&json, "act")["plan"]["summary"],
        "restore s3://author-recordings-prod/rec/2026/11/lecture-17.webm (GLACIER, no restore requested) for 5 days, tier Standard"
    );
    assert_eq!(
        moto.peer(&["s3-head", "author-recordings-prod", "rec/2026/11/lecture-17.webm"])["restore"],
        Value::Null,
        "the plan restored"
    );

    arm_restores(&moto);
    let (run, json) = run_book(&moto, &book, &["--apply", "--audit-log", audit_arg]);
    // Restores stay in progress until the test lets them finish.
    moto.peer(&["restore-progress", "hold"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        step(&json, "act")["summary"],
        "applied: restore started for s3://author-recordings-prod/rec/2026/11/lecture-17.webm: restore in progress"
    );
    assert_eq!(
        moto.peer(&["s3-head", "author-recordings-prod", "rec/2026/11/lecture-17.webm"])["restore"],
        "ongoing-request=\"true\""
    );
    assert_eq!(events(&audit, "act"), ["apply-started", "apply-finished"]);

    let (run, result) = status("rec/2026/11/lecture-17.webm");
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        text(&result["summary"]).ends_with("(GLACIER): restore in progress"),
        "{result}"
    );
    // In progress: nothing more to plan.
    let (run, json) = run_book(&moto, &book, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        text(&step(&json, "act")["plan"]["summary"]).ends_with("(GLACIER) already has a restore in progress"),
        "{json}"
    );

    moto.peer(&["restore-progress", "finish"]);
    let head = moto.peer(&["s3-head", "author-recordings-prod", "rec/2026/11/lecture-17.webm"]);
    let header = text(&head["restore"]).to_string();
    assert!(header.starts_with("ongoing-request=\"false\", expiry-date="), "{head}");
    let (run, result) = status("rec/2026/11/lecture-17.webm");
    assert_eq!(run.code, 0, "{run:#?}");
    let expiry = header.split("expiry-date=\"").nth(1).unwrap().trim_end_matches('"');
    assert!(
        text(&result["summary"]).ends_with(&format!("(GLACIER) is restored, readable until {expiry}")),
        "{result}"
    );

    // A STANDARD object is not restored: nothing to do.
    let book = self::book(
        dir.path(),
        "s3-restore",
        &format!(
            "{{endpoint: \"{}\", bucket: author-recordings-prod, key: rec/fresh.webm}}",
            moto.endpoint()
        ),
        &moto.post_grant(),
    );
    let (run, json) = run_book(&moto, &book, &["--apply"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        text(&step(&json, "act")["summary"]).contains("is not archived (storage class STANDARD)"),
        "{json}"
    );
}

// ---------------------------------------------------------------------------------
// Runbooks

/// Runs a runbook from runbooks/ against moto with `sets` and `extra` arguments.
fn run_runbook(moto: &Moto, name: &str, sets: &[String], extra: &[&str]) -> (Run, Value) {
    let runbook = workspace().join("runbooks").join(name);
    let mut args = vec!["run", runbook.to_str().unwrap(), "--format", "json"];
    for set in sets {
        args.extend(["--set", set.as_str()]);
    }
    args.extend(extra);
    let mut env = moto.env().to_vec();
    env.push(("RECORDINGS_DB_PASSWORD", "scram-pw"));
    let run = runbox_env(&args, &env);
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:#?}"));
    (run, json)
}

/// The ingestion gateway stand-in: accepts POST /admin/backpressure.
fn gateway() -> HttpServer {
    HttpServer::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/admin/backpressure") => Reply::new(200, "{\"enabled\": true}"),
        _ => Reply::new(404, "no"),
    })
}

fn containment_sets(moto: &Moto, redis: &Redis, gateway: &HttpServer, db_port: u16) -> Vec<String> {
    vec![
        format!("redis_url={}", redis.url()),
        "queue_key=ingestion".into(),
        "backlog_limit=5".into(),
        format!("gateway_url={}", gateway.url()),
        "db_host=127.0.0.1".into(),
        format!("db_port={db_port}"),
        format!("rds_endpoint={}", moto.endpoint()),
        format!("ssm_endpoint={}", moto.endpoint()),
        "region=us-east-1".into(),
        "pinned_model_version=v41".into(),
    ]
}

#[test]
fn containment_fails_over_pins_the_model_and_enables_backpressure_only_with_approval() {
    let (moto, redis, gateway) = (Moto::start(), Redis::start(), gateway());
    moto.peer(&["rds-cluster", "author-prod", "2"]);
    moto.peer(&["ssm-put", "DETECTOR_MODEL_VERSION", "v42", "String"]);
    // A saturated queue (10 > 5) and a database nobody listens for.
    for n in 0..10 {
        redis.command(&["RPUSH", "ingestion", &format!("job-{n}")]).unwrap();
    }
    let closed = crate::harness::free_port();
    let sets = containment_sets(&moto, &redis, &gateway, closed);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_str().unwrap();

    // Plan: every signal is CRITICAL, every mitigation is planned, nothing changes.
    let (run, json) = run_runbook(&moto, "containment.yaml", &sets, &["--audit-log", audit_arg]);
    assert_eq!(run.code, 2, "{run:#?}");
    for id in ["queue-depth", "db-connectivity", "model-version"] {
        assert_eq!(step(&json, id)["status"], "critical", "{id}: {json}");
    }
    assert_eq!(
        step(&json, "db-failover")["plan"]["summary"],
        "fail over DB cluster author-prod (available): writer author-prod-1 → a reader RDS picks (of author-prod-2)"
    );
    assert_eq!(
        step(&json, "pin-model-version")["plan"]["summary"],
        "set DETECTOR_MODEL_VERSION: \"v42\" (version 1, String) → \"v41\""
    );
    assert_eq!(moto.writer("author-prod"), "author-prod-1");
    assert_eq!(moto.peer(&["ssm-get", "DETECTOR_MODEL_VERSION"])["value"], "v42");
    assert!(gateway.received().is_empty());

    // --apply without approvals: still nothing.
    let (_, json) = run_runbook(&moto, "containment.yaml", &sets, &["--apply", "--audit-log", audit_arg]);
    assert!(
        text(&step(&json, "db-failover")["summary"]).contains("approval required (pass --approve db-failover)"),
        "{json}"
    );
    assert_eq!(moto.writer("author-prod"), "author-prod-1");
    assert_eq!(moto.peer(&["ssm-get", "DETECTOR_MODEL_VERSION"])["version"], 1);
    assert!(gateway.received().is_empty());

    // Approved: each change is made exactly as planned, and audited.
    let approve = [
        "--apply",
        "--audit-log",
        audit_arg,
        "--approve",
        "db-failover",
        "--approve",
        "pin-model-version",
        "--approve",
        "enable-backpressure",
    ];
    let (_, json) = run_runbook(&moto, "containment.yaml", &sets, &approve);
    assert_eq!(
        step(&json, "db-failover")["summary"],
        "applied: DB cluster author-prod failed over: writer author-prod-1 → author-prod-2"
    );
    assert_eq!(moto.writer("author-prod"), "author-prod-2");
    let pinned = moto.peer(&["ssm-get", "DETECTOR_MODEL_VERSION"]);
    assert_eq!(
        (pinned["value"].clone(), pinned["version"].clone()),
        ("v41".into(), 2.into())
    );
    let sent: Vec<String> = gateway
        .received()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.body))
        .collect();
    assert_eq!(sent, ["POST /admin/backpressure {\"enabled\": true}"]);
    for id in ["db-failover", "pin-model-version", "enable-backpressure"] {
        assert_eq!(events(&audit, id), ["apply-started", "apply-finished"], "{id}");
    }
}

#[test]
fn containment_changes_nothing_while_the_database_queue_and_model_are_healthy() {
    let (moto, redis, gateway) = (Moto::start(), Redis::start(), gateway());
    moto.peer(&["rds-cluster", "author-prod", "2"]);
    moto.peer(&["ssm-put", "DETECTOR_MODEL_VERSION", "v41", "String"]);
    redis.command(&["RPUSH", "ingestion", "job-1"]).unwrap();
    // A PostgreSQL that answers the SSLRequest (TLS only).
    let pki = Pki::new();
    let pg = tls_only_postgres(&pki.server);
    let sets = containment_sets(&moto, &redis, &gateway, pg.port);
    let (run, json) = run_runbook(
        &moto,
        "containment.yaml",
        &sets,
        &[
            "--apply",
            "--approve",
            "db-failover",
            "--approve",
            "pin-model-version",
            "--approve",
            "enable-backpressure",
        ],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    for id in ["queue-depth", "db-connectivity", "model-version"] {
        assert_eq!(step(&json, id)["status"], "ok", "{id}: {json}");
    }
    for id in ["db-failover", "pin-model-version", "enable-backpressure"] {
        assert!(step(&json, id)["skipped"].is_string(), "{id}: {json}");
    }
    assert_eq!(moto.writer("author-prod"), "author-prod-1");
    assert_eq!(moto.peer(&["ssm-get", "DETECTOR_MODEL_VERSION"])["version"], 1);
    assert!(gateway.received().is_empty());
}

#[test]
fn restore_archived_asset_restores_with_approval_and_reports_progress() {
    let moto = Moto::start();
    let key = "rec/2026/11/lecture-17.webm";
    moto.peer(&["s3-put", "author-recordings-prod", key, "DEEP_ARCHIVE"]);
    // Step 1 finds the key where the seed says it is: recordings.archive_key.
    let pg = Postgres::start_with(PgTls::Off);
    pg.psql(
        "app",
        &format!("ALTER TABLE recordings ADD COLUMN archive_key text; UPDATE recordings SET archive_key = '{key}' WHERE id = 3"),
    );
    let sets = [
        "recording_id=3".to_string(),
        format!("db_url={}", pg.url("scram_user")),
        format!("db_grant={}", pg.grant()),
        "sslmode=disable".into(),
        format!("s3_endpoint={}", moto.endpoint()),
        "region=us-east-1".into(),
        "path_style=true".into(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_str().unwrap();

    let (run, json) = run_runbook(&moto, "restore-archived-asset.yaml", &sets, &["--audit-log", audit_arg]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        step(&json, "restore")["plan"]["summary"],
        format!(
            "restore s3://author-recordings-prod/{key} (DEEP_ARCHIVE, no restore requested) for 5 days, tier Standard"
        )
    );
    assert_eq!(step(&json, "restore-status")["status"], "critical");
    assert_eq!(
        moto.peer(&["s3-head", "author-recordings-prod", key])["restore"],
        Value::Null
    );

    let (_, json) = run_runbook(
        &moto,
        "restore-archived-asset.yaml",
        &sets,
        &["--apply", "--audit-log", audit_arg],
    );
    assert!(
        text(&step(&json, "restore")["summary"]).contains("approval required (pass --approve restore)"),
        "{json}"
    );
    assert_eq!(
        moto.peer(&["s3-head", "author-recordings-prod", key])["restore"],
        Value::Null
    );

    arm_restores(&moto);
    let (run, json) = run_runbook(
        &moto,
        "restore-archived-asset.yaml",
        &sets,
        &["--apply", "--approve", "restore", "--audit-log", audit_arg],
    );
    moto.peer(&["restore-progress", "hold"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(step(&json, "restore")["applied"], true);
    assert_eq!(
        moto.peer(&["s3-head", "author-recordings-prod", key])["restore"],
        "ongoing-request=\"true\""
    );
    assert_eq!(step(&json, "restore-status")["status"], "warning");
    assert!(text(&step(&json, "restore-status")["summary"]).ends_with("restore in progress"));
    assert_eq!(events(&audit, "restore"), ["apply-started", "apply-finished"]);

    // Later: the restore finished; the runbook plans nothing and reports OK.
    moto.peer(&["restore-progress", "finish"]);
    let (run, json) = run_runbook(&moto, "restore-archived-asset.yaml", &sets, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        text(&step(&json, "restore")["summary"]).contains("is already restored, readable until"),
        "{json}"
    );
    assert_eq!(step(&json, "restore-status")["status"], "ok");

    // A recording that was never archived: CRITICAL at step 1, nothing asked of S3.
    let mut sets = sets.to_vec();
    sets[0] = "recording_id=4".into();
    let (run, json) = run_runbook(
        &moto,
        "restore-archived-asset.yaml",
        &sets,
        &["--apply", "--approve", "restore"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(step(&json, "locate-key")["status"], "critical");
    for id in ["restore", "restore-status"] {
        assert!(!step(&json, id)["skipped"].is_null(), "{id}: {json:#}");
    }
}
