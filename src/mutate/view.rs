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

impl<'a> PodView<'a> {
    /// Reads and validates `pod`; `keys` name the annotations read.
    pub fn read(pod: &'a Value, keys: &AnnotationKeys) -> Result<Self, PodShapeError> {
        let (pod, spec) = pod::root(pod)?;
        let metadata = pod::object(pod, "metadata", "metadata")?;
        let (labels, annotations) = match metadata {
            Some(m) => (
                pod::object(m, "labels", "metadata.labels")?,
                pod::object(m, "annotations", "metadata.annotations")?,
            ),
            None => (None, None),
        };
        let member = |map: Option<Object<'a>>, field: &str, key: &str| match map {
            Some(map) => pod::string(map, key, &format!("{field}[{key:?}]")),
            None => Ok(None),
        };
        let volumes = pod::array(spec, "volumes", "spec.volumes")?;
        let mut containers = Vec::new();
        for list in ["containers", "initContainers"] {
            let field = format!("spec.{list}");
            for (index, item) in pod::array(spec, list, &field)?
                .into_iter()
                .flatten()
                .enumerate()
            {
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
            volume_names: pod::names(volumes, "spec.volumes")?,
            windows: is_windows(spec)?,
            containers,
        })
    }
}

impl<'a> ContainerView<'a> {
    fn read(list: &'static str, index: usize, item: &'a Value) -> Result<Self, PodShapeError> {
        let field = format!("spec.{list}[{index}]");
        let container = pod::element(item, &field)?;
        let env_field = format!("{field}.env");
        let env = pod::array(container, "env", &env_field)?;
        let mounts_field = format!("{field}.volumeMounts");
        let mounts = pod::array(container, "volumeMounts", &mounts_field)?;
        Ok(Self {
            list,
            index,
            name: pod::string(container, "name", &format!("{field}.name"))?.unwrap_or(""),
            has_env: env.is_some(),
            env_names: pod::names(env, &env_field)?,
            has_mounts: mounts.is_some(),
            mount_names: pod::names(mounts, &mounts_field)?,
        })
    }
}

/// Windows pods need a `C:\...` token path. The reference looks only at the node selectors;
/// `spec.os.name` says the same thing and is honoured too.
fn is_windows(spec: Object<'_>) -> Result<bool, PodShapeError> {
    let mut windows = false;
    if let Some(selector) = pod::object(spec, "nodeSelector", "spec.nodeSelector")? {
        for key in ["kubernetes.io/os", "beta.kubernetes.io/os"] {
            let field = format!("spec.nodeSelector[{key:?}]");
            windows |= pod::string(selector, key, &field)? == Some("windows");
        }
    }
    if let Some(os) = pod::object(spec, "os", "spec.os")? {
        windows |= pod::string(os, "name", "spec.os.name")? == Some("windows");
    }
    Ok(windows)
}
