//! Reporters: turn a [`RunResult`] into what people and machines read.
//!
//! - `human`: one block per step, status first, then metrics, details and denials;
//!   for a runbook, a header and a summary table;
//! - `json`: the shape documented in docs/design.md, pretty-printed;
//! - `nagios`: `SERVICE STATUS - summary | perfdata`, then details as long output;
//! - `junit`: JUnit XML, one testcase per step ([`junit`]);
//! - `prometheus`: text exposition format ([`prometheus`]);
//! - `markdown`: an incident timeline ([`markdown`]).

mod junit;
mod markdown;
pub(crate) mod prometheus;

use crate::result::{MetricResult, RunResult, Status};
use crate::text;
use std::fmt::Write;

/// Output formats of `runbox check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: status, summary, metrics, details, denials.
    Human,
    /// Machine-readable, the shape documented in docs/design.md.
    Json,
    /// One Nagios plugin line with perfdata, then details.
    Nagios,
    /// JUnit XML: one testcase per step (CRITICAL: failure, UNKNOWN: error).
    Junit,
    /// Prometheus text exposition: status, duration, attempts and metrics per step.
    Prometheus,
    /// A Markdown incident timeline: each step's start, end, result and what was applied.
    Markdown,
}

/// Renders `run` in `format`. `verbose` adds plugin logs to human output.
pub fn render(run: &RunResult, format: Format, verbose: bool) -> String {
    match format {
        Format::Human => human(run, verbose),
        Format::Json => serde_json::to_string_pretty(run).expect("results serialize") + "\n",
        Format::Nagios => nagios(run),
        Format::Junit => junit::render(run),
        Format::Prometheus => prometheus::render(run),
        Format::Markdown => markdown::render(run),
    }
}

fn human(run: &RunResult, verbose: bool) -> String {
    if run.runbook.is_some() {
        return human_runbook(run, verbose);
    }
    let mut out = String::new();
    for step in &run.steps {
        let _ = writeln!(out, "{:<8}  {}  {}", step.status.label(), step.id, step.summary);
        for metric in &step.metrics {
            let _ = writeln!(out, "          {}", human_metric(metric));
        }
        for line in &step.details {
            let _ = writeln!(out, "          {line}");
        }
        // The first denial often is the summary already ("sandbox: ..."); say it once.
        for denial in step
            .denied
            .iter()
            .filter(|denial| step.summary != format!("sandbox: {denial}"))
        {
            let _ = writeln!(out, "          denied: {denial}");
        }
        if verbose {
            for log in &step.logs {
                let _ = writeln!(out, "          [{}] {}", log.level, log.message);
            }
        }
    }
    if run.steps.len() > 1 || run.runbook.is_some() {
        let _ = writeln!(out, "{} in {:.0} ms", run.status.label(), run.duration_ms);
    }
    out
}

/// A runbook: header, one table row per step, then what needs attention.
fn human_runbook(run: &RunResult, verbose: bool) -> String {
    let mut out = String::new();
    let name = run.runbook.as_deref().unwrap_or("runbook");
    let _ = write!(out, "{name}");
    if let Some(severity) = &run.severity {
        let _ = write!(out, " ({severity})");
    }
    out.push('\n');
    let width = run.steps.iter().map(|s| s.id.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<8}  {:>8}  {:>5}  SUMMARY",
        "STEP", "STATUS", "TIME", "TRIES"
    );
    for step in &run.steps {
        let status = if step.skipped.is_some() {
            "SKIPPED"
        } else {
            step.status.label()
        };
        let time = if step.skipped.is_some() {
            "-".to_string()
        } else {
            format_ms(step.duration_ms)
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<8}  {:>8}  {:>5}  {}",
            step.id, status, time, step.attempts, step.summary
        );
    }
    let attention: Vec<_> = run
        .steps
        .iter()
        .filter(|s| {
            s.skipped.is_none() && (s.status != Status::Ok || !s.denied.is_empty() || s.plan.is_some() || verbose)
        })
        .collect();
    for step in attention {
        let _ = writeln!(out, "\n{} ({}): {}", step.id, step.plugin, step.status.label());
        for metric in &step.metrics {
            let _ = writeln!(out, "  {}", human_metric(metric));
        }
        if let Some(plan) = &step.plan {
            let applied = if step.applied == Some(true) {
                "applied"
            } else {
                "planned"
            };
            let _ = writeln!(
                out,
                "  {applied}: {}{}",
                plan.summary,
                if plan.destructive { " (destructive)" } else { "" }
            );
            for change in &plan.changes {
                let _ = writeln!(out, "    - {change}");
            }
            for note in &plan.notes {
                let _ = writeln!(out, "    note: {note}");
            }
        } else {
            for line in &step.details {
                let _ = writeln!(out, "  {line}");
            }
        }
        for denial in &step.denied {
            let _ = writeln!(out, "  denied: {denial}");
        }
        if verbose {
            for log in &step.logs {
                let _ = writeln!(out, "  [{}] {}", log.level, log.message);
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{}: {name} in {}",
        run.status.label(),
        format_ms(run.duration_ms)
    );
    if let Some(stopped) = &run.stopped {
        let _ = writeln!(out, "Stopped early: {stopped}");
    }
    if run.status != Status::Ok
        && let Some(escalation) = &run.escalation
    {
        let _ = writeln!(out, "Escalation: {}", escalation.trim());
    }
    out
}

/// `12 ms`, `1.4 s`.
pub(crate) fn format_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn human_metric(metric: &MetricResult) -> String {
    let mut text = format!("{} = {}{}", metric.name, format_value(metric.value), metric.unit);
    if let Some(warn) = &metric.warn {
        let _ = write!(text, "  warn {warn}");
    }
    if let Some(crit) = &metric.crit {
        let _ = write!(text, "  crit {crit}");
    }
    text
}

pub(crate) fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Nagios plugin output: first line `NAME STATUS - summary | perfdata`, then one line
/// per detail (long output). Perfdata is `'label'=value[UOM];warn;crit;min;max`.
fn nagios(run: &RunResult) -> String {
    let name = match (&run.runbook, run.steps.as_slice()) {
        (Some(runbook), _) => runbook.clone(),
        (None, [step]) => step.plugin.clone(),
        (None, _) => "runbox".into(),
    };
    let summary = match run.steps.as_slice() {
        [step] => step.summary.clone(),
        steps => {
            let not_ok: Vec<String> = steps
                .iter()
                .filter(|s| s.status != Status::Ok)
                .map(|s| format!("{} {}", s.id, s.status.label()))
                .collect();
            format!(
                "{} steps, {}",
                steps.len(),
                if not_ok.is_empty() {
                    "all OK".into()
                } else {
                    not_ok.join(", ")
                }
            )
        }
    };
    let prefix_labels = run.steps.len() > 1;
    let perfdata: Vec<String> = run
        .steps
        .iter()
        .flat_map(|step| {
            step.metrics.iter().map(move |metric| {
                let label = if prefix_labels {
                    format!("{}.{}", step.id, metric.name)
                } else {
                    metric.name.clone()
                };
                perfdata(&label, metric)
            })
        })
        .collect();
    let mut out = format!(
        "{} {} - {}",
        text::nagios_text(&name.to_uppercase()),
        run.status.label(),
        text::nagios_text(&summary)
    );
    if !perfdata.is_empty() {
        let _ = write!(out, " | {}", perfdata.join(" "));
    }
    out.push('\n');
    for step in &run.steps {
        for line in step.details.iter().chain(step.denied.iter()) {
            let _ = writeln!(out, "{}", text::nagios_text(line));
        }
    }
    out
}

/// One perfdata item, `'label'=value[UOM];[warn];[crit];[min];[max]`, as the Nagios
/// plugin guidelines define it: the label cannot end itself or start another item, a
/// value that is not a finite number is `U`, and thresholds that are not ranges are
/// left out (results carry only valid ones; this is the last guard).
fn perfdata(label: &str, metric: &MetricResult) -> String {
    let optional = |value: Option<f64>| value.filter(|v| v.is_finite()).map(format_value).unwrap_or_default();
    let range = |range: &Option<String>| {
        range
            .as_deref()
            .filter(|r| text::is_nagios_range(r))
            .unwrap_or("")
            .to_string()
    };
    let value = if metric.value.is_finite() {
        format!("{}{}", format_value(metric.value), nagios_unit(&metric.unit))
    } else {
        "U".to_string()
    };
    let text = format!(
        "'{}'={value};{};{};{};{}",
        text::nagios_label(label),
        range(&metric.warn),
        range(&metric.crit),
        optional(metric.min),
        optional(metric.max),
    );
    text.trim_end_matches(';').to_string()
}

/// Nagios accepts only these units of measure; others are dropped from perfdata.
fn nagios_unit(unit: &str) -> &str {
    match unit {
        "s" | "ms" | "us" | "%" | "B" | "KB" | "MB" | "GB" | "TB" | "c" => unit,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Kind, StepResult};

    fn run(status: Status, metrics: Vec<MetricResult>) -> RunResult {
        RunResult {
            runbook: None,
            severity: None,
            escalation: None,
            run_id: None,
            started_at: None,
            ended_at: None,
            status,
            duration_ms: 1.5,
            stopped: None,
            steps: vec![StepResult {
                id: "redis-ping".into(),
                plugin: "redis-ping".into(),
                kind: Kind::Check,
                status,
                summary: "PONG | fine\nreally".into(),
                details: vec!["role: master".into()],
                metrics,
                outputs: Default::default(),
                item: None,
                attempts: 1,
                duration_ms: 1.5,
                skipped: None,
                started_at: "2026-11-22T10:00:00.000Z".into(),
                ended_at: "2026-11-22T10:00:00.002Z".into(),
                denied: vec![],
                logs: vec![],
                plan: None,
                applied: None,
            }],
        }
    }

    fn latency() -> MetricResult {
        MetricResult {
            name: "latency_ms".into(),
            value: 0.25,
            unit: "ms".into(),
            warn: Some("50".into()),
            crit: Some("200".into()),
            min: Some(0.0),
            max: None,
        }
    }

    #[test]
    fn nagios_line_has_perfdata_and_long_output() {
        let text = render(&run(Status::Warning, vec![latency()]), Format::Nagios, false);
        assert_eq!(
            text,
            "REDIS-PING WARNING - PONG / fine\\nreally | 'latency_ms'=0.25ms;50;200;0\nrole: master\n"
        );
    }

    #[test]
    fn perfdata_drops_unknown_units_and_quotes_labels() {
        let metric = MetricResult {
            name: "it's".into(),
            value: 3.0,
            unit: "jobs".into(),
            warn: None,
            crit: None,
            min: None,
            max: None,
        };
        assert_eq!(perfdata("it's", &metric), "'it_s'=3");
    }

    #[test]
    fn perfdata_cannot_be_forged() {
        let metric = |name: &str, value: f64, warn: &str| MetricResult {
            name: name.into(),
            value,
            unit: "ms".into(),
            warn: Some(warn.into()),
            crit: Some("~:5".into()),
            min: Some(f64::NAN),
            max: Some(f64::INFINITY),
        };
        assert_eq!(perfdata("a'=1 'b", &metric("x", 1.0, "10")), "'a__1 _b'=1ms;10;~:5");
        assert_eq!(perfdata("x", &metric("x", f64::NAN, "1;2;3 'y'=9")), "'x'=U;;~:5");
        assert_eq!(perfdata("x", &metric("x", f64::NEG_INFINITY, "10")), "'x'=U;10;~:5");
        assert_eq!(
            perfdata("x\nCRITICAL", &metric("x", 2.0, "10")),
            "'x\\nCRITICAL'=2ms;10;~:5"
        );
    }

    #[test]
    fn the_nagios_status_line_is_runboxs_alone() {
        let mut forged = run(Status::Critical, vec![latency()]);
        forged.steps[0].summary = "fine\nREDIS-PING OK - all good | 'x'=1".into();
        forged.steps[0].details = vec!["OK\r\x1b[1A".into()];
        forged.steps[0].metrics[0].name = "n\nOK - ".into();
        let text = render(&forged, Format::Nagios, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("REDIS-PING CRITICAL - fine\\nREDIS-PING OK - all good / 'x'=1 | "),
            "{text}"
        );
        assert_eq!(lines.len(), 2, "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
    }

    #[test]
    fn json_has_the_design_shape() {
        let value: serde_json::Value =
            serde_json::from_str(&render(&run(Status::Ok, vec![latency()]), Format::Json, false)).unwrap();
        assert_eq!(value["status"], "ok");
        assert_eq!(value["runbook"], serde_json::Value::Null);
        let step = &value["steps"][0];
        for key in [
            "id",
            "plugin",
            "kind",
            "status",
            "summary",
            "details",
            "metrics",
            "attempts",
            "duration_ms",
            "skipped",
            "started_at",
            "ended_at",
        ] {
            assert!(step.get(key).is_some(), "missing {key}");
        }
        assert_eq!(step["metrics"][0]["warn"], "50");
    }

    #[test]
    fn human_output_lists_metrics_and_details() {
        let text = render(&run(Status::Ok, vec![latency()]), Format::Human, false);
        assert!(text.starts_with("OK        redis-ping  PONG"), "{text}");
        assert!(text.contains("latency_ms = 0.25ms  warn 50  crit 200"), "{text}");
        assert!(text.contains("role: master"), "{text}");
    }
}
