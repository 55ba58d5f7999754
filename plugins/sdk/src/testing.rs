//! Helpers for this crate's unit tests.

use std::io::{self, Read, Write};

/// A server that answers from a script and records what the client wrote.
#[derive(Debug)]
pub struct Scripted {
    /// What the server sends, and how much of it was read.
    pub reply: io::Cursor<Vec<u8>>,
    /// What the client wrote.
    pub written: Vec<u8>,
}

impl Scripted {
    /// A server that will send `reply`.
    pub fn new(reply: &[u8]) -> Scripted {
        Scripted {
            reply: io::Cursor::new(reply.to_vec()),
            written: Vec::new(),
        }
    }
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reply.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
