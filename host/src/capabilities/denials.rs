//! What the sandbox refused a plugin during one invocation, kept for the report: every
//! capability (network, HTTP, secrets) records its denials into one [`Denials`].
//!
//! A plugin chooses how often it is denied and what it asks for (a name of a megabyte, a
//! hundred thousand different names), so what is kept is bounded: at most
//! [`MAX_DENIALS_KEPT`] distinct denials, each text cut to [`MAX_DENIAL_TEXT_BYTES`]; a
//! repeat of a kept denial is found in O(1) and kept once; denials past the cap are only
//! counted, and the report says how many.

use crate::text::cut;
use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;

/// Distinct denials kept per invocation; further ones are counted, not kept.
pub const MAX_DENIALS_KEPT: usize = 32;

/// Bytes kept of a denial's attempt and of its remedy (each); longer text is cut.
pub const MAX_DENIAL_TEXT_BYTES: usize = 512;

/// A denied operation: what was attempted and what would allow it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Denial {
    /// What was attempted, e.g. "connect to 127.0.0.1:6380".
    pub attempt: String,
    /// Why it was denied and how to allow it (if it can be allowed).
    pub remedy: String,
}

impl Denial {
    /// A denial of `attempt` with `remedy`, each with the process's secrets redacted and
    /// then cut to [`MAX_DENIAL_TEXT_BYTES`] (in that order: a cut must not leave half a
    /// secret the redactor would no longer recognise).
    pub fn new(attempt: String, remedy: String) -> Denial {
        let redactor = super::secrets::redactor();
        let clean = |text: String| match redactor.redact(&text) {
            std::borrow::Cow::Borrowed(_) => cut(text, MAX_DENIAL_TEXT_BYTES),
            std::borrow::Cow::Owned(redacted) => cut(redacted, MAX_DENIAL_TEXT_BYTES),
        };
        Denial {
            attempt: clean(attempt),
            remedy: clean(remedy),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} denied: {}", self.attempt, self.remedy)
    }
}

/// The denials of one invocation: the first [`MAX_DENIALS_KEPT`] distinct ones, in
/// order, and the number of those not kept. Shared by every capability of a sandbox.
#[derive(Debug, Default)]
pub struct Denials {
    state: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    list: Vec<Denial>,
    seen: HashSet<Denial>,
    not_kept: usize,
}

impl Denials {
    /// Records `denial`: kept if it is new and there is room, ignored if already kept,
    /// counted otherwise.
    pub fn record(&self, denial: Denial) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.seen.contains(&denial) {
            return;
        }
        if state.list.len() < MAX_DENIALS_KEPT {
            state.seen.insert(denial.clone());
            state.list.push(denial);
        } else {
            state.not_kept += 1;
        }
    }

    /// The kept denials, in the order they happened.
    pub fn kept(&self) -> Vec<Denial> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .list
            .clone()
    }

    /// How many denials were not kept because the list was full (repeats included: a
    /// denial that is not kept cannot be recognised when it comes again).
    pub fn not_kept(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .not_kept
    }

    /// One line per kept denial, and a last line counting the others if there were any.
    pub fn lines(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut lines: Vec<String> = state.list.iter().map(ToString::to_string).collect();
        if state.not_kept > 0 {
            lines.push(format!(
                "… {} more denials not shown (only the first {MAX_DENIALS_KEPT} distinct denials are kept)",
                state.not_kept
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(i: usize) -> Denial {
        Denial::new(format!("name lookup of `n{i}.example`"), "no grant covers it".into())
    }

    #[test]
    fn repeats_are_kept_once_and_the_rest_counted() {
        let denials = Denials::default();
        for round in 0..3 {
            for i in 0..100 {
                denials.record(denial(i));
            }
            assert_eq!(denials.kept().len(), MAX_DENIALS_KEPT, "round {round}");
        }
        let kept = denials.kept();
        assert_eq!(kept[0], denial(0));
        assert_eq!(kept[MAX_DENIALS_KEPT - 1], denial(MAX_DENIALS_KEPT - 1));
        assert_eq!(denials.not_kept(), 3 * (100 - MAX_DENIALS_KEPT));
        let lines = denials.lines();
        assert_eq!(lines.len(), MAX_DENIALS_KEPT + 1);
        assert_eq!(lines[0], "name lookup of `n0.example` denied: no grant covers it");
        assert_eq!(
            lines[MAX_DENIALS_KEPT],
            "… 204 more denials not shown (only the first 32 distinct denials are kept)"
        );
    }

    #[test]
    fn few_denials_have_no_count_line() {
        let denials = Denials::default();
        denials.record(denial(1));
        denials.record(denial(1));
        assert_eq!(
            denials.lines(),
            ["name lookup of `n1.example` denied: no grant covers it"]
        );
        assert!(Denials::default().lines().is_empty());
    }

    /// A hundred thousand distinct denials cost the same as 32, and take linear time.
    #[test]
    fn many_distinct_denials_are_bounded_in_memory_and_time() {
        let denials = Denials::default();
        let started = std::time::Instant::now();
        for i in 0..100_000 {
            denials.record(denial(i));
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(denials.kept().len(), MAX_DENIALS_KEPT);
        assert_eq!(denials.not_kept(), 100_000 - MAX_DENIALS_KEPT);
    }

    #[test]
    fn texts_are_cut_at_a_character_boundary() {
        let long = Denial::new(format!("secret `{}`", "é".repeat(1 << 20)), "x".repeat(10_000));
        assert!(
            long.attempt.len() <= MAX_DENIAL_TEXT_BYTES + '…'.len_utf8(),
            "{}",
            long.attempt.len()
        );
        assert!(long.attempt.ends_with('…') && long.attempt.starts_with("secret `éé"));
        assert!(long.attempt.capacity() < 2 * MAX_DENIAL_TEXT_BYTES);
        assert_eq!(long.remedy.len(), MAX_DENIAL_TEXT_BYTES + '…'.len_utf8());
        let short = Denial::new("connect to 127.0.0.1:1".into(), "no grant".into());
        assert_eq!(short.to_string(), "connect to 127.0.0.1:1 denied: no grant");
    }
}
