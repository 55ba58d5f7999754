//! The `runbox` command line.

use crate::commands;
use crate::error::{Error, invalid};
use crate::logging::{self, LogFormat};
use crate::output::errln;
use crate::plugins::PluginPath;
use crate::report::Format;
use crate::runtime::cache::CompileCache;
use crate::runtime::{CacheReads, Pool, Runtime, RuntimeOptions, parse_memory};
use crate::scaffold::{self, Lang, World};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing::Instrument;

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
    /// Serve runbooks to Prometheus, blackbox_exporter-style: GET /probe?runbook=NAME&INPUT=VALUE
    /// runs its checks and plans (never applies) and answers the text exposition.
    Serve(ServeArgs),
    /// Print a shell completion script (e.g. `runbox completions bash > /etc/bash_completion.d/runbox`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page runbox(1) in roff; with --dir, write runbox.1 and one page per command there.
    Man {
        /// Directory to write runbox.1, runbox-run.1, … into.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Directory of runbooks (*.yaml, *.yml); a probe names one by its `name:` or file stem.
    #[arg(long, value_name = "DIR")]
    pub(crate) runbooks: PathBuf,
    /// Address to listen on. Anything but loopback needs --bearer-token-file.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub(crate) listen: String,
    /// Hosts a query's inputs may point grants at: CIDR, address, HOST or *.suffix
    /// (repeatable or comma-separated). Without it, a query cannot set an input that
    /// flows into a grant.
    #[arg(long = "allow-targets", value_name = "CIDR|HOST|*.suffix", value_delimiter = ',')]
    pub(crate) allow_targets: Vec<String>,
    /// File holding the bearer token every request must carry (`Authorization: Bearer
    /// TOKEN`; /-/healthy excepted). Required to listen on a non-loopback address.
    #[arg(long, value_name = "FILE")]
    pub(crate) bearer_token_file: Option<PathBuf>,
    /// Most probes running at once; one more is answered 503 [default: 2 × CPU cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) max_concurrent: Option<u32>,
    /// Deadline of a probe whose request has no X-Prometheus-Scrape-Timeout-Seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Taken off X-Prometheus-Scrape-Timeout-Seconds, so the answer arrives before
    /// Prometheus gives up (blackbox_exporter's --timeout-offset).
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) timeout_offset: Duration,
    /// Most steps of one probe running at once.
    #[arg(long, default_value = "4", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) parallel: u16,
    /// On SIGTERM or SIGINT, how long running probes may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) shutdown_grace: Duration,
    /// Load no plugin that is not signed by a trusted key (see --trusted-keys).
    #[arg(long)]
    pub(crate) require_signed: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Plugin name (looked up in the plugin path) or path to a .wasm file.
    pub(crate) plugin: String,
    /// Config value KEY=VALUE (repeatable); typed by the plugin's config schema.
    #[arg(long = "with", value_name = "KEY=VALUE")]
    pub(crate) with: Vec<String>,
    /// Whole config as a JSON object; --with values override its keys.
    #[arg(long, value_name = "JSON")]
    pub(crate) config: Option<String>,
    /// Network grant scheme://host[:port] (repeatable), e.g. redis://127.0.0.1:6379.
    #[arg(long = "allow", value_name = "GRANT")]
    pub(crate) allow: Vec<String>,
    /// Secret NAME=env:VAR or NAME=file:PATH (repeatable); redacted from all output.
    #[arg(long = "secret", value_name = "NAME=SOURCE")]
    pub(crate) secret: Vec<String>,
    /// Environment variable the plugin may see: NAME (value from runbox's environment) or NAME=VALUE.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub(crate) env: Vec<String>,
    /// Host directory the plugin may read: DIR or DIR:GUEST_PATH (read-only).
    #[arg(long = "dir", value_name = "DIR[:GUEST]")]
    pub(crate) dir: Vec<String>,
    /// Let the plugin reach cloud-metadata addresses (169.254.169.254 and friends) if granted.
    #[arg(long)]
    pub(crate) allow_metadata: bool,
    /// CA bundle (PEM) to trust for TLS besides the system's roots (repeatable).
    #[arg(long = "ca", value_name = "FILE")]
    pub(crate) ca: Vec<PathBuf>,
    /// Client certificate chain (PEM) for servers that require one: FILE or secret:NAME.
    #[arg(long, value_name = "FILE|secret:NAME", requires = "client_key")]
    pub(crate) client_cert: Option<String>,
    /// The client certificate's private key (PEM): FILE or secret:NAME (a --secret).
    #[arg(long, value_name = "FILE|secret:NAME", requires = "client_cert")]
    pub(crate) client_key: Option<String>,
    /// Do not verify TLS server certificates (connections stay encrypted; the result says
    /// the server was not authenticated).
    #[arg(long)]
    pub(crate) tls_no_verify: bool,
    /// Deadline for the whole check, e.g. 10s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Memory cap of the plugin (its `info()` too), e.g. 256MiB; at most 1GiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_memory)]
    pub(crate) memory: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
    /// Refuse the plugin unless it is signed by a trusted key (see --trusted-keys).
    #[arg(long)]
    pub(crate) require_signed: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The runbook file.
    pub(crate) runbook: PathBuf,
    /// Input value NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub(crate) set: Vec<String>,
    /// Apply mitigations (without it they only plan).
    #[arg(long)]
    pub(crate) apply: bool,
    /// Approve a step that requires approval (repeatable; needs --apply).
    #[arg(long = "approve", value_name = "STEP")]
    pub(crate) approve: Vec<String>,
    /// Most steps running at once.
    #[arg(long, default_value = "4", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) parallel: u16,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Audit log of applies [default: $RUNBOX_AUDIT_LOG or ~/.local/state/runbox/audit.jsonl].
    #[arg(long, value_name = "FILE")]
    pub(crate) audit_log: Option<PathBuf>,
    /// Let steps reach cloud-metadata addresses if their grants cover them.
    #[arg(long)]
    pub(crate) allow_metadata: bool,
    /// Run nothing unless every plugin is signed by a trusted key (see --trusted-keys).
    #[arg(long)]
    pub(crate) require_signed: bool,
    /// Deadline of the whole run (e.g. 5m); overrides the runbook's `timeout`. Steps
    /// still running then are stopped and reported; the report is still written.
    #[arg(long, value_name = "DURATION", value_parser = parse_run_timeout)]
    pub(crate) timeout: Option<Duration>,
    /// Memory cap of every step's plugin (its `info()` too), e.g. 256MiB; overrides the
    /// steps' `memory:` [default: the step's, or 64MiB; at most 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub(crate) memory: Option<usize>,
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
    /// Compile plugins into the compile cache now (every plugin in the plugin path, or the
    /// named ones), e.g. while building an image, so that no run compiles.
    Compile {
        /// Plugin names, paths or pinned URLs [default: every plugin in the plugin path].
        plugins: Vec<String>,
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
        // `serve` runs its own current-thread runtime per worker; this one only watches
        // signals and reloads.
        Command::Check(_) | Command::Serve(_) => tokio::runtime::Builder::new_current_thread(),
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
        Command::Serve(args) => args.require_signed,
        Command::Plugins(_) => false,
        // Generated from the argument definitions: no engine, no plugins.
        Command::Completions { shell } => return commands::generate::completions(*shell),
        Command::Man { dir } => return commands::generate::man(dir.as_deref()),
    };
    if require_signed {
        plugin_path = plugin_path.require_signed(commands::plugins::trusted_keys(cli.trusted_keys.as_deref(), true)?);
    }
    let cache_dir = if cli.no_cache {
        None
    } else {
        cli.cache_dir.clone().or_else(CompileCache::default_dir)
    };
    // One check is one invocation at a time in a process that lives milliseconds: a
    // small pool is quicker to set up, and mapping the compiled plugin saves copying it.
    let (pool, cache_reads) = match cli.command {
        Command::Check(_) => (Pool::Single, CacheReads::Map),
        _ => (Pool::Shared, CacheReads::Copy),
    };
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir,
        pool,
        cache_reads,
    })
    .map_err(|err| Error::Internal(format!("cannot start the WebAssembly engine: {err:#}")))?;
    let runtime = std::sync::Arc::new(runtime);
    match cli.command {
        Command::Run(args) => commands::run::run_runbook(runtime, &plugin_path, args, run_id, cli.verbose > 0).await,
        Command::Validate { runbooks, set, .. } => {
            commands::validate::validate(&runtime, &plugin_path, &runbooks, &set).await
        }
        Command::Check(args) => {
            let code = commands::check::check(&runtime, &plugin_path, args, cli.verbose > 0).await?;
            // The report is written and flushed, and a check leaves nothing pending (its
            // cache entries are written before it runs; it exports no trace): exit now
            // rather than tear down the engine, its pool and the async runtime, ~0.15 ms
            // of a process that Nagios starts for every check.
            std::process::exit(code.into())
        }
        Command::Serve(args) => commands::serve::serve(runtime, plugin_path, args).await,
        Command::Plugins(PluginsCommand::New {
            name,
            lang,
            kind,
            dir,
            sdk,
        }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold::new(&name, lang, kind, &dir, sdk.as_deref()).map_err(invalid)?;
            commands::print(&format!(
                "created {} ({lang:?} {kind:?}); build it with `runbox plugin build {}`\n",
                dir.display(),
                dir.display()
            ))?;
            Ok(0)
        }
        Command::Plugins(PluginsCommand::Build { path }) => {
            let out = scaffold::build(&path).map_err(invalid)?;
            commands::print(&format!("{}\n", out.display()))?;
            Ok(0)
        }
        Command::Plugins(PluginsCommand::List { format }) => {
            commands::plugins::list(&runtime, &plugin_path, format).await
        }
        Command::Plugins(PluginsCommand::Compile { plugins }) => {
            commands::plugins::compile(&runtime, &plugin_path, &plugins, cli.no_cache).await
        }
        Command::Plugins(PluginsCommand::Inspect { plugin, format, memory }) => {
            commands::plugins::inspect(&runtime, &plugin_path, &plugin, format, memory).await
        }
        Command::Plugins(PluginsCommand::Verify { plugin }) => {
            commands::plugins::verify(&plugin_path, &plugin, cli.trusted_keys.as_deref()).await
        }
        Command::Plugins(PluginsCommand::Keygen { out, name }) => commands::plugins::keygen(&out, name.as_deref()),
        Command::Plugins(PluginsCommand::Sign { plugin, key }) => {
            commands::plugins::sign(&plugin_path, &plugin, &key).await
        }
        Command::Completions { .. } | Command::Man { .. } => unreachable!("answered before the engine starts"),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|err| format!("`{text}`: {err} (examples: 10s, 500ms, 1m)"))?;
    if duration.is_zero() {
        return Err("the deadline must be more than zero".into());
    }
    Ok(duration)
}
