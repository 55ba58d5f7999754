//! Building reports: status from thresholds, metrics with their ranges, details.

use crate::threshold::Thresholds;
use crate::{Metric, Report, Status};

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
