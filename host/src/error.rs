//! Errors the CLI reports, with the exit code each maps to.

use std::fmt;

/// A failure of the command itself (not of a check, which is a status).
#[derive(Debug)]
pub enum Error {
    /// Bad input: arguments, grants, config, plugin files. Exit 64.
    Invalid(String),
    /// runbox could not do its job for a reason of its own (exit 3, UNKNOWN).
    Internal(String),
}

impl Error {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid(_) => 64,
            Error::Internal(_) => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(message) | Error::Internal(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for bad-input errors.
pub fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}
