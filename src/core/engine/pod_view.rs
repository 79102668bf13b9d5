//! The part of a pod the engine reads, taken out of the JSON in one validating pass. Every
//! field is checked for shape here, so a malformed pod is reported the same way whether or not
//! it would be mutated, and the planning code never meets an unexpected type.

use super::json_fields::{self, Object, PodShapeError};
use super::node::Node;
use super::POD_IDENTITY_LABEL;
use crate::core::settings::AnnotationKeys;

/// One entry of a container's `volumeMounts`.
pub(crate) struct MountView<'a> {
    pub name: &'a str,
    pub path: &'a str,
    /// `subPath` or `subPathExpr` is set: the mount shows part of the volume, not its root.
    pub sub_path: bool,
}

/// One container or init container.
pub(crate) struct ContainerView<'a> {
    /// `containers` or `initContainers`.
    pub list: &'static str,
    pub index: usize,
    pub name: &'a str,
    /// Whether `env` is present (and not null), so additions append rather than create it.
    pub has_env: bool,
    pub env_names: Vec<&'a str>,
    pub has_mounts: bool,
    pub mounts: Vec<MountView<'a>>,
    /// `devicePath` of every `volumeDevices` entry: a mount may not share a device's path.
    pub device_paths: Vec<&'a str>,
}

/// One entry of `spec.volumes`, kept whole: whether it holds a service-account token is
/// decided by the engine, which knows the token file name of the mode in use.
pub(crate) struct VolumeView<'a> {
    pub name: &'a str,
    pub volume: Object<'a>,
}

/// What the engine needs of a pod.
pub(crate) struct PodView<'a> {
    pub has_metadata: bool,
    pub has_labels: bool,
    pub pod_identity_label: Option<&'a str>,
    pub token_expiration: Option<&'a str>,
    pub skip_containers: Option<&'a str>,
    pub has_volumes: bool,
    pub volumes: Vec<VolumeView<'a>>,
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
        Some(map) => json_fields::string(map, key, || format!("{field}[{key:?}]")),
        None => Ok(None),
    }
}

impl<'a> PodView<'a> {
    /// Reads and validates `pod`; `keys` name the annotations read.
    pub fn read(pod: &'a Node<'a>, keys: &AnnotationKeys) -> Result<Self, PodShapeError> {
        let (pod, spec) = json_fields::root(pod)?;
        let metadata = json_fields::object(pod, "metadata", || "metadata".into())?;
        let (labels, annotations) = match metadata {
            Some(m) => (
                json_fields::object(m, "labels", || "metadata.labels".into())?,
                json_fields::object(m, "annotations", || "metadata.annotations".into())?,
            ),
            None => (None, None),
        };
        let volumes = json_fields::array(spec, "volumes", || "spec.volumes".into())?;
        let mut containers = Vec::new();
        for list in ["containers", "initContainers"] {
            let items = json_fields::array(spec, list, || format!("spec.{list}"))?;
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
            volumes: read_volumes(volumes)?,
            windows: is_windows(spec)?,
            containers,
        })
    }
}

impl<'a> ContainerView<'a> {
    fn read(list: &'static str, index: usize, item: &'a Node<'a>) -> Result<Self, PodShapeError> {
        let field = |suffix: &str| format!("spec.{list}[{index}]{suffix}");
        let container = json_fields::element(item, || field(""))?;
        let env = json_fields::array(container, "env", || field(".env"))?;
        let mounts = json_fields::array(container, "volumeMounts", || field(".volumeMounts"))?;
        let devices = json_fields::array(container, "volumeDevices", || field(".volumeDevices"))?;
        let mut mount_views = Vec::with_capacity(mounts.map_or(0, <[_]>::len));
        for (i, item) in mounts.into_iter().flatten().enumerate() {
            let at = |member: &str| field(&format!(".volumeMounts[{i}]{member}"));
            let mount = json_fields::element(item, || at(""))?;
            let mut sub_path = false;
            for key in ["subPath", "subPathExpr"] {
                let value = json_fields::string(mount, key, || at(&format!(".{key}")))?;
                sub_path |= value.is_some_and(|value| !value.is_empty());
            }
            mount_views.push(MountView {
                name: json_fields::string(mount, "name", || at(".name"))?.unwrap_or(""),
                path: json_fields::string(mount, "mountPath", || at(".mountPath"))?.unwrap_or(""),
                sub_path,
            });
        }
        let mut device_paths = Vec::new();
        for (i, item) in devices.into_iter().flatten().enumerate() {
            let at = |member: &str| field(&format!(".volumeDevices[{i}]{member}"));
            let device = json_fields::element(item, || at(""))?;
            if let Some(path) = json_fields::string(device, "devicePath", || at(".devicePath"))? {
                device_paths.push(path);
            }
        }
        Ok(Self {
            list,
            index,
            name: json_fields::string(container, "name", || field(".name"))?.unwrap_or(""),
            has_env: env.is_some(),
            env_names: json_fields::names(env, || field(".env"))?,
            has_mounts: mounts.is_some(),
            mounts: mount_views,
            device_paths,
        })
    }

    /// Whether the container mounts the volume called `name`, at any path.
    pub(crate) fn mounts_volume(&self, name: &str) -> bool {
        self.mounts.iter().any(|mount| mount.name == name)
    }
}

/// The named entries of `spec.volumes`; each must be an object with a string `name`.
fn read_volumes<'a>(items: Option<&'a [Node<'a>]>) -> Result<Vec<VolumeView<'a>>, PodShapeError> {
    let mut volumes = Vec::with_capacity(items.map_or(0, <[_]>::len));
    for (index, item) in items.into_iter().flatten().enumerate() {
        let volume = json_fields::element(item, || format!("spec.volumes[{index}]"))?;
        if let Some(name) =
            json_fields::string(volume, "name", || format!("spec.volumes[{index}].name"))?
        {
            volumes.push(VolumeView { name, volume });
        }
    }
    Ok(volumes)
}

/// Windows pods need a `C:\...` token path. The reference looks only at the node selectors;
/// `spec.os.name` says the same thing and is honoured too.
fn is_windows(spec: Object<'_>) -> Result<bool, PodShapeError> {
    let mut windows = false;
    if let Some(selector) =
        json_fields::object(spec, "nodeSelector", || "spec.nodeSelector".into())?
    {
        for key in ["kubernetes.io/os", "beta.kubernetes.io/os"] {
            windows |= member(Some(selector), "spec.nodeSelector", key)? == Some("windows");
        }
    }
    if let Some(os) = json_fields::object(spec, "os", || "spec.os".into())? {
        windows |= json_fields::string(os, "name", || "spec.os.name".into())? == Some("windows");
    }
    Ok(windows)
}
