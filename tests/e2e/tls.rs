//! TLS everywhere, end to end.
