//! The CLI surface: plugins list/inspect, argument errors, logging.

use crate::harness::{Redis, runbox};

#[test]
fn inspect_shows_world_imports_and_schema() {
    let run = runbox(&["plugins", "inspect", "redis-ping", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json();
    assert_eq!(json["name"], "redis-ping");
    assert_eq!(json["world"], "runbox:plugin/check@0.2.0");
    assert_eq!(json["config_schema"]["required"][0], "url");
    let imports: Vec<&str> = json["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(imports.contains(&"runbox:plugin/host@0.2.0"), "{imports:?}");
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:sockets/tcp@0.2.")),
        "{imports:?}"
    );
    assert_eq!(json["sha256"].as_str().unwrap().len(), 64);

    let run = runbox(&["plugins", "inspect", "redis-ping"]);
    assert!(
        run.stdout
            .starts_with("name:         redis-ping\nversion:      0.1.0\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("world:        runbox:plugin/check@0.2.0"),
        "{}",
        run.stdout
    );
}

#[test]
fn list_shows_every_plugin_and_reports_broken_files() {
    let run = runbox(&["plugins", "list", "--format", "json"]);
    let json = run.json();
    let names: Vec<&str> = json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in ["redis-ping", "mischief", "noop-check"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    // not-a-check.wasm and extra_import.wasm are in the directory and are not usable
    // plugins: each is listed as an error with its reason.
    assert_eq!(run.code, 64, "{run:#?}");
    let errors: Vec<&str> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{json}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("not-a-check.wasm does not implement a runbox world")),
        "{json}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("extra_import.wasm imports `runbox-test:spy/keylogger`")),
        "{json}"
    );
}

#[test]
fn invalid_arguments_exit_64_with_the_reason() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["check", "redis-ping", "--allow", "redis//x"],
            "grant `redis//x`: missing `scheme://`",
        ),
        (
            &["check", "redis-ping", "--allow", "tcp://db"],
            "scheme `tcp` has no default port",
        ),
        (
            &["check", "redis-ping", "--secret", "pw"],
            "secret `pw`: expected NAME=env:VAR or NAME=file:PATH",
        ),
        (
            &["check", "redis-ping", "--secret", "pw=env:RUNBOX_TEST_UNSET_VAR"],
            "environment variable `RUNBOX_TEST_UNSET_VAR` is not set",
        ),
        (&["check", "redis-ping", "--timeout", "soon"], "soon"),
        (
            &["check", "redis-ping", "--with", "url"],
            "--with `url`: expected KEY=VALUE",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let run = runbox(args);
        assert_eq!(run.code, 64, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn json_logs_carry_the_run_id_and_capability_decisions() {
    let redis = Redis::start();
    let run = runbox(&[
        "-v",
        "--log-format",
        "json",
        "check",
        "redis-ping",
        "--with",
        &format!("url={}", redis.url()),
        "--allow",
        &redis.grant(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty());
    let run_id = lines[0]["span"]["run_id"].as_str().expect("run_id").to_string();
    assert_eq!(run_id.len(), 16);
    assert!(
        lines.iter().all(|l| l["span"]["run_id"] == run_id.as_str()),
        "{}",
        run.stderr
    );
    let decision = lines
        .iter()
        .find(|l| l["fields"]["message"] == "capability decision" && l["fields"]["operation"] == "connect to")
        .unwrap_or_else(|| panic!("no connect decision logged: {}", run.stderr));
    assert_eq!(decision["fields"]["plugin"], "redis-ping");
    assert_eq!(decision["fields"]["decision"], "allowed");
    assert_eq!(decision["fields"]["target"], format!("127.0.0.1:{}", redis.port));
}

#[test]
fn shell_completions_and_man_pages_come_from_the_argument_definitions() {
    // bash itself loads the script and completes a command and a subcommand's flag.
    let run = crate::harness::runbox(&["completions", "bash"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("runbox.bash");
    std::fs::write(&script, &run.stdout).unwrap();
    let complete = |words: &str| {
        let output = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _runbox runbox \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(complete("runbox ru").trim(), "run");
    assert!(complete("runbox run --app").contains("--apply"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let run = crate::harness::runbox(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:#?}");
        assert!(run.stdout.contains("runbox"), "{shell}");
    }
    // One page per command, which groff renders with each command's own flags.
    let run = crate::harness::runbox(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:#?}");
    let render = |page: &str| {
        let output = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-P-cbou"])
            .arg(dir.path().join(page))
            .output()
            .expect("groff is installed");
        assert!(
            output.status.success(),
            "{page}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout).replace('\u{2010}', "-");
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let main = render("runbox.1");
    assert!(main.contains("NAME runbox - Run operational"), "{main}");
    let run_page = render("runbox-run.1");
    assert!(
        run_page.contains("runbox run") && run_page.contains("--approve"),
        "{run_page}"
    );
    assert!(render("runbox-check.1").contains("--allow"));
    let run = crate::harness::runbox(&["man"]);
    assert!(
        run.stdout.starts_with(".ie"),
        "roff on stdout: {}",
        &run.stdout[..40.min(run.stdout.len())]
    );
}
