//! Read-only, borrowing access to the parts of a pod the engine looks at. Every accessor checks
//! the JSON shape and names the offending field, so a malformed pod is an error, never a panic.
//! Field paths are passed as closures and formatted only on error: this runs for every pod.

use serde_json::{Map, Value};

use crate::json::json_type;

/// The pod could not be read as a Pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object is not a valid Pod: {field} must be {expected}, got {got}")]
pub struct PodShapeError {
    pub field: String,
    pub expected: &'static str,
    pub got: &'static str,
}

/// A JSON object borrowed from the pod.
pub type Object<'a> = &'a Map<String, Value>;

fn shape_error(field: String, expected: &'static str, value: &Value) -> PodShapeError {
    PodShapeError {
        field,
        expected,
        got: json_type(value),
    }
}

/// An optional object member: absent and `null` are both "not there".
pub fn object<'a>(
    parent: Object<'a>,
    key: &str,
    field: impl FnOnce() -> String,
) -> Result<Option<Object<'a>>, PodShapeError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(shape_error(field(), "an object", other)),
    }
}

/// An optional array member: absent and `null` are both "not there".
pub fn array<'a>(
    parent: Object<'a>,
    key: &str,
    field: impl FnOnce() -> String,
) -> Result<Option<&'a Vec<Value>>, PodShapeError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
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
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(shape_error(field(), "a string", other)),
    }
}

/// An array element that must be an object (a container, an env entry, a volume).
pub fn element<'a>(
    item: &'a Value,
    field: impl FnOnce() -> String,
) -> Result<Object<'a>, PodShapeError> {
    item.as_object()
        .ok_or_else(|| shape_error(field(), "an object", item))
}

/// The `name` of every object in an optional named list (env, volumeMounts, volumes).
pub fn names(
    items: Option<&Vec<Value>>,
    field: impl Fn() -> String,
) -> Result<Vec<&str>, PodShapeError> {
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
pub fn root(pod: &Value) -> Result<(Object<'_>, Object<'_>), PodShapeError> {
    let pod = element(pod, || "the object".into())?;
    match pod.get("spec") {
        Some(Value::Object(spec)) => Ok((pod, spec)),
        other => Err(shape_error(
            "spec".into(),
            "an object",
            other.unwrap_or(&Value::Null),
        )),
    }
}
