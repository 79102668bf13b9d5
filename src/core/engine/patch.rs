//! The patch the engine answers with: RFC 6902 `add` operations written as JSON text (by
//! serde_json, from borrowed values) in the order the engine decides them. The request path
//! sends this text (base64'd) as is; whoever applies the patch (the `mutate` command, the
//! doctor, tests) reads it into `json_patch::Patch` with [`Patch::operations`].
//!
//! Every path is assembled from tokens, so `~` and `/` in keys (label names, say) are escaped
//! as JSON Pointer requires.

use std::fmt;

use json_patch::jsonptr::Token;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A value to add, borrowed: written into the patch without being built as a tree first.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Json<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Array(&'a [Json<'a>]),
    Object(&'a [(&'a str, Json<'a>)]),
}

/// A JSON patch of `add` operations, as text; two are equal when their text is.
#[derive(Clone)]
pub struct Patch {
    /// A JSON array of operation objects, UTF-8 (only serde_json writes into it).
    json: Vec<u8>,
    /// Where each operation's path is assembled before it is written, reused: a string of its
    /// own would be allocated and grown again for every operation.
    pointer: String,
    len: usize,
    /// Past this many bytes nothing more is written, and the patch is over its limit.
    limit: usize,
    over_limit: bool,
}

impl Default for Patch {
    fn default() -> Self {
        Self::with_limit(0, usize::MAX)
    }
}

impl Patch {
    /// An empty patch that takes operations until it holds more than `limit` bytes, with room
    /// for `expected` bytes first: a patch grown from nothing is copied each time it doubles,
    /// about a dozen times for a large pod's.
    pub(crate) fn with_limit(expected: usize, limit: usize) -> Self {
        let mut json = Vec::with_capacity(expected.min(limit).max(2));
        json.extend_from_slice(b"[]");
        Self {
            json,
            pointer: String::new(),
            len: 0,
            limit,
            over_limit: false,
        }
    }

    /// How many operations it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// An operation was refused because the patch had grown past its limit: it is incomplete.
    pub(crate) fn is_over_limit(&self) -> bool {
        self.over_limit
    }

    /// The patch as a JSON array, as sent to the API server.
    pub fn as_bytes(&self) -> &[u8] {
        &self.json
    }

    /// The patch as JSON text (for messages and tests).
    pub fn as_json(&self) -> String {
        String::from_utf8_lossy(&self.json).into_owned()
    }

    /// The operations, for applying them. The text is always a valid patch (this module writes
    /// it); an error here is a bug in it, reported rather than panicking.
    pub fn operations(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    /// Appends `add` at the path made of `tokens` (JSON Pointer escapes applied to each).
    pub(crate) fn add(&mut self, tokens: &[&str], value: Json<'_>) {
        if self.json.len() > self.limit {
            self.over_limit = true;
            return;
        }
        self.pointer.clear();
        for &token in tokens {
            self.pointer.push('/');
            self.pointer.push_str(Token::new(token).encoded());
        }
        // Reopen the array: drop the closing `]`.
        self.json.pop();
        if self.len > 0 {
            self.json.push(b',');
        }
        self.json.extend_from_slice(br#"{"op":"add","path":"#);
        write_json(&mut self.json, self.pointer.as_str());
        self.json.extend_from_slice(br#","value":"#);
        write_json(&mut self.json, &value);
        self.json.extend_from_slice(b"}]");
        self.len += 1;
    }

    /// Appends `values` to the list at `list` (a path of tokens): one `add .../-` per value when
    /// the list exists, or one `add` that creates it. Nothing already in the list is rewritten.
    pub(crate) fn append_all(&mut self, list: &[&str], exists: bool, values: &[Json<'_>]) {
        if values.is_empty() {
            return;
        }
        if !exists {
            self.add(list, Json::Array(values));
            return;
        }
        let mut path = Vec::with_capacity(list.len() + 1);
        path.extend_from_slice(list);
        path.push("-");
        for value in values {
            self.add(&path, *value);
        }
    }
}

/// Writing into memory cannot fail, and strings and these values always serialize.
fn write_json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    let _ = serde_json::to_writer(out, value);
}

impl PartialEq for Patch {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl Eq for Patch {}

/// The JSON text, as `Debug` shows it in test failures.
impl fmt::Debug for Patch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.json))
    }
}

/// Serializes as the array of operations it holds, for callers that embed it in JSON of their
/// own (the `mutate` command's output, the golden files).
impl Serialize for Patch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let operations = self.operations().map_err(serde::ser::Error::custom)?;
        operations.serialize(serializer)
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Json::Str(text) => serializer.serialize_str(text),
            Json::Int(number) => serializer.serialize_i64(number),
            Json::Bool(value) => serializer.serialize_bool(value),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn an_empty_patch_is_an_empty_array() {
        let patch = Patch::default();
        assert_eq!(patch.as_json(), "[]");
        assert!(patch.is_empty());
        assert_eq!(patch.operations().unwrap(), json_patch::Patch(vec![]));
    }

    #[test]
    fn operations_are_written_as_json_patch_reads_them() {
        let mut patch = Patch::default();
        patch.add(
            &["metadata", "labels", "eks.amazonaws.com/pod-identity"],
            Json::Str("enabled"),
        );
        patch.append_all(
            &["spec", "containers", "0", "env"],
            true,
            &[
                Json::Object(&[("name", Json::Str("A")), ("value", Json::Str("1"))]),
                Json::Object(&[("name", Json::Str("B")), ("value", Json::Str("x~y"))]),
            ],
        );
        patch.append_all(
            &["spec", "volumes"],
            false,
            &[Json::Int(-7), Json::Bool(true)],
        );
        patch.append_all(&["spec", "nothing"], false, &[]);
        assert_eq!(patch.len(), 4);
        let expected = json!([
            {"op": "add", "path": "/metadata/labels/eks.amazonaws.com~1pod-identity", "value": "enabled"},
            {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "A", "value": "1"}},
            {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "B", "value": "x~y"}},
            {"op": "add", "path": "/spec/volumes", "value": [-7, true]},
        ]);
        let written: serde_json::Value = serde_json::from_str(&patch.as_json()).unwrap();
        assert_eq!(written, expected);
        assert_eq!(
            patch.operations().unwrap(),
            serde_json::from_value::<json_patch::Patch>(expected.clone()).unwrap()
        );
        assert_eq!(serde_json::to_value(&patch).unwrap(), expected);
        assert_eq!(format!("{patch:?}"), patch.as_json());
    }

    #[test]
    fn past_its_limit_a_patch_takes_no_more_operations_and_says_so() {
        let mut patch = Patch::with_limit(0, 150);
        let entry = Json::Object(&[("name", Json::Str("A")), ("value", Json::Str("1"))]);
        patch.add(&["spec", "volumes"], Json::Str(&"v".repeat(60)));
        assert!(!patch.is_over_limit());
        patch.append_all(&["spec", "containers", "0", "env"], true, &[entry, entry]);
        assert!(patch.is_over_limit());
        assert_eq!(
            patch.len(),
            2,
            "the second one found the patch over its limit"
        );
        assert!(patch.as_bytes().len() < 200);
        assert_eq!(
            patch.operations().unwrap().0.len(),
            2,
            "still a valid patch"
        );
    }

    proptest! {
        /// Any string, as a value, a key or a path token, comes back as it went in.
        #[test]
        fn strings_come_back_as_they_went_in(text in any::<String>()) {
            let mut patch = Patch::default();
            patch.add(&["a", &text], Json::Object(&[(&text, Json::Str(&text))]));
            let operations = patch.operations().unwrap();
            let json_patch::PatchOperation::Add(add) = &operations.0[0] else {
                panic!("not an add: {operations:?}");
            };
            let pointer = json_patch::jsonptr::PointerBuf::from_tokens(["a", text.as_str()]);
            prop_assert_eq!(&add.path, &pointer);
            prop_assert_eq!(&add.value, &json!({text.clone(): text}));
        }
    }
}
