//! The pod annotation `skip-containers`: the names of the containers to leave alone, read as
//! the reference reads them (the first record of a CSV text), each trimmed of whitespace.
//!
//! The reference hands the value to Go's `encoding/csv` with its defaults and reads one
//! record: a name may be quoted (`"vault-agent"`, and `"a, b"` is one name), a doubled quote
//! inside quotes is a quote, a quote anywhere else is an error, empty lines before the record
//! are skipped and only the record's line counts (a quoted name may span lines). On an error
//! it skips no container. Here the same, and also each name is trimmed of surrounding
//! whitespace (spaces, tabs, line breaks), inside quotes too: a container name never contains
//! whitespace, so trimming only lets `a, b` and `a,\tb` skip `b` as they obviously mean to.

use std::collections::HashSet;

/// Why the value is not a list the reference can read; then no container is skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SkipContainersError {
    #[error("a quote inside an unquoted name at character {0}: quote the whole name, with nothing before its opening quote")]
    BareQuote(usize),
    #[error("text after the closing quote at character {0}: a quoted name must be followed by a comma or the end of the line")]
    AfterQuote(usize),
    #[error("the quote at character {0} is never closed")]
    Unclosed(usize),
}

/// The names in `value`, trimmed, without empty ones.
pub(crate) fn parse(value: &str) -> Result<HashSet<String>, SkipContainersError> {
    // 1-based character position of a byte offset, for the messages.
    let at = |offset: usize| value[..offset].chars().count() + 1;
    let mut names = HashSet::new();
    let mut add = |name: &str| {
        let name = name.trim();
        if !name.is_empty() {
            names.insert(name.to_owned());
        }
    };
    // Empty lines before the record are skipped ("\r\n" ends a line as "\n" does).
    let mut rest = value;
    while let Some(more) = rest
        .strip_prefix('\n')
        .or_else(|| rest.strip_prefix("\r\n"))
    {
        rest = more;
    }
    loop {
        let start = value.len() - rest.len();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut inner = quoted;
            loop {
                let Some(close) = inner.find('"') else {
                    return Err(SkipContainersError::Unclosed(at(start)));
                };
                name.push_str(&inner[..close]);
                let after = &inner[close + 1..];
                if let Some(more) = after.strip_prefix('"') {
                    name.push('"');
                    inner = more;
                } else if let Some(more) = after.strip_prefix(',') {
                    add(&name);
                    rest = more;
                    break;
                } else if after.is_empty()
                    || after == "\r"
                    || after.starts_with('\n')
                    || after.starts_with("\r\n")
                {
                    // The end of the record's line (a "\r" right before the end of the value
                    // is dropped, as Go's reader does).
                    add(&name);
                    return Ok(names);
                } else {
                    return Err(SkipContainersError::AfterQuote(at(value.len()
                        - after.len()
                        - 1)));
                }
            }
        } else {
            let line = rest.split('\n').next().unwrap_or_default();
            let field = line.split(',').next().unwrap_or_default();
            if let Some(quote) = field.find('"') {
                return Err(SkipContainersError::BareQuote(at(start + quote)));
            }
            add(field);
            if field.len() == line.len() {
                return Ok(names);
            }
            rest = &rest[field.len() + 1..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, SkipContainersError};
    use rstest::rstest;

    #[rstest]
    #[case::one_name("app", &["app"])]
    #[case::several("app,metrics,setup", &["app", "metrics", "setup"])]
    #[case::spaces_trimmed(" app , setup,metrics ", &["app", "setup", "metrics"])]
    #[case::tabs_trimmed("app,\tsetup\t", &["app", "setup"])]
    #[case::quoted_name_unquoted("\"vault-agent\"", &["vault-agent"])]
    #[case::quoted_comma_is_one_name("\"a, b\",c", &["a, b", "c"])]
    #[case::spaces_inside_quotes_trimmed("\" a \",b", &["a", "b"])]
    #[case::doubled_quote_is_a_quote("\"a\"\"b\"", &["a\"b"])]
    #[case::empty_names_dropped("a,,b,", &["a", "b"])]
    #[case::only_the_first_line("a,b\nc", &["a", "b"])]
    #[case::crlf_ends_the_line("a\r\nc", &["a"])]
    #[case::empty_lines_first_skipped("\n\r\n\na,b\nc", &["a", "b"])]
    #[case::blank_first_line_is_the_record(" \na", &[])]
    #[case::quoted_name_spans_lines("\"a\nb\",c\nd", &["a\nb", "c"])]
    #[case::quoted_then_crlf("\"a\"\r\nb", &["a"])]
    #[case::quoted_then_final_cr("\"a\"\r", &["a"])]
    #[case::lone_cr_is_text("\ra,b", &["a", "b"])]
    #[case::empty("", &[])]
    #[case::only_line_breaks("\n\r\n", &[])]
    #[case::unicode_before_comma("é,a", &["é", "a"])]
    fn reads_the_first_csv_record_trimmed(#[case] value: &str, #[case] expected: &[&str]) {
        let expected = expected.iter().map(|name| name.to_string()).collect();
        assert_eq!(parse(value), Ok(expected), "{value:?}");
    }

    #[rstest]
    #[case::bare_quote("a\"b", SkipContainersError::BareQuote(2))]
    #[case::space_before_quote("a, \"b\"", SkipContainersError::BareQuote(4))]
    #[case::text_after_closing_quote("\"a\"b,c", SkipContainersError::AfterQuote(3))]
    #[case::space_after_closing_quote("\"a\" ,c", SkipContainersError::AfterQuote(3))]
    #[case::cr_after_closing_quote("\"a\"\rb", SkipContainersError::AfterQuote(3))]
    #[case::unclosed("a,\"b", SkipContainersError::Unclosed(3))]
    #[case::unclosed_after_doubled("\"a\"\"", SkipContainersError::Unclosed(1))]
    #[case::position_counts_characters("é\"", SkipContainersError::BareQuote(2))]
    fn what_the_reference_cannot_read_skips_nothing(
        #[case] value: &str,
        #[case] expected: SkipContainersError,
    ) {
        assert_eq!(parse(value), Err(expected), "{value:?}");
    }

    #[test]
    fn an_error_after_the_first_line_is_not_read() {
        assert_eq!(parse("a\n\"b").map(|names| names.len()), Ok(1));
    }
}
