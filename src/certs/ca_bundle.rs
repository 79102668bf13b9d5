//! Publishing the CA into the MutatingWebhookConfiguration: every webhook entry's caBundle
//! becomes the Secret's `ca.crt`, with a JSON patch touching only the entries that differ.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::CertsError;

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Every entry already carried the bundle; nothing was written.
    AlreadyCurrent,
    /// This many entries were patched.
    Patched(usize),
}

/// Indexes and names of the entries whose caBundle is not exactly `ca_bundle`.
pub(crate) fn stale_entries(
    config: &MutatingWebhookConfiguration,
    ca_bundle: &[u8],
) -> Vec<(usize, String)> {
    config
        .webhooks
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, webhook)| {
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.as_slice())
                != Some(ca_bundle)
        })
        .map(|(index, webhook)| (index, webhook.name.clone()))
        .collect()
}

/// A JSON patch setting the caBundle of the `stale` entries. Each entry is first tested by
/// name, so a configuration reordered since it was read makes the patch fail rather than
/// write the wrong entry; only the caBundle field is written, so fields this build does not
/// know are left alone (a full update would drop them).
pub(crate) fn patch_for(stale: &[(usize, String)], ca_bundle: &[u8]) -> json_patch::Patch {
    let encoded = serde_json::to_value(ByteString(ca_bundle.to_vec()))
        .expect("a byte string serializes to base64");
    let operations: Vec<serde_json::Value> = stale
        .iter()
        .flat_map(|(index, name)| {
            [
                json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}),
                json!({"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": encoded}),
            ]
        })
        .collect();
    serde_json::from_value(serde_json::Value::Array(operations))
        .expect("the operations are valid JSON patch")
}

/// Makes every entry of the configuration `name` carry `ca_bundle`, patching only when some
/// entry differs.
pub async fn publish(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca_bundle: &[u8],
) -> Result<Published, CertsError> {
    let config = api
        .get_opt(name)
        .await
        .map_err(|source| CertsError::Api {
            action: format!("read MutatingWebhookConfiguration {name}"),
            source,
        })?
        .ok_or_else(|| CertsError::WebhookConfigurationMissing(name.to_string()))?;
    let stale = stale_entries(&config, ca_bundle);
    if stale.is_empty() {
        return Ok(Published::AlreadyCurrent);
    }
    let patch: Patch<()> = Patch::Json(patch_for(&stale, ca_bundle));
    api.patch(name, &PatchParams::default(), &patch)
        .await
        .map_err(|source| CertsError::Api {
            action: format!("patch the caBundle of MutatingWebhookConfiguration {name}"),
            source,
        })?;
    Ok(Published::Patched(stale.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
        serde_json::from_value(json!({
            "metadata": {"name": "piw"},
            "webhooks": bundles.iter().enumerate().map(|(i, bundle)| {
                let mut client_config = json!({"service": {"name": "piw", "namespace": "eks"}});
                if let Some(bundle) = bundle {
                    client_config["caBundle"] = serde_json::to_value(ByteString(bundle.as_bytes().to_vec())).unwrap();
                }
                json!({
                    "name": format!("w{i}.example.com"),
                    "clientConfig": client_config,
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                })
            }).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn only_entries_whose_bundle_differs_are_stale() {
        let config = config(&[Some("CA"), None, Some("OLD")]);
        assert_eq!(
            stale_entries(&config, b"CA"),
            vec![
                (1, "w1.example.com".to_string()),
                (2, "w2.example.com".to_string())
            ]
        );
        assert!(stale_entries(&config_with_all("CA"), b"CA").is_empty());
    }

    fn config_with_all(bundle: &str) -> MutatingWebhookConfiguration {
        config(&[Some(bundle), Some(bundle)])
    }

    #[test]
    fn patch_tests_each_entry_name_before_writing_base64_bundle() {
        let stale = vec![(1, "w1.example.com".to_string())];
        let patch = serde_json::to_value(patch_for(&stale, b"PEM")).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/webhooks/1/name", "value": "w1.example.com"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "UEVN"},
            ])
        );
        let mut document = serde_json::to_value(config(&[None, None])).unwrap();
        json_patch::patch(&mut document, &patch_for(&stale, b"PEM")).unwrap();
        assert_eq!(document["webhooks"][1]["clientConfig"]["caBundle"], "UEVN");
        assert!(document["webhooks"][0]["clientConfig"]
            .get("caBundle")
            .is_none());
        let reordered = vec![(0, "w1.example.com".to_string())];
        let mut document = serde_json::to_value(config(&[None, None])).unwrap();
        assert!(json_patch::patch(&mut document, &patch_for(&reordered, b"PEM")).is_err());
    }
}
