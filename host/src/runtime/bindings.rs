//! Host-side bindings of the `runbox:plugin@0.1.0` worlds. `bindgen!` runs here only.

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

pub use check::runbox::plugin::types::{Info, Level, Metric, Outcome, Plan, Report, Status};
