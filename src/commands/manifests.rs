//! Reading Kubernetes manifests from files: YAML or JSON, several documents per file, `List`
//! objects expanded. Used by the offline `mutate` command.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// A manifest file could not be read; the message names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct ManifestError {
    pub file: String,
    pub problem: String,
}

impl ManifestError {
    pub fn new(file: &str, problem: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            problem: problem.into(),
        }
    }
}

/// One object from a manifest file, with its position for error messages.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based position of the document in the file.
    pub index: usize,
    /// 1-based position inside a `List` document, for its items.
    pub item: Option<usize>,
    pub object: Value,
}

impl Document {
    pub fn kind(&self) -> &str {
        self.object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn api_version(&self) -> &str {
        self.object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `metadata.<field>` as a string, when present.
    pub(crate) fn metadata_str(&self, field: &str) -> Option<&str> {
        self.object.get("metadata")?.get(field)?.as_str()
    }

    /// True for core/v1 objects of `kind`.
    pub(crate) fn is_core_v1(&self, kind: &str) -> bool {
        self.kind() == kind && self.api_version() == "v1"
    }

    /// What the document is, for error messages: `document 2 (a Deployment)`.
    pub(crate) fn describe(&self) -> String {
        let place = match self.item {
            Some(item) => format!("document {}, item {item}", self.index),
            None => format!("document {}", self.index),
        };
        match self.kind() {
            "" => format!("{place} (no kind)"),
            kind => format!("{place} (a {kind})"),
        }
    }
}

/// Reads `path` (`-` is standard input) and returns its objects in order.
pub(crate) fn read_documents(path: &Path) -> Result<Vec<Document>, ManifestError> {
    let name = display_name(path);
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|err| ManifestError::new("standard input", format!("cannot read: {err}")))?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|err| ManifestError::new(&name, format!("cannot read: {err}")))?
    };
    parse_documents(&text).map_err(|problem| ManifestError::new(&name, problem))
}

/// How a manifest path is named in messages: `-` is standard input.
pub(crate) fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "standard input".into()
    } else {
        path.display().to_string()
    }
}

/// Parses YAML or JSON text into objects. Empty documents are skipped; `kind: List` is
/// expanded into its items.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, String> {
    let trimmed = text.trim_start();
    let mut values = Vec::new();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON proper, read by serde_json: strings exactly as written, 64-bit integers exact,
        // floats correctly rounded (its `float_roundtrip` feature), so each prints back as
        // the same value in its shortest form.
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (index, value) in stream.enumerate() {
            values.push(
                value.map_err(|err| format!("document {} is not valid JSON: {err}", index + 1))?,
            );
        }
    } else {
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(document)
                .map_err(|err| format!("document {} is not valid YAML: {err}", index + 1))?;
            values.push(value);
        }
    }
    let mut documents = Vec::new();
    for (position, value) in values.into_iter().enumerate() {
        let index = position + 1;
        match value {
            Value::Null => continue,
            Value::Object(_) if value.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = value.get("items").and_then(Value::as_array).cloned();
                for (item, object) in items.unwrap_or_default().into_iter().enumerate() {
                    documents.push(Document {
                        index,
                        item: Some(item + 1),
                        object,
                    });
                }
            }
            Value::Object(_) => documents.push(Document {
                index,
                item: None,
                object: value,
            }),
            other => {
                return Err(format!(
                    "document {index} is not a Kubernetes object (got {})",
                    crate::core::json::json_type(&other)
                ))
            }
        }
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_with_several_documents_and_empty_ones() {
        let docs = parse_documents(
            "---\nkind: ServiceAccount\napiVersion: v1\n---\n---\nkind: Pod\napiVersion: v1\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].is_core_v1("ServiceAccount"));
        assert!(docs[1].is_core_v1("Pod"));
        assert_eq!(
            docs[1].index, 3,
            "numbered by position in the file, empty ones included"
        );
    }

    #[test]
    fn json_and_lists_are_read() {
        let docs = parse_documents(r#"{"kind":"List","items":[{"kind":"Pod","apiVersion":"v1"},{"kind":"ServiceAccount","apiVersion":"v1"}]}"#).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].kind(), "ServiceAccount");
        assert_eq!(docs[1].describe(), "document 1, item 2 (a ServiceAccount)");
    }

    #[test]
    fn scalars_and_syntax_errors_are_reported_with_the_document_number() {
        assert!(parse_documents("just text")
            .unwrap_err()
            .contains("document 1"));
        assert!(parse_documents("a: [")
            .unwrap_err()
            .contains("not valid YAML"));
        assert!(parse_documents("{\"a\": }")
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
