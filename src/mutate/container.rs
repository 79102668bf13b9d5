//! One container's share of the mutation: the environment variables and the token mount.

use json_patch::PatchOperation;
use serde_json::json;

use super::patch;
use super::view::ContainerView;

const REGIONAL_STS: &str = "AWS_STS_REGIONAL_ENDPOINTS";
const REGION_VARIABLES: [&str; 2] = ["AWS_DEFAULT_REGION", "AWS_REGION"];

/// What every mutated container receives; the same for all containers of a pod.
pub struct ContainerPlan<'a> {
    pub env_pair: [(&'a str, String); 2],
    pub regional_sts: bool,
    pub region: Option<&'a str>,
    pub volume_name: &'a str,
    pub mount_path: &'a str,
}

/// Appends the operations for one container; true when it changes anything.
///
/// Rules, as the reference: variables already set by the user are never overridden; a
/// container that already has the identity pair, a region and the STS variable is left alone
/// entirely (no mount either).
pub fn mutate_container(
    ops: &mut Vec<PatchOperation>,
    container: &ContainerView<'_>,
    plan: &ContainerPlan<'_>,
) -> bool {
    let defined = |name: &str| container.env_names.contains(&name);
    let identity_defined = plan.env_pair.iter().any(|(name, _)| defined(name));
    let region_defined = REGION_VARIABLES.iter().any(|name| defined(name));
    let sts_defined = defined(REGIONAL_STS);
    if identity_defined && region_defined && sts_defined {
        return false;
    }

    let mut additions = Vec::new();
    if plan.regional_sts && !sts_defined {
        additions.push(json!({"name": REGIONAL_STS, "value": "regional"}));
    }
    if let (Some(region), false) = (plan.region, region_defined) {
        for name in REGION_VARIABLES {
            additions.push(json!({"name": name, "value": region}));
        }
    }
    if !identity_defined {
        for (name, value) in &plan.env_pair {
            additions.push(json!({"name": name, "value": value}));
        }
    }
    let index = container.index.to_string();
    let path = |field| ["spec", container.list, index.as_str(), field];
    let mut changed = !additions.is_empty();
    patch::append_all(ops, &path("env"), container.has_env, additions);

    if !container.mount_names.contains(&plan.volume_name) {
        let mount =
            json!({"name": plan.volume_name, "mountPath": plan.mount_path, "readOnly": true});
        patch::append_all(
            ops,
            &path("volumeMounts"),
            container.has_mounts,
            vec![mount],
        );
        changed = true;
    }
    changed
}
