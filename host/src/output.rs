//! Where runbox's text leaves the process: standard output, standard error (logs,
//! prompts, progress, errors), report files and the audit log. Every byte passes
//! [`scrub`] on its way out: secret values read by this process are redacted (in every
//! form runbox may have written them, see [`Redactor`]), and characters a terminal
//! would act on are made visible. Plugin text was already made inert when it entered
//! the host (`CheckOutcome::seal`); this is the one place that guarantees it for
//! everything else that is written, whatever path it took.

use crate::capabilities::secrets::{self, Redactor};
use crate::text;
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

/// `text` as runbox may write it: secrets redacted, active characters other than line
/// breaks and tabs made visible.
pub fn scrub(text: &str) -> Cow<'_, str> {
    scrub_with(&secrets::redactor(), text)
}

fn scrub_with<'a>(redactor: &Redactor, text: &'a str) -> Cow<'a, str> {
    match redactor.redact(text) {
        Cow::Borrowed(text) => text::visible_lines(text),
        Cow::Owned(text) => Cow::Owned(text::visible_lines(&text).into_owned()),
    }
}

/// Writes `text` to standard output. A closed pipe (`| head`) is the reader's choice,
/// not a failure.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(scrub(text).as_bytes()).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes `text` to standard error (errors, prompts, progress).
pub fn eprint(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(scrub(text).as_bytes());
    let _ = stderr.flush();
}

/// Writes `text` to a new or truncated file at `path`.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, scrub(text).as_bytes())
}

/// Standard error for log lines: each formatted line is scrubbed before it is written
/// (a `tracing_subscriber` writer).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().lock().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// `eprintln!` through [`eprint`]: redacted and inert like everything runbox writes.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::eprint(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use errln;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_redacts_and_neutralises_but_keeps_lines() {
        let redactor = Redactor::new(["s3cr3t-Value".to_string()]);
        assert_eq!(
            scrub_with(&redactor, "a S3CR3T-VALUE b\n\x1b[2Jc\td\r\n"),
            "a [REDACTED] b\n\\x1b[2Jc\td\\r\n"
        );
        assert!(matches!(scrub_with(&redactor, "clean\n"), Cow::Borrowed(_)));
    }
}
