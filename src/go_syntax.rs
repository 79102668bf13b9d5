//! Values written the way the reference webhook (a Go program) reads them.
//! Users keep their manifests and flags, so booleans and durations accept Go's syntax exactly.

use std::time::Duration;

/// Go's `strconv.ParseBool`: exactly these twelve spellings, nothing else.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for non-negative durations: `0`, `250ms`, `1.5s`, `1m30s`, `2h`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let expected = "a Go duration such as 0, 250ms, 1s or 1m30s";
    let mut rest = value.strip_prefix('+').unwrap_or(value);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(format!("{value:?} is not {expected}"));
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after_unit) = after.split_at(unit_len);
        let amount: f64 = number
            .parse()
            .map_err(|_| format!("{value:?} is not {expected}"))?;
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
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
        total_nanos += amount * nanos_per_unit;
        rest = after_unit;
    }
    // Go's durations are int64 nanoseconds: about 292 years.
    if !total_nanos.is_finite() || total_nanos > i64::MAX as f64 {
        return Err(format!("{value:?} is too large for a duration"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn duration_rejects_bad_forms_naming_the_value() {
        for bad in ["", "1", "s", "1x", "-1s", "1.2.3s", "abc", "1e3s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
