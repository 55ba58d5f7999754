//! AWS APIs other than S3 over the host's HTTP capability, signed with SigV4: the Query
//! protocol (form-encoded POST, XML answers: RDS, STS, …) and the JSON 1.1 protocol
//! (`X-Amz-Target`, JSON both ways: SSM, …). Credentials and their config fields are the
//! S3 plugins' ([`credentials_from_secrets`], [`defaults`]).

use crate::http::{self, Failure, Target};
use crate::sigv4::{self, Credentials, uri_encode};
use crate::time::{Utc, now};
use crate::xml;

pub use crate::s3::{credentials_from_secrets, defaults};

/// Answers larger than this are refused (DescribeDBClusters of one cluster is a few KiB).
const MAX_ANSWER: usize = 4 << 20;

/// Why an AWS request failed.
#[derive(Debug, Clone)]
pub enum AwsError {
    /// The request did not get an answer (refused, timed out, denied by the sandbox).
    Http(Failure),
    /// The service answered with an error.
    Status {
        /// HTTP status.
        status: u16,
        /// AWS error code, e.g. `DBClusterNotFoundFault`, `ParameterNotFound`,
        /// `SignatureDoesNotMatch`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// The answer could not be read.
    Parse(String),
}

impl AwsError {
    /// The AWS error code, if the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsError::Http(failure) => write!(f, "{failure}"),
            AwsError::Status { status, code, message } => write!(f, "{code} ({status}): {message}"),
            AwsError::Parse(message) => write!(f, "unreadable answer: {message}"),
        }
    }
}

/// One service (`rds`, `ssm`, …) at an endpoint, in a region, with credentials.
pub struct Service {
    scheme: String,
    authority: String,
    service: String,
    region: String,
    credentials: Credentials,
}

impl Service {
    /// `endpoint` is `http(s)://host[:port]` (for AWS, `https://rds.eu-west-1.amazonaws.com`);
    /// `service` is the SigV4 signing name (`rds`, `ssm`).
    pub fn new(endpoint: &str, service: &str, region: &str, credentials: Credentials) -> Result<Service, String> {
        let target = Target::parse(endpoint)?;
        if target.path_with_query != "/" {
            return Err(format!(
                "endpoint \"{endpoint}\" must be scheme://host[:port] without a path"
            ));
        }
        if region.is_empty() {
            return Err("region is empty".into());
        }
        Ok(Service {
            scheme: target.scheme,
            authority: target.authority,
            service: service.into(),
            region: region.into(),
            credentials,
        })
    }

    /// POSTs a signed request to `/` with `headers` (signed too) and `body`.
    fn post(&self, headers: &[(String, String)], body: &[u8]) -> Result<http::Response, AwsError> {
        let mut signed_over = vec![("host".to_string(), self.authority.clone())];
        signed_over.extend(headers.iter().cloned());
        let request = sigv4::Request {
            method: "POST",
            path: "/",
            query: &[],
            headers: &signed_over,
            payload: body,
        };
        let auth = sigv4::sign_service(
            &self.credentials,
            &self.service,
            &self.region,
            &request,
            Utc::from_unix(now()),
            false,
        );
        let mut all = headers.to_vec();
        all.extend(auth);
        let url = format!("{}://{}/", self.scheme, self.authority);
        http::send("POST", &url, &all, Some(body), MAX_ANSWER).map_err(AwsError::Http)
    }

    /// Calls `action` of API `version` (`2014-10-31` for RDS) with the Query protocol;
    /// returns the answer's XML. Errors carry the service's `<Code>` and `<Message>`.
    pub fn query(&self, action: &str, version: &str, params: &[(&str, &str)]) -> Result<String, AwsError> {
        let body = query_body(action, version, params);
        let headers = [(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        let response = self.post(&headers, body.as_bytes())?;
        let text = response.text();
        if (200..300).contains(&response.status) {
            return Ok(text);
        }
        Err(AwsError::Status {
            status: response.status,
            code: xml::tag(&text, "Code").unwrap_or_else(|| "HTTP error".into()),
            message: xml::tag(&text, "Message").unwrap_or_else(|| text.chars().take(200).collect()),
        })
    }

    /// Calls `target` (`AmazonSSM.GetParameter`) with the JSON 1.1 protocol; returns the
    /// answer's JSON. Errors carry the service's `__type` (without its namespace) and
    /// message.
    pub fn json(&self, target: &str, body: &serde_json::Value) -> Result<serde_json::Value, AwsError> {
        let body = body.to_string();
        let headers = [
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
            ("x-amz-target".to_string(), target.to_string()),
        ];
        let response = self.post(&headers, body.as_bytes())?;
        let text = response.text();
        let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&response.status) {
            return parsed
                .ok_or_else(|| AwsError::Parse(format!("not JSON: {}", text.chars().take(200).collect::<String>())));
        }
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|json| json.get(name))
                .and_then(|value| value.as_str())
                .map(str::to_string)
        };
        let code = field("__type")
            .map(|kind| kind.rsplit('#').next().unwrap_or(&kind).to_string())
            .or_else(|| {
                response
                    .header("x-amzn-errortype")
                    .map(|kind| kind.split(':').next().unwrap_or(kind).to_string())
            })
            // Some front ends (and moto's signature check) answer a JSON API in XML.
            .or_else(|| xml::tag(&text, "Code"))
            .unwrap_or_else(|| "HTTP error".into());
        let message = field("message")
            .or_else(|| field("Message"))
            .or_else(|| xml::tag(&text, "Message"))
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(AwsError::Status {
            status: response.status,
            code,
            message,
        })
    }
}

/// The form body of a Query-protocol call: `Action=…&Version=…&Name=value…`, encoded
/// as SigV4 encodes (so the body is the same whichever side reads it).
pub fn query_body(action: &str, version: &str, params: &[(&str, &str)]) -> String {
    [("Action", action), ("Version", version)]
        .iter()
        .chain(params)
        .map(|(name, value)| format!("{}={}", uri_encode(name, false), uri_encode(value, false)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bodies_are_encoded() {
        assert_eq!(
            query_body(
                "FailoverDBCluster",
                "2014-10-31",
                &[("DBClusterIdentifier", "author prod/1")]
            ),
            "Action=FailoverDBCluster&Version=2014-10-31&DBClusterIdentifier=author%20prod%2F1"
        );
    }

    #[test]
    fn endpoints_are_checked() {
        let credentials = Credentials {
            access_key: "a".into(),
            secret_key: "b".into(),
            session_token: None,
        };
        assert!(Service::new("http://127.0.0.1:5000", "rds", "us-east-1", credentials.clone()).is_ok());
        let err = Service::new("http://127.0.0.1:5000/x", "rds", "us-east-1", credentials.clone())
            .err()
            .unwrap();
        assert!(err.contains("without a path"), "{err}");
        assert!(Service::new("ftp://x", "rds", "us-east-1", credentials.clone()).is_err());
        assert!(Service::new("http://x", "rds", "", credentials).is_err());
    }
}
