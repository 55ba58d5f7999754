//! Plugins that attack what runbox writes rather than the sandbox: secrets smuggled out
//! through the host's own messages and transformations, escape sequences aimed at the
//! terminal and the approval prompt, forged Nagios status lines and perfdata, and forged
//! incident timelines. Every output format and the log stream are checked, through the
//! real `runbox` binary.

use crate::harness::{plugin, runbox, runbox_env};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

const FORMATS: [&str; 6] = ["human", "json", "junit", "nagios", "prometheus", "markdown"];

fn runbook(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("runbook.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Each log format and verbosity × each report format, with `env`.
fn every_output(args: &[&str], env: &[(&str, &str)], mut check: impl FnMut(&str, &str)) {
    for logs in [["-v", "--log-format", "text"], ["-vv", "--log-format", "json"]] {
        for format in FORMATS {
            let mut all = logs.to_vec();
            all.extend_from_slice(args);
            all.extend(["--format", format]);
            let run = runbox_env(&all, env);
            assert!(run.code != 64, "{format}: {run:#?}");
            let what = format!("{format} {logs:?}");
            check(&what, &run.stdout);
            check(&format!("{what} (stderr)"), &run.stderr);
        }
    }
}

fn assert_absent(what: &str, output: &str, secret: &str) {
    let lower = output.to_ascii_lowercase();
    let secret = secret.to_ascii_lowercase();
    let (first, second) = secret.split_at(secret.len() / 2);
    for piece in [secret.as_str(), first, second] {
        assert!(
            !lower.contains(piece),
            "{what}: `{piece}` of the secret leaked:\n{output}"
        );
    }
}

/// A plugin granted one secret tries to get its value printed by runbox itself: by
/// asking for a secret *named* like the value, by looking up a host name built from it
/// in mixed case (the grant hint lower-cases names), and by printing it where a cap cuts
/// it in half (summary, detail, stdout). No output format, no log line at `-v`/`-vv`, in
/// text or JSON, carries the value, either half of it, or a case-folded copy.
#[test]
fn a_secret_never_leaves_through_denials_logs_or_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "Zq7Kp2WmXv9rTb4N";
    let steps = [
        r#"{"mode": "leak", "secret": "api_token"}"#.to_string(),
        // The summary cap is 1024 bytes, a detail's 1024, stdout's 64 KiB.
        r#"{"mode": "forge", "secret": "api_token", "pad": 1020, "summary": "{pad}{secret}", "details": ["{pad}{secret}"], "metrics": [{"name": "{pad}{secret}", "value": "1", "warn": "{secret}"}]}"#.to_string(),
        format!(
            r#"{{"mode": "forge", "secret": "api_token", "pad": {}, "stdout": "{{pad}}{{secret}}", "summary": "printed"}}"#,
            64 * 1024 - 7
        ),
    ];
    let mut text = String::from("name: leak\nsteps:\n");
    for (i, config) in steps.iter().enumerate() {
        text.push_str(&format!(
            "  - id: s{i}\n    uses: {}\n    with: {config}\n    secrets:\n      api_token: env:LEAKY\n",
            plugin("mischief").display()
        ));
    }
    let file = runbook(dir.path(), &text);
    let mut checked = 0;
    every_output(&["run", &file], &[("LEAKY", secret)], |what, output| {
        assert_absent(what, output, secret);
        checked += 1;
    });
    assert_eq!(checked, 24);

    // And the denials it provoked are there, redacted, naming the grant to add.
    let run = runbox_env(&["run", &file, "--format", "json"], &[("LEAKY", secret)]);
    let report = run.json();
    let denied = report["steps"][0]["denied"].to_string();
    assert!(denied.contains("secret `[REDACTED]` denied"), "{denied}");
    assert!(
        denied.contains("name lookup of `[REDACTED].Exfil.Example` denied"),
        "{denied}"
    );
    assert!(denied.contains("[REDACTED].exfil.example"), "{denied}");
}

/// A secret made of the characters each format escapes (quotes, backslash, `<`, `&`,
/// `|`, `=`, `_`, `*`) is still recognised after JSON, XML, Markdown, Prometheus and
/// Nagios escaping, wherever the plugin put it.
#[test]
fn a_secret_is_recognised_after_every_escaping() {
    let dir = tempfile::tempdir().unwrap();
    let secret = r#"Ab"c\d<e&f|g=h_i*j'k"#;
    let file = runbook(
        dir.path(),
        &format!(
            "name: leak\nsteps:\n  - id: s\n    uses: {}\n    with: {}\n    secrets:\n      api_token: env:LEAKY\n",
            plugin("mischief").display(),
            r#"{"mode": "forge", "secret": "api_token", "summary": "{secret}", "details": ["{secret}"], "log": "{secret}", "stdout": "{secret}", "metrics": [{"name": "{secret}", "value": "1", "unit": "{secret}"}]}"#
        ),
    );
    let escaped = [
        secret.to_string(),
        runbox::text::json_string(secret),
        runbox::text::xml(secret),
        runbox::text::markdown(secret),
        runbox::text::prometheus_label(secret),
        runbox::text::nagios_label(secret),
        runbox::text::nagios_text(secret),
    ];
    every_output(&["run", &file], &[("LEAKY", secret)], |what, output| {
        for form in &escaped {
            assert!(
                !output.contains(form.as_str()),
                "{what}: the secret leaked as `{form}`:\n{output}"
            );
        }
    });
}

/// The escape sequences attackers use on terminals: clear screen and cursor home, an
/// OSC 52 clipboard write, an OSC 8 hyperlink, carriage return, backspace, NUL, a C1
/// CSI, a right-to-left override.
const ATTACK: &str = "\u{1b}[2J\u{1b}[H\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\\r\u{8}\u{0}\u{9b}31m\u{202e}";

fn assert_inert(what: &str, output: &str) {
    for (i, c) in output.char_indices() {
        assert!(
            c == '\n' || c == '\t' || !runbox::text::is_active(c),
            "{what}: active character {c:?} at byte {i}:\n{output:?}"
        );
    }
}

/// A check whose every field carries escape sequences: nothing reaches stdout or stderr
/// as a control character, in any format or log format; the sequences are shown as text.
#[test]
fn plugin_text_reaches_no_terminal_as_control_characters() {
    let attack = runbox::text::json_string(ATTACK);
    let config = format!(
        r#"{{"mode": "forge", "status": "warning", "summary": "s{attack}", "details": ["d{attack}"], "log": "l{attack}", "stdout": "o{attack}\nsecond line{attack}", "metrics": [{{"name": "m{attack}", "value": "1", "unit": "u{attack}", "warn": "{attack}", "crit": "1{attack}"}}]}}"#
    );
    let mut seen_visible = false;
    every_output(&["check", "mischief", "--config", &config], &[], |what, output| {
        assert_inert(what, output);
        seen_visible |= output.contains(r"\x1b[2J");
    });
    assert!(seen_visible, "the escape sequences should be shown as text");

    let run = runbox(&["check", "mischief", "--config", &config, "--format", "json"]);
    let report = run.json();
    let step = &report["steps"][0];
    assert!(
        step["summary"]
            .as_str()
            .unwrap()
            .starts_with(r"s\x1b[2J\x1b[H\x1b]52;c;"),
        "{step}"
    );
    // Thresholds that are not Nagios ranges are dropped with a note.
    assert_eq!(step["metrics"][0]["warn"], serde_json::Value::Null, "{step}");
    assert!(step["details"].to_string().contains("is not a Nagios range"), "{step}");
    // Each stdout line is its own log line.
    let logs = step["logs"].to_string();
    assert!(
        logs.contains(r"stdout: o\\x1b[2J") && logs.contains("stdout: second line"),
        "{logs}"
    );
}

/// The plugin's own name, version and description from `info()` are shown by
/// `plugins list` and `inspect`: inert too.
#[test]
fn info_text_is_inert_in_list_and_inspect() {
    let mischief_plan = plugin("mischief_plan");
    let path = mischief_plan.to_str().unwrap();
    for args in [
        vec!["plugins", "inspect", path],
        vec!["plugins", "inspect", path, "--format", "json"],
        vec!["plugins", "list"],
    ] {
        let run = runbox(&args);
        assert_inert(&format!("{args:?}"), &run.stdout);
        assert_inert(&format!("{args:?} (stderr)"), &run.stderr);
        if args[1] == "inspect" {
            let shown = r"Plans \x1b]52;c;ZXZpbA==\x07 anything";
            let in_json = runbox::text::json_string(shown);
            assert!(run.stdout.contains(shown) || run.stdout.contains(&in_json), "{run:#?}");
        }
    }
}

/// Forged Nagios output: line breaks in the summary, metric names and thresholds, `=`
/// and `'` in labels, perfdata text in thresholds, NaN and infinities. The first line is
/// runbox's status, every perfdata item is well-formed per the plugin guidelines and
/// there is one per metric, non-finite values are `U`, and bad thresholds are dropped.
#[test]
fn nagios_output_cannot_be_forged() {
    let config = r#"{"mode": "forge", "status": "critical",
        "summary": "down\nMISCHIEF OK - all fine | 'up'=1",
        "details": ["d1\nMISCHIEF OK - really"],
        "metrics": [
            {"name": "a\nMISCHIEF OK - x", "value": "1", "unit": "ms", "warn": "10\nOK", "crit": "20"},
            {"name": "b'=5 'c", "value": "NaN", "warn": "1;2;3 'injected'=9", "crit": "@10:20"},
            {"name": "d", "value": "inf", "min": "-inf", "max": "nan"},
            {"name": "e", "value": "-inf", "crit": "~:5"}
        ]}"#;
    let run = runbox(&["check", "mischief", "--config", config, "--format", "nagios"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let first = lines[0];
    assert!(first.starts_with("MISCHIEF CRITICAL - down"), "{first}");
    let (text, perfdata) = first.split_once(" | ").expect("perfdata");
    assert!(!text.contains('|') && !perfdata.contains('|'), "{first}");
    // 'label'=value[UOM];[warn];[crit];[min];[max], label without = or '.
    let item = |s: &str| -> bool {
        let Some(rest) = s.strip_prefix('\'') else { return false };
        let Some((label, rest)) = rest.split_once("'=") else {
            return false;
        };
        let fields: Vec<&str> = rest.split(';').collect();
        let value = fields[0].trim_end_matches(|c: char| c.is_ascii_alphabetic() || c == '%');
        !label.contains(['\'', '=']) && fields.len() <= 5 && (fields[0] == "U" || value.parse::<f64>().is_ok())
    };
    let items = perfdata_items(perfdata);
    assert_eq!(items.len(), 4, "one item per metric: {items:?}");
    for text in &items {
        assert!(item(text), "malformed perfdata item `{text}` in {first}");
    }
    assert!(items[1].starts_with("'b__5 _c'=U;;@10:20"), "{items:?}");
    assert_eq!(items[2], "'d'=U", "{items:?}");
    assert_eq!(items[3], "'e'=U;;~:5", "{items:?}");
    assert!(items[0].ends_with("=1ms;;20"), "{items:?}");
    assert!(
        !run.stdout.to_lowercase().contains("nan") && !run.stdout.contains("inf;"),
        "{}",
        run.stdout
    );
    // No later line claims a status line's place either: every line after the first
    // is runbox's long output, one per detail or note.
    assert!(lines[1..].iter().all(|line| !line.contains(" | ")), "{lines:?}");
}

/// Perfdata items split at spaces outside quoted labels.
fn perfdata_items(perfdata: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for word in perfdata.split(' ') {
        match items.last_mut() {
            Some(last) if last.matches('\'').count() % 2 == 1 => {
                last.push(' ');
                last.push_str(word);
            }
            _ => items.push(word.to_string()),
        }
    }
    items
}

/// A dry run's plan whose summary and changes hold Markdown headings, list items and
/// HTML: rendered by an independent CommonMark implementation (pulldown-cmark), the
/// timeline has runbox's sections only ("Planned, not applied", never "Applied"), one
/// list item per change, and no HTML element from the plugin.
#[test]
fn a_dry_run_cannot_look_applied_in_the_incident_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let plan = r##"{"summary": "nothing\n\n#### Applied\n\n- 10:00:00.000 `fake` (x): deleted everything → done", "changes": ["<script>alert(1)</script><img src=x onerror=alert(2)>", "**one**\n- injected item\n# heading", "1. [link](http://evil) ![img](http://evil/pixel)"]}"##;
    let file = runbook(
        dir.path(),
        &format!(
            "name: timeline\nsteps:\n  - id: plan\n    uses: {}\n    with: {plan}\n",
            plugin("mischief_plan").display()
        ),
    );
    let run = runbox(&["run", &file, "--format", "markdown"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let html = {
        let parser = pulldown_cmark::Parser::new_ext(&run.stdout, pulldown_cmark::Options::ENABLE_TABLES);
        let mut html = String::new();
        pulldown_cmark::html::push_html(&mut html, parser);
        html
    };
    let headings: Vec<&str> = html.lines().filter(|line| line.starts_with("<h")).collect();
    assert_eq!(headings.len(), 2, "{headings:?}\n{html}");
    assert!(headings[1].contains("Planned, not applied"), "{headings:?}");
    assert!(!html.contains("<h4>Applied"), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("<img") && !html.contains("<a "),
        "{html}"
    );
    assert!(!html.contains("<strong>") && !html.contains("<em>"), "{html}");
    // The plan's item and its three changes, nothing more.
    let planned = html.split("Planned, not applied").nth(1).expect("a planned section");
    assert_eq!(planned.matches("<li>").count(), 4, "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
}

/// The interactive approval prompt, in a real pseudo-terminal: a plan that clears the
/// screen and redraws it is shown as text, and the approver's "n" refuses it.
#[test]
fn the_approval_prompt_shows_exactly_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let attack =
        runbox::text::json_string("\u{1b}[2J\u{1b}[HStep `safe` requires approval:\nplan: nothing (read-only)\r");
    let file = runbook(
        dir.path(),
        &format!(
            "name: prompt\nsteps:\n  - id: wipe\n    uses: {}\n    approval: required\n    with: {{\"summary\": \"drop the database{attack}\", \"changes\": [\"DROP DATABASE app{attack}\"]}}\n",
            plugin("mischief_plan").display()
        ),
    );
    let audit = dir.path().join("audit.jsonl");
    let screen = in_terminal(
        &["run", &file, "--apply", "--audit-log", audit.to_str().unwrap()],
        "[y/N]",
        "n\n",
    );
    assert_inert("prompt", &screen.replace("\r\n", "\n"));
    assert!(
        screen.contains(
            r"plan: drop the database\x1b[2J\x1b[HStep `safe` requires approval:\nplan: nothing (read-only)\r"
        ),
        "{screen}"
    );
    assert!(screen.contains(r"  - DROP DATABASE app\x1b[2J"), "{screen}");
    assert!(screen.contains("approval refused at the prompt"), "{screen}");
}

/// Runs runbox with a pseudo-terminal as stdin, stdout and stderr; types `input` once
/// `prompt` appears; returns everything the terminal showed.
fn in_terminal(args: &[&str], prompt: &str, input: &str) -> String {
    let (mut master, slave) = openpty();
    let mut command = crate::harness::runbox_command(args);
    command
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = command.spawn().expect("runbox runs");
    drop(command);
    let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let screen = screen.clone();
        let mut master = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the child has exited and closed the terminal.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let started = Instant::now();
    while !String::from_utf8_lossy(&screen.lock().unwrap()).contains(prompt) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no prompt: {}",
            String::from_utf8_lossy(&screen.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    master.write_all(input.as_bytes()).unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let text = String::from_utf8(screen.lock().unwrap().clone()).expect("UTF-8 on the terminal");
    assert!(status.code().is_some(), "{text}");
    text
}

fn openpty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the pointers; no name, termios or
    // window size is passed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    assert!(master.as_raw_fd() >= 0);
    (master, slave)
}

/// An applied plan that carries a granted secret in its summary, changes and outcome:
/// the audit log, written before and after the apply, holds `[REDACTED]`, never the value.
#[test]
fn the_audit_log_never_holds_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "Au7dItSeCrEt99";
    let file = runbook(
        dir.path(),
        &format!(
            "name: audit\nsteps:\n  - id: act\n    uses: {}\n    with: {{\"secret\": \"api_token\", \"summary\": \"rotate {{secret}}\", \"changes\": [\"set {{secret}}\"]}}\n    secrets:\n      api_token: env:LEAKY\n",
            plugin("mischief_plan").display()
        ),
    );
    let audit = dir.path().join("audit.jsonl");
    let run = runbox_env(
        &[
            "run",
            &file,
            "--apply",
            "--audit-log",
            audit.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[("LEAKY", secret)],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let log = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(
        log.contains("rotate [REDACTED]") && log.contains("applied [REDACTED]"),
        "{log}"
    );
    assert_absent("audit log", &log, secret);
    assert_absent("report", &run.stdout, secret);
}

/// Found in review: captured stdout is kept past its cap by the longest secret, and
/// redaction shrinks it, so a secret straddling the end of what was captured must still
/// not survive in part. Sixty lines of forty secrets each: no prefix of it is shown.
#[test]
fn captured_output_never_ends_inside_a_secret() {
    let secret = "TOPSECRETVALUE0123456789abcdefXY";
    let line = "{secret}".repeat(40);
    let stdout = vec![line; 60].join("\\n");
    let config = format!(r#"{{"mode": "forge", "secret": "api_token", "summary": "printed", "stdout": "{stdout}"}}"#);
    let args = [
        "check",
        "mischief",
        "--config",
        &config,
        "--secret",
        "api_token=env:LEAKY",
    ];
    every_output(&args, &[("LEAKY", secret)], |what, output| {
        let lower = output.to_ascii_lowercase();
        for len in [4, 8, 13, 20] {
            let prefix = secret[..len].to_ascii_lowercase();
            assert!(
                !lower.contains(&prefix),
                "{what}: a {len}-byte prefix of the secret leaked:\n{output}"
            );
        }
    });
}

/// Found in review: a plugin asks for a secret *named* padding plus a secret, so that the
/// name cap would cut it in half, and sends a GET whose method-override headers carry a
/// secret (shown escaped and cut in the denial). Both are redacted before they are cut or
/// escaped. The GET is refused before any connection.
#[test]
fn secrets_in_names_and_override_headers_are_redacted_before_they_are_cut() {
    let secret = "S3cr3t'Value-0123456789-abcdefghij";
    let port = crate::harness::free_port();
    let config = format!(
        r#"{{"mode": "cut", "secret": "api_token", "ask": "{}{{secret}}", "target": "http://127.0.0.1:{port}/", "headers": ["x-http-method-override: {{secret}}", "x-http-method: {}{{secret}}"]}}"#,
        "x".repeat(110),
        "x".repeat(40)
    );
    let grant = format!("http://127.0.0.1:{port}");
    let args = [
        "check",
        "mischief",
        "--config",
        &config,
        "--secret",
        "api_token=env:LEAKY",
        "--allow",
        &grant,
    ];
    every_output(&args, &[("LEAKY", secret)], |what, output| {
        let lower = output.to_ascii_lowercase();
        for piece in ["s3cr3t'value-01234", "s3cr3t\\'value", "0123456789-abcdefghij"] {
            assert!(!lower.contains(piece), "{what}: `{piece}` leaked:\n{output}");
        }
    });
    let run = runbox_env(
        &[
            "check",
            "mischief",
            "--config",
            &config,
            "--secret",
            "api_token=env:LEAKY",
            "--allow",
            &grant,
            "--format",
            "json",
        ],
        &[("LEAKY", secret)],
    );
    let denied = run.json()["steps"][0]["denied"].to_string();
    assert!(denied.contains("x-http-method-override: [REDACTED]"), "{denied}");
    assert!(denied.contains("secret `xxxx"), "{denied}");
}

/// Found in review: load errors quote the plugin's config schema (a `$ref`, a property
/// name); its line breaks must not forge lines of runbox's output.
#[test]
fn load_errors_show_a_schema_s_line_breaks_as_text() {
    let hostile = crate::harness::plugin_dir().join("hostile/hostile-info-newline-ref.wasm");
    let path = hostile.to_str().unwrap();
    for args in [vec!["plugins", "inspect", path], vec!["check", path]] {
        let run = runbox(&args);
        assert_eq!(run.code, 64, "{run:#?}");
        let all = format!("{}{}", run.stdout, run.stderr);
        assert_inert(&format!("{args:?}"), &all);
        assert!(
            all.lines()
                .all(|line| !line.starts_with("OK ") && !line.starts_with("FORGED")),
            "a forged line: {all}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}
