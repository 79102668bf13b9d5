//! Values written the way the reference webhook (a Go program) reads them.
//! Users keep their manifests and flags, so booleans and durations accept Go's syntax exactly.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Go's `strconv.ParseBool`: exactly these twelve spellings, nothing else.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for non-negative durations: `0`, `250ms`, `1.5s`, `1m30s`, `2h`.
/// Follows Go's integer arithmetic step by step, so the same strings are accepted and give the
/// same nanoseconds: fractions are truncated (`3.5ns` is 3 ns), and anything past the int64
/// nanosecond range (about 292 years) is refused. A negative duration is refused, except a
/// signed zero, which Go reads as 0.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    const LIMIT: u64 = 1 << 63;
    let expected = "a Go duration such as 0, 250ms, 1s or 1m30s";
    let invalid = || format!("{value:?} is not {expected}");
    let too_large =
        || format!("{value:?} is too large for a duration (at most 2562047h47m16.854775807s)");
    let (negative, mut rest) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let mut whole: u64 = 0;
        for digit in rest[..digits].bytes() {
            whole = whole
                .checked_mul(10)
                .map(|w| w + u64::from(digit - b'0'))
                .filter(|w| *w <= LIMIT)
                .ok_or_else(invalid)?;
        }
        rest = &rest[digits..];
        let (mut fraction, mut scale) = (0u64, 1f64);
        if let Some(after_dot) = rest.strip_prefix('.') {
            let fraction_digits = after_dot.len()
                - after_dot
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .len();
            let mut overflow = false;
            for digit in after_dot[..fraction_digits].bytes() {
                if overflow {
                    continue;
                }
                match fraction
                    .checked_mul(10)
                    .map(|f| f + u64::from(digit - b'0'))
                    .filter(|f| *f <= LIMIT && fraction <= (LIMIT - 1) / 10)
                {
                    Some(next) => {
                        fraction = next;
                        scale *= 10.0;
                    }
                    None => overflow = true,
                }
            }
            rest = &after_dot[fraction_digits..];
            if digits == 0 && fraction_digits == 0 {
                return Err(invalid());
            }
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, after_unit) = rest.split_at(unit_len);
        let nanos_per_unit: u64 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "{value:?} has a number without a unit; expected {expected}"
                ))
            }
            other => {
                return Err(format!(
                    "{value:?} has unknown unit {other:?}; expected {expected}"
                ))
            }
        };
        rest = after_unit;
        if whole > LIMIT / nanos_per_unit {
            return Err(too_large());
        }
        let mut amount = whole * nanos_per_unit;
        if fraction > 0 {
            // As Go: float64 is exact enough for a fraction of the largest unit, and the
            // conversion truncates.
            amount += (fraction as f64 * (nanos_per_unit as f64 / scale)) as u64;
            if amount > LIMIT {
                return Err(too_large());
            }
        }
        total = total
            .checked_add(amount)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(too_large)?;
    }
    if negative {
        return if total == 0 {
            Ok(Duration::ZERO)
        } else {
            Err(invalid())
        };
    }
    if total > LIMIT - 1 {
        return Err(too_large());
    }
    Ok(Duration::from_nanos(total))
}

/// JSON as Go's `encoding/json` reads it into a struct: objects keep every member in document
/// order, duplicates included, so that [`GoJson::field`] can apply Go's rules (field names
/// matched without regard to case, the last matching member wins, `null` leaves a field as
/// it was).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum GoJson {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<GoJson>),
    Object(Vec<(String, GoJson)>),
}

impl GoJson {
    /// Parses a document. Invalid UTF-8 is accepted as Go accepts it: each invalid byte
    /// becomes U+FFFD.
    pub fn parse(bytes: &[u8]) -> Result<GoJson, serde_json::Error> {
        serde_json::from_str(&go_utf8(bytes))
    }

    /// What Go decodes into a struct field named `name` (its JSON tag) from this object: the
    /// last member whose key equals `name` under Go's case folding and is not `null`. `None`
    /// when there is none or this is not an object.
    pub fn field(&self, name: &str) -> Option<&GoJson> {
        let GoJson::Object(members) = self else {
            return None;
        };
        members
            .iter()
            .rev()
            .find(|(key, value)| *value != GoJson::Null && go_fold_eq(key, name))
            .map(|(_, value)| value)
    }

    /// Like [`GoJson::field`], but a `null` member counts: Go sets a slice, map or pointer
    /// field to nil on `null`.
    pub(crate) fn nullable_field(&self, name: &str) -> Option<&GoJson> {
        let GoJson::Object(members) = self else {
            return None;
        };
        members
            .iter()
            .rev()
            .find(|(key, _)| go_fold_eq(key, name))
            .map(|(_, value)| value)
    }

    /// "a string", "an object"...: for messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            GoJson::Null => "null",
            GoJson::Bool(_) => "a boolean",
            GoJson::Number(_) => "a number",
            GoJson::String(_) => "a string",
            GoJson::Array(_) => "an array",
            GoJson::Object(_) => "an object",
        }
    }
}

/// Text for a JSON parser from bytes that may not be UTF-8, as Go's decoder sees them: each
/// byte of an invalid sequence is one U+FFFD. (Outside strings such bytes stay a syntax error.)
pub(crate) fn go_utf8(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut text = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for _ in chunk.invalid() {
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    Cow::Owned(text)
}

/// Whether a JSON key names a struct field the way Go's `encoding/json` matches them: equal
/// under Unicode simple case folding. For the ASCII names used here that is ASCII case
/// insensitivity plus two non-ASCII letters that fold to ASCII: U+017F (long s) to `s` and
/// U+212A (Kelvin sign) to `k`.
pub(crate) fn go_fold_eq(key: &str, name: &str) -> bool {
    let fold = |c: char| match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    let mut key = key.chars().map(fold);
    let mut name = name.chars().map(fold);
    loop {
        match (key.next(), name.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Go's `filepath.Join(dir, file)` on Unix: the two joined by `/` and cleaned as Go's
/// `path.Clean` does (repeated `/` and `.` segments dropped, `..` taking the segment before it
/// away, no trailing `/`). The reference builds the token file's path this way.
pub(crate) fn join_path(dir: &str, file: &str) -> String {
    if dir.is_empty() && file.is_empty() {
        return String::new();
    }
    let rooted = dir.starts_with('/') || (dir.is_empty() && file.starts_with('/'));
    let mut segments: Vec<&str> = Vec::new();
    for segment in dir.split('/').chain(file.split('/')) {
        match segment {
            "" | "." => {}
            ".." if segments.last().is_some_and(|last| *last != "..") => {
                segments.pop();
            }
            // Above the root is the root; above a relative start is kept.
            ".." if rooted => {}
            segment => segments.push(segment),
        }
    }
    let joined = segments.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

impl<'de> Deserialize<'de> for GoJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(GoJsonVisitor)
    }
}

struct GoJsonVisitor;

impl<'de> Visitor<'de> for GoJsonVisitor {
    type Value = GoJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<GoJson, E> {
        Ok(GoJson::Null)
    }

    fn visit_none<E>(self) -> Result<GoJson, E> {
        Ok(GoJson::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<GoJson, E> {
        Ok(GoJson::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<GoJson, E> {
        Ok(GoJson::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<GoJson, E> {
        Ok(GoJson::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<GoJson, E> {
        // serde_json gives finite numbers only; a NaN cannot arrive here.
        Ok(serde_json::Number::from_f64(value).map_or(GoJson::Null, GoJson::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<GoJson, E> {
        Ok(GoJson::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<GoJson, E> {
        Ok(GoJson::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GoJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(GoJson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GoJson, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, GoJson>()? {
            members.push(member);
        }
        Ok(GoJson::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_path_cleans_as_go_filepath_join() {
        for (dir, file, joined) in [
            ("/var/run/secrets/x", "token", "/var/run/secrets/x/token"),
            ("/var/run/secrets/x/", "token", "/var/run/secrets/x/token"),
            ("/var/run//secrets/./x", "token", "/var/run/secrets/x/token"),
            ("/var/run/secrets/../x", "token", "/var/run/x/token"),
            ("/..", "token", "/token"),
            ("/", "token", "/token"),
            ("/a", "sub/./token/", "/a/sub/token"),
            ("/a", "../../token", "/token"),
            ("a/..", "..", ".."),
            ("", "token", "token"),
            ("", "", ""),
        ] {
            assert_eq!(join_path(dir, file), joined, "{dir:?} + {file:?}");
        }
    }

    #[test]
    fn bool_accepts_exactly_go_spellings() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        for other in ["", "yes", "tRUE", " true", "2", "on"] {
            assert_eq!(parse_bool(other), None, "{other}");
        }
    }

    #[test]
    fn duration_parses_go_forms() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("10us").unwrap(), Duration::from_micros(10));
    }

    #[test]
    fn duration_truncates_fractions_like_go() {
        assert_eq!(parse_duration("3.5ns").unwrap(), Duration::from_nanos(3));
        assert_eq!(
            parse_duration("1.9999999999s").unwrap(),
            Duration::from_nanos(1_999_999_999)
        );
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.s").unwrap(), Duration::from_secs(1));
        assert_eq!(
            parse_duration("1.5h30m").unwrap(),
            Duration::from_secs(7200)
        );
        assert_eq!(
            parse_duration("5\u{b5}s").unwrap(),
            Duration::from_micros(5)
        );
        assert_eq!(parse_duration("-0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("-0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn duration_is_bounded_by_int64_nanoseconds_like_go() {
        assert_eq!(
            parse_duration("9223372036854775807ns").unwrap(),
            Duration::from_nanos(i64::MAX as u64)
        );
        assert_eq!(
            parse_duration("2562047h47m16.854775807s").unwrap(),
            Duration::from_nanos(i64::MAX as u64)
        );
        for over in [
            "9223372036854775808ns",
            "2562047h47m16.854775808s",
            "2562048h",
            "99999999999999999999s",
            "9223372036854775807ns1ns",
        ] {
            let err = parse_duration(over).unwrap_err();
            assert!(err.contains(&format!("{over:?}")), "{over}: {err}");
        }
    }

    #[test]
    fn duration_rejects_bad_forms_naming_the_value() {
        for bad in [
            "", "1", "s", "1x", "-1s", "1.2.3s", "abc", "1e3s", ".s", "+", "-", "1s ", " 1s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn go_json_fields_fold_case_take_the_last_and_skip_null() {
        let doc = GoJson::parse(
            br#"{"rolearn":"a","RoleARN":"b","ROLEARN":"c","roleArn":null,"\u017fa":"long s"}"#,
        )
        .unwrap();
        assert_eq!(doc.field("RoleARN"), Some(&GoJson::String("c".into())));
        assert_eq!(doc.nullable_field("RoleARN"), Some(&GoJson::Null));
        assert_eq!(doc.field("sa"), Some(&GoJson::String("long s".into())));
        assert_eq!(doc.field("missing"), None);
        assert!(go_fold_eq("\u{212a}ey", "KEY"));
        assert!(!go_fold_eq("keys", "key"));
    }

    #[test]
    fn go_json_accepts_invalid_utf8_as_replacement_characters() {
        let doc = GoJson::parse(b"{\"a\xff\xfe\":\"v\xe2\x82\"}").unwrap();
        assert_eq!(
            doc,
            GoJson::Object(vec![(
                "a\u{fffd}\u{fffd}".into(),
                GoJson::String("v\u{fffd}\u{fffd}".into())
            )])
        );
        assert!(
            GoJson::parse(b"\xff{}").is_err(),
            "still a syntax error outside strings"
        );
    }
}
