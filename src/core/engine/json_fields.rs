//! Read-only, borrowing access to the parts of a pod the engine looks at. Every accessor checks
//! the JSON shape and names the offending field, so a malformed pod is an error, never a panic.
//! Field paths are passed as closures and formatted only on error: this runs for every pod.

use std::borrow::Cow;

use super::node::{Fields, Node};

/// The pod could not be read as a Pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object is not a valid Pod: {field} must be {expected}, got {got}")]
pub struct PodShapeError {
    pub field: String,
    pub expected: Cow<'static, str>,
    pub got: Cow<'static, str>,
}

/// A JSON object borrowed from the pod.
pub type Object<'a> = &'a Fields<'a>;

fn shape_error(field: String, expected: &'static str, value: &Node<'_>) -> PodShapeError {
    PodShapeError {
        field,
        expected: Cow::Borrowed(expected),
        got: Cow::Borrowed(value.type_name()),
    }
}

/// An optional object member: absent and `null` are both "not there".
pub fn object<'a>(
    parent: Object<'a>,
    key: &str,
    field: impl FnOnce() -> String,
) -> Result<Option<Object<'a>>, PodShapeError> {
    match parent.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Object(map)) => Ok(Some(map)),
        Some(other) => Err(shape_error(field(), "an object", other)),
    }
}

/// An optional array member: absent and `null` are both "not there". A list longer than its
/// cap is refused with its length, so the author knows what to change.
pub fn array<'a>(
    parent: Object<'a>,
    key: &str,
    field: impl FnOnce() -> String,
) -> Result<Option<&'a [Node<'a>]>, PodShapeError> {
    match parent.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Array(items)) => Ok(Some(items)),
        Some(Node::TooLong { len, cap }) => Err(PodShapeError {
            field: field(),
            expected: Cow::Owned(format!(
                "an array of at most {cap} entries (a limit of this webhook)"
            )),
            got: Cow::Owned(format!("{len} entries")),
        }),
        Some(other) => Err(shape_error(field(), "an array", other)),
    }
}

/// An optional string member.
pub fn string<'a>(
    parent: Object<'a>,
    key: &str,
    field: impl FnOnce() -> String,
) -> Result<Option<&'a str>, PodShapeError> {
    match parent.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Str(s)) => Ok(Some(s)),
        Some(other) => Err(shape_error(field(), "a string", other)),
    }
}

/// An array element that must be an object (a container, an env entry, a volume).
pub(crate) fn element<'a>(
    item: &'a Node<'a>,
    field: impl FnOnce() -> String,
) -> Result<Object<'a>, PodShapeError> {
    match item {
        Node::Object(map) => Ok(map),
        other => Err(shape_error(field(), "an object", other)),
    }
}

/// The `name` of every object in an optional named list (env, volumeMounts, volumes).
pub fn names<'a>(
    items: Option<&'a [Node<'a>]>,
    field: impl Fn() -> String,
) -> Result<Vec<&'a str>, PodShapeError> {
    let Some(items) = items else {
        return Ok(Vec::new());
    };
    let mut names = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let entry = element(item, || format!("{}[{index}]", field()))?;
        if let Some(name) = string(entry, "name", || format!("{}[{index}].name", field()))? {
            names.push(name);
        }
    }
    Ok(names)
}

/// The root of a pod: the object itself and its `spec`.
pub fn root<'a>(pod: &'a Node<'a>) -> Result<(Object<'a>, Object<'a>), PodShapeError> {
    let pod = element(pod, || "the object".into())?;
    match pod.get("spec") {
        Some(Node::Object(spec)) => Ok((pod, spec)),
        other => Err(shape_error(
            "spec".into(),
            "an object",
            other.unwrap_or(&Node::Null),
        )),
    }
}
