//! JUnit XML, as CI systems read it: one `<testsuite>` per run, one `<testcase>` per
//! step. CRITICAL is a `<failure>`, UNKNOWN an `<error>`, a skipped step `<skipped>`;
//! WARNING passes, with its status in a property.

use crate::result::{RunResult, Status};
use std::fmt::Write;

/// Renders `run` as JUnit XML.
pub fn render(run: &RunResult) -> String {
    let name = run.runbook.as_deref().unwrap_or("runbox check");
    let count = |f: &dyn Fn(&crate::result::StepResult) -> bool| run.steps.iter().filter(|s| f(s)).count();
    let failures = count(&|s| s.skipped.is_none() && s.status == Status::Critical);
    let errors = count(&|s| s.skipped.is_none() && s.status == Status::Unknown);
    let skipped = count(&|s| s.skipped.is_some());
    let seconds = run.duration_ms / 1000.0;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"runbox\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{seconds:.3}\">",
        run.steps.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{seconds:.3}\"{}>",
        escape(name),
        run.steps.len(),
        run.started_at
            .as_ref()
            .map(|t| format!(" timestamp=\"{}\"", escape(t.trim_end_matches('Z'))))
            .unwrap_or_default()
    );
    for step in &run.steps {
        let _ = writeln!(
            out,
            "    <testcase name=\"{}\" classname=\"{}.{}\" time=\"{:.3}\">",
            escape(&step.id),
            escape(name),
            escape(&step.plugin),
            step.duration_ms / 1000.0
        );
        let _ = writeln!(
            out,
            "      <properties><property name=\"status\" value=\"{}\"/><property name=\"attempts\" value=\"{}\"/></properties>",
            step.status.label().to_lowercase(),
            step.attempts
        );
        let body = step
            .details
            .iter()
            .chain(step.denied.iter())
            .map(|l| escape(l))
            .collect::<Vec<_>>()
            .join("\n");
        match (&step.skipped, step.status) {
            (Some(reason), _) => {
                let _ = writeln!(out, "      <skipped message=\"{}\"/>", escape(reason));
            }
            (None, Status::Critical) => {
                let _ = writeln!(
                    out,
                    "      <failure message=\"{}\" type=\"critical\">{body}</failure>",
                    escape(&step.summary)
                );
            }
            (None, Status::Unknown) => {
                let _ = writeln!(
                    out,
                    "      <error message=\"{}\" type=\"unknown\">{body}</error>",
                    escape(&step.summary)
                );
            }
            _ => {}
        }
        let mut system_out = vec![escape(&step.summary)];
        system_out.extend(
            step.metrics
                .iter()
                .map(|m| escape(&format!("{} = {}{}", m.name, super::format_value(m.value), m.unit))),
        );
        let _ = writeln!(out, "      <system-out>{}</system-out>", system_out.join("\n"));
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// XML-escapes text, dropping characters XML 1.0 cannot carry.
fn escape(text: &str) -> String {
    crate::text::xml(text)
}
