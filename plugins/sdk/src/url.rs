//! `scheme://[user[:password]@]host[:port][/path][?query]` URLs for services such as
//! Redis and PostgreSQL. Small on purpose: plugins stay light, and these URLs never
//! need the full WHATWG algorithm.

/// A parsed service URL. `user` and `password` are percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    /// Scheme, lower-cased (`redis`, `postgres`).
    pub scheme: String,
    /// User name, if the URL has one.
    pub user: Option<String>,
    /// Password, if the URL has one.
    pub password: Option<String>,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, if the URL names one.
    pub port: Option<u16>,
    /// Path without the leading `/`, percent-decoded ("" when absent).
    pub path: String,
    /// Query string without the leading `?`, as written.
    pub query: Option<String>,
}

impl ServiceUrl {
    /// Parses `text`, requiring one of `schemes`; errors say what part is wrong.
    pub fn parse(text: &str, schemes: &[&str]) -> Result<ServiceUrl, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("\"{}\" is not a URL: expected {}://host:port", redact(text), schemes[0]))?;
        let scheme = scheme.to_ascii_lowercase();
        if !schemes.contains(&scheme.as_str()) {
            return Err(format!(
                "scheme \"{scheme}\" is not supported (expected {})",
                schemes.join(" or ")
            ));
        }
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(index) => rest.split_at(index),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(decode(password)?)),
                    None => (info, None),
                };
                let user = decode(user)?;
                ((!user.is_empty()).then_some(user), password)
            }
        };
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (path_and_query, None),
        };
        let path = decode(path.strip_prefix('/').unwrap_or(path))?;
        Ok(ServiceUrl {
            scheme,
            user,
            password,
            host,
            port,
            path,
            query,
        })
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 host")?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("expected ':' after ']'")?)),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|_| format!("port \"{port}\" is not a number from 0 to 65535"))?,
        ),
    };
    Ok((host.to_string(), port))
}

/// Percent-decodes `text` (UTF-8).
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or("truncated %-escape in URL")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape \"%{hex}\" in URL"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "URL escapes do not decode to UTF-8".to_string())
}

/// The URL with any password replaced by `***`, safe to print.
pub fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{hostport}{tail}"),
            None => text.to_string(),
        },
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_urls() {
        let url = ServiceUrl::parse("redis://default:p%40ss@127.0.0.1:6380/2", &["redis"]).unwrap();
        assert_eq!(url.user.as_deref(), Some("default"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, Some(6380));
        assert_eq!(url.path, "2");

        let url = ServiceUrl::parse("REDIS://:secret@[::1]", &["redis"]).unwrap();
        assert_eq!(
            (url.scheme.as_str(), url.user, url.password.as_deref()),
            ("redis", None, Some("secret"))
        );
        assert_eq!((url.host.as_str(), url.port), ("::1", None));

        let url = ServiceUrl::parse("postgres://app@db.internal:5432/main?sslmode=disable", &["postgres"]).unwrap();
        assert_eq!(
            (url.path.as_str(), url.query.as_deref()),
            ("main", Some("sslmode=disable"))
        );
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        let cases: &[(&str, &str)] = &[
            ("localhost:6379", "not a URL"),
            ("http://localhost", "not supported"),
            ("redis://:6379", "no host"),
            ("redis://host:99999", "port"),
            ("redis://host:x", "port"),
            ("redis://[::1", "unclosed"),
            ("redis://u:%zz@host", "escape"),
        ];
        for (text, expected) in cases {
            let err = ServiceUrl::parse(text, &["redis"]).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("redis://u@h"), "redis://u@h");
    }
}
