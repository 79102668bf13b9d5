//! The container-credentials (EKS Pod Identity) file: which ServiceAccounts get the
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` mode instead of IRSA.

use std::collections::{HashMap, HashSet};

use crate::core::go_syntax::GoJson;

/// The listed ServiceAccounts, by namespace then name, so a lookup allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerCredentialsConfig {
    by_namespace: HashMap<String, HashSet<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("container credentials config is not {{\"identities\":[{{\"namespace\":..., \"serviceAccount\":...}}]}}: {0}")]
pub struct ContainerCredentialsError(String);

impl ContainerCredentialsConfig {
    /// Parses the file content as the reference's Go decoder does: field names
    /// (`identities`, `namespace`, `serviceAccount`) in any case, the last of duplicate
    /// fields winning, `null` fields left empty, unknown fields ignored, invalid UTF-8 read
    /// as U+FFFD. Empty or blank content is an empty list, so an emptied file turns the mode
    /// off rather than keeping stale identities.
    pub fn parse(content: &[u8]) -> Result<Self, ContainerCredentialsError> {
        if content.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let document =
            GoJson::parse(content).map_err(|err| ContainerCredentialsError(err.to_string()))?;
        if !matches!(document, GoJson::Object(_) | GoJson::Null) {
            return Err(ContainerCredentialsError(format!(
                "expected a JSON object, got {}",
                document.type_name()
            )));
        }
        let identities = match document.nullable_field("identities") {
            None | Some(GoJson::Null) => &[][..],
            Some(GoJson::Array(items)) => items.as_slice(),
            Some(other) => {
                return Err(ContainerCredentialsError(format!(
                    "identities must be an array, got {}",
                    other.type_name()
                )))
            }
        };
        let mut config = Self::default();
        for (index, identity) in identities.iter().enumerate() {
            if !matches!(identity, GoJson::Object(_) | GoJson::Null) {
                return Err(ContainerCredentialsError(format!(
                    "identities[{index}] must be an object, got {}",
                    identity.type_name()
                )));
            }
            let text = |name: &str| match identity.field(name) {
                None => Ok(String::new()),
                Some(GoJson::String(text)) => Ok(text.clone()),
                Some(other) => Err(ContainerCredentialsError(format!(
                    "identities[{index}].{name} must be a string, got {}",
                    other.type_name()
                ))),
            };
            let namespace = text("namespace")?;
            let service_account = text("serviceAccount")?;
            config
                .by_namespace
                .entry(namespace)
                .or_default()
                .insert(service_account);
        }
        Ok(config)
    }

    pub fn contains(&self, namespace: &str, service_account: &str) -> bool {
        self.by_namespace
            .get(namespace)
            .is_some_and(|names| names.contains(service_account))
    }

    pub fn len(&self) -> usize {
        self.by_namespace.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_identities_by_namespace_and_name() {
        let config = ContainerCredentialsConfig::parse(
            br#"{"identities":[{"namespace":"ns","serviceAccount":"sa"}]}"#,
        )
        .unwrap();
        assert!(config.contains("ns", "sa"));
        assert!(!config.contains("ns", "other"));
        assert!(!config.contains("other", "sa"));
    }

    #[test]
    fn blank_content_is_empty_and_garbage_is_an_error() {
        assert!(ContainerCredentialsConfig::parse(b"  \n")
            .unwrap()
            .is_empty());
        let err = ContainerCredentialsConfig::parse(b"{\"identities\": 3}").unwrap_err();
        assert!(err.to_string().contains("identities"), "{err}");
    }

    #[test]
    fn field_names_match_in_any_case_as_go_does() {
        let config = ContainerCredentialsConfig::parse(
            br#"{"Identities":[{"NAMESPACE":"ns","serviceaccount":"sa"},{"namespace":"x","\u017ferviceAccount":"y"}]}"#,
        )
        .unwrap();
        assert!(config.contains("ns", "sa"));
        assert!(config.contains("x", "y"), "long s folds to s, as in Go");
    }

    #[test]
    fn the_last_duplicate_wins_and_null_changes_nothing() {
        let config = ContainerCredentialsConfig::parse(
            br#"{"identities":[{"namespace":"a","Namespace":"b","serviceAccount":"sa","serviceAccount":null}],
                "IDENTITIES":[{"namespace":"c","serviceAccount":"sa"}]}"#,
        )
        .unwrap();
        assert_eq!(
            config.len(),
            1,
            "the later identities list replaces the earlier"
        );
        assert!(config.contains("c", "sa"));
        let cleared = ContainerCredentialsConfig::parse(
            br#"{"identities":[{"namespace":"a","serviceAccount":"b"}],"identities":null}"#,
        )
        .unwrap();
        assert!(cleared.is_empty(), "null sets the list to nil, as in Go");
    }

    #[test]
    fn invalid_utf8_is_read_as_replacement_characters() {
        let config = ContainerCredentialsConfig::parse(
            b"{\"identities\":[{\"namespace\":\"n\xffs\",\"serviceAccount\":\"sa\"}],\"x\xfe\":1}",
        )
        .unwrap();
        assert!(config.contains("n\u{fffd}s", "sa"));
    }

    #[test]
    fn wrong_types_are_named() {
        for (content, expected) in [
            (&br#"[]"#[..], "expected a JSON object, got an array"),
            (br#"{"identities":{}}"#, "identities must be an array"),
            (br#"{"identities":[1]}"#, "identities[0] must be an object"),
            (
                br#"{"identities":[{"namespace":1}]}"#,
                "identities[0].namespace must be a string, got a number",
            ),
        ] {
            let err = ContainerCredentialsConfig::parse(content)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
