//! The part of a pod the engine reads, taken out of the JSON in one validating pass. Every
//! field is checked for shape here, so a malformed pod is reported the same way whether or not
//! it would be mutated, and the planning code never meets an unexpected type.

use serde_json::Value;

use super::pod::{self, Object, PodShapeError};
use super::POD_IDENTITY_LABEL;
use crate::settings::AnnotationKeys;

/// One container or init container.
pub struct ContainerView<'a> {
    /// `containers` or `initContainers`.
    pub list: &'static str,
    pub index: usize,
    pub name: &'a str,
    /// Whether `env` is present (and not null), so additions append rather than create it.
    pub has_env: bool,
    pub env_names: Vec<&'a str>,
    pub has_mounts: bool,
    pub mount_names: Vec<&'a str>,
}

/// What the engine needs of a pod.
pub struct PodView<'a> {
    pub has_metadata: bool,
    pub has_labels: bool,
    pub pod_identity_label: Option<&'a str>,
    pub token_expiration: Option<&'a str>,
    pub skip_containers: Option<&'a str>,
    pub has_volumes: bool,
    pub volume_names: Vec<&'a str>,
    pub windows: bool,
    pub containers: Vec<ContainerView<'a>>,
}

/// `metadata.<map>[<key>]`, which must be a string when present.
fn member<'a>(
    map: Option<Object<'a>>,
    field: &str,
    key: &str,
) -> Result<Option<&'a str>, PodShapeError> {
    match map {
        Some(map) => pod::string(map, key, || format!("{field}[{key:?}]")),
        None => Ok(None),
    }
}

impl<'a> PodView<'a> {
    /// Reads and validates `pod`; `keys` name the annotations read.
    pub fn read(pod: &'a Value, keys: &AnnotationKeys) -> Result<Self, PodShapeError> {
        let (pod, spec) = pod::root(pod)?;
        let metadata = pod::object(pod, "metadata", || "metadata".into())?;
        let (labels, annotations) = match metadata {
            Some(m) => (
                pod::object(m, "labels", || "metadata.labels".into())?,
                pod::object(m, "annotations", || "metadata.annotations".into())?,
            ),
            None => (None, None),
        };
        let volumes = pod::array(spec, "volumes", || "spec.volumes".into())?;
        let mut containers = Vec::new();
        for list in ["containers", "initContainers"] {
            let items = pod::array(spec, list, || format!("spec.{list}"))?;
            for (index, item) in items.into_iter().flatten().enumerate() {
                containers.push(ContainerView::read(list, index, item)?);
            }
        }
        Ok(Self {
            has_metadata: metadata.is_some(),
            has_labels: labels.is_some(),
            pod_identity_label: member(labels, "metadata.labels", POD_IDENTITY_LABEL)?,
            token_expiration: member(annotations, "metadata.annotations", &keys.token_expiration)?,
            skip_containers: member(annotations, "metadata.annotations", &keys.skip_containers)?,
            has_volumes: volumes.is_some(),
            volume_names: pod::names(volumes, || "spec.volumes".into())?,
            windows: is_windows(spec)?,
            containers,
        })
    }
}

impl<'a> ContainerView<'a> {
    fn read(list: &'static str, index: usize, item: &'a Value) -> Result<Self, PodShapeError> {
        let field = |suffix: &str| format!("spec.{list}[{index}]{suffix}");
        let container = pod::element(item, || field(""))?;
        let env = pod::array(container, "env", || field(".env"))?;
        let mounts = pod::array(container, "volumeMounts", || field(".volumeMounts"))?;
        Ok(Self {
            list,
            index,
            name: pod::string(container, "name", || field(".name"))?.unwrap_or(""),
            has_env: env.is_some(),
            env_names: pod::names(env, || field(".env"))?,
            has_mounts: mounts.is_some(),
            mount_names: pod::names(mounts, || field(".volumeMounts"))?,
        })
    }
}

/// Windows pods need a `C:\...` token path. The reference looks only at the node selectors;
/// `spec.os.name` says the same thing and is honoured too.
fn is_windows(spec: Object<'_>) -> Result<bool, PodShapeError> {
    let mut windows = false;
    if let Some(selector) = pod::object(spec, "nodeSelector", || "spec.nodeSelector".into())? {
        for key in ["kubernetes.io/os", "beta.kubernetes.io/os"] {
            windows |= member(Some(selector), "spec.nodeSelector", key)? == Some("windows");
        }
    }
    if let Some(os) = pod::object(spec, "os", || "spec.os".into())? {
        windows |= pod::string(os, "name", || "spec.os.name".into())? == Some("windows");
    }
    Ok(windows)
}
