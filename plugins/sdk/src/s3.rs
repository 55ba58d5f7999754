//! A small S3 client over the host's HTTP capability, signed with SigV4: HeadBucket,
//! paginated ListObjectsV2, HeadObject, GetObject, PutObject, DeleteObject and
//! DeleteObjects. Path-style addressing for S3-compatible
//! servers, virtual-hosted style for AWS.

use crate::http::{self, Failure, Target};
use crate::sigv4::{self, Credentials, uri_encode};
use crate::time::{Utc, now, parse_rfc3339};
use base64::Engine;
use md5::{Digest, Md5};

/// Credentials from granted secrets, named by a plugin's `access_key_secret`,
/// `secret_key_secret` and (optional) `session_token_secret` config fields; errors name
/// the field.
pub fn credentials_from_secrets(access: &str, secret_key: &str, token: Option<&str>) -> Result<Credentials, String> {
    let get = |name: &str, field: &str| crate::secret(name).map_err(|err| crate::config::field_error(field, err));
    Ok(Credentials {
        access_key: get(access, "access_key_secret")?,
        secret_key: get(secret_key, "secret_key_secret")?,
        session_token: token.map(|name| get(name, "session_token_secret")).transpose()?,
    })
}

/// Config defaults shared by the S3 plugins (`#[serde(default = "…")]`).
pub mod defaults {
    /// `us-east-1`
    pub fn region() -> String {
        "us-east-1".into()
    }
    /// Path-style addressing (S3-compatible servers).
    pub fn path_style() -> bool {
        true
    }
    /// `aws_access_key_id`
    pub fn access_key_secret() -> String {
        "aws_access_key_id".into()
    }
    /// `aws_secret_access_key`
    pub fn secret_key_secret() -> String {
        "aws_secret_access_key".into()
    }
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modified, Unix seconds.
    pub last_modified: i64,
}

/// Why an S3 request failed.
#[derive(Debug, Clone)]
pub enum S3Error {
    /// The request did not get an answer (refused, timed out, denied by the sandbox).
    Http(Failure),
    /// The server answered with an error.
    Status {
        /// HTTP status.
        status: u16,
        /// S3 error code, e.g. `SignatureDoesNotMatch`, `AccessDenied`, `NoSuchBucket`.
        code: String,
        /// S3's message.
        message: String,
    },
    /// The answer could not be read.
    Parse(String),
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Error::Http(failure) => write!(f, "{failure}"),
            S3Error::Status { status, code, message } => write!(f, "{code} ({status}): {message}"),
            S3Error::Parse(message) => write!(f, "unreadable answer: {message}"),
        }
    }
}

/// A bucket on an endpoint, with credentials.
pub struct Bucket {
    scheme: String,
    authority: String,
    bucket: String,
    region: String,
    path_style: bool,
    credentials: Credentials,
}

impl Bucket {
    /// `endpoint` is `http(s)://host[:port]`.
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        path_style: bool,
        credentials: Credentials,
    ) -> Result<Bucket, String> {
        let target = Target::parse(endpoint)?;
        if target.path_with_query != "/" {
            return Err(format!(
                "endpoint \"{endpoint}\" must be scheme://host[:port] without a path"
            ));
        }
        if bucket.is_empty() || bucket.contains('/') {
            return Err(format!("bucket \"{bucket}\" is not a bucket name"));
        }
        Ok(Bucket {
            scheme: target.scheme,
            authority: target.authority,
            bucket: bucket.into(),
            region: region.into(),
            path_style,
            credentials,
        })
    }

    fn request(
        &self,
        method: &str,
        key: &str,
        query: &[(String, String)],
        body: &[u8],
        extra: &[(String, String)],
        max_body: usize,
    ) -> Result<http::Response, S3Error> {
        let (host, mut path) = if self.path_style {
            (self.authority.clone(), format!("/{}", uri_encode(&self.bucket, false)))
        } else {
            (format!("{}.{}", self.bucket, self.authority), String::new())
        };
        path.push('/');
        path.push_str(&uri_encode(key, true));
        let mut signed_over = vec![("host".to_string(), host.clone())];
        signed_over.extend(extra.iter().cloned());
        let auth = sigv4::sign(
            &self.credentials,
            &self.region,
            method,
            &path,
            query,
            &signed_over,
            body,
            Utc::from_unix(now()),
        );
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        pairs.sort();
        let query_text = pairs
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    format!("{k}=")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        let url = format!(
            "{}://{host}{path}{}{query_text}",
            self.scheme,
            if query_text.is_empty() { "" } else { "?" }
        );
        let mut headers: Vec<(String, String)> = extra.to_vec();
        headers.extend(auth);
        let response = http::send(
            method,
            &url,
            &headers,
            // A write states its length, 0 included: S3 servers refuse a DELETE or PUT
            // without one (411 MissingContentLength).
            (!body.is_empty() || matches!(method, "POST" | "PUT" | "DELETE")).then_some(body),
            max_body,
        )
        .map_err(S3Error::Http)?;
        if (200..300).contains(&response.status) {
            return Ok(response);
        }
        let text = response.text();
        Err(S3Error::Status {
            status: response.status,
            // A HEAD answer has no body: the status is all S3 says.
            code: tag(&text, "Code").unwrap_or_else(|| status_code(response.status).into()),
            message: tag(&text, "Message").unwrap_or_else(|| text.chars().take(200).collect()),
        })
    }

    /// HeadBucket: the bucket exists and these credentials may use it. A HEAD answer
    /// carries no error code, so on failure the same question is asked again as a
    /// one-key ListObjectsV2 (a read), whose error body names S3's code
    /// (`NoSuchBucket`, `SignatureDoesNotMatch`, `InvalidAccessKeyId`, `AccessDenied`).
    pub fn head_bucket(&self) -> Result<(), S3Error> {
        let head = match self.request("HEAD", "", &[], b"", &[], 1 << 16) {
            Ok(_) => return Ok(()),
            Err(err @ S3Error::Status { .. }) => err,
            Err(other) => return Err(other),
        };
        let query = [
            ("list-type".to_string(), "2".to_string()),
            ("max-keys".to_string(), "1".to_string()),
        ];
        match self.request("GET", "", &query, b"", &[], 1 << 20) {
            Err(err @ S3Error::Status { .. }) => Err(err),
            _ => Err(head),
        }
    }

    /// HeadObject: the object's size, or `None` when there is no such key (404).
    pub fn head_object(&self, key: &str) -> Result<Option<u64>, S3Error> {
        Ok(self.head(key)?.map(|head| head.size))
    }

    /// PutObject: writes `body` under `key` (with its Content-MD5, so a corrupted
    /// upload is refused).
    pub fn put(&self, key: &str, body: &[u8]) -> Result<(), S3Error> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body));
        let extra = vec![
            ("content-md5".to_string(), md5),
            ("content-type".to_string(), "application/octet-stream".to_string()),
        ];
        self.request("PUT", key, &[], body, &extra, 1 << 20).map(|_| ())
    }

    /// DeleteObject: removes one key (S3 answers 204 whether or not it existed).
    pub fn delete_object(&self, key: &str) -> Result<(), S3Error> {
        self.request("DELETE", key, &[], b"", &[], 1 << 20).map(|_| ())
    }

    /// Lists objects under `prefix`, `page_size` per request, stopping after `max_objects`.
    /// Returns the objects and the number of pages fetched.
    pub fn list(&self, prefix: &str, page_size: u32, max_objects: usize) -> Result<(Vec<Object>, usize), S3Error> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                ("max-keys".to_string(), page_size.to_string()),
                ("prefix".to_string(), prefix.to_string()),
            ];
            if let Some(token) = &token {
                query.push(("continuation-token".to_string(), token.clone()));
            }
            let response = self.request("GET", "", &query, b"", &[], 16 << 20)?;
            pages += 1;
            let text = response.text();
            for block in blocks(&text, "Contents") {
                let key = tag(block, "Key").ok_or_else(|| S3Error::Parse("an object without <Key>".into()))?;
                let size = tag(block, "Size").and_then(|s| s.parse().ok()).unwrap_or(0);
                let last_modified = tag(block, "LastModified")
                    .and_then(|t| parse_rfc3339(&t))
                    .ok_or_else(|| S3Error::Parse(format!("{key}: bad <LastModified>")))?;
                objects.push(Object {
                    key,
                    size,
                    last_modified,
                });
            }
            let truncated = tag(&text, "IsTruncated").is_some_and(|t| t == "true");
            token = tag(&text, "NextContinuationToken");
            if !truncated || token.is_none() || objects.len() >= max_objects {
                return Ok((objects, pages));
            }
        }
    }

    /// The object's bytes (at most `max_bytes`).
    pub fn get(&self, key: &str, max_bytes: usize) -> Result<Vec<u8>, S3Error> {
        Ok(self.request("GET", key, &[], b"", &[], max_bytes)?.body)
    }

    /// HeadObject: the object's storage class and restore state; `None` when it does
    /// not exist.
    pub fn head(&self, key: &str) -> Result<Option<Head>, S3Error> {
        let response = match self.request("HEAD", key, &[], b"", &[], 0) {
            Ok(response) => response,
            Err(S3Error::Status { status: 404, .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        Ok(Some(Head {
            storage_class: response.header("x-amz-storage-class").unwrap_or("STANDARD").to_string(),
            restore: Restore::parse(response.header("x-amz-restore")),
            size: response
                .header("content-length")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        }))
    }

    /// RestoreObject: a temporary copy of an archived object for `days`, retrieved at
    /// `tier` (`Standard`, `Bulk`, `Expedited`). Returns S3's status: 202 when the
    /// restore started, 200 when a restored copy existed (its expiry is extended).
    pub fn restore(&self, key: &str, days: u32, tier: &str) -> Result<u16, S3Error> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><RestoreRequest xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Days>{days}</Days><GlacierJobParameters><Tier>{}</Tier></GlacierJobParameters></RestoreRequest>",
            escape(tier)
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let extra = vec![
            ("content-md5".to_string(), md5),
            ("content-type".to_string(), "application/xml".to_string()),
        ];
        let response = self.request(
            "POST",
            key,
            &[("restore".to_string(), String::new())],
            body.as_bytes(),
            &extra,
            1 << 20,
        )?;
        Ok(response.status)
    }

    /// Deletes up to 1000 `keys` in one DeleteObjects request; returns the keys S3
    /// could not delete, with the reason.
    pub fn delete(&self, keys: &[String]) -> Result<Vec<(String, String)>, S3Error> {
        let mut body = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>",
        );
        for key in keys {
            body.push_str(&format!("<Object><Key>{}</Key></Object>", escape(key)));
        }
        body.push_str("</Delete>");
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let extra = vec![
            ("content-md5".to_string(), md5),
            ("content-type".to_string(), "application/xml".to_string()),
        ];
        let response = self.request(
            "POST",
            "",
            &[("delete".to_string(), String::new())],
            body.as_bytes(),
            &extra,
            16 << 20,
        )?;
        let text = response.text();
        Ok(blocks(&text, "Error")
            .into_iter()
            .map(|block| {
                let key = tag(block, "Key").unwrap_or_default();
                let why = format!(
                    "{}: {}",
                    tag(block, "Code").unwrap_or_default(),
                    tag(block, "Message").unwrap_or_default()
                );
                (key, why)
            })
            .collect())
    }
}

/// The error code S3 means by a bodiless status (a HEAD answer).
fn status_code(status: u16) -> &'static str {
    match status {
        301 => "PermanentRedirect",
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "HTTP error",
    }
}

/// What HeadObject says about an object's archive state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `x-amz-storage-class`, `STANDARD` when absent (S3 leaves it out for STANDARD).
    pub storage_class: String,
    /// The `x-amz-restore` header, parsed.
    pub restore: Restore,
    /// Size in bytes.
    pub size: u64,
}

impl Head {
    /// Whether the object sits in an archive tier that needs RestoreObject before GET
    /// (GLACIER, DEEP_ARCHIVE; GLACIER_IR is read directly).
    pub fn is_archived(&self) -> bool {
        matches!(self.storage_class.as_str(), "GLACIER" | "DEEP_ARCHIVE")
    }
}

/// The `x-amz-restore` state of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// No header: no restore was requested (or the restored copy expired).
    NotRequested,
    /// `ongoing-request="true"`: the restore is running.
    InProgress,
    /// `ongoing-request="false"`: a temporary copy is readable until `expiry` (HTTP date).
    Restored {
        /// `expiry-date`, as S3 wrote it.
        expiry: String,
    },
    /// A header this client does not understand, verbatim.
    Other(String),
}

impl Restore {
    /// Parses an `x-amz-restore` header value (`None`: no header).
    pub fn parse(header: Option<&str>) -> Restore {
        let Some(header) = header else {
            return Restore::NotRequested;
        };
        let field = |name: &str| {
            let start = header.find(&format!("{name}=\""))? + name.len() + 2;
            let end = header[start..].find('"')? + start;
            Some(header[start..end].to_string())
        };
        match field("ongoing-request").as_deref() {
            Some("true") => Restore::InProgress,
            Some("false") => Restore::Restored {
                expiry: field("expiry-date").unwrap_or_default(),
            },
            _ => Restore::Other(header.to_string()),
        }
    }
}

impl std::fmt::Display for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Restore::NotRequested => f.write_str("no restore requested"),
            Restore::InProgress => f.write_str("restore in progress"),
            Restore::Restored { expiry } => write!(f, "restored, readable until {expiry}"),
            Restore::Other(header) => write!(f, "x-amz-restore: {header}"),
        }
    }
}

use crate::xml::escape;
pub use crate::xml::{blocks, tag};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listings() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key><Size>5</Size><LastModified>2013-05-24T00:00:00.000Z</LastModified></Contents><Contents><Key>c</Key></Contents><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        let contents = blocks(xml, "Contents");
        assert_eq!(contents.len(), 2);
        assert_eq!(tag(contents[0], "Key").as_deref(), Some("a&b"));
        assert_eq!(tag(xml, "NextContinuationToken").as_deref(), Some("t1"));
        assert_eq!(escape("a<b&"), "a&lt;b&amp;");
        assert_eq!(
            (status_code(404), status_code(403), status_code(418)),
            ("NotFound", "Forbidden", "HTTP error")
        );
    }

    #[test]
    fn reads_restore_headers() {
        assert_eq!(Restore::parse(None), Restore::NotRequested);
        assert_eq!(Restore::parse(Some("ongoing-request=\"true\"")), Restore::InProgress);
        assert_eq!(
            Restore::parse(Some(
                "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""
            )),
            Restore::Restored {
                expiry: "Fri, 21 Dec 2012 00:00:00 GMT".into()
            }
        );
        assert_eq!(Restore::parse(Some("odd")), Restore::Other("odd".into()));
    }
}
