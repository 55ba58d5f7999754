//! `runbox validate`: prepare each runbook as `run` would, run nothing, report every problem.

use super::{parse_sets, print};
use crate::error::Error;
use crate::output::errln;
use crate::plugins::PluginPath;
use crate::result::Kind;
use crate::runbook::prepare::{Mode, prepare};
use crate::runtime::Runtime;
use std::path::PathBuf;

pub(crate) async fn validate(
    runtime: &Runtime,
    plugin_path: &PluginPath,
    runbooks: &[PathBuf],
    sets: &[String],
) -> Result<u8, Error> {
    let sets = parse_sets(sets)?;
    let mut problems = 0;
    let mut report = String::new();
    for file in runbooks {
        match prepare(runtime, plugin_path, file, &sets, Mode::Validate, None).await {
            Ok(runbook) => {
                report.push_str(&format!(
                    "ok: {} ({}, {} step{})\n",
                    file.display(),
                    runbook.manifest.name,
                    runbook.steps.len(),
                    if runbook.steps.len() == 1 { "" } else { "s" }
                ));
                // What a step may do beyond reading before anyone approves anything.
                for step in &runbook.steps {
                    for note in step.grants.read_only_notes(step.plugin.kind == Kind::Mitigation) {
                        report.push_str(&format!("  step `{}`: {note}\n", step.id));
                    }
                    if !step.grants.tls.verifies() {
                        let note = crate::capabilities::tls::VERIFY_OFF_NOTE;
                        report.push_str(&format!("  warning: step `{}`: {note}\n", step.id));
                    }
                }
            }
            Err(found) => {
                problems += found.len();
                for problem in found {
                    errln!("error: {problem}");
                }
            }
        }
    }
    print(&report)?;
    if problems > 0 {
        errln!("{problems} problem{} found", if problems == 1 { "" } else { "s" });
        return Ok(64);
    }
    Ok(0)
}
