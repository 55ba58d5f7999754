//! Host-side bindings of the `runbox:plugin` worlds: the current contract (0.2.0, in
//! `wit/`) and the frozen 0.1.0 (`wit/v0.1.0/`), whose plugins keep working. `bindgen!`
//! runs here only.

/// The `check` world.
pub mod check {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "check",
        imports: { default: trappable },
        exports: { default: async },
    });
}

/// The `mitigation` world. Shares the `types` and `host` interfaces with [`check`].
pub mod mitigation {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "mitigation",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "runbox:plugin/types": super::check::runbox::plugin::types,
            "runbox:plugin/host": super::check::runbox::plugin::host,
        },
    });
}

/// `runbox:plugin@0.1.0`, frozen: plugins built against it still load and run. Its
/// results are converted to the current types ([`from_v0_1`]).
pub mod v0_1 {
    /// The 0.1.0 `check` world.
    pub mod check {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "check",
            imports: { default: trappable },
            exports: { default: async },
        });
    }

    /// The 0.1.0 `mitigation` world.
    pub mod mitigation {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "mitigation",
            imports: { default: trappable },
            exports: { default: async },
            with: {
                "runbox:plugin/types": super::check::runbox::plugin::types,
                "runbox:plugin/host": super::check::runbox::plugin::host,
            },
        });
    }

    pub use check::runbox::plugin::types::{Info, Level, Metric, Outcome, Plan, Report, Status};
}

/// Conversions from 0.1.0 results to the current ones (which add `outputs`).
pub mod from_v0_1 {
    use super::{Info, Level, Metric, Outcome, Plan, Report, Status, v0_1};

    /// A 0.1.0 status.
    pub fn status(status: v0_1::Status) -> Status {
        match status {
            v0_1::Status::Ok => Status::Ok,
            v0_1::Status::Warning => Status::Warning,
            v0_1::Status::Critical => Status::Critical,
            v0_1::Status::Unknown => Status::Unknown,
        }
    }

    /// A 0.1.0 log level.
    pub fn level(level: v0_1::Level) -> Level {
        match level {
            v0_1::Level::Trace => Level::Trace,
            v0_1::Level::Debug => Level::Debug,
            v0_1::Level::Info => Level::Info,
            v0_1::Level::Warn => Level::Warn,
            v0_1::Level::Error => Level::Error,
        }
    }

    /// A 0.1.0 `info`.
    pub fn info(info: v0_1::Info) -> Info {
        Info {
            name: info.name,
            version: info.version,
            description: info.description,
            config_schema: info.config_schema,
        }
    }

    fn metric(m: v0_1::Metric) -> Metric {
        Metric {
            name: m.name,
            value: m.value,
            unit: m.unit,
            warn: m.warn,
            crit: m.crit,
            min: m.min,
            max: m.max,
        }
    }

    /// A 0.1.0 report: no outputs.
    pub fn report(report: v0_1::Report) -> Report {
        Report {
            status: status(report.status),
            summary: report.summary,
            details: report.details,
            metrics: report.metrics.into_iter().map(metric).collect(),
            outputs: Vec::new(),
        }
    }

    /// A 0.1.0 plan (the same fields).
    pub fn plan(plan: v0_1::Plan) -> Plan {
        Plan {
            summary: plan.summary,
            changes: plan.changes,
            destructive: plan.destructive,
        }
    }

    /// A current plan, handed back to a 0.1.0 `apply`.
    pub fn plan_back(plan: &Plan) -> v0_1::Plan {
        v0_1::Plan {
            summary: plan.summary.clone(),
            changes: plan.changes.clone(),
            destructive: plan.destructive,
        }
    }

    /// A 0.1.0 outcome: no outputs.
    pub fn outcome(outcome: v0_1::Outcome) -> Outcome {
        Outcome {
            status: status(outcome.status),
            summary: outcome.summary,
            changes: outcome.changes,
            outputs: Vec::new(),
        }
    }
}

/// The `runbox:tls/handshakes` host extension (wit/deps/runbox-tls), imported by
/// plugins that inspect TLS certificates themselves.
pub mod tls {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "package runbox:host-tls; world tls { import runbox:tls/handshakes@0.1.0; }",
        imports: { default: trappable },
    });
}

pub use check::runbox::plugin::types::{Info, Level, Metric, Outcome, Output, Plan, Report, Status};
