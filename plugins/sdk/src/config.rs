//! Config parsing whose errors name the field at fault.

use serde::de::DeserializeOwned;

/// Parses the JSON config the host passes to `run`/`plan`/`apply`.
///
/// The host has already validated it against the plugin's schema; this turns the
/// remaining mistakes into messages such as `config field \`warn\`: invalid range "x"`.
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            format!("config: {}", err.inner())
        } else {
            format!("config field `{path}`: {}", err.inner())
        }
    })
}

/// A field-level config error, formatted like the ones [`parse`] returns.
pub fn field_error(field: &str, message: impl std::fmt::Display) -> String {
    format!("config field `{field}`: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        url: String,
        #[allow(dead_code)]
        #[serde(default)]
        db: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse::<Sample>(r#"{"url": "x", "db": "zero"}"#).unwrap_err();
        assert!(err.starts_with("config field `db`:"), "{err}");
        let err = parse::<Sample>(r#"{}"#).unwrap_err();
        assert!(err.contains("missing field `url`"), "{err}");
        let err = parse::<Sample>(r#"{"url": "x", "extra": 1}"#).unwrap_err();
        assert!(err.contains("unknown field `extra`"), "{err}");
    }
}
