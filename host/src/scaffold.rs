//! `runbox plugin new` and `runbox plugin build`: a plugin skeleton per language that
//! builds and passes `runbox check` (or plans and applies, for a mitigation) as it is.
//!
//! Every skeleton carries `runbox-plugin.json` (`name`, `lang`, `world`), a copy of the
//! WIT contract in `wit/`, and a README on building, testing and grants.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Languages a plugin can be scaffolded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Rust with the runbox SDK.
    Rust,
    /// JavaScript with componentize-js.
    Js,
    /// Python with componentize-py.
    Python,
}

/// The world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// A read-only check.
    Check,
    /// A mitigation (plan, apply).
    Mitigation,
}

impl World {
    fn name(self) -> &'static str {
        match self {
            World::Check => "check",
            World::Mitigation => "mitigation",
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    name: String,
    lang: Lang,
    world: World,
}

const WIT: [(&str, &str); 3] = [
    ("types.wit", include_str!("../../wit/types.wit")),
    ("host.wit", include_str!("../../wit/host.wit")),
    ("worlds.wit", include_str!("../../wit/worlds.wit")),
];

/// The SDK of the checkout runbox was built from, if it is still there.
pub fn default_sdk() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/sdk")
        .canonicalize()
        .ok()
}

/// Writes a new plugin named `name` into `dir` (which must not exist yet).
pub fn new(name: &str, lang: Lang, world: World, dir: &Path, sdk: Option<&Path>) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        return Err(format!(
            "plugin name `{name}`: use lower-case letters, digits and `-` (e.g. my-check)"
        ));
    }
    if dir.exists() {
        return Err(format!("{} already exists; choose another --dir", dir.display()));
    }
    let mut files: Vec<(String, String)> = WIT
        .iter()
        .map(|(file, text)| (format!("wit/{file}"), text.to_string()))
        .collect();
    let manifest = Manifest {
        name: name.to_string(),
        lang,
        world,
    };
    files.push((
        "runbox-plugin.json".into(),
        serde_json::to_string_pretty(&manifest).expect("serializes") + "\n",
    ));
    match lang {
        Lang::Rust => {
            let sdk = sdk
                .map(Path::to_path_buf)
                .or_else(default_sdk)
                .ok_or("the runbox Rust SDK was not found next to this runbox build; pass --sdk PATH/TO/plugins/sdk")?;
            files.push((
                "Cargo.toml".into(),
                RUST_CARGO
                    .replace("{name}", name)
                    .replace("{sdk}", &sdk.display().to_string()),
            ));
            let source = if world == World::Check {
                RUST_CHECK
            } else {
                RUST_MITIGATION
            };
            files.push(("src/lib.rs".into(), source.replace("{name}", name)));
        }
        Lang::Js => {
            files.push(("package.json".into(), JS_PACKAGE.replace("{name}", name)));
            files.push((
                "src/index.js".into(),
                if world == World::Check { JS_CHECK } else { JS_MITIGATION }.replace("{name}", name),
            ));
        }
        Lang::Python => {
            files.push((
                "app.py".into(),
                if world == World::Check { PY_CHECK } else { PY_MITIGATION }.replace("{name}", name),
            ));
        }
    }
    files.push((
        "README.md".into(),
        README
            .replace("{name}", name)
            .replace("{world}", world.name())
            .replace("{build}", build_hint(lang)),
    ));
    for (file, text) in files {
        let path = dir.join(&file);
        std::fs::create_dir_all(path.parent().expect("files are inside dir"))
            .map_err(|err| format!("{}: {err}", path.display()))?;
        std::fs::write(&path, text).map_err(|err| format!("{}: {err}", path.display()))?;
    }
    Ok(())
}

fn build_hint(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Needs the wasm32-wasip2 Rust target (`rustup target add wasm32-wasip2`).",
        Lang::Js => "Needs Node.js and npm; `runbox plugin build` runs `npm install` the first time.",
        Lang::Python => "Needs componentize-py on PATH (`pip install componentize-py`).",
    }
}

/// Builds the plugin in `dir`; returns the path of the `.wasm` it wrote.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    // The tools run inside the plugin's directory: every path must be absolute.
    let dir = &dir.canonicalize().map_err(|err| format!("{}: {err}", dir.display()))?;
    let manifest_path = dir.join("runbox-plugin.json");
    let manifest: Manifest = serde_json::from_str(&std::fs::read_to_string(&manifest_path).map_err(|err| {
        format!(
            "{}: {err} (is this a directory made by `runbox plugin new`?)",
            manifest_path.display()
        )
    })?)
    .map_err(|err| format!("{}: {err}", manifest_path.display()))?;
    let out = dir.join(format!("{}.wasm", manifest.name));
    let world = manifest.world.name();
    match manifest.lang {
        Lang::Rust => {
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("target"));
            run(Command::new("cargo")
                .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(dir.join("Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target_dir))?;
            let built = target_dir
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", manifest.name.replace('-', "_")));
            std::fs::copy(&built, &out).map_err(|err| format!("copying {}: {err}", built.display()))?;
        }
        Lang::Js => {
            if !dir.join("node_modules").is_dir() {
                run(Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(dir))?;
            }
            run(Command::new("npx")
                .args([
                    "--no-install",
                    "componentize-js",
                    "src/index.js",
                    "--wit",
                    "wit",
                    "--world-name",
                    world,
                    "--disable",
                    "fetch-event",
                    "--out",
                ])
                .arg(&out)
                .current_dir(dir))?;
        }
        Lang::Python => {
            run(Command::new("componentize-py")
                .args(["-d", "wit", "-w", world, "componentize", "app", "-o"])
                .arg(&out)
                .current_dir(dir))?;
        }
    }
    Ok(out)
}

fn run(command: &mut Command) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    // The tools' chatter goes to stderr: stdout carries only the path of the .wasm.
    if let Ok(stderr) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
        command.stdout(std::process::Stdio::from(stderr));
    }
    let status = command.status().map_err(|err| format!("cannot run {program}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} failed ({status}); its output is above"))
    }
}

const RUST_CARGO: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
runbox-plugin-sdk = { path = "{sdk}" }
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc", "std"] }
serde = { version = "1", features = ["derive"] }

[profile.release]
opt-level = "s"
strip = true

# A plugin is its own workspace, even inside another project's directory.
[workspace]
"#;

const RUST_CHECK: &str = r##"//! `{name}`: a runbox check. Replace the measurement in `run` with yours.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::threshold::Thresholds;
use runbox_plugin_sdk::{Info, Report, Status, config};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "value": {"type": "number", "default": 1, "description": "What to report (stands in for a measurement)"},
    "warn": {"type": "string", "description": "Nagios range that raises WARNING"},
    "crit": {"type": "string", "description": "Nagios range that raises CRITICAL"}
  },
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "one")]
    value: f64,
    warn: Option<String>,
    crit: Option<String>,
}

fn one() -> f64 {
    1.0
}

struct Plugin;

impl Guest for Plugin {
    fn info() -> Info {
        runbox_plugin_sdk::info!("{name}", "A runbox check", SCHEMA)
    }

    fn run(config: String) -> Result<Report, String> {
        let config: Config = config::parse(&config)?;
        let thresholds = Thresholds::parse(config.warn.as_deref(), config.crit.as_deref())?;
        // `.output(NAME, &value)` hands a value to later steps: `${{ steps.ID.outputs.NAME }}`.
        Ok(Report::new(Status::Ok, format!("{name} measured {}", config.value))
            .judged_metric("value", config.value, "", &thresholds)
            .output("value", &config.value))
    }
}

runbox_plugin_sdk::export_check!(Plugin);
"##;

const RUST_MITIGATION: &str = r##"//! `{name}`: a runbox mitigation. `plan` must not change anything; `apply` makes the change.

use runbox_plugin_sdk::mitigation::Guest;
use runbox_plugin_sdk::{Info, Outcome, Plan, Status, config};
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {"target": {"type": "string", "default": "example", "description": "What to change"}},
  "additionalProperties": false
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "example")]
    target: String,
}

fn example() -> String {
    "example".into()
}

struct Plugin;

impl Guest for Plugin {
    fn info() -> Info {
        runbox_plugin_sdk::info!("{name}", "A runbox mitigation", SCHEMA)
    }

    fn plan(config: String) -> Result<Plan, String> {
        let config: Config = config::parse(&config)?;
        Ok(Plan { summary: format!("change {}", config.target), changes: vec![format!("change {}", config.target)], destructive: false })
    }

    fn apply(config: String, _plan: Plan) -> Result<Outcome, String> {
        let config: Config = config::parse(&config)?;
        // `.output(NAME, &value)` hands a value to later steps: `${{ steps.ID.outputs.NAME }}`.
        Ok(Outcome::new(Status::Ok, format!("changed {}", config.target), vec![format!("changed {}", config.target)]).output("target", &config.target))
    }
}

runbox_plugin_sdk::export_mitigation!(Plugin);
"##;

const JS_PACKAGE: &str = r#"{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.17.9"
  }
}
"#;

const JS_CHECK: &str = r#"// {name}: a runbox check in JavaScript. `run` may be async (await fetch(...) works).
import { log } from "runbox:plugin/host@0.2.0";

export function info() {
  return {
    name: "{name}",
    version: "0.1.0",
    description: "A runbox check",
    configSchema: JSON.stringify({ type: "object", properties: { value: { type: "number" } } }),
  };
}

export async function run(configText) {
  const config = JSON.parse(configText);
  const value = config.value ?? 1;
  log("info", `measured ${value}`);
  return {
    status: "ok",
    summary: `{name} measured ${value}`,
    details: [],
    metrics: [{ name: "value", value, unit: "", warn: undefined, crit: undefined, min: undefined, max: undefined }],
    // Values for later steps (`${{ steps.ID.outputs.NAME }}`): each value is JSON text.
    outputs: [{ name: "value", value: JSON.stringify(value) }],
  };
}
"#;

const JS_MITIGATION: &str = r#"// {name}: a runbox mitigation in JavaScript. `plan` must not change anything.
export function info() {
  return { name: "{name}", version: "0.1.0", description: "A runbox mitigation", configSchema: JSON.stringify({ type: "object" }) };
}

export function plan(configText) {
  return { summary: "change example", changes: ["change example"], destructive: false };
}

export async function apply(configText, plan) {
  return { status: "ok", summary: "changed example", changes: ["changed example"], outputs: [] };
}
"#;

const PY_CHECK: &str = r#""""{name}: a runbox check in Python (componentize-py)."""
import json

import wit_world
from wit_world.imports import host, types


class WitWorld(wit_world.WitWorld):
    def info(self) -> types.Info:
        schema = {"type": "object", "properties": {"value": {"type": "number"}}}
        return types.Info(name="{name}", version="0.1.0", description="A runbox check", config_schema=json.dumps(schema))

    def run(self, config: str) -> types.Report:
        value = float(json.loads(config).get("value", 1))
        host.log(types.Level.INFO, f"measured {value}")
        metric = types.Metric(name="value", value=value, unit="", warn=None, crit=None, min=None, max=None)
        # Values for later steps (`${{ steps.ID.outputs.NAME }}`): each value is JSON text.
        outputs = [types.Output(name="value", value=json.dumps(value))]
        return types.Report(status=types.Status.OK, summary=f"{name} measured {value}", details=[], metrics=[metric], outputs=outputs)
"#;

const PY_MITIGATION: &str = r#""""{name}: a runbox mitigation in Python (componentize-py)."""
import json

import wit_world
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def info(self) -> types.Info:
        return types.Info(name="{name}", version="0.1.0", description="A runbox mitigation", config_schema=json.dumps({"type": "object"}))

    def plan(self, config: str) -> types.Plan:
        return types.Plan(summary="change example", changes=["change example"], destructive=False)

    def apply(self, config: str, plan: types.Plan) -> types.Outcome:
        return types.Outcome(status=types.Status.OK, summary="changed example", changes=["changed example"], outputs=[])
"#;

const README: &str = r#"# {name}

A runbox plugin (world `runbox:plugin/{world}@0.2.0`, made by `runbox plugin new`).

## Build

    runbox plugin build .        # writes {name}.wasm

{build}

## Try it

    runbox plugins inspect ./{name}.wasm          # world, imports, config schema
    runbox check ./{name}.wasm --with value=3      # checks; mitigations run in a runbook

## Grants

The plugin runs in runbox's sandbox: no network, secrets, environment or files unless
the step grants them (`allow:`, `secrets:`, `env:` in a runbook; `--allow`, `--secret`,
`--env` with `runbox check`). See docs/authoring.md in the runbox repository.
"#;
