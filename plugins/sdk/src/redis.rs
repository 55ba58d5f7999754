//! A small Redis client: RESP2 commands and replies over a blocking TCP stream
//! ([`crate::net::Stream`]), TLS for `rediss://` URLs, with timeouts set from the host's
//! deadline.

use crate::config::field_error;
use crate::net::Stream;
use crate::protocol_error as protocol;
use crate::url::{ServiceUrl, redact};
use std::io::{self, BufRead, BufReader, Write};

/// A reply from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$5 hello` (`None`: the null bulk string).
    Bulk(Option<String>),
    /// `*2 ...` (`None`: the null array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text, if it is a simple or bulk string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Simple(text) | Reply::Bulk(Some(text)) => Some(text),
            _ => None,
        }
    }

    /// The reply as an integer, if it is one.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(value) => Some(*value),
            _ => None,
        }
    }

    /// The error text of an error reply, as `Err`.
    pub fn into_result(self) -> Result<Reply, String> {
        match self {
            Reply::Error(message) => Err(message),
            other => Ok(other),
        }
    }
}

/// Where and how to log in to a Redis server, from a plugin's `url` and
/// `password_secret` config fields.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port (default 6379).
    pub port: u16,
    /// ACL user, if the URL names one.
    pub user: Option<String>,
    /// Password: the granted secret if named, else the URL's.
    pub password: Option<String>,
    /// Database number (the URL's path, default 0).
    pub db: u32,
    /// TLS (`rediss://`), with the URL's host as the server name.
    pub tls: bool,
    /// The URL with its password hidden, for messages.
    pub display: String,
}

impl Target {
    /// Reads `redis://[user[:password]@]host[:port][/db]` (`rediss://` for TLS); errors
    /// name the config field.
    pub fn from_config(url: &str, password_secret: Option<&str>) -> Result<Target, String> {
        let parsed = ServiceUrl::parse(url, &["redis", "rediss"]).map_err(|err| field_error("url", err))?;
        let db = match parsed.path.as_str() {
            "" => 0,
            path => path
                .parse::<u32>()
                .map_err(|_| field_error("url", format!("database \"{path}\" is not a number")))?,
        };
        let password = match password_secret {
            Some(name) => Some(crate::secret(name).map_err(|err| field_error("password_secret", err))?),
            None => parsed.password,
        };
        Ok(Target {
            host: parsed.host,
            port: parsed.port.unwrap_or(6379),
            user: parsed.user,
            password,
            db,
            tls: parsed.scheme == "rediss",
            display: redact(url),
        })
    }

    /// Connects (with TLS for `rediss://`) and logs in.
    pub fn connect(&self) -> Result<Connection, LoginError> {
        let mut conn = Connection::open(self).map_err(LoginError::Io)?;
        conn.login(self)?;
        Ok(conn)
    }

    /// [`Target::connect`] for a check: a failure is the CRITICAL report that says why
    /// (`cannot connect to redis://…: connection refused`, `redis://…: authentication
    /// failed: …`).
    pub fn connect_or_report(&self) -> Result<Connection, crate::Report> {
        self.connect().map_err(|err| match err {
            LoginError::Io(err) => crate::Report::critical(format!(
                "cannot connect to {}: {}",
                self.display,
                crate::describe_io(&err)
            )),
            err => crate::Report::critical(format!("{}: {err}", self.display)),
        })
    }
}

/// Why connecting or logging in failed.
#[derive(Debug)]
pub enum LoginError {
    /// The network failed.
    Io(io::Error),
    /// AUTH was refused, or the server wants a password we do not have (`NOAUTH`).
    Auth(String),
    /// SELECT was refused.
    Select(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Io(err) => write!(f, "{err}"),
            LoginError::Auth(message) => write!(f, "authentication failed: {message}"),
            LoginError::Select(message) => write!(f, "SELECT refused: {message}"),
        }
    }
}

/// Largest bulk string or array we accept; anything bigger is a protocol error.
const MAX_LEN: i64 = 16 * 1024 * 1024;

/// One connection to a Redis server.
pub struct Connection {
    reader: BufReader<Stream>,
}

impl Connection {
    /// Connects to the target's host and port, and makes the TLS handshake if it is
    /// `rediss://` (a failed one is an error carrying the host's reason, see
    /// [`crate::net::TlsError`]). Reads and writes time out a little before the host's
    /// deadline, so the plugin can say "timed out" itself.
    pub fn open(target: &Target) -> io::Result<Connection> {
        let mut stream = Stream::connect(&target.host, target.port)?;
        if target.tls {
            stream = stream.start_tls(&target.host)?;
        }
        Ok(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// AUTH (when the target has a password; with its user, if any), then SELECT (when
    /// the database is not 0).
    pub fn login(&mut self, target: &Target) -> Result<(), LoginError> {
        if let Some(password) = &target.password {
            let reply = match &target.user {
                Some(user) => self.call(&["AUTH", user, password]),
                None => self.call(&["AUTH", password]),
            };
            if let Reply::Error(message) = reply.map_err(LoginError::Io)? {
                return Err(LoginError::Auth(message));
            }
        }
        if target.db != 0
            && let Reply::Error(message) = self.call(&["SELECT", &target.db.to_string()]).map_err(LoginError::Io)?
        {
            return Err(if message.starts_with("NOAUTH") {
                LoginError::Auth(message)
            } else {
                LoginError::Select(message)
            });
        }
        Ok(())
    }

    /// Sends one command as an array of bulk strings and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> io::Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.call_bytes(&args)
    }

    /// [`Connection::call`] with arguments that need not be UTF-8 (e.g. a compressed value).
    pub fn call_bytes(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&frame)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1);
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Integer(parse_int(rest)?),
            "$" => match parse_len(rest)? {
                None => Reply::Bulk(None),
                Some(len) => {
                    let mut data = vec![0; len + 2];
                    io::Read::read_exact(&mut self.reader, &mut data)?;
                    data.truncate(len);
                    Reply::Bulk(Some(String::from_utf8_lossy(&data).into_owned()))
                }
            },
            "*" => match parse_len(rest)? {
                None => Reply::Array(None),
                Some(len) => Reply::Array(Some((0..len).map(|_| self.read_reply()).collect::<io::Result<_>>()?)),
            },
            _ => return Err(protocol(format!("unexpected reply type {kind:?}"))),
        })
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line
            .strip_suffix("\r\n")
            .ok_or_else(|| protocol("reply line not terminated by CRLF"))?;
        if line.is_empty() {
            return Err(protocol("empty reply line"));
        }
        Ok(line.to_string())
    }
}

fn parse_int(text: &str) -> io::Result<i64> {
    text.parse().map_err(|_| protocol(format!("bad integer {text:?}")))
}

fn parse_len(text: &str) -> io::Result<Option<usize>> {
    match parse_int(text)? {
        -1 => Ok(None),
        len if (0..=MAX_LEN).contains(&len) => Ok(Some(len as usize)),
        len => Err(protocol(format!("length {len} out of range"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_redis_and_rediss_urls() {
        // (url, host, port, tls, db)
        let table: &[(&str, &str, u16, bool, u32)] = &[
            ("redis://127.0.0.1", "127.0.0.1", 6379, false, 0),
            ("rediss://cache.internal", "cache.internal", 6379, true, 0),
            ("REDISS://u:pw@[::1]:6390/3", "::1", 6390, true, 3),
        ];
        for (url, host, port, tls, db) in table {
            let target = Target::from_config(url, None).unwrap();
            assert_eq!(
                (target.host.as_str(), target.port, target.tls, target.db),
                (*host, *port, *tls, *db),
                "{url}"
            );
        }
        assert_eq!(
            Target::from_config("rediss://u:pw@h", None).unwrap().display,
            "rediss://u:***@h"
        );
        let err = Target::from_config("https://h", None).unwrap_err();
        assert!(
            err.starts_with("config field `url`:") && err.contains("redis or rediss"),
            "{err}"
        );
    }
}
