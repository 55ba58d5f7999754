//! Test-only: a check whose `info()` costs the host, one way per cargo feature (see
//! Cargo.toml), so tests can prove that loading it is bounded or that it loads only when
//! the operator allows its memory.

use runbox_plugin_sdk::check::Guest;
use runbox_plugin_sdk::{Info, Report, Status};

struct HostileInfo;

impl Guest for HostileInfo {
    fn info() -> Info {
        Info {
            name: "hostile-info".into(),
            version: "0.1.0".into(),
            description: "Returns a costly info() (tests only)".into(),
            config_schema: schema(),
        }
    }

    fn run(_config: String) -> Result<Report, String> {
        Ok(Report::new(
            Status::Ok,
            format!("ran with {} MiB of static memory", big_memory() >> 20),
        ))
    }
}

fn schema() -> String {
    let _ = big_memory();
    if cfg!(feature = "newline-ref") {
        r##"{"properties": {"a\nFORGED-KEY-LINE": {"type": "string"}, "b": {"$ref": "x\n\nOK        redis-ping  FORGED LINE\t\u001b[31mred"}}}"##.into()
    } else if cfg!(feature = "cyclic-ref") {
        r##"{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}"##.into()
    } else if cfg!(feature = "deep-items") {
        format!("{}{{}}{}", r#"{"items": "#.repeat(120), "}".repeat(120))
    } else if cfg!(feature = "keyword-paths") {
        keyword_paths(7)
    } else if cfg!(feature = "ref-doubling") {
        let links: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    r##""d{i}": {{"allOf": [{{"$ref": "#/$defs/d{n}"}}, {{"$ref": "#/$defs/d{n}"}}]}}"##,
                    n = i + 1
                )
            })
            .collect();
        format!(
            r##"{{"$defs": {{{}, "d40": {{"type": "string"}}}}, "$ref": "#/$defs/d0"}}"##,
            links.join(", ")
        )
    } else {
        r#"{"type": "object"}"#.into()
    }
}

/// `{"items": X, "not": X}` nested `levels` deep: every leaf is a distinct keyword path.
fn keyword_paths(levels: usize) -> String {
    if levels == 0 {
        return r#"{"type": "string"}"#.into();
    }
    let inner = keyword_paths(levels - 1);
    format!(r#"{{"items": {inner}, "not": {inner}}}"#)
}

/// With `big-memory`, a zeroed static of 80 MiB: it raises the component's initial
/// memory (the minimum the host must grant before any code runs) above 64 MiB.
fn big_memory() -> usize {
    #[cfg(feature = "big-memory")]
    {
        // Mutable, so it goes to .bss (zero pages, not 80 MiB of data in the file).
        static mut BIG: [u8; 80 << 20] = [0; 80 << 20];
        // SAFETY: only its address is taken; it is never read or written.
        let big = std::hint::black_box(&raw const BIG);
        std::mem::size_of_val(unsafe { &*big })
    }
    #[cfg(not(feature = "big-memory"))]
    0
}

runbox_plugin_sdk::export_check!(HostileInfo);
