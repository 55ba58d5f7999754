//! SMTP's STARTTLS (RFC 3207): the plaintext exchange that precedes a mail server's TLS.
//!
//! ```ignore
//! let stream = smtp::starttls(net::Stream::connect(&host, 25)?)?.start_tls(&host)?;
//! ```

use crate::protocol_error as protocol;
use std::io::{self, BufRead, BufReader, Read, Write};

/// The name this client gives in EHLO.
const CLIENT_NAME: &str = "localhost";
/// Longest reply line accepted (RFC 5321 allows 512 bytes; some servers send more).
const MAX_LINE: usize = 4096;
/// Most lines accepted in one reply.
const MAX_LINES: usize = 200;

/// A server reply: its code and the text of each line (without code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code (220, 250, 554, ...).
    pub code: u16,
    /// The text of each line.
    pub lines: Vec<String>,
}

impl Reply {
    /// Whether an EHLO reply lists the STARTTLS extension.
    pub fn offers_starttls(&self) -> bool {
        self.lines.iter().skip(1).any(|line| {
            line.split_ascii_whitespace()
                .next()
                .is_some_and(|keyword| keyword.eq_ignore_ascii_case("STARTTLS"))
        })
    }
}

/// One reply line: `250-PIPELINING` is (250, more lines follow, "PIPELINING"),
/// `250 OK` is (250, last line, "OK").
pub fn parse_reply_line(line: &str) -> Result<(u16, bool, &str), String> {
    let code = line
        .get(..3)
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an SMTP reply line: {:?}", cut(line)))?;
    match line.as_bytes().get(3) {
        None => Ok((code, false, "")),
        Some(b' ') => Ok((code, false, &line[4..])),
        Some(b'-') => Ok((code, true, &line[4..])),
        Some(_) => Err(format!("not an SMTP reply line: {:?}", cut(line))),
    }
}

/// Reads one reply, all of its lines.
pub fn read_reply<R: BufRead>(reader: &mut R) -> io::Result<Reply> {
    let mut reply: Option<Reply> = None;
    loop {
        let mut line = Vec::new();
        let read = reader.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line.last() != Some(&b'\n') {
            return Err(protocol("reply line too long or not terminated"));
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        let (code, more, text) = parse_reply_line(line).map_err(protocol)?;
        let reply = reply.get_or_insert_with(|| Reply {
            code,
            lines: Vec::new(),
        });
        if reply.code != code {
            return Err(protocol(format!(
                "reply code changed from {} to {code} mid-reply",
                reply.code
            )));
        }
        if reply.lines.len() >= MAX_LINES {
            return Err(protocol("reply has too many lines"));
        }
        reply.lines.push(text.to_string());
        if !more {
            return Ok(reply.clone());
        }
    }
}

/// Reads the greeting (220), says EHLO, checks that the server offers STARTTLS, sends
/// STARTTLS and reads its 220: the stream is then ready for the TLS handshake
/// ([`crate::net::Stream::start_tls`]). Fails if the server sent anything after that
/// 220, since it would be taken as part of the encrypted session.
pub fn starttls<S: Read + Write>(stream: S) -> io::Result<S> {
    let mut reader = BufReader::new(stream);
    expect(&mut reader, "the greeting", 220)?;
    send(&mut reader, &format!("EHLO {CLIENT_NAME}\r\n"))?;
    let ehlo = expect(&mut reader, "EHLO", 250)?;
    if !ehlo.offers_starttls() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the SMTP server does not offer STARTTLS",
        ));
    }
    send(&mut reader, "STARTTLS\r\n")?;
    expect(&mut reader, "STARTTLS", 220)?;
    if !reader.buffer().is_empty() {
        return Err(protocol("the server sent data after agreeing to STARTTLS"));
    }
    Ok(reader.into_inner())
}

fn send<S: Read + Write>(reader: &mut BufReader<S>, command: &str) -> io::Result<()> {
    let stream = reader.get_mut();
    stream.write_all(command.as_bytes())?;
    stream.flush()
}

fn expect<R: BufRead>(reader: &mut R, what: &str, code: u16) -> io::Result<Reply> {
    let reply = read_reply(reader)?;
    if reply.code != code {
        let text = reply.lines.first().map(String::as_str).unwrap_or("");
        return Err(protocol(format!(
            "the SMTP server answered {what} with {} {}",
            reply.code,
            cut(text)
        )));
    }
    Ok(reply)
}

fn cut(text: &str) -> &str {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Scripted;

    /// A reply line's code, whether more lines follow, and its text.
    type Parsed = (u16, bool, &'static str);

    #[test]
    fn parses_reply_lines() {
        // (line, what it parses to; None: not a reply line)
        let table: &[(&str, Option<Parsed>)] = &[
            (
                "220 mail.example.com ESMTP",
                Some((220, false, "mail.example.com ESMTP")),
            ),
            ("250-STARTTLS", Some((250, true, "STARTTLS"))),
            ("250 OK", Some((250, false, "OK"))),
            ("250", Some((250, false, ""))),
            ("25", None),
            ("abc hello", None),
            ("250xOK", None),
            ("€€€", None),
        ];
        for (line, expected) in table {
            assert_eq!(parse_reply_line(line).ok(), *expected, "{line}");
        }
    }

    #[test]
    fn reads_multi_line_replies_and_finds_starttls() {
        let text = "250-mail.example.com\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n";
        let reply = read_reply(&mut text.as_bytes()).unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines.len(), 4);
        assert!(reply.offers_starttls());

        // The first line is the server's name, not an extension.
        let reply = read_reply(&mut "250-STARTTLS\r\n250 SIZE 100\r\n".as_bytes()).unwrap();
        assert!(!reply.offers_starttls());
        let reply = read_reply(&mut "250-x\r\n250 starttls\r\n".as_bytes()).unwrap();
        assert!(reply.offers_starttls());

        for bad in ["250-a\r\n251 b\r\n", "250-a\r\n", "hello\r\n", "250 no newline"] {
            assert!(read_reply(&mut bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    fn scripted(reply: &str) -> Scripted {
        Scripted::new(reply.as_bytes())
    }

    #[test]
    fn starttls_follows_rfc_3207() {
        let stream = starttls(scripted(
            "220 mx ESMTP\r\n250-mx\r\n250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n",
        ))
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&stream.written),
            "EHLO localhost\r\nSTARTTLS\r\n"
        );

        let err = starttls(scripted("220 mx ESMTP\r\n250-mx\r\n250 SIZE 10\r\n")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        let err = starttls(scripted("554 go away\r\n")).unwrap_err();
        assert!(
            err.to_string().contains("answered the greeting with 554 go away"),
            "{err}"
        );
        let err = starttls(scripted(
            "220 mx\r\n250-mx\r\n250 STARTTLS\r\n454 TLS not available\r\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("answered STARTTLS with 454"), "{err}");
        // Plaintext after the 220 would be read as part of the TLS session (CVE-2011-0411).
        let err = starttls(scripted(
            "220 mx\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n250 injected\r\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("after agreeing"), "{err}");
    }
}
