//! HS256 JSON Web Tokens (RFC 7519 with HMAC-SHA256), as LiveKit's server SDKs mint
//! them: access tokens (`iss` = API key, `sub` = identity, `video` grants) and webhook
//! signatures (the same, with the claim `sha256` = base64 of the body's SHA-256).
//!
//! Only HS256 is made or accepted: [`verify`] refuses a token whose header names another
//! algorithm (`none` included), whatever its signature.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Signs `claims` as a compact HS256 JWT (`header.payload.signature`, base64url without
/// padding; header `{"alg":"HS256","typ":"JWT"}`).
pub fn mint(claims: &Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(secret, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Standard base64 (with padding) of the SHA-256 of `data`: LiveKit's webhook `sha256`
/// claim (Go's `base64.StdEncoding`, Python's `base64.b64encode`).
pub fn sha256_base64(data: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(data))
}

/// Checks a token's header (HS256), signature, `iss` = `issuer` and `nbf` ≤ `now` <
/// `exp` (seconds since the epoch), as a server would; returns its claims. The error
/// says which of these failed.
pub fn verify(token: &str, secret: &[u8], issuer: &str, now: i64) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three dot-separated parts".into());
    };
    let algorithm = decode_json(header, "header")?["alg"].clone();
    if algorithm != "HS256" {
        return Err(format!("algorithm {algorithm} is not HS256"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{header}.{payload}").as_bytes());
    let given = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "signature is not base64url")?;
    mac.verify_slice(&given).map_err(|_| "signature does not verify")?;
    let claims: Value = decode_json(payload, "payload")?;
    if claims["iss"] != issuer {
        return Err("issuer is not the API key".into());
    }
    let (nbf, exp) = (
        claims["nbf"].as_i64().unwrap_or(i64::MAX),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if !(nbf <= now && now < exp) {
        return Err(format!("not valid now (nbf {nbf}, exp {exp}, now {now})"));
    }
    Ok(claims)
}

fn decode_json(part: &str, what: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("{what} is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|err| format!("{what} is not JSON: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minted_tokens_verify_and_tampering_does_not() {
        let claims = json!({"iss": "APIkey", "sub": "me", "nbf": 100, "exp": 200, "video": {"roomList": true}});
        let token = mint(&claims, b"secret");
        assert_eq!(verify(&token, b"secret", "APIkey", 150).unwrap()["sub"], "me");
        // (token, secret, issuer, now, the error contains)
        let table: &[(&str, &[u8], &str, i64, &str)] = &[
            (&token, b"other", "APIkey", 150, "signature"),
            (&token, b"secret", "OtherKey", 150, "issuer"),
            (&token, b"secret", "APIkey", 250, "not valid now"),
            (&token, b"secret", "APIkey", 99, "not valid now"),
            ("a.b", b"secret", "APIkey", 150, "three"),
        ];
        for (token, secret, issuer, now, expected) in table {
            let err = verify(token, secret, issuer, *now).unwrap_err();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let tampered = token.replacen('.', ".e30", 1);
        assert!(verify(&tampered, b"secret", "APIkey", 150).is_err());
    }

    #[test]
    fn refuses_other_algorithms() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"k","nbf":0,"exp":9999999999}"#);
        let err = verify(&format!("{header}.{payload}."), b"s", "k", 1).unwrap_err();
        assert!(err.contains("not HS256"), "{err}");
    }

    /// Reference values from RFC 4231 (test case 2) and from Python:
    /// `base64.b64encode(hashlib.sha256(b"abc").digest())`.
    #[test]
    fn matches_reference_values() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_eq!(sha256_base64(b"abc"), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
    }

    /// A token minted by PyJWT 2.15.1 (`jwt.encode({"iss": "k", "nbf": 0, "exp":
    /// 4102444800, "sha256": sha256_base64(b"abc")}, "s", algorithm="HS256")`) verifies
    /// here, and not under another secret.
    #[test]
    fn agrees_with_pyjwt() {
        let pyjwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJrIiwibmJmIjowLCJleHAiOjQxMDI0NDQ4MDAsInNoYTI1NiI6InVuZ1d2NDhCeitwQlFVRGVYYTRpSTdBRFlhT1dGM3FjdEJEL1lmSUFGYTA9In0.xQuhwEcveWVy7iwh-5B0gkJO2mUBW-T40pgCRiq914o";
        let claims = verify(pyjwt, b"s", "k", 1).unwrap();
        assert_eq!(claims["sha256"], sha256_base64(b"abc"));
        assert!(verify(pyjwt, b"t", "k", 1).is_err());
    }
}
