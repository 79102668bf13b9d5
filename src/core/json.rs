//! Text built from request data for messages and logs: JSON type names ("expected an object,
//! got a string") and echoes of request strings bounded in length, so a hostile request cannot
//! make a log line or an answer megabytes long.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

/// The most bytes of one echoed string, message or warning; the API server itself truncates
/// admission warnings at 256 characters.
pub(crate) const MAX_ECHO: usize = 256;

const ELLIPSIS: char = '…';

/// The JSON type of `value`, with its article, for messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` cut to at most `max` bytes on a character boundary, ending with `…` when cut.
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(ELLIPSIS.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = String::with_capacity(end + ELLIPSIS.len_utf8());
    cut.push_str(&text[..end]);
    cut.push(ELLIPSIS);
    Cow::Owned(cut)
}

/// [`bounded`] for an owned string, reusing it when it fits.
pub(crate) fn bound_owned(text: String, max: usize) -> String {
    match bounded(&text, max) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

/// Names joined with `,`, at most `max` bytes, then how many were left out.
pub(crate) fn bounded_list<S: AsRef<str>>(names: &[S], max: usize) -> String {
    let mut out = String::new();
    for (index, name) in names.iter().enumerate() {
        let name = bounded(name.as_ref(), max);
        let separator = usize::from(index > 0);
        if out.len() + separator + name.len() > max {
            let _ = write!(
                out,
                "{}(+{} more)",
                if index > 0 { "," } else { "" },
                names.len() - index
            );
            break;
        }
        if index > 0 {
            out.push(',');
        }
        out.push_str(&name);
    }
    out
}

/// What the API server passes on of a response's warnings, in bytes.
const WARNINGS_BYTES: usize = 4096;

/// Admission warnings, bounded as they are collected: each to [`MAX_ECHO`] bytes (the API
/// server cuts longer ones), all together to the 4 KiB the API server passes on, the rest
/// counted. A pod of thousands of containers in conflict thus costs a counter, not a warning
/// each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warnings {
    kept: Vec<String>,
    bytes: usize,
    dropped: usize,
}

impl Warnings {
    pub fn push(&mut self, warning: String) {
        let warning = bound_owned(warning, MAX_ECHO);
        // Room is left for the line that counts what was dropped.
        if self.dropped > 0 || self.bytes + warning.len() > WARNINGS_BYTES - MAX_ECHO {
            self.dropped += 1;
            return;
        }
        self.bytes += warning.len();
        self.kept.push(warning);
    }

    /// `other`'s warnings after these.
    pub fn append(&mut self, other: Warnings) {
        let dropped = other.dropped;
        for warning in other.kept {
            self.push(warning);
        }
        self.dropped += dropped;
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.dropped == 0
    }

    /// The warnings to send, the last one saying how many were left out.
    pub fn into_vec(self) -> Vec<String> {
        let mut warnings = self.kept;
        if self.dropped > 0 {
            warnings.push(format!("{} more warnings not shown", self.dropped));
        }
        warnings
    }
}

impl From<Vec<String>> for Warnings {
    fn from(warnings: Vec<String>) -> Self {
        let mut bounded = Self::default();
        for warning in warnings {
            bounded.push(warning);
        }
        bounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_character_boundary_with_an_ellipsis() {
        assert_eq!(bounded("short", 256), "short");
        let long = "é".repeat(300);
        let cut = bounded(&long, 256);
        assert!(cut.len() <= 256, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
        let exact = "a".repeat(256);
        assert_eq!(bounded(&exact, 256), exact);
    }

    #[test]
    fn bounded_list_says_how_many_were_left_out() {
        assert_eq!(bounded_list(&["a", "b"], 256), "a,b");
        let names: Vec<String> = (0..1000).map(|i| format!("container-{i}")).collect();
        let line = bounded_list(&names, 256);
        assert!(line.len() < 256 + 20, "{}", line.len());
        assert!(line.ends_with("more)"), "{line}");
        assert!(line.starts_with("container-0,container-1,"));
        let huge = ["x".repeat(1 << 20)];
        assert!(bounded_list(&huge, 256).len() <= 256);
    }

    #[test]
    fn warnings_are_bounded_each_and_all_and_the_rest_counted() {
        let warnings = Warnings::from(vec!["w".repeat(1 << 20); 1000]);
        let kept = warnings.into_vec();
        assert!(kept.iter().all(|w| w.len() <= MAX_ECHO));
        assert!(kept.iter().map(String::len).sum::<usize>() <= 4096);
        let last = kept.last().unwrap();
        assert_eq!(
            *last,
            format!("{} more warnings not shown", 1000 - (kept.len() - 1))
        );
        let few = vec!["a".to_string(), "b".to_string()];
        assert_eq!(Warnings::from(few.clone()).into_vec(), few);
        let mut first = Warnings::from(vec!["a".to_string()]);
        first.append(Warnings::from(vec!["b".to_string()]));
        assert_eq!(first.into_vec(), ["a", "b"]);
    }
}
