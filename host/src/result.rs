//! Results as reporters see them: the JSON shape of DESIGN.md.

use crate::runtime::bindings;
use crate::runtime::sandbox::LogLine;
use serde::Serialize;

/// A check's status, with Nagios semantics and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Exit 0.
    Ok,
    /// Exit 1.
    Warning,
    /// Exit 2.
    Critical,
    /// Exit 3.
    Unknown,
}

impl Status {
    /// The process exit code for this status.
    pub fn exit_code(self) -> u8 {
        self as u8
    }

    /// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

impl From<bindings::Status> for Status {
    fn from(status: bindings::Status) -> Status {
        match status {
            bindings::Status::Ok => Status::Ok,
            bindings::Status::Warning => Status::Warning,
            bindings::Status::Critical => Status::Critical,
            bindings::Status::Unknown => Status::Unknown,
        }
    }
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `runbox:plugin/check`.
    Check,
    /// `runbox:plugin/mitigation`.
    Mitigation,
}

/// One metric of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricResult {
    /// Label.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Unit of measure.
    pub unit: String,
    /// Warning range, if any.
    pub warn: Option<String>,
    /// Critical range, if any.
    pub crit: Option<String>,
    /// Minimum, if any.
    pub min: Option<f64>,
    /// Maximum, if any.
    pub max: Option<f64>,
}

impl From<bindings::Metric> for MetricResult {
    fn from(metric: bindings::Metric) -> MetricResult {
        MetricResult {
            name: metric.name,
            value: metric.value,
            unit: metric.unit,
            warn: metric.warn,
            crit: metric.crit,
            min: metric.min,
            max: metric.max,
        }
    }
}

/// The result of one step (a single `runbox check` is a run of one step).
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Step id (for `runbox check`, the plugin name).
    pub id: String,
    /// Plugin name.
    pub plugin: String,
    /// Check or mitigation.
    pub kind: Kind,
    /// Verdict.
    pub status: Status,
    /// One line.
    pub summary: String,
    /// Further lines.
    pub details: Vec<String>,
    /// Metrics.
    pub metrics: Vec<MetricResult>,
    /// Named values the plugin handed to later steps (`${{ steps.ID.outputs.NAME }}`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, serde_json::Value>,
    /// For one item of a `for_each` step: the step it belongs to and its item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<ItemRecord>,
    /// How many times the step ran.
    pub attempts: u32,
    /// Wall time.
    pub duration_ms: f64,
    /// Why the step was skipped, if it was.
    pub skipped: Option<String>,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time.
    pub ended_at: String,
    /// What the sandbox denied, with the grant to add.
    pub denied: Vec<String>,
    /// The plugin's logs (redacted, capped).
    pub logs: Vec<LogLine>,
    /// For a mitigation: what it planned (secrets redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRecord>,
    /// For a mitigation: whether the plan was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
}

/// Which item of a `for_each` step a result is.
#[derive(Debug, Clone, Serialize)]
pub struct ItemRecord {
    /// The step's id (the result's own id is `STEP[INDEX]`).
    pub step: String,
    /// Position in the list, from 0.
    pub index: usize,
    /// How many items the list had.
    pub of: usize,
    /// The item's value.
    pub value: serde_json::Value,
}

/// A mitigation's plan as reported.
#[derive(Debug, Clone, Serialize)]
pub struct PlanRecord {
    /// One line.
    pub summary: String,
    /// Intended changes.
    pub changes: Vec<String>,
    /// Whether applying cannot be undone.
    pub destructive: bool,
    /// What the step's grants let the plan do beyond reading (HTTP methods a grant
    /// lists, raw TCP grants), so whoever approves knows what the dry run could change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The result of a run (a runbook, or a single check).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Runbook name; `null` for a single check.
    pub runbook: Option<String>,
    /// Runbook severity (`SEV-1` ...), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Escalation text of the runbook, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
    /// Run id (also on every log line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// RFC 3339 start time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339 end time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Worst status of the steps.
    pub status: Status,
    /// Wall time.
    pub duration_ms: f64,
    /// Why the run stopped early (Ctrl-C, its deadline), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Every step, in order.
    pub steps: Vec<StepResult>,
}

/// RFC 3339 UTC time with milliseconds.
pub fn timestamp(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
