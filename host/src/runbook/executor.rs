//! Runs a prepared runbook as a DAG.
//!
//! - A step starts when every step it `needs` has finished (whatever their status: a
//!   failed check is often what a mitigation's `when` looks for). At most `parallel`
//!   steps run at once.
//! - `when` is evaluated just before the step would start; false → skipped, with the
//!   condition as the reason.
//! - A check (or a mitigation's plan) that ends CRITICAL or UNKNOWN is retried per its
//!   `retry`, waiting `delay × backoff^(n-1)` before attempt n+1; `attempts` reports
//!   how many ran. Each attempt has the step's `timeout`.
//! - A failed step with `on_failure: abort` stops the scheduling of new steps; running
//!   ones finish, the rest are reported as not run.
//! - Mitigations always plan. They apply only with `--apply`, and, with
//!   `approval: required`, only with `--approve ID` or a yes at the prompt. Every apply
//!   is audited before and after; if the audit log cannot be written, nothing is applied.
//!   A plan the sandbox denied anything (a write while planning) is UNKNOWN and is not
//!   applied.
//! - A run can be stopped early ([`Stop`]): by its deadline or by Ctrl-C. No further
//!   step starts; running checks and plans are cancelled at once and reported UNKNOWN;
//!   a running apply finishes (within its own timeout, itself cut to the run's
//!   deadline), because abandoning a change half-made is worse than waiting for it,
//!   unless the operator abandons it (a second Ctrl-C), which is audited as such. The
//!   report is still produced, with every step accounted for.

use super::audit::{AuditLog, current_user};
use super::prepare::{Items, Mode, PreparedStep, Runbook, item_list, static_value};
use super::template::{self, Reference, StepField};
use crate::result::{ItemRecord, Kind, PlanRecord, RunResult, Status, StepResult, timestamp};
use crate::runtime::sandbox::OutputCaps;
use crate::runtime::{CheckOutcome, Limits, Runtime};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why a run stops early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    /// The run's deadline passed.
    Deadline(Duration),
    /// The operator pressed Ctrl-C (or sent SIGINT/SIGTERM).
    Interrupted,
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopCause::Deadline(limit) => write!(f, "the run's {} deadline passed", humantime::format_duration(*limit)),
            StopCause::Interrupted => f.write_str("interrupted (Ctrl-C)"),
        }
    }
}

/// Stops a run early: shared by the executor and whoever decides to stop it (the CLI's
/// signal handler, the run's deadline). Stopping happens in two degrees: `stop` (no new
/// steps, cancel checks and plans) and `abandon` (also give up waiting for applies).
#[derive(Clone)]
pub struct Stop {
    state: Arc<watch::Sender<(Option<StopCause>, bool)>>,
}

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

impl Stop {
    /// A run that has not been stopped.
    pub fn new() -> Stop {
        Stop {
            state: Arc::new(watch::channel((None, false)).0),
        }
    }

    /// Stops the run (the first cause is kept).
    pub fn stop(&self, cause: StopCause) {
        self.state.send_modify(|(current, _)| {
            current.get_or_insert(cause);
        });
    }

    /// Stops the run and gives up waiting for applies in progress.
    pub fn abandon(&self, cause: StopCause) {
        self.state.send_modify(|(current, abandon)| {
            current.get_or_insert(cause);
            *abandon = true;
        });
    }

    /// Why the run was stopped, if it was.
    pub fn cause(&self) -> Option<StopCause> {
        self.state.borrow().0.clone()
    }

    /// Resolves when the run is stopped.
    pub async fn stopped(&self) -> StopCause {
        let mut watcher = self.state.subscribe();
        let state = watcher.wait_for(|(cause, _)| cause.is_some()).await;
        state
            .expect("the sender lives in self")
            .0
            .clone()
            .expect("waited for it")
    }

    /// Resolves when applies in progress are to be abandoned.
    pub async fn abandoned(&self) {
        let mut watcher = self.state.subscribe();
        let _ = watcher.wait_for(|(_, abandon)| *abandon).await;
    }
}

/// Asks the operator to approve a plan: (step id, plan text) → yes?
pub type Prompt = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// What a run may do.
#[derive(Clone)]
pub struct RunOptions {
    /// Apply mitigations (otherwise they only plan).
    pub apply: bool,
    /// Steps approved on the command line.
    pub approve: BTreeSet<String>,
    /// Most steps running at once (≥ 1).
    pub parallel: usize,
    /// Asks the operator to approve a plan (step id, plan text) when a step requires
    /// approval that `approve` does not give; `None` when nobody can be asked.
    pub prompt: Option<Prompt>,
    /// Where applies are recorded.
    pub audit: Option<Arc<AuditLog>>,
    /// The run's id (audit lines carry it).
    pub run_id: String,
    /// Let plugins reach cloud-metadata addresses (operator only).
    pub allow_metadata: bool,
    /// Called when a step starts and when it finishes.
    pub progress: Arc<dyn Fn(Progress<'_>) + Send + Sync>,
    /// How long the whole run may take; no step runs past it.
    pub deadline: Option<Duration>,
    /// Stops the run early (the caller keeps a clone to trigger it).
    pub stop: Stop,
    /// Exports the run's trace (a span per run and per step), when tracing is on.
    pub telemetry: Option<crate::telemetry::Telemetry>,
}

/// A step's progress, for live output.
pub enum Progress<'a> {
    /// The step started.
    Started(&'a str),
    /// The step finished (or was skipped).
    Finished(&'a StepResult),
}

/// Runs `runbook`; never fails (every problem is a step result).
pub async fn execute(runtime: Arc<Runtime>, runbook: Arc<Runbook>, options: RunOptions) -> RunResult {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let run_deadline = options.deadline.map(|limit| (started + limit, limit));
    let deadline_timer = run_deadline.map(|(at, limit)| {
        let stop = options.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            stop.stop(StopCause::Deadline(limit));
        })
    });
    let trace = options.telemetry.as_ref().map(|telemetry| {
        let severity = runbook.manifest.severity.map(|s| s.label());
        telemetry.start_run(&runbook.manifest.name, severity, &options.run_id)
    });
    // A step that does not run is reported like one that finished, and traced.
    let report_skipped = |result: &StepResult| {
        (options.progress)(Progress::Finished(result));
        if let Some(trace) = &trace {
            trace.skipped(result);
        }
    };
    let n = runbook.steps.len();
    // One result per step, or one per item of a `for_each` step.
    let mut results: Vec<Option<Vec<StepResult>>> = vec![None; n];
    let mut launched = vec![false; n];
    let mut running = JoinSet::new();
    let mut aborted_by: Option<String> = None;
    loop {
        // Start (or skip) every step that is ready, until nothing changes.
        let mut changed = true;
        while changed && aborted_by.is_none() && options.stop.cause().is_none() {
            changed = false;
            for i in 0..n {
                if launched[i] || running.len() >= options.parallel.max(1) {
                    continue;
                }
                let step = &runbook.steps[i];
                if !step.needs.iter().all(|&j| results[j].is_some()) {
                    continue;
                }
                launched[i] = true;
                changed = true;
                if let Some((text, expr)) = &step.when {
                    let lookup = |path: &[String]| lookup(&runbook, &results, path);
                    if !expr.eval(&lookup) {
                        let result = skipped(step, format!("`when: {text}` is false"));
                        report_skipped(&result);
                        results[i] = Some(vec![result]);
                        continue;
                    }
                }
                (options.progress)(Progress::Started(&step.id));
                // Only a step that reads outputs gets them (a 1,000-step runbook of plain
                // checks does not gather them 1,000 times).
                let reads_outputs = !step.late_with.is_empty()
                    || step
                        .for_each
                        .as_ref()
                        .is_some_and(|for_each| matches!(for_each.items, Items::Output { .. }));
                let outputs = Arc::new(if reads_outputs {
                    Earlier::of(&runbook, &results)
                } else {
                    Earlier::default()
                });
                let (runtime, runbook, options) = (runtime.clone(), runbook.clone(), options.clone());
                let deadline = run_deadline.map(|(at, _)| at);
                let span = trace.as_ref().map(|trace| trace.start_step(step));
                running.spawn(async move {
                    let results = run_step(&runtime, &runbook, i, &options, deadline, &outputs, span.as_ref()).await;
                    if let Some(span) = span {
                        span.end(&results);
                    }
                    (i, results)
                });
            }
        }
        // A stop wakes the loop so that no further step starts; running ones end by
        // themselves (run_step watches the same signal).
        let joined = if options.stop.cause().is_some() {
            running.join_next().await
        } else {
            tokio::select! {
                joined = running.join_next() => joined,
                _ = options.stop.stopped() => continue,
            }
        };
        let Some(joined) = joined else {
            break;
        };
        let (i, step_results) = joined.expect("step tasks do not panic");
        for result in &step_results {
            (options.progress)(Progress::Finished(result));
        }
        if let Some(failed) = step_results
            .iter()
            .find(|result| result.skipped.is_none() && matches!(result.status, Status::Critical | Status::Unknown))
            && runbook.steps[i].on_failure == super::manifest::OnFailure::Abort
            && aborted_by.is_none()
        {
            aborted_by = Some(failed.id.clone());
        }
        results[i] = Some(step_results);
    }
    let steps: Vec<StepResult> = results
        .into_iter()
        .enumerate()
        .flat_map(|(i, result)| {
            result.unwrap_or_else(|| {
                let reason = match (&aborted_by, options.stop.cause()) {
                    (Some(id), _) => format!("not run: step `{id}` failed and has `on_failure: abort`"),
                    (None, Some(cause)) => format!("not run: {cause}"),
                    (None, None) => "not run".to_string(),
                };
                let result = skipped(&runbook.steps[i], reason);
                report_skipped(&result);
                vec![result]
            })
        })
        .collect();
    let mut status = steps
        .iter()
        .filter(|s| s.skipped.is_none())
        .map(|s| s.status)
        .max()
        .unwrap_or(Status::Ok);
    if let Some(timer) = deadline_timer {
        timer.abort();
    }
    let stopped = options.stop.cause();
    if stopped.is_some() && launched.iter().any(|launched| !launched) {
        // Steps that never ran were not found fine: the run is not an all-clear.
        status = status.max(Status::Unknown);
    }
    let result = RunResult {
        runbook: Some(runbook.manifest.name.clone()),
        severity: runbook.manifest.severity.map(|s| s.label().to_string()),
        escalation: runbook.manifest.escalation.clone(),
        run_id: Some(options.run_id.clone()),
        started_at: Some(timestamp(started_at)),
        ended_at: Some(timestamp(SystemTime::now())),
        status,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        stopped: stopped.as_ref().map(|cause| cause.to_string()),
        steps,
    };
    if let Some(trace) = trace {
        trace.end(&result, stopped.as_ref());
    }
    result
}

fn lookup(runbook: &Runbook, results: &[Option<Vec<StepResult>>], path: &[String]) -> Option<Value> {
    match path {
        [root, name] if root == "inputs" => runbook.inputs.get(name).cloned(),
        [root, id, rest @ ..] if root == "steps" => {
            let index = runbook.steps.iter().position(|s| &s.id == id)?;
            let all = results[index].as_ref()?;
            match rest {
                [field] if field == "status" => Some(step_field(all, StepField::Status)),
                [field] if field == "summary" => Some(step_field(all, StepField::Summary)),
                [field] if field == "attempts" => Some(json!(all.iter().map(|r| r.attempts).max().unwrap_or(0))),
                // Metric names may contain dots (`artifacts.builders.lag`): the rest of the path.
                [metrics, name @ ..] if metrics == "metrics" && !name.is_empty() && all.len() == 1 => {
                    let name = name.join(".");
                    all[0].metrics.iter().find(|m| m.name == name).map(|m| json!(m.value))
                }
                [outputs, name] if outputs == "outputs" && all.len() == 1 && all[0].item.is_none() => {
                    all[0].outputs.get(name).cloned()
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A finished step's status or summary, as `when:` and templates read it: a `for_each`
/// step reads as its worst item (skipped only when every item was), and its summary is
/// "N items, M run".
fn step_field(all: &[StepResult], field: StepField) -> Value {
    let ran = || all.iter().filter(|r| r.skipped.is_none());
    Value::String(match field {
        StepField::Status => match ran().map(|r| r.status).max() {
            None => "skipped".into(),
            Some(status) => status.label().to_lowercase(),
        },
        StepField::Summary => match all {
            [one] => one.summary.clone(),
            _ => format!("{} items, {} run", all.len(), ran().count()),
        },
    })
}

/// What a step about to run may read of the finished steps, by step id: the outputs of
/// those that ran once, and every one's status and summary as `when:` reads them.
#[derive(Default)]
struct Earlier {
    outputs: HashMap<String, BTreeMap<String, Value>>,
    fields: HashMap<(String, StepField), Value>,
}

impl Earlier {
    fn of(runbook: &Runbook, results: &[Option<Vec<StepResult>>]) -> Earlier {
        let mut earlier = Earlier::default();
        for (step, result) in runbook.steps.iter().zip(results) {
            let Some(all) = result.as_deref() else { continue };
            if let [one] = all
                && one.item.is_none()
                && !one.outputs.is_empty()
            {
                earlier.outputs.insert(step.id.clone(), one.outputs.clone());
            }
            for field in [StepField::Status, StepField::Summary] {
                earlier.fields.insert((step.id.clone(), field), step_field(all, field));
            }
        }
        earlier
    }
}

fn skipped(step: &PreparedStep, reason: String) -> StepResult {
    let now = timestamp(SystemTime::now());
    StepResult {
        id: step.id.clone(),
        plugin: step.plugin.info.name.clone(),
        kind: step.plugin.kind,
        status: Status::Ok,
        summary: format!("skipped: {reason}"),
        details: Vec::new(),
        metrics: Vec::new(),
        outputs: Default::default(),
        item: None,
        attempts: 0,
        duration_ms: 0.0,
        skipped: Some(reason),
        started_at: now.clone(),
        ended_at: now,
        denied: Vec::new(),
        logs: Vec::new(),
        plan: None,
        applied: None,
    }
}

/// The outcome of a check or plan cancelled by a stop.
fn cancelled(cause: &StopCause, started: Instant) -> CheckOutcome {
    let summary = format!("stopped after {}: {cause}", elapsed_text(started));
    CheckOutcome::fault(Status::Unknown, summary, started)
}

/// `1.2 s` since `started`, for messages.
fn elapsed_text(started: Instant) -> String {
    crate::report::format_ms(started.elapsed().as_secs_f64() * 1e3)
}

/// One run of a step: the whole step, or one item of a `for_each` step.
struct Run<'a> {
    /// `(index, count, value)` of its item.
    item: Option<(usize, usize, Value)>,
    /// The config it ran with (when it could be rendered).
    config: Option<std::borrow::Cow<'a, Value>>,
    outcome: CheckOutcome,
    plan: Option<crate::runtime::bindings::Plan>,
    record: Option<PlanRecord>,
    applied: Option<bool>,
    attempts: u32,
    /// Why it was not run, when it was skipped.
    skipped: Option<String>,
    started_at: SystemTime,
    started: Instant,
}

async fn run_step(
    runtime: &Runtime,
    runbook: &Runbook,
    index: usize,
    options: &RunOptions,
    run_deadline: Option<Instant>,
    earlier: &Earlier,
    span: Option<&crate::telemetry::StepSpan>,
) -> Vec<StepResult> {
    let step = &runbook.steps[index];
    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut grants = step.grants.clone();
    grants.allow_metadata = options.allow_metadata;
    grants.traceparent = span.map(|span| span.traceparent());

    // The items, if the step has `for_each`: a list that is missing, too long or not a
    // list runs nothing.
    let items: Vec<Option<(usize, usize, Value)>> = match &step.for_each {
        None => vec![None],
        Some(for_each) => {
            let value = match &for_each.items {
                Items::Known(value) => Ok(value.clone()),
                Items::Output { step: from, name } => earlier.outputs.get(from).and_then(|o| o.get(name)).cloned().ok_or_else(|| {
                    format!(
                        "`for_each`: step `{from}` gave no output `{name}` (guard the step with `when: steps.{from}.outputs.{name}`)"
                    )
                }),
            };
            match value.and_then(|value| item_list(&value, for_each.max_items)) {
                Err(message) => return vec![result_of(step, fault_run(None, message, started_at, started))],
                Ok(list) if list.is_empty() => return vec![skipped(step, "`for_each`: the list is empty".into())],
                Ok(list) => {
                    let count = list.len();
                    list.into_iter()
                        .enumerate()
                        .map(|(k, value)| Some((k, count, value)))
                        .collect()
                }
            }
        }
    };

    // Checks run and mitigations plan, item after item, each with its own retries.
    let mut runs: Vec<Run<'_>> = Vec::new();
    for item in items {
        let (item_started_at, item_started) = (SystemTime::now(), Instant::now());
        let failed_before = runs
            .iter()
            .find(|run| matches!(run.outcome.status, Status::Critical | Status::Unknown));
        if let Some(cause) = options.stop.cause() {
            runs.push(fault_run(
                item,
                format!("not run: {cause}"),
                item_started_at,
                item_started,
            ));
            continue;
        }
        if let (Some(failed), super::manifest::OnFailure::Abort) = (failed_before, step.on_failure) {
            let which = failed.item.as_ref().map(|(k, _, _)| *k).unwrap_or(0);
            let reason = format!("not run: item {which} failed and the step has `on_failure: abort`");
            let mut run = fault_run(item, reason.clone(), item_started_at, item_started);
            run.outcome.status = Status::Ok;
            run.skipped = Some(reason);
            runs.push(run);
            continue;
        }
        let config = match config_for(runbook, step, earlier, item.as_ref().map(|(_, _, value)| value)) {
            Ok(config) => config,
            Err(message) => {
                runs.push(fault_run(item, message, item_started_at, item_started));
                continue;
            }
        };
        let (outcome, plan, attempts) = attempt(runtime, step, &config, &grants, options, item_started, span).await;
        runs.push(Run {
            item,
            config: Some(config),
            outcome,
            plan,
            record: None,
            applied: None,
            attempts,
            skipped: None,
            started_at: item_started_at,
            started: item_started,
        });
    }

    if step.plugin.kind == Kind::Mitigation {
        decide_and_apply(runtime, runbook, step, options, &grants, run_deadline, &mut runs).await;
    }
    runs.into_iter().map(|run| result_of(step, run)).collect()
}

/// A run that did not get to call the plugin: UNKNOWN with `message`.
fn fault_run<'a>(
    item: Option<(usize, usize, Value)>,
    message: String,
    started_at: SystemTime,
    started: Instant,
) -> Run<'a> {
    Run {
        item,
        config: None,
        outcome: CheckOutcome::fault(Status::Unknown, message, started),
        plan: None,
        record: None,
        applied: None,
        attempts: 0,
        skipped: None,
        started_at,
        started,
    }
}

/// The step's config for one run: the prepared config plus its late keys, rendered in
/// one pass with the outputs of earlier steps and the current item (a value substituted
/// is never read as a template again), then checked against the plugin's schema.
fn config_for<'a>(
    runbook: &Runbook,
    step: &'a PreparedStep,
    earlier: &Earlier,
    item: Option<&Value>,
) -> Result<std::borrow::Cow<'a, Value>, String> {
    if step.late_with.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(&step.config));
    }
    let resolve = |reference: &Reference| -> Result<Value, String> {
        match reference {
            Reference::Input(_) | Reference::Env(_) => {
                static_value(reference, &runbook.inputs, &runbook.manifest, Mode::Run)
            }
            Reference::Secret(name) => Ok(Value::String(Reference::secret_placeholder(name))),
            Reference::Output { step: from, name } => earlier
                .outputs
                .get(from)
                .and_then(|o| o.get(name))
                .cloned()
                .ok_or_else(|| format!("`{reference}`: step `{from}` gave no output `{name}`")),
            Reference::Step { step: from, field } => earlier
                .fields
                .get(&(from.clone(), *field))
                .cloned()
                .ok_or_else(|| format!("`{reference}`: step `{from}` has not finished")),
            Reference::Item(None) => item.cloned().ok_or_else(|| format!("`{reference}`: no current item")),
            Reference::Item(Some(field)) => match item {
                Some(Value::Object(map)) => map
                    .get(field)
                    .cloned()
                    .ok_or_else(|| format!("`{reference}`: the item has no field `{field}`")),
                _ => Err(format!("`{reference}`: the item is not an object with fields")),
            },
        }
    };
    let mut config = step.config.clone();
    let map = config.as_object_mut().expect("a step's config is an object");
    for (key, raw) in &step.late_with {
        let value = template::render_value(raw, &resolve).map_err(|err| format!("config `{key}`: {err}"))?;
        map.insert(key.clone(), value);
    }
    crate::config::coerce(&step.plugin.info.config_schema, &mut config);
    let violations = step.plugin.config_violations(&config);
    if !violations.is_empty() {
        return Err(format!(
            "config after filling in outputs and items: {} (plugin `{}`)",
            crate::text::visible(&violations.join("; ")),
            step.plugin.info.name
        ));
    }
    Ok(std::borrow::Cow::Owned(config))
}

/// Runs a check, or a mitigation's plan, with the step's retries: `(outcome, plan, attempts)`.
async fn attempt(
    runtime: &Runtime,
    step: &PreparedStep,
    config: &Value,
    grants: &crate::capabilities::Grants,
    options: &RunOptions,
    started: Instant,
    span: Option<&crate::telemetry::StepSpan>,
) -> (CheckOutcome, Option<crate::runtime::bindings::Plan>, u32) {
    let mut attempts = 0;
    let mut delay = step.retry.delay;
    loop {
        attempts += 1;
        let limits = Limits {
            deadline: step.timeout,
            memory_bytes: step.memory_bytes,
            output: OutputCaps::default(),
        };
        let call = async {
            match step.plugin.kind {
                Kind::Check => (runtime.run_check(&step.plugin, config, grants, &limits).await, None),
                Kind::Mitigation => runtime.plan(&step.plugin, config, grants, &limits).await,
            }
        };
        // Dropping the call cancels the plugin (wasmtime unwinds its fiber).
        let (outcome, plan) = tokio::select! {
            done = call => done,
            cause = options.stop.stopped() => (cancelled(&cause, started), None),
        };
        let failed = matches!(outcome.status, Status::Critical | Status::Unknown);
        let last = !failed || attempts >= step.retry.attempts || options.stop.cause().is_some();
        if let Some(span) = span {
            span.attempted(attempts, &outcome, (!last).then_some(delay));
        }
        if last {
            return (outcome, plan, attempts);
        }
        tracing::debug!(step = %step.id, attempt = attempts, status = ?outcome.status, delay_ms = delay.as_millis() as u64, "retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = options.stop.stopped() => return (outcome, plan, attempts),
        }
        delay = Duration::from_secs_f64(delay.as_secs_f64() * step.retry.backoff);
    }
}

/// A mitigation's plans decide once for the whole step (every item of a `for_each`):
/// a dry run applies nothing; approval, by `--approve ID` or at the prompt (which shows
/// every item's plan), covers the set. A plan that failed or was denied is not applied,
/// nor one without changes (which needs no approval); the others are, in list order,
/// each audited. With `on_failure: abort`, an apply that
/// fails stops the applies after it.
async fn decide_and_apply(
    runtime: &Runtime,
    runbook: &Runbook,
    step: &PreparedStep,
    options: &RunOptions,
    grants: &crate::capabilities::Grants,
    run_deadline: Option<Instant>,
    runs: &mut [Run<'_>],
) {
    for run in runs.iter_mut() {
        if let Some(plan) = &run.plan {
            let record = PlanRecord {
                summary: run.outcome.summary.clone(),
                changes: run.outcome.details.clone(),
                destructive: plan.destructive,
                notes: step.grants.plan_notes(),
            };
            run.outcome.summary = format!(
                "plan: {}{}",
                record.summary,
                if plan.destructive { " (destructive)" } else { "" }
            );
            run.record = Some(record);
            run.applied = Some(false);
        }
    }
    // Which runs could be applied, and why the others are not.
    let mut candidates = Vec::new();
    for (k, run) in runs.iter_mut().enumerate() {
        if run.plan.is_none() {
            continue;
        }
        if let Some(cause) = options.stop.cause() {
            refuse(run, Status::Unknown, format!("not applied: {cause}"));
        } else if let Some(denial) = run.outcome.denied.first() {
            // The plan tried something its grants do not allow (a write while planning,
            // an ungranted host): it is not the plan to approve, dry run or not.
            let why = format!("not applied: the plan was denied: {denial}");
            refuse(run, Status::Unknown, why);
        } else if matches!(run.outcome.status, Status::Critical | Status::Unknown) {
            let why = "not applied: the plan failed".to_string();
            refuse(run, run.outcome.status, why);
        } else if run.record.as_ref().is_some_and(|record| record.changes.is_empty()) {
            // Nothing to change: nothing to approve, apply or audit.
            refuse(
                run,
                Status::Ok,
                "nothing to apply (the plan has no changes)".to_string(),
            );
        } else {
            candidates.push(k);
        }
    }
    if candidates.is_empty() {
        return;
    }
    let decision = if !options.apply {
        Err((Status::Ok, "not applied (dry run: pass --apply to apply)".to_string()))
    } else if step.approval_required && !options.approve.contains(&step.id) {
        let text = candidates
            .iter()
            .map(|&k| {
                let run = &runs[k];
                let record = run.record.as_ref().expect("a candidate has a plan");
                let head = match &run.item {
                    Some((index, count, value)) => {
                        format!(
                            "item {index} of {count} ({}): {}",
                            item_text(value),
                            run.outcome.summary
                        )
                    }
                    None => run.outcome.summary.clone(),
                };
                format!(
                    "{head}\n{}",
                    record
                        .changes
                        .iter()
                        .map(|c| format!("  - {c}"))
                        .chain(record.notes.iter().map(|note| format!("  note: {note}")))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        match &options.prompt {
            Some(prompt) => {
                let prompt = prompt.clone();
                let id = step.id.clone();
                let answer = tokio::task::spawn_blocking(move || prompt(&id, &text));
                let yes = tokio::select! {
                    yes = answer => yes.unwrap_or(false),
                    _ = options.stop.stopped() => false,
                };
                if yes {
                    Ok("approved at the prompt")
                } else {
                    Err((
                        Status::Warning,
                        "not applied: approval refused at the prompt".to_string(),
                    ))
                }
            }
            None => Err((
                Status::Warning,
                format!("not applied: approval required (pass --approve {})", step.id),
            )),
        }
    } else if step.approval_required {
        Ok("approved with --approve")
    } else {
        Ok("approval not required")
    };
    let approval = match decision {
        Err((status, why)) => {
            for &k in &candidates {
                refuse(&mut runs[k], status, why.clone());
            }
            return;
        }
        Ok(approval) => approval,
    };
    let mut failed: Option<usize> = None;
    for &k in &candidates {
        let run = &mut runs[k];
        if let Some(cause) = options.stop.cause() {
            refuse(run, Status::Unknown, format!("not applied: {cause}"));
            continue;
        }
        if let (Some(which), super::manifest::OnFailure::Abort) = (failed, step.on_failure) {
            let why = format!("not applied: the apply of item {which} failed and the step has `on_failure: abort`");
            refuse(run, Status::Unknown, why);
            continue;
        }
        // An apply is not cancelled by a stop, so its timeout is cut to what is left of
        // the run's deadline instead.
        let limits = Limits {
            deadline: match run_deadline {
                Some(at) => step
                    .timeout
                    .min(at.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1)),
                None => step.timeout,
            },
            memory_bytes: step.memory_bytes,
            output: OutputCaps::default(),
        };
        let plan = run.plan.as_ref().expect("a candidate has a plan");
        let record = run.record.as_ref().expect("a candidate has a plan");
        let config = run.config.as_deref().expect("a planned run has a config");
        let item = run.item.as_ref().map(|(index, count, value)| (*index, *count, value));
        let (applied_outcome, was_applied) = match apply(
            runtime, runbook, step, options, grants, &limits, plan, record, config, item, approval,
        )
        .await
        {
            Ok(outcome) => (outcome, true),
            Err(refused) => (refused, false),
        };
        if matches!(applied_outcome.status, Status::Critical | Status::Unknown) && failed.is_none() {
            failed = Some(run.item.as_ref().map(|(index, _, _)| *index).unwrap_or(0));
        }
        run.applied = Some(was_applied);
        let planned = std::mem::replace(&mut run.outcome, applied_outcome);
        run.outcome.denied = [planned.denied, std::mem::take(&mut run.outcome.denied)].concat();
        run.outcome.logs = [planned.logs, std::mem::take(&mut run.outcome.logs)].concat();
    }
}

/// A planned run that is not applied, with `status` and why.
fn refuse(run: &mut Run<'_>, status: Status, why: String) {
    run.outcome.status = status;
    run.outcome.summary = format!("{} — {why}", run.outcome.summary);
}

/// An item's value as one short, inert line.
fn item_text(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    crate::text::truncate(&crate::text::visible(&text), 120).into_owned()
}

/// The result a run reports.
fn result_of(step: &PreparedStep, run: Run<'_>) -> StepResult {
    let Run {
        item,
        outcome,
        record,
        applied,
        attempts,
        skipped,
        started_at,
        started,
        ..
    } = run;
    let (id, item, details) = match item {
        None => (step.id.clone(), None, outcome.details),
        Some((index, of, value)) => {
            let line = format!("item {index} of {of}: {}", item_text(&value));
            (
                format!("{}[{index}]", step.id),
                Some(ItemRecord {
                    step: step.id.clone(),
                    index,
                    of,
                    value,
                }),
                std::iter::once(line).chain(outcome.details).collect(),
            )
        }
    };
    StepResult {
        id,
        plugin: step.plugin.info.name.clone(),
        kind: step.plugin.kind,
        status: outcome.status,
        skipped,
        summary: outcome.summary,
        details,
        metrics: outcome.metrics,
        outputs: outcome.outputs,
        item,
        attempts,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        started_at: timestamp(started_at),
        ended_at: timestamp(SystemTime::now()),
        denied: outcome.denied,
        logs: outcome.logs,
        plan: record,
        applied,
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    runtime: &Runtime,
    runbook: &Runbook,
    step: &PreparedStep,
    options: &RunOptions,
    grants: &crate::capabilities::Grants,
    limits: &Limits,
    plan: &crate::runtime::bindings::Plan,
    record: &PlanRecord,
    config: &Value,
    item: Option<(usize, usize, &Value)>,
    approval: &str,
) -> Result<CheckOutcome, CheckOutcome> {
    let entry = |event: &str, outcome: Option<&CheckOutcome>| {
        json!({
            "time": timestamp(SystemTime::now()),
            "event": event,
            "run_id": options.run_id,
            "user": current_user(),
            "runbook": runbook.manifest.name,
            "runbook_file": runbook.file.display().to_string(),
            "step": step.id,
            "plugin": step.plugin.info.name,
            "plugin_sha256": step.plugin.digest,
            "approval": approval,
            "item": item.map(|(index, of, value)| json!({"index": index, "of": of, "value": value})),
            "plan": {"summary": record.summary, "changes": record.changes, "destructive": record.destructive},
            "outcome": outcome.map(|o| json!({"status": o.status, "summary": o.summary, "changes": o.details})),
        })
    };
    let refuse = |why: String| CheckOutcome::fault(Status::Unknown, format!("not applied: {why}"), Instant::now());
    let Some(audit) = &options.audit else {
        return Err(refuse("no audit log is open".into()));
    };
    if let Err(err) = audit.record(&entry("apply-started", None)) {
        return Err(refuse(format!(
            "cannot write the audit log {}: {err}",
            audit.path().display()
        )));
    }
    // An apply is not cancelled by a stop: it runs to its own deadline unless the
    // operator abandons it, and then the audit log says so.
    let started = Instant::now();
    let (outcome, event) = tokio::select! {
        outcome = runtime.apply(&step.plugin, config, grants, limits, plan) => (outcome, "apply-finished"),
        _ = options.stop.abandoned() => (
            CheckOutcome::fault(
                Status::Unknown,
                format!(
                    "apply abandoned by the operator after {}: whether it changed anything is unknown — check the target before running it again",
                    elapsed_text(started)
                ),
                started,
            ),
            "apply-abandoned",
        ),
    };
    if let Err(err) = audit.record(&entry(event, Some(&outcome))) {
        tracing::error!(step = %step.id, error = %err, "could not record the end of an apply in the audit log");
    }
    Ok(outcome)
}
