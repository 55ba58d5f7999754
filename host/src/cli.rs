//! The `runbox` command line.

use crate::capabilities::network::Grant;
use crate::capabilities::secrets::SecretGrant;
use crate::capabilities::tls::{PemSource, TlsSettings, Trust};
use crate::capabilities::{DirGrant, Grants, parse_env_grant};
use crate::config;
use crate::error::{Error, invalid};
use crate::logging::{self, LogFormat};
use crate::output;
use crate::plugins::{PluginPath, PluginRef, Source};
use crate::report::{self, Format};
use crate::result::Status;
use crate::result::{Kind, RunResult, StepResult, timestamp};
use crate::runbook::audit::AuditLog;
use crate::runbook::executor::{Progress, Prompt, RunOptions, Stop, StopCause, execute};
use crate::runbook::prepare::{Mode, prepare};
use crate::runtime::cache::CompileCache;
use crate::runtime::{Limits, Plugin, Runtime, RuntimeOptions, parse_memory};
use crate::scaffold::{self, Lang, World};
use crate::trust::{self, TrustedKeys};
use clap::{Args, Parser, Subcommand};
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument;

/// `eprintln!` through [`output::eprint`]: redacted and inert like everything runbox writes.
macro_rules! errln {
    ($($arg:tt)*) => {
        output::eprint(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Run operational checks and runbooks made of sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "runbox", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v: debug, including every capability decision; -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Format of log lines on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Directory to look for plugins in, before RUNBOX_PLUGIN_PATH and the built plugins (repeatable).
    #[arg(long, value_name = "DIR", global = true)]
    plugin_dir: Vec<PathBuf>,
    /// Directory of the compiled-code cache [default: $RUNBOX_CACHE_DIR, $XDG_CACHE_HOME/runbox or ~/.cache/runbox].
    #[arg(long, value_name = "DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Compile plugins every time instead of using the cache (plugins fetched by URL are still kept in it).
    #[arg(long, global = true)]
    no_cache: bool,
    /// Public keys trusted to sign plugins [default: $XDG_CONFIG_HOME/runbox/trusted-keys or ~/.config/runbox/trusted-keys].
    #[arg(long, value_name = "FILE", global = true, env = "RUNBOX_TRUSTED_KEYS")]
    trusted_keys: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a runbook: steps as a DAG, mitigations planned (applied with --apply).
    Run(RunArgs),
    /// Check runbooks without running anything; reports every problem (exit 64 if any).
    Validate {
        /// Runbook files.
        #[arg(required = true)]
        runbooks: Vec<PathBuf>,
        /// Input value NAME=VALUE (repeatable), as `run` would get it.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Report every plugin that is not signed by a trusted key (see --trusted-keys).
        #[arg(long)]
        require_signed: bool,
    },
    /// Run one check plugin and report its status (exit code 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN).
    Check(CheckArgs),
    /// List, inspect, scaffold and build plugins (`runbox plugin …` works too).
    #[command(subcommand, visible_alias = "plugin")]
    Plugins(PluginsCommand),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Plugin name (looked up in the plugin path) or path to a .wasm file.
    plugin: String,
    /// Config value KEY=VALUE (repeatable); typed by the plugin's config schema.
    #[arg(long = "with", value_name = "KEY=VALUE")]
    with: Vec<String>,
    /// Whole config as a JSON object; --with values override its keys.
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// Network grant scheme://host[:port] (repeatable), e.g. redis://127.0.0.1:6379.
    #[arg(long = "allow", value_name = "GRANT")]
    allow: Vec<String>,
    /// Secret NAME=env:VAR or NAME=file:PATH (repeatable); redacted from all output.
    #[arg(long = "secret", value_name = "NAME=SOURCE")]
    secret: Vec<String>,
    /// Environment variable the plugin may see: NAME (value from runbox's environment) or NAME=VALUE.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Host directory the plugin may read: DIR or DIR:GUEST_PATH (read-only).
    #[arg(long = "dir", value_name = "DIR[:GUEST]")]
    dir: Vec<String>,
    /// Let the plugin reach cloud-metadata addresses (169.254.169.254 and friends) if granted.
    #[arg(long)]
    allow_metadata: bool,
    /// CA bundle (PEM) to trust for TLS besides the system's roots (repeatable).
    #[arg(long = "ca", value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// Client certificate chain (PEM) for servers that require one: FILE or secret:NAME.
    #[arg(long, value_name = "FILE|secret:NAME", requires = "client_key")]
    client_cert: Option<String>,
    /// The client certificate's private key (PEM): FILE or secret:NAME (a --secret).
    #[arg(long, value_name = "FILE|secret:NAME", requires = "client_cert")]
    client_key: Option<String>,
    /// Do not verify TLS server certificates (connections stay encrypted; the result says
    /// the server was not authenticated).
    #[arg(long)]
    tls_no_verify: bool,
    /// Deadline for the whole check, e.g. 10s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Memory cap of the plugin (its `info()` too), e.g. 256MiB; at most 1GiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_memory)]
    memory: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Refuse the plugin unless it is signed by a trusted key (see --trusted-keys).
    #[arg(long)]
    require_signed: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The runbook file.
    runbook: PathBuf,
    /// Input value NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Apply mitigations (without it they only plan).
    #[arg(long)]
    apply: bool,
    /// Approve a step that requires approval (repeatable; needs --apply).
    #[arg(long = "approve", value_name = "STEP")]
    approve: Vec<String>,
    /// Most steps running at once.
    #[arg(long, default_value = "4", value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallel: u16,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Audit log of applies [default: $RUNBOX_AUDIT_LOG or ~/.local/state/runbox/audit.jsonl].
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Let steps reach cloud-metadata addresses if their grants cover them.
    #[arg(long)]
    allow_metadata: bool,
    /// Run nothing unless every plugin is signed by a trusted key (see --trusted-keys).
    #[arg(long)]
    require_signed: bool,
    /// Deadline of the whole run (e.g. 5m); overrides the runbook's `timeout`. Steps
    /// still running then are stopped and reported; the report is still written.
    #[arg(long, value_name = "DURATION", value_parser = parse_run_timeout)]
    timeout: Option<Duration>,
    /// Memory cap of every step's plugin (its `info()` too), e.g. 256MiB; overrides the
    /// steps' `memory:` [default: the step's, or 64MiB; at most 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    memory: Option<usize>,
}

fn parse_run_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(timeout) if !timeout.is_zero() => Ok(timeout),
        Ok(_) => Err("the deadline must be more than zero".into()),
        Err(err) => Err(format!("{err} (e.g. 90s, 5m)")),
    }
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// Scaffold a plugin that builds and runs as it is.
    New {
        /// Plugin name (lower-case, digits, `-`).
        name: String,
        /// Language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// World: a read-only check or a mitigation.
        #[arg(long, value_enum, default_value = "check")]
        kind: World,
        /// Directory to create [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Path of runbox's Rust SDK (plugins/sdk) [default: the checkout runbox was built from].
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin made by `plugin new`; prints the .wasm it wrote.
    Build {
        /// The plugin's directory.
        path: PathBuf,
    },
    /// List the plugins found in the plugin path.
    List {
        /// Output format (human or json).
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Show a plugin's name, version, world, imports and config schema.
    Inspect {
        /// Plugin name, path to a .wasm file, or https://…@sha256:HEX URL.
        plugin: String,
        /// Output format (human or json).
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Memory cap of the plugin's `info()`, e.g. 256MiB; at most 1GiB.
        #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_memory)]
        memory: usize,
    },
    /// Show a plugin's sha256 and who signed it; exit 0 only if a trusted key did (1 otherwise).
    Verify {
        /// Plugin name, path to a .wasm file, or https://…@sha256:HEX URL.
        plugin: String,
    },
    /// Create an ed25519 signing key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Name shown for the key [default: the file name of PREFIX].
        #[arg(long)]
        name: Option<String>,
    },
    /// Sign a plugin file: adds a line to FILE.sig (publish it beside the plugin).
    Sign {
        /// Plugin name or path to a .wasm file.
        plugin: String,
        /// The secret key file (PREFIX.key from `runbox plugins keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

/// Parses the arguments, runs the command, prints its output and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 64 } else { 0 });
        }
    };
    logging::init(cli.verbose, cli.log_format);
    // One check runs one plugin: a current-thread runtime saves a wake-up of another
    // thread on every I/O event (~40 µs of a redis-ping check; docs/performance.md).
    // Runbooks run steps in parallel on a multi-threaded one.
    let mut builder = match cli.command {
        Command::Check(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            return fail(&Error::Internal(format!("cannot start the async runtime: {err}")));
        }
    };
    let run_id = logging::new_run_id();
    let span = tracing::info_span!("run", run_id = %run_id);
    let outcome = runtime.block_on(run(cli, run_id).instrument(span));
    // Do not wait for blocking tasks: an approval prompt abandoned by Ctrl-C is still
    // reading stdin, and the report has already been written.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => fail(&err),
    }
}

fn fail(err: &Error) -> ExitCode {
    errln!("error: {err}");
    ExitCode::from(err.exit_code())
}

async fn run(cli: Cli, run_id: String) -> Result<u8, Error> {
    let mut plugin_path = PluginPath::new(&cli.plugin_dir);
    // Downloads are kept even with --no-cache: that flag is about compiled code, and a
    // pinned download is only ever used after its digest is checked again.
    if let Some(dir) = cli.cache_dir.clone().or_else(CompileCache::default_dir) {
        plugin_path = plugin_path.with_downloads(&dir);
    }
    let require_signed = match &cli.command {
        Command::Run(args) => args.require_signed,
        Command::Check(args) => args.require_signed,
        Command::Validate { require_signed, .. } => *require_signed,
        Command::Plugins(_) => false,
    };
    if require_signed {
        plugin_path = plugin_path.require_signed(trusted_keys(cli.trusted_keys.as_deref(), true)?);
    }
    let cache_dir = if cli.no_cache {
        None
    } else {
        cli.cache_dir.clone().or_else(CompileCache::default_dir)
    };
    let runtime = Runtime::new(RuntimeOptions { cache_dir })
        .map_err(|err| Error::Internal(format!("cannot start the WebAssembly engine: {err:#}")))?;
    let runtime = std::sync::Arc::new(runtime);
    match cli.command {
        Command::Run(args) => run_runbook(runtime, &plugin_path, args, run_id, cli.verbose > 0).await,
        Command::Validate { runbooks, set, .. } => validate(&runtime, &plugin_path, &runbooks, &set).await,
        Command::Check(args) => check(&runtime, &plugin_path, args, cli.verbose > 0).await,
        Command::Plugins(PluginsCommand::New {
            name,
            lang,
            kind,
            dir,
            sdk,
        }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold::new(&name, lang, kind, &dir, sdk.as_deref()).map_err(invalid)?;
            print(&format!(
                "created {} ({lang:?} {kind:?}); build it with `runbox plugin build {}`\n",
                dir.display(),
                dir.display()
            ))?;
            Ok(0)
        }
        Command::Plugins(PluginsCommand::Build { path }) => {
            let out = scaffold::build(&path).map_err(invalid)?;
            print(&format!("{}\n", out.display()))?;
            Ok(0)
        }
        Command::Plugins(PluginsCommand::List { format }) => list(&runtime, &plugin_path, format).await,
        Command::Plugins(PluginsCommand::Inspect { plugin, format, memory }) => {
            inspect(&runtime, &plugin_path, &plugin, format, memory).await
        }
        Command::Plugins(PluginsCommand::Verify { plugin }) => {
            verify(&plugin_path, &plugin, cli.trusted_keys.as_deref()).await
        }
        Command::Plugins(PluginsCommand::Keygen { out, name }) => keygen(&out, name.as_deref()),
        Command::Plugins(PluginsCommand::Sign { plugin, key }) => sign(&plugin_path, &plugin, &key).await,
    }
}

/// The trusted keys: from `explicit` (--trusted-keys / $RUNBOX_TRUSTED_KEYS) or the
/// default file. With `required` (--require-signed), a missing or empty file is an error.
fn trusted_keys(explicit: Option<&std::path::Path>, required: bool) -> Result<TrustedKeys, Error> {
    let Some(path) = explicit.map(PathBuf::from).or_else(TrustedKeys::default_path) else {
        return if required {
            Err(invalid(
                "--require-signed needs trusted keys, and there is no home directory to find ~/.config/runbox/trusted-keys in: pass --trusted-keys FILE",
            ))
        } else {
            Ok(TrustedKeys::default())
        };
    };
    let keys = TrustedKeys::load(&path, required || explicit.is_some()).map_err(|err| {
        if required {
            invalid(format!(
                "--require-signed: {err}. Create it with one `ed25519 <base64 public key> <name>` line per key you trust (`runbox plugins keygen` writes one to PREFIX.pub), or pass --trusted-keys FILE"
            ))
        } else {
            invalid(err)
        }
    })?;
    if required && keys.keys.is_empty() {
        return Err(invalid(format!(
            "--require-signed: {} lists no keys, so no plugin could run. Add one `ed25519 <base64 public key> <name>` line per key you trust (`runbox plugins keygen` writes one to PREFIX.pub)",
            path.display()
        )));
    }
    Ok(keys)
}

async fn verify(plugin_path: &PluginPath, spec: &str, trusted: Option<&std::path::Path>) -> Result<u8, Error> {
    let keys = trusted_keys(trusted, false)?;
    let reference = PluginRef::parse(spec, None).map_err(|err| invalid(format!("`{spec}`: {err}")))?;
    let path = plugin_path.locate(&reference).await.map_err(invalid)?;
    let bytes = std::fs::read(&path).map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?;
    let digest = crate::runtime::cache::digest(&bytes);
    let out = format!("file:         {}\nsha256:       {digest}\n", path.display());
    if let Some(pinned) = &reference.pinned
        && *pinned != digest
    {
        return Err(invalid(format!(
            "{} has sha256 {digest}, but `{spec}` pins {pinned}",
            path.display()
        )));
    }
    let sig_path = trust::signature_path(&path);
    if let Source::Url(url) = &reference.source
        && !sig_path.exists()
        && let Some(downloads) = plugin_path.downloads()
    {
        let _ = downloads.fetch_signature(url, &digest).await;
    }
    let report = trust::verify_report(&path, &digest, &keys).map_err(invalid)?;
    print(&format!("{out}{}", report.text))?;
    Ok(if report.signer.is_some() { 0 } else { 1 })
}

fn keygen(out: &std::path::Path, name: Option<&str>) -> Result<u8, Error> {
    let default_name = out.file_name().map(|name| name.to_string_lossy().into_owned());
    let name = name.map(String::from).or(default_name).ok_or_else(|| {
        invalid(format!(
            "--out {}: expected a path prefix such as keys/release",
            out.display()
        ))
    })?;
    let (secret, public, key) = trust::keygen(out, &name).map_err(invalid)?;
    let trusted_keys = TrustedKeys::default_path()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "TRUSTED_KEYS_FILE".into());
    print(&format!(
        "wrote {} (secret, mode 0600: keep it private) and {}\npublic key: {} {name}\ntrust it:   cat {} >> {trusted_keys}\nsign with:  runbox plugins sign PLUGIN.wasm --key {}\n",
        secret.display(),
        public.display(),
        trust::key_text(&key),
        public.display(),
        secret.display(),
    ))?;
    Ok(0)
}

async fn sign(plugin_path: &PluginPath, spec: &str, key: &std::path::Path) -> Result<u8, Error> {
    let reference = PluginRef::parse(spec, None).map_err(|err| invalid(format!("`{spec}`: {err}")))?;
    if let Source::Url(_) = reference.source {
        return Err(invalid(
            "sign the file you publish, then publish FILE.sig beside it: `runbox plugins sign FILE --key KEY` takes a local file",
        ));
    }
    let secret = trust::read_secret_key(key).map_err(invalid)?;
    let path = plugin_path.locate(&reference).await.map_err(invalid)?;
    let bytes = std::fs::read(&path).map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?;
    let digest = crate::runtime::cache::digest(&bytes);
    let line = trust::sign(&secret.key, &digest);
    let sig_path = trust::signature_path(&path);
    trust::write_signature(&sig_path, &line).map_err(invalid)?;
    print(&format!(
        "signed {} (sha256 {digest}) with key `{}` ({}): wrote {}
",
        path.display(),
        secret.name,
        trust::key_text(&line.key),
        sig_path.display()
    ))?;
    Ok(0)
}

fn parse_sets(sets: &[String]) -> Result<BTreeMap<String, String>, Error> {
    sets.iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| invalid(format!("--set `{pair}`: expected NAME=VALUE")))
        })
        .collect()
}

async fn validate(
    runtime: &Runtime,
    plugin_path: &PluginPath,
    runbooks: &[PathBuf],
    sets: &[String],
) -> Result<u8, Error> {
    let sets = parse_sets(sets)?;
    let mut problems = 0;
    let mut report = String::new();
    for file in runbooks {
        match prepare(runtime, plugin_path, file, &sets, Mode::Validate, None).await {
            Ok(runbook) => {
                report.push_str(&format!(
                    "ok: {} ({}, {} step{})\n",
                    file.display(),
                    runbook.manifest.name,
                    runbook.steps.len(),
                    if runbook.steps.len() == 1 { "" } else { "s" }
                ));
                // What a step may do beyond reading before anyone approves anything.
                for step in &runbook.steps {
                    for note in step.grants.read_only_notes(step.plugin.kind == Kind::Mitigation) {
                        report.push_str(&format!("  step `{}`: {note}\n", step.id));
                    }
                    if !step.grants.tls.verifies() {
                        let note = crate::capabilities::tls::VERIFY_OFF_NOTE;
                        report.push_str(&format!("  warning: step `{}`: {note}\n", step.id));
                    }
                }
            }
            Err(found) => {
                problems += found.len();
                for problem in found {
                    errln!("error: {problem}");
                }
            }
        }
    }
    print(&report)?;
    if problems > 0 {
        errln!("{problems} problem{} found", if problems == 1 { "" } else { "s" });
        return Ok(64);
    }
    Ok(0)
}

async fn run_runbook(
    runtime: Arc<Runtime>,
    plugin_path: &PluginPath,
    args: RunArgs,
    run_id: String,
    verbose: bool,
) -> Result<u8, Error> {
    let sets = parse_sets(&args.set)?;
    let runbook = match prepare(&runtime, plugin_path, &args.runbook, &sets, Mode::Run, args.memory).await {
        Ok(runbook) => Arc::new(runbook),
        Err(problems) => {
            for problem in &problems {
                errln!("error: {problem}");
            }
            return Err(invalid(format!(
                "{} problem{} in the runbook; nothing was run",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )));
        }
    };
    for id in &args.approve {
        if !runbook.steps.iter().any(|step| &step.id == id) {
            return Err(invalid(format!("--approve {id}: the runbook has no step `{id}`")));
        }
    }
    if !args.approve.is_empty() && !args.apply {
        return Err(invalid(
            "--approve needs --apply (approving is only meaningful when applying)",
        ));
    }
    let audit = if args.apply {
        let path = args.audit_log.clone().unwrap_or_else(AuditLog::default_path);
        Some(Arc::new(AuditLog::open(&path).map_err(|err| {
            invalid(format!("cannot open the audit log {}: {err}", path.display()))
        })?))
    } else {
        None
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    // Live progress and the header go to stderr, for a person watching it.
    let live = args.format == Format::Human && std::io::stderr().is_terminal();
    if live {
        output::eprint(&runbook_header(&runbook.manifest));
    }
    // While a plan waits for approval, progress lines of parallel steps are held back
    // and shown after the answer, so the approver reads the plan and only the plan.
    let terminal = Arc::new(HeldLines::default());
    let progress_terminal = terminal.clone();
    let progress: Arc<dyn Fn(Progress<'_>) + Send + Sync> = if live {
        Arc::new(move |event: Progress<'_>| {
            let line = match event {
                Progress::Started(id) => format!("  ▶ {id}\n"),
                Progress::Finished(step) => {
                    let (mark, status) = match (&step.skipped, step.status) {
                        (Some(_), _) => ("·", "SKIPPED"),
                        (None, Status::Ok) => ("✓", "OK"),
                        (None, status) => ("✗", status.label()),
                    };
                    format!("  {mark} {} {status}: {}\n", step.id, step.summary)
                }
            };
            progress_terminal.show(line);
        })
    } else {
        Arc::new(|_: Progress<'_>| {})
    };
    let prompt: Option<Prompt> = if interactive {
        let lock = Arc::new(std::sync::Mutex::new(()));
        Some(Arc::new(move |id: &str, plan: &str| {
            let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
            terminal.hold();
            errln!("\nStep `{id}` requires approval:\n{plan}");
            output::eprint("Apply it? [y/N] ");
            let mut answer = String::new();
            let yes =
                std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes" | "YES");
            terminal.release();
            yes
        }))
    } else {
        None
    };
    let options = RunOptions {
        apply: args.apply,
        approve: args.approve.iter().cloned().collect(),
        parallel: usize::from(args.parallel),
        prompt,
        audit,
        run_id,
        allow_metadata: args.allow_metadata,
        progress,
        deadline: args.timeout.or(runbook.timeout),
        stop: Stop::new(),
    };
    // Ctrl-C (or SIGTERM) stops the run: no new steps, checks cancelled, applies allowed
    // to finish; a second one abandons the applies too. Either way the report and the
    // audit log are written before runbox exits.
    let signals = tokio::spawn(watch_signals(options.stop.clone()));
    let result = execute(runtime, runbook, options).await;
    signals.abort();
    let rendered = report::render(&result, args.format, verbose);
    match &args.output {
        Some(path) => output::write_file(path, &rendered)
            .map_err(|err| Error::Internal(format!("cannot write {}: {err}", path.display())))?,
        None => print(&rendered)?,
    }
    Ok(result.status.exit_code())
}

/// Progress lines for stderr, held back while an approval prompt is on the terminal.
#[derive(Default)]
struct HeldLines(std::sync::Mutex<Option<Vec<String>>>);

impl HeldLines {
    fn show(&self, line: String) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_mut() {
            Some(lines) => lines.push(line),
            None => output::eprint(&line),
        }
    }

    fn hold(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_default();
    }

    fn release(&self) {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        for line in lines.into_iter().flatten() {
            output::eprint(&line);
        }
    }
}

async fn watch_signals(stop: Stop) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will end runbox without a report");
        return;
    };
    let next = async |interrupt: &mut tokio::signal::unix::Signal, terminate: &mut tokio::signal::unix::Signal| {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    next(&mut interrupt, &mut terminate).await;
    errln!(
        "\nrunbox: stopping — no new steps; running checks are cancelled, running applies may finish (Ctrl-C again to abandon them)"
    );
    stop.stop(StopCause::Interrupted);
    next(&mut interrupt, &mut terminate).await;
    errln!("\nrunbox: abandoning running applies (the audit log records it)");
    stop.abandon(StopCause::Interrupted);
}

/// What the person running a runbook should see before it starts.
fn runbook_header(manifest: &crate::runbook::manifest::Manifest) -> String {
    let mut out = format!("▶ runbook {}", manifest.name);
    if let Some(severity) = manifest.severity {
        out.push_str(&format!(" ({})", severity.label()));
    }
    out.push('\n');
    if let Some(description) = &manifest.description {
        out.push_str(&format!("  {}\n", description.trim()));
    }
    for symptom in &manifest.symptoms {
        out.push_str(&format!("  symptom: {symptom}\n"));
    }
    if let Some(escalation) = &manifest.escalation {
        out.push_str(&format!("  escalation: {}\n", escalation.trim()));
    }
    out
}

async fn load(runtime: &Runtime, plugin_path: &PluginPath, spec: &str, memory: usize) -> Result<Arc<Plugin>, Error> {
    let reference = PluginRef::parse(spec, None).map_err(|err| invalid(format!("`{spec}`: {err}")))?;
    plugin_path
        .load(runtime, &reference, memory, &mut Default::default())
        .await
        .map_err(invalid)
}

async fn check(runtime: &Runtime, plugin_path: &PluginPath, args: CheckArgs, verbose: bool) -> Result<u8, Error> {
    let mut grants = Grants {
        network: args
            .allow
            .iter()
            .map(|text| text.parse::<Grant>().map_err(|err| invalid(err.to_string())))
            .collect::<Result<_, _>>()?,
        secrets: args
            .secret
            .iter()
            .map(|text| SecretGrant::parse(text).map_err(invalid))
            .collect::<Result<_, _>>()?,
        env: args
            .env
            .iter()
            .map(|text| parse_env_grant(text).map_err(invalid))
            .collect::<Result<_, _>>()?,
        dirs: args
            .dir
            .iter()
            .map(|text| DirGrant::parse(text).map_err(invalid))
            .collect::<Result<_, _>>()?,
        allow_metadata: args.allow_metadata,
        tls: Trust::system(),
        header_secrets: Vec::new(),
    };
    for grant in &grants.secrets {
        grant.resolve().map_err(invalid)?;
    }
    let tls = TlsSettings {
        ca: args.ca.clone(),
        client_cert: args.client_cert.as_deref().map(PemSource::parse),
        client_key: args.client_key.as_deref().map(PemSource::parse),
        verify: !args.tls_no_verify,
    };
    if !tls.is_default() {
        grants.tls = Arc::new(Trust::build(&tls, &grants.secrets).map_err(invalid)?);
    }
    let plugin = load(runtime, plugin_path, &args.plugin, args.memory).await?;
    let name = plugin.info.name.clone();
    if plugin.kind != Kind::Check {
        return Err(invalid(format!(
            "plugin `{name}` is a mitigation; mitigations run as runbook steps (plan, then apply), not with `runbox check`"
        )));
    }
    let config = config::build(&plugin.info.config_schema, args.config.as_deref(), &args.with).map_err(invalid)?;
    let problems = plugin.config_violations(&config);
    if !problems.is_empty() {
        return Err(invalid(format!(
            "invalid config for plugin `{name}`:\n  {}\n(see `runbox plugins inspect {}` for the config schema)",
            problems.join("\n  "),
            args.plugin
        )));
    }
    // `${{ secrets.NAME }}` in a config string: NAME is a header secret, as in a runbook's
    // `with:` (the host fills it into the plugin's HTTP request headers).
    let mut header_secrets = BTreeSet::new();
    crate::capabilities::header_secrets::names_in(&config, &mut header_secrets);
    if let Some(unknown) = header_secrets
        .iter()
        .find(|used| !grants.secrets.iter().any(|grant| grant.name == **used))
    {
        return Err(invalid(format!(
            "the config uses `${{{{ secrets.{unknown} }}}}`, but no --secret grants `{unknown}`: add `--secret {unknown}=env:VAR` (or file:PATH), whose value the host then puts in the plugin's HTTP request headers"
        )));
    }
    grants.header_secrets = header_secrets.into_iter().collect();
    tracing::debug!(plugin = %name, compiled = plugin.compiled, load_ms = plugin.load_time.as_secs_f64() * 1e3, "plugin loaded");

    let limits = Limits {
        deadline: args.timeout,
        memory_bytes: args.memory,
        ..Limits::default()
    };
    let started_at = SystemTime::now();
    let started = Instant::now();
    let outcome = runtime.run_check(&plugin, &config, &grants, &limits).await;
    let step = StepResult {
        id: name.clone(),
        plugin: name,
        kind: plugin.kind,
        status: outcome.status,
        summary: outcome.summary,
        details: outcome.details,
        metrics: outcome.metrics,
        outputs: outcome.outputs,
        item: None,
        attempts: 1,
        duration_ms: outcome.duration.as_secs_f64() * 1e3,
        skipped: None,
        started_at: timestamp(started_at),
        ended_at: timestamp(SystemTime::now()),
        denied: outcome.denied,
        logs: outcome.logs,
        plan: None,
        applied: None,
    };
    let run = RunResult {
        runbook: None,
        severity: None,
        escalation: None,
        run_id: None,
        started_at: Some(timestamp(started_at)),
        ended_at: Some(timestamp(SystemTime::now())),
        status: step.status,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        stopped: None,
        steps: vec![step],
    };
    print(&report::render(&run, args.format, verbose))?;
    Ok(run.status.exit_code())
}

async fn list(runtime: &Runtime, plugin_path: &PluginPath, format: Format) -> Result<u8, Error> {
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for path in plugin_path.all() {
        match runtime.load(&path).await {
            Ok(plugin) => rows.push(plugin),
            Err(err) => broken.push(err.to_string()),
        }
    }
    let out = match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|p| serde_json::json!({"name": p.info.name, "version": p.info.version, "kind": p.kind, "description": p.info.description, "path": p.path}))
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({"plugins": list, "errors": broken})).expect("serializes")
                + "\n"
        }
        _ => {
            let mut out = String::new();
            if rows.is_empty() {
                out.push_str(&format!(
                    "no plugins found in: {}\n",
                    plugin_path
                        .dirs()
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for p in &rows {
                out.push_str(&format!(
                    "{:<22} {:<8} {:<10} {}\n",
                    p.info.name,
                    p.info.version,
                    format!("{:?}", p.kind).to_lowercase(),
                    p.info.description
                ));
            }
            for err in &broken {
                out.push_str(&format!("error: {err}\n"));
            }
            out
        }
    };
    print(&out)?;
    Ok(if broken.is_empty() { 0 } else { 64 })
}

async fn inspect(
    runtime: &Runtime,
    plugin_path: &PluginPath,
    spec: &str,
    format: Format,
    memory: usize,
) -> Result<u8, Error> {
    let plugin = load(runtime, plugin_path, spec, memory).await?;
    let out = match format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "name": plugin.info.name,
                "version": plugin.info.version,
                "description": plugin.info.description,
                "kind": plugin.kind,
                "world": plugin.world(),
                "path": plugin.path,
                "sha256": plugin.digest,
                "imports": plugin.imports,
            "exports": plugin.exports,
                "config_schema": plugin.info.config_schema,
            }))
            .expect("serializes")
                + "\n"
        }
        _ => format!(
            "name:         {}\nversion:      {}\ndescription:  {}\nworld:        {}\nfile:         {}\nsha256:       {}\nimports:\n{}config schema:\n{}\n",
            plugin.info.name,
            plugin.info.version,
            plugin.info.description,
            plugin.world(),
            plugin.path.display(),
            plugin.digest,
            plugin.imports.iter().map(|i| format!("  {i}\n")).collect::<String>(),
            serde_json::to_string_pretty(&plugin.info.config_schema).expect("serializes"),
        ),
    };
    print(&out)?;
    Ok(0)
}

fn print(text: &str) -> Result<(), Error> {
    output::print(text).map_err(|err| Error::Internal(format!("cannot write output: {err}")))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|err| format!("`{text}`: {err} (examples: 10s, 500ms, 1m)"))?;
    if duration.is_zero() {
        return Err("the deadline must be more than zero".into());
    }
    Ok(duration)
}
