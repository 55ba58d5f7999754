//! `runbox run`: prepare a runbook, run it (live progress, approvals, Ctrl-C), write the report.

use super::{parse_sets, print};
use crate::cli::RunArgs;
use crate::error::{Error, invalid};
use crate::output::{self, errln};
use crate::plugins::PluginPath;
use crate::report::{self, Format};
use crate::result::Status;
use crate::runbook::audit::AuditLog;
use crate::runbook::executor::{Progress, Prompt, RunOptions, Stop, StopCause, execute};
use crate::runbook::prepare::{Mode, prepare};
use crate::runtime::Runtime;
use std::io::IsTerminal;
use std::sync::Arc;

pub(crate) async fn run_runbook(
    runtime: Arc<Runtime>,
    plugin_path: &PluginPath,
    args: RunArgs,
    run_id: String,
    verbose: bool,
) -> Result<u8, Error> {
    // Tracing's settings are read (and a protocol runbox lacks refused) before anything
    // runs; the exporter starts only once the runbook is ready to run.
    let tracing = crate::telemetry::Config::from_env().map_err(invalid)?;
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
    let telemetry = match tracing {
        Some(config) => Some(config.start(false).map_err(invalid)?),
        None => None,
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
        telemetry: telemetry.clone(),
    };
    // Ctrl-C (or SIGTERM) stops the run: no new steps, checks cancelled, applies allowed
    // to finish; a second one abandons the applies too. Either way the report and the
    // audit log are written before runbox exits.
    let signals = tokio::spawn(watch_signals(options.stop.clone()));
    let result = execute(runtime, runbook, options).await;
    signals.abort();
    let rendered = report::render(&result, args.format, verbose);
    let written = match &args.output {
        Some(path) => output::write_file(path, &rendered)
            .map_err(|err| Error::Internal(format!("cannot write {}: {err}", path.display()))),
        None => print(&rendered),
    };
    // The trace is flushed before runbox exits, whatever happened to the report; a
    // collector that cannot be reached costs a warning, never the run's exit code.
    if let Some(telemetry) = telemetry
        && let Some(warning) = telemetry.shutdown().await
    {
        errln!("runbox: warning: {warning}");
    }
    written?;
    Ok(result.status.exit_code())
}

/// Progress lines for stderr, held back while an approval prompt is on the terminal.
#[derive(Default)]
pub(crate) struct HeldLines(std::sync::Mutex<Option<Vec<String>>>);

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

pub(crate) async fn watch_signals(stop: Stop) {
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
pub(crate) fn runbook_header(manifest: &crate::runbook::manifest::Manifest) -> String {
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
