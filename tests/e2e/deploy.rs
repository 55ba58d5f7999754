//! The Kubernetes manifests in deploy/kubernetes/ (docs/deploy.md), checked by a real
//! tool: `kubernetes-validate --strict` (PyPI, pinned in scripts/ensure-deps) against
//! Kubernetes' own schemas; the ServiceMonitor (a CRD whose schema is not here) against
//! the Service it selects; and every runbox flag and runbook the manifests use against
//! the runbox binary itself.

use crate::harness::{runbox, workspace};
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifests() -> PathBuf {
    workspace().join("deploy/kubernetes")
}

/// `kubernetes-validate --strict FILE`: (success, output).
fn validate(file: &Path) -> (bool, String) {
    let tool = workspace().join("target/tools/kube/bin/kubernetes-validate");
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/ensure-deps (it installs kubernetes-validate into target/tools/kube)",
        tool.display()
    );
    let output = Command::new(tool)
        .args(["--strict", "-k", "1.37.0"])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Every YAML document of a manifest file.
fn documents(file: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(manifests().join(file)).unwrap();
    text.split("\n---\n")
        .map(|doc| {
            runbox::runbook::yaml::parse(doc)
                .unwrap_or_else(|err| panic!("{file}: {err:?}"))
                .to_json()
        })
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|doc| doc["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_core_manifests_pass_strict_schema_validation_and_a_broken_one_does_not() {
    for (file, resources) in [
        (
            "runbox-serve.yaml",
            &["deployment/runbox-serve", "service/runbox-serve"][..],
        ),
        ("runbox-cronjob.yaml", &["cronjob/runbox-retention-validation"][..]),
    ] {
        let (ok, text) = validate(&manifests().join(file));
        assert!(ok, "{file}: {text}");
        for resource in resources {
            assert!(
                text.contains(&format!("passed for resource {resource}")),
                "{file}: {resource} not validated: {text}"
            );
        }
        assert!(!text.contains("WARN") && !text.contains("ERROR"), "{file}: {text}");
    }
    // The tool is not a rubber stamp: a wrong type and an unknown field are refused.
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(manifests().join("runbox-serve.yaml")).unwrap();
    for (what, broken) in [
        (
            "a string port",
            original.replace("containerPort: 9464", "containerPort: nine"),
        ),
        (
            "an unknown field",
            original.replace(
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: true\n            readOnlyEverything: true",
            ),
        ),
    ] {
        assert_ne!(broken, original, "{what}: the mutation applies");
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, broken).unwrap();
        let (ok, text) = validate(&file);
        assert!(!ok, "{what} passed: {text}");
    }
}

#[test]
fn the_service_monitor_selects_the_service_and_names_its_port() {
    let serve = documents("runbox-serve.yaml");
    let service = of_kind(&serve, "Service");
    let deployment = of_kind(&serve, "Deployment");
    let monitor = &documents("servicemonitor.yaml")[0];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], service["metadata"]["namespace"]);
    // Its selector matches the Service's labels; the Service selects the pods.
    let labels = service["metadata"]["labels"].as_object().unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(key), Some(value), "ServiceMonitor selects {key}={value}");
    }
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(pod_labels.get(key), Some(value), "Service selects {key}={value}");
    }
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "the Service has a port named {port}"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // It authenticates with the same Secret the Deployment mounts as the token.
    let secret = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["name"].clone();
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == secret), "{secret}");
}

#[test]
fn the_manifests_use_real_runbox_flags_and_a_runbook_that_validates() {
    let serve = documents("runbox-serve.yaml");
    let container = &of_kind(&serve, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let help = runbox(&["serve", "--help"]).stdout;
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "serve");
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(help.contains(flag), "`runbox serve` has no {flag}: {help}");
    }
    let probe_path = container["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    assert_eq!(probe_path, "/-/healthy");

    let cron = documents("runbox-cronjob.yaml");
    let job = &of_kind(&cron, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = job["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "run");
    let help = runbox(&["run", "--help"]).stdout;
    for arg in args[2..].iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        assert!(help.contains(flag), "`runbox run` has no {flag}");
    }
    // The runbook it runs is the shipped one, and its --set values are inputs it declares.
    let runbook = args[1]
        .strip_prefix("/etc/runbox/runbooks/")
        .expect("a runbook from the ConfigMap");
    let path = workspace().join("runbooks").join(runbook);
    let mut validate = vec!["validate".to_string(), path.to_str().unwrap().to_string()];
    for set in args.iter().filter_map(|a| a.strip_prefix("--set=")) {
        validate.extend(["--set".to_string(), set.to_string()]);
    }
    let validate: Vec<&str> = validate.iter().map(String::as_str).collect();
    let run = runbox(&validate);
    assert_eq!(run.code, 0, "{run:#?}");
}

/// Runs the unpacked `bin/runbox` with a clean environment: no RUNBOX_PLUGIN_PATH, a
/// HOME of its own, and the working directory outside the checkout.
fn unpacked(root: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(root.join("bin/runbox"))
        .args(args)
        .current_dir(home)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

#[test]
fn a_packaged_runbox_finds_its_plugins_beside_it_and_its_cache_can_be_filled_ahead() {
    // scripts/package lays out bin/, lib/runbox/plugins/ and share/ and tars them; unpack
    // the tarball somewhere else and run from there.
    let dist = tempfile::tempdir().unwrap();
    let output = Command::new(workspace().join("scripts/package"))
        .args(["--debug", "--no-build", "--out"])
        .arg(dist.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tarball = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    let unpack = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(unpack.path())
        .status()
        .unwrap();
    assert!(status.success());
    let root = std::fs::read_dir(unpack.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for page in [
        "share/man/man1/runbox.1",
        "share/man/man1/runbox-serve.1",
        "share/bash-completion/completions/runbox",
    ] {
        assert!(root.join(page).is_file(), "{page}");
    }
    let home = tempfile::tempdir().unwrap();

    // Every first-party plugin is found in PREFIX/lib/runbox/plugins, ahead of the checkout.
    let listed = unpacked(&root, home.path(), &["plugins", "list", "--format", "json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let plugins = json["plugins"].as_array().unwrap();
    let installed = root.join("lib/runbox/plugins").canonicalize().unwrap();
    let redis_ping = plugins
        .iter()
        .find(|p| p["name"] == "redis-ping")
        .expect("redis-ping is listed");
    let path = PathBuf::from(redis_ping["path"].as_str().unwrap());
    assert!(
        path.canonicalize().unwrap().starts_with(&installed),
        "found at {}",
        path.display()
    );

    // A user's own plugin directory (XDG data home) comes after the installed one.
    let user = home.path().join(".local/share/runbox/plugins");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::copy(crate::harness::plugin("noop_check"), user.join("noop-check.wasm")).unwrap();
    let run = unpacked(&root, home.path(), &["check", "noop-check", "--format", "json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    // `plugins compile` fills a fresh cache, so that the next load compiles nothing.
    let cache = home.path().join("image-cache");
    let cache_arg = cache.to_str().unwrap();
    let first = unpacked(
        &root,
        home.path(),
        &["--cache-dir", cache_arg, "plugins", "compile", "redis-ping"],
    );
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.starts_with("redis-ping") && first.contains(" compiled ("),
        "{first}"
    );
    let second = unpacked(
        &root,
        home.path(),
        &["--cache-dir", cache_arg, "plugins", "compile", "redis-ping"],
    );
    assert!(String::from_utf8_lossy(&second.stdout).contains("already in the cache"));
    let refused = unpacked(&root, home.path(), &["--no-cache", "plugins", "compile"]);
    assert_eq!(refused.status.code(), Some(64));
}
