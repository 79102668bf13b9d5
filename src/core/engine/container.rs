//! One container's share of the mutation: the environment variables and the token mount, and
//! the conflicts that make part of it unsafe to add.

use std::collections::HashSet;

use super::patch::{Json, Patch};
use crate::core::pod::{Container, ContainerList};

const REGIONAL_STS: &str = "AWS_STS_REGIONAL_ENDPOINTS";
const REGION_VARIABLES: [&str; 2] = ["AWS_DEFAULT_REGION", "AWS_REGION"];
const REGIONAL_STS_ENTRY: [(&str, Json<'_>); 2] = env_entry(REGIONAL_STS, "regional");
pub(crate) const SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";
/// `AWS_ROLE_SESSION_NAME` from the pod's own name, through the downward API: the name a pod
/// of `generateName` gets only after admission.
const SESSION_NAME_ENTRY: [(&str, Json<'_>); 2] = [
    ("name", Json::Str(SESSION_NAME)),
    (
        "valueFrom",
        Json::Object(&[(
            "fieldRef",
            Json::Object(&[
                ("apiVersion", Json::Str("v1")),
                ("fieldPath", Json::Str("metadata.name")),
            ]),
        )]),
    ),
];

/// The members of an env entry setting `name` to `value`.
const fn env_entry<'a>(name: &'a str, value: &'a str) -> [(&'static str, Json<'a>); 2] {
    [("name", Json::Str(name)), ("value", Json::Str(value))]
}

/// What every mutated container receives; the same for all containers of a pod.
pub(crate) struct ContainerPlan<'a> {
    /// The credentials; `None` when the pod gets only the region.
    pub credentials: Option<Credentials<'a>>,
    pub regional_sts: bool,
    pub region: Option<&'a str>,
}

/// The identity variables and the token mount.
pub(crate) struct Credentials<'a> {
    /// (name, value) of the two variables that carry the identity.
    pub env_pair: [(&'a str, &'a str); 2],
    /// Add `AWS_ROLE_SESSION_NAME` (from the pod's name) with the pair.
    pub session_name: bool,
    pub volume_name: &'a str,
    pub mount_path: &'a str,
    /// False when the pod has its own volume named `volume_name` that holds no token: then
    /// nothing may mount it or point at it (the pod-level warning says so once).
    pub volume_usable: bool,
    /// Names of the pod's volumes that are projected service-account tokens with the token
    /// file name in use: a container mounting one of them at the mount path already has a
    /// token where the identity variables point.
    pub token_volumes: &'a HashSet<&'a str>,
}

/// What happened to one container.
pub(crate) struct ContainerOutcome {
    /// The container was changed.
    pub changed: bool,
    /// What was left out because it would conflict with the container's own setup.
    pub warnings: Vec<String>,
}

/// Appends the operations for one container. `role`: the role the pod's
/// `container-role-arns` annotation assigns to it, in place of the ServiceAccount's.
///
/// Rules, as the reference: variables already set by the user are never overridden; a
/// container that already has the identity pair, a region and the STS variable is left alone
/// entirely (no mount either). Beyond the reference, nothing is added that would make the pod
/// invalid or point at a file that is not a token: when another volume or a volume device
/// already occupies the mount path (trailing `/` and repeated `/` ignored), the token is not
/// mounted there, and the identity pair is set only if what occupies the path is itself a
/// projected service-account token with the same file name, mounted whole. A container that
/// mounts the token volume somewhere else gets it at the mount path too when it gets the
/// identity pair from us, so the token file is where the pair points. `AWS_ROLE_SESSION_NAME`,
/// when asked for, comes with the pair and only with it.
pub(crate) fn mutate_container(
    patch: &mut Patch,
    list: ContainerList,
    index: usize,
    container: &Container<'_>,
    plan: &ContainerPlan<'_>,
    role: Option<&str>,
) -> ContainerOutcome {
    let defined = |name: &str| container.sets(name);
    let region_defined = REGION_VARIABLES.iter().any(|name| defined(name));
    let index = index.to_string();
    let path = |field| ["spec", list.field(), index.as_str(), field];
    // The entries' members, kept here for the additions to borrow.
    let region_entries = plan
        .region
        .map(|region| REGION_VARIABLES.map(|name| env_entry(name, region)));
    let region_additions = || match (&region_entries, region_defined) {
        (Some(entries), false) => entries.iter().map(|entry| Json::Object(entry)).collect(),
        _ => Vec::new(),
    };

    let Some(credentials) = &plan.credentials else {
        let additions: Vec<Json<'_>> = region_additions();
        patch.append_all(&path("env"), container.env.is_some(), &additions);
        return ContainerOutcome {
            changed: !additions.is_empty(),
            warnings: Vec::new(),
        };
    };
    let [(role_name, own_role), token_file] = credentials.env_pair;
    let env_pair = [(role_name, role.unwrap_or(own_role)), token_file];
    let identity_defined = env_pair.iter().any(|(name, _)| defined(name));
    let mut warnings = Vec::new();
    if let (Some(role), true) = (role, identity_defined) {
        warnings.push(format!(
            "container {:?} sets {} itself: its own variables are kept, not role {role} from the pod's annotation",
            container.name(),
            env_pair.map(|(name, _)| name).join(" or ")
        ));
    }
    let sts_defined = defined(REGIONAL_STS);
    if identity_defined && region_defined && sts_defined {
        return ContainerOutcome {
            changed: false,
            warnings,
        };
    }

    let mount = mount_decision(container, credentials, identity_defined);
    let identity_entries = env_pair.map(|(name, value)| env_entry(name, value));
    let mut additions = Vec::with_capacity(6);
    if plan.regional_sts && !sts_defined {
        additions.push(Json::Object(&REGIONAL_STS_ENTRY));
    }
    additions.extend(region_additions());
    if !identity_defined && mount.token_reachable {
        additions.extend(identity_entries.iter().map(|entry| Json::Object(entry)));
        if credentials.session_name && !defined(SESSION_NAME) {
            additions.push(Json::Object(&SESSION_NAME_ENTRY));
        }
    }
    let mut changed = !additions.is_empty();
    patch.append_all(&path("env"), container.env.is_some(), &additions);

    if mount.add {
        let mount = Json::Object(&[
            ("name", Json::Str(credentials.volume_name)),
            ("mountPath", Json::Str(credentials.mount_path)),
            ("readOnly", Json::Bool(true)),
        ]);
        let exists = container.volume_mounts.is_some();
        patch.append_all(&path("volumeMounts"), exists, &[mount]);
        changed = true;
    }
    if let Some(conflict) = mount.conflict {
        let mut skipped = Vec::new();
        if !identity_defined && !mount.token_reachable {
            skipped.extend(env_pair.iter().map(|(name, _)| *name));
        }
        skipped.push("the token mount");
        warnings.push(format!(
            "container {:?} {conflict}: not added: {}",
            container.name(),
            skipped.join(", ")
        ));
    }
    ContainerOutcome { changed, warnings }
}

/// Whether to mount the token, and whether the token file will be where the identity
/// variables point.
struct MountDecision {
    add: bool,
    token_reachable: bool,
    /// What occupies the mount path, and at which spelling of it, for the warning.
    conflict: Option<String>,
}

/// `identity_defined`: the container sets an identity variable itself, so it gets none from us.
fn mount_decision(
    container: &Container<'_>,
    plan: &Credentials<'_>,
    identity_defined: bool,
) -> MountDecision {
    let keep = |token_reachable| MountDecision {
        add: false,
        token_reachable,
        conflict: None,
    };
    if !plan.volume_usable {
        return keep(false);
    }
    let occupant = container
        .mounts()
        .iter()
        .find(|mount| same_path(mount.path(), plan.mount_path));
    if let Some(occupant) = occupant {
        let partial = occupant.is_partial();
        if occupant.name() == plan.volume_name && !partial {
            // Mounted already, where the variables point (a second pass, or by hand).
            return keep(true);
        }
        let token = !partial && plan.token_volumes.contains(occupant.name());
        let what = if token {
            "already mounts service-account token volume"
        } else {
            "already mounts volume"
        };
        return MountDecision {
            add: false,
            token_reachable: token,
            conflict: Some(format!(
                "{what} {:?} at {}{}",
                occupant.name(),
                occupant.path(),
                if partial { " through subPath" } else { "" }
            )),
        };
    }
    let device = container
        .device_paths()
        .find(|device| same_path(device, plan.mount_path));
    if let Some(device) = device {
        return MountDecision {
            add: false,
            token_reachable: false,
            conflict: Some(format!("has a volume device at {device}")),
        };
    }
    let mounts_volume = container
        .mounts()
        .iter()
        .any(|m| m.name() == plan.volume_name);
    if identity_defined && mounts_volume {
        // The container's own arrangement: its variables, the volume at its own path.
        return keep(true);
    }
    // Also when the volume is mounted elsewhere: the variables point at the mount path.
    MountDecision {
        add: true,
        token_reachable: true,
        conflict: None,
    }
}

/// Paths that name the same directory once empty and `.` segments are ignored: the API server
/// compares mount paths as strings, but `/a` and `/a/` are one mount point to the runtime.
pub(crate) fn same_path(a: &str, b: &str) -> bool {
    fn segments(path: &str) -> impl Iterator<Item = &str> {
        path.split('/')
            .filter(|segment| !segment.is_empty() && *segment != ".")
    }
    a.starts_with('/') == b.starts_with('/') && segments(a).eq(segments(b))
}

#[cfg(test)]
mod tests {
    use super::same_path;

    #[test]
    fn same_path_ignores_trailing_repeated_and_dot_segments() {
        for (a, b) in [
            ("/var/run/x", "/var/run/x/"),
            ("/var/run/x", "/var//run/x"),
            ("/var/run/x", "/var/./run/x/."),
            ("/", "//"),
        ] {
            assert!(same_path(a, b), "{a} {b}");
            assert!(same_path(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("/var/run/x", "/var/run"),
            ("/var/run/x", "/var/run/x/token"),
            ("/var/run/x", "var/run/x"),
            ("/var/run/x", "/var/run/X"),
        ] {
            assert!(!same_path(a, b), "{a} {b}");
        }
    }
}
