//! AWS Signature Version 4 (header-based, `UNSIGNED-PAYLOAD` never used: the payload
//! hash is always computed): [`sign`] for S3, [`sign_service`] for any service (RDS, SSM).

use crate::time::Utc;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Credentials, from granted secrets.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Session token (temporary credentials), if any.
    pub session_token: Option<String>,
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// URI-encodes per SigV4: unreserved characters stay, everything else is `%XX`
/// (upper-case); `/` stays when `keep_slash`.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Signs an S3 request; returns the headers to add (`authorization`, `x-amz-date`,
/// `x-amz-content-sha256`, and `x-amz-security-token` for session credentials).
/// `path` is already URI-encoded; `query` pairs are raw; `headers` must include `host`.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    credentials: &Credentials,
    region: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    payload: &[u8],
    time: Utc,
) -> Vec<(String, String)> {
    let request = Request {
        method,
        path,
        query,
        headers,
        payload,
    };
    sign_service(credentials, "s3", region, &request, time, true)
}

/// One request to sign: `path` already URI-encoded, `query` pairs raw, `headers`
/// including `host` (and every other header that should be signed, such as
/// `content-type` and `x-amz-target`).
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The URI-encoded path, at least `/`.
    pub path: &'a str,
    /// Query pairs, not encoded.
    pub query: &'a [(String, String)],
    /// Headers to sign (names in any case).
    pub headers: &'a [(String, String)],
    /// The body.
    pub payload: &'a [u8],
}

/// Signs `request` for `service` (`s3`, `rds`, `ssm`, …) in `region`; returns the
/// headers to add: `authorization`, `x-amz-date`, `x-amz-security-token` for session
/// credentials, and `x-amz-content-sha256` when `content_sha256_header` (S3 requires
/// it; the other services neither need nor expect it, and botocore leaves it out).
pub fn sign_service(
    credentials: &Credentials,
    service: &str,
    region: &str,
    request: &Request<'_>,
    time: Utc,
    content_sha256_header: bool,
) -> Vec<(String, String)> {
    let payload_hash = sha256_hex(request.payload);
    let amz_date = time.amz_date();
    let mut added = vec![("x-amz-date".to_string(), amz_date)];
    if content_sha256_header {
        added.push(("x-amz-content-sha256".into(), payload_hash.clone()));
    }
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".into(), token.clone()));
    }
    let mut all: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .chain(added.iter().cloned())
        .collect();
    all.sort();
    let mut pairs: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    let canonical_query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = all.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        request.method, request.path
    );
    let scope = format!("{}/{region}/{service}/aws4_request", time.amz_day());
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        time.amz_date(),
        sha256_hex(canonical_request.as_bytes())
    );
    let key = [service, "aws4_request"].iter().fold(
        hmac(
            &hmac(format!("AWS4{}", credentials.secret_key).as_bytes(), &time.amz_day()),
            region,
        ),
        |key, part| hmac(&key, part),
    );
    let signature = hex(&hmac(&key, &string_to_sign));
    let mut out = vec![(
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key
        ),
    )];
    out.extend(added);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "GET Object" example of the AWS SigV4 documentation.
    #[test]
    fn matches_the_aws_documentation_example() {
        let credentials = Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let headers = vec![
            ("host".to_string(), "examplebucket.s3.amazonaws.com".to_string()),
            ("range".to_string(), "bytes=0-9".to_string()),
        ];
        let time = Utc {
            year: 2013,
            month: 5,
            day: 24,
            hour: 0,
            minute: 0,
            second: 0,
        };
        let signed = sign(&credentials, "us-east-1", "GET", "/test.txt", &[], &headers, b"", time);
        assert_eq!(
            signed[0].1,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// Requests of the shapes the RDS (Query) and SSM (JSON 1.1) plugins send, signed
    /// by botocore: `sigv4_vectors.json` holds botocore's Authorization headers, and the
    /// e2e test `aws::the_signature_vectors_are_botocores` re-derives them with botocore
    /// (tests/e2e/aws_peer.py `sign`), so both implementations agree with the file.
    #[test]
    fn matches_botocore_for_query_and_json_requests() {
        let vectors: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("sigv4_vectors.json")).expect("vectors are JSON");
        assert!(vectors.len() >= 4);
        for vector in &vectors {
            let text = |field: &str| vector[field].as_str().unwrap_or_else(|| panic!("{field}")).to_string();
            let credentials = Credentials {
                access_key: text("access_key"),
                secret_key: text("secret_key"),
                session_token: vector["session_token"].as_str().map(str::to_string),
            };
            let headers: Vec<(String, String)> = vector["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let date = text("amz_date");
            let number = |range: std::ops::Range<usize>| date[range].parse::<u32>().unwrap();
            let time = Utc {
                year: number(0..4).into(),
                month: number(4..6),
                day: number(6..8),
                hour: number(9..11),
                minute: number(11..13),
                second: number(13..15),
            };
            let body = text("body");
            let request = Request {
                method: &text("method"),
                path: "/",
                query: &[],
                headers: &headers,
                payload: body.as_bytes(),
            };
            let signed = sign_service(&credentials, &text("service"), &text("region"), &request, time, false);
            assert_eq!(signed[0].1, text("authorization"), "{}", text("name"));
            assert_eq!(signed[1], ("x-amz-date".to_string(), date.clone()));
        }
    }

    #[test]
    fn encodes_like_aws() {
        assert_eq!(uri_encode("logs/2026 11/a+b~c", true), "logs/2026%2011/a%2Bb~c");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }
}
