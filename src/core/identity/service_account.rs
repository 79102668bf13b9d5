//! What the webhook keeps of a ServiceAccount: only the prefixed annotations it reads, as raw
//! strings. Parsing happens per request so that bad values surface as admission warnings.

use serde::Serialize;

use crate::core::settings::AnnotationKeys;

/// The compact cache entry for one ServiceAccount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceAccountAnnotations {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sts_regional_endpoints: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expiration: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_session_name_from_pod: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Box<str>>,
}

impl ServiceAccountAnnotations {
    /// Picks the annotations the engine reads out of a ServiceAccount's annotation map.
    pub fn from_annotations<'a, I>(annotations: I, keys: &AnnotationKeys) -> Self
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        let mut entry = Self::default();
        for (key, value) in annotations {
            let slot = if *key == keys.role_arn {
                &mut entry.role_arn
            } else if *key == keys.audience {
                &mut entry.audience
            } else if *key == keys.sts_regional_endpoints {
                &mut entry.sts_regional_endpoints
            } else if *key == keys.token_expiration {
                &mut entry.token_expiration
            } else if *key == keys.role_session_name_from_pod {
                &mut entry.role_session_name_from_pod
            } else if *key == keys.region {
                &mut entry.region
            } else {
                continue;
            };
            *slot = Some(value.as_str().into());
        }
        entry
    }

    /// The role, when the annotation is present and not empty.
    pub fn role(&self) -> Option<&str> {
        self.role_arn.as_deref().filter(|role| !role.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn keeps_only_prefixed_annotations_the_engine_reads() {
        let keys = AnnotationKeys::new("example.com");
        let annotations: BTreeMap<String, String> = [
            ("example.com/role-arn", "arn:aws:iam::111122223333:role/x"),
            ("example.com/audience", "aud"),
            ("example.com/region", "eu-west-1"),
            ("example.com/role-session-name-from-pod", "true"),
            ("example.com/container-role-arns", "a pod annotation"),
            ("example.com/other", "ignored"),
            ("eks.amazonaws.com/role-arn", "wrong prefix"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let entry = ServiceAccountAnnotations::from_annotations(&annotations, &keys);
        assert_eq!(entry.role(), Some("arn:aws:iam::111122223333:role/x"));
        assert_eq!(entry.audience.as_deref(), Some("aud"));
        assert_eq!(entry.sts_regional_endpoints, None);
        assert_eq!(entry.token_expiration, None);
        assert_eq!(entry.region.as_deref(), Some("eu-west-1"));
        assert_eq!(entry.role_session_name_from_pod.as_deref(), Some("true"));
    }

    #[test]
    fn empty_role_is_no_role() {
        let entry = ServiceAccountAnnotations {
            role_arn: Some("".into()),
            ..Default::default()
        };
        assert_eq!(entry.role(), None);
    }
}
