//! The runbook language the seed playbooks need: step outputs, `for_each`, and what
//! neither may do (widen a grant, inject a template, launder a secret, run past a cap).
//! The `relay` test plugin returns the outputs its config names and reports the config
//! it received; `http-action` against a real HTTP server shows what a mitigation sent.

use crate::harness::{Book, HttpServer, Reply, Run, runbox, step};

/// What a `relay` step received: its summary is `received ` + its config as JSON.
fn received(json: &serde_json::Value, id: &str) -> serde_json::Value {
    let summary = step(json, id)["summary"].as_str().unwrap().to_string();
    let config = summary
        .strip_prefix("received ")
        .unwrap_or_else(|| panic!("{id}: {summary}"));
    serde_json::from_str(config).unwrap_or_else(|err| panic!("{id}: {err}: {config}"))
}

/// A `relay` step `id` returning `outputs` (YAML flow text of `{name, value}` pairs).
fn relay(id: &str, outputs: &str) -> String {
    format!("  - id: {id}\n    uses: relay\n    with:\n      outputs: {outputs}\n")
}

fn json_run(book: &Book, args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec!["--format", "json"];
    all.extend(args);
    let run = book.run(&all);
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {run:#?}"));
    (run, json)
}

#[test]
fn outputs_flow_into_later_configs_with_their_type_and_into_when() {
    let book = Book::new(&format!(
        "name: outputs\nsteps:\n{}  - id: use\n    uses: relay\n    needs: find\n    when: steps.find.outputs.job_ids\n    with:\n      ids: ${{{{ steps.find.outputs.job_ids }}}}\n      text: 'ids=${{{{ steps.find.outputs.job_ids }}}} n=${{{{ steps.find.outputs.n }}}}'\n      count: ${{{{ steps.find.outputs.n }}}}\n  - id: none\n    uses: relay\n    needs: empty\n    when: steps.empty.outputs.job_ids\n{}",
        relay(
            "find",
            r#"[{name: job_ids, value: '["j1","j2"]'}, {name: n, value: '2'}]"#
        ),
        relay("empty", r#"[{name: job_ids, value: '[]'}]"#),
    ));
    let (run, json) = json_run(&book, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        step(&json, "find")["outputs"]["job_ids"],
        serde_json::json!(["j1", "j2"])
    );
    let got = received(&json, "use");
    assert_eq!(
        got["ids"],
        serde_json::json!(["j1", "j2"]),
        "a whole-value template keeps the list"
    );
    assert_eq!(
        got["text"], r#"ids=["j1","j2"] n=2"#,
        "inside text, values are JSON text"
    );
    assert_eq!(got["count"], 2);
    // An empty list is false in `when`: the step is skipped with the condition as reason.
    assert!(
        step(&json, "none")["skipped"]
            .as_str()
            .unwrap()
            .contains("steps.empty.outputs.job_ids"),
        "{json}"
    );
}

#[test]
fn a_later_step_reads_earlier_statuses_and_summaries_as_text() {
    // The `notify` shape: one message built from how earlier steps ended, including a
    // skipped step and a `for_each` set (its worst item, and "N items, M run").
    let book = Book::new(&format!(
        "name: summary\nsteps:\n{}  - id: gone\n    uses: relay\n    when: inputs.never\n  - id: each\n    uses: relay\n    for_each: [1, 2]\n  - id: tell\n    uses: relay\n    needs: [find, gone, each]\n    with:\n      text: 'find ${{{{ steps.find.status }}}}: ${{{{ steps.find.summary }}}}; gone ${{{{ steps.gone.status }}}}; each ${{{{ steps.each.status }}}} (${{{{ steps.each.summary }}}})'\n      status: ${{{{ steps.find.status }}}}\ninputs:\n  never: {{default: ''}}\n",
        relay("find", r#"[{name: n, value: '1'}]"#),
    ));
    let (run, json) = json_run(&book, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    let got = received(&json, "tell");
    let find_summary = step(&json, "find")["summary"].as_str().unwrap().to_string();
    assert!(find_summary.starts_with("received "), "{find_summary}");
    assert_eq!(
        got["text"],
        format!("find ok: {find_summary}; gone skipped; each ok (2 items, 2 run)"),
        "{json}"
    );
    assert_eq!(got["status"], "ok");
    // Like outputs, they are read only from steps in `needs` and never reach a grant.
    for (text, expected) in [
        (
            "    with:\n      text: ${{ steps.find.summary }}\n",
            "`steps.find.summary`: step `find` must be in this step's `needs`",
        ),
        (
            "    needs: find\n    allow:\n      - http://${{ steps.find.status }}\n",
            "nothing a plugin returns may widen them",
        ),
        (
            "    needs: find\n    env:\n      S: ${{ steps.find.summary }}\n",
            "nothing a plugin returns may widen them",
        ),
    ] {
        let book = Book::new(&format!(
            "name: misuse\nsteps:\n{}  - id: use\n    uses: relay\n{text}",
            relay("find", "[]")
        ));
        let run = runbox(&["validate", book.path.to_str().unwrap()]);
        assert_eq!(run.code, 64, "{text}: {run:#?}");
        assert!(run.stderr.contains(expected), "{expected}\n{}", run.stderr);
    }
}

#[test]
fn for_each_mitigation_plans_every_item_applies_only_with_one_approval_and_audits_each() {
    let server = HttpServer::start(|req, _| {
        if req.method == "POST" && req.path.starts_with("/jobs/") && req.path.ends_with("/replay") {
            Reply::new(202, "{\"ok\": true}")
        } else {
            Reply::new(404, "no")
        }
    });
    let book = Book::new(&format!(
        "name: replay\nsteps:\n{}  - id: replay\n    uses: http-action\n    needs: find\n    for_each: ${{{{ steps.find.outputs.job_ids }}}}\n    approval: required\n    with:\n      url: {url}/jobs/${{{{ item }}}}/replay\n    allow:\n      - {url}\n",
        relay("find", r#"[{name: job_ids, value: '["a1","b2","c3"]'}]"#),
        url = server.url()
    ));
    let audit = book.audit();
    let audit = audit.to_str().unwrap();

    // Dry run: three plans, nothing sent.
    let (run, json) = json_run(&book, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    for (index, id) in ["a1", "b2", "c3"].iter().enumerate() {
        let item = step(&json, &format!("replay[{index}]"));
        assert_eq!(item["item"]["value"], *id);
        assert_eq!(item["item"]["of"], 3);
        assert!(
            item["plan"]["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("/jobs/{id}/replay")),
            "{item}"
        );
    }
    assert!(server.received().is_empty(), "a plan sent a request");

    // --apply without the approval: WARNING for each item, still nothing sent.
    let (run, json) = json_run(&book, &["--apply", "--audit-log", audit]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        step(&json, "replay[2]")["summary"]
            .as_str()
            .unwrap()
            .contains("approval required (pass --approve replay)"),
        "{json}"
    );
    assert!(server.received().is_empty());

    // One --approve covers the set: each item's request, in list order, each audited.
    let (run, json) = json_run(&book, &["--apply", "--approve", "replay", "--audit-log", audit]);
    assert_eq!(run.code, 0, "{run:#?}");
    let sent: Vec<String> = server
        .received()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        sent,
        ["POST /jobs/a1/replay", "POST /jobs/b2/replay", "POST /jobs/c3/replay"]
    );
    assert_eq!(step(&json, "replay[1]")["applied"], true);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(audit)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let items: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap().into(),
                l["item"]["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(items[0], ("apply-started".to_string(), "a1".to_string()));
    assert_eq!(items[5], ("apply-finished".to_string(), "c3".to_string()));

    // Every format reports each item.
    for format in ["human", "junit", "prometheus", "markdown"] {
        let run = book.run(&["--format", format]);
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(text.contains("replay[2]"), "{format}: {text}");
    }
    let nagios = book.run(&["--format", "nagios"]);
    assert!(
        nagios.stdout.starts_with("REPLAY OK - 4 steps, all OK"),
        "{}",
        nagios.stdout
    );
}

#[test]
fn a_list_past_its_cap_runs_nothing_and_says_so() {
    let server = HttpServer::start(|_, _| Reply::new(202, "ok"));
    let ids: Vec<String> = (0..101).map(|i| format!("j{i}")).collect();
    let value = serde_json::to_string(&ids).unwrap();
    let yaml = |cap: &str| {
        format!(
            "name: cap\nsteps:\n{}  - id: replay\n    uses: http-action\n    needs: find\n    for_each: ${{{{ steps.find.outputs.job_ids }}}}\n{cap}    with:\n      url: {url}/jobs/${{{{ item }}}}/replay\n    allow:\n      - {url}\n",
            relay("find", &format!("[{{name: job_ids, value: '{value}'}}]")),
            url = server.url()
        )
    };
    let book = Book::new(&yaml(""));
    let (run, json) = json_run(&book, &["--apply"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let summary = step(&json, "replay")["summary"].as_str().unwrap().to_string();
    assert!(summary.contains("101 items, more than its cap of 100"), "{summary}");
    assert!(server.received().is_empty(), "a capped list sent requests");

    let book = Book::new(&yaml("    max_items: 200\n"));
    let (run, json) = json_run(&book, &["--apply"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(server.received().len(), 101);
    assert_eq!(step(&json, "replay[100]")["item"]["value"], "j100");

    let book = Book::new(&yaml("    max_items: 5000\n"));
    let run = runbox(&["validate", book.path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("`max_items: 5000` must be from 1 to 1000"),
        "{}",
        run.stderr
    );
}

#[test]
fn outputs_holding_templates_are_data_and_never_expanded() {
    let book = Book::new(&format!(
        "name: inject\ninputs:\n  target:\n    default: safe\n  payload:\n    default: '\"${{{{ secrets.k }}}} ${{{{ inputs.target }}}} ${{{{ env.HOME }}}} ${{{{ steps.find.outputs.payload }}}}\"'\nsteps:\n{}  - id: use\n    uses: relay\n    needs: find\n    secrets:\n      k: env:RUNBOX_TEST_INJECT\n    with:\n      text: 'got ${{{{ steps.find.outputs.payload }}}}'\n      whole: ${{{{ steps.find.outputs.payload }}}}\n",
        relay("find", "[{name: payload, value: '${{ inputs.payload }}'}]"),
    ));
    let run = crate::harness::runbox_env(
        &["run", book.path.to_str().unwrap(), "--format", "json"],
        &[("RUNBOX_TEST_INJECT", "s3cr3t-value")],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let got = received(&run.json(), "use");
    let literal = "${{ secrets.k }} ${{ inputs.target }} ${{ env.HOME }} ${{ steps.find.outputs.payload }}";
    assert_eq!(got["whole"], literal);
    assert_eq!(got["text"], format!("got {literal}"));
    assert!(!run.stdout.contains("s3cr3t-value"));
}

#[test]
fn outputs_and_items_never_reach_grants_or_env() {
    for (field, text) in [
        ("allow", "    allow:\n      - http://${{ steps.find.outputs.host }}\n"),
        (
            "allow",
            "    allow:\n      - {url: 'http://127.0.0.1:1', methods: ['${{ steps.find.outputs.m }}']}\n",
        ),
        ("env", "    env:\n      TARGET: ${{ steps.find.outputs.host }}\n"),
        (
            "allow",
            "    for_each: [a, b]\n    allow:\n      - http://${{ item }}\n",
        ),
    ] {
        let book = Book::new(&format!(
            "name: widen\nsteps:\n{}  - id: use\n    uses: relay\n    needs: find\n{text}",
            relay("find", r#"[{name: host, value: '"127.0.0.1:1"'}]"#)
        ));
        let run = runbox(&["validate", book.path.to_str().unwrap()]);
        assert_eq!(run.code, 64, "{field}: {run:#?}");
        assert!(
            run.stderr.contains("nothing a plugin returns may widen them"),
            "{field}: {}",
            run.stderr
        );
    }
}

#[test]
fn an_item_naming_an_ungranted_host_is_denied_and_that_host_hears_nothing() {
    let granted = HttpServer::start(|_, _| Reply::new(202, "ok"));
    let other = HttpServer::start(|_, _| Reply::new(202, "ok"));
    let book = Book::new(&format!(
        "name: deny\nsteps:\n{}  - id: hit\n    uses: http-action\n    needs: find\n    for_each: ${{{{ steps.find.outputs.urls }}}}\n    with:\n      url: ${{{{ item }}}}/x\n    allow:\n      - {granted}\n",
        relay(
            "find",
            &format!(
                "[{{name: urls, value: '[\"{}\", \"{}\"]'}}]",
                granted.url(),
                other.url()
            )
        ),
        granted = granted.url()
    ));
    let (run, json) = json_run(&book, &["--apply"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(step(&json, "hit[0]")["status"], "ok");
    assert_eq!(step(&json, "hit[1]")["status"], "unknown");
    assert!(
        step(&json, "hit[1]")["summary"]
            .as_str()
            .unwrap()
            .contains("denied: no grant covers it"),
        "{json}"
    );
    assert_eq!(granted.received().len(), 1);
    assert!(other.received().is_empty(), "an ungranted host was reached");
}

#[test]
fn hostile_outputs_are_bounded_named_and_redacted() {
    let many: Vec<String> = (0..40).map(|i| format!("{{name: o{i}, value: '1'}}")).collect();
    let book = Book::new(&format!(
        "name: hostile\nsteps:\n  - id: find\n    uses: relay\n    secrets:\n      token: env:RUNBOX_TEST_LEAK\n    with:\n      secret_output: token\n      outputs: [{{name: 'Bad Name', value: '1'}}, {{name: broken, value: '[1,'}}, {{name: esc, value: '\"\\u001b[2Jx\"'}}, {}]\n  - id: use\n    uses: relay\n    needs: find\n    with:\n      leak: ${{{{ steps.find.outputs.leak }}}}\n",
        many.join(", ")
    ));
    let run = crate::harness::runbox_env(
        &["run", book.path.to_str().unwrap(), "--format", "json"],
        &[("RUNBOX_TEST_LEAK", "very-secret-token")],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let json = run.json();
    let find = step(&json, "find");
    let outputs = find["outputs"].as_object().unwrap();
    // 32 outputs are considered (the cap bounds the work): two of them were invalid.
    assert_eq!(outputs.len(), 30, "{outputs:?}");
    assert!(!outputs.contains_key("Bad Name") && !outputs.contains_key("broken"));
    let details = find["details"].to_string();
    for note in [
        "`Bad Name` dropped",
        "`broken` dropped: its value is not JSON",
        "further outputs dropped (cap is 32)",
    ] {
        assert!(details.contains(note), "{note}: {details}");
    }
    // A secret the first step was given reaches the next step only as [REDACTED].
    assert_eq!(received(&json, "use")["leak"], "[REDACTED]");
    assert!(!run.stdout.contains("very-secret-token"));
    // An escape sequence in an output is data in JSON, and inert on a terminal.
    assert_eq!(outputs["esc"], "\u{1b}[2Jx");
    let human = crate::harness::runbox_env(
        &["run", book.path.to_str().unwrap(), "--format", "human"],
        &[("RUNBOX_TEST_LEAK", "very-secret-token")],
    );
    assert!(!human.stdout.contains('\u{1b}') && !human.stderr.contains('\u{1b}'));
}

#[test]
fn a_late_value_that_breaks_the_schema_or_is_missing_is_unknown_with_the_reason() {
    let book = Book::new(&format!(
        "name: late\nsteps:\n{}  - id: typed\n    uses: relay\n    needs: find\n    with:\n      count: ${{{{ steps.find.outputs.word }}}}\n  - id: missing\n    uses: relay\n    needs: find\n    with:\n      x: ${{{{ steps.find.outputs.nothing }}}}\n  - id: each\n    uses: relay\n    needs: find\n    for_each: ${{{{ steps.find.outputs.nothing }}}}\n",
        relay("find", r#"[{name: word, value: '"abc"'}]"#)
    ));
    let (run, json) = json_run(&book, &[]);
    assert_eq!(run.code, 3, "{run:#?}");
    let typed = step(&json, "typed")["summary"].as_str().unwrap().to_string();
    assert!(
        typed.contains("config after filling in outputs and items") && typed.contains("count"),
        "{typed}"
    );
    let missing = step(&json, "missing")["summary"].as_str().unwrap().to_string();
    assert!(missing.contains("step `find` gave no output `nothing`"), "{missing}");
    let each = step(&json, "each")["summary"].as_str().unwrap().to_string();
    assert!(
        each.contains("guard the step with `when: steps.find.outputs.nothing`"),
        "{each}"
    );
}

#[test]
fn on_failure_abort_stops_the_rest_of_a_for_each() {
    let book = Book::new(
        "name: abort\nsteps:\n  - id: each\n    uses: relay\n    on_failure: abort\n    for_each: [{status: ok}, {status: critical}, {status: ok}]\n    with:\n      status: ${{ item.status }}\n  - id: after\n    uses: relay\n    needs: each\n",
    );
    let (run, json) = json_run(&book, &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(step(&json, "each[0]")["status"], "ok");
    assert_eq!(step(&json, "each[1]")["status"], "critical");
    assert!(
        step(&json, "each[2]")["skipped"]
            .as_str()
            .unwrap()
            .contains("item 1 failed and the step has `on_failure: abort`"),
        "{json}"
    );
    assert!(
        step(&json, "after")["skipped"]
            .as_str()
            .unwrap()
            .contains("has `on_failure: abort`")
    );
}

#[test]
fn for_each_over_an_input_set_on_the_command_line() {
    let book = Book::new(
        "name: input\ninputs:\n  hosts:\n    default: []\nsteps:\n  - id: each\n    uses: relay\n    for_each: ${{ inputs.hosts }}\n    with:\n      host: ${{ item }}\n  - id: after\n    uses: relay\n    needs: each\n    when: steps.each.status == 'ok'\n",
    );
    let (run, json) = json_run(&book, &["--set", "hosts=a.internal, b.internal"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(received(&json, "each[1]")["host"], "b.internal");
    assert_eq!(step(&json, "after")["skipped"], serde_json::Value::Null, "{json}");
    let (run, json) = json_run(&book, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        step(&json, "each")["skipped"]
            .as_str()
            .unwrap()
            .contains("the list is empty")
    );
}

#[test]
fn validate_names_each_misuse_of_outputs_items_and_secrets() {
    let book = Book::new(&format!(
        "name: misuse\nsteps:\n{}  - id: stranger\n    uses: relay\n    with:\n      x: ${{{{ steps.find.outputs.a }}}}\n  - id: noitem\n    uses: relay\n    with:\n      x: ${{{{ item }}}}\n  - id: nosecret\n    uses: relay\n    with:\n      x: ${{{{ secrets.nope }}}}\n  - id: each\n    uses: relay\n    for_each: [1, 2]\n  - id: reader\n    uses: relay\n    needs: each\n    when: steps.each.metrics.m > 0\n    with:\n      y: ${{{{ steps.each.outputs.a }}}}\n  - id: scalar\n    uses: relay\n    for_each: 5\n  - id: capped\n    uses: relay\n    max_items: 5\n",
        relay("find", "[]")
    ));
    let run = runbox(&["validate", book.path.to_str().unwrap()]);
    assert_eq!(run.code, 64, "{run:#?}");
    for expected in [
        "step `stranger`: `steps.find.outputs.a`: step `find` must be in this step's `needs`",
        "step `noitem`: `${{ item }}` is the current item of a `for_each`, and this step has none",
        "step `nosecret`: `${{ secrets.nope }}` names no secret of this step",
        "step `reader`: `steps.each.metrics.m`: step `each` runs once per item",
        "step `reader`: `steps.each.outputs.a`: step `each` runs once per item",
        "step `scalar`: `for_each` takes a YAML list, `${{ inputs.NAME }}` or `${{ steps.ID.outputs.NAME }}`",
        "step `capped`: `max_items` applies to a step with `for_each`",
    ] {
        assert!(run.stderr.contains(expected), "{expected}\n{}", run.stderr);
    }
}

#[test]
fn an_item_cannot_walk_out_of_its_url_path_segment() {
    let server = HttpServer::start(|_, _| Reply::new(202, "ok"));
    let book = Book::new(&format!(
        "name: paths\nsteps:\n{}  - id: replay\n    uses: http-action\n    needs: find\n    for_each: ${{{{ steps.find.outputs.ids }}}}\n    with:\n      url: {url}/jobs/${{{{ item | url }}}}/replay\n    allow:\n      - {url}\n",
        relay(
            "find",
            r#"[{name: ids, value: '["ok-1", "../../admin/drop?all=1", ".."]'}]"#
        ),
        url = server.url()
    ));
    let (run, json) = json_run(&book, &["--apply"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let paths: Vec<String> = server.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/jobs/ok-1/replay", "/jobs/..%2F..%2Fadmin%2Fdrop%3Fall%3D1/replay"],
        "each id stays one path segment"
    );
    let dots = step(&json, "replay[2]");
    assert_eq!(dots["status"], "unknown");
    assert!(
        dots["summary"]
            .as_str()
            .unwrap()
            .contains("cannot be one URL path segment"),
        "{dots}"
    );
}

#[test]
fn an_input_with_a_number_or_boolean_default_takes_only_that_type() {
    // So a number input is safe inside a SQL query or a URL path.
    let book = Book::new(
        "name: typed\ninputs:\n  hours: {default: 720}\n  strict: {default: false}\nsteps:\n  - id: use\n    uses: relay\n    with:\n      text: 'h=${{ inputs.hours }} s=${{ inputs.strict }}'\n",
    );
    let (run, json) = json_run(&book, &["--set", "hours=24.5", "--set", "strict=true"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(received(&json, "use")["text"], "h=24.5 s=true");
    for (set, expected) in [
        (
            "hours=1) or true --",
            "--set hours=1) or true --: input `hours` takes a number (its default is 720)",
        ),
        ("hours=", "input `hours` takes a number"),
        ("strict=yes", "--set strict=yes: input `strict` takes true or false"),
    ] {
        let run = book.run(&["--set", set]);
        assert_eq!(run.code, 64, "{set}: {run:#?}");
        assert!(run.stderr.contains(expected), "{expected}\n{}", run.stderr);
    }
}

#[test]
fn a_step_that_inputs_switch_off_needs_none_of_its_secrets() {
    // The optional `notify` step: without its input it is skipped, and its unset secret
    // is no error; with the input, the unset secret is invalid input before anything runs.
    let book = Book::new(
        "name: optional\ninputs:\n  hook: {default: ''}\nsteps:\n  - id: tell\n    uses: relay\n    when: inputs.hook != ''\n    secrets:\n      url: env:RUNBOX_TEST_SURELY_UNSET_HOOK\n    allow:\n      - ${{ inputs.hook }}\n",
    );
    let (run, json) = json_run(&book, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        step(&json, "tell")["skipped"].as_str().unwrap().contains("inputs.hook"),
        "{json}"
    );
    let run = book.run(&["--set", "hook=https://hooks.internal"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr
            .contains("environment variable `RUNBOX_TEST_SURELY_UNSET_HOOK` is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_list_input_takes_a_json_list_or_comma_separated_values() {
    let book = Book::new(
        "name: lists\ninputs:\n  keys: {default: []}\nsteps:\n  - id: use\n    uses: relay\n    with:\n      keys: ${{ inputs.keys }}\n",
    );
    for (set, expected) in [
        ("keys=a, b,,c", serde_json::json!(["a", "b", "c"])),
        (r#"keys=["x,y", "z"]"#, serde_json::json!(["x,y", "z"])),
        ("keys=", serde_json::json!([])),
    ] {
        let (run, json) = json_run(&book, &["--set", set]);
        assert_eq!(run.code, 0, "{set}: {run:#?}");
        assert_eq!(received(&json, "use")["keys"], expected, "{set}");
    }
    let run = book.run(&["--set", "keys=[broken"]);
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("takes a JSON list or comma-separated values"),
        "{}",
        run.stderr
    );
}
