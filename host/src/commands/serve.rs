//! `runbox serve`: runbooks as Prometheus probes, in blackbox_exporter's model. The
//! server is stateless: Prometheus schedules the probes (`GET /probe?runbook=NAME&…`)
//! and shards them across instances; each probe runs a runbook's checks and plans
//! (never applies) and answers the text exposition.
//!
//! What a request cannot do, whatever it says (docs/serve.md, docs/security.md):
//! apply a mitigation; name anything but a runbook loaded from `--runbooks DIR` (a name
//! is looked up among them, never turned into a path); set an input the runbook does
//! not declare; point a grant outside `--allow-targets` (and without it, set an input
//! that flows into a grant at all); set an input that flows into `env:` or a grant's
//! HTTP methods; run more than `--max-concurrent` probes at once (503); load or compile
//! a plugin (that happens at startup and reload only).

use crate::capabilities::network::HostPattern;
use crate::cli::ServeArgs;
use crate::error::{Error, invalid};
use crate::output::{self, errln};
use crate::plugins::PluginPath;
use crate::report::prometheus::{by_label, family, single};
use crate::result::{RunResult, Status};
use crate::runbook::executor::{RunOptions, Stop, execute};
use crate::runbook::manifest::{AllowEntry, Manifest};
use crate::runbook::prepare::{self, Mode, Parsed, Plugins};
use crate::runbook::template::{self, Reference};
use crate::runtime::{Plugin, Runtime};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;

/// Most connections open at once; further ones wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to send a request's headers (slow clients hold no slot forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest token `--bearer-token-file` may hold.
const MIN_TOKEN_BYTES: usize = 16;
/// Bounds of the probe-duration histogram, in seconds.
const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Runs the server until SIGTERM or SIGINT.
pub(crate) async fn serve(runtime: Arc<Runtime>, plugin_path: PluginPath, args: ServeArgs) -> Result<u8, Error> {
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        invalid(format!(
            "--listen {}: expected IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464",
            args.listen
        ))
    })?;
    let token = match &args.bearer_token_file {
        Some(file) => Some(read_token(file)?),
        None => None,
    };
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(invalid(format!(
            "--listen {listen} is not a loopback address: anyone who can reach it could run probes, so it needs --bearer-token-file FILE (every request must then send `Authorization: Bearer TOKEN`); or listen on 127.0.0.1"
        )));
    }
    let targets = args
        .allow_targets
        .iter()
        .map(|text| {
            text.trim()
                .parse::<HostPattern>()
                .map_err(|err| invalid(format!("--allow-targets {text}: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dir = args.runbooks.clone();
    if !dir.is_dir() {
        return Err(invalid(format!(
            "--runbooks {}: not a directory (give the directory that holds the runbook files)",
            dir.display()
        )));
    }
    // Each probe runs up to --parallel plugins at once, each in a slot of the pool.
    let parallel = usize::from(args.parallel);
    let most = (crate::runtime::MAX_INSTANCES / parallel).max(1);
    let max_concurrent = match args.max_concurrent.map(|n| n as usize) {
        Some(n) if n * parallel > crate::runtime::MAX_INSTANCES => {
            return Err(invalid(format!(
                "--max-concurrent {n} × --parallel {parallel} is more than the {} plugin instances runbox runs at once; use at most --max-concurrent {most} (or lower --parallel)",
                crate::runtime::MAX_INSTANCES
            )));
        }
        Some(n) => n,
        None => (2 * std::thread::available_parallelism().map_or(1, usize::from)).min(most),
    };
    let telemetry = match crate::telemetry::Config::from_env().map_err(invalid)? {
        Some(config) => Some(config.start(true).map_err(invalid)?),
        None => None,
    };
    let state = Arc::new(State {
        runtime,
        plugin_path,
        dir,
        targets,
        token,
        probes: Arc::new(Semaphore::new(max_concurrent)),
        max_concurrent,
        timeout: args.timeout,
        timeout_offset: args.timeout_offset,
        parallel,
        catalog: RwLock::new(Arc::new(Catalog::default())),
        loaded: Mutex::new(HashMap::new()),
        reloading: tokio::sync::Mutex::new(()),
        metrics: Metrics::default(),
        started: SystemTime::now(),
        telemetry,
    });
    runbook_files(&state.dir)
        .map_err(|err| invalid(format!("--runbooks {}: cannot read it: {err}", state.dir.display())))?;
    // Broken runbooks do not stop the server: they are reported, and the rest served.
    let _ = state.reload().await;
    let listener = std::net::TcpListener::bind(listen)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .map_err(|err| invalid(format!("cannot listen on {listen}: {err}")))?;
    let local = listener.local_addr().unwrap_or(listen);

    // One thread per core, each with its own current-thread runtime accepting from the
    // same socket: a probe (its connection, the executor's tasks, the plugin's I/O)
    // stays on one thread, with no wake-up of another per I/O event (as `runbox check`
    // does; docs/performance.md).
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let mut finished = Vec::new();
    for n in 0..workers {
        let listener = listener
            .try_clone()
            .map_err(|err| Error::Internal(format!("cannot share the listening socket: {err}")))?;
        let (state, stopping, connections) = (state.clone(), stopping.clone(), connections.clone());
        let (done, finished_one) = tokio::sync::oneshot::channel();
        let grace = args.shutdown_grace;
        std::thread::Builder::new()
            .name(format!("runbox-serve-{n}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(accept(state, listener, connections, stopping, grace)),
                    Err(err) => errln!("runbox serve: cannot start a worker's async runtime: {err}"),
                }
                let _ = done.send(());
            })
            .map_err(|err| Error::Internal(format!("cannot start a worker thread: {err}")))?;
        finished.push(finished_one);
    }
    drop(listener);
    errln!(
        "runbox serve: listening on http://{local} (GET /probe?runbook=NAME, /metrics, /-/healthy, POST /-/reload; at most {max_concurrent} probes at once)"
    );
    watch_signals(state.clone()).await;
    let running = state.max_concurrent - state.probes.available_permits();
    errln!(
        "runbox serve: stopping — no new connections; waiting up to {} for {running} running probe{}",
        humantime::format_duration(args.shutdown_grace),
        if running == 1 { "" } else { "s" }
    );
    let _ = stop.send(true);
    for worker in finished {
        // Each worker waits at most the grace period for its connections.
        let _ = tokio::time::timeout(args.shutdown_grace + Duration::from_secs(1), worker).await;
    }
    // The traces of the last probes go out before the process ends.
    if let Some(telemetry) = state.telemetry.clone()
        && let Some(warning) = telemetry.shutdown().await
    {
        errln!("runbox serve: warning: {warning}");
    }
    Ok(0)
}

/// One worker: accepts connections until `stopping`, then gives their requests up to
/// `grace` to finish.
async fn accept(
    state: Arc<State>,
    listener: std::net::TcpListener,
    connections: Arc<Semaphore>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            errln!("runbox serve: a worker cannot use the listening socket: {err}");
            return;
        }
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stopping.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %err, "accept failed");
                    state.metrics.error("accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(64 * 1024)
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.handle(request).await) }
                }),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        errln!("runbox serve: probes still running after the grace period; they are cancelled");
    }
}

/// Reads the bearer token: the file's first line, at least [`MIN_TOKEN_BYTES`] long.
fn read_token(file: &Path) -> Result<Vec<u8>, Error> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| invalid(format!("--bearer-token-file {}: {err}", file.display())))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.len() < MIN_TOKEN_BYTES {
        return Err(invalid(format!(
            "--bearer-token-file {}: the token must be at least {MIN_TOKEN_BYTES} bytes on the file's first line (e.g. `openssl rand -hex 32 > FILE`)",
            file.display()
        )));
    }
    Ok(token.as_bytes().to_vec())
}

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
async fn watch_signals(state: Arc<State>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hangup), Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; SIGHUP will not reload, and only a kill stops runbox serve");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let _ = state.reload().await;
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
}

/// The server's state, shared by every connection.
struct State {
    runtime: Arc<Runtime>,
    plugin_path: PluginPath,
    dir: PathBuf,
    targets: Vec<HostPattern>,
    token: Option<Vec<u8>>,
    probes: Arc<Semaphore>,
    max_concurrent: usize,
    timeout: Duration,
    timeout_offset: Duration,
    parallel: usize,
    catalog: RwLock<Arc<Catalog>>,
    /// Every plugin loaded so far, by file, for the life of the process: a reload loads
    /// again only what changed on disk.
    loaded: Mutex<HashMap<PathBuf, Arc<Plugin>>>,
    reloading: tokio::sync::Mutex<()>,
    metrics: Metrics,
    started: SystemTime,
    /// Exports a trace per probe, when tracing is on (docs/tracing.md).
    telemetry: Option<crate::telemetry::Telemetry>,
}

/// The runbooks being served, by file stem, and their `name:`s.
#[derive(Default)]
struct Catalog {
    entries: BTreeMap<String, Entry>,
    aliases: BTreeMap<String, String>,
}

impl Catalog {
    fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .get(name)
            .or_else(|| self.aliases.get(name).and_then(|stem| self.entries.get(stem)))
    }
}

/// One runbook file: what is served, and what is wrong with the file now.
struct Entry {
    /// The last version that loaded, if any.
    book: Option<Arc<Book>>,
    /// Problems of the file at the last reload (empty: it loaded).
    problems: Vec<String>,
}

/// A runbook prepared once: parsed, validated, its plugins loaded.
struct Book {
    name: String,
    parsed: Parsed,
    plugins: HashMap<String, Arc<Plugin>>,
    flow: InputFlow,
}

/// Which inputs reach grants, and where.
#[derive(Default)]
struct InputFlow {
    /// Inputs used in an `allow:` URL: (step index, allow index) of each use.
    allow: BTreeMap<String, Vec<(usize, usize)>>,
    /// Inputs no query may set, with where they are used (`env:`, a grant's methods).
    fixed: BTreeMap<String, String>,
}

impl InputFlow {
    fn of(manifest: &Manifest) -> InputFlow {
        let mut flow = InputFlow::default();
        let inputs = |text: &str| -> Vec<String> {
            // Templates were checked when the runbook was prepared.
            template::references(text)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|reference| match reference {
                    Reference::Input(name) => Some(name),
                    _ => None,
                })
                .collect()
        };
        for (i, step) in manifest.steps.iter().enumerate() {
            for (g, entry) in step.allow.iter().enumerate() {
                let (url, methods) = match entry {
                    AllowEntry::Text(text) => (text.as_str(), &[][..]),
                    AllowEntry::Mapping { url, methods } => (url.as_str(), methods.as_slice()),
                };
                for name in inputs(url) {
                    flow.allow.entry(name).or_default().push((i, g));
                }
                for method in methods {
                    for name in inputs(method) {
                        flow.fixed
                            .entry(name)
                            .or_insert_with(|| format!("the HTTP methods of a grant of step `{}`", step.id));
                    }
                }
            }
            for (variable, value) in &step.env {
                for name in inputs(value) {
                    flow.fixed
                        .entry(name)
                        .or_insert_with(|| format!("`env: {variable}` of step `{}`", step.id));
                }
            }
        }
        flow
    }
}

/// An HTTP answer.
type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &str, body: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(output::scrub(&body).into_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_str(content_type).expect("a valid content type"),
    );
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Answer {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    answer(status, "text/plain; charset=utf-8", body)
}

const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

impl State {
    async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Answer {
        let path = request.uri().path().to_string();
        if path == "/-/healthy" {
            return text(StatusCode::OK, "Healthy");
        }
        if !self.authorized(&request) {
            self.metrics.refused("unauthorized");
            let mut response = text(
                StatusCode::UNAUTHORIZED,
                "this runbox serve requires `Authorization: Bearer TOKEN` (the token of its --bearer-token-file)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
        let method = request.method().clone();
        let wrong_method = |allowed: &'static str| {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes {allowed}, not {method}"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            response
        };
        match path.as_str() {
            "/probe" if method == Method::GET => self.probe(&request).await,
            "/metrics" if method == Method::GET => {
                let body = self.render_metrics();
                answer(StatusCode::OK, EXPOSITION, body)
            }
            "/probe" | "/metrics" => wrong_method("GET"),
            "/-/reload" if method == Method::POST => match self.reload().await {
                Ok(report) => text(StatusCode::OK, report),
                Err(report) => text(StatusCode::INTERNAL_SERVER_ERROR, report),
            },
            "/-/reload" => wrong_method("POST"),
            "/" => text(
                StatusCode::OK,
                "runbox serve: GET /probe?runbook=NAME&INPUT=VALUE…, GET /metrics, GET /-/healthy, POST /-/reload (docs/serve.md)",
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: runbox serve answers /probe, /metrics, /-/healthy and /-/reload",
            ),
        }
    }

    /// Whether the request carries the bearer token (always, without one).
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let Some(token) = &self.token else { return true };
        let Some(given) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, credentials) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
            })
        else {
            return false;
        };
        // Hashing both first makes the comparison independent of the lengths too.
        Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(token)).into()
    }

    /// `GET /probe?runbook=NAME&INPUT=VALUE…`.
    async fn probe(self: &Arc<Self>, request: &Request<Incoming>) -> Answer {
        let started = Instant::now();
        let query = request.uri().query().unwrap_or("");
        let mut runbook = None;
        let mut sets = BTreeMap::new();
        let mut repeated = BTreeSet::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == "runbook" {
                if runbook.replace(value.into_owned()).is_some() {
                    repeated.insert("runbook".to_string());
                }
            } else if sets.insert(key.clone().into_owned(), value.into_owned()).is_some() {
                repeated.insert(key.into_owned());
            }
        }
        let refuse = |reason: &'static str, status: StatusCode, message: String| {
            self.metrics.refused(reason);
            // Saturation can come thousands of times a second; the counter says it.
            if reason == "saturated" {
                tracing::debug!(reason, %message, "probe refused");
            } else {
                tracing::warn!(reason, %message, "probe refused");
            }
            text(status, message)
        };
        if !repeated.is_empty() {
            return refuse(
                "bad_request",
                StatusCode::BAD_REQUEST,
                format!("{} given more than once: give each once", quoted(&repeated)),
            );
        }
        let Some(name) = runbook else {
            return refuse(
                "bad_request",
                StatusCode::BAD_REQUEST,
                "missing `runbook`: GET /probe?runbook=NAME&INPUT=VALUE… (NAME: a runbook's `name:` or file stem)"
                    .into(),
            );
        };
        if !is_plain_name(&name) {
            return refuse(
                "bad_request",
                StatusCode::BAD_REQUEST,
                format!(
                    "runbook={}: a runbook is named by its `name:` or file stem (letters, digits, `-`, `_`, `.`), never by a path",
                    shown(&name)
                ),
            );
        }
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(entry) = catalog.get(&name) else {
            let known: Vec<&str> = catalog.entries.keys().map(String::as_str).collect();
            return refuse(
                "unknown_runbook",
                StatusCode::NOT_FOUND,
                format!(
                    "no runbook `{}` in {} (runbooks: {})",
                    shown(&name),
                    self.dir.display(),
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        };
        let Some(book) = entry.book.clone() else {
            return refuse(
                "broken_runbook",
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "runbook `{name}` did not load, so it cannot be probed; fix it and reload (POST /-/reload or SIGHUP):\n{}",
                    entry.problems.join("\n")
                ),
            );
        };
        let manifest = &book.parsed.manifest;
        let undeclared: BTreeSet<String> = sets
            .keys()
            .filter(|key| !manifest.inputs.contains_key(*key))
            .cloned()
            .collect();
        if !undeclared.is_empty() {
            let declared: Vec<&str> = manifest.inputs.keys().map(String::as_str).collect();
            return refuse(
                "undeclared_input",
                StatusCode::BAD_REQUEST,
                format!(
                    "runbook `{}` declares no input {} (its inputs: {}); a query sets only declared inputs",
                    book.name,
                    quoted(&undeclared),
                    if declared.is_empty() {
                        "none".into()
                    } else {
                        declared.join(", ")
                    }
                ),
            );
        }
        for name in sets.keys() {
            if let Some(place) = book.flow.fixed.get(name) {
                return refuse(
                    "grant_input",
                    StatusCode::BAD_REQUEST,
                    format!("input `{name}` flows into {place}, which a query can never set; nothing was run"),
                );
            }
            if let Some(uses) = book.flow.allow.get(name)
                && self.targets.is_empty()
            {
                let step = &manifest.steps[uses[0].0].id;
                return refuse(
                    "grant_input",
                    StatusCode::BAD_REQUEST,
                    format!(
                        "input `{name}` flows into the grants (`allow:`) of step `{step}`, and runbox serve was started without --allow-targets, so a query cannot set it; nothing was run"
                    ),
                );
            }
        }
        let deadline = match self.deadline(request) {
            Ok(deadline) => deadline,
            Err(message) => return refuse("bad_request", StatusCode::BAD_REQUEST, message),
        };
        let Ok(permit) = self.probes.clone().try_acquire_owned() else {
            let mut response = refuse(
                "saturated",
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "runbox serve is running its maximum of {} probes at once (--max-concurrent); this one was not run. Retry later, raise --max-concurrent, or run more instances",
                    self.max_concurrent
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return response;
        };
        let prepared =
            prepare::prepare_parsed(&book.parsed, Plugins::Loaded(&book.plugins), &sets, Mode::Run, None).await;
        let runbook = match prepared {
            Ok(runbook) => runbook,
            Err(problems) => {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                return refuse(
                    "inputs",
                    StatusCode::BAD_REQUEST,
                    format!(
                        "runbook `{}` cannot run with these inputs; nothing was run:\n{}",
                        book.name,
                        lines.join("\n")
                    ),
                );
            }
        };
        self.metrics
            .prepared_plugin_uses
            .fetch_add(runbook.steps.len() as u64, Ordering::Relaxed);
        // Every grant an input of the query reached must fall inside --allow-targets.
        for (name, uses) in &book.flow.allow {
            if !sets.contains_key(name) {
                continue;
            }
            for &(i, g) in uses {
                // A prepared runbook has one step per step of its manifest, in order.
                let Some(step) = runbook.steps.get(i) else {
                    return refuse(
                        "grant_outside_targets",
                        StatusCode::BAD_REQUEST,
                        format!(
                            "runbook `{}`: its grants could not be checked; nothing was run",
                            book.name
                        ),
                    );
                };
                let grants = step.grant_sources.iter().zip(&step.grants.network);
                for (_, grant) in grants.filter(|(source, _)| **source == g) {
                    if !grant.host.within(&self.targets) {
                        let targets: Vec<String> = self.targets.iter().map(ToString::to_string).collect();
                        return refuse(
                            "grant_outside_targets",
                            StatusCode::BAD_REQUEST,
                            format!(
                                "step `{}`: input `{name}` makes the grant `{grant}`, whose host is outside --allow-targets ({}); nothing was run",
                                step.id,
                                targets.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        let runbook = Arc::new(runbook);
        let deadline = match runbook.timeout {
            Some(own) => own.min(deadline),
            None => deadline,
        };
        let run_id = crate::logging::new_run_id();
        let options = RunOptions {
            apply: false,
            approve: BTreeSet::new(),
            parallel: self.parallel,
            prompt: None,
            audit: None,
            run_id: run_id.clone(),
            allow_metadata: false,
            progress: Arc::new(|_| {}),
            deadline: Some(deadline),
            stop: Stop::new(),
            telemetry: self.telemetry.clone(),
        };
        let result = execute(self.runtime.clone(), runbook, options).await;
        drop(permit);
        let elapsed = started.elapsed();
        let success = matches!(result.status, Status::Ok | Status::Warning);
        self.metrics.probed(&book.name, success, elapsed, &result);
        tracing::debug!(runbook = %book.name, run_id, status = result.status.label(), elapsed_ms = elapsed.as_secs_f64() * 1e3, "probe");
        let body = exposition(&result, success, elapsed, entry.problems.is_empty());
        answer(StatusCode::OK, EXPOSITION, body)
    }

    /// The probe's deadline: the scrape timeout Prometheus sends, less the offset, or
    /// the default.
    fn deadline(&self, request: &Request<Incoming>) -> Result<Duration, String> {
        let Some(value) = request.headers().get("x-prometheus-scrape-timeout-seconds") else {
            return Ok(self.timeout);
        };
        let seconds = value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0 && *seconds < 86_400.0)
            .ok_or_else(|| {
                format!(
                    "X-Prometheus-Scrape-Timeout-Seconds: {} is not a number of seconds above 0",
                    shown(&String::from_utf8_lossy(value.as_bytes()))
                )
            })?;
        let scrape = Duration::from_secs_f64(seconds);
        // Too short a scrape timeout for the offset: use it whole rather than nothing.
        Ok(if scrape > self.timeout_offset {
            scrape - self.timeout_offset
        } else {
            scrape
        })
    }

    /// Reads DIR again: every runbook file is parsed and prepared, its plugins loaded
    /// (each changed file once). A runbook that fails keeps serving its last good
    /// version; its problems are logged, shown in /metrics and on its probes. The
    /// report, or `Err` with it when something is broken.
    async fn reload(&self) -> Result<String, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.catalog.read().unwrap_or_else(|p| p.into_inner()).clone();
        let files = match runbook_files(&self.dir) {
            Ok(files) => files,
            Err(err) => {
                let message = format!(
                    "cannot read {}: {err}; still serving what was loaded before",
                    self.dir.display()
                );
                errln!("runbox serve: reload failed: {message}");
                self.metrics.reloaded(false);
                return Err(message);
            }
        };
        // Plugins whose file is unchanged are reused: no read of the compile cache, no
        // `info()`, no schema compilation.
        let mut loaded: HashMap<PathBuf, Arc<Plugin>> = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(path, plugin)| {
                std::fs::read(path).is_ok_and(|bytes| crate::runtime::cache::digest(&bytes) == plugin.digest)
            })
            .map(|(path, plugin)| (path.clone(), plugin.clone()))
            .collect();
        let mut catalog = Catalog::default();
        for file in files {
            let stem = file.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let old = previous.entries.get(&stem).and_then(|entry| entry.book.clone());
            if catalog.entries.contains_key(&stem) {
                let problem = format!(
                    "{}: another file of {} has the stem `{stem}`; rename one",
                    file.display(),
                    self.dir.display()
                );
                if let Some(entry) = catalog.entries.get_mut(&stem) {
                    entry.problems.push(problem);
                }
                continue;
            }
            let prepared = match prepare::parse(&file) {
                Ok(parsed) => {
                    let plugins = Plugins::Load {
                        runtime: &self.runtime,
                        plugin_path: &self.plugin_path,
                        loaded: &mut loaded,
                    };
                    prepare::prepare_parsed(&parsed, plugins, &BTreeMap::new(), Mode::Validate, None)
                        .await
                        .map(|runbook| (parsed, runbook))
                }
                Err(problems) => Err(problems),
            };
            let entry = match prepared {
                Ok((parsed, runbook)) => Entry {
                    book: Some(Arc::new(Book {
                        name: parsed.manifest.name.clone(),
                        flow: InputFlow::of(&parsed.manifest),
                        plugins: runbook.plugins_by_use(),
                        parsed,
                    })),
                    problems: Vec::new(),
                },
                Err(problems) => Entry {
                    book: old,
                    problems: problems.iter().map(ToString::to_string).collect(),
                },
            };
            catalog.entries.insert(stem, entry);
        }
        // A runbook's `name:` reaches it too, unless another file claims that name.
        let mut claimed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (stem, entry) in &catalog.entries {
            if let Some(book) = &entry.book
                && book.name != *stem
            {
                claimed.entry(book.name.clone()).or_default().push(stem.clone());
            }
        }
        for (name, stems) in claimed {
            if stems.len() == 1 && !catalog.entries.contains_key(&name) {
                catalog.aliases.insert(name, stems[0].clone());
            } else {
                for stem in &stems {
                    if let Some(entry) = catalog.entries.get_mut(stem) {
                        entry.problems.push(format!(
                            "`name: {name}` is also the name or file stem of another runbook in {}; probe it as runbook={stem}",
                            self.dir.display()
                        ));
                    }
                }
            }
        }
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
        let broken: Vec<(&String, &Entry)> = catalog.entries.iter().filter(|(_, e)| !e.problems.is_empty()).collect();
        let mut report = format!(
            "loaded {} runbook{} from {}",
            catalog.entries.len() - broken.len(),
            if catalog.entries.len() - broken.len() == 1 {
                ""
            } else {
                "s"
            },
            self.dir.display()
        );
        let ok = broken.is_empty();
        if !ok {
            let _ = write!(report, "; {} broken:", broken.len());
            for (stem, entry) in &broken {
                let serving = if entry.book.is_some() {
                    "still serving the version loaded before"
                } else {
                    "not served"
                };
                let _ = write!(report, "\n{stem} ({serving}):");
                for problem in &entry.problems {
                    let _ = write!(report, "\n  error: {problem}");
                }
            }
        }
        errln!("runbox serve: {report}");
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
        self.metrics.reloaded(ok);
        if ok { Ok(report) } else { Err(report) }
    }

    /// The server's own metrics.
    fn render_metrics(&self) -> String {
        let mut out = String::new();
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner()).clone();
        let inner = self.metrics.inner.lock().unwrap_or_else(|p| p.into_inner());
        let label = crate::text::prometheus_label;
        family(
            &mut out,
            "runbox_serve_probes_total",
            "counter",
            "Probes run, by runbook and result (success: the run's worst status was OK or WARNING).",
        );
        for ((runbook, result), n) in &inner.probes {
            let _ = writeln!(
                out,
                "runbox_serve_probes_total{{runbook=\"{}\",result=\"{result}\"}} {n}",
                label(runbook)
            );
        }
        family(
            &mut out,
            "runbox_serve_probe_duration_seconds",
            "histogram",
            "Wall time of the probes that ran, by runbook.",
        );
        for (runbook, histogram) in &inner.durations {
            let runbook = label(runbook);
            for (bound, count) in BUCKETS.iter().zip(&histogram.buckets) {
                let _ = writeln!(
                    out,
                    "runbox_serve_probe_duration_seconds_bucket{{runbook=\"{runbook}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "runbox_serve_probe_duration_seconds_bucket{{runbook=\"{runbook}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "runbox_serve_probe_duration_seconds_sum{{runbook=\"{runbook}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "runbox_serve_probe_duration_seconds_count{{runbook=\"{runbook}\"}} {}",
                histogram.count
            );
        }
        by_label(
            &mut out,
            "runbox_serve_probe_refusals_total",
            "counter",
            "Requests refused before anything ran, by reason (unauthorized, bad_request, unknown_runbook, broken_runbook, undeclared_input, grant_input, grant_outside_targets, inputs, saturated).",
            "reason",
            &inner.refusals,
        );
        by_label(
            &mut out,
            "runbox_serve_sandbox_denials_total",
            "counter",
            "Operations the sandbox denied a step's plugin during probes, by runbook.",
            "runbook",
            &inner.denials,
        );
        by_label(
            &mut out,
            "runbox_serve_errors_total",
            "counter",
            "Errors of the server itself, by kind.",
            "kind",
            &inner.errors,
        );
        single(
            &mut out,
            "runbox_serve_probes_in_flight",
            "gauge",
            "Probes running now.",
            self.max_concurrent - self.probes.available_permits(),
        );
        single(
            &mut out,
            "runbox_serve_max_concurrent_probes",
            "gauge",
            "Most probes run at once (--max-concurrent); more are answered 503.",
            self.max_concurrent,
        );
        let counts = self.runtime.load_counts();
        single(
            &mut out,
            "runbox_serve_plugin_loads_total",
            "counter",
            "Plugin loads (read, compile or compile-cache read, info(), schema compilation); startup and reloads only, never a probe.",
            counts.loads.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "runbox_serve_plugin_compiles_total",
            "counter",
            "Plugin loads that compiled the component.",
            counts.compiles.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "runbox_serve_compile_cache_hits_total",
            "counter",
            "Plugin loads whose compiled code came from the on-disk compile cache.",
            counts.cache_hits.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "runbox_serve_prepared_plugin_hits_total",
            "counter",
            "Steps whose plugin a probe took from the runbooks prepared at startup or reload.",
            self.metrics.prepared_plugin_uses.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "runbox_serve_plugins_loaded",
            "gauge",
            "Plugins held loaded, by file.",
            self.loaded.lock().unwrap_or_else(|p| p.into_inner()).len(),
        );
        family(
            &mut out,
            "runbox_serve_runbook_ok",
            "gauge",
            "Whether each runbook file loaded at the last reload (0: broken; it serves its last good version if it had one).",
        );
        family(
            &mut out,
            "runbox_serve_runbook_served",
            "gauge",
            "Whether each runbook can be probed (1: it has a version that loaded).",
        );
        let mut served = String::new();
        for (stem, entry) in &catalog.entries {
            let name = entry.book.as_ref().map_or(stem.as_str(), |book| book.name.as_str());
            let labels = format!("runbook=\"{}\",file=\"{}\"", label(name), label(stem));
            let _ = writeln!(
                out,
                "runbox_serve_runbook_ok{{{labels}}} {}",
                u8::from(entry.problems.is_empty())
            );
            let _ = writeln!(
                served,
                "runbox_serve_runbook_served{{{labels}}} {}",
                u8::from(entry.book.is_some())
            );
        }
        out.push_str(&served);
        by_label(
            &mut out,
            "runbox_serve_reloads_total",
            "counter",
            "Reloads of the runbook directory (startup included), by result (failure: a runbook or the directory was broken).",
            "result",
            &inner.reloads,
        );
        single(
            &mut out,
            "runbox_serve_last_reload_successful",
            "gauge",
            "Whether the last reload loaded every runbook.",
            u8::from(inner.last_reload_ok),
        );
        single(
            &mut out,
            "runbox_serve_last_reload_timestamp_seconds",
            "gauge",
            "When the last reload finished (Unix time).",
            inner.last_reload_at,
        );
        single(
            &mut out,
            "runbox_serve_start_time_seconds",
            "gauge",
            "When the server started (Unix time).",
            unix_seconds(self.started),
        );
        out
    }
}

/// The probe's answer: the `--format prometheus` series, then blackbox_exporter's.
fn exposition(result: &RunResult, success: bool, elapsed: Duration, loaded_now: bool) -> String {
    let mut out = crate::report::render(result, crate::report::Format::Prometheus, false);
    // Why it failed, for a person reading the answer (`curl`); Prometheus ignores
    // comment lines. Summaries are one line, made inert when the plugin returned them.
    if let Some(stopped) = &result.stopped {
        let _ = writeln!(out, "# runbox: stopped early: {stopped}");
    }
    for step in result
        .steps
        .iter()
        .filter(|step| step.skipped.is_none() && step.status != Status::Ok)
    {
        let summary = crate::text::visible(&step.summary);
        let _ = writeln!(out, "# runbox: step {} {}: {summary}", step.id, step.status.label());
    }
    let runbook = crate::text::prometheus_label(result.runbook.as_deref().unwrap_or(""));
    family(
        &mut out,
        "runbox_runbook_reload_ok",
        "gauge",
        "Whether the runbook's file loaded at the last reload (0: it is broken, and this probe ran the version loaded before).",
    );
    let _ = writeln!(
        out,
        "runbox_runbook_reload_ok{{runbook=\"{runbook}\"}} {}",
        u8::from(loaded_now)
    );
    single(
        &mut out,
        "probe_success",
        "gauge",
        "Whether the probe succeeded: 1 when the run's worst status was OK or WARNING.",
        u8::from(success),
    );
    single(
        &mut out,
        "probe_duration_seconds",
        "gauge",
        "How long the probe took, in seconds.",
        elapsed.as_secs_f64(),
    );
    out
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The runbook files of `dir` (`*.yaml`, `*.yml`; not hidden, not in subdirectories), sorted.
fn runbook_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml")
                && !path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with('.'))
                && path.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A runbook name as a request may give it: never a path.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Request text shown in an answer: made visible and cut.
fn shown(text: &str) -> String {
    format!("`{}`", crate::text::truncate(&crate::text::visible(text), 80))
}

fn quoted(names: &BTreeSet<String>) -> String {
    let mut shown_names: Vec<String> = names.iter().take(20).map(|name| shown(name)).collect();
    if names.len() > 20 {
        shown_names.push(format!("and {} more", names.len() - 20));
    }
    shown_names.join(", ")
}

/// The server's own counters.
#[derive(Default)]
struct Metrics {
    inner: Mutex<MetricsInner>,
    prepared_plugin_uses: AtomicU64,
}

#[derive(Default)]
struct MetricsInner {
    probes: BTreeMap<(String, &'static str), u64>,
    durations: BTreeMap<String, Histogram>,
    refusals: BTreeMap<&'static str, u64>,
    denials: BTreeMap<String, u64>,
    errors: BTreeMap<&'static str, u64>,
    reloads: BTreeMap<&'static str, u64>,
    last_reload_ok: bool,
    last_reload_at: f64,
}

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, MetricsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refused(&self, reason: &'static str) {
        *self.lock().refusals.entry(reason).or_default() += 1;
    }

    fn error(&self, kind: &'static str) {
        *self.lock().errors.entry(kind).or_default() += 1;
    }

    fn reloaded(&self, ok: bool) {
        let mut inner = self.lock();
        *inner.reloads.entry(if ok { "success" } else { "failure" }).or_default() += 1;
        inner.last_reload_ok = ok;
        inner.last_reload_at = unix_seconds(SystemTime::now());
    }

    /// Records a probe that ran. Labels come from loaded runbooks only, never from a
    /// request, so a client cannot grow the series without bound.
    fn probed(&self, runbook: &str, success: bool, elapsed: Duration, result: &RunResult) {
        let mut inner = self.lock();
        let result_label = if success { "success" } else { "failure" };
        *inner.probes.entry((runbook.to_string(), result_label)).or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        let histogram = inner.durations.entry(runbook.to_string()).or_default();
        if histogram.buckets.is_empty() {
            histogram.buckets = vec![0; BUCKETS.len()];
        }
        for (bound, count) in BUCKETS.iter().zip(histogram.buckets.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
        let denied: usize = result.steps.iter().map(|step| step.denied.len()).sum();
        if denied > 0 {
            *inner.denials.entry(runbook.to_string()).or_default() += denied as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runbook_name_is_never_a_path() {
        for good in ["queue-outage", "redis_ping", "a.b", "A1"] {
            assert!(is_plain_name(good), "{good}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "..",
            ".",
            ".hidden",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "a..b",
            "%2e%2e",
            "a b",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn inputs_are_traced_to_the_grants_they_reach() {
        let yaml = r#"
name: t
inputs:
  host: {default: 127.0.0.1}
  method: {default: GET}
  level: {default: info}
  queue: {default: q}
steps:
  - id: a
    uses: redis-ping
    with: {url: "redis://${{ inputs.host }}:6379", queue: "${{ inputs.queue }}"}
    allow: ["redis://${{ inputs.host }}:6379", "redis://127.0.0.1:1"]
    env: {LEVEL: "${{ inputs.level }}"}
  - id: b
    uses: http-health
    allow: [{url: "https://${{ inputs.host }}", methods: ["${{ inputs.method }}"]}]
"#;
        let tree = crate::runbook::yaml::parse(yaml).unwrap();
        let manifest: Manifest = serde_json::from_value(tree.to_json()).unwrap();
        let flow = InputFlow::of(&manifest);
        assert_eq!(flow.allow.get("host"), Some(&vec![(0, 0), (1, 0)]));
        assert!(!flow.allow.contains_key("queue"));
        assert!(flow.fixed.get("level").unwrap().contains("env: LEVEL"));
        assert!(flow.fixed.get("method").unwrap().contains("HTTP methods"));
        assert!(!flow.fixed.contains_key("host") && !flow.fixed.contains_key("queue"));
    }
}
