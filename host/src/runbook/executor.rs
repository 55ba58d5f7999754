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
use super::prepare::{PreparedStep, Runbook};
use crate::result::{Kind, PlanRecord, RunResult, Status, StepResult, timestamp};
use crate::runtime::sandbox::OutputCaps;
use crate::runtime::{CheckOutcome, Limits, Runtime};
use serde_json::{Value, json};
use std::collections::BTreeSet;
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
    let n = runbook.steps.len();
    let mut results: Vec<Option<StepResult>> = vec![None; n];
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
                        (options.progress)(Progress::Finished(&result));
                        results[i] = Some(result);
                        continue;
                    }
                }
                (options.progress)(Progress::Started(&step.id));
                let (runtime, runbook, options) = (runtime.clone(), runbook.clone(), options.clone());
                let deadline = run_deadline.map(|(at, _)| at);
                running.spawn(async move { (i, run_step(&runtime, &runbook, i, &options, deadline).await) });
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
        let (i, result) = joined.expect("step tasks do not panic");
        (options.progress)(Progress::Finished(&result));
        if matches!(result.status, Status::Critical | Status::Unknown)
            && runbook.steps[i].on_failure == super::manifest::OnFailure::Abort
            && aborted_by.is_none()
        {
            aborted_by = Some(result.id.clone());
        }
        results[i] = Some(result);
    }
    let steps: Vec<StepResult> = results
        .into_iter()
        .enumerate()
        .map(|(i, result)| {
            result.unwrap_or_else(|| {
                let reason = match (&aborted_by, options.stop.cause()) {
                    (Some(id), _) => format!("not run: step `{id}` failed and has `on_failure: abort`"),
                    (None, Some(cause)) => format!("not run: {cause}"),
                    (None, None) => "not run".to_string(),
                };
                let result = skipped(&runbook.steps[i], reason);
                (options.progress)(Progress::Finished(&result));
                result
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
    RunResult {
        runbook: Some(runbook.manifest.name.clone()),
        severity: runbook.manifest.severity.map(|s| s.label().to_string()),
        escalation: runbook.manifest.escalation.clone(),
        run_id: Some(options.run_id.clone()),
        started_at: Some(timestamp(started_at)),
        ended_at: Some(timestamp(SystemTime::now())),
        status,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        stopped: stopped.map(|cause| cause.to_string()),
        steps,
    }
}

fn lookup(runbook: &Runbook, results: &[Option<StepResult>], path: &[String]) -> Option<Value> {
    match path {
        [root, name] if root == "inputs" => runbook.inputs.get(name).cloned(),
        [root, id, rest @ ..] if root == "steps" => {
            let index = runbook.steps.iter().position(|s| &s.id == id)?;
            let result = results[index].as_ref()?;
            match rest {
                [field] if field == "status" => Some(Value::String(if result.skipped.is_some() {
                    "skipped".into()
                } else {
                    result.status.label().to_lowercase()
                })),
                [field] if field == "summary" => Some(Value::String(result.summary.clone())),
                [field] if field == "attempts" => Some(json!(result.attempts)),
                // Metric names may contain dots (`artifacts.builders.lag`): the rest of the path.
                [metrics, name @ ..] if metrics == "metrics" && !name.is_empty() => {
                    let name = name.join(".");
                    result.metrics.iter().find(|m| m.name == name).map(|m| json!(m.value))
                }
                _ => None,
            }
        }
        _ => None,
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

async fn run_step(
    runtime: &Runtime,
    runbook: &Runbook,
    index: usize,
    options: &RunOptions,
    run_deadline: Option<Instant>,
) -> StepResult {
    let step = &runbook.steps[index];
    let started_at = SystemTime::now();
    let started = Instant::now();
    // A check or plan has the step's timeout; the run's deadline cancels it through
    // `options.stop`. An apply is not cancelled, so its timeout is cut to what is left
    // of the run's deadline instead.
    let limits_now = || Limits {
        deadline: step.timeout,
        memory_bytes: step.memory_bytes,
        output: OutputCaps::default(),
    };
    let apply_limits = || Limits {
        deadline: match run_deadline {
            Some(at) => step
                .timeout
                .min(at.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1)),
            None => step.timeout,
        },
        ..limits_now()
    };

    let mut grants = step.grants.clone();
    grants.allow_metadata = options.allow_metadata;

    // Checks run; mitigations plan. Both retry on failure.
    let mut attempts = 0;
    let mut delay = step.retry.delay;
    let (mut outcome, plan) = loop {
        attempts += 1;
        let limits = limits_now();
        let call = async {
            match step.plugin.kind {
                Kind::Check => (
                    runtime.run_check(&step.plugin, &step.config, &grants, &limits).await,
                    None,
                ),
                Kind::Mitigation => runtime.plan(&step.plugin, &step.config, &grants, &limits).await,
            }
        };
        // Dropping the call cancels the plugin (wasmtime unwinds its fiber).
        let (outcome, plan) = tokio::select! {
            done = call => done,
            cause = options.stop.stopped() => (cancelled(&cause, started), None),
        };
        let failed = matches!(outcome.status, Status::Critical | Status::Unknown);
        if !failed || attempts >= step.retry.attempts || options.stop.cause().is_some() {
            break (outcome, plan);
        }
        tracing::debug!(step = %step.id, attempt = attempts, status = ?outcome.status, delay_ms = delay.as_millis() as u64, "retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = options.stop.stopped() => break (outcome, plan),
        }
        delay = Duration::from_secs_f64(delay.as_secs_f64() * step.retry.backoff);
    };

    let mut plan_record = None;
    let mut applied = None;
    if let Some(plan) = plan {
        let record = PlanRecord {
            summary: outcome.summary.clone(),
            changes: outcome.details.clone(),
            destructive: plan.destructive,
            notes: step.grants.plan_notes(),
        };
        outcome.summary = format!(
            "plan: {}{}",
            record.summary,
            if plan.destructive { " (destructive)" } else { "" }
        );
        applied = Some(false);
        let decision = if let Some(cause) = options.stop.cause() {
            Err((Status::Unknown, format!("not applied: {cause}")))
        } else if let Some(denial) = outcome.denied.first() {
            // The plan tried something its grants do not allow (a write while planning,
            // an ungranted host): it is not the plan to approve, dry run or not.
            Err((Status::Unknown, format!("not applied: the plan was denied: {denial}")))
        } else if !options.apply {
            Err((Status::Ok, "not applied (dry run: pass --apply to apply)".to_string()))
        } else if step.approval_required && !options.approve.contains(&step.id) {
            let text = format!(
                "{}\n{}",
                outcome.summary,
                record
                    .changes
                    .iter()
                    .map(|c| format!("  - {c}"))
                    .chain(record.notes.iter().map(|note| format!("  note: {note}")))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
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
        match decision {
            Err((status, why)) => {
                outcome.status = status;
                outcome.summary = format!("{} — {why}", outcome.summary);
            }
            Ok(approval) => {
                let (applied_outcome, was_applied) = match apply(
                    runtime,
                    runbook,
                    step,
                    options,
                    &grants,
                    &apply_limits(),
                    &plan,
                    &record,
                    approval,
                )
                .await
                {
                    Ok(outcome) => (outcome, true),
                    Err(refused) => (refused, false),
                };
                applied = Some(was_applied);
                outcome = CheckOutcome {
                    denied: [outcome.denied, applied_outcome.denied.clone()].concat(),
                    logs: [outcome.logs, applied_outcome.logs.clone()].concat(),
                    ..applied_outcome
                };
            }
        }
        plan_record = Some(record);
    }

    StepResult {
        id: step.id.clone(),
        plugin: step.plugin.info.name.clone(),
        kind: step.plugin.kind,
        status: outcome.status,
        summary: outcome.summary,
        details: outcome.details,
        metrics: outcome.metrics,
        attempts,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        skipped: None,
        started_at: timestamp(started_at),
        ended_at: timestamp(SystemTime::now()),
        denied: outcome.denied,
        logs: outcome.logs,
        plan: plan_record,
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
        outcome = runtime.apply(&step.plugin, &step.config, grants, limits, plan) => (outcome, "apply-finished"),
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
