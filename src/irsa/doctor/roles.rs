//! Doctor checks on roles per container: which containers of the ServiceAccount's pods the
//! pod annotation `container-role-arns` gives a role of their own, and each such role's trust
//! policy against the ServiceAccount's token (every container of a pod shares it), with the
//! trust policies given matched to the roles they belong to.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::core::engine::ContainerRoles;
use crate::core::pod::Pod;
use crate::core::settings::AnnotationKeys;
use crate::irsa::checklist::Check;
use crate::irsa::policy::TrustPolicy;
use crate::irsa::token::Claims;

use super::token;

/// A trust policy given with `--trust-policy`, and where it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct GivenPolicy {
    /// The file, for messages.
    pub source: String,
    /// The file name without its extension: a plain policy document is matched to the role of
    /// that name.
    pub stem: String,
    pub policy: TrustPolicy,
}

/// Role -> the `pod/container`s of the ServiceAccount's pods given it by their annotation.
pub type ContainerRoleUse = BTreeMap<String, Vec<String>>;

/// The roles the running pods give their containers, read by the engine's own reader of the
/// annotation (`keys.container_role_arns`).
pub fn container_roles(pods: &[Value], keys: &AnnotationKeys) -> ContainerRoleUse {
    let mut roles = ContainerRoleUse::new();
    for value in pods {
        let phase = value["status"]["phase"].as_str().unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let Ok(pod) = Pod::from_value(value) else {
            continue;
        };
        let Some(annotation) = pod.annotation(&keys.container_role_arns) else {
            continue;
        };
        for (container, role) in
            ContainerRoles::parse(annotation, &keys.container_role_arns).entries()
        {
            roles
                .entry(role.to_string())
                .or_default()
                .push(format!("{}/{container}", pod.name()));
        }
    }
    roles
}

/// The check that lists the roles per container, or says there are none.
pub fn report(roles: &ContainerRoleUse, keys: &AnnotationKeys) -> Check {
    let check = Check::new(
        "roles.per-container",
        "containers with a role of their own (pod annotation)",
    );
    if roles.is_empty() {
        return check.skip(format!(
            "no running pod of the ServiceAccount has the annotation {}",
            keys.container_role_arns
        ));
    }
    let mut check = check;
    for (role, users) in roles {
        check = check.detail(format!("{role}: {}", users.join(", ")));
    }
    check.detail(
        "every container of a pod gets the same ServiceAccount token: each role's trust policy decides whether that token may assume it, and containers of one pod are not isolated from each other",
    )
}

/// Which given policy belongs to which role: the role `aws iam get-role` output names, else the
/// role whose name is the file's name; a single plain document is the ServiceAccount's role's,
/// as before roles per container. Returns the policy per role and those that match none.
pub fn assign<'p>(
    policies: &'p [GivenPolicy],
    service_account_role: &str,
    roles: &ContainerRoleUse,
) -> (BTreeMap<String, &'p GivenPolicy>, Vec<&'p GivenPolicy>) {
    let known: Vec<&str> = std::iter::once(service_account_role)
        .chain(roles.keys().map(String::as_str))
        .collect();
    let mut assigned = BTreeMap::new();
    let mut unmatched = Vec::new();
    for given in policies {
        let role = match &given.policy.role_arn {
            Some(arn) => Some(arn.as_str()),
            None => known
                .iter()
                .copied()
                .find(|role| role_name(role) == Some(given.stem.as_str())),
        };
        match role {
            Some(role) => {
                assigned.insert(role.to_string(), given);
            }
            None => unmatched.push(given),
        }
    }
    if let [only] = policies {
        // A single policy is the ServiceAccount's role's unless it belongs to a container's
        // role: checked against the ServiceAccount's role, a policy of another role is reported.
        let a_containers = assigned
            .iter()
            .any(|(role, given)| std::ptr::eq(*given, only) && roles.contains_key(role));
        if !a_containers {
            assigned.clear();
            assigned.insert(service_account_role.to_string(), only);
            unmatched.clear();
        }
    }
    (assigned, unmatched)
}

/// The name of a role ARN (`arn:aws:iam::1:role/path/name` -> `name`).
fn role_name(arn: &str) -> Option<&str> {
    arn.rsplit_once(":role/")
        .map(|(_, path)| path.rsplit('/').next().unwrap_or(path))
}

/// One trust-policy check per role a container is given (other than the ServiceAccount's),
/// with the same token, and a warning for given policies that match no role.
pub fn trust_policies(
    roles: &ContainerRoleUse,
    assigned: &BTreeMap<String, &GivenPolicy>,
    unmatched: &[&GivenPolicy],
    claims: &Claims,
    service_account_role: &str,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for (role, users) in roles {
        if role == service_account_role {
            continue;
        }
        let policy = assigned.get(role).map(|given| &given.policy);
        let mut check = token::trust_policy(policy, claims, role);
        check.id = "trust-policy.container-role";
        check.title = format!(
            "the trust policy of role {role} ({}) lets the ServiceAccount's token assume it",
            users.join(", ")
        );
        if let Some(given) = assigned.get(role) {
            check
                .details
                .insert(0, format!("policy read from {}", given.source));
        }
        checks.push(check);
    }
    if !unmatched.is_empty() {
        let mut check = Check::new(
            "trust-policy.given",
            "every trust policy given belongs to a role of the ServiceAccount or its containers",
        );
        for given in unmatched {
            check = check.warn(
                format!(
                    "{} names no role and its file name matches none of {}; it was not checked",
                    given.source,
                    std::iter::once(service_account_role)
                        .chain(roles.keys().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "give `aws iam get-role --role-name NAME` output (it names the role), or name the file after the role (<role name>.json)",
            );
        }
        checks.push(check);
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irsa::checklist::Status;
    use crate::irsa::policy;
    use serde_json::json;

    const APP: &str = "arn:aws:iam::111122223333:role/app";
    const SIDECAR: &str = "arn:aws:iam::111122223333:role/team/sidecar";

    fn pod(name: &str, annotation: Option<&str>, phase: &str) -> Value {
        let annotations = annotation
            .map(|value| json!({"eks.amazonaws.com/container-role-arns": value}))
            .unwrap_or(json!({}));
        json!({"metadata": {"name": name, "annotations": annotations},
               "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]},
               "status": {"phase": phase}})
    }

    fn policy_for(sub_namespace: &str, role: Option<&str>) -> TrustPolicy {
        let document = json!({"Statement": [{"Effect": "Allow",
            "Principal": {"Federated": "arn:aws:iam::111122223333:oidc-provider/oidc.example.com"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {"oidc.example.com:sub": format!("system:serviceaccount:{sub_namespace}:app")}}}]});
        let text = match role {
            Some(arn) => json!({"Role": {"Arn": arn, "AssumeRolePolicyDocument": document}}),
            None => document,
        };
        policy::parse(&text.to_string()).unwrap()
    }

    fn given(stem: &str, policy: TrustPolicy) -> GivenPolicy {
        GivenPolicy {
            source: format!("{stem}.json"),
            stem: stem.into(),
            policy,
        }
    }

    #[test]
    fn roles_per_container_are_read_from_running_pods_with_the_engines_reader() {
        let keys = AnnotationKeys::new("eks.amazonaws.com");
        let pods = [
            pod("web-1", Some(&format!("sidecar={SIDECAR}")), "Running"),
            pod("web-2", Some(&format!(" sidecar = {SIDECAR} ")), "Pending"),
            pod("done", Some(&format!("app={SIDECAR}")), "Succeeded"),
            pod("plain", None, "Running"),
        ];
        let roles = container_roles(&pods, &keys);
        assert_eq!(
            roles,
            ContainerRoleUse::from([(
                SIDECAR.to_string(),
                vec!["web-1/sidecar".to_string(), "web-2/sidecar".to_string()]
            )])
        );
        let check = report(&roles, &keys);
        assert_eq!(check.status, Status::Pass);
        assert_eq!(
            check.details[0],
            format!("{SIDECAR}: web-1/sidecar, web-2/sidecar")
        );
        assert_eq!(report(&ContainerRoleUse::new(), &keys).status, Status::Skip);
    }

    #[test]
    fn policies_go_to_the_role_they_name_or_the_role_of_their_file_name() {
        let roles = ContainerRoleUse::from([(SIDECAR.to_string(), vec!["p/sidecar".to_string()])]);
        let policies = [
            given("app-role", policy_for("team-a", Some(APP))),
            given("sidecar", policy_for("team-a", None)),
            given("stray", policy_for("team-a", None)),
        ];
        let (assigned, unmatched) = assign(&policies, APP, &roles);
        assert_eq!(assigned[APP].source, "app-role.json");
        assert_eq!(assigned[SIDECAR].source, "sidecar.json");
        assert_eq!(unmatched.len(), 1);
        assert_eq!(unmatched[0].source, "stray.json");

        // One plain document is the ServiceAccount's role's, as before.
        let single = [given("whatever", policy_for("team-a", None))];
        let (assigned, unmatched) = assign(&single, APP, &ContainerRoleUse::new());
        assert_eq!(assigned[APP].source, "whatever.json");
        assert!(unmatched.is_empty());
        // One get-role output of a container's role belongs to it.
        let single = [given("x", policy_for("team-a", Some(SIDECAR)))];
        let (assigned, _) = assign(&single, APP, &roles);
        assert!(assigned.contains_key(SIDECAR) && !assigned.contains_key(APP));
    }

    #[test]
    fn each_container_role_is_checked_against_the_service_accounts_token() {
        let roles = ContainerRoleUse::from([
            (SIDECAR.to_string(), vec!["p/sidecar".to_string()]),
            (
                "arn:aws:iam::111122223333:role/other".to_string(),
                vec!["p/app".to_string()],
            ),
        ]);
        let policies = [
            given("sidecar", policy_for("team-b", None)),
            given("stray", policy_for("team-a", None)),
        ];
        let (assigned, unmatched) = assign(&policies, APP, &roles);
        let claims = Claims {
            iss: Some("https://oidc.example.com".into()),
            sub: Some("system:serviceaccount:team-a:app".into()),
            aud: vec!["sts.amazonaws.com".into()],
            ..Default::default()
        };
        let checks = trust_policies(&roles, &assigned, &unmatched, &claims, APP);
        assert_eq!(checks.len(), 3, "{checks:#?}");
        let other = &checks[0];
        assert_eq!(other.id, "trust-policy.container-role");
        assert_eq!(other.status, Status::Skip, "no policy given for it");
        let sidecar = &checks[1];
        assert_eq!(sidecar.status, Status::Fail);
        assert!(
            sidecar.title.contains("role/team/sidecar (p/sidecar)"),
            "{}",
            sidecar.title
        );
        assert_eq!(sidecar.details[0], "policy read from sidecar.json");
        assert!(
            sidecar
                .problems
                .iter()
                .any(|p| p.cause.contains("system:serviceaccount:team-b:app")),
            "{:?}",
            sidecar.problems
        );
        assert_eq!(checks[2].id, "trust-policy.given");
        assert_eq!(checks[2].status, Status::Warn);
        assert!(checks[2].problems[0]
            .cause
            .starts_with("stray.json names no role"));
    }
}
