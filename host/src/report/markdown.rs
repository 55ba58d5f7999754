//! A Markdown incident timeline, ready to paste into the incident document: a header
//! (runbook, severity, run id, start and end), one table row per step (start, end,
//! step, result, summary), then what was applied and what was only planned.
//!
//! Headings, sections and list structure are runbox's alone: every piece of text from a
//! plugin or a runbook goes through [`text::markdown`], so it renders as itself inside
//! its cell or item (no line breaks, HTML, links, emphasis or block markers).

use crate::result::{RunResult, StepResult};
use crate::text;
use std::fmt::Write;

/// Renders `run` as Markdown.
pub fn render(run: &RunResult) -> String {
    let name = run.runbook.as_deref().unwrap_or("runbox check");
    let mut out = String::new();
    let severity = run.severity.as_ref().map(|s| format!(" ({s})")).unwrap_or_default();
    let _ = writeln!(out, "### Runbook {}{severity}: {}\n", code(name), run.status.label());
    let started = run.started_at.as_deref().unwrap_or("?");
    let ended = run.ended_at.as_deref().unwrap_or("?");
    let _ = writeln!(
        out,
        "- Run: {} → {} ({})",
        started,
        ended,
        super::format_ms(run.duration_ms)
    );
    if let Some(id) = &run.run_id {
        let _ = writeln!(out, "- Run id: `{id}`");
    }
    if let Some(escalation) = &run.escalation {
        let _ = writeln!(out, "- Escalation: {}", cell(escalation));
    }
    out.push_str("\n| Started (UTC) | Ended (UTC) | Step | Result | Summary |\n|---|---|---|---|---|\n");
    let mut ordered: Vec<&StepResult> = run.steps.iter().collect();
    ordered.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    for step in &ordered {
        let result = if step.skipped.is_some() {
            "SKIPPED".to_string()
        } else {
            step.status.label().to_string()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} | {} |",
            clock(&step.started_at),
            clock(&step.ended_at),
            code(&step.id),
            cell(&step.plugin),
            result,
            cell(&step.summary)
        );
    }
    let applied: Vec<_> = ordered.iter().filter(|s| s.applied == Some(true)).collect();
    let planned: Vec<_> = ordered
        .iter()
        .filter(|s| s.plan.is_some() && s.applied != Some(true))
        .collect();
    if !applied.is_empty() {
        out.push_str("\n#### Applied\n\n");
        for step in applied {
            let plan = step.plan.as_ref().expect("applied steps have a plan");
            let _ = writeln!(
                out,
                "- {} {} ({}): {} → {}",
                clock(&step.ended_at),
                code(&step.id),
                cell(&step.plugin),
                cell(&plan.summary),
                cell(&step.summary)
            );
            for change in &step.details {
                let _ = writeln!(out, "  - {}", cell(change));
            }
        }
    }
    if !planned.is_empty() {
        out.push_str("\n#### Planned, not applied\n\n");
        for step in planned {
            let plan = step.plan.as_ref().expect("planned steps have a plan");
            let _ = writeln!(
                out,
                "- {} ({}): {}",
                code(&step.id),
                cell(&step.plugin),
                cell(&step.summary)
            );
            for change in &plan.changes {
                let _ = writeln!(out, "  - {}", cell(change));
            }
            for note in &plan.notes {
                let _ = writeln!(out, "  - _note:_ {}", cell(note));
            }
        }
    }
    out
}

/// `HH:MM:SS.mmm` from an RFC 3339 timestamp.
fn clock(timestamp: &str) -> &str {
    timestamp
        .split_once('T')
        .map(|(_, time)| time.trim_end_matches('Z'))
        .unwrap_or(timestamp)
}

/// Text that stays inside its table cell or list item (several lines of runbook text
/// are joined into one).
fn cell(text: &str) -> String {
    text::markdown(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// An identifier as inline code when it is a plain name (step ids, `for_each` items'
/// `id[N]`, and runbook names are),
/// else as escaped text: backslash escapes do not work inside code spans.
fn code(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '[' | ']'))
    {
        format!("`{text}`")
    } else {
        cell(text)
    }
}
