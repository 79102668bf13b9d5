//! Read-only, borrowing access to the parts of a pod the engine looks at. Every accessor checks
//! the JSON shape and names the offending field, so a malformed pod is an error, never a panic.

use serde_json::{Map, Value};

use crate::identity::json_type;

/// The pod could not be read as a Pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object is not a valid Pod: {field} must be {expected}, got {got}")]
pub struct PodShapeError {
    pub field: String,
    pub expected: &'static str,
    pub got: &'static str,
}

fn shape_error(field: impl Into<String>, expected: &'static str, value: &Value) -> PodShapeError {
    PodShapeError {
        field: field.into(),
        expected,
        got: json_type(value),
    }
}

/// An optional object member: absent and `null` are both "not there".
pub fn object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, PodShapeError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(shape_error(field, "an object", other)),
    }
}

/// An optional array member: absent and `null` are both "not there".
pub fn array<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a Vec<Value>>, PodShapeError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(other) => Err(shape_error(field, "an array", other)),
    }
}

/// An optional string member.
pub fn string<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a str>, PodShapeError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(shape_error(field, "a string", other)),
    }
}

/// An array element that must be an object (a container, an env entry, a volume).
pub fn element<'a>(item: &'a Value, field: &str) -> Result<&'a Map<String, Value>, PodShapeError> {
    item.as_object()
        .ok_or_else(|| shape_error(field, "an object", item))
}

/// The `name` of every object in an optional named list (env, volumeMounts, volumes).
pub fn names<'a>(
    items: Option<&'a Vec<Value>>,
    field: &str,
) -> Result<Vec<&'a str>, PodShapeError> {
    let Some(items) = items else {
        return Ok(Vec::new());
    };
    // Field paths are formatted only on error: lists can hold hundreds of entries.
    let mut names = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::Object(entry) = item else {
            return Err(shape_error(format!("{field}[{index}]"), "an object", item));
        };
        match entry.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(name)) => names.push(name.as_str()),
            Some(other) => {
                return Err(shape_error(
                    format!("{field}[{index}].name"),
                    "a string",
                    other,
                ))
            }
        }
    }
    Ok(names)
}

/// A JSON object borrowed from the pod.
pub type Object<'a> = &'a Map<String, Value>;

/// The root of a pod: the object itself and its `spec`.
pub fn root(pod: &Value) -> Result<(Object<'_>, Object<'_>), PodShapeError> {
    let pod = pod
        .as_object()
        .ok_or_else(|| shape_error("the object", "a JSON object", pod))?;
    let spec = match pod.get("spec") {
        Some(Value::Object(spec)) => spec,
        Some(other) => return Err(shape_error("spec", "an object", other)),
        None => return Err(shape_error("spec", "an object", &Value::Null)),
    };
    Ok((pod, spec))
}
