//! The pod annotation `<prefix>/container-role-arns`: `name=role ARN` pairs, separated by
//! commas, that give named containers a role of their own instead of the ServiceAccount's.
//! Read here once, for the engine and the doctor alike.

use std::collections::HashMap;

use crate::core::identity::is_iam_role_arn;

/// The roles a pod assigns to its containers, with what was wrong in the annotation.
#[derive(Debug, Default)]
pub struct ContainerRoles<'p> {
    /// Container name -> role.
    by_name: HashMap<&'p str, &'p str>,
    /// The names in the order they first appear, so warnings keep the annotation's order.
    order: Vec<&'p str>,
    /// Malformed entries, repeated names and roles that are not role ARNs, one line each.
    pub warnings: Vec<String>,
}

impl<'p> ContainerRoles<'p> {
    /// Reads the annotation's value; `key` names it in the warnings. Spaces around names and
    /// roles are trimmed and empty entries ignored, as in `skip-containers`; a repeated name
    /// keeps its last role.
    pub fn parse(value: &'p str, key: &str) -> Self {
        let mut roles = Self::default();
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some((name, role)) = entry
                .split_once('=')
                .map(|(name, role)| (name.trim(), role.trim()))
                .filter(|(name, role)| !name.is_empty() && !role.is_empty())
            else {
                roles.warnings.push(format!(
                    "pod annotation {key}: entry {entry:?} is not <container>=<role ARN>; ignored"
                ));
                continue;
            };
            if !is_iam_role_arn(role) {
                roles.warnings.push(format!(
                    "pod annotation {key}: role {role:?} of container {name:?} is not an IAM role ARN (arn:<partition>:iam::<12-digit account>:role/<name>); it is injected as given"
                ));
            }
            if roles.by_name.insert(name, role).is_some() {
                roles.warnings.push(format!(
                    "pod annotation {key}: container {name:?} is named more than once; its last role counts"
                ));
            } else {
                roles.order.push(name);
            }
        }
        roles
    }

    /// The role assigned to the container `name`.
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.by_name.get(name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// (container, role) in the order the names first appear.
    pub fn entries(&self) -> impl Iterator<Item = (&'p str, &'p str)> + '_ {
        self.order
            .iter()
            .filter_map(|name| Some((*name, *self.by_name.get(name)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "eks.amazonaws.com/container-role-arns";
    const A: &str = "arn:aws:iam::111122223333:role/a";
    const B: &str = "arn:aws:iam::111122223333:role/b";

    #[test]
    fn pairs_are_trimmed_and_kept_in_order() {
        let value = format!(" sidecar = {A} ,, worker={B},");
        let roles = ContainerRoles::parse(&value, KEY);
        assert!(roles.warnings.is_empty(), "{:?}", roles.warnings);
        assert_eq!(
            roles.entries().collect::<Vec<_>>(),
            [("sidecar", A), ("worker", B)]
        );
        assert_eq!(roles.get("worker"), Some(B));
        assert_eq!(roles.get("app"), None);
    }

    #[test]
    fn malformed_entries_repeats_and_odd_roles_are_reported() {
        let value = format!("sidecar, ={A}, x=, a={A}, a={B}, b=my-role");
        let roles = ContainerRoles::parse(&value, KEY);
        assert_eq!(
            roles.entries().collect::<Vec<_>>(),
            [("a", B), ("b", "my-role")]
        );
        assert_eq!(roles.warnings.len(), 5, "{:?}", roles.warnings);
        assert!(roles.warnings[0].contains("entry \"sidecar\" is not <container>=<role ARN>"));
        assert!(roles.warnings[3].contains("\"a\" is named more than once"));
        assert!(roles.warnings[4]
            .contains("role \"my-role\" of container \"b\" is not an IAM role ARN"));
    }
}
