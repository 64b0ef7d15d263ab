//! Bounds on what the operator quotes into status, Events and logs: names from answers
//! and objects it does not control (a NocoBase API document, a Deployment's containers, a
//! Secret's keys) are checked and cut, and a list shows its first few entries and a count.
//! An endpoint or an object with 23,000 names then costs a few hundred bytes of status,
//! not a megabyte per integration.

/// Entries of a quoted list shown before "and N more".
pub const MAX_LISTED: usize = 10;
/// Longest single name quoted.
pub const MAX_NAME_CHARS: usize = 63;
/// Longest message kept in a status field (a condition's message, the rotation's, the
/// last validation's); Events are cut shorter ([`crate::decide::EVENT_NOTE_MAX_BYTES`]).
pub const MAX_MESSAGE_CHARS: usize = 2048;

/// One name as it may be quoted: control and invisible characters replaced by `?` (a name
/// cannot break a line or hide text), cut to [`MAX_NAME_CHARS`].
pub fn name(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_control() || is_invisible(c) {
                '?'
            } else {
                c
            }
        })
        .collect();
    crate::http::clip(&clean, MAX_NAME_CHARS)
}

/// Format and bidirectional controls, which reorder or hide what a reader sees.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `items` quoted as a list: each through [`name`], joined by `sep`, the first
/// [`MAX_LISTED`] and then "and N more".
pub fn list<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    list_of(items, sep, MAX_LISTED)
}

/// [`list`] showing at most `max` entries.
pub fn list_of<S: AsRef<str>>(items: &[S], sep: &str, max: usize) -> String {
    let shown: Vec<String> = items.iter().take(max).map(|s| name(s.as_ref())).collect();
    let mut out = shown.join(sep);
    if items.len() > max {
        out.push_str(&format!(" and {} more", items.len() - max));
    }
    out
}

/// Sentences the operator wrote (already bounded names inside), the first `max` and
/// then "and N more", each cut to [`crate::http::MAX_QUOTED_CHARS`].
pub fn sentences<S: AsRef<str>>(items: &[S], sep: &str, max: usize) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(max)
        .map(|s| crate::http::clip(s.as_ref(), crate::http::MAX_QUOTED_CHARS))
        .collect();
    let mut out = shown.join(sep);
    if items.len() > max {
        out.push_str(&format!(" and {} more", items.len() - max));
    }
    out
}

/// A message cut to [`MAX_MESSAGE_CHARS`].
pub fn message(text: &str) -> String {
    crate::http::clip(text, MAX_MESSAGE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_show_the_first_few_and_a_count() {
        let few = ["a", "b"];
        assert_eq!(list(&few, ", "), "a, b");
        let many: Vec<String> = (0..23_000).map(|i| format!("field{i}")).collect();
        let quoted = list(&many, ", ");
        assert!(quoted.starts_with("field0, field1, "));
        assert!(quoted.ends_with("field9 and 22990 more"), "{quoted}");
        assert!(quoted.len() < 200);
        assert_eq!(list::<&str>(&[], ", "), "");
    }

    #[test]
    fn names_cannot_break_lines_hide_text_or_run_long() {
        assert_eq!(name("ok_name"), "ok_name");
        assert_eq!(name("a\nb\u{202E}c"), "a?b?c");
        let long = "x".repeat(500);
        assert_eq!(name(&long).chars().count(), MAX_NAME_CHARS + 1); // with the ellipsis
        assert_eq!(
            message(&"y".repeat(10_000)).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }
}
