//! From a runbook file to a runnable plan, finding *every* problem on the way: YAML
//! syntax, unknown fields, duplicate ids, unknown or cyclic `needs`, bad `when`
//! conditions and templates, plugins that do not resolve or load (or whose digest
//! differs from the pinned one), grants and secrets that do not parse, and configs that
//! violate their plugin's schema. Each problem carries the file, the line and the step.

use super::condition::{self, Expr};
use super::manifest::{AllowEntry, Approval, Manifest, OnFailure, PemRef, Step, StepTls};
use super::template::{self, Reference};
use super::yaml;
use crate::capabilities::network::Grant;
use crate::capabilities::secrets::SecretGrant;
use crate::capabilities::tls::{PemSource, TlsSettings, Trust};
use crate::capabilities::{Grants, parse_env_grant};
use crate::plugins::{PluginPath, PluginRef};
use crate::result::Kind;
use crate::runtime::{DEFAULT_MEMORY, Plugin, Runtime};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One thing wrong with a runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The runbook file.
    pub file: PathBuf,
    /// 1-based line (0: not tied to a line, e.g. a `--set`).
    pub line: usize,
    /// The step, if the problem is in one.
    pub step: Option<String>,
    /// What is wrong, and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(step) = &self.step {
            write!(f, ": step `{step}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Whether values that only exist at run time (env, required inputs, secrets) must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `runbox validate`: check structure; use defaults and placeholders.
    Validate,
    /// `runbox run`: everything must resolve.
    Run,
}

/// Retry policy of a step, resolved.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts (≥ 1).
    pub attempts: u32,
    /// Wait before the second attempt.
    pub delay: Duration,
    /// Multiplier for each further wait.
    pub backoff: f64,
}

/// Most items a `for_each` may have unless the step says `max_items:`.
pub const DEFAULT_MAX_ITEMS: usize = 100;
/// Most items any `for_each` may have.
pub const MAX_ITEMS: usize = 1000;

/// Where a `for_each` step's items come from.
#[derive(Debug, Clone)]
pub enum Items {
    /// Known before the run: a YAML list, or an input's value.
    Known(Value),
    /// An earlier step's output, read when the step is about to run.
    Output {
        /// The step.
        step: String,
        /// The output.
        name: String,
    },
}

/// A step's `for_each`.
#[derive(Debug, Clone)]
pub struct ForEach {
    /// The list (or what gives it).
    pub items: Items,
    /// Most items it may have.
    pub max_items: usize,
}

/// A step ready to run.
pub struct PreparedStep {
    /// Step id.
    pub id: String,
    /// The loaded plugin.
    pub plugin: Arc<Plugin>,
    /// Rendered config, valid against the plugin's schema (without the keys in
    /// `late_with`, which are rendered when the step runs).
    pub config: Value,
    /// `with` keys whose values use `${{ steps.ID.outputs.NAME }}` or `${{ item }}`,
    /// as written: rendered in one pass, then checked against the schema, when the step
    /// is about to run.
    pub late_with: Vec<(String, Value)>,
    /// Run once per item.
    pub for_each: Option<ForEach>,
    /// Exactly what the step grants.
    pub grants: Grants,
    /// For each of `grants.network`, the index of the `allow:` entry it came from (an
    /// entry its inputs leave empty gives no grant).
    pub grant_sources: Vec<usize>,
    /// Parsed `when`, with its text.
    pub when: Option<(String, Expr)>,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Linear memory the plugin may use (`memory:` or `run --memory`).
    pub memory_bytes: usize,
    /// Retries.
    pub retry: RetryPolicy,
    /// On failure.
    pub on_failure: OnFailure,
    /// Whether applying needs approval.
    pub approval_required: bool,
    /// Indexes of the steps this one needs.
    pub needs: Vec<usize>,
}

/// A validated runbook.
pub struct Runbook {
    /// The file.
    pub file: PathBuf,
    /// The manifest as written.
    pub manifest: Manifest,
    /// Input values (set or default).
    pub inputs: BTreeMap<String, Value>,
    /// Steps in file order.
    pub steps: Vec<PreparedStep>,
    /// Deadline of the whole run, from the manifest's `timeout`.
    pub timeout: Option<Duration>,
}

impl Runbook {
    /// The plugin each `uses:` text resolved to, for [`Plugins::Loaded`].
    pub fn plugins_by_use(&self) -> HashMap<String, Arc<Plugin>> {
        // Every step of a prepared runbook has its plugin, in file order.
        self.manifest
            .steps
            .iter()
            .zip(&self.steps)
            .map(|(step, prepared)| (step.uses.clone(), prepared.plugin.clone()))
            .collect()
    }
}

struct Context<'a> {
    file: &'a Path,
    lines: &'a BTreeMap<String, usize>,
    problems: Vec<Problem>,
}

impl Context<'_> {
    /// Line of `path`, or of its closest ancestor that has one.
    fn line(&self, path: &str) -> usize {
        let mut path = path.to_string();
        loop {
            if let Some(line) = self.lines.get(&path) {
                return *line;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path.truncate(cut),
                None => return self.lines.get("").copied().unwrap_or(1),
            }
        }
    }

    fn problem(&mut self, path: &str, step: Option<&str>, message: impl Into<String>) {
        let line = if path.is_empty() { 0 } else { self.line(path) };
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line,
            step: step.map(String::from),
            message: message.into(),
        });
    }
}

/// A runbook file read and parsed, not yet resolved: what `runbox serve` keeps between
/// probes, so a probe only renders inputs ([`prepare_parsed`]).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The file.
    pub file: PathBuf,
    /// The manifest as written.
    pub manifest: Manifest,
    /// Line of each node, by path (`steps[0].allow[1]`).
    lines: BTreeMap<String, usize>,
}

/// Where [`prepare_parsed`] gets the plugins the steps use.
pub enum Plugins<'a> {
    /// Resolve and load each (a file once), reusing and adding to `loaded`, which a
    /// caller may keep for the life of the process.
    Load {
        /// The engine.
        runtime: &'a Runtime,
        /// Where names are looked up.
        plugin_path: &'a PluginPath,
        /// Plugins loaded so far, by file.
        loaded: &'a mut HashMap<PathBuf, Arc<Plugin>>,
    },
    /// Only the plugins an earlier preparation of the same runbook loaded, by `uses:`
    /// text ([`Runbook::plugins_by_use`]): nothing is located, read, compiled or asked
    /// for its `info()`. A `uses:` not among them is a problem.
    Loaded(&'a HashMap<String, Arc<Plugin>>),
}

/// Reads, checks and resolves `file`. `sets` are `--set` values; `memory` is
/// `run --memory`, which overrides every step's `memory:`.
pub async fn prepare(
    runtime: &Runtime,
    plugin_path: &PluginPath,
    file: &Path,
    sets: &BTreeMap<String, String>,
    mode: Mode,
    memory: Option<usize>,
) -> Result<Runbook, Vec<Problem>> {
    let parsed = parse(file)?;
    let plugins = Plugins::Load {
        runtime,
        plugin_path,
        loaded: &mut HashMap::new(),
    };
    prepare_parsed(&parsed, plugins, sets, mode, memory).await
}

/// Reads `file` and parses its YAML into a manifest; the first problem stops it.
pub fn parse(file: &Path) -> Result<Parsed, Vec<Problem>> {
    let fail = |line: usize, message: String| {
        vec![Problem {
            file: file.to_path_buf(),
            line,
            step: None,
            message,
        }]
    };
    let text = read_runbook(file).map_err(|err| fail(0, format!("cannot read the runbook: {err}")))?;
    let tree = yaml::parse(&text).map_err(|err| fail(err.line, format!("invalid YAML: {}", err.message)))?;
    let lines = tree.lines();
    match serde_path_to_error::deserialize(tree.to_json()) {
        Ok(manifest) => Ok(Parsed {
            file: file.to_path_buf(),
            manifest,
            lines,
        }),
        Err(err) => {
            let path = serde_path(err.path());
            let cx = Context {
                file,
                lines: &lines,
                problems: Vec::new(),
            };
            let line = cx.line(&path);
            let at = if path.is_empty() {
                String::new()
            } else {
                format!("`{path}`: ")
            };
            Err(fail(line, format!("{at}{}", err.inner())))
        }
    }
}

/// Checks and resolves a parsed runbook with `sets` (input values) and the plugins
/// from `plugins`, finding every problem.
pub async fn prepare_parsed(
    parsed: &Parsed,
    mut plugins: Plugins<'_>,
    sets: &BTreeMap<String, String>,
    mode: Mode,
    memory: Option<usize>,
) -> Result<Runbook, Vec<Problem>> {
    let file = parsed.file.as_path();
    let manifest = parsed.manifest.clone();
    let mut cx = Context {
        file,
        lines: &parsed.lines,
        problems: Vec::new(),
    };
    if manifest.name.trim().is_empty() {
        cx.problem("name", None, "`name` is empty");
    }
    let run_timeout = parse_timeout(&mut cx, "timeout", None, manifest.timeout.as_deref(), "5m, 90s");

    let inputs = resolve_inputs(&mut cx, &manifest, sets, mode);
    let index = check_ids_and_needs(&mut cx, &manifest);
    let ancestors = ancestors(&manifest, &index);

    let runbook_dir = file.parent().unwrap_or(Path::new("."));
    // The runbook's `tls:`, shared by every step without its own, built once when it
    // names no secret (a CA file's problem is then reported once, at its line).
    let runbook_trust = manifest.tls.as_ref().and_then(|tls| {
        let names_secrets = tls
            .client_cert
            .iter()
            .chain(&tls.client_key)
            .any(|pem| matches!(pem, PemRef::Secret(_)));
        (!names_secrets).then(|| step_trust(&mut cx, "tls", "", tls, &BTreeMap::new(), &[], runbook_dir, mode))
    });
    let mut steps = Vec::new();
    for (i, step) in manifest.steps.iter().enumerate() {
        let at = |field: &str| format!("steps[{i}].{field}");
        let id = step.id.as_str();
        let when = step.when.as_ref().and_then(|text| match condition::parse(text) {
            Ok(expr) => {
                for path in expr.paths() {
                    if let Err(message) = check_when_path(path, &manifest, &ancestors[i]) {
                        cx.problem(&at("when"), Some(id), message);
                    }
                }
                Some((text.clone(), expr))
            }
            Err(err) => {
                cx.problem(&at("when"), Some(id), format!("`when: {text}`: {err}"));
                None
            }
        });
        // A `when` that reads only inputs is decided now: such a step that will be skipped
        // needs none of its secrets (an optional `notify` step whose webhook secret is
        // unset), and a grant its inputs leave empty is no grant.
        let skipped_by_inputs = when.as_ref().is_some_and(|(_, expr)| {
            let paths = expr.paths();
            paths
                .iter()
                .all(|path| path.first().is_some_and(|root| root == "inputs"))
                && !expr.eval(&|path: &[String]| match path {
                    [_, name] => inputs.get(name).cloned(),
                    _ => None,
                })
        });
        let timeout = parse_timeout(&mut cx, &at("timeout"), Some(id), step.timeout.as_deref(), "10s, 1m")
            .unwrap_or(Duration::from_secs(10));
        let retry = resolve_retry(&mut cx, step, i);
        let memory_bytes = memory
            .or_else(|| parse_memory(&mut cx, &at("memory"), id, step.memory.as_deref()))
            .unwrap_or(DEFAULT_MEMORY);

        // Templates: syntax, and references to declared inputs (and set env in run mode),
        // to the outputs of steps this one needs, to its `for_each` item and to its secrets.
        let for_each = step.for_each.as_ref().and_then(|source| {
            resolve_for_each(
                &mut cx,
                &at("for_each"),
                step,
                source,
                &inputs,
                &manifest,
                &ancestors[i],
            )
        });
        if step.max_items.is_some() && step.for_each.is_none() {
            cx.problem(
                &at("max_items"),
                Some(id),
                "`max_items` applies to a step with `for_each`",
            );
        }
        let resolver = |reference: &Reference| -> Result<Value, String> {
            match reference {
                Reference::Output { step: from, name } => {
                    check_output_reference(from, name, &manifest, &ancestors[i])?;
                    Err(LATE.into())
                }
                Reference::Step { step: from, .. } => {
                    check_step_reference(&reference.to_string(), from, &manifest, &ancestors[i])?;
                    Err(LATE.into())
                }
                Reference::Item(_) if step.for_each.is_none() => Err(format!(
                    "`{reference}` is the current item of a `for_each`, and this step has none"
                )),
                Reference::Item(_) => Err(LATE.into()),
                Reference::Secret(name) if step.secrets.contains_key(name) => {
                    Ok(Value::String(Reference::secret_placeholder(name)))
                }
                Reference::Secret(name) => Err(format!(
                    "`{reference}` names no secret of this step (add `{name}: env:VAR` or `file:PATH` under `secrets:`)"
                )),
                _ => static_value(reference, &inputs, &manifest, mode),
            }
        };
        // Grants and env are fixed before the run: nothing a plugin returns may reach them.
        let fixed_resolver = |reference: &Reference| -> Result<Value, String> {
            match reference {
                reference if reference.is_runtime() => Err(format!(
                    "`{reference}` cannot be used here: grants and env are fixed before the run starts, and nothing a plugin returns may widen them (use it in `with:`)"
                )),
                Reference::Secret(_) => Err(format!(
                    "`{reference}` can only be used in `with:` (the host puts it in HTTP request headers)"
                )),
                _ => static_value(reference, &inputs, &manifest, mode),
            }
        };
        let mut unresolved_keys = BTreeSet::new();
        let mut late_with = Vec::new();
        let mut header_secrets = BTreeSet::new();
        let mut config = serde_json::Map::new();
        for (key, value) in &step.with {
            let mut found = Vec::new();
            template::references_in(value, &mut found);
            for reference in found.iter().flatten() {
                if let Reference::Secret(name) = reference {
                    header_secrets.insert(name.clone());
                }
            }
            match template::render_value(value, &resolver) {
                Ok(rendered) => {
                    config.insert(key.clone(), rendered);
                }
                Err(message) if message == LATE => {
                    // Rendered when the step runs; every other reference in it must
                    // still be valid now.
                    for reference in found.iter().flatten() {
                        if let Err(message) = resolver(reference)
                            && message != LATE
                            && !(mode == Mode::Validate && message.starts_with("input `"))
                        {
                            cx.problem(&at(&format!("with.{key}")), Some(id), message);
                        }
                    }
                    unresolved_keys.insert(key.clone());
                    late_with.push((key.clone(), value.clone()));
                }
                Err(message) => {
                    // The key has no value now: schema complaints about it would only repeat this.
                    unresolved_keys.insert(key.clone());
                    let declared_without_value = message.starts_with("input `");
                    if !(mode == Mode::Validate && declared_without_value) {
                        cx.problem(&at(&format!("with.{key}")), Some(id), message);
                    }
                }
            }
        }
        let mut network = Vec::new();
        let mut grant_sources = Vec::new();
        for (g, entry) in step.allow.iter().enumerate() {
            let path = at(&format!("allow[{g}]"));
            let render = |text: &str| match template::render(text, &fixed_resolver) {
                // A step its inputs switch off may leave its grant empty (`prometheus_url: ""`).
                Ok(Value::String(rendered)) if rendered.is_empty() && skipped_by_inputs => Ok(None),
                Ok(Value::String(rendered)) => Ok(Some(rendered)),
                Ok(other) => Err(format!("grant `{other}` is not a string")),
                Err(message) if mode == Mode::Validate && message.starts_with("input `") => Ok(None),
                Err(message) => Err(message),
            };
            match render_grant(entry, render) {
                Ok(Some(grant)) => {
                    network.push(grant);
                    grant_sources.push(g);
                }
                Ok(None) => {}
                Err(message) => cx.problem(&path, Some(id), message),
            }
        }
        let mut secrets = Vec::new();
        for (name, source) in &step.secrets {
            match SecretGrant::parse(&format!("{name}={source}")) {
                Ok(grant) => {
                    if mode == Mode::Run
                        && !skipped_by_inputs
                        && let Err(err) = grant.resolve()
                    {
                        cx.problem(&at(&format!("secrets.{name}")), Some(id), err);
                    }
                    secrets.push(grant);
                }
                Err(err) => cx.problem(&at(&format!("secrets.{name}")), Some(id), err),
            }
        }
        // The step's own `tls:`, else the runbook's (built once above unless it names
        // secrets, which are each step's own).
        let tls = match (&step.tls, &manifest.tls, &runbook_trust) {
            (Some(own), _, _) => step_trust(&mut cx, &at("tls"), id, own, &step.secrets, &secrets, runbook_dir, mode),
            (None, Some(_), Some(shared)) => shared.clone(),
            (None, Some(default), None) => {
                step_trust(&mut cx, "tls", id, default, &step.secrets, &secrets, runbook_dir, mode)
            }
            (None, None, _) => Trust::system(),
        };
        let mut env = Vec::new();
        for (name, value) in &step.env {
            match template::render(value, &fixed_resolver) {
                Ok(rendered) => {
                    let value = match rendered {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    match parse_env_grant(&format!("{name}={value}")) {
                        Ok(pair) => env.push(pair),
                        Err(err) => cx.problem(&at(&format!("env.{name}")), Some(id), err),
                    }
                }
                Err(message) => cx.problem(&at(&format!("env.{name}")), Some(id), message),
            }
        }

        // The plugin: resolve, load, pin, kind.
        let plugin = match resolve_plugin(&mut plugins, runbook_dir, &step.uses, memory_bytes).await {
            Ok(plugin) => Some(plugin),
            Err(message) => {
                cx.problem(&at("uses"), Some(id), message);
                None
            }
        };
        let Some(plugin) = plugin else { continue };
        let approval_required = step.approval == Some(Approval::Required);
        if step.approval.is_some() && plugin.kind == Kind::Check {
            cx.problem(
                &at("approval"),
                Some(id),
                format!("`approval` applies to mitigations; `{}` is a check", plugin.info.name),
            );
        }
        let mut config = Value::Object(config);
        crate::config::coerce(&plugin.info.config_schema, &mut config);
        for violation in plugin.config_violations(&config) {
            let mentions_unresolved = unresolved_keys
                .iter()
                .any(|key| violation.contains(&format!("`{key}`")) || violation.contains(&format!("\"{key}\"")));
            // A key rendered at run time is missing now; it is checked then.
            let missing_late = late_with
                .iter()
                .any(|(key, _)| violation.contains(&format!("\"{key}\"")));
            if !mentions_unresolved && !missing_late {
                cx.problem(
                    &at("with"),
                    Some(id),
                    format!("{violation} (plugin `{}`)", plugin.info.name),
                );
            }
        }
        steps.push(PreparedStep {
            id: step.id.clone(),
            plugin,
            config,
            late_with,
            for_each,
            grants: Grants {
                network,
                secrets,
                env,
                dirs: Vec::new(),
                allow_metadata: false,
                tls,
                header_secrets: header_secrets.into_iter().collect(),
                traceparent: None,
            },
            grant_sources,
            when,
            timeout,
            memory_bytes,
            retry,
            on_failure: step.on_failure,
            approval_required,
            needs: step
                .needs
                .iter()
                .filter_map(|need| index.get(need.as_str()).copied())
                .collect(),
        });
    }
    if !cx.problems.is_empty() {
        let mut problems = cx.problems;
        problems.sort_by_key(|problem| problem.line);
        return Err(problems);
    }
    Ok(Runbook {
        file: file.to_path_buf(),
        manifest,
        inputs,
        steps,
        timeout: run_timeout,
    })
}

/// What the prepare-time resolver answers for a reference known only when the step
/// runs (never shown: the key is kept for later).
const LATE: &str = "\u{0}late";

/// The value of an `inputs.` or `env.` reference (also when a late key renders).
pub(super) fn static_value(
    reference: &Reference,
    inputs: &BTreeMap<String, Value>,
    manifest: &Manifest,
    mode: Mode,
) -> Result<Value, String> {
    match reference {
        Reference::Input(name) => match inputs.get(name) {
            Some(value) => Ok(value.clone()),
            None if manifest.inputs.contains_key(name) => {
                Err(format!("input `{name}` has no value (set it with --set {name}=VALUE)"))
            }
            None => Err(format!("`${{{{ inputs.{name} }}}}` names no declared input")),
        },
        Reference::Env(name) => match std::env::var(name) {
            Ok(value) => Ok(Value::String(value)),
            Err(_) if mode == Mode::Validate => Ok(Value::String(format!("<env.{name}>"))),
            Err(_) => Err(format!(
                "`${{{{ env.{name} }}}}`: environment variable `{name}` is not set"
            )),
        },
        other => Err(format!("`{other}` cannot be used here")),
    }
}

/// Whether a step may read `steps.FROM.outputs.NAME`: FROM exists, runs once (not
/// `for_each`), and is among the steps this one needs.
fn check_output_reference(
    from: &str,
    name: &str,
    manifest: &Manifest,
    ancestors: &BTreeSet<usize>,
) -> Result<(), String> {
    let text = format!("steps.{from}.outputs.{name}");
    let j = check_step_reference(&text, from, manifest, ancestors)?;
    if manifest.steps[j].for_each.is_some() {
        return Err(format!(
            "`{text}`: step `{from}` runs once per item (`for_each`); read its `status` instead"
        ));
    }
    Ok(())
}

/// Whether a step may read step FROM (`text` is the reference, for messages): FROM
/// exists and is in the step's `needs`, directly or through another step. Its index.
fn check_step_reference(
    text: &str,
    from: &str,
    manifest: &Manifest,
    ancestors: &BTreeSet<usize>,
) -> Result<usize, String> {
    let text = text.trim_start_matches("${{ ").trim_end_matches(" }}");
    let Some(j) = manifest.steps.iter().position(|s| s.id == from) else {
        return Err(format!("`{text}`: no step `{from}` in this runbook"));
    };
    if !ancestors.contains(&j) {
        return Err(format!(
            "`{text}`: step `{from}` must be in this step's `needs` (directly or through another step) to be read here"
        ));
    }
    Ok(j)
}

/// A step's `for_each`: a YAML list, or one template naming a list input or an output
/// of a step it needs. `None` (with the problem recorded) when it is neither.
fn resolve_for_each(
    cx: &mut Context,
    path: &str,
    step: &Step,
    source: &Value,
    inputs: &BTreeMap<String, Value>,
    manifest: &Manifest,
    ancestors: &BTreeSet<usize>,
) -> Option<ForEach> {
    let id = step.id.as_str();
    let max_items = match step.max_items {
        None => DEFAULT_MAX_ITEMS,
        Some(n) if (1..=MAX_ITEMS).contains(&n) => n,
        Some(n) => {
            cx.problem(
                &path.replace("for_each", "max_items"),
                Some(id),
                format!("`max_items: {n}` must be from 1 to {MAX_ITEMS}"),
            );
            return None;
        }
    };
    let usage = "`for_each` takes a YAML list, `${{ inputs.NAME }}` or `${{ steps.ID.outputs.NAME }}`";
    let items = match source {
        Value::Array(_) => Items::Known(source.clone()),
        Value::String(text) => match template::references(text) {
            Ok(found) if found.len() == 1 && text.trim().starts_with("${{") && text.trim().ends_with("}}") => {
                match &found[0] {
                    Reference::Input(name) => match inputs.get(name) {
                        Some(value) => Items::Known(value.clone()),
                        None if manifest.inputs.contains_key(name) => Items::Known(Value::Array(Vec::new())),
                        None => {
                            cx.problem(
                                path,
                                Some(id),
                                format!("`${{{{ inputs.{name} }}}}` names no declared input"),
                            );
                            return None;
                        }
                    },
                    Reference::Output { step: from, name } => {
                        if let Err(message) = check_output_reference(from, name, manifest, ancestors) {
                            cx.problem(path, Some(id), message);
                            return None;
                        }
                        Items::Output {
                            step: from.clone(),
                            name: name.clone(),
                        }
                    }
                    other => {
                        cx.problem(path, Some(id), format!("`for_each: {other}`: {usage}"));
                        return None;
                    }
                }
            }
            Ok(_) => {
                cx.problem(path, Some(id), usage);
                return None;
            }
            Err(message) => {
                cx.problem(path, Some(id), message);
                return None;
            }
        },
        _ => {
            cx.problem(path, Some(id), usage);
            return None;
        }
    };
    if let Items::Known(value) = &items
        && let Err(message) = item_list(value, max_items)
    {
        cx.problem(path, Some(id), message);
        return None;
    }
    Some(ForEach { items, max_items })
}

/// The items of a `for_each` list value: a list; or text, read as a JSON list when it
/// starts with `[` and otherwise split at commas (`--set ids=a,b,c`). More than
/// `max_items` is an error: a list is never cut short silently.
pub fn item_list(value: &Value, max_items: usize) -> Result<Vec<Value>, String> {
    let items = match value {
        Value::Array(items) => items.clone(),
        Value::String(text) if text.trim_start().starts_with('[') => match serde_json::from_str(text) {
            Ok(Value::Array(items)) => items,
            _ => return Err("`for_each`: the value starts with `[` but is not a JSON list".into()),
        },
        Value::String(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Value::String(item.to_string()))
            .collect(),
        Value::Null => Vec::new(),
        other => {
            return Err(format!(
                "`for_each` needs a list, and got {}",
                crate::text::truncate(&other.to_string(), 80)
            ));
        }
    };
    if items.len() > max_items {
        return Err(format!(
            "`for_each` has {} items, more than its cap of {max_items}: nothing was run (raise `max_items:`, up to {MAX_ITEMS}, or narrow the list)",
            items.len()
        ));
    }
    Ok(items)
}

/// An `allow:` entry, its templates rendered by `render`, parsed into a grant. `None`
/// when `render` has no value yet (an input without a default, in `validate`).
fn render_grant(
    entry: &AllowEntry,
    render: impl Fn(&str) -> Result<Option<String>, String>,
) -> Result<Option<Grant>, String> {
    let (url, methods) = match entry {
        AllowEntry::Text(text) => {
            let Some(text) = render(text)? else { return Ok(None) };
            return text.parse::<Grant>().map(Some).map_err(|err| err.to_string());
        }
        AllowEntry::Mapping { url, methods } => (url, methods),
    };
    let Some(url) = render(url)? else { return Ok(None) };
    let mut rendered = Vec::new();
    for method in methods {
        let Some(method) = render(method)? else { return Ok(None) };
        rendered.push(method);
    }
    Grant::with_methods(&url, &rendered)
        .map(Some)
        .map_err(|err| err.to_string())
}

/// A `timeout:` value: a duration above zero. `None` when absent, or when invalid (the
/// problem is recorded at `path`, with `examples` of valid values).
fn parse_timeout(
    cx: &mut Context,
    path: &str,
    step: Option<&str>,
    text: Option<&str>,
    examples: &str,
) -> Option<Duration> {
    let text = text?;
    match humantime::parse_duration(text) {
        Ok(timeout) if !timeout.is_zero() => Some(timeout),
        _ => {
            cx.problem(
                path,
                step,
                format!("`timeout: {text}` is not a duration (e.g. {examples})"),
            );
            None
        }
    }
}

/// A step's `memory:` value (`256MiB`), from 1 MiB to [`crate::runtime::MAX_MEMORY`].
/// `None` when absent, or when invalid (the problem is recorded at `path`).
fn parse_memory(cx: &mut Context, path: &str, step: &str, text: Option<&str>) -> Option<usize> {
    let text = text?;
    match crate::runtime::parse_memory(text) {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            cx.problem(path, Some(step), format!("memory: {err}"));
            None
        }
    }
}

/// Largest runbook file read (a real one is a few KiB).
pub const MAX_RUNBOOK_BYTES: u64 = 1 << 20;

/// Reads a runbook, refusing one larger than [`MAX_RUNBOOK_BYTES`] (or endless, such as
/// `/dev/zero`) and one that is not UTF-8.
fn read_runbook(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(MAX_RUNBOOK_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RUNBOOK_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {} KiB; a runbook is a short YAML file",
            MAX_RUNBOOK_BYTES >> 10
        )));
    }
    String::from_utf8(bytes).map_err(|err| std::io::Error::other(format!("it is not UTF-8 text ({err})")))
}

/// `serde_path_to_error`'s path in our `a[0].b` form.
fn serde_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            _ => {}
        }
    }
    out
}

fn resolve_inputs(
    cx: &mut Context<'_>,
    manifest: &Manifest,
    sets: &BTreeMap<String, String>,
    mode: Mode,
) -> BTreeMap<String, Value> {
    let mut values = BTreeMap::new();
    for name in sets.keys() {
        if !manifest.inputs.contains_key(name) {
            let declared: Vec<&str> = manifest.inputs.keys().map(String::as_str).collect();
            cx.problem(
                "",
                None,
                format!(
                    "--set {name}: the runbook declares no input `{name}` (inputs: {})",
                    if declared.is_empty() {
                        "none".into()
                    } else {
                        declared.join(", ")
                    }
                ),
            );
        }
    }
    for (name, input) in &manifest.inputs {
        match (sets.get(name), &input.default) {
            (Some(value), default) => {
                match typed_input(value, default.as_ref()) {
                    Ok(typed) => {
                        values.insert(name.clone(), typed);
                    }
                    Err(takes) => {
                        cx.problem(
                            &format!("inputs.{name}"),
                            None,
                            format!(
                                "--set {name}={}: input `{name}` takes {takes}",
                                crate::text::truncate(&crate::text::visible(value), 40)
                            ),
                        );
                        // Reported once: the default stands in so that nothing downstream
                        // calls the input unset.
                        if let Some(default) = default {
                            values.insert(name.clone(), default.clone());
                        }
                    }
                }
            }
            (None, Some(default)) => {
                values.insert(name.clone(), default.clone());
            }
            (None, None) if input.required && mode == Mode::Run => {
                cx.problem(
                    &format!("inputs.{name}"),
                    None,
                    format!("input `{name}` is required: pass --set {name}=VALUE"),
                );
            }
            (None, None) => {}
        }
    }
    values
}

/// A `--set` value typed as the input's default is: a number input stays a number and
/// must be one (so a number input is safe inside a query or a path), `true`/`false` for a
/// boolean, a JSON list or comma-separated values for a list, text otherwise. The error
/// says what the input takes.
fn typed_input(value: &str, default: Option<&Value>) -> Result<Value, String> {
    match default {
        Some(Value::Number(number)) => match serde_json::from_str::<Value>(value.trim()) {
            Ok(typed @ Value::Number(_)) => Ok(typed),
            _ => Err(format!("a number (its default is {number})")),
        },
        Some(Value::Bool(_)) => match value.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("true or false".into()),
        },
        Some(Value::Array(_)) => match value.trim() {
            text if text.starts_with('[') => match serde_json::from_str::<Value>(text) {
                Ok(list @ Value::Array(_)) => Ok(list),
                _ => Err("a JSON list or comma-separated values".into()),
            },
            text => Ok(Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_string()))
                    .collect(),
            )),
        },
        _ => Ok(Value::String(value.to_string())),
    }
}

fn check_ids_and_needs<'m>(cx: &mut Context<'_>, manifest: &'m Manifest) -> HashMap<&'m str, usize> {
    let mut index = HashMap::new();
    for (i, step) in manifest.steps.iter().enumerate() {
        let id = step.id.as_str();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            cx.problem(
                &format!("steps[{i}].id"),
                Some(id),
                "a step id is lower-case letters, digits, `_` and `-`",
            );
        }
        if let Some(first) = index.insert(id, i) {
            let first_line = cx.line(&format!("steps[{first}]"));
            cx.problem(
                &format!("steps[{i}].id"),
                Some(id),
                format!("duplicate step id (first used on line {first_line})"),
            );
            index.insert(id, first);
        }
    }
    for (i, step) in manifest.steps.iter().enumerate() {
        for need in &step.needs {
            if need == &step.id {
                cx.problem(
                    &format!("steps[{i}].needs"),
                    Some(&step.id),
                    "a step cannot need itself",
                );
            } else if !index.contains_key(need.as_str()) {
                cx.problem(
                    &format!("steps[{i}].needs"),
                    Some(&step.id),
                    format!("needs `{need}`, which is not a step of this runbook"),
                );
            }
        }
    }
    // Cycles: depth-first search with colours; report each cycle once.
    let mut colour = vec![0u8; manifest.steps.len()];
    let mut reported = BTreeSet::new();
    fn visit(
        i: usize,
        manifest: &Manifest,
        index: &HashMap<&str, usize>,
        colour: &mut [u8],
        stack: &mut Vec<usize>,
        cycles: &mut Vec<Vec<usize>>,
    ) {
        colour[i] = 1;
        stack.push(i);
        for need in &manifest.steps[i].needs {
            let Some(&j) = index.get(need.as_str()) else {
                continue;
            };
            if j == i {
                continue;
            }
            if colour[j] == 1 {
                let start = stack.iter().position(|&k| k == j).unwrap();
                cycles.push(stack[start..].to_vec());
            } else if colour[j] == 0 {
                visit(j, manifest, index, colour, stack, cycles);
            }
        }
        stack.pop();
        colour[i] = 2;
    }
    let mut cycles = Vec::new();
    for i in 0..manifest.steps.len() {
        if colour[i] == 0 {
            visit(i, manifest, &index, &mut colour, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        let mut key = cycle.clone();
        key.sort();
        if reported.insert(key) {
            // Start at the earliest step; each arrow reads "needs".
            let first = *cycle.iter().min().unwrap();
            let start = cycle.iter().position(|&k| k == first).unwrap();
            let mut names: Vec<&str> = cycle[start..]
                .iter()
                .chain(&cycle[..start])
                .map(|&k| manifest.steps[k].id.as_str())
                .collect();
            names.push(names[0]);
            cx.problem(
                &format!("steps[{first}].needs"),
                Some(&manifest.steps[first].id),
                format!("`needs` form a cycle: {}", names.join(" → ")),
            );
        }
    }
    index
}

/// For each step, every step it transitively needs.
fn ancestors(manifest: &Manifest, index: &HashMap<&str, usize>) -> Vec<BTreeSet<usize>> {
    let n = manifest.steps.len();
    let mut result = vec![BTreeSet::new(); n];
    for (i, set) in result.iter_mut().enumerate() {
        let mut todo: Vec<usize> = vec![i];
        while let Some(k) = todo.pop() {
            for need in &manifest.steps[k].needs {
                if let Some(&j) = index.get(need.as_str())
                    && j != i
                    && set.insert(j)
                {
                    todo.push(j);
                }
            }
        }
    }
    result
}

fn check_when_path(path: &[String], manifest: &Manifest, ancestors: &BTreeSet<usize>) -> Result<(), String> {
    let text = path.join(".");
    match path {
        [root, name] if root == "inputs" => {
            if manifest.inputs.contains_key(name) {
                Ok(())
            } else {
                Err(format!("`{text}`: the runbook declares no input `{name}`"))
            }
        }
        [root, step, rest @ ..] if root == "steps" => {
            let Some(j) = manifest.steps.iter().position(|s| &s.id == step) else {
                return Err(format!("`{text}`: no step `{step}` in this runbook"));
            };
            if !ancestors.contains(&j) {
                return Err(format!(
                    "`{text}`: step `{step}` must be in this step's `needs` (directly or through another step) to be read here"
                ));
            }
            let for_each = manifest.steps[j].for_each.is_some();
            match rest {
                [field] if matches!(field.as_str(), "status" | "summary" | "attempts") => Ok(()),
                [which, _name, ..] if (which == "metrics" || which == "outputs") && for_each => Err(format!(
                    "`{text}`: step `{step}` runs once per item (`for_each`); read its `status` (the worst of its items) instead"
                )),
                [metrics, _name, ..] if metrics == "metrics" => Ok(()),
                [outputs, _name] if outputs == "outputs" => Ok(()),
                _ => Err(format!(
                    "`{text}`: a step offers `status`, `summary`, `attempts`, `metrics.NAME` and `outputs.NAME`"
                )),
            }
        }
        _ => Err(format!("`{text}`: conditions read `steps.ID.…` or `inputs.NAME`")),
    }
}

fn resolve_retry(cx: &mut Context<'_>, step: &Step, i: usize) -> RetryPolicy {
    let mut policy = RetryPolicy {
        attempts: 1,
        delay: Duration::from_secs(1),
        backoff: 1.0,
    };
    let Some(retry) = &step.retry else {
        return policy;
    };
    let at = format!("steps[{i}].retry");
    if retry.attempts == 0 {
        cx.problem(
            &format!("{at}.attempts"),
            Some(&step.id),
            "`attempts` counts the first try too: at least 1",
        );
    }
    policy.attempts = retry.attempts.max(1);
    if let Some(delay) = &retry.delay {
        match humantime::parse_duration(delay) {
            Ok(delay) => policy.delay = delay,
            Err(_) => cx.problem(
                &format!("{at}.delay"),
                Some(&step.id),
                format!("`delay: {delay}` is not a duration (e.g. 500ms, 2s)"),
            ),
        }
    }
    if let Some(backoff) = retry.backoff {
        if backoff.is_finite() && backoff >= 1.0 {
            policy.backoff = backoff;
        } else {
            cx.problem(
                &format!("{at}.backoff"),
                Some(&step.id),
                format!("`backoff: {backoff}` must be a number ≥ 1 (the delay's multiplier)"),
            );
        }
    }
    policy
}

async fn resolve_plugin(
    plugins: &mut Plugins<'_>,
    runbook_dir: &Path,
    uses: &str,
    memory_bytes: usize,
) -> Result<Arc<Plugin>, String> {
    match plugins {
        Plugins::Load {
            runtime,
            plugin_path,
            loaded,
        } => {
            let reference =
                PluginRef::parse(uses, Some(runbook_dir)).map_err(|err| format!("`uses: {uses}`: {err}"))?;
            plugin_path.load(runtime, &reference, memory_bytes, loaded).await
        }
        Plugins::Loaded(by_use) => by_use
            .get(uses)
            .cloned()
            .ok_or_else(|| format!("`uses: {uses}` was not loaded when the runbook was prepared (reload it)")),
    }
}

/// The trust of `tls` (a step's `tls:` mapping, or the runbook's at `path`) for step `id`
/// with its `step_secrets` (as written) and `secrets` (parsed); problems go to `cx`, and
/// the system's trust stands in for a `tls:` that has one.
#[allow(clippy::too_many_arguments)]
fn step_trust(
    cx: &mut Context,
    path: &str,
    id: &str,
    tls: &StepTls,
    step_secrets: &BTreeMap<String, String>,
    secrets: &[SecretGrant],
    runbook_dir: &Path,
    mode: Mode,
) -> Arc<Trust> {
    let step = (!id.is_empty()).then_some(id);
    let source = |pem: &PemRef| match pem {
        PemRef::File(path) => PemSource::File(runbook_dir.join(path)),
        PemRef::Secret(name) => PemSource::Secret(name.clone()),
    };
    let settings = TlsSettings {
        ca: tls.ca.iter().map(|path| runbook_dir.join(path)).collect(),
        client_cert: tls.client_cert.as_ref().map(source),
        client_key: tls.client_key.as_ref().map(source),
        verify: tls.verify,
    };
    if let Some(undefined) = settings.secret_names().find(|name| !step_secrets.contains_key(*name)) {
        cx.problem(
            path,
            step,
            format!(
                "secret `{undefined}` is not among the step's `secrets:` (add `{undefined}: env:VAR` or `file:PATH` there; the host reads it, the plugin cannot)"
            ),
        );
        return Trust::system();
    }
    // Secrets are read at run time; `validate` checks the files.
    let settings = if mode == Mode::Validate {
        let file = |source: Option<PemSource>| source.filter(|pem| matches!(pem, PemSource::File(_)));
        match (file(settings.client_cert.clone()), file(settings.client_key.clone())) {
            (Some(_), Some(_)) => settings,
            (cert, key) => {
                // Half an identity in a secret: check the other half's file alone.
                if let Some(PemSource::File(half)) = cert.or(key)
                    && let Err(err) = std::fs::metadata(&half)
                {
                    cx.problem(path, step, format!("{}: {err}", half.display()));
                }
                TlsSettings {
                    client_cert: None,
                    client_key: None,
                    ..settings
                }
            }
        }
    } else {
        settings
    };
    match Trust::build(&settings, secrets) {
        Ok(trust) => Arc::new(trust),
        Err(message) => {
            cx.problem(path, step, message);
            Trust::system()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn for_each_lists_come_from_lists_json_text_or_commas_and_never_past_their_cap() {
        assert_eq!(item_list(&json!(["a", 1]), 10).unwrap(), vec![json!("a"), json!(1)]);
        assert_eq!(
            item_list(&json!(r#"["x", {"id": 2}]"#), 10).unwrap(),
            vec![json!("x"), json!({"id": 2})]
        );
        assert_eq!(
            item_list(&json!(" a, b ,,c "), 10).unwrap(),
            vec![json!("a"), json!("b"), json!("c")]
        );
        assert!(item_list(&json!(""), 10).unwrap().is_empty());
        assert!(item_list(&Value::Null, 10).unwrap().is_empty());
        let err = item_list(&json!("[1, 2"), 10).unwrap_err();
        assert!(err.contains("starts with `[` but is not a JSON list"), "{err}");
        let err = item_list(&json!({"a": 1}), 10).unwrap_err();
        assert!(err.contains("needs a list"), "{err}");
        // A huge list is refused whole, not cut: nothing of it runs.
        let huge: Vec<Value> = (0..100_000).map(|i| json!(i)).collect();
        let err = item_list(&Value::Array(huge), MAX_ITEMS).unwrap_err();
        assert!(
            err.contains("100000 items, more than its cap of 1000: nothing was run"),
            "{err}"
        );
        let commas = vec!["x"; 1001].join(",");
        assert!(item_list(&json!(commas), MAX_ITEMS).is_err());
    }
}
