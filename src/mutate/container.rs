//! One container's share of the mutation: the environment variables and the token mount.

use json_patch::PatchOperation;
use serde_json::{json, Map, Value};

use super::patch;
use super::pod::{self, PodShapeError};

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

/// Appends the operations for one container at `path`; true when it changes anything.
///
/// Rules, as the reference: variables already set by the user are never overridden; a
/// container that already has the identity pair, a region and the STS variable is left alone
/// entirely (no mount either).
pub fn mutate_container(
    ops: &mut Vec<PatchOperation>,
    path: &[&str; 3],
    container: &Map<String, Value>,
    field: &str,
    plan: &ContainerPlan<'_>,
) -> Result<bool, PodShapeError> {
    let env_field = format!("{field}.env");
    let env = pod::array(container, "env", &env_field)?;
    let env_names = pod::names(env, &env_field)?;
    let defined = |name: &str| env_names.contains(&name);
    let identity_defined = plan.env_pair.iter().any(|(name, _)| defined(name));
    let region_defined = REGION_VARIABLES.iter().any(|name| defined(name));
    let sts_defined = defined(REGIONAL_STS);
    if identity_defined && region_defined && sts_defined {
        return Ok(false);
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
    let mut changed = !additions.is_empty();
    patch::append_all(
        ops,
        &[path[0], path[1], path[2], "env"],
        env.is_some(),
        additions,
    );

    let mounts_field = format!("{field}.volumeMounts");
    let mounts = pod::array(container, "volumeMounts", &mounts_field)?;
    if !pod::names(mounts, &mounts_field)?.contains(&plan.volume_name) {
        let mount =
            json!({"name": plan.volume_name, "mountPath": plan.mount_path, "readOnly": true});
        patch::append_all(
            ops,
            &[path[0], path[1], path[2], "volumeMounts"],
            mounts.is_some(),
            vec![mount],
        );
        changed = true;
    }
    Ok(changed)
}
