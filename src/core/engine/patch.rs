//! Building RFC 6902 `add` operations. Every path is assembled from tokens, so `~` and `/` in
//! keys (label names, say) are escaped as JSON Pointer requires.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use serde_json::Value;

/// An `add` at the path made of `tokens`.
pub fn add<'t, I>(tokens: I, value: Value) -> PatchOperation
where
    I: IntoIterator,
    I::Item: Into<json_patch::jsonptr::Token<'t>>,
{
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens),
        value,
    })
}

/// Appends `values` to the list at `list` (a path of tokens): one `add .../-` per value when
/// the list exists, or one `add` that creates it. Nothing already in the list is rewritten.
pub(crate) fn append_all(
    ops: &mut Vec<PatchOperation>,
    list: &[&str],
    exists: bool,
    values: Vec<Value>,
) {
    if values.is_empty() {
        return;
    }
    if exists {
        for value in values {
            ops.push(add(list.iter().copied().chain(["-"]), value));
        }
    } else {
        ops.push(add(list.iter().copied(), Value::Array(values)));
    }
}
