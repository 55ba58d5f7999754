//! The WebAssembly runtime: one engine and linker per process, plugins loaded and
//! checked against runbox's worlds, compiled code cached on disk, and every call run
//! in a fresh [`sandbox::Sandbox`] under a deadline and a memory budget.

pub mod bindings;
pub mod cache;
pub mod outputs;
pub mod sandbox;

use crate::capabilities::Grants;
use crate::capabilities::network::Access;
use crate::capabilities::secrets::Redactor;
use crate::result::{Kind, MetricResult, Status};
use bindings::check::CheckPre;
use bindings::mitigation::MitigationPre;
use bindings::v0_1::check::CheckPre as CheckPreV0_1;
use bindings::v0_1::mitigation::MitigationPre as MitigationPreV0_1;
use bindings::{Plan, from_v0_1};
pub use cache::CacheReads;
use cache::CompileCache;
use sandbox::{LogLine, MemoryLimitExceeded, OutputCaps, Sandbox};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline};

/// How often the epoch advances; wasm yields to the host at least this often.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time from instantiation to result. Default 10 s.
    pub deadline: Duration,
    /// Linear memory of all the plugin's memories together. Default 64 MiB.
    pub memory_bytes: usize,
    /// Caps on logs and captured stdio.
    pub output: OutputCaps,
}

/// Linear memory a plugin gets unless the operator or the step allows more.
pub const DEFAULT_MEMORY: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            deadline: Duration::from_secs(10),
            memory_bytes: DEFAULT_MEMORY,
            output: OutputCaps::default(),
        }
    }
}

/// Options of a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Directory of the compile cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// How many plugin instances the engine's pool holds.
    pub pool: Pool,
    /// Whether compiled code is copied from the compile cache or mapped.
    pub cache_reads: CacheReads,
}

/// How many plugin instances may live at once: what the engine's pooling allocator
/// reserves (and sets up, guard pages included, when the runtime starts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pool {
    /// [`MAX_INSTANCES`] at once: runbooks, `serve`, the library's default.
    #[default]
    Shared,
    /// One invocation at a time (`runbox check`, which Nagios starts for every check):
    /// setting this pool up takes ~0.1 ms where the shared one takes ~0.6 ms.
    Single,
}

/// Owns the engine, the linker and the epoch ticker. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    cache: Option<CompileCache>,
    ticker_stop: Arc<AtomicBool>,
    loads: LoadCounts,
}

/// How many plugin loads this runtime did (`runbox serve` reports them in its
/// `/metrics`, so an operator can see that a probe loads nothing).
#[derive(Debug, Default)]
pub struct LoadCounts {
    /// Loads started (each reads the file and runs `info()` if it gets that far).
    pub loads: AtomicU64,
    /// Loads that compiled the component (not in the compile cache).
    pub compiles: AtomicU64,
    /// Loads whose component came from the on-disk compile cache.
    pub cache_hits: AtomicU64,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Why a file could not be loaded as a plugin. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid component.
    #[error("{path} is not a usable plugin: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// A valid component that does not implement a runbox world.
    #[error(
        "{path} does not implement a runbox world: expected `runbox:plugin/check@0.2.0` (exports `info`, `run`) or `runbox:plugin/mitigation@0.2.0` (exports `info`, `plan`, `apply`), or their 0.1.0 versions, found {found}"
    )]
    WrongWorld {
        /// The file.
        path: PathBuf,
        /// What the component exports (or how its exports differ).
        found: String,
    },
    /// A component that imports something the sandbox does not offer.
    #[error(
        "{path} imports {import}, which the runbox sandbox does not offer (it offers WASI 0.2 cli, clocks, random, io, filesystem, sockets and http (outgoing), and runbox:plugin/host@0.2.0 or @0.1.0)"
    )]
    UnsupportedImport {
        /// The file.
        path: PathBuf,
        /// The import, as wasmtime names it.
        import: String,
    },
    /// The plugin's `info()` failed or returned something unusable.
    #[error("{path}: info() failed: {reason}")]
    Info {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The config schema from `info()` is not JSON Schema, or breaks a limit of
    /// [`crate::schema`].
    #[error("{path} is not a usable plugin: {reason}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
}

/// What a plugin says about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    /// Name, e.g. `redis-ping`.
    pub name: String,
    /// Version.
    pub version: String,
    /// One line.
    pub description: String,
    /// The JSON Schema of its config.
    pub config_schema: serde_json::Value,
}

enum Pre {
    Check(CheckPre<Sandbox>),
    Mitigation(MitigationPre<Sandbox>),
    CheckV0_1(CheckPreV0_1<Sandbox>),
    MitigationV0_1(MitigationPreV0_1<Sandbox>),
}

/// The version of the `runbox:plugin` contract a plugin was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Contract {
    /// `runbox:plugin@0.1.0`: no outputs.
    #[serde(rename = "0.1.0")]
    V0_1,
    /// `runbox:plugin@0.2.0`, the current one.
    #[serde(rename = "0.2.0")]
    V0_2,
}

impl Contract {
    /// `0.2.0`.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }
}

/// A loaded plugin, ready to instantiate.
pub struct Plugin {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex.
    pub digest: String,
    /// Which world it implements.
    pub kind: Kind,
    /// Which version of the contract.
    pub contract: Contract,
    /// What it says about itself.
    pub info: PluginInfo,
    /// Its config schema, compiled once: at load, or, when the compile cache says this
    /// exact schema passed the checks before, when the first config is validated.
    validator: OnceLock<Result<jsonschema::Validator, String>>,
    /// The interfaces it imports (WIT names).
    pub imports: Vec<String>,
    /// The names it exports.
    pub exports: Vec<String>,
    /// Whether the load compiled the component (false: came from the cache).
    pub compiled: bool,
    /// Time the load took (read, compile or cache load, checks, `info()`).
    pub load_time: Duration,
    pre: Pre,
}

impl Plugin {
    /// The world it implements, versioned: `runbox:plugin/check@0.2.0`.
    pub fn world(&self) -> String {
        let world = match self.kind {
            Kind::Check => "check",
            Kind::Mitigation => "mitigation",
        };
        format!("runbox:plugin/{world}@{}", self.contract.version())
    }

    /// Every way `config` violates the plugin's schema, each naming the field.
    pub fn config_violations(&self, config: &serde_json::Value) -> Vec<String> {
        match self
            .validator
            .get_or_init(|| crate::schema::build(&self.info.config_schema))
        {
            Ok(validator) => crate::config::violations_of(validator, config),
            Err(reason) => vec![format!("the plugin's config schema cannot be used: {reason}")],
        }
    }
}

/// Everything an invocation of a check produced, after caps and redaction.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// The verdict.
    pub status: Status,
    /// One line.
    pub summary: String,
    /// Further lines.
    pub details: Vec<String>,
    /// Metrics.
    pub metrics: Vec<MetricResult>,
    /// Named values for later steps (contract 0.2.0), checked, capped and redacted.
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// What the sandbox denied, each with the grant that would allow it.
    pub denied: Vec<String>,
    /// The plugin's log lines (and captured stdout/stderr).
    pub logs: Vec<LogLine>,
    /// Wall time of the invocation.
    pub duration: Duration,
}

impl Runtime {
    /// Creates the engine (epoch interruption on, component model) and the linker.
    pub fn new(options: RuntimeOptions) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(options.pool)));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        Sandbox::add_to_linker(&mut linker)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new().name("runbox-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                ticker_engine.increment_epoch();
            }
        })?;
        let cache = options
            .cache_dir
            .map(|dir| CompileCache::new(dir, &engine, options.cache_reads));
        Ok(Runtime {
            engine,
            linker,
            cache,
            ticker_stop,
            loads: LoadCounts::default(),
        })
    }

    /// [`Plugin::config_violations`], for a process that validates one config and exits
    /// (`runbox check`, which Nagios starts for every check): a config that passed is
    /// remembered in the compile cache, keyed by the SHA-256 of the schema and the
    /// config, so the next process with the same plugin and config builds no validator.
    pub fn remembered_config_violations(&self, plugin: &Plugin, config: &serde_json::Value) -> Vec<String> {
        let Some(cache) = &self.cache else {
            return plugin.config_violations(config);
        };
        let key = format!("{}\0{config}", plugin.info.config_schema);
        if cache.config_passed(&key) {
            return Vec::new();
        }
        let problems = plugin.config_violations(config);
        if problems.is_empty() {
            cache.mark_config_passed(&key);
        }
        problems
    }

    /// How many loads, compiles and compile-cache hits this runtime has done.
    pub fn load_counts(&self) -> &LoadCounts {
        &self.loads
    }

    /// Loads `path`: reads it, compiles it (or maps the cached code), checks that it
    /// implements the check or mitigation world and imports only what the sandbox
    /// offers, and asks it for its `info()` under the default memory limit.
    pub async fn load(&self, path: &Path) -> Result<Plugin, LoadError> {
        self.load_with_memory(path, DEFAULT_MEMORY).await
    }

    /// [`Runtime::load`], with `info()` allowed `memory_bytes` of linear memory (the
    /// operator's `--memory` or the step's `memory:`): a plugin whose initial memory is
    /// larger than the default loads only where it is allowed more.
    pub async fn load_with_memory(&self, path: &Path, memory_bytes: usize) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        self.loads.loads.fetch_add(1, Ordering::Relaxed);
        let read_error = |source| LoadError::Read {
            path: path.into(),
            source,
        };
        let invalid = |reason: String| LoadError::Invalid {
            path: path.into(),
            reason,
        };
        // A cache hit needs only the file's digest, taken in small pieces; the whole file
        // is read only to compile it. Without a cache there is nothing to look up.
        let hit = match &self.cache {
            Some(cache) => {
                let (digest, head) = cache::digest_file(path).map_err(read_error)?;
                if let Some(reason) = not_a_component(&head) {
                    return Err(invalid(reason));
                }
                cache.load(&self.engine, &digest).map(|component| (component, digest))
            }
            None => None,
        };
        let compiled = hit.is_none();
        let counter = if compiled {
            &self.loads.compiles
        } else {
            &self.loads.cache_hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let (component, digest) = match hit {
            Some(hit) => hit,
            None => {
                // Hashed again from the bytes read: the file may have changed since it was
                // hashed above, and the digest names exactly the bytes compiled.
                let bytes = std::fs::read(path).map_err(read_error)?;
                if let Some(reason) = not_a_component(&bytes[..bytes.len().min(8)]) {
                    return Err(invalid(reason));
                }
                let digest = cache::digest(&bytes);
                let component = Component::new(&self.engine, &bytes)
                    .map_err(|err| invalid(format!("corrupt or invalid component: {err:#}")))?;
                if let Some(cache) = &self.cache {
                    cache.store(&digest, &component);
                }
                (component, digest)
            }
        };
        tracing::debug!(path = %path.display(), compiled, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "component ready");

        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let has = |name: &str| exports.iter().any(|export| export == name);
        let kind = if has("info") && has("run") {
            Kind::Check
        } else if has("info") && has("plan") && has("apply") {
            Kind::Mitigation
        } else {
            let found = if exports.is_empty() {
                "no exports".to_string()
            } else {
                format!("exports: {}", exports.join(", "))
            };
            return Err(LoadError::WrongWorld {
                path: path.into(),
                found,
            });
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|err| {
            let message = format!("{err:#}");
            let import = message
                .split('`')
                .nth(1)
                .map(|name| format!("`{name}`"))
                .unwrap_or(message);
            LoadError::UnsupportedImport {
                path: path.into(),
                import,
            }
        })?;
        let wrong_types = |err: wasmtime::Error| LoadError::WrongWorld {
            path: path.into(),
            found: format!("exports whose types differ from the world: {err:#}"),
        };
        // The current contract first; a plugin built against 0.1.0 has the same exports
        // with the older record types.
        let pre = match kind {
            Kind::Check => match CheckPre::new(instance_pre.clone()) {
                Ok(pre) => Pre::Check(pre),
                Err(err) => Pre::CheckV0_1(CheckPreV0_1::new(instance_pre).map_err(|_| wrong_types(err))?),
            },
            Kind::Mitigation => match MitigationPre::new(instance_pre.clone()) {
                Ok(pre) => Pre::Mitigation(pre),
                Err(err) => Pre::MitigationV0_1(MitigationPreV0_1::new(instance_pre).map_err(|_| wrong_types(err))?),
            },
        };
        let contract = match pre {
            Pre::Check(_) | Pre::Mitigation(_) => Contract::V0_2,
            Pre::CheckV0_1(_) | Pre::MitigationV0_1(_) => Contract::V0_1,
        };
        let (info, validator) = self.info(path, &pre, memory_bytes).await?;
        Ok(Plugin {
            path: path.into(),
            digest,
            kind,
            contract,
            info,
            validator,
            imports,
            exports,
            compiled,
            load_time: started.elapsed(),
            pre,
        })
    }

    async fn info(
        &self,
        path: &Path,
        pre: &Pre,
        memory_bytes: usize,
    ) -> Result<(PluginInfo, OnceLock<Result<jsonschema::Validator, String>>), LoadError> {
        let failed = |reason: String| LoadError::Info {
            path: path.into(),
            reason: crate::text::visible(&reason).into_owned(),
        };
        let limits = Limits {
            deadline: Duration::from_secs(2),
            memory_bytes,
            ..Limits::default()
        };
        let sandbox = Sandbox::new(
            &path.display().to_string(),
            &Grants::default(),
            Access::ReadOnly,
            HashMap::new(),
            Arc::default(),
            limits.memory_bytes,
            limits.output,
            Instant::now() + limits.deadline,
        )
        .map_err(|err| failed(err.to_string()))?;
        let (mut store, activity) = self.store(sandbox, limits.deadline);
        let call = async {
            match pre {
                Pre::Check(pre) => pre.instantiate_async(&mut store).await?.call_info(&mut store).await,
                Pre::Mitigation(pre) => pre.instantiate_async(&mut store).await?.call_info(&mut store).await,
                Pre::CheckV0_1(pre) => pre
                    .instantiate_async(&mut store)
                    .await?
                    .call_info(&mut store)
                    .await
                    .map(from_v0_1::info),
                Pre::MitigationV0_1(pre) => pre
                    .instantiate_async(&mut store)
                    .await?
                    .call_info(&mut store)
                    .await
                    .map(from_v0_1::info),
            }
        };
        let info = run_with_deadline(call, limits.deadline, &activity)
            .await
            .map_err(|fault| {
                let mut reason = fault.describe(&store.data().host.stderr.contents().0).1;
                if let Fault::Error(err) = &fault
                    && err.downcast_ref::<MemoryLimitExceeded>().is_some()
                {
                    reason
                        .push_str("; allow it more with `--memory` (runbox check, runbox run) or the step's `memory:`");
                }
                failed(reason)
            })?;
        drop(store);
        let bindings::Info {
            name,
            version,
            description,
            config_schema,
        } = info;
        // The reasons quote the plugin's schema: one line, nothing a terminal acts on.
        // A schema this version of runbox checked before is only parsed; the validator is
        // built when a config is first validated (`runbox check` of a cached config never).
        let passed = self
            .cache
            .as_ref()
            .is_some_and(|cache| cache.schema_passed(&config_schema));
        let compiled = if passed {
            crate::schema::parse(&config_schema).map(|schema| (schema, OnceLock::new()))
        } else {
            crate::schema::compile(&config_schema).map(|(schema, validator)| (schema, OnceLock::from(Ok(validator))))
        };
        let (schema, validator) = compiled.map_err(|reason| LoadError::Schema {
            path: path.into(),
            reason: crate::text::visible(&reason).into_owned(),
        })?;
        if let (Some(cache), false) = (&self.cache, passed) {
            cache.mark_schema_passed(&config_schema);
        }
        drop(config_schema);
        check_plugin_name(&name).map_err(failed)?;
        // Shown by `plugins list`/`inspect` and in every report: inert and short.
        let shown = |text: &str, max: usize| crate::text::truncate(&crate::text::visible(text), max).into_owned();
        let info = PluginInfo {
            name,
            version: shown(&version, caps::INFO_VERSION_BYTES),
            description: shown(&description, caps::INFO_DESCRIPTION_BYTES),
            config_schema: schema,
        };
        Ok((info, validator))
    }

    fn store(&self, sandbox: Sandbox, deadline: Duration) -> (Store<Sandbox>, Activity) {
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|sandbox| &mut sandbox.memory);
        let activity = Activity::new();
        let tick_activity = activity.clone();
        // Backstop: a plugin that never yields control is trapped shortly after the
        // deadline even if the host's own timer cannot run.
        let hard_stop = Instant::now() + deadline + Duration::from_millis(500);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            tick_activity.touch();
            if Instant::now() >= hard_stop {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        (store, activity)
    }

    /// Runs a check plugin once with `config` (already validated JSON) and `grants`.
    /// Never fails: every fault of the plugin becomes an outcome with a reason.
    pub async fn run_check(
        &self,
        plugin: &Plugin,
        config: &serde_json::Value,
        grants: &Grants,
        limits: &Limits,
    ) -> CheckOutcome {
        self.invoke(plugin, config, grants, limits, Call::Run).await.0
    }

    /// Asks a mitigation what it would do (read-only). The outcome carries the plan's
    /// summary and changes (`details`), redacted; the plan itself is returned for
    /// [`Runtime::apply`].
    pub async fn plan(
        &self,
        plugin: &Plugin,
        config: &serde_json::Value,
        grants: &Grants,
        limits: &Limits,
    ) -> (CheckOutcome, Option<Plan>) {
        let (outcome, answer) = self.invoke(plugin, config, grants, limits, Call::Plan).await;
        let plan = match answer {
            Some(Answer::Plan(plan)) => Some(plan),
            _ => None,
        };
        (outcome, plan)
    }

    /// Applies `plan` (from [`Runtime::plan`] with the same config). The outcome's
    /// `details` are the changes made.
    pub async fn apply(
        &self,
        plugin: &Plugin,
        config: &serde_json::Value,
        grants: &Grants,
        limits: &Limits,
        plan: &Plan,
    ) -> CheckOutcome {
        self.invoke(plugin, config, grants, limits, Call::Apply(plan)).await.0
    }

    async fn invoke(
        &self,
        plugin: &Plugin,
        config: &serde_json::Value,
        grants: &Grants,
        limits: &Limits,
        call: Call<'_>,
    ) -> (CheckOutcome, Option<Answer>) {
        let started = Instant::now();
        let mut secrets = HashMap::new();
        for grant in &grants.secrets {
            match grant.resolve() {
                Ok(value) => {
                    secrets.insert(grant.name.clone(), value);
                }
                Err(reason) => {
                    return (CheckOutcome::fault(Status::Unknown, reason, started), None);
                }
            }
        }
        // `resolve` added each value to the process-wide redactor: no automaton is built
        // per invocation.
        let redactor = crate::capabilities::secrets::redactor();
        // Checks and plans only read: HTTP methods beyond GET, HEAD and OPTIONS need a
        // grant that lists them. An apply may send any method to its destinations.
        let access = match call {
            Call::Apply(_) => Access::Apply,
            Call::Run | Call::Plan => Access::ReadOnly,
        };
        let sandbox = match Sandbox::new(
            &plugin.info.name,
            grants,
            access,
            secrets,
            redactor.clone(),
            limits.memory_bytes,
            limits.output,
            Instant::now() + limits.deadline,
        ) {
            Ok(sandbox) => sandbox,
            Err(err) => {
                return (CheckOutcome::fault(Status::Unknown, err.to_string(), started), None);
            }
        };
        let (mut store, activity) = self.store(sandbox, limits.deadline);
        let config_text = config.to_string();
        let name = &plugin.info.name;
        let call = async {
            Ok(match (&plugin.pre, call) {
                (Pre::Check(pre), Call::Run) => {
                    let check = pre.instantiate_async(&mut store).await?;
                    check.call_run(&mut store, &config_text).await?.map(Answer::Report)
                }
                (Pre::Mitigation(pre), Call::Plan) => {
                    let mitigation = pre.instantiate_async(&mut store).await?;
                    mitigation.call_plan(&mut store, &config_text).await?.map(Answer::Plan)
                }
                (Pre::Mitigation(pre), Call::Apply(plan)) => {
                    let mitigation = pre.instantiate_async(&mut store).await?;
                    mitigation
                        .call_apply(&mut store, &config_text, plan)
                        .await?
                        .map(Answer::Outcome)
                }
                (Pre::CheckV0_1(pre), Call::Run) => {
                    let check = pre.instantiate_async(&mut store).await?;
                    check
                        .call_run(&mut store, &config_text)
                        .await?
                        .map(|report| Answer::Report(from_v0_1::report(report)))
                }
                (Pre::MitigationV0_1(pre), Call::Plan) => {
                    let mitigation = pre.instantiate_async(&mut store).await?;
                    mitigation
                        .call_plan(&mut store, &config_text)
                        .await?
                        .map(|plan| Answer::Plan(from_v0_1::plan(plan)))
                }
                (Pre::MitigationV0_1(pre), Call::Apply(plan)) => {
                    let mitigation = pre.instantiate_async(&mut store).await?;
                    mitigation
                        .call_apply(&mut store, &config_text, &from_v0_1::plan_back(plan))
                        .await?
                        .map(|outcome| Answer::Outcome(from_v0_1::outcome(outcome)))
                }
                (Pre::Check(_) | Pre::CheckV0_1(_), _) => Err(format!("{name} is a check: it has no plan or apply")),
                (Pre::Mitigation(_) | Pre::MitigationV0_1(_), Call::Run) => {
                    Err(format!("{name} is a mitigation: it plans and applies, it does not run"))
                }
            })
        };
        let result = run_with_deadline(call, limits.deadline, &activity).await;
        let host = &mut store.data_mut().host;
        // Captured with room past the cap for the longest secret: redacted first, then
        // cut, so the cap never splits a secret in two (stderr also feeds panic messages).
        let (stdout, stdout_dropped) = redacted_within(host.stdout.contents(), &redactor, limits.output.stdio_bytes);
        let (stderr, stderr_dropped) = redacted_within(host.stderr.contents(), &redactor, limits.output.stdio_bytes);
        let mut answer = None;
        let mut raw_outputs = Vec::new();
        let (status, summary, mut details, metrics) = match result {
            Ok(Ok(Answer::Report(report))) => {
                raw_outputs = report.outputs;
                (
                    Status::from(report.status),
                    report.summary,
                    report.details,
                    report.metrics.into_iter().map(MetricResult::from).collect(),
                )
            }
            Ok(Ok(Answer::Plan(plan))) => {
                let (summary, changes) = (plan.summary.clone(), plan.changes.clone());
                answer = Some(Answer::Plan(plan));
                (Status::Ok, summary, changes, Vec::new())
            }
            Ok(Ok(Answer::Outcome(outcome))) => {
                raw_outputs = outcome.outputs;
                (
                    Status::from(outcome.status),
                    format!("applied: {}", outcome.summary),
                    outcome.changes,
                    Vec::new(),
                )
            }
            Ok(Err(message)) => (
                Status::Unknown,
                format!("plugin error: {message}"),
                Vec::new(),
                Vec::new(),
            ),
            Err(fault) => {
                let (status, reason) = fault.describe(&stderr);
                (status, reason, Vec::new(), Vec::new())
            }
        };
        let mut logs = std::mem::take(&mut host.logs);
        if host.logs_dropped > 0 {
            logs.push(LogLine {
                level: "warn",
                message: format!("{} further log lines dropped (log cap reached)", host.logs_dropped),
            });
        }
        for (stream, text, dropped) in [("stdout", stdout, stdout_dropped), ("stderr", stderr, stderr_dropped)] {
            let mut lines = text.trim_end().lines();
            for line in lines.by_ref().take(caps::STDIO_LINES) {
                logs.push(LogLine {
                    level: "info",
                    message: format!("{stream}: {line}"),
                });
            }
            let more = lines.count();
            if more > 0 {
                logs.push(LogLine {
                    level: "warn",
                    message: format!("{stream}: {more} further lines not kept (cap is {})", caps::STDIO_LINES),
                });
            }
            if dropped > 0 {
                logs.push(LogLine {
                    level: "warn",
                    message: format!("{stream}: {dropped} further bytes dropped (cap reached)"),
                });
            }
        }
        // A result that rests on an unauthenticated server says so (a plan's details are
        // its changes: its notes say it instead, from the grants).
        if host.handshakes.any_unverified() && !matches!(answer, Some(Answer::Plan(_))) {
            details.push(crate::capabilities::tls::VERIFY_OFF_NOTE.to_string());
        }
        let denied = host.denials.lines();
        let (outputs, notes) = outputs::accept(raw_outputs, &redactor);
        details.extend(notes);
        let mut outcome = CheckOutcome {
            status,
            summary,
            details,
            metrics,
            outputs,
            denied,
            logs,
            duration: started.elapsed(),
        };
        outcome.apply_denials();
        outcome.seal(&redactor);
        (outcome, answer)
    }
}

/// Why a file whose first bytes are `head` is not a WebAssembly component, if it is not.
fn not_a_component(head: &[u8]) -> Option<String> {
    match head {
        [0, b'a', b's', b'm', 0x0d, 0, 1, 0] => None,
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(
            "it is a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)".into(),
        ),
        _ => Some(
            "it is not a WebAssembly file (no `\\0asm` header); is the path right, or the download truncated?".into(),
        ),
    }
}

/// A plugin's name (from its `info()`) names its steps in every report, the Nagios
/// service line and Prometheus labels: 1 to 64 ASCII letters, digits, `-`, `_` or `.`,
/// starting with a letter or digit. Anything else is refused at load.
fn check_plugin_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "its name `{}` is not a plugin name: use 1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit",
            crate::text::truncate(&crate::text::visible(name), 64)
        ))
    }
}

/// Captured output (text, bytes dropped) with secrets redacted and cut to what came from
/// its first `cap` bytes: the capture kept the longest secret's length past the cap, so
/// no secret is cut in two, and what came from past the cap is left out even when
/// redaction made the text shorter.
fn redacted_within((text, dropped): (String, usize), redactor: &Redactor, cap: usize) -> (String, usize) {
    let (kept, left_out) = redactor.redact_prefix(&text, cap);
    (kept.into_owned(), dropped + left_out)
}

/// Which export an invocation calls.
enum Call<'a> {
    Run,
    Plan,
    Apply(&'a Plan),
}

/// What the export returned.
enum Answer {
    Report(bindings::Report),
    Plan(Plan),
    Outcome(bindings::Outcome),
}

/// Most plugin invocations one runtime runs at once (slots of the pooling allocator).
pub const MAX_INSTANCES: usize = 256;

/// The pooling allocator: instance, memory, table and stack slots are reserved once
/// and reused, with copy-on-write memory images, so instantiating a plugin costs
/// microseconds instead of fresh mmaps. Sized for `--parallel` up to 256 concurrent
/// invocations of plugins as large as a JavaScript engine (tens of thousands of table
/// entries). Each memory slot is [`MAX_MEMORY`]; the per-invocation limit below it is
/// the [`Limits::memory_bytes`] budget.
fn pooling(size: Pool) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    // (component instances, core instances, memories, tables) in all. `Single` holds
    // one invocation's instance and room for a second (info() and the run never overlap,
    // but a full pool fails an instantiation rather than waiting), each as large as a
    // component may be (the per-component limits below).
    let (instances, core_instances, memories, tables) = match size {
        Pool::Shared => (MAX_INSTANCES as u32, 2048, 512, 512),
        Pool::Single => (2, 128, 16, 32),
    };
    pool.total_component_instances(instances)
        .total_core_instances(core_instances)
        .total_memories(memories)
        .total_tables(tables)
        .total_stacks(instances)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_memory_size(MAX_MEMORY)
        .table_elements(200_000)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(1 << 20)
        // Reset a reused slot's first pages with memset instead of madvise: a check's
        // memory is small, and madvise plus the page faults that refill the pages on
        // the next invocation were half of a no-op check's time. With pagemap_scan
        // (Linux 6.7+) only the pages actually dirtied are reset. Either way the slot
        // is back to its initial contents before the next plugin sees it.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

/// Bytes of each linear memory slot kept resident (reset with memset) between uses.
const KEEP_RESIDENT: usize = 2 << 20;

/// The largest linear memory any plugin can have (`--memory` cannot exceed it).
pub const MAX_MEMORY: usize = 1 << 30;

/// Parses a memory size (`64MiB`, `512KiB`, `1GiB`, `1048576`) from 1 MiB to
/// [`MAX_MEMORY`]. `K`/`KB`, `M`/`MB` and `G`/`GB` mean the same binary units.
pub fn parse_memory(text: &str) -> Result<usize, String> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a size such as 64MiB"))?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!("`{text}`: unknown unit `{other}` (use KiB, MiB or GiB)"));
        }
    };
    number
        .checked_mul(scale)
        .filter(|size| (1 << 20..=MAX_MEMORY).contains(size))
        .ok_or_else(|| format!("`{text}`: a plugin's memory is from 1MiB to {}GiB", MAX_MEMORY >> 30))
}

/// When wasm last ran (the epoch callback fires only while wasm executes), so a
/// timeout can tell "still computing" from "waiting on I/O".
#[derive(Clone)]
struct Activity {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn busy_recently(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        last > 0 && now.saturating_sub(last) <= 5 * EPOCH_TICK.as_millis() as u64
    }
}

/// The error the epoch callback traps with past the deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// How a plugin call failed.
#[derive(Debug)]
enum Fault {
    /// The deadline passed. `busy`: the plugin was computing, not waiting.
    Deadline { deadline: Duration, busy: bool },
    /// The plugin trapped or the host refused it something fatal.
    Error(wasmtime::Error),
}

impl Fault {
    /// Status and reason for people; `stderr` is the plugin's captured stderr (panics).
    fn describe(&self, stderr: &str) -> (Status, String) {
        match self {
            Fault::Deadline { deadline, busy: true } => (
                Status::Unknown,
                format!(
                    "plugin did not finish within its {} deadline: it was still computing and was stopped (a busy loop?)",
                    humantime::format_duration(*deadline)
                ),
            ),
            Fault::Deadline { deadline, busy: false } => (
                Status::Critical,
                format!(
                    "no result within the {} deadline: timed out waiting on the network",
                    humantime::format_duration(*deadline)
                ),
            ),
            Fault::Error(err) => (Status::Unknown, describe_error(err, stderr)),
        }
    }
}

fn describe_error(err: &wasmtime::Error, stderr: &str) -> String {
    if err.downcast_ref::<DeadlineExceeded>().is_some() {
        return "plugin did not yield within its deadline and was stopped".into();
    }
    if let Some(limit) = err.downcast_ref::<MemoryLimitExceeded>() {
        return format!("plugin stopped: {limit}");
    }
    if let Some(wasmtime::component::ResourceTableError::Full) = err.downcast_ref() {
        return format!(
            "plugin stopped: it held more than {} handles (sockets, streams, timers) at once",
            sandbox::MAX_HANDLES
        );
    }
    if let Some(utf8) = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::str::Utf8Error>())
    {
        return format!(
            "plugin stopped: it passed a string that is not valid UTF-8 ({utf8}); strings crossing the sandbox must be UTF-8"
        );
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("plugin exited with code {} instead of returning a result", exit.0);
    }
    if let Some(panic) = panic_message(stderr) {
        return format!("plugin panicked: {panic}");
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => "plugin stopped: stack overflow (recursion too deep)".into(),
        Some(Trap::UnreachableCodeReached) => {
            "plugin aborted (it reached `unreachable`, as a panic or abort does)".into()
        }
        // Rust and C keep their stack in linear memory: overflowing it is an
        // out-of-bounds access, not a wasm stack overflow.
        Some(Trap::MemoryOutOfBounds) => {
            "plugin trapped: out-of-bounds memory access (a bug in the plugin, or recursion too deep for its stack)"
                .into()
        }
        Some(trap) => format!("plugin trapped: {trap}"),
        // The top of the chain may be wasmtime's "error while executing at wasm
        // backtrace" context; the root cause says what went wrong.
        None => format!("plugin fault: {}", first_line(&err.root_cause().to_string())),
    }
}

/// The message of a Rust panic printed to stderr, with its location.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines().skip_while(|line| !line.contains("panicked at"));
    let location = lines
        .next()?
        .split("panicked at")
        .nth(1)?
        .trim()
        .trim_end_matches(':')
        .to_string();
    let message = lines.next().unwrap_or("").trim();
    Some(format!("{message} (at {location})"))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

async fn run_with_deadline<T>(
    call: impl Future<Output = wasmtime::Result<T>>,
    deadline: Duration,
    activity: &Activity,
) -> Result<T, Fault> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Fault::Error(err)),
        Err(_) => Err(Fault::Deadline {
            deadline,
            busy: activity.busy_recently(),
        }),
    }
}

/// Caps on what a report may carry.
mod caps {
    pub const SUMMARY_BYTES: usize = 1024;
    pub const DETAIL_LINES: usize = 100;
    pub const DETAIL_BYTES: usize = 1024;
    pub const METRICS: usize = 64;
    pub const METRIC_NAME_BYTES: usize = 64;
    pub const METRIC_UNIT_BYTES: usize = 16;
    pub const RANGE_BYTES: usize = 64;
    pub const DENIAL_BYTES: usize = 1024;
    pub const LOG_LINE_BYTES: usize = 4096;
    /// Lines of captured stdout (and of stderr) kept as log lines.
    pub const STDIO_LINES: usize = 200;
    pub const INFO_VERSION_BYTES: usize = 64;
    pub const INFO_DESCRIPTION_BYTES: usize = 256;
}

impl CheckOutcome {
    /// An outcome with only a status and a summary, timed from `started`.
    pub(crate) fn fault(status: Status, summary: String, started: Instant) -> CheckOutcome {
        CheckOutcome {
            status,
            summary,
            details: Vec::new(),
            metrics: Vec::new(),
            outputs: BTreeMap::new(),
            denied: Vec::new(),
            logs: Vec::new(),
            duration: started.elapsed(),
        }
    }

    /// A check whose network access was denied did not check what it meant to: it is
    /// UNKNOWN (unless it still came out OK), and the denial leads the summary.
    fn apply_denials(&mut self) {
        if self.denied.is_empty() || self.status == Status::Ok {
            return;
        }
        let plugin_said = std::mem::replace(&mut self.summary, format!("sandbox: {}", self.denied[0]));
        self.details
            .insert(0, format!("plugin reported {}: {plugin_said}", self.status.label()));
        self.status = Status::Unknown;
    }

    /// Makes everything the plugin said safe to keep and show, in this order for each
    /// string: secrets redacted (before any cut, so a cap cannot split a secret and
    /// leave half of it), active characters made visible ([`crate::text::visible`]: no
    /// escape sequence, control character or line break reaches a terminal or a
    /// report), then cut to its cap. Thresholds that are not Nagios ranges are dropped
    /// with a note. This is the one door plugin text passes into results.
    fn seal(&mut self, redactor: &Redactor) {
        // Only what is kept is escaped: the work is bounded by the cap, not by what the
        // plugin sent.
        let clean = |text: &str, max: usize| -> String {
            let (redacted, left_out) = redactor.redact_prefix(text, max);
            let shown = crate::text::visible(&redacted);
            let end = crate::text::floor_char_boundary(&shown, max);
            match left_out + (shown.len() - end) {
                0 => shown.into_owned(),
                cut => format!("{}… [{cut} bytes cut]", &shown[..end]),
            }
        };
        self.summary = clean(&self.summary, caps::SUMMARY_BYTES);
        let extra_lines = self.details.len().saturating_sub(caps::DETAIL_LINES);
        self.details.truncate(caps::DETAIL_LINES);
        for line in &mut self.details {
            *line = clean(line, caps::DETAIL_BYTES);
        }
        if extra_lines > 0 {
            self.details.push(format!(
                "… {extra_lines} more detail lines dropped (cap is {})",
                caps::DETAIL_LINES
            ));
        }
        let extra_metrics = self.metrics.len().saturating_sub(caps::METRICS);
        self.metrics.truncate(caps::METRICS);
        let mut notes = Vec::new();
        // Names label series in Prometheus and perfdata in Nagios: each must exist and be
        // unique within the step, or the exposition is rejected and perfdata is ambiguous.
        let mut names = std::collections::HashSet::new();
        for (i, metric) in self.metrics.iter_mut().enumerate() {
            metric.name = clean(&metric.name, caps::METRIC_NAME_BYTES);
            if metric.name.trim().is_empty() {
                metric.name = format!("metric_{}", i + 1);
            }
            if !names.insert(metric.name.clone()) {
                let mut n = i + 1;
                let renamed = loop {
                    let candidate = format!("{}_{n}", metric.name);
                    if names.insert(candidate.clone()) {
                        break candidate;
                    }
                    n += 1;
                };
                notes.push(format!(
                    "metric `{}` repeated: the repeat is reported as `{renamed}`",
                    metric.name
                ));
                metric.name = renamed;
            }
            metric.unit = clean(&metric.unit, caps::METRIC_UNIT_BYTES);
            for (which, range) in [("warn", &mut metric.warn), ("crit", &mut metric.crit)] {
                if let Some(text) = range.take() {
                    let text = clean(text.trim(), caps::RANGE_BYTES);
                    if crate::text::is_nagios_range(&text) {
                        *range = Some(text);
                    } else {
                        notes.push(format!(
                            "metric `{}`: {which} `{text}` is not a Nagios range (e.g. 10, 10:20, @~:5); dropped",
                            metric.name
                        ));
                    }
                }
            }
            metric.min = metric.min.filter(|v| v.is_finite());
            metric.max = metric.max.filter(|v| v.is_finite());
        }
        self.details.extend(notes);
        if extra_metrics > 0 {
            self.details.push(format!(
                "… {extra_metrics} more metrics dropped (cap is {})",
                caps::METRICS
            ));
        }
        for denial in &mut self.denied {
            *denial = clean(denial, caps::DENIAL_BYTES);
        }
        for line in &mut self.logs {
            line.message = clean(&line.message, caps::LOG_LINE_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_plain() {
        for good in ["redis-ping", "rq_failed_jobs", "a", "v1.2", &"x".repeat(64)] {
            assert!(check_plugin_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "ok'=1",
            "x\u{1b}[2J",
            "x\nOK",
            "a|b",
            "é",
            &"x".repeat(65),
        ] {
            let err = check_plugin_name(bad).unwrap_err();
            assert!(!err.contains('\u{1b}') && !err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn sealing_redacts_before_it_cuts_and_leaves_nothing_active() {
        let secret = "Zq7Kp2WmXv9rTb4N";
        let redactor = Redactor::new([secret.to_string()]);
        let mut outcome = CheckOutcome::fault(Status::Ok, format!("{}{secret}", "x".repeat(1020)), Instant::now());
        outcome.details = vec![format!("a\x1b[2J{}", secret.to_ascii_lowercase())];
        outcome.denied = vec![format!("name lookup of `{secret}.example` denied")];
        outcome.metrics = vec![MetricResult {
            name: "m\nx".into(),
            value: f64::NAN,
            unit: "ms".into(),
            warn: Some("1;2 'a'=3".into()),
            crit: Some(" 10:20 ".into()),
            min: Some(f64::NEG_INFINITY),
            max: Some(5.0),
        }];
        outcome.seal(&redactor);
        let everything = format!("{outcome:?}");
        assert!(
            !everything
                .to_ascii_lowercase()
                .contains(&secret[..8].to_ascii_lowercase()),
            "{everything}"
        );
        assert!(
            outcome.summary.starts_with(&"x".repeat(1020)) && outcome.summary.contains("[RED"),
            "{}",
            outcome.summary
        );
        assert_eq!(outcome.details[0], "a\\x1b[2J[REDACTED]");
        assert_eq!(outcome.denied[0], "name lookup of `[REDACTED].example` denied");
        let metric = &outcome.metrics[0];
        assert_eq!(
            (metric.name.as_str(), metric.warn.as_deref(), metric.crit.as_deref()),
            ("m\\nx", None, Some("10:20"))
        );
        assert_eq!((metric.min, metric.max), (None, Some(5.0)));
        assert!(
            outcome.details[1].contains("warn `1;2 'a'=3` is not a Nagios range"),
            "{:?}",
            outcome.details
        );
    }

    #[test]
    fn sealing_bounds_its_work_by_the_caps_and_names_every_metric_once() {
        let redactor = Redactor::new(["TOPSECRETVALUE0123456789abcdefXY".to_string()]);
        // 4 MiB of NULs, each of which would be 4 bytes as a visible escape.
        let mut outcome = CheckOutcome::fault(Status::Ok, "\0".repeat(4 << 20), Instant::now());
        let metric = |name: &str| MetricResult {
            name: name.into(),
            value: 1.0,
            unit: String::new(),
            warn: None,
            crit: None,
            min: None,
            max: None,
        };
        outcome.metrics = vec![metric("a"), metric("a"), metric(""), metric("a_2"), metric("a")];
        outcome.seal(&redactor);
        assert!(
            outcome.summary.len() < caps::SUMMARY_BYTES + 64,
            "{}",
            outcome.summary.len()
        );
        assert!(outcome.summary.ends_with(" bytes cut]"), "{}", &outcome.summary[1000..]);
        let names: Vec<&str> = outcome.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "a_2", "metric_3", "a_2_4", "a_5"]);
    }

    #[test]
    fn memory_sizes_parse_within_the_pool_slot() {
        let good = [
            ("64MiB", 64 << 20),
            ("64M", 64 << 20),
            ("1GiB", 1 << 30),
            ("1024KiB", 1 << 20),
            ("1048576", 1 << 20),
        ];
        for (text, bytes) in good {
            assert_eq!(parse_memory(text), Ok(bytes), "{text}");
        }
        let bad = [
            ("2GiB", "from 1MiB to 1GiB"),
            ("512KiB", "from 1MiB to 1GiB"),
            ("0", "from 1MiB to 1GiB"),
            ("99999999999999999999GiB", "expected a size"),
            ("lots", "expected a size such as 64MiB"),
            ("64 parsecs", "unknown unit `parsecs`"),
        ];
        for (text, reason) in bad {
            let err = parse_memory(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
