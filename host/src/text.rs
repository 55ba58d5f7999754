//! Text that crosses out of runbox: plugin text made inert, and every escaping a report
//! format applies, in one place.
//!
//! A plugin controls every byte of its summary, details, metrics, plan, logs, stdout and
//! `info()`. [`visible`] is applied to all of it once, when it enters the host's results
//! (`CheckOutcome::seal`), so no format and no terminal ever receives a control
//! character, a bidirectional override or a line break from a plugin: each is written
//! as a visible escape instead (`\x1b`, `\r`, `\n`, `\u{202e}`). What the operator sees
//! is what the plugin sent, never what it wanted the terminal to draw.
//!
//! The format escapes ([`json_string`], [`xml`], [`markdown`], [`prometheus_label`],
//! [`nagios_label`]) live here too, so that the secret redactor can apply each of them to
//! a secret and still recognise it after runbox transformed it
//! ([`crate::capabilities::secrets::Redactor`]).

use std::borrow::Cow;

/// True for characters a terminal or a document may act on instead of showing: C0
/// controls, DEL, C1 controls, bidirectional overrides and isolates, and the Unicode
/// line and paragraph separators.
pub fn is_active(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{2028}' | '\u{2029}')
}

/// `text` with every active character (see [`is_active`]) written as a visible escape:
/// `\n`, `\r`, `\x1b`, `\u{202e}`. A tab becomes a space. For plugin text: one line,
/// nothing a terminal would act on.
pub fn visible(text: &str) -> Cow<'_, str> {
    escape_active(text, false)
}

/// Like [`visible`] but keeps line breaks and tabs: for runbox's own multi-line output
/// on its way to a terminal or file, as a last guard.
pub fn visible_lines(text: &str) -> Cow<'_, str> {
    escape_active(text, true)
}

fn escape_active(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let kept = |c: char| keep_lines && (c == '\n' || c == '\t');
    if !text.chars().any(|c| is_active(c) && !kept(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            '\t' => out.push(' '),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x100 && is_active(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_active(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The largest character boundary of `text` at or below `at` (its length if `at` is past it).
pub fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let end = floor_char_boundary(text, max);
    Cow::Owned(format!("{}… [{} bytes cut]", &text[..end], text.len() - end))
}

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
/// The result owns no more memory than it shows, however long `text` was.
pub fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    text.truncate(floor_char_boundary(&text, max));
    text.push('…');
    text.shrink_to_fit();
    text
}

/// The body of a JSON string literal for `text` (as serde_json writes it, without the
/// quotes).
pub fn json_string(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("strings serialize");
    quoted[1..quoted.len() - 1].to_string()
}

/// The body of a Rust `{:?}` string (as `tracing` prints debug fields), without quotes.
pub fn debug_string(text: &str) -> String {
    let quoted = format!("{text:?}");
    quoted[1..quoted.len() - 1].to_string()
}

/// XML character data or attribute value; characters XML 1.0 cannot carry become U+FFFD.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Inline Markdown (CommonMark and GitHub's tables) that renders as exactly `text`: one
/// line, no emphasis, links, images, code, HTML or entities, no `|` that would end a
/// table cell, and nothing at its start that would open a heading, list, quote or code
/// block. Backslash escapes are used, which every CommonMark renderer honours.
pub fn markdown(text: &str) -> String {
    let text = visible(text);
    let text = text.trim_start();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, c) in text.char_indices() {
        let at_start = i == 0;
        let escape = match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '#' | '!' => true,
            '-' | '+' | '=' if at_start => true,
            // `1.` or `1)` at the start opens an ordered list.
            '.' | ')' => text[..i].chars().all(|d| d.is_ascii_digit()) && i > 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Prometheus label value (backslash, double quote and line feed escaped).
pub fn prometheus_label(text: &str) -> String {
    text.replace('\\', r"\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A Nagios perfdata label, per the plugin guidelines: no `=` or `'` (they would end
/// the label or start another item), no `|` (it separates text from perfdata), one line.
/// Each of those becomes `_`; the label is quoted by the caller.
pub fn nagios_label(text: &str) -> String {
    visible(text)
        .chars()
        .map(|c| if matches!(c, '=' | '\'' | '|') { '_' } else { c })
        .collect()
}

/// Nagios plugin text (the status line or a long-output line): one line, and no `|`,
/// which would start perfdata.
pub fn nagios_text(text: &str) -> String {
    visible(text).replace('|', "/")
}

/// True when `text` is a Nagios threshold range as the plugin guidelines define it:
/// `[@][start:][end]` where start is a number or `~` and end a number (empty after a
/// colon meaning infinity), with start ≤ end. Numbers are plain decimals.
pub fn is_nagios_range(text: &str) -> bool {
    let body = text.strip_prefix('@').unwrap_or(text);
    let number = |s: &str| -> Option<f64> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let plain = !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            && !digits.ends_with('.');
        if plain {
            s.parse().ok().filter(|v: &f64| v.is_finite())
        } else {
            None
        }
    };
    match body.split_once(':') {
        None => number(body).is_some(),
        Some((start, end)) => {
            let start = match start {
                "~" => Some(f64::NEG_INFINITY),
                "" => Some(0.0),
                s => number(s),
            };
            let end = match end {
                "" => Some(f64::INFINITY),
                e => number(e),
            };
            matches!((start, end), (Some(s), Some(e)) if s <= e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_characters_become_visible_escapes() {
        let cases = [
            ("plain text", "plain text"),
            ("\x1b[2J\x1b[HOK", "\\x1b[2J\\x1b[HOK"),
            ("\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),
            (
                "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
                "\\x1b]8;;http://x\\x1b\\link\\x1b]8;;\\x1b\\",
            ),
            ("a\rb\nc\u{8}d\0e", "a\\rb\\nc\\x08d\\x00e"),
            ("tab\there", "tab here"),
            ("\u{9b}31m", "\\x9b31m"),
            ("\u{7f}", "\\x7f"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ];
        for (input, expected) in cases {
            assert_eq!(visible(input), expected, "{input:?}");
            assert!(!visible(input).chars().any(is_active));
        }
        assert_eq!(visible_lines("a\nb\tc\x1bd"), "a\nb\tc\\x1bd");
    }

    #[test]
    fn markdown_keeps_text_inside_its_item() {
        let cases = [
            ("PONG in 0.25 ms", "PONG in 0.25 ms"),
            (
                "x\n#### Applied\n- `evil`",
                "x\\\\n\\#\\#\\#\\# Applied\\\\n- \\`evil\\`",
            ),
            ("# heading", "\\# heading"),
            ("- item", "\\- item"),
            ("1. first", "1\\. first"),
            ("<img src=x onerror=alert(1)>", "\\<img src=x onerror=alert(1)\\>"),
            ("[click](http://evil)", "\\[click\\](http://evil)"),
            ("a | b", "a \\| b"),
            ("&#x1b;", "\\&\\#x1b;"),
            ("   > quote", "\\> quote"),
            ("**bold** _it_", "\\*\\*bold\\*\\* \\_it\\_"),
        ];
        for (input, expected) in cases {
            assert_eq!(markdown(input), expected, "{input:?}");
        }
    }

    #[test]
    fn nagios_labels_and_text_cannot_start_new_items() {
        assert_eq!(nagios_label("a'b=c|d\ne"), "a_b_c_d\\ne");
        assert_eq!(nagios_text("ok | 'x'=1\nCRITICAL"), "ok / 'x'=1\\nCRITICAL");
    }

    #[test]
    fn nagios_ranges() {
        for good in [
            "10", "10:", "~:10", "10:20", "@10:20", "-5:5", "0.5", "@~:0", ":5", "1.25:3",
        ] {
            assert!(is_nagios_range(good), "{good} should be a range");
        }
        for bad in [
            "", "abc", "10:5", "1e3", "NaN", "inf", "10;20", "5 ", "@", "~", "1.", ".5", "10:20:30", "1'=2", "--5",
            "+5", "0x10",
        ] {
            assert!(!is_nagios_range(bad), "{bad:?} should not be a range");
        }
    }

    #[test]
    fn truncation_marks_the_cut_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é… [4 bytes cut]");
        assert_eq!(cut("abc".into(), 2), "ab…");
        assert_eq!(cut("aé".into(), 2), "a…");
        assert_eq!((floor_char_boundary("aé", 2), floor_char_boundary("aé", 9)), (1, 3));
    }
}
