//! SSM Parameter Store over [`aws::Service`](crate::aws::Service) (JSON 1.1 protocol):
//! GetParameter and PutParameter, shared by the `ssm-parameter` check and the
//! `ssm-put-parameter` mitigation.

use crate::aws::{AwsError, Service};
use serde_json::json;

/// A parameter as GetParameter returns it (decrypted: a SecureString's `value` is
/// the plain text, which callers must never print).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// `String`, `StringList` or `SecureString`.
    pub kind: String,
    /// The value (decrypted).
    pub value: String,
    /// The version, 1 on creation and one more on every overwrite.
    pub version: u64,
}

impl Parameter {
    /// Whether the value must not be shown (a SecureString).
    pub fn is_secure(&self) -> bool {
        self.kind == "SecureString"
    }
}

/// The `ssm` service at `endpoint` (`https://ssm.eu-west-1.amazonaws.com`).
pub fn service(endpoint: &str, region: &str, credentials: crate::sigv4::Credentials) -> Result<Service, String> {
    Service::new(endpoint, "ssm", region, credentials)
}

/// GetParameter with decryption; `None` when the parameter does not exist.
pub fn get(ssm: &Service, name: &str) -> Result<Option<Parameter>, AwsError> {
    let answer = match ssm.json("AmazonSSM.GetParameter", &json!({"Name": name, "WithDecryption": true})) {
        Ok(answer) => answer,
        Err(err) if err.code() == Some("ParameterNotFound") => return Ok(None),
        Err(err) => return Err(err),
    };
    parse_parameter(&answer).map(Some)
}

fn parse_parameter(answer: &serde_json::Value) -> Result<Parameter, AwsError> {
    let parameter = &answer["Parameter"];
    let text = |field: &str| {
        parameter[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AwsError::Parse(format!("GetParameter: no Parameter.{field}")))
    };
    Ok(Parameter {
        kind: text("Type")?,
        value: text("Value")?,
        version: parameter["Version"]
            .as_u64()
            .ok_or_else(|| AwsError::Parse("GetParameter: no Parameter.Version".into()))?,
    })
}

/// PutParameter with `Overwrite` (creating it when missing, as `kind`); returns the
/// new version.
pub fn put(ssm: &Service, name: &str, value: &str, kind: &str) -> Result<u64, AwsError> {
    let answer = ssm.json(
        "AmazonSSM.PutParameter",
        &json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true}),
    )?;
    answer["Version"]
        .as_u64()
        .ok_or_else(|| AwsError::Parse("PutParameter: no Version".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_get_parameter_answers() {
        let answer = json!({"Parameter": {"Name": "/a", "Type": "SecureString", "Value": "s3cr3t", "Version": 4, "LastModifiedDate": 1.7e9}});
        let parameter = parse_parameter(&answer).unwrap();
        assert_eq!(parameter.version, 4);
        assert!(parameter.is_secure());
        assert!(parse_parameter(&json!({"Parameter": {"Type": "String", "Value": "x"}})).is_err());
    }
}
