//! The ConfigMap mapping: roles for ServiceAccounts that carry no annotation, keyed
//! `"<namespace>/<serviceaccount>"` in the JSON held by the ConfigMap's `config` key.

use std::collections::HashMap;

use crate::core::go_syntax::GoJson;
use crate::core::settings::clamp_expiration;

/// The ConfigMap key whose value holds the mapping.
pub(crate) const CONFIG_KEY: &str = "config";
/// Namespace part of a key that matches every namespace.
pub(crate) const ANY_NAMESPACE: &str = "*";

/// One mapped ServiceAccount. Absent fields fall back to the flags.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MappingEntry {
    pub role_arn: Option<String>,
    pub audience: Option<String>,
    pub use_regional_sts: Option<bool>,
    /// Already clamped; `TokenExpiration: 0` is stored as `None` (the flag value applies).
    pub token_expiration: Option<i64>,
}

/// The whole mapping, by namespace then ServiceAccount name, so a lookup allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigMapMapping {
    by_namespace: HashMap<String, HashMap<String, MappingEntry>>,
}

/// The mapping document could not be used at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("ConfigMap key {CONFIG_KEY:?} is not valid JSON: {0}")]
    NotJson(String),
    #[error("ConfigMap key {CONFIG_KEY:?} must hold a JSON object keyed \"<namespace>/<serviceaccount>\", got {0}")]
    NotAnObject(&'static str),
}

/// A parsed mapping and what was skipped in it.
#[derive(Debug)]
pub struct ParsedMapping {
    pub mapping: ConfigMapMapping,
    /// One line per skipped key or entry, naming it.
    pub skipped: Vec<String>,
}

impl ConfigMapMapping {
    /// Parses the `config` value. A malformed key or entry is skipped and reported; only a
    /// document that is not a JSON object fails as a whole.
    pub fn parse(config: &str) -> Result<ParsedMapping, MappingError> {
        let document = GoJson::parse(config.as_bytes())
            .map_err(|err| MappingError::NotJson(err.to_string()))?;
        let GoJson::Object(entries) = document else {
            return Err(MappingError::NotAnObject(document.type_name()));
        };
        let mut mapping = ConfigMapMapping::default();
        let mut skipped = Vec::new();
        for (key, value) in entries {
            let Some((namespace, name)) = split_key(&key) else {
                skipped.push(format!(
                    "mapping key {key:?} is not \"<namespace>/<serviceaccount>\"; skipped"
                ));
                continue;
            };
            match parse_entry(&value) {
                Ok(entry) => {
                    mapping
                        .by_namespace
                        .entry(namespace.to_string())
                        .or_default()
                        .insert(name.to_string(), entry);
                }
                Err(problem) => skipped.push(format!("mapping entry {key:?}: {problem}; skipped")),
            }
        }
        Ok(ParsedMapping { mapping, skipped })
    }

    /// The entry for `namespace/name`, else the wildcard entry `*/name`.
    pub fn lookup(&self, namespace: &str, name: &str) -> Option<&MappingEntry> {
        let in_namespace = |ns: &str| self.by_namespace.get(ns).and_then(|names| names.get(name));
        in_namespace(namespace).or_else(|| in_namespace(ANY_NAMESPACE))
    }

    pub fn len(&self) -> usize {
        self.by_namespace.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn split_key(key: &str) -> Option<(&str, &str)> {
    let (namespace, name) = key.split_once('/')?;
    let valid = !namespace.is_empty() && !name.is_empty() && !name.contains('/');
    valid.then_some((namespace, name))
}

/// Fields are read as Go's encoding/json reads them into the reference's struct: names in
/// any case, the last matching member wins, and `null` leaves the field unset.
fn parse_entry(value: &GoJson) -> Result<MappingEntry, String> {
    let GoJson::Object(_) = value else {
        return Err(format!("expected a JSON object, got {}", value.type_name()));
    };
    let string_field = |name: &str| -> Result<Option<String>, String> {
        match value.field(name) {
            None => Ok(None),
            Some(GoJson::String(s)) if s.is_empty() => Ok(None),
            Some(GoJson::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "{name} must be a string, got {}",
                other.type_name()
            )),
        }
    };
    let use_regional_sts = match value.field("UseRegionalSTS") {
        None => None,
        Some(GoJson::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(format!(
                "UseRegionalSTS must be true or false, got {}",
                other.type_name()
            ))
        }
    };
    let token_expiration = match value.field("TokenExpiration") {
        None => None,
        Some(GoJson::Number(n)) => match n.as_i64() {
            Some(0) => None,
            Some(seconds) => Some(clamp_expiration(seconds)),
            None => return Err(format!("TokenExpiration must be whole seconds, got {n}")),
        },
        Some(other) => {
            return Err(format!(
                "TokenExpiration must be a number of seconds, got {}",
                other.type_name()
            ))
        }
    };
    Ok(MappingEntry {
        role_arn: string_field("RoleARN")?,
        audience: string_field("Audience")?,
        use_regional_sts,
        token_expiration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_case_insensitively() {
        let parsed = ConfigMapMapping::parse(
            r#"{"ns/sa": {"rolearn": "arn:aws:iam::111122223333:role/r", "AUDIENCE": "a",
                "useRegionalSts": true, "tokenexpiration": 3600}}"#,
        )
        .unwrap();
        assert!(parsed.skipped.is_empty());
        let entry = parsed.mapping.lookup("ns", "sa").unwrap();
        assert_eq!(
            entry.role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/r")
        );
        assert_eq!(entry.audience.as_deref(), Some("a"));
        assert_eq!(entry.use_regional_sts, Some(true));
        assert_eq!(entry.token_expiration, Some(3600));
    }

    #[test]
    fn exact_key_beats_wildcard() {
        let parsed = ConfigMapMapping::parse(
            r#"{"*/sa": {"RoleARN": "wild"}, "ns/sa": {"RoleARN": "exact"}}"#,
        )
        .unwrap();
        let m = parsed.mapping;
        assert_eq!(
            m.lookup("ns", "sa").unwrap().role_arn.as_deref(),
            Some("exact")
        );
        assert_eq!(
            m.lookup("other", "sa").unwrap().role_arn.as_deref(),
            Some("wild")
        );
        assert_eq!(m.lookup("other", "nobody"), None);
    }

    #[test]
    fn malformed_keys_and_entries_are_skipped_and_named() {
        let parsed = ConfigMapMapping::parse(
            r#"{"nokey": {"RoleARN": "x"}, "a/b/c": {}, "/sa": {}, "ns/bad": {"TokenExpiration": "1h"},
                "ns/notobj": 5, "ns/good": {"RoleARN": "r"}}"#,
        )
        .unwrap();
        assert_eq!(parsed.mapping.len(), 1);
        assert_eq!(parsed.skipped.len(), 5, "{:?}", parsed.skipped);
        let all = parsed.skipped.join("\n");
        for name in [
            "nokey",
            "a/b/c",
            "/sa",
            "ns/bad",
            "ns/notobj",
            "TokenExpiration",
        ] {
            assert!(all.contains(name), "{name} not named in {all}");
        }
    }

    #[test]
    fn zero_expiration_means_flag_and_small_values_are_clamped() {
        let parsed = ConfigMapMapping::parse(
            r#"{"ns/zero": {"TokenExpiration": 0}, "ns/small": {"TokenExpiration": 60}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed
                .mapping
                .lookup("ns", "zero")
                .unwrap()
                .token_expiration,
            None
        );
        assert_eq!(
            parsed
                .mapping
                .lookup("ns", "small")
                .unwrap()
                .token_expiration,
            Some(600)
        );
    }

    #[test]
    fn non_object_document_is_an_error() {
        assert!(matches!(
            ConfigMapMapping::parse("[]"),
            Err(MappingError::NotAnObject("an array"))
        ));
        assert!(matches!(
            ConfigMapMapping::parse("{"),
            Err(MappingError::NotJson(_))
        ));
    }

    #[test]
    fn duplicate_fields_in_any_case_the_last_wins_as_in_go() {
        let parsed = ConfigMapMapping::parse(
            r#"{"ns/sa": {"rolearn": "first", "ROLEARN": "last", "RoleARN": null},
                "ns/twice": {"RoleARN": "a"}, "ns/twice": {"RoleARN": "b"}}"#,
        )
        .unwrap();
        let role = |name: &str| parsed.mapping.lookup("ns", name).unwrap().role_arn.clone();
        assert_eq!(role("sa").as_deref(), Some("last"));
        assert_eq!(role("twice").as_deref(), Some("b"));
    }
}
