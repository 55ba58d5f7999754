//! Test-only: a check that does nothing and reports OK. Measures the sandbox's own cost.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::{Info, Report, Status};

struct Noop;

impl Guest for Noop {
    fn info() -> Info {
        Info {
            name: "noop-check".into(),
            version: "0.1.0".into(),
            description: "Does nothing and reports OK (benchmarks and tests)".into(),
            config_schema: r#"{"type": "object"}"#.into(),
        }
    }

    fn run(_config: String) -> Result<Report, String> {
        Ok(Report::new(Status::Ok, "nothing to do"))
    }
}

runbox_plugin_sdk::export_check!(Noop);
