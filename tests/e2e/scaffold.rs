//! `runbox plugin new` / `runbox plugin build`: every template, in every language,
//! builds and runs as it is (so the templates cannot rot).

use crate::harness::{Run, runbox_env, workspace};
use std::path::Path;

/// Runs runbox with componentize-py (installed by scripts/ensure-deps) on PATH and a
/// shared target dir for scaffolded Rust plugins.
fn runbox_tools(args: &[&str]) -> Run {
    let tools = workspace().join("target/tools/python/bin");
    assert!(
        tools.join("componentize-py").is_file(),
        "componentize-py is missing: run scripts/ensure-deps"
    );
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default());
    let target = workspace().join("target/scaffold");
    runbox_env(args, &[("PATH", &path), ("CARGO_TARGET_DIR", target.to_str().unwrap())])
}

fn new_and_build(dir: &Path, name: &str, lang: &str, kind: &str) -> String {
    let path = dir.join(name);
    let run = runbox_tools(&[
        "plugin",
        "new",
        name,
        "--lang",
        lang,
        "--kind",
        kind,
        "--dir",
        path.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    for file in ["runbox-plugin.json", "README.md", "wit/worlds.wit"] {
        assert!(path.join(file).is_file(), "{name}: no {file}");
    }
    let run = runbox_tools(&["plugin", "build", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{name}: {run:#?}");
    let wasm = run.stdout.trim().to_string();
    assert_eq!(
        wasm,
        path.canonicalize()
            .unwrap()
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    );
    wasm
}

#[test]
fn check_templates_build_and_run_in_every_language() {
    let dir = tempfile::tempdir().unwrap();
    for (lang, expected) in [("rust", "3"), ("js", "3"), ("python", "3.0")] {
        let name = format!("probe-{lang}");
        let wasm = new_and_build(dir.path(), &name, lang, "check");
        let run = runbox_tools(&["check", &wasm, "--with", "value=3", "--format", "json"]);
        assert_eq!(run.code, 0, "{lang}: {run:#?}");
        assert_eq!(
            run.json()["steps"][0]["summary"],
            format!("{name} measured {expected}"),
            "{lang}"
        );
        assert_eq!(run.json()["steps"][0]["metrics"][0]["value"], 3.0, "{lang}");
    }
    // The Rust template's thresholds work as they are.
    let wasm = dir.path().join("probe-rust/probe-rust.wasm");
    let run = runbox_tools(&["check", wasm.to_str().unwrap(), "--with", "value=3", "--with", "crit=2"]);
    assert_eq!(run.code, 2, "{run:#?}");
}

#[test]
fn mitigation_templates_plan_and_apply_in_every_language() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("name: templates\nsteps:\n");
    for lang in ["rust", "js", "python"] {
        let wasm = new_and_build(dir.path(), &format!("fix-{lang}"), lang, "mitigation");
        yaml.push_str(&format!("  - id: {lang}\n    uses: {wasm}\n"));
    }
    let book = dir.path().join("book.yaml");
    std::fs::write(&book, yaml).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let run = runbox_tools(&[
        "run",
        book.to_str().unwrap(),
        "--apply",
        "--audit-log",
        audit.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    for step in run.json()["steps"].as_array().unwrap() {
        assert_eq!(
            (step["applied"].as_bool(), step["summary"].as_str()),
            (Some(true), Some("applied: changed example")),
            "{step}"
        );
    }
    assert_eq!(std::fs::read_to_string(&audit).unwrap().lines().count(), 6);
}

#[test]
fn bad_names_and_existing_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = runbox_tools(&[
        "plugin",
        "new",
        "Bad_Name",
        "--dir",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 64);
    assert!(
        run.stderr
            .contains("plugin name `Bad_Name`: use lower-case letters, digits and `-`"),
        "{}",
        run.stderr
    );
    let run = runbox_tools(&["plugin", "new", "ok-name", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 64);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    let run = runbox_tools(&["plugin", "build", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 64);
    assert!(run.stderr.contains("runbox-plugin.json"), "{}", run.stderr);
}
