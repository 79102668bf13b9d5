//! The container-credentials (EKS Pod Identity) file: which ServiceAccounts get the
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` mode instead of IRSA.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

/// The listed ServiceAccounts, by namespace then name, so a lookup allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerCredentialsConfig {
    by_namespace: HashMap<String, HashSet<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("container credentials config is not {{\"identities\":[{{\"namespace\":..., \"serviceAccount\":...}}]}}: {0}")]
pub struct ContainerCredentialsError(String);

#[derive(Deserialize)]
struct FileFormat {
    #[serde(default)]
    identities: Vec<ListedIdentity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedIdentity {
    namespace: String,
    service_account: String,
}

impl ContainerCredentialsConfig {
    /// Parses the file content. Empty or blank content is an empty list, so an emptied file
    /// turns the mode off rather than keeping stale identities.
    pub fn parse(content: &[u8]) -> Result<Self, ContainerCredentialsError> {
        if content.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let file: FileFormat = serde_json::from_slice(content)
            .map_err(|err| ContainerCredentialsError(err.to_string()))?;
        let mut config = Self::default();
        for identity in file.identities {
            config
                .by_namespace
                .entry(identity.namespace)
                .or_default()
                .insert(identity.service_account);
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
}
