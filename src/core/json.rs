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

/// Warnings each bounded to [`MAX_ECHO`] bytes and, together, to the 4 KiB the API server
/// passes on; one last line says how many were dropped.
pub(crate) fn bounded_warnings(warnings: Vec<String>) -> Vec<String> {
    const TOTAL: usize = 4096;
    let count = warnings.len();
    let mut kept = Vec::with_capacity(count);
    let mut total = 0;
    for warning in warnings {
        let warning = bound_owned(warning, MAX_ECHO);
        if total + warning.len() > TOTAL - MAX_ECHO {
            kept.push(format!("{} more warnings not shown", count - kept.len()));
            break;
        }
        total += warning.len();
        kept.push(warning);
    }
    kept
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
    fn bounded_warnings_caps_each_and_all() {
        let warnings = vec!["w".repeat(1 << 20); 1000];
        let kept = bounded_warnings(warnings);
        assert!(kept.iter().all(|w| w.len() <= MAX_ECHO));
        assert!(kept.iter().map(String::len).sum::<usize>() <= 4096);
        assert!(kept.last().unwrap().ends_with("more warnings not shown"));
        let few = vec!["a".to_string(), "b".to_string()];
        assert_eq!(bounded_warnings(few.clone()), few);
    }
}
