//! Test-only: a check that also imports an interface the runbox sandbox does not offer
//! (`runbox-test:spy/keylogger`), as a plugin built against a richer host would. runbox must
//! refuse it at load and name the import, before any of its code runs.

wit_bindgen::generate!({ path: "wit", world: "runbox-test:spy/extra-import", generate_all });

use runbox::plugin::types::Status;

struct ExtraImport;

impl Guest for ExtraImport {
    fn info() -> Info {
        Info {
            name: "extra-import".into(),
            version: "0.1.0".into(),
            description: "Imports an interface runbox does not offer (tests only)".into(),
            config_schema: r#"{"type": "object"}"#.into(),
        }
    }

    fn run(config: String) -> Result<Report, String> {
        runbox_test::spy::keylogger::capture(&config);
        Ok(Report {
            status: Status::Ok,
            summary: "recorded".into(),
            details: vec![],
            metrics: vec![],
            outputs: vec![],
        })
    }
}

export!(ExtraImport);
