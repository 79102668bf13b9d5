//! The README's "Differences from the reference webhook" as rules: each turns the reference's
//! pod into what ours promises, and fires only where the case's input calls for it.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{
    CC_PAIR, UNKNOWN_FIELD, WEB_IDENTITY_PAIR, WEB_IDENTITY_TOKEN_PATH, WEB_IDENTITY_VOLUME,
};

/// What a rule knows about the case.
pub(super) struct Context<'a> {
    pub case: &'a Value,
    pub pod: &'a Value,
    /// The reference's reading of the skip-containers annotation (see the driver).
    pub skip_record: Option<Option<Vec<String>>>,
    pub our_warnings: &'a [String],
    pub mode: Mode,
}

/// How the case's pod gets credentials, if at all.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    None,
    WebIdentity,
    ContainerCredentials,
}

impl Context<'_> {
    fn flag(&self, name: &str) -> &str {
        self.case["flags"][name].as_str().unwrap()
    }

    fn volume_name(&self) -> &str {
        match self.mode {
            Mode::ContainerCredentials => self.flag("container-credentials-token-volume-name"),
            _ => WEB_IDENTITY_VOLUME,
        }
    }

    fn token_path(&self) -> &str {
        match self.mode {
            Mode::ContainerCredentials => self.flag("container-credentials-token-path"),
            _ => WEB_IDENTITY_TOKEN_PATH,
        }
    }

    fn mount_path(&self) -> &str {
        match self.mode {
            Mode::ContainerCredentials => self.flag("container-credentials-token-mount-path"),
            _ => self.flag("token-mount-path"),
        }
    }

    fn pair(&self) -> [&'static str; 2] {
        match self.mode {
            Mode::ContainerCredentials => CC_PAIR,
            _ => WEB_IDENTITY_PAIR,
        }
    }

    fn volumes(&self) -> &[Value] {
        self.pod["spec"]["volumes"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    /// Whether the pod's volume `name` is a projected service-account token with the mode's
    /// token file name.
    fn holds_token(&self, name: &str) -> bool {
        self.volumes().iter().any(|volume| {
            volume["name"] == name
                && volume["projected"]["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|source| source["serviceAccountToken"]["path"] == self.token_path())
        })
    }

    fn has_volume(&self, name: &str) -> bool {
        self.volumes().iter().any(|volume| volume["name"] == name)
    }

    /// False when the pod has its own volume of the token volume's name that holds no token.
    fn volume_usable(&self) -> bool {
        let name = self.volume_name();
        !self.has_volume(name) || self.holds_token(name)
    }
}

/// A documented difference: `apply` turns the reference's pod (and, for normalisations, ours)
/// into what ours promises for this case, and says whether it changed anything; an error when
/// ours does not keep the rule's own promise.
pub(super) struct Rule {
    pub name: &'static str,
    pub apply: fn(&Context<'_>, reference: &mut Value, ours: &mut Value) -> Result<bool, String>,
}

/// The name of the rule [`super::reference_case`] stands for.
pub(super) const UNKNOWN_SERVICE_ACCOUNT_RULE: &str =
    "container credentials, ServiceAccount unknown";

/// In the order they apply. The README section each one stands for is named in its function.
pub(super) const RULES: &[Rule] = &[
    Rule {
        name: "skip-containers trimmed",
        apply: skip_containers_trimmed,
    },
    Rule {
        name: "own volume named like the token volume",
        apply: own_volume_not_a_token,
    },
    Rule {
        name: "another volume at the mount path",
        apply: mount_path_taken,
    },
    Rule {
        name: "token volume mounted elsewhere",
        apply: token_volume_mounted_elsewhere,
    },
    Rule {
        name: "spec.os.name windows",
        apply: windows_by_os_name,
    },
    Rule {
        name: "empty audience annotation",
        apply: empty_audience,
    },
    Rule {
        name: "unknown fields kept",
        apply: unknown_fields_kept,
    },
    Rule {
        name: "random container-credentials lifetime",
        apply: jittered_lifetime,
    },
    Rule {
        name: "containers re-serialized by the reference",
        apply: go_round_trip,
    },
];

/// Resolution as both webhooks do it here: listed in the container-credentials file wins, then
/// a ServiceAccount with a non-empty role.
pub(super) fn mode(case: &Value) -> Mode {
    let namespace = &case["namespace"];
    let service_account = &case["pod"]["spec"]["serviceAccountName"];
    let listed = case["containerCredentials"]["identities"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|id| id["namespace"] == *namespace && id["serviceAccount"] == *service_account);
    let prefix = case["flags"]["annotation-prefix"].as_str().unwrap();
    let role = &case["serviceAccount"]["annotations"][format!("{prefix}/role-arn")];
    if listed {
        Mode::ContainerCredentials
    } else if role.as_str().is_some_and(|role| !role.is_empty()) {
        Mode::WebIdentity
    } else {
        Mode::None
    }
}

/// The containers and init containers of a pod, mutable, with their list and index.
fn containers_mut(pod: &mut Value) -> Vec<(&'static str, usize, &mut Value)> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for (list, items) in spec.iter_mut() {
        let list = match list.as_str() {
            "containers" => "containers",
            "initContainers" => "initContainers",
            _ => continue,
        };
        for (index, container) in items.as_array_mut().into_iter().flatten().enumerate() {
            all.push((list, index, container));
        }
    }
    all
}

fn original<'a>(pod: &'a Value, list: &str, index: usize) -> &'a Value {
    &pod["spec"][list][index]
}

pub(super) fn items<'a>(container: &'a Value, field: &str) -> &'a [Value] {
    container[field].as_array().map_or(&[], Vec::as_slice)
}

/// Removes, from the entries of `field` the reference appended to `container` (those past
/// the original's), the ones `matches` picks.
fn remove_added(
    container: &mut Value,
    original: &Value,
    field: &str,
    matches: impl Fn(&Value) -> bool,
) -> bool {
    let kept = items(original, field).len();
    let Some(list) = container.get_mut(field).and_then(Value::as_array_mut) else {
        return false;
    };
    let before = list.len();
    let mut index = 0;
    list.retain(|item| {
        index += 1;
        index <= kept || !matches(item)
    });
    before != list.len()
}

/// Paths that name the same directory (`/a`, `/a/`, `/a//`, `/a/.`), as the README says.
pub(super) fn same_path(a: &str, b: &str) -> bool {
    let segments =
        |path| str::split(path, '/').filter(|segment| !segment.is_empty() && *segment != ".");
    a.starts_with('/') == b.starts_with('/') && segments(a).eq(segments(b))
}

/// Fixed: "`skip-containers` names are trimmed". The reference reads the annotation as one CSV
/// record and compares each field as is; ours trims each. A container named by a field only
/// once trimmed is left alone by ours and mutated by the reference.
fn skip_containers_trimmed(
    context: &Context<'_>,
    reference: &mut Value,
    _: &mut Value,
) -> Result<bool, String> {
    let Some(record) = &context.skip_record else {
        return Ok(false);
    };
    let record = record.as_deref().unwrap_or_default();
    let exact: HashSet<&str> = record.iter().map(String::as_str).collect();
    let trimmed: HashSet<&str> = record.iter().map(|name| name.trim()).collect();
    let mut changed = false;
    for (list, index, container) in containers_mut(reference) {
        let name = container["name"].as_str().unwrap_or_default();
        if trimmed.contains(name) && !exact.contains(name) {
            let untouched = original(context.pod, list, index).clone();
            changed |= *container != untouched;
            *container = untouched;
        }
    }
    Ok(changed)
}

/// Fixed: "Injection never breaks pod creation": the pod's own non-token volume named like the
/// token volume gets nothing pointing into it: no identity pair, no mount, no label.
fn own_volume_not_a_token(
    context: &Context<'_>,
    reference: &mut Value,
    _: &mut Value,
) -> Result<bool, String> {
    if context.mode == Mode::None || context.volume_usable() {
        return Ok(false);
    }
    let pair = context.pair();
    let volume = context.volume_name();
    let mut changed = false;
    for (list, index, container) in containers_mut(reference) {
        let original = original(context.pod, list, index);
        changed |= remove_added(container, original, "env", |entry| {
            pair.contains(&entry["name"].as_str().unwrap_or_default())
        });
        changed |= remove_added(container, original, "volumeMounts", |mount| {
            mount["name"] == volume
        });
    }
    // The label is the only change the reference makes to the metadata.
    let labels = context.pod["metadata"].get("labels");
    let metadata = reference["metadata"].as_object_mut().unwrap();
    if metadata.get("labels") != labels {
        match labels {
            Some(labels) => metadata.insert("labels".into(), labels.clone()),
            None => metadata.remove("labels"),
        };
        changed = true;
    }
    Ok(changed)
}

/// Fixed: "Injection never breaks pod creation": a container with another volume (or the token
/// volume through subPath, or a volume device) at the mount path gets no second mount there,
/// and the identity pair only if what is there is a token volume with the same file name,
/// mounted whole. The reference appends the mount (two mounts at one path: the pod is refused)
/// and the pair.
fn mount_path_taken(
    context: &Context<'_>,
    reference: &mut Value,
    _: &mut Value,
) -> Result<bool, String> {
    if context.mode == Mode::None || !context.volume_usable() {
        return Ok(false);
    }
    let (volume, mount_path, pair) = (context.volume_name(), context.mount_path(), context.pair());
    let mut changed = false;
    for (list, index, container) in containers_mut(reference) {
        let original = original(context.pod, list, index);
        let occupant = items(original, "volumeMounts")
            .iter()
            .find(|mount| same_path(mount["mountPath"].as_str().unwrap_or_default(), mount_path));
        let sub_path = |mount: &Value| {
            ["subPath", "subPathExpr"]
                .iter()
                .any(|key| mount[key].as_str().is_some_and(|s| !s.is_empty()))
        };
        let token_reachable = match occupant {
            Some(mount) if mount["name"] == volume && !sub_path(mount) => continue,
            Some(mount) => {
                !sub_path(mount) && context.holds_token(mount["name"].as_str().unwrap_or_default())
            }
            None if items(original, "volumeDevices").iter().any(|device| {
                same_path(
                    device["devicePath"].as_str().unwrap_or_default(),
                    mount_path,
                )
            }) =>
            {
                false
            }
            None => continue,
        };
        changed |= remove_added(container, original, "volumeMounts", |mount| {
            mount["name"] == volume && mount["mountPath"] == mount_path
        });
        if !token_reachable {
            changed |= remove_added(container, original, "env", |entry| {
                pair.contains(&entry["name"].as_str().unwrap_or_default())
            });
        }
    }
    Ok(changed)
}

/// Fixed: "A container that mounts the token volume at a path of its own, and gets the identity
/// pair from the webhook, also gets it at the mount path the pair names (the reference adds no
/// mount)".
fn token_volume_mounted_elsewhere(
    context: &Context<'_>,
    reference: &mut Value,
    _: &mut Value,
) -> Result<bool, String> {
    if context.mode == Mode::None || !context.volume_usable() {
        return Ok(false);
    }
    let (volume, mount_path, pair) = (context.volume_name(), context.mount_path(), context.pair());
    let mut changed = false;
    for (list, index, container) in containers_mut(reference) {
        let original = original(context.pod, list, index);
        let at_mount_path = |field: &str, key: &str| {
            items(original, field)
                .iter()
                .any(|item| same_path(item[key].as_str().unwrap_or_default(), mount_path))
        };
        let elsewhere = items(original, "volumeMounts")
            .iter()
            .any(|mount| mount["name"] == volume);
        let got_pair = items(container, "env")[items(original, "env").len()..]
            .iter()
            .any(|entry| entry["name"] == pair[0]);
        if elsewhere
            && got_pair
            && !at_mount_path("volumeMounts", "mountPath")
            && !at_mount_path("volumeDevices", "devicePath")
        {
            let mount = json!({"name": volume, "mountPath": mount_path, "readOnly": true});
            let mounts = container
                .get_mut("volumeMounts")
                .and_then(Value::as_array_mut);
            mounts.unwrap().push(mount);
            changed = true;
        }
    }
    Ok(changed)
}

/// Fixed: "`spec.os.name: windows` counts as a Windows pod, not only the node selectors".
fn windows_by_os_name(
    context: &Context<'_>,
    reference: &mut Value,
    _: &mut Value,
) -> Result<bool, String> {
    let spec = &context.pod["spec"];
    let by_selector = ["kubernetes.io/os", "beta.kubernetes.io/os"]
        .iter()
        .any(|key| spec["nodeSelector"][key] == "windows");
    if context.mode == Mode::None || by_selector || spec["os"]["name"] != "windows" {
        return Ok(false);
    }
    let token_file = context.pair()[1];
    let mut changed = false;
    for (list, index, container) in containers_mut(reference) {
        let kept = items(original(context.pod, list, index), "env").len();
        let env = container.get_mut("env").and_then(Value::as_array_mut);
        for entry in env.into_iter().flatten().skip(kept) {
            if entry["name"] == token_file {
                let path = entry["value"].as_str().unwrap().replace('/', "\\");
                entry["value"] = format!("C:{path}").into();
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Settled difference: "An empty `audience` annotation". The reference leaves the token's
/// audience unset (the API server's own audiences); ours uses `--token-audience` and warns.
fn empty_audience(
    context: &Context<'_>,
    reference: &mut Value,
    _: &mut Value,
) -> Result<bool, String> {
    let prefix = context.flag("annotation-prefix");
    let annotation = &context.case["serviceAccount"]["annotations"][format!("{prefix}/audience")];
    if context.mode != Mode::WebIdentity || *annotation != "" {
        return Ok(false);
    }
    if !context
        .our_warnings
        .iter()
        .any(|warning| warning.contains("/audience is empty"))
    {
        return Err(format!(
            "no warning about the empty audience: {:?}",
            context.our_warnings
        ));
    }
    // The volume the reference added, first in the list, if it added one.
    let Some(token) = reference
        .pointer_mut("/spec/volumes/0/projected/sources/0/serviceAccountToken")
        .and_then(Value::as_object_mut)
        .filter(|_| !context.has_volume(WEB_IDENTITY_VOLUME))
        .filter(|token| !token.contains_key("audience"))
    else {
        return Ok(false);
    };
    token.insert("audience".into(), context.flag("token-audience").into());
    Ok(true)
}

/// Fixed: "Unknown fields are never dropped". The reference re-serializes the containers
/// through its API types and loses a field they lack; ours keeps it as it was.
fn unknown_fields_kept(
    context: &Context<'_>,
    reference: &mut Value,
    ours: &mut Value,
) -> Result<bool, String> {
    let mut changed = false;
    for (list, index, container) in containers_mut(ours) {
        let Some(field) = original(context.pod, list, index).get(UNKNOWN_FIELD) else {
            continue;
        };
        assert_eq!(
            container.get(UNKNOWN_FIELD),
            Some(field),
            "ours lost a field"
        );
        container.as_object_mut().unwrap().remove(UNKNOWN_FIELD);
        if reference["spec"][list][index].get(UNKNOWN_FIELD).is_none() {
            changed = true;
        } else {
            reference["spec"][list][index]
                .as_object_mut()
                .unwrap()
                .remove(UNKNOWN_FIELD);
        }
    }
    Ok(changed)
}

/// Not a difference: a container-credentials token of exactly one day gets a random lifetime
/// in [22 h, 24 h] in both, drawn by different random sources.
fn jittered_lifetime(
    context: &Context<'_>,
    reference: &mut Value,
    ours: &mut Value,
) -> Result<bool, String> {
    if context.mode != Mode::ContainerCredentials {
        return Ok(false);
    }
    if context.has_volume(context.volume_name()) {
        return Ok(false);
    }
    let mut changed = false;
    for pod in [reference, ours] {
        let seconds = pod.pointer_mut(
            "/spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds",
        );
        if let Some(seconds) =
            seconds.filter(|s| s.as_i64().is_some_and(|s| (79200..=86400).contains(&s)))
        {
            changed |= *seconds != 86400;
            *seconds = 86400.into();
        }
    }
    Ok(changed)
}

/// Not a difference in the pod: the reference rewrites whole container lists through its Go
/// types, which leave out empty values (`value: ""`, `readOnly: false`, `env: []`) and write
/// `resources: {}`. Both pods' containers lose their empty values.
fn go_round_trip(_: &Context<'_>, reference: &mut Value, ours: &mut Value) -> Result<bool, String> {
    fn drop_empty(value: &mut Value) -> bool {
        let mut changed = false;
        match value {
            Value::Object(map) => {
                for member in map.values_mut() {
                    changed |= drop_empty(member);
                }
                let before = map.len();
                map.retain(|_, member| !is_empty(member));
                changed |= before != map.len();
            }
            Value::Array(items) => {
                for item in items {
                    changed |= drop_empty(item);
                }
            }
            _ => {}
        }
        changed
    }
    fn is_empty(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Number(_) => false,
        }
    }
    let mut changed = false;
    for pod in [reference, ours] {
        for (_, _, container) in containers_mut(pod) {
            changed |= drop_empty(container);
        }
    }
    Ok(changed)
}
