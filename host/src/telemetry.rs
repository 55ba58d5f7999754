//! OpenTelemetry traces of runs, exported over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set
//! (docs/tracing.md).
//!
//! - A run is one trace: a root span (kind SERVER, `RUN <runbook>`) and one child span
//!   per step (kind INTERNAL, named by the step id), with OpenTelemetry's CI/CD
//!   attributes (`cicd.pipeline.*`) and runbox's own (`runbox.*`). A retry is a `retry`
//!   event, a sandbox denial a `denial` event carrying the line the report shows.
//! - While a step runs, the host puts that step span's W3C `traceparent` on every HTTP
//!   request the plugin sends (capabilities/http.rs), replacing whatever the plugin set.
//! - Nothing secret goes into a span: no `with:` value, no secret; summaries and denials
//!   are the texts the report shows, which the runtime has already redacted.
//! - Unset, [`Config::from_env`] is `None` and nothing here exists: no exporter, no
//!   thread, no client, and the executor's hooks are `None` checks.
//!
//! The SDK's batch processor exports from a thread of its own with reqwest's blocking
//! client (which runs one more thread); each export is bounded by the OTLP timeout, and
//! [`Telemetry::shutdown`] waits at most that long (plus a second) for the last one.

use crate::result::{RunResult, Status, StepResult};
use crate::runbook::prepare::PreparedStep;
use crate::runtime::CheckOutcome;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The spec's default OTLP timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest span status description or event reason (bytes).
const MAX_TEXT: usize = 256;

/// The exporter's settings, read from the standard variables.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where traces go (for messages; the exporter reads the same variables itself).
    pub endpoint: String,
    /// One export's timeout.
    pub timeout: Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Config {
    /// The settings, if tracing is asked for: `None` unless an OTLP endpoint is set (and
    /// when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`). An exporter or a
    /// protocol runbox does not have is an error, not a silent fallback.
    pub fn from_env() -> Result<Option<Config>, String> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => traces,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        match var("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER={other}: runbox exports traces only with `otlp` (or `none` to turn them off)"
                ));
            }
        }
        for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(protocol) = var(name) {
                if protocol != "http/protobuf" {
                    return Err(format!(
                        "{name}={protocol}: runbox exports traces only as OTLP/HTTP protobuf; set it to http/protobuf (a collector's port 4318) or unset it"
                    ));
                }
                break;
            }
        }
        let timeout = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
            .into_iter()
            .find_map(|name| var(name)?.parse::<u64>().ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        Ok(Some(Config { endpoint, timeout }))
    }

    /// Builds the exporter and the tracer provider (this starts the SDK's batch thread).
    /// `log_failures`: a failed export is logged (warn) as it happens, for a long-running
    /// `serve`; otherwise only [`Telemetry::shutdown`] reports it.
    pub fn start(self, log_failures: bool) -> Result<Telemetry, String> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(self.timeout)
            .build()
            .map_err(|err| format!("cannot set up the OTLP trace exporter for {}: {err}", self.endpoint))?;
        let failures = Arc::new(Failures {
            log: log_failures,
            endpoint: self.endpoint.clone(),
            timeout: self.timeout,
            ..Failures::default()
        });
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(Watched {
                inner: exporter,
                failures: failures.clone(),
            })
            .with_resource(resource())
            .build();
        let tracer = provider.tracer_with_scope(
            opentelemetry::InstrumentationScope::builder("runbox")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        Ok(Telemetry {
            inner: Arc::new(Inner {
                provider,
                tracer,
                failures,
                config: self,
            }),
        })
    }
}

/// `service.name` is `runbox` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// says otherwise; the SDK's own attributes and `OTEL_RESOURCE_ATTRIBUTES` are added.
fn resource() -> opentelemetry_sdk::Resource {
    use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
    let mut builder = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name("runbox")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    if let Some(name) = var("OTEL_SERVICE_NAME") {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// Exports spans of runs. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    failures: Arc<Failures>,
    config: Config,
}

impl Telemetry {
    /// Starts the root span of a run of `runbook` (`run_id` is runbox's run id).
    pub fn start_run(&self, runbook: &str, severity: Option<&str>, run_id: &str) -> RunSpan {
        let tracer = &self.inner.tracer;
        let mut attributes = vec![
            KeyValue::new("cicd.pipeline.name", runbook.to_string()),
            KeyValue::new("cicd.pipeline.run.id", run_id.to_string()),
            KeyValue::new("cicd.pipeline.action.name", "RUN"),
        ];
        if let Some(severity) = severity {
            attributes.push(KeyValue::new("runbox.runbook.severity", severity.to_string()));
        }
        let span = tracer.build_with_context(
            tracer
                .span_builder(format!("RUN {runbook}"))
                .with_kind(SpanKind::Server)
                .with_attributes(attributes),
            &Context::new(),
        );
        RunSpan {
            cx: Context::new().with_span(span),
            tracer: tracer.clone(),
            run_id: run_id.to_string(),
        }
    }

    /// Exports what is left and stops the exporter, waiting at most the OTLP timeout
    /// (plus a second). Returns a warning for the operator when spans were not exported.
    pub async fn shutdown(self) -> Option<String> {
        let inner = self.inner.clone();
        let wait = inner.config.timeout + Duration::from_secs(1);
        drop(self);
        let provider = inner.provider.clone();
        // The SDK's shutdown blocks (it waits for its batch thread).
        let shutdown = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(wait));
        let finished = tokio::time::timeout(wait + Duration::from_millis(500), shutdown).await;
        if let Some(warning) = inner.failures.warning() {
            return Some(warning);
        }
        match finished {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(err))) => Some(format!(
                "the trace was not fully exported to {}: {}",
                inner.config.endpoint,
                short(&err.to_string())
            )),
            _ => Some(format!(
                "gave up waiting {} for the trace exporter ({}); spans may be lost",
                humantime::format_duration(wait),
                inner.config.endpoint
            )),
        }
    }
}

/// The root span of a run, shared by its steps.
pub struct RunSpan {
    cx: Context,
    tracer: SdkTracer,
    run_id: String,
}

impl RunSpan {
    /// Starts the span of `step`, a child of the run's.
    pub fn start_step(&self, step: &PreparedStep) -> StepSpan {
        let span = self.tracer.build_with_context(
            self.step_builder(&step.id, &step.plugin.info.name, step.plugin.kind),
            &self.cx,
        );
        StepSpan {
            cx: Context::new().with_span(span),
        }
    }

    fn step_builder(&self, id: &str, plugin: &str, kind: crate::result::Kind) -> opentelemetry::trace::SpanBuilder {
        let (kind_text, task_type) = match kind {
            crate::result::Kind::Check => ("check", "test"),
            crate::result::Kind::Mitigation => ("mitigation", "deploy"),
        };
        self.tracer
            .span_builder(id.to_string())
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("cicd.pipeline.task.name", id.to_string()),
                KeyValue::new("cicd.pipeline.task.run.id", format!("{}/{id}", self.run_id)),
                KeyValue::new("cicd.pipeline.task.type", task_type),
                KeyValue::new("runbox.step.kind", kind_text),
                KeyValue::new("runbox.plugin", plugin.to_string()),
            ])
    }

    /// Records a step that did not run (`when:` false, or not reached): a span of no
    /// length with the result `skip` and the reason.
    pub fn skipped(&self, result: &StepResult) {
        let span = self
            .tracer
            .build_with_context(self.step_builder(&result.id, &result.plugin, result.kind), &self.cx);
        let cx = Context::new().with_span(span);
        let span = cx.span();
        span.set_attributes([
            KeyValue::new("cicd.pipeline.task.run.result", "skip"),
            KeyValue::new(
                "runbox.step.skipped",
                short(result.skipped.as_deref().unwrap_or_default()),
            ),
        ]);
        span.end();
    }

    /// Ends the run's span with `result` (and why it stopped early, if it did).
    pub fn end(self, result: &RunResult, stopped: Option<&crate::runbook::executor::StopCause>) {
        use crate::runbook::executor::StopCause;
        let span = self.cx.span();
        let outcome = match (stopped, result.status) {
            (Some(StopCause::Deadline(_)), _) => "timeout",
            (Some(StopCause::Interrupted), _) => "cancellation",
            (None, status) => result_of(status),
        };
        span.set_attributes([
            KeyValue::new("cicd.pipeline.result", outcome),
            KeyValue::new("runbox.run.status", result.status.label()),
        ]);
        if let Some(stopped) = &result.stopped {
            span.set_attribute(KeyValue::new("runbox.run.stopped", short(stopped)));
        }
        if matches!(result.status, Status::Critical | Status::Unknown) {
            span.set_attribute(KeyValue::new("error.type", result.status.label()));
            let failed: Vec<&str> = result
                .steps
                .iter()
                .filter(|s| s.skipped.is_none() && matches!(s.status, Status::Critical | Status::Unknown))
                .map(|s| s.id.as_str())
                .collect();
            let why = match (&result.stopped, failed.as_slice()) {
                (Some(stopped), _) => stopped.clone(),
                (None, []) => result.status.label().to_string(),
                (None, failed) => format!("{}: failed steps {}", result.status.label(), failed.join(", ")),
            };
            span.set_status(opentelemetry::trace::Status::error(short(&why)));
        }
        span.end();
    }
}

/// The span of one step while it runs.
pub struct StepSpan {
    cx: Context,
}

impl StepSpan {
    /// The W3C `traceparent` of this span, for the plugin's outgoing HTTP requests.
    pub fn traceparent(&self) -> http::HeaderValue {
        let span = self.cx.span();
        let context = span.span_context();
        let text = format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        http::HeaderValue::from_str(&text).expect("hex digits and dashes")
    }

    /// Records one attempt of the check (or plan): its denials, and a `retry` event when
    /// another attempt follows after `retry_in`.
    pub fn attempted(&self, attempt: u32, outcome: &CheckOutcome, retry_in: Option<Duration>) {
        let span = self.cx.span();
        denials(&span, attempt, &outcome.denied);
        if let Some(delay) = retry_in {
            span.add_event(
                "retry",
                vec![
                    KeyValue::new("runbox.attempt", i64::from(attempt)),
                    KeyValue::new("runbox.step.status", outcome.status.label()),
                    KeyValue::new("runbox.reason", short(&outcome.summary)),
                    KeyValue::new("runbox.retry.delay_ms", delay.as_millis() as i64),
                ],
            );
        }
    }

    /// Ends the span with the step's results (one, or one per `for_each` item).
    pub fn end(self, results: &[StepResult]) {
        let span = self.cx.span();
        let ran: Vec<&StepResult> = results.iter().filter(|r| r.skipped.is_none()).collect();
        // An apply's denials (a plan that was denied anything is not applied, so those
        // of an applied step are the apply's): the plans' were recorded per attempt.
        for result in results.iter().filter(|r| r.applied == Some(true)) {
            denials(&span, 0, &result.denied);
        }
        let worst = ran.iter().map(|r| r.status).max();
        let attempts = results.iter().map(|r| r.attempts).max().unwrap_or(0);
        span.set_attributes([
            KeyValue::new("cicd.pipeline.task.run.result", worst.map_or("skip", result_of)),
            KeyValue::new("runbox.step.status", worst.map_or("SKIPPED", Status::label)),
            KeyValue::new("runbox.step.attempts", i64::from(attempts)),
        ]);
        if results.iter().any(|r| r.item.is_some()) {
            span.set_attribute(KeyValue::new("runbox.step.items", results.len() as i64));
        }
        if results.iter().any(|r| r.applied.is_some()) {
            let applied = results.iter().any(|r| r.applied == Some(true));
            span.set_attribute(KeyValue::new("runbox.step.applied", applied));
        }
        if let Some(status @ (Status::Critical | Status::Unknown)) = worst {
            span.set_attribute(KeyValue::new("error.type", status.label()));
            let failed = ran
                .iter()
                .find(|r| r.status == status)
                .expect("the worst is one of them");
            span.set_status(opentelemetry::trace::Status::error(short(&failed.summary)));
        }
        span.end();
    }
}

fn denials(span: &opentelemetry::trace::SpanRef<'_>, attempt: u32, denied: &[String]) {
    for denial in denied {
        let mut attributes = vec![KeyValue::new("runbox.denial", short(denial))];
        if attempt > 0 {
            attributes.push(KeyValue::new("runbox.attempt", i64::from(attempt)));
        }
        span.add_event("denial", attributes);
    }
}

/// `cicd.pipeline.result` / `cicd.pipeline.task.run.result` of a status: a check that
/// found trouble failed; one that could not tell is an error.
fn result_of(status: Status) -> &'static str {
    match status {
        Status::Ok | Status::Warning => "success",
        Status::Critical => "failure",
        Status::Unknown => "error",
    }
}

/// `text` on one line, at most [`MAX_TEXT`] bytes.
fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    crate::text::truncate(line, MAX_TEXT).into_owned()
}

/// Why an export failed, in a few words when the exporter's (debug-formatted) error is
/// a refused connection, a timeout or an HTTP status; else its text, shortened.
fn reason(error: &str, timeout: Duration) -> String {
    if error.contains("ConnectionRefused") {
        "connection refused".to_string()
    } else if error.contains("TimedOut") || error.contains("timed out") {
        format!(
            "no answer within {} (OTEL_EXPORTER_OTLP_TIMEOUT)",
            humantime::format_duration(timeout)
        )
    } else if let Some(code) = error.split("Status Code: ").nth(1).and_then(|rest| rest.get(..3)) {
        format!("the collector answered HTTP {code}")
    } else {
        short(error)
    }
}

/// The OTLP exporter, counting failed exports so that the operator hears of them.
#[derive(Debug)]
struct Watched {
    inner: opentelemetry_otlp::SpanExporter,
    failures: Arc<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    log: bool,
    endpoint: String,
    timeout: Duration,
    /// Spans in failed exports.
    spans: AtomicUsize,
    /// Consecutive failed exports (0 after a success).
    running: AtomicUsize,
    last: Mutex<Option<String>>,
}

impl Failures {
    fn warning(&self) -> Option<String> {
        let spans = self.spans.load(Ordering::Relaxed);
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        Some(format!(
            "{spans} span{} could not be exported to {}: {last}",
            if spans == 1 { "" } else { "s" },
            self.endpoint
        ))
    }
}

impl SpanExporter for Watched {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len();
        let result = self.inner.export(batch).await;
        let failures = &self.failures;
        match &result {
            Ok(()) => failures.running.store(0, Ordering::Relaxed),
            Err(err) => {
                let text = reason(&err.to_string(), failures.timeout);
                failures.spans.fetch_add(count, Ordering::Relaxed);
                // Logged when exports start failing, not on every batch after that.
                if failures.log && failures.running.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(endpoint = %failures.endpoint, error = %text, "cannot export traces (further failures are not logged until an export succeeds)");
                }
                *failures.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_failures_read_in_a_few_words() {
        let timeout = Duration::from_secs(2);
        let refused = r#"Operation failed: reqwest::Error { kind: Request, url: "http://127.0.0.1:9/v1/traces", source: hyper_util::client::legacy::Error(Connect, ConnectError("tcp connect error", 127.0.0.1:9, Os { code: 111, kind: ConnectionRefused, message: "Connection refused" })) }"#;
        assert_eq!(reason(refused, timeout), "connection refused");
        let slow = r#"Operation failed: reqwest::Error { kind: Request, url: "http://127.0.0.1:1/v1/traces", source: TimedOut }"#;
        assert_eq!(
            reason(slow, timeout),
            "no answer within 2s (OTEL_EXPORTER_OTLP_TIMEOUT)"
        );
        let status = "OpenTelemetry trace export failed. Url: http://c/v1/traces, Status Code: 401, Response: b\"\"";
        assert_eq!(reason(status, timeout), "the collector answered HTTP 401");
        let other = format!("odd\n{}", "x".repeat(1000));
        assert_eq!(reason(&other, timeout), "odd");
    }
}
