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

/// The `runbox:tls/handshakes` host extension (wit/deps/runbox-tls), imported by
/// plugins that inspect TLS certificates themselves.
pub mod tls {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "package runbox:host-tls; world tls { import runbox:tls/handshakes@0.1.0; }",
        imports: { default: trappable },
    });
}

pub use check::runbox::plugin::types::{Info, Level, Metric, Outcome, Plan, Report, Status};
