//! Building reports: status from thresholds, metrics with their ranges, details.

use crate::threshold::Thresholds;
use crate::{Metric, Outcome, Output, Report, Status};

/// Ranks a status so the worst of several can be picked (OK < WARNING < CRITICAL < UNKNOWN).
pub fn severity(status: Status) -> u8 {
    match status {
        Status::Ok => 0,
        Status::Warning => 1,
        Status::Critical => 2,
        Status::Unknown => 3,
    }
}

impl Report {
    /// A report with the given status and summary and nothing else.
    pub fn new(status: Status, summary: impl Into<String>) -> Report {
        Report {
            status,
            summary: summary.into(),
            details: Vec::new(),
            metrics: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// A CRITICAL report: the service is down, unreachable or refusing.
    pub fn critical(summary: impl Into<String>) -> Report {
        Report::new(Status::Critical, summary)
    }

    /// An UNKNOWN report: the check could not decide.
    pub fn unknown(summary: impl Into<String>) -> Report {
        Report::new(Status::Unknown, summary)
    }

    /// Adds a detail line.
    pub fn detail(mut self, line: impl Into<String>) -> Report {
        self.details.push(line.into());
        self
    }

    /// Adds an output for later steps of a runbook (`${{ steps.ID.outputs.NAME }}`):
    /// `name` is `snake_case`, `value` anything JSON can hold (a list of job ids).
    pub fn output(mut self, name: &str, value: &impl serde::Serialize) -> Report {
        self.outputs.push(output(name, value));
        self
    }

    /// Adds a metric without thresholds.
    pub fn metric(mut self, name: &str, value: f64, unit: &str) -> Report {
        self.metrics.push(Metric {
            name: name.into(),
            value,
            unit: unit.into(),
            warn: None,
            crit: None,
            min: None,
            max: None,
        });
        self
    }

    /// Adds a metric judged by `thresholds`, raising the report's status to the
    /// status the value earns if that is worse.
    pub fn judged_metric(mut self, name: &str, value: f64, unit: &str, thresholds: &Thresholds) -> Report {
        let status = thresholds.status(value);
        if severity(status) > severity(self.status) {
            self.status = status;
        }
        self.metrics.push(Metric {
            name: name.into(),
            value,
            unit: unit.into(),
            warn: thresholds.warn.as_ref().map(|range| range.to_string()),
            crit: thresholds.crit.as_ref().map(|range| range.to_string()),
            min: Some(0.0),
            max: None,
        });
        self
    }
}

/// An output: `name` and `value` as JSON text (a value that cannot be JSON, which serde
/// types cannot produce, becomes `null`).
pub fn output(name: &str, value: &impl serde::Serialize) -> Output {
    Output {
        name: name.into(),
        value: serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
    }
}

impl Outcome {
    /// An outcome with a status, a summary and the changes made, without outputs.
    pub fn new(status: Status, summary: impl Into<String>, changes: Vec<String>) -> Outcome {
        Outcome {
            status,
            summary: summary.into(),
            changes,
            outputs: Vec::new(),
        }
    }

    /// Adds an output for later steps of a runbook.
    pub fn output(mut self, name: &str, value: &impl serde::Serialize) -> Outcome {
        self.outputs.push(output(name, value));
        self
    }
}
