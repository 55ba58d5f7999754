//! Prometheus text exposition format (version 0.0.4): run status, and per step its
//! status, duration, attempts and every metric it reported, labelled by runbook, step,
//! plugin (and metric name and unit).

use crate::result::RunResult;
use std::fmt::Write;

/// Renders `run` in the Prometheus text format.
pub fn render(run: &RunResult) -> String {
    let runbook = run.runbook.as_deref().unwrap_or("");
    let mut out = String::new();
    family(
        &mut out,
        "runbox_run_status",
        "gauge",
        "Worst status of the run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    );
    let _ = writeln!(
        out,
        "runbox_run_status{{runbook=\"{}\"}} {}",
        escape(runbook),
        run.status.exit_code()
    );
    family(
        &mut out,
        "runbox_run_duration_seconds",
        "gauge",
        "Wall time of the run.",
    );
    let _ = writeln!(
        out,
        "runbox_run_duration_seconds{{runbook=\"{}\"}} {}",
        escape(runbook),
        number(run.duration_ms / 1000.0)
    );

    let labels = |step: &crate::result::StepResult| {
        format!(
            "runbook=\"{}\",step=\"{}\",plugin=\"{}\",kind=\"{}\"",
            escape(runbook),
            escape(&step.id),
            escape(&step.plugin),
            if step.kind == crate::result::Kind::Check {
                "check"
            } else {
                "mitigation"
            }
        )
    };
    family(
        &mut out,
        "runbox_step_status",
        "gauge",
        "Status of each step: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, -1 skipped.",
    );
    for step in &run.steps {
        let value = if step.skipped.is_some() {
            -1
        } else {
            i32::from(step.status.exit_code())
        };
        let _ = writeln!(out, "runbox_step_status{{{}}} {value}", labels(step));
    }
    family(
        &mut out,
        "runbox_step_duration_seconds",
        "gauge",
        "Wall time of each step, all attempts included.",
    );
    for step in &run.steps {
        let _ = writeln!(
            out,
            "runbox_step_duration_seconds{{{}}} {}",
            labels(step),
            number(step.duration_ms / 1000.0)
        );
    }
    family(
        &mut out,
        "runbox_step_attempts",
        "gauge",
        "Attempts each step took (0 when skipped).",
    );
    for step in &run.steps {
        let _ = writeln!(out, "runbox_step_attempts{{{}}} {}", labels(step), step.attempts);
    }
    family(
        &mut out,
        "runbox_step_metric",
        "gauge",
        "A value a step measured; the metric label names it, unit gives its unit.",
    );
    for step in &run.steps {
        for metric in &step.metrics {
            let _ = writeln!(
                out,
                "runbox_step_metric{{{},metric=\"{}\",unit=\"{}\"}} {}",
                labels(step),
                escape(&metric.name),
                escape(&metric.unit),
                number(metric.value)
            );
        }
    }
    out
}

/// The `# HELP` and `# TYPE` lines of metric family `name` (`kind`: gauge, counter,
/// histogram).
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A family of one sample without labels.
pub(crate) fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A family with one sample per entry of `samples`, labelled `label="key"` (escaped).
pub(crate) fn by_label<'a, K: AsRef<str> + 'a, V: std::fmt::Display + 'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a K, &'a V)>,
) {
    family(out, name, kind, help);
    for (key, value) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", escape(key.as_ref()));
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(text: &str) -> String {
    crate::text::prometheus_label(text)
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{value}")
    }
}
