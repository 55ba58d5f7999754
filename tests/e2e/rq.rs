//! `rq-requeue` and `rq-workers`' stuck-job check against real RQ 2.12.0 (python-rq from
//! the test-servers venv) on a real redis-server: jobs that really fail in a real worker,
//! requeued by the plugin and then run again by a worker; a job that really sits in
//! RQ's StartedJobRegistry. What happened is read back through RQ's own Python API
//! (tests/e2e/rq_app.py `inspect`), not through our Redis client.

use crate::harness::{Book, Redis, runbox, step, workspace};
use crate::seed_runbooks::{RqWorker, audit, burst_worker, enqueue, int, metric, rq_command, wait_until};
use serde_json::Value;
use std::time::Duration;

/// What RQ's API says of each job: `{id: {status, origin, failed, queued}}`.
fn inspect(redis: &Redis, ids: &[String]) -> Value {
    let output = rq_command("python3")
        .arg(workspace().join("tests/e2e/rq_app.py"))
        .args(["inspect", &redis.url(), "default"])
        .args(ids)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn requeue_book(redis: &Redis, selector: &str) -> Book {
    Book::new(&format!(
        "name: requeue\nsteps:\n  - id: failed\n    uses: rq-failed-jobs\n    with: {{url: '{url}', queue: default, crit: '100:'}}\n    allow: ['{url}']\n  - id: requeue\n    uses: rq-requeue\n    needs: failed\n    when: steps.failed.outputs.job_ids\n    approval: required\n    with:\n      url: {url}\n      queue: default\n{selector}    allow: ['{url}']\n",
        url = redis.url()
    ))
}

#[test]
fn rq_requeue_plans_without_writing_and_requeues_exactly_the_planned_jobs_which_a_worker_then_runs() {
    let redis = Redis::start();
    let failed = enqueue(&redis, 3);
    burst_worker(&redis);
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 3);
    let book = requeue_book(&redis, "      job_ids: ${{ steps.failed.outputs.job_ids }}\n");

    // The plan lists each job and writes nothing: RQ still sees three failed jobs.
    let run = book.run(&["--format", "json"]);
    let json = run.json();
    let plan = &step(&json, "requeue")["plan"];
    assert_eq!(plan["summary"], "requeue 3 failed jobs of queue default", "{json:#}");
    let mut planned: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    planned.sort();
    let mut expected: Vec<String> = failed
        .iter()
        .map(|id| format!("requeue {id} from rq:failed:default onto rq:queue:default"))
        .collect();
    expected.sort();
    assert_eq!(planned, expected);
    for (id, job) in inspect(&redis, &failed).as_object().unwrap() {
        assert_eq!(job["status"], "failed", "{id}: {job}");
        assert_eq!(job["failed"], true, "{id}");
        assert_eq!(job["queued"], false, "{id}");
    }
    assert!(!book.audit().exists() || audit(&book.audit()).is_empty());

    // Unapproved: not applied, still nothing written.
    let run = book.run(&[
        "--format",
        "json",
        "--apply",
        "--audit-log",
        book.audit().to_str().unwrap(),
    ]);
    assert_eq!(step(&run.json(), "requeue")["applied"], false);
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 3);

    // Approved: RQ's API now sees each job queued on its queue, none failed; audited with
    // the plan; the output names the requeued jobs.
    let run = book.run(&[
        "--format",
        "json",
        "--apply",
        "--approve",
        "requeue",
        "--audit-log",
        book.audit().to_str().unwrap(),
    ]);
    let json = run.json();
    let requeue = step(&json, "requeue");
    assert_eq!(requeue["applied"], true, "{json:#}");
    assert_eq!(requeue["status"], "ok", "{json:#}");
    let mut requeued: Vec<String> = serde_json::from_value(requeue["outputs"]["requeued"].clone()).unwrap();
    requeued.sort();
    let mut sorted = failed.clone();
    sorted.sort();
    assert_eq!(requeued, sorted);
    for (id, job) in inspect(&redis, &failed).as_object().unwrap() {
        assert_eq!(job["status"], "queued", "{id}: {job}");
        assert_eq!(job["origin"], "default", "{id}");
        assert_eq!(job["failed"], false, "{id}");
        assert_eq!(job["queued"], true, "{id}");
    }
    let lines = audit(&book.audit());
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["event"], "apply-started");
    assert_eq!(lines[0]["plan"]["changes"].as_array().unwrap().len(), 3);
    assert_eq!(lines[1]["event"], "apply-finished");
    assert_eq!(lines[1]["outcome"]["status"], "ok");

    // The requeued jobs are real work again: with the cause fixed, a worker runs them.
    redis.command(&["SET", "test:fixed", "1"]).unwrap();
    burst_worker(&redis);
    for (id, job) in inspect(&redis, &failed).as_object().unwrap() {
        assert_eq!(job["status"], "finished", "{id}: {job}");
    }
    assert_eq!(int(&redis, &["LLEN", "test:ran"]), 6, "each job ran twice");
}

#[test]
fn rq_requeue_all_takes_only_registry_members_and_a_plan_of_none_applies_nothing() {
    let redis = Redis::start();
    let failed = enqueue(&redis, 2);
    burst_worker(&redis);
    // `all: true` is `rq requeue --all`, capped by max_jobs: the plan says what remains.
    let book = requeue_book(&redis, "      all: true\n      max_jobs: 1\n");
    let run = book.run(&[
        "--format",
        "json",
        "--apply",
        "--approve",
        "requeue",
        "--audit-log",
        book.audit().to_str().unwrap(),
    ]);
    let json = run.json();
    let requeue = step(&json, "requeue");
    assert!(
        requeue["plan"]["summary"]
            .as_str()
            .unwrap()
            .contains("1 more failed jobs in rq:failed:default beyond max_jobs 1"),
        "{json:#}"
    );
    assert_eq!(requeue["outputs"]["requeued"].as_array().unwrap().len(), 1);
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 1);
    assert_eq!(int(&redis, &["LLEN", "rq:queue:default"]), 1);

    // Ids that are not in the failed registry (one queued, one unknown) are left alone.
    let book = Book::new(&format!(
        "name: none\nsteps:\n  - id: requeue\n    uses: rq-requeue\n    with:\n      url: {url}\n      job_ids: ['{first}', no-such-job]\n    allow: ['{url}']\n",
        url = redis.url(),
        first = inspect(&redis, &failed)
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, job)| job["queued"] == true)
            .map(|(id, _)| id.clone())
            .unwrap()
    ));
    let run = book.run(&[
        "--format",
        "json",
        "--apply",
        "--audit-log",
        book.audit().to_str().unwrap(),
    ]);
    let json = run.json();
    let requeue = step(&json, "requeue");
    assert_eq!(requeue["status"], "ok", "{json:#}");
    assert!(
        requeue["summary"].as_str().unwrap().contains("nothing to apply"),
        "{json:#}"
    );
    assert!(
        requeue["plan"]["summary"]
            .as_str()
            .unwrap()
            .contains("no-such-job: not in rq:failed:default"),
        "{json:#}"
    );
    assert!(
        audit(&book.audit()).is_empty(),
        "nothing was applied, so nothing is audited"
    );
    assert_eq!(int(&redis, &["LLEN", "rq:queue:default"]), 1);

    // An id that is not an RQ id (as an output or an item could carry) is refused before
    // any command is sent: the step is UNKNOWN and says why.
    let book = Book::new(&format!(
        "name: hostile\nsteps:\n  - id: requeue\n    uses: rq-requeue\n    with:\n      url: {url}\n      job_id: 'x rq:failed:default'\n    allow: ['{url}']\n",
        url = redis.url()
    ));
    let run = book.run(&["--format", "json", "--apply"]);
    let json = run.json();
    assert_eq!(run.code, 3, "{json:#}");
    assert!(
        step(&json, "requeue")["summary"]
            .as_str()
            .unwrap()
            .contains("is not an RQ job id"),
        "{json:#}"
    );
    assert_eq!(int(&redis, &["ZCARD", "rq:failed:default"]), 1);
}

#[test]
fn rq_workers_reports_a_job_stuck_in_started() {
    let redis = Redis::start();
    let worker = RqWorker::start(&redis);
    let output = rq_command("python3")
        .arg(workspace().join("tests/e2e/rq_app.py"))
        .args(["enqueue-slow", &redis.url(), "default", "30"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let id = String::from_utf8(output.stdout).unwrap().trim().to_string();
    wait_until("the job to start", Duration::from_secs(20), || {
        int(&redis, &["ZCARD", "rq:wip:default"]) == 1
    });
    let check = |extra: &[&str]| {
        let (with, allow) = (format!("url={}", redis.url()), redis.url());
        let mut args = vec![
            "check",
            "rq-workers",
            "--with",
            &with,
            "--allow",
            &allow,
            "--format",
            "json",
        ];
        args.extend(extra);
        let run = runbox(&args);
        let json = run.json();
        (run.code, json["steps"][0].clone())
    };
    // Within its timeout (600 s + 60): running, not stuck.
    let (code, result) = check(&[]);
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(metric(&result, "started"), 1.0);
    assert_eq!(metric(&result, "stuck"), 0.0);
    // Past `stuck_after_seconds`: WARNING, naming the job.
    std::thread::sleep(Duration::from_secs(2));
    let (code, result) = check(&["--with", "stuck_after_seconds=1"]);
    assert_eq!(code, 1, "{result:#}");
    assert!(
        result["summary"]
            .as_str()
            .unwrap()
            .ends_with("; 1 of 1 started jobs stuck"),
        "{result:#}"
    );
    let details: Vec<&str> = result["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with(&format!("job {id}: started ")) && d.ends_with("past 1 s (stuck)")),
        "{details:?}"
    );
    drop(worker);
}
